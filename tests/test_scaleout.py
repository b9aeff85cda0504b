"""Scale-out: several workers (-w 2), several processes (-i/-a) and
``ticklet backtest --workers 2`` give every output of one worker, byte for
byte per instrument and in order, from files and from Kafka; a 2-process
cluster killed with ``kill -9`` resumes from its recovery store with the same
outputs; an instrument that two Kafka partitions hold is a dead letter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Producer
from runutil import FLOW, file_env, ticklet

from harness.kafkautil import flow_env, replay, run_flow, topic_name
from harness.realdata import RECORD_FILES, SCRATCH, lines, replicate
from ticklet.cluster import loopback_addresses

#: Integration tests (tests/integration_mark.py): a Kafka broker, and the dataflow in several processes.
pytestmark = pytest.mark.integration


def _processes(env: dict[str, str], n: int = 2, *extra: str) -> list[subprocess.Popen]:
    addrs = ";".join(loopback_addresses(n))
    return [subprocess.Popen([*FLOW, "-i", str(i), "-a", addrs, *extra], cwd=SCRATCH, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]


def _two_processes(env: dict[str, str]) -> None:
    for p in _processes(env):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]


def _per_instrument(out: Path) -> dict[str, dict[str, list[bytes]]]:
    """Every record file's rows (bytes as written) per instrument, in the order written."""
    got: dict[str, dict[str, list[bytes]]] = {}
    for name in RECORD_FILES:
        rows = (out / name).read_bytes().split(b"\r\n")
        by: dict[str, list[bytes]] = defaultdict(list)
        for r in rows[1:]:
            if r:
                by[r.split(b",", 1)[0].decode()].append(r)
        got[name] = dict(by)
    return got


def _same(one: Path, other: Path, instruments: set[str], note: str) -> None:
    a, b = _per_instrument(one), _per_instrument(other)
    assert set(a["forecasts.csv"]) == instruments
    for name in RECORD_FILES:
        assert a[name], name
        assert a[name] == b[name], f"{note}: {name}"
    assert json.loads((one / "counters.json").read_text()) == json.loads((other / "counters.json").read_text())


@pytest.fixture(scope="module")
def two_symbol_topic(kafka_bootstrap, ws_dir):
    topic = topic_name("scale")
    spot = ws_dir / "spot"
    proc, _ = replay(kafka_bootstrap, topic, *sorted(spot.glob("*usdt_2024080*.gz")))
    assert proc.returncode == 0, proc.stderr
    return topic


@pytest.mark.parametrize("mode", ["workers", "processes"])
def test_kafka_scale_out_gives_the_same_outputs(kafka_bootstrap, two_symbol_topic, tmp_path, mode):
    one = tmp_path / "one"
    run_flow(flow_env(kafka_bootstrap, two_symbol_topic, one))
    many = tmp_path / mode
    env = flow_env(kafka_bootstrap, two_symbol_topic, many)
    if mode == "workers":
        run_flow(env, "-w", "2")
    else:
        _two_processes(env)
    _same(one, many, {"BTCUSDT", "ETHUSDT"}, mode)


@pytest.mark.parametrize("mode", ["workers", "processes", "backtest"])
def test_file_scale_out_gives_the_same_outputs(ws_dir, tmp_path, mode):
    inputs = (ws_dir / "spot", ws_dir / "usdm")
    one, many = tmp_path / "one", tmp_path / mode
    run_flow(file_env(one, *inputs))
    if mode == "workers":
        run_flow(file_env(many, *inputs), "-w", "2")
    elif mode == "processes":
        _two_processes(file_env(many, *inputs))
    else:
        proc = subprocess.run([*ticklet(), "backtest", *map(str, inputs), "--out", str(many), "--workers", "2"],
                              cwd=SCRATCH, env=file_env(many), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stderr.count("forecasts scored") == 1  # one summary, from process 0
    _same(one, many, {"BTCUSDT", "ETHUSDT", "BTCUSDT-PERP"}, mode)


def test_a_bundle_trained_in_two_processes_is_the_one_trained_in_one(ws_dir, tmp_path):
    """``ticklet train --workers 2``: the learners of the instruments of
    process 1 cross to process 0, which writes the bundle; every file of it
    is byte for byte the one a single process writes (models.bundle.dumps
    writes the states so that their bytes depend on their values alone)."""
    bundles = []
    for n in (1, 2):
        out, bundle = tmp_path / f"out{n}", tmp_path / f"bundle{n}"
        proc = subprocess.run([*ticklet(), "train", str(ws_dir), "--out", str(out), "--save-models", str(bundle),
                               "--workers", str(n)], cwd=SCRATCH, env=file_env(out), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        bundles.append({p.relative_to(bundle): p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()})
    assert len(bundles[0]) == 4 and bundles[0] == bundles[1]  # the manifest and 3 instruments' states


def _committed(rec: Path) -> int:
    """The latest epoch every partition of the recovery store ``rec`` has committed (0: none yet)."""
    import sqlite3

    epochs = []
    for part in rec.glob("part-*.sqlite3"):
        con = sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=30)
        try:
            epochs.append(con.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()[0] or 0)
        except sqlite3.OperationalError:  # being created
            epochs.append(0)
        finally:
            con.close()
    return min(epochs, default=0)


def test_a_two_process_cluster_killed_resumes_with_the_same_outputs(ws_dir, tmp_path):
    """Both processes of a cluster with a recovery store (a partition each)
    killed with SIGKILL mid-run, once a snapshot is committed, then started
    again on the same store, to the end: the outputs are those of one
    uninterrupted process. On two copies of the recordings (6 instruments),
    so that the run lasts a few snapshots."""
    inputs = tuple(sorted({p.parent for p in replicate(ws_dir, tmp_path / "set", 2)}))
    ref = tmp_path / "ref"
    run_flow(file_env(ref, *inputs))
    rec = tmp_path / "recovery"
    rec.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "2"], check=True, cwd=SCRATCH)
    out = tmp_path / "out"
    env = file_env(out, *inputs)
    args = ("-r", str(rec), "-s", "1", "-b", "0")
    procs = _processes(env, 2, *args)
    deadline = time.monotonic() + 120
    forecasts = out / "forecasts.csv"
    full = (ref / "forecasts.csv").stat().st_size
    while time.monotonic() < deadline and (_committed(rec) < 2 or not forecasts.exists()
                                           or forecasts.stat().st_size < full // 3):
        ended = [p for p in procs if p.poll() is not None]
        assert not ended, f"the run ended before the kill: {ended[0].communicate()[1][-3000:]}"
        time.sleep(0.02)
    assert _committed(rec) >= 2  # a snapshot to resume from
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.communicate()
    size_at_kill = forecasts.stat().st_size
    assert 0 < size_at_kill < (ref / "forecasts.csv").stat().st_size
    for p in _processes(env, 2, *args):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    _same(ref, out, {f"{s}{k}USDT{m}" for s in ("BTC", "ETH") for k in range(2) for m in ("", "-PERP")}
          - {"ETH0USDT-PERP", "ETH1USDT-PERP"}, "killed and resumed")


def test_an_instrument_in_two_kafka_partitions_is_a_dead_letter(kafka_bootstrap, ws_dir, tmp_path):
    """A topic whose producer does not key by instrument: the ticks of one
    recording written to partitions 0 and 1 in turn. Each partition makes its
    own bars of BTCUSDT; a dead letter of stage one_reader names both and
    what to do, and the run goes on."""
    from sources.wire import encode_tick

    topic = topic_name("split")
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20})
    for i, ln in enumerate(lines(ws_dir / "spot" / "btcusdt_20240808.gz")):
        ts, msg = ln.split(b" ", 1)
        p.produce(topic, encode_tick(int(ts), "spot", msg), b"BTCUSDT", partition=(i // 1000) % 2)
        if not i % 1000:
            p.poll(0)
    assert p.flush(60) == 0
    out = tmp_path / "out"
    run_flow(flow_env(kafka_bootstrap, topic, out))
    dead = [json.loads(ln) for ln in (out / "dead_letters.jsonl").read_text().splitlines()]
    split = [d for d in dead if d["stage"] == "one_reader"]
    assert len(split) == 1 and split[0]["instrument"] == "BTCUSDT", dead[:3]
    assert split[0]["reason"].startswith(f"read from two input partitions, 0-{topic} (first) and 1-{topic}") or \
        split[0]["reason"].startswith(f"read from two input partitions, 1-{topic} (first) and 0-{topic}")
    assert "key the Kafka records by instrument" in split[0]["reason"]
    assert json.loads((out / "counters.json").read_text())["dead_letters"] >= 1

"""The maker books live = in a backtest (issue 27): the Kafka path gives the
maker fills and economics of the file path, byte for byte, and on the output
topic; ``kill -9`` at random points and restarts from the recovery store
keep the resting orders, their queue positions and the fills waiting for
their moves: the outputs are the uninterrupted run's."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from runutil import file_env

from harness.kafkautil import (
    by_instrument,
    consume_all,
    decoded,
    flow_env,
    kill_when,
    replay,
    run_flow,
    topic_name,
)
from harness.realdata import SCRATCH

#: Integration tests (tests/integration_mark.py): a Kafka broker, the dataflow in subprocesses.
pytestmark = pytest.mark.integration

MAKER = {"TICKLET_MAKER__ENABLED": "true"}
#: The crash test's runs read the topic 10 messages a poll: each life must outlast a snapshot of its own (one a
#: second at the least), and at the default 5,000 the whole topic goes through in about as long.
SMALL_POLLS = {**MAKER, "TICKLET_KAFKA__BATCH_SIZE": "10"}
FILES = ("maker_fills.csv", "maker_economics.csv")


def _recordings(ws_dir: Path) -> list[Path]:
    return [*sorted((ws_dir / "usdm").glob("btcusdt_2023040*.gz")),
            *sorted((ws_dir / "spot").glob("*usdt_2024080*.gz"))]


def _rows(out: Path) -> dict[str, tuple[str, dict[str, list[str]]]]:
    return {name: by_instrument(out / name) for name in FILES}


@pytest.fixture(scope="module")
def maker_topic(kafka_bootstrap, ws_dir) -> str:
    """The USD-M recordings of 2023-04-04/05 and the spot BTCUSDT and ETHUSDT ones of 2024-08-08/09 on a ticks
    topic, as ``ticklet replay`` publishes them."""
    topic = topic_name("maker")
    proc, _ = replay(kafka_bootstrap, topic, *_recordings(ws_dir))
    assert proc.returncode == 0, proc.stderr
    return topic


def test_the_kafka_path_gives_the_maker_fills_of_the_file_path(kafka_bootstrap, maker_topic, ws_dir, tmp_path):
    """The same recordings read from files and from Kafka (published on an
    output topic too): maker_fills.csv and maker_economics.csv hold the same
    lines per instrument, and the output topic every one of them."""
    files, kafka = tmp_path / "files", tmp_path / "kafka"
    run_flow(file_env(files, *_recordings(ws_dir), **MAKER))
    out_topic = topic_name("maker.out")
    run_flow(flow_env(kafka_bootstrap, maker_topic, kafka, out_topic, **MAKER))
    a, b = _rows(files), _rows(kafka)
    for name in FILES:
        assert a[name][0] == b[name][0]
        assert set(a[name][1]) == {"BTCUSDT-PERP", "BTCUSDT", "ETHUSDT"}, name
        for inst in a[name][1]:
            assert len(a[name][1][inst]) > 50 and a[name][1][inst] == b[name][1][inst], (name, inst)
    published = decoded(consume_all(kafka_bootstrap, out_topic))
    fills = [v for _, v in published if v["type"] == "maker_fill"]
    econ = [v for _, v in published if v["type"] == "maker_economics"]
    assert len(fills) == sum(len(x) for x in a["maker_fills.csv"][1].values())
    assert len(econ) == sum(len(x) for x in a["maker_economics.csv"][1].values())
    head = a["maker_fills.csv"][0].split(",")
    first = dict(zip(head, a["maker_fills.csv"][1]["BTCUSDT-PERP"][0].split(","), strict=True))
    mine = next(v for v in fills if v["instrument"] == "BTCUSDT-PERP")
    assert (mine["order_id"], mine["price"], mine["ts_exch"], mine["mid_10s"]) == (
        int(first["order_id"]), float(first["price"]), int(first["ts_exch"]), float(first["mid_10s"]))


KILLS = 3


def test_kill_minus_nine_keeps_the_resting_orders(kafka_bootstrap, maker_topic, tmp_path):
    """Killed ``KILLS`` times at random points of the maker fills' output, each
    life after a snapshot of its own, and restarted from the recovery store
    each time: maker_fills.csv and maker_economics.csv are, per instrument,
    the uninterrupted run's."""
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    note = f"random state {rng.getstate()[1][:2]}"
    ref = tmp_path / "ref"
    run_flow(flow_env(kafka_bootstrap, maker_topic, ref, **SMALL_POLLS))
    full = (ref / "maker_fills.csv").stat().st_size
    rec_dir, out = tmp_path / "recovery", tmp_path / "crash"
    rec_dir.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec_dir), "1"], check=True, cwd=SCRATCH)
    env = flow_env(kafka_bootstrap, maker_topic, out, RUST_BACKTRACE="0", **SMALL_POLLS)
    args = [sys.executable, "-m", "bytewax.run", "dataflows.forecast", "-r", str(rec_dir), "-s", "1", "-b", "0"]

    def progress() -> int:
        try:
            return (out / "maker_fills.csv").stat().st_size
        except FileNotFoundError:
            return 0

    kills = []
    for target in sorted(rng.uniform(0.05, 0.7) for _ in range(KILLS)):
        kill_when(args, env, rec_dir, lambda t=target: progress() >= t * full, fresh=True)
        kills.append(round(progress() / full, 3))
    run_flow(env, "-r", str(rec_dir), "-s", "1", "-b", "0")
    print(f"kills at {kills} of maker_fills.csv")
    assert kills[0] > 0 and all(a < b for a, b in zip(kills, kills[1:], strict=False)) and kills[-1] <= 1, (
        kills, note)
    got, want = _rows(out), _rows(ref)
    for name in FILES:
        assert got[name][0] == want[name][0]
        assert got[name][1].keys() == want[name][1].keys(), (name, note)
        for inst in want[name][1]:
            assert got[name][1][inst] == want[name][1][inst], (name, inst, kills, note)

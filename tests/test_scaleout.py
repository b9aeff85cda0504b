"""Scale-out: several workers (-w 2) and several processes (-i/-a) give the
same per-symbol forecasts as one worker, from Kafka and from files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from harness.kafkautil import flow_env, replay, run_flow, topic_name
from harness.realdata import RECORD_FILES, SCRATCH

#: Integration tests (tests/integration_mark.py): a Kafka broker, and the dataflow in several processes.
pytestmark = pytest.mark.integration


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _two_processes(env: dict[str, str]) -> None:
    addrs = ";".join(f"127.0.0.1:{p}" for p in _free_ports(2))
    procs = [subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.forecast",
                               "-i", str(i), "-a", addrs], cwd=SCRATCH, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]


def _per_symbol(out: Path, name: str) -> dict[str, list[str]]:
    rows = (out / name).read_text().splitlines()
    by: dict[str, list[str]] = defaultdict(list)
    for r in rows[1:]:
        by[r.split(",", 1)[0]].append(r)
    return {k: sorted(v) for k, v in by.items()}


@pytest.fixture(scope="module")
def two_symbol_topic(kafka_bootstrap, ws_dir):
    topic = topic_name("scale")
    spot = ws_dir / "spot"
    proc, _ = replay(kafka_bootstrap, topic, *sorted(spot.glob("*usdt_2024080*.gz")))
    assert proc.returncode == 0, proc.stderr
    return topic


@pytest.mark.parametrize("mode", ["workers", "processes"])
def test_kafka_scale_out_gives_the_same_forecasts(kafka_bootstrap, two_symbol_topic, tmp_path, mode):
    one = tmp_path / "one"
    run_flow(flow_env(kafka_bootstrap, two_symbol_topic, one))
    many = tmp_path / mode
    env = flow_env(kafka_bootstrap, two_symbol_topic, many)
    if mode == "workers":
        run_flow(env, "-w", "2")
    else:
        _two_processes(env)
    for name in RECORD_FILES:
        a, b = _per_symbol(one, name), _per_symbol(many, name)
        assert set(a) == {"BTCUSDT", "ETHUSDT"}
        assert a == b, name


def test_file_replay_across_two_processes(ws_dir, tmp_path):
    env_base = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    paths = f'["{ws_dir / "spot"}", "{ws_dir / "usdm"}"]'
    one, two = tmp_path / "one", tmp_path / "two"
    run_flow({**env_base, "TICKLET_INPUT__PATHS": paths, "TICKLET_OUTPUT__DIR": str(one)})
    _two_processes({**env_base, "TICKLET_INPUT__PATHS": paths, "TICKLET_OUTPUT__DIR": str(two)})
    a, b = _per_symbol(one, "forecasts.csv"), _per_symbol(two, "forecasts.csv")
    assert set(a) == {"BTCUSDT", "ETHUSDT", "BTCUSDT-PERP"}
    assert a == b

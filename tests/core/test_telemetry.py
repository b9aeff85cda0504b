"""Prometheus: ticklet's counters and stage timings, and the endpoint Bytewax
serves them on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import prometheus_client as pc
import pytest

from harness.kafkautil import flow_env, replay, topic_name
from harness.realdata import SCRATCH


def test_counters_match_the_run_and_stages_are_timed(full_run):
    summary, out = full_run
    counters = json.loads((out / "counters.json").read_text())
    for name in ("ticks", "bars", "forecasts"):  # the registry is process-wide: at least this run's
        assert pc.REGISTRY.get_sample_value("ticklet_events_total", {"name": name}) >= counters[name] > 0
    for stage in ("parse", "bars", "features", "join", "metrics"):
        assert pc.REGISTRY.get_sample_value("ticklet_stage_seconds_count", {"stage": stage}) > 0, stage


@pytest.mark.integration  # a Kafka broker
def test_metrics_endpoint_of_a_live_dataflow(kafka_bootstrap, ws_dir, tmp_path):
    """A dataflow tailing Kafka with BYTEWAX_DATAFLOW_API_ENABLED and
    TICKLET_API__ADDRESS=0.0.0.0 (Bytewax's own server, which listens on
    every interface: what the compose file's container does) serves
    Bytewax's and ticklet's metrics on :3030/metrics."""
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", 3030)) != 0, "port 3030 is taken"
    ticks = topic_name("prom")
    proc, summary = replay(kafka_bootstrap, ticks, ws_dir / "spot" / "btcusdt_20240808.gz")
    assert proc.returncode == 0, proc.stderr
    env = flow_env(kafka_bootstrap, ticks, tmp_path / "out", TICKLET_KAFKA__TAIL="true",
                   BYTEWAX_DATAFLOW_API_ENABLED="true", TICKLET_API__ADDRESS="0.0.0.0")
    flow = subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.forecast"], cwd=SCRATCH, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, text = time.monotonic() + 60, ""
        while time.monotonic() < deadline:
            try:
                text = urllib.request.urlopen("http://127.0.0.1:3030/metrics", timeout=2).read().decode()
            except OSError:
                text = ""
            if f'ticklet_events_total{{name="ticks"}} {float(summary["messages"])}' in text:
                break  # every tick of the recording (its REST snapshot line included) is counted
            time.sleep(0.5)
        assert f'ticklet_events_total{{name="ticks"}} {float(summary["messages"])}' in text, text[-3000:]
        assert "bytewax_" in text and 'ticklet_stage_seconds_bucket{le="0.001",stage="bars"}' in text
    finally:
        flow.terminate()
        flow.wait(30)
    assert os.path.exists(tmp_path / "out" / "counters.json")

"""Crash recovery with the real broker: ``kill -9`` at random points, restart,
and the deduplicated output equals an uninterrupted run's, with nothing
missing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from kafkautil import (
    consume_all,
    consume_with_offsets,
    decoded,
    end_offsets,
    flow_env,
    replay,
    run_flow,
    topic_name,
)
from realdata import RECORD_FILES, SCRATCH


def _dedup_key(v: dict) -> tuple:
    if v["type"] == "metrics":
        return (v["type"], v["instrument"], v["model"], v["horizon"], v["ts_target"])
    if v["type"] == "fill":  # a book closed before a gap in the data fills twice at its last decision
        return (v["type"], v["instrument"], v["model"], v["horizon"], v["ts_forecast"], v["position"])
    return (v["type"], v["instrument"], v["model"], v["horizon"], v["ts_forecast"])


def _counters(out: Path) -> dict:
    try:
        return json.loads((out / "counters.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_kill_minus_nine_three_times_loses_and_changes_nothing(kafka_bootstrap, ws_dir, tmp_path):
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    seed_note = f"random state {rng.getstate()[1][:2]}"
    ticks = topic_name("rec.ticks")
    proc, _ = replay(kafka_bootstrap, ticks, ws_dir / "spot")
    assert proc.returncode == 0, proc.stderr

    # The uninterrupted reference.
    ref_topic = topic_name("rec.ref")
    run_flow(flow_env(kafka_bootstrap, ticks, tmp_path / "ref", ref_topic))
    ref = decoded(consume_all(kafka_bootstrap, ref_topic))
    ref_map = {_dedup_key(v): v for _, v in ref}
    assert len(ref_map) == len(ref) > 10_000  # keys are unique in a clean run

    # The same flow with Bytewax recovery, killed three times mid-stream.
    rec_dir, out, topic = tmp_path / "recovery", tmp_path / "crash", topic_name("rec.crash")
    rec_dir.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec_dir), "1"], check=True, cwd=SCRATCH)
    env = flow_env(kafka_bootstrap, ticks, out, topic)
    # -s 0: a snapshot at every epoch, so that a run of a few seconds has many.
    args = [sys.executable, "-m", "bytewax.run", "dataflows.forecast", "-r", str(rec_dir), "-s", "0", "-b", "0"]
    # Progress is read from the size of forecasts.csv (appended batch by batch).
    full_size = (tmp_path / "ref" / "forecasts.csv").stat().st_size

    def progress() -> int:
        try:
            return (out / "forecasts.csv").stat().st_size
        except FileNotFoundError:
            return 0

    kills = []
    starts = []  # the output topic's end offsets when each run started
    for lo, hi in ((0.1, 0.35), (0.4, 0.6), (0.65, 0.9)):
        starts.append(end_offsets(kafka_bootstrap, topic))
        p = subprocess.Popen(args, cwd=SCRATCH, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = rng.uniform(lo, hi) * full_size
        deadline = time.monotonic() + 120
        while p.poll() is None and progress() < target and time.monotonic() < deadline:
            time.sleep(0.005)
        assert p.poll() is None, f"the run ended before the kill at {target:.0f} B: {p.stderr.read()[-2000:]}"
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stderr.close()
        kills.append(round(progress() / full_size, 3))
    assert len(kills) == 3 and all(0 < k < 1 for k in kills), (kills, seed_note)
    starts.append(end_offsets(kafka_bootstrap, topic))
    run_flow(env, "-r", str(rec_dir), "-s", "0", "-b", "0")

    got = decoded(consume_all(kafka_bootstrap, topic))
    got_map: dict[tuple, dict] = {}
    for _, v in got:
        k = _dedup_key(v)
        if k in got_map:
            assert got_map[k] == v, f"a replayed duplicate differs: {k}; {seed_note}"
        got_map[k] = v
    print(f"kills at {kills} of the output; {len(got) - len(got_map)} duplicates of {len(got_map)} records")
    assert got_map.keys() == ref_map.keys(), seed_note  # none missing, none extra
    assert got_map == ref_map, seed_note  # and the same values
    # No cold start: a restarted run resumes from the last snapshot, so its
    # first forecast comes after the first forecast of the whole run.
    msgs = consume_with_offsets(kafka_bootstrap, topic)
    first_ever = {}
    for _, _, v in msgs:
        if v["type"] == "forecast":
            first_ever[v["instrument"]] = min(first_ever.get(v["instrument"], v["ts_forecast"]), v["ts_forecast"])
    for run, start in enumerate(starts[1:], 1):
        firsts = {}
        for part, off, v in msgs:
            if v["type"] == "forecast" and off >= start.get(part, 0):
                firsts[v["instrument"]] = min(firsts.get(v["instrument"], v["ts_forecast"]), v["ts_forecast"])
        resumed = [s for s in firsts if firsts[s] > first_ever[s]]
        assert resumed, f"restart {run} started cold: {firsts} vs {first_ever}; {seed_note}"
    # The file sinks resume at their snapshotted offsets: exactly once.
    for name in RECORD_FILES:
        a = (out / name).read_text().splitlines()
        b = (tmp_path / "ref" / name).read_text().splitlines()
        assert sorted(a) == sorted(b), name
    assert _counters(out) == _counters(tmp_path / "ref")

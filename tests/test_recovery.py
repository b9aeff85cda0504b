"""Crash recovery with the real broker: ``kill -9`` ten times at random
points, restart each time, and the outputs match an uninterrupted run's as
the README states: the files line for line per instrument, the output topic
deduplicated, with nothing missing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from kafkautil import (
    assert_files_match,
    consume_all,
    consume_with_offsets,
    decoded,
    dedup,
    end_offsets,
    flow_env,
    recovery_progress,
    replay,
    run_flow,
    topic_name,
)
from realdata import SCRATCH

KILLS = 10


def test_kill_minus_nine_ten_times_loses_and_changes_nothing(kafka_bootstrap, ws_dir, tmp_path):
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    seed_note = f"random state {rng.getstate()[1][:2]}"
    ticks = topic_name("rec.ticks")
    proc, _ = replay(kafka_bootstrap, ticks, ws_dir)
    assert proc.returncode == 0, proc.stderr

    # The uninterrupted reference.
    ref_topic = topic_name("rec.ref")
    run_flow(flow_env(kafka_bootstrap, ticks, tmp_path / "ref", ref_topic))
    ref = decoded(consume_all(kafka_bootstrap, ref_topic))
    ref_map = dedup(ref)
    assert len(ref_map) == len(ref) > 10_000  # keys are unique in a clean run

    # The same flow with Bytewax recovery as the README runs it, killed ten times mid-stream.
    rec_dir, out, topic = tmp_path / "recovery", tmp_path / "crash", topic_name("rec.crash")
    rec_dir.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec_dir), "1"], check=True, cwd=SCRATCH)
    env = flow_env(kafka_bootstrap, ticks, out, topic, RUST_BACKTRACE="0")
    args = [sys.executable, "-m", "bytewax.run", "dataflows.forecast", "-r", str(rec_dir), "-s", "1", "-b", "0"]
    # Progress is read from the size of forecasts.csv (appended batch by batch).
    full_size = (tmp_path / "ref" / "forecasts.csv").stat().st_size

    def progress() -> int:
        try:
            return (out / "forecasts.csv").stat().st_size
        except FileNotFoundError:
            return 0

    kills = []
    starts = []  # the output topic's end offsets when each run started
    # Each run is killed once its output has passed a random point (the first
    # once it has committed a snapshot, so that every restart has one to
    # resume from; a later run may be killed before its own first snapshot).
    for target in sorted(rng.uniform(0.02, 0.9) for _ in range(KILLS)):
        starts.append(end_offsets(kafka_bootstrap, topic))
        p = subprocess.Popen(args, cwd=SCRATCH, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < deadline and (
                progress() < target * full_size or recovery_progress(rec_dir)["epoch"] <= 1):
            time.sleep(0.01)
        assert p.poll() is None, f"the run ended before the kill at {target:.2f}: {p.stderr.read()[-2000:]}"
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stderr.close()
        kills.append(round(progress() / full_size, 3))
    assert len(kills) == KILLS and all(0 < k < 1 for k in kills), (kills, seed_note)
    starts.append(end_offsets(kafka_bootstrap, topic))
    run_flow(env, "-r", str(rec_dir), "-s", "1", "-b", "0")

    got = decoded(consume_all(kafka_bootstrap, topic))
    got_map = dedup(got, seed_note)
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
    # The file sinks resume at their snapshotted offsets: exactly once, each
    # instrument's lines in the uninterrupted run's order.
    assert_files_match(out, tmp_path / "ref", seed_note)

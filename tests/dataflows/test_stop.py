"""Ctrl-C on the dataflow tailing Kafka, as a user runs it
(``python -m bytewax.run dataflows.forecast -r DIR -s 1 -b 0`` with
``TICKLET_KAFKA__TAIL=true``): the one line it says once it has caught up,
and the clean stop on SIGINT (one line, exit status 130, the last snapshot
committed, so that the same command goes on from there).

Before: the run said nothing once it had read the topic, and Ctrl-C was a
Rust panic with a ``KeyboardInterrupt`` traceback, exit status 1.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runutil import FLOW

from harness.kafkautil import assert_files_match, end_offsets, flow_env, recovery_progress, replay, run_flow, topic_name
from harness.procs import interrupt, reaped
from harness.realdata import SCRATCH

pytestmark = pytest.mark.integration

EXIT_INTERRUPTED = 130


def _ctrl_c_ready() -> None:
    """In the child: SIGINT as a terminal's Ctrl-C delivers it (a shell without
    job control starts background commands with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(what: str, cond, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert proc.poll() is None, f"the run ended before {what}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s: {log.read_text()[-3000:]}"
        time.sleep(0.1)


def test_ctrl_c_on_a_tailing_run_is_one_line_and_130_and_the_same_command_goes_on(kafka_bootstrap, ws_dir,
                                                                                  tmp_path):
    """The spot BTCUSDT recording of 2024-08-08 in the ticks topic; the
    dataflow tails it with a recovery store: once it has read every partition
    it says so in one line; the next day's recording published meanwhile is
    read, and the line is not said again. Ctrl-C: the summary, then one line
    saying it stopped on request and that the store goes on from there, exit
    status 130, no panic or traceback. ETHUSDT published afterwards, the same
    command (not tailing) goes on from the snapshot: its files are those of
    one uninterrupted run over the whole topic."""
    spot = ws_dir / "spot"
    ticks = topic_name("stop.ticks")
    proc, _ = replay(kafka_bootstrap, ticks, spot / "btcusdt_20240808.gz")
    assert proc.returncode == 0, proc.stderr
    rec, out, log = tmp_path / "recovery", tmp_path / "out", tmp_path / "flow.log"
    rec.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "1"], check=True, cwd=SCRATCH)
    args = [*FLOW, "-r", str(rec), "-s", "1", "-b", "0"]
    env = flow_env(kafka_bootstrap, ticks, out, TICKLET_KAFKA__TAIL="true", RUST_BACKTRACE="0")
    with open(log, "w") as err:
        flow = subprocess.Popen(args, cwd=SCRATCH, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=_ctrl_c_ready)
    with reaped(flow):
        _wait_for("caught-up line", lambda: "caught up with" in log.read_text(), flow, log)
        first = end_offsets(kafka_bootstrap, ticks)
        line = next(ln for ln in log.read_text().splitlines() if "caught up with" in ln)
        shown = ", ".join(f"{p}:{o}" for p, o in sorted(first.items()))
        assert line == f"caught up with {ticks} at offsets {shown} (partition:offset); waiting for new ticks", line

        proc, _ = replay(kafka_bootstrap, ticks, spot / "btcusdt_20240809.gz")  # while it tails
        assert proc.returncode == 0, proc.stderr
        total = sum(end_offsets(kafka_bootstrap, ticks).values())
        _wait_for("snapshot of the whole topic", lambda: recovery_progress(rec)["offsets"] >= total, flow, log)
        interrupt(flow, timeout=120)
    stderr = log.read_text()
    assert flow.returncode == EXIT_INTERRUPTED, stderr[-3000:]
    assert stderr.count("caught up with") == 1, stderr[-3000:]  # said once, not at every end of a partition
    assert "panicked" not in stderr and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "outputs:" in stderr  # the sinks closed: the summary of what was read
    stopped = [ln for ln in stderr.splitlines() if ln.startswith("ticklet: ")]
    assert stopped[-1] == (f"ticklet: stopped on request (SIGINT): the ticks read until then are processed and their "
                           f"outputs written (the files in {out}); the recovery store {rec} holds its last snapshot, "
                           "and the same command goes on from there"), stopped
    assert recovery_progress(rec)["offsets"] == total  # the last snapshot is of everything read

    proc, _ = replay(kafka_bootstrap, ticks, spot / "ethusdt_20240808.gz")  # after the stop
    assert proc.returncode == 0, proc.stderr
    again = run_flow(flow_env(kafka_bootstrap, ticks, out), "-r", str(rec), "-s", "1", "-b", "0")
    assert "fresh start" not in again.stderr, again.stderr[-3000:]
    run_flow(flow_env(kafka_bootstrap, ticks, tmp_path / "ref"))  # one run over the whole topic
    assert_files_match(out, tmp_path / "ref", "stopped with Ctrl-C while tailing, then resumed")


def test_ctrl_c_on_a_run_without_a_store_says_it_starts_again(kafka_bootstrap, ws_dir, tmp_path):
    """Without ``-r``: the same line says the same command starts from the
    beginning again; status 130."""
    ticks = topic_name("stop.nostore")
    proc, _ = replay(kafka_bootstrap, ticks, ws_dir / "spot" / "btcusdt_20240808.gz")
    assert proc.returncode == 0, proc.stderr
    out, log = tmp_path / "out", tmp_path / "flow.log"
    env = flow_env(kafka_bootstrap, ticks, out, TICKLET_KAFKA__TAIL="true", RUST_BACKTRACE="0")
    with open(log, "w") as err:
        flow = subprocess.Popen(FLOW, cwd=SCRATCH, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=_ctrl_c_ready)
    with reaped(flow):
        _wait_for("caught-up line", lambda: "caught up with" in log.read_text(), flow, log)
        interrupt(flow, timeout=120)
    stderr = log.read_text()
    assert flow.returncode == EXIT_INTERRUPTED, stderr[-3000:]
    assert "Traceback" not in stderr and "panicked" not in stderr, stderr[-3000:]
    line = [ln for ln in stderr.splitlines() if ln.startswith("ticklet: ")][-1]
    assert re.fullmatch(r"ticklet: stopped on request \(SIGINT\): .* with no recovery store \(-r\), the same "
                        r"command starts again from the beginning of the input", line), line
    assert (out / "forecasts.csv").stat().st_size > 1000


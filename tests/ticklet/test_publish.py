"""``ticklet replay`` (:mod:`ticklet.publish`) as a user runs it, against the
real broker: a gap in event time between recordings of different dates is
skipped at a replay speed, with one line naming the files; Ctrl-C prints the
summary of what was replayed so far and exits with status 130."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest
from runutil import ticklet

from harness.kafkautil import end_offsets, replay, topic_name
from harness.realdata import SCRATCH, lines
from sources.files import line_ts
from ticklet.publish import duration

pytestmark = pytest.mark.integration


def test_a_gap_of_a_year_between_recordings_is_skipped_with_one_line(kafka_bootstrap, ws_dir):
    """Spot BTCUSDT of 2023-04-05 and 2024-08-08 (491 days apart) at ``--speed
    100``: the gap between the files is skipped (before: 4.9 days of sleep,
    without a word), with one line naming both files; every message is
    delivered, and the recordings themselves are still paced (their 760 s of
    event time take at least 6.8 s)."""
    old, new = ws_dir / "spot" / "btcusdt_20230405.dat.gz", ws_dir / "spot" / "btcusdt_20240808.gz"
    ts_old = [t for t in map(line_ts, lines(old)) if t >= 0]
    ts_new = [t for t in map(line_ts, lines(new)) if t >= 0]
    topic = topic_name("replay.gap")
    proc, summary = replay(kafka_bootstrap, topic, old, new, speed="100")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary is not None and summary["delivered"] == summary["messages"] == len(lines(old)) + len(lines(new))
    assert not summary["interrupted"]
    said = [ln.split(": ", 1)[1] for ln in proc.stderr.splitlines() if "skipped a gap" in ln]
    gap = duration(ts_new[0] - ts_old[-1])
    assert gap.startswith("491 d ")
    assert said == [f"replay: skipped a gap of {gap} in event time between {old} and {new} (longer than "
                    "--max-gap-s 60 s)"], proc.stderr[-3000:]
    paced = ((ts_old[-1] - ts_old[0]) + (ts_new[-1] - ts_new[0])) / 1e9 / 100
    assert 0.9 * paced < summary["wall_s"] < paced + 120, (summary, paced)


def test_ctrl_c_prints_the_summary_of_what_was_replayed_and_exits_130(kafka_bootstrap, ws_dir):
    """A replay at the recording's own pace, stopped with Ctrl-C once the
    topic holds some of it: the summary on stdout counts what was produced
    (all delivered: the topic holds exactly that), ``interrupted`` true, exit
    status 130 and no traceback (before: a KeyboardInterrupt traceback and no
    summary)."""
    topic = topic_name("replay.stop")
    path = ws_dir / "spot" / "btcusdt_20240808.gz"
    proc = subprocess.Popen([*ticklet(), "replay", str(path), "--speed", "1", "--bootstrap-servers", kafka_bootstrap,
                             "--topic", topic], cwd=SCRATCH, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while sum(end_offsets(kafka_bootstrap, topic).values()) < 100:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    summary = json.loads(out)
    assert summary["interrupted"] is True and summary["undelivered"] == 0 and summary["failed"] == 0, summary
    assert 100 <= summary["messages"] < len(lines(path)), summary
    assert re.fullmatch(r"stopped on request \(SIGINT\) after [\d,]+ messages", summary["stopped"]), summary
    assert sum(end_offsets(kafka_bootstrap, topic).values()) == summary["delivered"] == summary["messages"]

"""A run whose outputs cannot be written, on the real recordings, through the
real entry points (``ticklet backtest`` and ``python -m bytewax.run`` as
subprocesses): a full disk (a small tmpfs), a file that grows past the
process's file size limit (``RLIMIT_FSIZE``: EFBIG), the output directory
moved away during the run, and an output file with a directory in its
place. Each stops with one line naming the file and the OS error and the
documented exit status (74 during the run, 2 at start): no panic, no
traceback, no summary claiming success, no ``counters.json`` claiming totals;
what was written is a prefix of the uninterrupted run's files, and a run with
recovery resumes to exactly the uninterrupted run's outputs."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runutil import FLOW, file_env, one_line, ticklet

from harness.kafkautil import assert_files_match
from harness.realdata import RECORD_FILES, SCRATCH
from sources.input_config import SAMPLE_DIR

#: Integration tests (tests/integration_mark.py): every test runs the CLI or the dataflow in a subprocess.
pytestmark = pytest.mark.integration

#: The exit statuses the README documents (sinks.fatal).
WRITE_FAILED, BAD_SETUP = 74, 2


def _file_size_limit(n: int):
    """For ``preexec_fn``: writes past ``n`` bytes fail with EFBIG (Python ignores SIGXFSZ)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))


def _assert_prefixes(out: Path, ref: Path) -> None:
    """Every record file written is a byte prefix of the uninterrupted run's:
    what was written is right, only the end is missing."""
    written = [name for name in RECORD_FILES if (out / name).exists()]
    assert written
    for name in written:
        got, want = (out / name).read_bytes(), (ref / name).read_bytes()
        assert want.startswith(got), f"{name}: {len(got)} bytes that are not the reference's first bytes"
    assert any((out / n).stat().st_size < (ref / n).stat().st_size for n in written)  # it did stop mid-run


@pytest.fixture(scope="module")
def sample_ref(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted backtest of the bundled sample."""
    out = tmp_path_factory.mktemp("sample_ref")
    proc = subprocess.run([*ticklet(), "backtest", str(SAMPLE_DIR), "--out", str(out)], cwd=SCRATCH,
                          env=file_env(out), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_a_full_disk_stops_the_backtest_with_the_os_error(sample_ref, tmp_path):
    """``--out`` on a 400 kB tmpfs (its own mount namespace): the disk fills
    up in the middle of the run (ENOSPC). Before: status 134 and 146 lines
    of panics, the summary and output list printed, counters.json ``{}``."""
    mnt, kept = tmp_path / "mnt", tmp_path / "kept"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs '{mnt}'"],
                           capture_output=True, text=True)
    if probe.returncode != 0:  # CI runs as root: this works there; a machine where it cannot is told so
        pytest.fail(f"cannot mount a tmpfs in a mount namespace here (root and unshare -m needed): "
                    f"{probe.stderr.strip()}")
    script = ('mount -t tmpfs -o size=400k tmpfs "$1" || exit 99; shift; out="$1"; shift; '
              '"$@" --out "$out"; rc=$?; cp -a "$out" "$KEPT"; exit $rc')
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(mnt), str(mnt / "out"), *ticklet(),
                           "backtest", str(SAMPLE_DIR), "--json"], cwd=SCRATCH,
                          env=file_env(mnt / "out", KEPT=str(kept)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == WRITE_FAILED, proc.stderr[-3000:]
    line = one_line(proc.stderr)
    assert line.startswith(f"ticklet: cannot write {mnt / 'out'}/"), line
    assert "[Errno 28] No space left on device" in line and f"status {WRITE_FAILED}" in line, line
    assert proc.stdout == ""  # no JSON summary
    assert not (kept / "counters.json").exists()  # no totals claimed
    _assert_prefixes(kept, sample_ref)


def test_a_file_too_large_stops_the_backtest_with_the_os_error(sample_ref, tmp_path):
    """The same with a file size limit of 200 kB (EFBIG). Before: the summary
    and output list, then a traceback, status 1."""
    out = tmp_path / "out"
    proc = subprocess.run([*ticklet(), "backtest", str(SAMPLE_DIR), "--out", str(out), "--json"], cwd=SCRATCH,
                          env=file_env(out), capture_output=True, text=True, timeout=300,
                          preexec_fn=_file_size_limit(200_000))
    assert proc.returncode == WRITE_FAILED, proc.stderr[-3000:]
    line = one_line(proc.stderr)
    assert line.startswith(f"ticklet: cannot write {out}/") and "[Errno 27] File too large" in line, line
    assert proc.stdout == ""
    assert not (out / "counters.json").exists()
    _assert_prefixes(out, sample_ref)


def test_a_write_failure_with_recovery_resumes_to_the_same_outputs(ws_dir, full_run, tmp_path):
    """``python -m bytewax.run`` with recovery over every recording, with a
    file size limit of 2 MB: it stops mid-run with status 74 and one line;
    the same command without the limit resumes from the last snapshot, and
    the outputs are the uninterrupted run's (nothing lost, nothing counted
    twice)."""
    _, ref = full_run
    out, rec = tmp_path / "out", tmp_path / "recovery"
    rec.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "1"], check=True, cwd=SCRATCH)
    cmd = [*FLOW, "-r", str(rec), "-s", "1", "-b", "0"]
    env = file_env(out, ws_dir)
    proc = subprocess.run(cmd, cwd=SCRATCH, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=_file_size_limit(2_000_000))
    assert proc.returncode == WRITE_FAILED, proc.stderr[-3000:]
    line = one_line(proc.stderr)
    assert line.startswith(f"ticklet: cannot write {out}/") and "[Errno 27] File too large" in line, line
    assert not (out / "counters.json").exists()
    resumed = subprocess.run(cmd, cwd=SCRATCH, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "fresh start" not in resumed.stderr  # it resumed from the store
    assert_files_match(out, ref, "write failure, then resumed")


def test_the_output_directory_moved_away_mid_run_stops_the_run(ws_dir, tmp_path):
    """The output directory is renamed while the run writes to it (lines
    written since would go to files no one reads): the run notices at its
    next snapshot (every second here) or at its end, and stops with one line
    and status 74. Before: exit 0, the summary listing files that were no
    longer there."""
    out, moved = tmp_path / "out", tmp_path / "moved"
    p = subprocess.Popen([*FLOW, "-s", "1"], cwd=SCRATCH,
                         env=file_env(out, ws_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "forecasts.csv").exists() and (out / "forecasts.csv").stat().st_size > 0):
            assert p.poll() is None, f"the run ended before its first forecast: {p.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        out.rename(moved)
        assert p.poll() is None, "the run ended before its output directory was moved"
        _, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == WRITE_FAILED, err[-3000:]
    line = one_line(err)
    assert line.startswith(f"ticklet: cannot write {out}/"), line
    assert "No such file or directory" in line, line


@pytest.mark.parametrize("blocker", ["empty directory", "directory with a file"])
@pytest.mark.parametrize("entry", ["backtest", "bytewax.run"])
def test_a_directory_in_place_of_an_output_file_is_one_line_at_start(entry, blocker, tmp_path):
    """``DIR/forecasts.csv`` is a directory (an empty one cannot be
    unlinked, a full one not removed either): one line naming it, status 2,
    before anything runs. Before: a traceback and status 1 (backtest), a
    panic (bytewax.run)."""
    out = tmp_path / "out"
    (out / "forecasts.csv").mkdir(parents=True)
    if blocker == "directory with a file":
        (out / "forecasts.csv" / "keep").write_text("mine\n")
    cmd = [*ticklet(), "backtest", str(SAMPLE_DIR), "--out", str(out)] if entry == "backtest" else FLOW
    proc = subprocess.run(cmd, cwd=SCRATCH, env=file_env(out, SAMPLE_DIR), capture_output=True, text=True, timeout=300)
    assert proc.returncode == BAD_SETUP, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    name = "--out" if entry == "backtest" else "TICKLET_OUTPUT__DIR"
    assert proc.stderr.startswith(f"ticklet: {name} {out}: ") and f"{out / 'forecasts.csv'}" in proc.stderr
    assert (out / "forecasts.csv").is_dir()  # left as it was
    assert not (out / "metrics.csv").exists() and not (out / "counters.json").exists()  # nothing ran
    if blocker == "directory with a file":
        assert (out / "forecasts.csv" / "keep").read_text() == "mine\n"

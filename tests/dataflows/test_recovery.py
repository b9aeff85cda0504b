"""Crash recovery with the real broker: ``kill -9`` ten times at random
points, restart each time, and the outputs match an uninterrupted run's as
the README states: the files line for line per instrument, the output topic
deduplicated, with nothing missing. Then the recovery store itself: damaged,
missing, deleted, or made for another output directory, and
``scripts/run-forecast.sh`` restarting the dataflow."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from runutil import FLOW, file_env, one_line

from harness.kafkautil import (
    assert_files_match,
    consume_all,
    consume_with_offsets,
    decoded,
    dedup,
    end_offsets,
    flow_env,
    kill_when,
    replay,
    run_flow,
    topic_name,
)
from harness.realdata import RECORD_FILES, REPO, SCRATCH
from sources.input_config import SAMPLE_DIR

#: Integration tests (tests/integration_mark.py): a Kafka broker, and the dataflow and
#: scripts/run-forecast.sh in subprocesses.
pytestmark = pytest.mark.integration

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
        kill_when(args, env, rec_dir, lambda t=target: progress() >= t * full_size)
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


# A recovery store that Bytewax cannot use, a deleted one, an output directory
# changed between two lives, and scripts/run-forecast.sh (the container's entry
# point) restarting the dataflow: through the real entry points, on the real
# recordings.

SCRIPT = REPO / "scripts" / "run-forecast.sh"
BAD_SETUP = 2  # the exit status of a damaged or mismatched store (README, Crash recovery)


def _run_forecast(rec: Path, out: Path, *inputs: Path, **extra: str) -> subprocess.CompletedProcess:
    """``scripts/run-forecast.sh`` with its store in ``rec``, to the end of its input."""
    env = file_env(out, *inputs, RECOVERY_DIR=str(rec), RESTART_DELAY_S="0", **extra)
    return subprocess.run(["bash", str(SCRIPT)], cwd=SCRATCH, env=env, capture_output=True, text=True, timeout=300)


def _flow_with(rec: Path, out: Path, *inputs: Path) -> subprocess.CompletedProcess:
    """``python -m bytewax.run dataflows.forecast -r rec -s 1 -b 0`` to the end of its input."""
    return subprocess.run([*FLOW, "-r", str(rec), "-s", "1", "-b", "0"], cwd=SCRATCH, env=file_env(out, *inputs),
                          capture_output=True, text=True, timeout=300)


def _new_store(path: Path, parts: int = 1) -> Path:
    path.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(path), str(parts)], check=True, cwd=SCRATCH)
    return path


def _record_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name in (*RECORD_FILES, "counters.json")}


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store that a whole run over the bundled sample snapshotted into."""
    base = tmp_path_factory.mktemp("sample_store")
    rec = _new_store(base / "recovery")
    proc = _flow_with(rec, base / "out", SAMPLE_DIR)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return rec / "part-0.sqlite3"


def _damage(kind: str, rec: Path, sample_store: Path) -> Path:
    """Make the store in ``rec`` unusable in the way ``kind`` says; the file
    the one line must name."""
    part = rec / "part-0.sqlite3"
    if kind == "empty file":  # a disk that filled up as the store was made
        part.write_bytes(b"")
    elif kind == "another file":  # a real recording in its place
        part.write_bytes((REPO / "tests" / "data" / "binance-ws" / "spot" / "btcusdt_20240808.gz").read_bytes())
    elif kind == "another schema":
        db = sqlite3.connect(part)
        db.execute("CREATE TABLE snapshots (key TEXT, value BLOB)")
        db.commit()
        db.close()
    elif kind == "torn store":  # a real store cut short
        whole = sample_store.read_bytes()
        part.write_bytes(whole[:len(whole) // 2])
    elif kind == "a partition missing":
        _new_store(rec / "two", parts=2)
        part = rec
        for p in (rec / "two").iterdir():
            p.rename(rec / p.name)
        (rec / "two").rmdir()
        (rec / "part-1.sqlite3").unlink()
    return part


@pytest.mark.parametrize("kind", ["empty file", "another file", "another schema", "torn store",
                                  "a partition missing"])
def test_a_damaged_store_stops_run_forecast_with_one_line(kind, sample_store, tmp_path):
    """A store Bytewax cannot use: ``scripts/run-forecast.sh`` stops after
    one life with status 2 and the dataflow's one line naming the file and
    what to do; the store is left as it was, nothing is written. Before:
    NoPartitionsError and a Rust panic (or 'file is not a database'), status
    1, on every restart of the script: a crash loop."""
    rec, out = tmp_path / "recovery", tmp_path / "out"
    rec.mkdir()
    named = _damage(kind, rec, sample_store)
    before = {p.name: p.read_bytes() for p in rec.glob("part-*.sqlite3")}
    proc = _run_forecast(rec, out, SAMPLE_DIR)
    assert proc.returncode == BAD_SETUP, proc.stderr[-3000:]
    line = one_line(proc.stderr)
    assert line.startswith(f"ticklet: recovery store {named}: "), line
    assert "start afresh" in line and "python -m bytewax.recovery" in line, line
    assert "not restarting" in proc.stderr and "restarting it from" not in proc.stderr, proc.stderr  # one life
    assert {p.name: p.read_bytes() for p in rec.glob("part-*.sqlite3")} == before  # read only (SQLite may add -shm)
    assert not out.exists()  # refused: no record file, and the output directory it made taken away


@pytest.mark.parametrize("kind", ["no directory", "no partition"])
def test_a_missing_store_is_one_line_for_bytewax_run(kind, tmp_path):
    """``-r`` naming a directory that is not there, or holds no partition:
    one line saying how to create the store (scripts/run-forecast.sh creates
    it itself). Before: a panic."""
    rec, out = tmp_path / "recovery", tmp_path / "out"
    if kind == "no partition":
        rec.mkdir()
    proc = _flow_with(rec, out, SAMPLE_DIR)
    assert proc.returncode == BAD_SETUP, proc.stderr[-3000:]
    line = one_line(proc.stderr)
    assert line.startswith(f"ticklet: recovery store {rec}: ") and f"python -m bytewax.recovery {rec} 1" in line, line


def test_a_deleted_store_is_a_logged_fresh_start(kafka_bootstrap, tmp_path):
    """The bundled sample published to Kafka by ``scripts/run-forecast.sh``
    three times: with no store (it makes one: a fresh start, logged), with
    that store (it resumes at the end: nothing published again, no fresh
    start), and after the store was deleted: a fresh start, logged with how
    many records the output topic holds already, which are then all
    published again, identical (as the README says). The files are the same
    each time. Before: the deleted store restarted from zero without a word."""
    rec, out, topic = tmp_path / "recovery", tmp_path / "out", topic_name("rec.fresh")
    kafka = {"TICKLET_OUTPUT__KAFKA": "true", "TICKLET_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
             "TICKLET_KAFKA__OUTPUT_TOPIC": topic, "TICKLET_KAFKA__DEAD_LETTER_TOPIC": topic + ".dlq"}
    fresh = f"recovery store {rec} holds no snapshot: a fresh start from the beginning of the input"

    first = _run_forecast(rec, out, SAMPLE_DIR, **kafka)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"run-forecast: no recovery store in {rec}: creating one" in first.stderr
    assert fresh in first.stderr and "already holds" not in first.stderr, first.stderr[-3000:]
    published = sum(end_offsets(kafka_bootstrap, topic).values())
    files = _record_files(out)
    assert published > 1000 and files

    again = _run_forecast(rec, out, SAMPLE_DIR, **kafka)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "fresh start" not in again.stderr and "creating one" not in again.stderr, again.stderr[-3000:]
    assert sum(end_offsets(kafka_bootstrap, topic).values()) == published  # nothing published twice
    assert _record_files(out) == files

    shutil.rmtree(rec)
    last = _run_forecast(rec, out, SAMPLE_DIR, **kafka)
    assert last.returncode == 0, last.stderr[-3000:]
    assert f"{fresh}; the output topic {topic!r} already holds {published:,} records, and this run publishes its " \
           "records again" in last.stderr, last.stderr[-3000:]
    records = decoded(consume_all(kafka_bootstrap, topic))
    assert len(records) == 2 * published  # published again, as the line says ...
    assert len(dedup(records)) == published  # ... each record twice, identical (dedup checks the values)
    assert _record_files(out) == files


class _Before(pickle._Pickler):
    """Pickles as ticklet did before issue 24: the record types as ``ticklet.events.*``."""

    def save_global(self, obj, name=None):
        if getattr(obj, "__module__", None) == "core.events":
            self.write(pickle.GLOBAL + b"ticklet.events\n" + obj.__qualname__.encode() + b"\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _edited_store(sample_store: Path, tmp_path: Path, edit: Callable[[sqlite3.Connection], None]) -> Path:
    """A copy of the sample's store in ``tmp_path/recovery``, its database changed by ``edit(connection)``."""
    rec = tmp_path / "recovery"
    rec.mkdir()
    shutil.copy(sample_store, rec / sample_store.name)
    db = sqlite3.connect(rec / sample_store.name)
    edit(db)
    db.commit()
    db.close()
    return rec


def _refused_line(rec: Path, store: Path, tmp_path: Path) -> str:
    """The one line of a run resumed from the store in ``rec``: status 2, and its file ``store`` as it was."""
    before = store.read_bytes()
    proc = _flow_with(rec, tmp_path / "out", SAMPLE_DIR)
    assert proc.returncode == BAD_SETUP, proc.stderr[-3000:]
    assert store.read_bytes() == before
    return one_line(proc.stderr)


def test_a_store_of_an_earlier_version_is_one_line(sample_store, tmp_path):
    """A store whose snapshots an earlier ticklet wrote, which named the record
    types ticklet.events.* (now core.events): the states of the sample's run,
    pickled as that version did. Resuming from it is one line naming the
    step, the class and what to do, status 2, and the store is left as it was
    (before the check: a Rust panic, ModuleNotFoundError: No module named
    'ticklet.events')."""
    def as_before(db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT rowid, ser_change FROM snaps WHERE instr(ser_change, ?) > 0", (b"core.events",))
        for rowid, state in rows.fetchall():
            old = io.BytesIO()
            _Before(old, protocol=5).dump(pickle.loads(state))
            assert b"ticklet.events" in old.getvalue() and b"core.events" not in old.getvalue()
            db.execute("UPDATE snaps SET ser_change = ? WHERE rowid = ?", (old.getvalue(), rowid))

    rec = _edited_store(sample_store, tmp_path, as_before)
    line = _refused_line(rec, rec / sample_store.name, tmp_path)
    assert re.fullmatch(rf"ticklet: recovery store {re.escape(str(rec / sample_store.name))}: the snapshot of "
                        r"ticklet_forecast\.[\w.]+ \([\w:]+\) refers to ticklet\.events\.\w+, which this version of "
                        r"ticklet does not have .*: finish that run with the earlier version, or remove .* to start "
                        r"afresh", line), line
    assert not (tmp_path / "out").exists() or not _record_files(tmp_path / "out")


def test_a_store_of_the_per_instrument_steps_is_one_line(sample_store, tmp_path):
    """A store of a version before issue 25, whose per-instrument steps were
    keyed Bytewax steps (``check_ticks``, ``join_forecasts``...) with the
    reader's position alone as the input's state: the sample's store with
    such a step's snapshot in it. Resuming is one line naming the step and
    what to do, status 2, and the store is left as it was."""
    def with_old_step(db: sqlite3.Connection) -> None:
        epoch, = db.execute("SELECT MAX(snap_epoch) FROM snaps").fetchone()
        db.execute("INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, ?, ?)",
                   ("ticklet_forecast.join_forecasts.join.stateful_step", "BTCUSDT", epoch, pickle.dumps(None)))

    rec = _edited_store(sample_store, tmp_path, with_old_step)
    line = _refused_line(rec, rec / sample_store.name, tmp_path)
    assert line.startswith(f"ticklet: recovery store {rec}: its snapshot is of an earlier version of ticklet, which "
                           "kept each instrument's state in steps of its own (ticklet_forecast.join_forecasts.join."
                           "stateful_step), where this one keeps it with the input partition that reads it. Finish "
                           "that run with the earlier version, or restore the store from a backup"), line


@pytest.mark.integration
def test_a_store_of_another_input_is_one_line(kafka_bootstrap, tmp_path):
    """The runbook's store, made by a run over the sample's files, given to
    the run on Kafka it shows next, and a Kafka run's store given to a run on
    the files: one line naming the store, both inputs and what to do, status
    2, the store as it was (before: a Rust panic, 'StateKey ... not in this
    worker's routing map')."""
    ticks = topic_name("rec.input")
    proc, _ = replay(kafka_bootstrap, ticks, SAMPLE_DIR / "spot" / "btcusdt_20240808.gz")
    assert proc.returncode == 0, proc.stderr
    files_store, out = _new_store(tmp_path / "files"), tmp_path / "out"
    assert _flow_with(files_store, out, SAMPLE_DIR).returncode == 0
    before = (files_store / "part-0.sqlite3").read_bytes()
    on_kafka = subprocess.run([*FLOW, "-r", str(files_store), "-s", "1", "-b", "0"], cwd=SCRATCH, capture_output=True,
                              text=True, timeout=300, env=flow_env(kafka_bootstrap, ticks, out))
    assert on_kafka.returncode == BAD_SETUP, on_kafka.stderr[-3000:]
    assert one_line(on_kafka.stderr) == (
        f"ticklet: recovery store {files_store}: its snapshot is of a run that read the files of ws:spot:BTCUSDT, and "
        f"this run reads the Kafka topic {ticks!r}: a store belongs to one input. Run with the input of the snapshot, "
        "or give this run a store and an output directory of its own (mkdir -p recovery/other && python -m "
        "bytewax.recovery recovery/other 1, then -r recovery/other/ with another TICKLET_OUTPUT__DIR)")
    assert (files_store / "part-0.sqlite3").read_bytes() == before

    kafka_store, kafka_out = _new_store(tmp_path / "kafka"), tmp_path / "kafka_out"
    run_flow(flow_env(kafka_bootstrap, ticks, kafka_out), "-r", str(kafka_store), "-s", "1", "-b", "0")
    on_files = _flow_with(kafka_store, kafka_out, SAMPLE_DIR)
    assert on_files.returncode == BAD_SETUP, on_files.stderr[-3000:]
    line = one_line(on_files.stderr)
    assert line.startswith(f"ticklet: recovery store {kafka_store}: its snapshot is of a run that read the Kafka "
                           f"topic {ticks!r}, and this run reads the files of ws:spot:BTCUSDT: "), line


def test_two_stores_sharing_an_output_directory_is_one_line(tmp_path):
    """A run over the sample's second day with its store ``a`` into ``out``,
    then another over both days with its store ``b`` into the same ``out``
    (it writes the files anew, longer). Resuming ``a`` would cut ``b``'s files
    at ``a``'s offsets, leaving a mix of both runs: instead one line naming
    the file and the directory, status 2 (the file's first bytes are not those
    ``a``'s run wrote, by the digest in its snapshot). ``b`` resumed ends
    normally, its files unchanged."""
    day2 = SAMPLE_DIR / "spot" / "btcusdt_20240809.gz"
    a, b, out = _new_store(tmp_path / "a"), _new_store(tmp_path / "b"), tmp_path / "out"
    assert _flow_with(a, out, day2).returncode == 0
    assert _flow_with(b, out, SAMPLE_DIR).returncode == 0
    files = _record_files(out)

    resumed = _flow_with(a, out, day2)
    assert resumed.returncode == BAD_SETUP, resumed.stderr[-3000:]
    line = one_line(resumed.stderr)
    assert re.fullmatch(rf"ticklet: {re.escape(str(out))}/\w+\.csv: the recovery snapshot resumes this file at byte "
                        r"[\d,]+, but its first [\d,]+ bytes are not the ones this store's run wrote: another run "
                        rf"wrote over the file since \(two recovery stores, or a run without one, sharing the output "
                        rf"directory {re.escape(str(out))}\)\. Give each store an output directory of its own "
                        r"\(TICKLET_OUTPUT__DIR\), or remove the recovery store to start afresh\.", line), line

    again = _flow_with(b, out, SAMPLE_DIR)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _record_files(out) == files


def test_an_output_directory_changed_between_lives_is_one_line(tmp_path):
    """A run over the sample with recovery into ``a``; the same store with
    TICKLET_OUTPUT__DIR ``b``: one line naming both, status 2 (before: a
    panic, 'StateKey ... not in this worker's routing map'). With ``a``
    again but its files gone: one line naming the file and the snapshot's
    offset, status 2 (before: the files were recreated holding zeros up to
    the offsets), and the same with ``forecasts.csv`` cut in half. The files
    put back, the run ends normally and they are unchanged."""
    rec, a, b = _new_store(tmp_path / "recovery"), tmp_path / "a", tmp_path / "b"
    assert _flow_with(rec, a, SAMPLE_DIR).returncode == 0
    files = _record_files(a)

    moved = _flow_with(rec, b, SAMPLE_DIR)
    assert moved.returncode == BAD_SETUP, moved.stderr[-3000:]
    line = one_line(moved.stderr)
    assert line.startswith(f"ticklet: recovery store {rec}: its snapshot is of a run that wrote {a}/"), line
    assert f"{b}/" in line and "TICKLET_OUTPUT__DIR" in line, line
    assert not b.exists()  # refused: no record file, and the output directory it made taken away

    a.rename(tmp_path / "kept")
    gone = _flow_with(rec, a, SAMPLE_DIR)
    assert gone.returncode == BAD_SETUP, gone.stderr[-3000:]
    line = one_line(gone.stderr)
    assert re.fullmatch(rf"ticklet: {re.escape(str(a))}/\w+\.csv: the recovery snapshot resumes this file at byte "
                        r"[\d,]+, but it does not exist: .*remove the recovery store to start afresh\.", line), line

    shutil.rmtree(a)
    (tmp_path / "kept").rename(a)
    whole = (a / "forecasts.csv").read_bytes()
    (a / "forecasts.csv").write_bytes(whole[:len(whole) // 2])
    cut = _flow_with(rec, a, SAMPLE_DIR)
    assert cut.returncode == BAD_SETUP, cut.stderr[-3000:]
    assert one_line(cut.stderr).startswith(f"ticklet: {a / 'forecasts.csv'}: the recovery snapshot resumes this "
                                           f"file at byte {len(whole):,}, but it has {len(whole) // 2:,} bytes")

    (a / "forecasts.csv").write_bytes(whole)
    back = _flow_with(rec, a, SAMPLE_DIR)
    assert back.returncode == 0, back.stderr[-3000:]
    assert _record_files(a) == files


def _dataflow_of(pid: int) -> int:
    """The child of ``pid`` that runs ``bytewax.run``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except FileNotFoundError:
            kids = []
        for kid in kids:
            try:
                if b"bytewax.run" in Path(f"/proc/{kid}/cmdline").read_bytes():
                    return int(kid)
            except FileNotFoundError:  # it ended meanwhile
                pass
        time.sleep(0.01)
    raise AssertionError(f"process {pid} started no dataflow")


@contextlib.contextmanager
def _in_background(env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """``scripts/run-forecast.sh`` in the background, in a process group of
    its own: if the test fails, the group (the script and its dataflow) is
    killed."""
    script = subprocess.Popen(["bash", str(SCRIPT)], cwd=SCRATCH, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield script
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()


def test_run_forecast_restarts_a_killed_dataflow_and_forwards_sigterm(ws_dir, full_run, tmp_path):
    """``scripts/run-forecast.sh`` over every recording: its dataflow killed
    (kill -9) once it has written a third of its forecasts is restarted from
    the last snapshot, and the outputs are the uninterrupted run's. A second
    run of the script stopped with SIGTERM stops its dataflow too and exits
    143."""
    _, ref = full_run
    rec, out = tmp_path / "recovery", tmp_path / "out"
    env = file_env(out, ws_dir, RECOVERY_DIR=str(rec), RESTART_DELAY_S="0")
    full = (ref / "forecasts.csv").stat().st_size

    def size() -> int:
        try:
            return (out / "forecasts.csv").stat().st_size
        except FileNotFoundError:
            return 0

    with _in_background(env) as script:
        flow = _dataflow_of(script.pid)
        deadline = time.monotonic() + 120
        while size() < full / 3:
            assert script.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
            time.sleep(0.005)
        os.kill(flow, signal.SIGKILL)
        _, err = script.communicate(timeout=300)
    assert script.returncode == 0, err[-3000:]
    assert err.count("restarting it from the last snapshot") == 1 and "status 137" in err, err[-3000:]
    assert "panicked" not in err and "Traceback" not in err, err[-3000:]
    assert_files_match(out, ref, "killed under run-forecast.sh, restarted by it")

    shutil.rmtree(rec)
    with _in_background(env) as script:
        flow = _dataflow_of(script.pid)
        script.send_signal(signal.SIGTERM)  # to the script only: it passes it on
        _, err = script.communicate(timeout=60)
    assert script.returncode == 143, err[-3000:]
    assert not Path(f"/proc/{flow}").exists() or "zombie" in Path(f"/proc/{flow}/status").read_text()

"""Checking a Bytewax recovery store before a run resumes from it.

Bytewax 0.21 reads its recovery store (``python -m bytewax.run ... -r DIR``)
in Rust, and a store it cannot use is a panic: a zero-length
``part-0.sqlite3`` (a disk that filled up as it was made), another file in
its place, a SQLite database of another schema, a directory with no
partition, or a snapshot of sinks that this run does not have (the output
directory changed between two lives: ``StateKey ... not in this worker's
routing map``), or a snapshot that names a module this ticklet no longer has
(``ModuleNotFoundError: No module named 'ticklet.events'``: the record types
moved to :mod:`core.events`). Under a supervisor that restarts the dataflow,
every restart panics the same way.

:func:`check_store` reads the store first, read-only (SQLite's
``mode=ro``), and raises :class:`~core.config.ConfigError` with one
line naming the file, what is wrong and what to do; the dataflow exits with
status 2, which ``scripts/run-forecast.sh`` does not restart. A store that
holds no snapshot yet is a fresh start: :func:`fresh_start_line` says so,
and, with Kafka output, how many records the output topic already holds
(they are published again).
"""

from __future__ import annotations

import importlib.util
import pickletools
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import FixedPartitionedSink

from core.config import ConfigError

__all__ = ["StoreState", "check_store", "fresh_start_line", "topic_records"]

#: The tables and columns of a Bytewax 0.21 recovery partition (``python -m bytewax.recovery``).
TABLES = {
    "parts": {"part_index", "part_count"},
    "exs": {"ex_num", "worker_count", "resume_epoch"},
    "fronts": {"ex_num", "worker_index", "worker_frontier"},
    "commits": {"part_index", "commit_epoch"},
    "snaps": {"step_id", "state_key", "snap_epoch", "ser_change"},
}
_PART = re.compile(r"part-(\d+)\.sqlite3")
#: Where ticklet's modules were before they moved (issue 24: ``ticklet.events`` -> ``core.events``, ...): a
#: snapshot whose state holds this is looked at for the classes it names (:func:`_missing_global`).
_MOVED_FROM = b"ticklet."


@dataclass(frozen=True)
class StoreState:
    """What a recovery store holds.

    ``parts``: its partition files; ``fresh``: no epoch committed yet (a run
    from it starts from the beginning of the input); ``keys``: the state
    keys that hold state, by step id.
    """

    parts: list[Path]
    fresh: bool
    keys: dict[str, set[str]] = field(default_factory=dict)


def _remedy(db_dir: Path) -> str:
    return (f"restore the store from a backup, or remove {db_dir} and create it again (mkdir {db_dir} && "
            f"python -m bytewax.recovery {db_dir} 1) to start afresh")


def _read_part(path: Path, db_dir: Path) -> tuple[int, int, bool, list[tuple[str, str, int, bool]]]:
    """(part_index, part_count, committed, snaps) of one partition file; :class:`ConfigError` when it is not one."""
    def damaged(what: str) -> ConfigError:
        return ConfigError(f"recovery store {path}: {what}; {_remedy(db_dir)}")

    wal = path.with_name(path.name + "-wal")  # SQLite's write-ahead log: what was not yet copied into the file
    try:
        size = path.stat().st_size
        logged = wal.stat().st_size if wal.exists() else 0
    except OSError as ex:
        raise damaged(f"cannot be read ({ex.strerror or ex})") from None
    if size == 0 and logged == 0:
        raise damaged("the file is empty (zero length), not a Bytewax recovery partition")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as ex:
        raise damaged(f"cannot be opened ({ex})") from None
    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise damaged(f"SQLite finds it damaged ({'; '.join(problems)})")
        columns: dict[str, set[str]] = {}
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            columns[table] = {row[1] for row in db.execute(f"PRAGMA table_info('{table}')")}
        for table, cols in TABLES.items():
            if not cols <= columns.get(table, set()):
                raise damaged(f"not a Bytewax recovery partition (no table {table!r} with columns "
                              f"{', '.join(sorted(cols))})")
        parts = db.execute("SELECT part_index, part_count FROM parts").fetchall()
        if len(parts) != 1:
            raise damaged(f"not a Bytewax recovery partition ({len(parts)} rows in its table 'parts', not 1)")
        committed = db.execute("SELECT count(*) FROM commits").fetchone()[0] > 0
        # the latest states that name a module ticklet's modules were moved from (read only then: SQLite looks)
        for step, key, state in db.execute(
                "SELECT step_id, state_key, ser_change FROM snaps AS s WHERE ser_change IS NOT NULL "
                "AND instr(ser_change, ?) > 0 AND snap_epoch = (SELECT max(snap_epoch) FROM snaps "
                "WHERE step_id = s.step_id AND state_key = s.state_key)", (_MOVED_FROM,)):
            missing = _missing_global(state)
            if missing is not None:
                raise ConfigError(f"recovery store {path}: the snapshot of {step} ({key}) refers to {missing}, "
                                  "which this version of ticklet does not have (an earlier version wrote it; the "
                                  "record types are in core.events since): finish that run with the earlier "
                                  f"version, or remove {db_dir} and create it again (mkdir {db_dir} && python -m "
                                  f"bytewax.recovery {db_dir} 1) to start afresh")
        # the latest snapshot of each key, without its state (learners' states are large)
        snaps = db.execute("SELECT step_id, state_key, snap_epoch, ser_change IS NULL FROM snaps "
                           "ORDER BY snap_epoch").fetchall()
        (part_index, part_count), = parts
        return int(part_index), int(part_count), committed, snaps
    except sqlite3.DatabaseError as ex:  # not a database at all, or a damaged one
        raise damaged(f"not a SQLite database that can be read ({ex})") from None
    finally:
        db.close()


def _missing_global(state: bytes) -> Optional[str]:
    """The first class or function (``module.name``) that the pickle ``state`` refers to and cannot be found.

    None when every module it refers to is found. The pickle is read, never
    loaded: nothing in it runs.

    >>> import pickle
    >>> _missing_global(pickle.dumps([Path("a")])) is None
    True
    >>> _missing_global(pickle.dumps(Path("a")).replace(b"pathlib", b"pathlab"))
    'pathlab.PosixPath'
    """
    strings: list[str] = []  # the strings pushed, in order (STACK_GLOBAL takes the last two)
    memo: dict[int, Optional[str]] = {}  # what was memoized: the string pushed just before, or None (an object)
    refs: list[tuple[str, str]] = []
    pushed: Optional[str] = None  # the string the previous opcode pushed, if it pushed one
    try:
        for op, arg, _ in pickletools.genops(state):
            top, pushed = pushed, None
            if isinstance(arg, str) and op.name.endswith("UNICODE"):
                strings.append(arg)
                pushed = arg
            elif op.name == "MEMOIZE":
                memo[len(memo)] = top
                pushed = top
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and isinstance(arg, int):
                memo[arg] = top
                pushed = top
            elif op.name in ("BINGET", "LONG_BINGET", "GET") and isinstance(arg, int) and memo.get(arg) is not None:
                got = memo[arg]
                assert got is not None
                strings.append(got)
                pushed = got
            elif op.name == "GLOBAL":
                module, name = str(arg).split(" ", 1)
                refs.append((module, name))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                refs.append((strings[-2], strings[-1]))
    except ValueError:  # not a whole pickle: Bytewax says so itself
        return None
    for module, name in refs:
        if not _found(module) and (module.startswith(_MOVED_FROM.decode()) or not _found(module.split(".", 1)[0])):
            return f"{module}.{name}"  # (a class of a compiled module may name a submodule that has no spec)
    return None


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_store(db_dir: Path, flow: Optional[Dataflow] = None, all_parts: bool = True) -> StoreState:
    """Check the recovery store in ``db_dir`` before Bytewax resumes from it.

    Parameters
    ----------
    db_dir
        The directory of ``-r``.
    flow
        The dataflow to resume: the state keys of its single-file sinks (the
        output files' paths) must be those of the snapshot.
    all_parts
        Every partition of the store is here (one process; a cluster spreads
        them over its processes' directories).

    Raises
    ------
    ConfigError
        One line naming the file, what is wrong and what to do: a missing or
        empty directory, an empty partition file, a file that is not a
        recovery partition (not SQLite, or another schema), partitions that
        do not form one store, a snapshot that names a module this ticklet
        no longer has, a snapshot of another input (a Kafka topic, files) or
        of other output files.

    Examples
    --------
    >>> import tempfile
    >>> from bytewax.recovery import init_db_dir
    >>> d = Path(tempfile.mkdtemp())
    >>> init_db_dir(d, 1)
    >>> check_store(d).fresh
    True
    >>> _ = (d / "part-0.sqlite3").write_bytes(b"")
    >>> try:
    ...     check_store(d)
    ... except ConfigError as ex:
    ...     print(str(ex).split(";")[0].replace(str(d), "DIR"))
    recovery store DIR/part-0.sqlite3: the file is empty (zero length), not a Bytewax recovery partition
    """
    if not db_dir.is_dir():
        raise ConfigError(f"recovery store {db_dir}: no such directory; create the store with mkdir {db_dir} && "
                          f"python -m bytewax.recovery {db_dir} 1 (a fresh start), or give the right -r directory")
    files = sorted(p for p in db_dir.iterdir() if _PART.fullmatch(p.name))
    if not files:
        raise ConfigError(f"recovery store {db_dir}: no partition (part-*.sqlite3) in the directory; create the "
                          f"store with python -m bytewax.recovery {db_dir} 1 (a fresh start), or give the right -r "
                          "directory")
    counts, committed = set(), False
    indices: dict[int, Path] = {}
    latest: dict[tuple[str, str], bool] = {}  # (step id, key) -> holds state
    for path in files:
        index, count, done, snaps = _read_part(path, db_dir)
        if index in indices:
            raise ConfigError(f"recovery store {path}: the same partition ({index}) as {indices[index]}; "
                              f"{_remedy(db_dir)}")
        indices[index] = path
        counts.add(count)
        committed |= done
        for step, key, _, deleted in snaps:
            latest[(step, key)] = not deleted
    if len(counts) > 1 or (all_parts and sorted(indices) != list(range(max(counts)))):
        raise ConfigError(f"recovery store {db_dir}: its partitions do not form one store (files "
                          f"{', '.join(p.name for p in files)}, made for {' and '.join(map(str, sorted(counts)))} "
                          f"partition(s)); {_remedy(db_dir)}")
    keys: dict[str, set[str]] = {}
    for (step, key), held in latest.items():
        if held:
            keys.setdefault(step, set()).add(key)
    state = StoreState(files, not committed, keys)
    if flow is not None:
        _check_steps(db_dir, flow, state)
        _check_sources(db_dir, flow, state)
        _check_sinks(db_dir, flow, state)
    return state


#: The keyed steps that held each instrument's state before issue 25 (it is now in the input's partitions).
_PER_INSTRUMENT_STEPS = ("parse_ticks", "check_ticks", "make_bars", "compute_features", "join_forecasts",
                         "score_forecasts", "make_signals", "find_fill_quotes", "trade")


def _check_steps(db_dir: Path, flow: Dataflow, state: StoreState) -> None:
    """Check that the store is not of a version of ticklet that kept each instrument's state in keyed steps.

    Before issue 25, each instrument's steps were keyed Bytewax steps; they
    now run in the input's partitions (:mod:`dataflows.local`), and their
    states are kept with the reader's. Such a store cannot be resumed.
    """
    old = sorted(step for step in state.keys if step.split(".")[1:2] and step.split(".")[1] in _PER_INSTRUMENT_STEPS)
    if old:
        raise ConfigError(f"recovery store {db_dir}: its snapshot is of an earlier version of ticklet, which kept each "
                          f"instrument's state in steps of its own ({old[0]}), where this one keeps it with the input "
                          f"partition that reads it. Finish that run with the earlier version, or {_remedy(db_dir)}")


_KAFKA_PART = re.compile(r"\d+-(.+)")


def _input_of(parts: set[str]) -> str:
    """What a set of partitions of the ticks source reads, in words.

    >>> _input_of({"0-ticklet.ticks", "1-ticklet.ticks"})
    "the Kafka topic 'ticklet.ticks'"
    >>> _input_of({"ws:spot:BTCUSDT", "ws:usdm:BTCUSDT"})
    'the files of ws:spot:BTCUSDT, ws:usdm:BTCUSDT'
    """
    topics = {m.group(1) if (m := _KAFKA_PART.fullmatch(p)) else None for p in parts}
    if len(topics) == 1 and None not in topics:
        return f"the Kafka topic {topics.pop()!r}"
    shown = sorted(parts)
    return "the files of " + ", ".join(shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")


def _check_sources(db_dir: Path, flow: Dataflow, state: StoreState) -> None:
    """Check that the snapshot's partitions of each input are this run's.

    An input's partitions are a Kafka topic's partitions, or the streams of
    the files read: Bytewax panics on a partition it cannot route
    (``StateKey ... not in this worker's routing map``). A run on Kafka
    reusing a store of a run on files, or the other way, is refused in one
    line naming the store and what to do.
    """
    for step in flow.substeps:
        source = getattr(step, "source", None)
        kept = state.keys.get(step.step_id, set())
        if not isinstance(source, FixedPartitionedSource) or not kept:
            continue
        try:
            now = set(source.list_parts())
        except Exception:  # a topic that cannot be listed now: Bytewax says so itself when it lists it
            continue
        if kept - now:
            raise ConfigError(f"recovery store {db_dir}: its snapshot is of a run that read {_input_of(kept)}, and "
                              f"this run reads {_input_of(now)}: a store belongs to one input. Run with the input of "
                              "the snapshot, or give this run a store and an output directory of its own "
                              f"(mkdir -p recovery/other && python -m bytewax.recovery recovery/other 1, then -r "
                              "recovery/other/ with another TICKLET_OUTPUT__DIR)")


def _check_sinks(db_dir: Path, flow: Dataflow, state: StoreState) -> None:
    """Check that the snapshot's state keys of each single-file sink (its path) are this run's.

    Bytewax cannot route a key that no partition of the sink has.
    """
    for step in flow.substeps:
        sink = getattr(step, "sink", None)
        if not isinstance(sink, FixedPartitionedSink):
            continue
        now = set(sink.list_parts())
        gone = sorted(state.keys.get(step.step_id, set()) - now)
        if gone:
            raise ConfigError(f"recovery store {db_dir}: its snapshot is of a run that wrote {gone[0]}, and this run "
                              f"writes {', '.join(sorted(now))} instead: the output directory (TICKLET_OUTPUT__DIR) "
                              "changed since. Run with the output directory of the snapshot, or remove the store "
                              "and create it again to start afresh")


def topic_records(config: dict[str, Any], topic: str, timeout_s: float) -> Optional[int]:
    """How many records ``topic`` holds (the sum over its partitions of high less low watermark).

    0 when it does not exist, None when the brokers do not say within
    ``timeout_s``.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer({**config, "group.id": "ticklet-recovery-check", "enable.auto.commit": False, "log_level": 0})
    try:
        md = c.list_topics(timeout=timeout_s).topics.get(topic)  # all topics: asking for one may create it
        if md is None or md.error is not None or not md.partitions:
            return 0
        total = 0
        for p in md.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            total += max(0, high - low)
        return total
    except KafkaException:
        return None
    finally:
        c.close()


def fresh_start_line(db_dir: Path, published: Optional[tuple[str, Optional[int]]] = None) -> str:
    """The log line of a run that starts afresh from the store in ``db_dir`` (no snapshot yet).

    ``published``: the output topic and how many records it holds already
    (None: unknown).

    >>> fresh_start_line(Path("recovery"))
    'recovery store recovery holds no snapshot: a fresh start from the beginning of the input'
    >>> fresh_start_line(Path("recovery"), ("ticklet.forecasts", 12))  # doctest: +NORMALIZE_WHITESPACE
    "recovery store recovery holds no snapshot: a fresh start from the beginning of the input; the output topic
    'ticklet.forecasts' already holds 12 records, and this run publishes its records again (consumers
    deduplicate: see docs/explanation/recovery.md, Delivery guarantee)"
    """
    line = f"recovery store {db_dir} holds no snapshot: a fresh start from the beginning of the input"
    if published is not None:
        topic, n = published
        if n is None:
            line += (f"; the output topic {topic!r} could not be checked: records an earlier run published there "
                     "are published again")
        elif n:
            line += (f"; the output topic {topic!r} already holds {n:,} records, and this run publishes its records "
                     "again (consumers deduplicate: see docs/explanation/recovery.md, Delivery guarantee)")
    return line

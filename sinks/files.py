"""Local-file sinks for the embedded default (no servers).

- :class:`CsvSink` writes records as CSV with a header (open with pandas or
  DuckDB: ``duckdb.sql("select * from 'out/forecasts.csv'")``);
- :class:`FeatureCsvSink` writes chosen features of the feature rows as CSV
  (``features.csv``, :func:`feature_csv_lines`);
- :class:`JsonLinesSink` writes records as JSON lines (dead letters);
- :class:`CounterSink` keeps pipeline counters and rewrites a small JSON file
  at every snapshot (epoch) and at the end of the run.

All four are single-partition :class:`FixedPartitionedSink` s whose recovery
state is the file offset (or the totals), so a resumed run truncates what was
written after the last snapshot and never duplicates a line. With the offset,
the state of a record file holds the SHA-256 of the bytes before it (a pair,
bounded): a resumed run first checks that the file still begins with the
bytes its store's run wrote, and when another run wrote over them (two
recovery stores, or a run without one, sharing an output directory) stops
with one line and exit status 2 instead of cutting the other run's file at
its offset. (A snapshot taken before the digest was kept, a bare offset, is
resumed unchecked.)

A file that cannot be written (a full disk, a file too large, a directory in
its place), or that was removed or replaced while the run wrote to it (what
was written since is lost), stops the run with one line naming the file and
the OS error, and exit status 74 (:func:`sinks.fatal.write_failed`); the
``counters.json`` beside it is removed, so that no total claims a complete
run. A resumed run whose file is missing, or shorter than its snapshot
offset, stops with exit status 2: the output directory changed since the
snapshot.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, NoReturn, Optional, TypeVar, Union

import msgspec
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from core.events import Count, FeatureRow
from core.telemetry import EVENTS
from sinks.fatal import EXIT_BAD_SETUP, os_error, stop_run, write_failed
from sinks.records import csv_bytes, csv_cells, header, jsonl

__all__ = ["COUNTERS_FILE", "FEATURES_FILE", "CounterSink", "CsvSink", "FeatureCsvSink", "JsonLinesSink",
           "feature_csv_blobs", "feature_csv_lines"]

log = logging.getLogger(__name__)

_X = TypeVar("_X")
_S = TypeVar("_S")


#: The totals of a run, beside its record files: removed when one of them cannot be written.
COUNTERS_FILE = "counters.json"
#: The chosen features of every ready feature row (``TICKLET_OUTPUT__FEATURES``).
FEATURES_FILE = "features.csv"


def _write_failed(path: Path, why: OSError) -> NoReturn:
    write_failed(path, why, withdraw=(path.with_name(COUNTERS_FILE),))


#: The recovery state of a record file: its offset and the SHA-256 (hex) of the bytes before it (a bare offset
#: in a snapshot taken before the digest was kept).
Resume = Union[tuple[int, str], int]


def _prefix_sha256(f: BinaryIO, n: int) -> hashlib._Hash:
    """The SHA-256 (a hash object, to go on with) of the first ``n`` bytes of ``f``."""
    h = hashlib.sha256()
    f.seek(0)
    while n > 0:
        block = f.read(min(n, 1 << 20))
        if not block:
            break
        h.update(block)
        n -= len(block)
    return h


class _AppendPartition(StatefulSinkPartition[Union[msgspec.Struct, bytes], tuple[int, str]]):
    def __init__(self, path: Path, resume_state: Optional[Resume], head: bytes,
                 encode: Callable[[list], bytes]):
        self._path = path
        self._encode = encode
        resume, digest = (resume_state, None) if not isinstance(resume_state, tuple) else resume_state
        self._sha = hashlib.sha256()  # of every byte of the file, for the snapshot
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            size = path.stat().st_size if path.exists() else None
            if resume and (size is None or size < resume):
                stop_run(f"{path}: the recovery snapshot resumes this file at byte {resume:,}, but it "
                         f"{'does not exist' if size is None else f'has {size:,} bytes'}: the output directory "
                         "changed since the snapshot was taken (files removed or cut short). Put the run's files "
                         "back, or remove the recovery store to start afresh.", EXIT_BAD_SETUP)
            self._f = open(path, "r+b" if size is not None else "w+b")  # noqa: SIM115
            if resume:
                self._sha = _prefix_sha256(self._f, resume)
                if digest is not None and self._sha.hexdigest() != digest:
                    stop_run(f"{path}: the recovery snapshot resumes this file at byte {resume:,}, but its first "
                             f"{resume:,} bytes are not the ones this store's run wrote: another run wrote over the "
                             f"file since (two recovery stores, or a run without one, sharing the output directory "
                             f"{path.parent}). Give each store an output directory of its own (TICKLET_OUTPUT__DIR), "
                             "or remove the recovery store to start afresh.", EXIT_BAD_SETUP)
            self._f.truncate(resume or 0)
            self._f.seek(resume or 0)
            if not resume and head:
                self._f.write(head)
                self._f.flush()
                self._sha.update(head)
            self._id = self._inode(os.fstat(self._f.fileno()))
        except OSError as ex:
            _write_failed(path, ex)

    @staticmethod
    def _inode(st: os.stat_result) -> tuple[int, int]:
        return st.st_dev, st.st_ino

    def _check_in_place(self) -> None:
        """Stop the run if the file was removed or replaced.

        The lines written to it since went to a file no one will read.
        """
        try:
            here = self._inode(os.stat(self._path))
        except OSError as ex:
            here, err = None, os_error(ex)
        else:
            err = "another file is in its place"
        if here != self._id:
            _write_failed(self._path, OSError(f"it was removed or replaced during the run ({err}), and the lines "
                                              "written since are lost"))

    def write_batch(self, values: list[Union[msgspec.Struct, bytes]]) -> None:
        data = self._encode(values)
        try:
            self._f.write(data)
            self._f.flush()
        except OSError as ex:
            _write_failed(self._path, ex)
        self._sha.update(data)

    def snapshot(self) -> tuple[int, str]:
        self._check_in_place()
        return self._f.tell(), self._sha.hexdigest()

    def close(self) -> None:
        self._check_in_place()
        self._f.close()


class _OneFileSink(FixedPartitionedSink[_X, _S]):
    """A sink of one partition: the file at ``path``, which every item goes to."""

    def __init__(self, path: str | os.PathLike):
        self._path = Path(path)

    def list_parts(self) -> list[str]:
        return [str(self._path)]

    def part_fn(self, item_key: str) -> int:
        return 0


class _FileSink(_OneFileSink[Union[msgspec.Struct, bytes], tuple[int, str]]):
    def _head(self) -> bytes:
        return b""

    @abstractmethod
    def _encode(self, values: list) -> bytes:
        """Encode a batch of records as bytes to append."""

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[Resume]) -> _AppendPartition:
        return _AppendPartition(self._path, resume_state, self._head(), self._encode)


class CsvSink(_FileSink):
    """Records of type ``cls`` as CSV, one row each, with a header line.

    Items that are ``bytes`` are CSV rows encoded already, where the records
    were made (:func:`dataflows.ops.encode_csv`: the encoding then runs on
    every worker instead of the one that holds the file), and are written
    as they are.
    """

    def __init__(self, path: str | os.PathLike, cls: type[msgspec.Struct]):
        super().__init__(path)
        self._cls = cls

    def _head(self) -> bytes:
        return (",".join(header(self._cls)) + "\r\n").encode()

    def _encode(self, values: list) -> bytes:
        if type(values[0]) is bytes:
            return b"".join(values)
        return csv_bytes(values)


def feature_csv_lines(rows: Sequence[FeatureRow], names: Sequence[str]) -> str:
    r"""The ready rows of ``rows`` as CSV lines: ``instrument, ts_end`` and the features ``names``.

    A feature the row lacks (a depth feature while the instrument's book is
    not ready) is an empty cell, never a zero; floats are in their shortest
    round-trip form (:func:`~sinks.records.csv_cells`). Rows still warming up (not ready) have no line, as they
    have no InfluxDB point.

    Parameters
    ----------
    rows
        Feature rows, as :func:`operators.features.step` makes them.
    names
        The features, one column each (``TICKLET_OUTPUT__FEATURES``).

    Returns
    -------
    str
        The lines, each ending in ``\r\n``.

    Examples
    --------
    >>> rows = [FeatureRow("BTCUSDT", 1_000, 1_000, 100.0, {"ofi": 0.5}, False),
    ...         FeatureRow("BTCUSDT", 2_000, 1_000, 100.0, {"ofi": 0.25, "depth_imb_5": -1.5}, True),
    ...         FeatureRow("BTCUSDT", 3_000, 1_000, 100.0, {"ofi": 0.125}, True)]
    >>> feature_csv_lines(rows, ("depth_imb_5", "ofi")).splitlines()
    ['BTCUSDT,2000,-1.5,0.25', 'BTCUSDT,3000,,0.125']
    """
    return csv_cells([(r.instrument, r.ts_end, *(r.x.get(n) for n in names)) for r in rows if r.ready]).decode()


def feature_csv_blobs(names: Sequence[str]) -> Callable[[list[tuple[str, FeatureRow]]], list[tuple[str, bytes]]]:
    r"""A batch of keyed feature rows as one keyed ``bytes`` of CSV lines (:func:`feature_csv_lines`).

    For ``flat_map_batch`` on the worker that made the rows, before a
    :class:`FeatureCsvSink` (as :func:`dataflows.ops.write_csv` does for
    records).

    >>> blobs = feature_csv_blobs(("ofi",))
    >>> blobs([("BTCUSDT", FeatureRow("BTCUSDT", 2_000, 1_000, 100.0, {"ofi": 0.25}, True))])
    [('all', b'BTCUSDT,2000,0.25\r\n')]
    """
    names = tuple(names)

    def encode(batch: list[tuple[str, FeatureRow]]) -> list[tuple[str, bytes]]:
        return [("all", feature_csv_lines([kv[1] for kv in batch], names).encode())]

    return encode


class FeatureCsvSink(CsvSink):
    """Chosen features of the feature rows as CSV (:func:`feature_csv_lines`), with a header line.

    The header is ``instrument, ts_end`` and the features ``names``. Items
    that are ``bytes`` are lines encoded already, where the rows were made.
    """

    def __init__(self, path: str | os.PathLike, names: Sequence[str]):
        super().__init__(path, FeatureRow)
        self._names = tuple(names)

    def _head(self) -> bytes:
        return (",".join(("instrument", "ts_end", *self._names)) + "\r\n").encode()

    def _encode(self, values: list) -> bytes:
        if type(values[0]) is bytes:
            return b"".join(values)
        return feature_csv_lines(values, self._names).encode()


class JsonLinesSink(_FileSink):
    """Records as JSON lines."""

    def _encode(self, values: list) -> bytes:
        return b"".join(jsonl(v) for v in values)


class _CounterPartition(StatefulSinkPartition[Count, dict]):
    def __init__(self, path: Path, resume: Optional[dict]):
        self._path = path
        self._totals: dict[str, int] = dict(resume or {})
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as ex:
            _write_failed(path, ex)
        self._dump()

    def _dump(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(dict(sorted(self._totals.items())), indent=1) + "\n")
            os.replace(tmp, self._path)
        except OSError as ex:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            _write_failed(self._path, ex)

    def write_batch(self, values: list[Count]) -> None:
        t = self._totals
        for c in values:
            t[c.name] = t.get(c.name, 0) + c.n
            EVENTS.labels(c.name).inc(c.n)

    def snapshot(self) -> dict:
        self._dump()
        return dict(self._totals)

    def close(self) -> None:
        self._dump()
        log.info("counters: %s", dict(sorted(self._totals.items())))


class CounterSink(_OneFileSink[Count, dict]):
    """Sum :class:`Count` increments by name into a JSON file."""

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[dict]) -> _CounterPartition:
        """The partition that sums the counts, from the totals of ``resume_state``."""
        return _CounterPartition(self._path, resume_state)

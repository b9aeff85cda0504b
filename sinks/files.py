"""Local-file sinks for the embedded default (no servers).

- :class:`CsvSink` writes records as CSV with a header (open with pandas or
  DuckDB: ``duckdb.sql("select * from 'out/forecasts.csv'")``);
- :class:`JsonLinesSink` writes records as JSON lines (dead letters);
- :class:`CounterSink` keeps pipeline counters and rewrites a small JSON file
  at every snapshot (epoch) and at the end of the run.

All three are single-partition :class:`FixedPartitionedSink` s whose recovery
state is the file offset (or the totals), so a resumed run truncates what was
written after the last snapshot and never duplicates a line.
"""

from __future__ import annotations

import json
import logging
import os
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Optional, TypeVar

import msgspec
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from sinks.records import csv_lines, header, jsonl
from ticklet.events import Count
from ticklet.telemetry import EVENTS

__all__ = ["CounterSink", "CsvSink", "JsonLinesSink"]

log = logging.getLogger(__name__)

_X = TypeVar("_X")
_S = TypeVar("_S")


class _AppendPartition(StatefulSinkPartition[msgspec.Struct, int]):
    def __init__(self, path: Path, resume: Optional[int], head: bytes,
                 encode: Callable[[list], bytes]):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115
        self._f.truncate(resume or 0)
        self._f.seek(resume or 0)
        if not resume and head:
            self._f.write(head)
        self._encode = encode

    def write_batch(self, values: list[msgspec.Struct]) -> None:
        self._f.write(self._encode(values))
        self._f.flush()

    def snapshot(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()


class _OneFileSink(FixedPartitionedSink[_X, _S]):
    """A sink of one partition: the file at ``path``, which every item goes to."""

    def __init__(self, path: str | os.PathLike):
        self._path = Path(path)

    def list_parts(self) -> list[str]:
        return [str(self._path)]

    def part_fn(self, item_key: str) -> int:
        return 0


class _FileSink(_OneFileSink[msgspec.Struct, int]):
    def _head(self) -> bytes:
        return b""

    @abstractmethod
    def _encode(self, values: list) -> bytes:
        """Encode a batch of records as bytes to append."""

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _AppendPartition:
        return _AppendPartition(self._path, resume_state, self._head(), self._encode)


class CsvSink(_FileSink):
    """Records of type ``cls`` as CSV, one row each, with a header line."""

    def __init__(self, path: str | os.PathLike, cls: type[msgspec.Struct]):
        super().__init__(path)
        self._cls = cls

    def _head(self) -> bytes:
        return (",".join(header(self._cls)) + "\r\n").encode()

    def _encode(self, values: list) -> bytes:
        return csv_lines(values).encode()


class JsonLinesSink(_FileSink):
    """Records as JSON lines."""

    def _encode(self, values: list) -> bytes:
        return b"".join(jsonl(v) for v in values)


class _CounterPartition(StatefulSinkPartition[Count, dict]):
    def __init__(self, path: Path, resume: Optional[dict]):
        self._path = path
        self._totals: dict[str, int] = dict(resume or {})
        path.parent.mkdir(parents=True, exist_ok=True)
        self._dump()

    def _dump(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(sorted(self._totals.items())), indent=1) + "\n")
        os.replace(tmp, self._path)

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
        return _CounterPartition(self._path, resume_state)

"""Bytewax source that replays recordings and archives as fast as they read.

One partition per stream (format, market, symbol; see
:func:`sources.files.group_streams`), so different symbols and files are read
in parallel when the dataflow runs with several workers or processes. Each
partition yields :class:`~ticklet.events.RawChunk` batches; its recovery
state is the number of records already emitted, so a resumed run continues
exactly where the last snapshot left off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Optional

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from sources.files import StreamSpec, group_streams, read_stream
from ticklet.events import RawChunk

__all__ = ["ReplaySource"]


class _ReplayPartition(StatefulSourcePartition[RawChunk, int]):
    def __init__(self, spec: StreamSpec, resume: Optional[int], batch_size: int):
        self._spec = spec
        self._pos = resume or 0
        self._batch = batch_size
        self._blocks: Iterator[list] = read_stream(spec, skip=self._pos)
        self._buf: list = []

    def next_batch(self) -> list[RawChunk]:
        if not self._buf:
            self._buf = next(self._blocks, [])
            if not self._buf:
                raise StopIteration()
        recs, self._buf = self._buf[: self._batch], self._buf[self._batch :]
        self._pos += len(recs)
        spec = self._spec
        return [RawChunk(spec.fmt, spec.market, spec.symbol, recs, spec.interval_ns)]

    def snapshot(self) -> int:
        return self._pos


class ReplaySource(FixedPartitionedSource[RawChunk, int]):
    """Replay files (or directories of files) as :class:`RawChunk` batches.

    Parameters
    ----------
    paths
        Files or directories; see :mod:`sources.files` for what is read.
    batch_size
        Records per emitted chunk.
    market
        Force ``"spot"`` or ``"usdm"``; by default it is read from the path.
    """

    def __init__(self, paths: list[str | os.PathLike], batch_size: int = 2048,
                 market: Optional[str] = None):
        self._streams = {s.name: s for s in group_streams(list(paths), market)}
        if not self._streams:
            raise ValueError(f"no readable input under {list(map(str, paths))}")
        self._batch = batch_size

    @property
    def streams(self) -> list[StreamSpec]:
        return list(self._streams.values())

    def list_parts(self) -> list[str]:
        return list(self._streams)

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _ReplayPartition:
        return _ReplayPartition(self._streams[for_part], resume_state, self._batch)

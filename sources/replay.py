"""Bytewax source that replays recordings and archives as fast as they read.

One partition per instrument: the streams (format, market, symbol; see
:func:`sources.files.group_streams`) of one market and symbol, merged in time
order (:func:`sources.files.read_streams`), so that each instrument is read
by one worker and different instruments in parallel when the dataflow runs
with several workers or processes. A partition is named after its stream
(its streams, joined by ``+``). Each partition yields :class:`~core.events.RawChunk` batches; its recovery
state is ``(records emitted, input bytes reported)``, so a resumed run
continues exactly where the last snapshot left off, and the chunks'
``nbytes`` of the whole run, resumes included, add up to the input's size.

Recording lines come whole, blank lines included (the parser counts them),
except lines longer than ``max_line_bytes``, which come as a
:class:`~sources.binance.LongLine` (their first bytes and their size) and are
never held whole. Each chunk names its partition (``source``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Optional

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from core.events import RawChunk
from sources.binance import MAX_LINE_BYTES
from sources.files import (
    InputFormatError,
    ReadProgress,
    StreamSpec,
    group_name,
    group_streams,
    instrument_groups,
    read_streams,
)

__all__ = ["ReplaySource"]


class _ReplayPartition(StatefulSourcePartition[RawChunk, tuple[int, int]]):
    def __init__(self, group: tuple[StreamSpec, ...], resume: Optional[tuple[int, int] | int], batch_size: int,
                 max_line_bytes: int = MAX_LINE_BYTES):
        self._group = group
        self._name = group_name(group)
        if isinstance(resume, int):  # a snapshot of an earlier version: records only
            resume = (resume, 0)
        self._pos, self._reported = resume or (0, 0)
        self._batch = batch_size
        self._progress = ReadProgress()
        self._runs: Iterator[tuple[int, list]] = read_streams(group, skip=self._pos, progress=self._progress,
                                                              max_line_bytes=max_line_bytes, blank_lines=True)
        self._spec = group[0]
        self._buf: list = []

    def next_batch(self) -> list[RawChunk]:
        if not self._buf:
            i, self._buf = next(self._runs, (0, []))
            if not self._buf:
                if self._progress.nbytes > self._reported:  # the bytes read after the last record
                    spec = self._spec
                    return [RawChunk(spec.fmt, spec.market, spec.symbol, [], spec.interval_ns, self._nbytes(),
                                     self._name)]
                raise StopIteration()
            self._spec = self._group[i]
        spec = self._spec
        recs, self._buf = self._buf[: self._batch], self._buf[self._batch :]
        self._pos += len(recs)
        return [RawChunk(spec.fmt, spec.market, spec.symbol, recs, spec.interval_ns, self._nbytes(), self._name)]

    def _nbytes(self) -> int:
        """Bytes read since the last report (none while a resumed run re-reads what an earlier run reported)."""
        n = self._progress.nbytes - self._reported
        if n <= 0:
            return 0
        self._reported += n
        return n

    def snapshot(self) -> tuple[int, int]:
        return self._pos, self._reported


class ReplaySource(FixedPartitionedSource[RawChunk, tuple[int, int]]):
    """Replay files (or directories of files) as :class:`RawChunk` batches.

    Parameters
    ----------
    paths
        Files or directories; see :mod:`sources.files` for what is read.
    batch_size
        Records per emitted chunk.
    market
        Force ``"spot"`` or ``"usdm"``; by default it is read from the path.
    max_line_bytes
        Longest recording line read whole (``TICKLET_INPUT__MAX_LINE_BYTES``).
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], batch_size: int = 2048,
                 market: Optional[str] = None, max_line_bytes: int = MAX_LINE_BYTES):
        streams = group_streams(list(paths), market)
        if not streams:
            shown = ", ".join(map(str, paths)) or "(no path given)"
            raise InputFormatError(shown, "no recording, Binance archive or Feather klines file there")
        self._groups = {group_name(g): g for g in instrument_groups(streams)}
        self._batch = batch_size
        self._max_line = max_line_bytes

    @property
    def streams(self) -> list[StreamSpec]:
        """The streams replayed (:func:`sources.files.group_streams`), partition by partition.

        >>> [s.name for s in ReplaySource(["data/sample"]).streams]
        ['ws:spot:BTCUSDT']
        """
        return [s for g in self._groups.values() for s in g]

    @property
    def total_bytes(self) -> int:
        """Size of every input file, as stored: what the chunks' ``nbytes`` add up to."""
        return sum(os.path.getsize(f) for s in self.streams for f in s.files)

    def list_parts(self) -> list[str]:
        """The partitions of this source: one per instrument, named after its streams.

        >>> ReplaySource(["data/sample"]).list_parts()
        ['ws:spot:BTCUSDT']
        """
        return list(self._groups)

    def build_part(self, step_id: str, for_part: str,
                   resume_state: Optional[tuple[int, int]]) -> _ReplayPartition:
        """The reader of partition ``for_part``, resumed past the records and bytes of ``resume_state``."""
        return _ReplayPartition(self._groups[for_part], resume_state, self._batch, self._max_line)

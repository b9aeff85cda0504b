"""Raw capture of live messages to disk, in the recording format.

Every message the collector receives is written as one line
``<receive time ns> <message bytes exactly as received>`` to a gzip file per
instrument and UTC day (of the receive clock)::

    <dir>/<market>/<symbol>_<YYYYMMDD>.gz      e.g. capture/spot/btcusdt_20240808.gz

which is the layout and format of the recordings in ``../shared/data``, so
``ticklet replay`` and ``ticklet backtest`` read a capture directory as they
read those. REST depth snapshots are captured as lines too (the replay
reader counts and skips them, as it does in the recordings).

The gzip stream is sync-flushed every ``flush_every`` lines, on :meth:`flush`
(the collector calls it every second) and on close, so
a collector killed mid-run leaves a file whose every flushed line can be read
back (the reader stops at the truncated tail and says so). A file is never
appended to: a collector restarted on the same day writes
``<symbol>_<YYYYMMDD>-1.gz`` (then ``-2``...), and readers merge the files of
an instrument by receive time.

A file that cannot be written (a full disk, a file too large, a directory
that cannot be made), or that was removed or replaced while the writer held
it open (checked at every flush: the lines written since went to a file no
one reads), raises :class:`CaptureError`, naming the file and the OS error;
the writer takes no further line. The collector then stops
(:func:`sinks.fatal.write_failed`, exit status 74).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import os
import zlib
from pathlib import Path
from typing import Optional

from sinks.fatal import os_error

__all__ = ["CaptureError", "CaptureWriter", "capture_path"]

_DAY_NS = 86_400 * 10**9


def capture_path(root: Path, market: str, symbol: str, ts_ns: int) -> Path:
    """Where the line of ``symbol`` received at ``ts_ns`` goes.

    >>> capture_path(Path("cap"), "spot", "BTCUSDT", 1723161253937085768).as_posix()
    'cap/spot/btcusdt_20240808.gz'
    """
    day = dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.UTC).strftime("%Y%m%d")
    return root / market / f"{symbol.lower()}_{day}.gz"


class CaptureError(OSError):
    """A capture file that cannot be written: ``path`` and the OS error ``error``."""

    def __init__(self, path: Path, error: OSError):
        super().__init__(error.errno, error.strerror or str(error), str(path))
        self.path, self.error = path, error

    def __str__(self) -> str:
        return f"{self.path}: {os_error(self.error)}"


class CaptureWriter:
    """Append recording lines to per-instrument, per-day gzip files."""

    def __init__(self, root: Path, market: str, flush_every: int = 256, compresslevel: int = 6):
        self.root, self.market = Path(root), market
        self.flush_every, self.level = flush_every, compresslevel
        self._files: dict[str, tuple[int, gzip.GzipFile, tuple[int, int]]] = {}  # symbol -> (UTC day, file, inode)
        self._unflushed = 0
        self.lines = 0
        self.failed: Optional[CaptureError] = None

    def _fail(self, path: Path, ex: OSError) -> CaptureError:
        """Give every file up (the failed one's tail is lost with its descriptor) and say why."""
        self.failed = CaptureError(path, ex)
        for _, f, _ in self._files.values():
            with contextlib.suppress(OSError):  # the others are sync-flushed up to their last line
                f.close()
        self._files.clear()
        return self.failed

    def write(self, symbol: str, ts_ns: int, message: bytes) -> None:
        """Write one message received at ``ts_ns`` for ``symbol``.

        A :class:`CaptureError` if it cannot be written (then, and after it,
        the writer takes nothing more).
        """
        if self.failed is not None:
            raise self.failed
        day = ts_ns // _DAY_NS
        cur = self._files.get(symbol)
        path = capture_path(self.root, self.market, symbol, ts_ns) if cur is None else Path(cur[1].name)
        try:
            if cur is None or cur[0] != day:  # a new file only on the first line of a UTC day
                if cur is not None:
                    del self._files[symbol]
                    cur[1].close()
                    path = capture_path(self.root, self.market, symbol, ts_ns)
                path.parent.mkdir(parents=True, exist_ok=True)
                i, stem = 0, path.name[:-3]
                while path.exists():
                    i += 1
                    path = path.with_name(f"{stem}-{i}.gz")
                # kept open across calls, closed on a new day or by close()
                f = gzip.open(path, "xb", compresslevel=self.level)  # noqa: SIM115
                st = os.fstat(f.fileno())
                cur = self._files[symbol] = (day, f, (st.st_dev, st.st_ino))
            cur[1].write(b"%d %s\n" % (ts_ns, message.strip()))
        except OSError as ex:
            raise self._fail(path, ex) from None
        self.lines += 1
        self._unflushed += 1
        if self._unflushed >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Sync-flush every open file: what was written is readable now.

        A :class:`CaptureError` if a file cannot be written, or is no longer
        the file at its path (removed, or replaced).
        """
        if self.failed is not None:
            raise self.failed
        for _, f, inode in self._files.values():
            path = Path(f.name)
            try:
                f.flush(zlib.Z_SYNC_FLUSH)
                try:
                    st = os.stat(path)
                except OSError as ex:
                    here, why = None, os_error(ex)
                else:
                    here, why = (st.st_dev, st.st_ino), "another file is in its place"
                if here != inode:
                    raise OSError(f"it was moved, removed or replaced while the collector wrote to it ({why}): the "
                                  "lines written since are not at this path")
            except OSError as ex:
                raise self._fail(path, ex) from None
        self._unflushed = 0

    def files(self) -> list[Path]:
        """The files open now."""
        return sorted(Path(f.name) for _, f, _ in self._files.values())

    def close(self, symbol: Optional[str] = None) -> None:
        """Close the files (of ``symbol``, or all): each ends complete.

        A :class:`CaptureError` if one cannot be written.
        """
        if self.failed is not None:
            raise self.failed
        for sym in [symbol] if symbol else list(self._files):
            _, f, _ = self._files.pop(sym)
            try:
                f.close()
            except OSError as ex:
                raise self._fail(Path(f.name), ex) from None

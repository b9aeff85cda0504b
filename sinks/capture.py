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
"""

from __future__ import annotations

import datetime as dt
import gzip
import zlib
from pathlib import Path
from typing import Optional

__all__ = ["CaptureWriter", "capture_path"]

_DAY_NS = 86_400 * 10**9


def capture_path(root: Path, market: str, symbol: str, ts_ns: int) -> Path:
    """Where the line of ``symbol`` received at ``ts_ns`` goes.

    >>> capture_path(Path("cap"), "spot", "BTCUSDT", 1723161253937085768).as_posix()
    'cap/spot/btcusdt_20240808.gz'
    """
    day = dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.UTC).strftime("%Y%m%d")
    return root / market / f"{symbol.lower()}_{day}.gz"


class CaptureWriter:
    """Append recording lines to per-instrument, per-day gzip files."""

    def __init__(self, root: Path, market: str, flush_every: int = 256, compresslevel: int = 6):
        self.root, self.market = Path(root), market
        self.flush_every, self.level = flush_every, compresslevel
        self._files: dict[str, tuple[int, gzip.GzipFile]] = {}  # symbol -> (UTC day number, file)
        self._unflushed = 0
        self.lines = 0

    def write(self, symbol: str, ts_ns: int, message: bytes) -> None:
        """Write one message received at ``ts_ns`` for ``symbol``."""
        day = ts_ns // _DAY_NS
        cur = self._files.get(symbol)
        if cur is None or cur[0] != day:  # a new file only on the first line of a UTC day
            if cur is not None:
                cur[1].close()
            path = capture_path(self.root, self.market, symbol, ts_ns)
            path.parent.mkdir(parents=True, exist_ok=True)
            free, i = path, 0
            while free.exists():
                i += 1
                free = path.with_name(f"{path.name[:-3]}-{i}.gz")
            # kept open across calls, closed on a new day or by close()
            cur = self._files[symbol] = (day, gzip.open(free, "xb", compresslevel=self.level))  # noqa: SIM115
        cur[1].write(b"%d %s\n" % (ts_ns, message.strip()))
        self.lines += 1
        self._unflushed += 1
        if self._unflushed >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Sync-flush every open file: what was written is readable now."""
        for _, f in self._files.values():
            f.flush(zlib.Z_SYNC_FLUSH)
        self._unflushed = 0

    def files(self) -> list[Path]:
        """The files open now."""
        return sorted(Path(f.name) for _, f in self._files.values())

    def close(self, symbol: Optional[str] = None) -> None:
        for sym in [symbol] if symbol else list(self._files):
            _, f = self._files.pop(sym)
            f.close()

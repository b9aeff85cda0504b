"""Readers for recorded and archived market data (I/O only, no Bytewax).

Three kinds of file are understood:

- **websocket recordings** (``*.gz``, ``*.dat.gz``, ``*.dat``, ``*.txt``,
  ``*.jsonl``): one ``<receive timestamp> <json>`` line per message, gzip or
  plain, timestamps in µs or ns (told apart by digit count);
- **Binance public-data CSV** (``SYMBOL-trades-*.csv``,
  ``SYMBOL-aggTrades-*.csv``, ``SYMBOL-1m-*.csv``, plain or inside the
  ``.zip`` Binance publishes);
- **Feather klines** as written by freqtrade (``BTC_USDT-1m.feather``).

Files are grouped into *streams*: one per (format, market, symbol). The files
of a stream are merged in time order with :func:`heapq.merge`, ties broken by
path order, so the merge is deterministic.

Examples
--------
>>> s = describe("data/sample/spot/btcusdt_20240808.gz")
>>> s.fmt, s.market, s.symbol
('ws', 'spot', 'BTCUSDT')
>>> describe("x/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2024-08-08.zip").market
'usdm'
>>> describe("BTC_USDT-15m.feather").interval_ns // 10**9
900
"""

from __future__ import annotations

import bisect
import csv
import gzip
import heapq
import io
import logging
import os
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Optional

from isal import igzip

from sources.binance import to_ns

log = logging.getLogger(__name__)

__all__ = ["FileSpec", "StreamSpec", "describe", "discover", "group_streams", "line_ts", "read_stream"]

_WS_SUFFIXES = (".gz", ".dat", ".txt", ".jsonl")
_CSV_RE = re.compile(
    r"^(?P<sym>[A-Z0-9]+)-(?P<kind>trades|aggTrades|\d+[smhdwM])-.*\.(csv|zip|csv\.gz)$"
)
_FEATHER_RE = re.compile(r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)-(?P<iv>\d+[smhdw])\.feather$")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}


def interval_ns(text: str) -> int:
    """``"1m"`` -> 60e9. Months are not fixed-length and are refused.

    >>> interval_ns("15m"), interval_ns("1s")
    (900000000000, 1000000000)
    """
    unit = text[-1]
    if unit not in _UNIT_NS:
        raise ValueError(f"unsupported kline interval {text!r}")
    return int(text[:-1]) * _UNIT_NS[unit]


@dataclass(frozen=True)
class FileSpec:
    """What one input file holds."""

    path: str
    fmt: str  # ws | trades | aggTrades | klines | kline_rows
    market: str
    symbol: str
    interval_ns: int = 0


@dataclass(frozen=True)
class StreamSpec:
    """Files of one (format, market, symbol), merged in time order."""

    name: str
    fmt: str
    market: str
    symbol: str
    files: tuple[str, ...] = field(default_factory=tuple)
    interval_ns: int = 0


def _market_of(path: str) -> str:
    parts = {p.lower() for p in Path(path).parts}
    return "usdm" if parts & {"usdm", "um", "futures", "fapi"} else "spot"


def describe(path: str | os.PathLike, market: str | None = None) -> FileSpec:
    """Classify a file by its name (and path, for the market)."""
    p = str(path)
    name = Path(p).name
    mkt = market or _market_of(p)
    m = _FEATHER_RE.match(name)
    if m:
        return FileSpec(p, "kline_rows", mkt, m["base"] + m["quote"], interval_ns(m["iv"]))
    m = _CSV_RE.match(name)
    if m:
        kind = m["kind"]
        if kind in ("trades", "aggTrades"):
            return FileSpec(p, kind, mkt, m["sym"])
        return FileSpec(p, "klines", mkt, m["sym"], interval_ns(kind))
    if name.endswith(_WS_SUFFIXES):
        sym = name.split("_", 1)[0].split(".", 1)[0].upper()
        return FileSpec(p, "ws", mkt, sym)
    raise ValueError(f"don't know how to read {p!r}: expected a websocket recording, "
                     "a Binance CSV/zip archive or a Feather kline file")


def discover(paths: list[str | os.PathLike]) -> list[str]:
    """Expand directories into the readable files under them, sorted."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in os.walk(p):
                for f in files:
                    full = os.path.join(root, f)
                    try:
                        describe(full)
                    except ValueError:
                        continue
                    out.append(full)
        else:
            out.append(str(p))
    return sorted(dict.fromkeys(out))


def group_streams(paths: list[str | os.PathLike], market: str | None = None) -> list[StreamSpec]:
    """Group files into per-(format, market, symbol) streams, in a stable order."""
    groups: dict[tuple[str, str, str, int], list[str]] = {}
    for p in discover(paths):
        s = describe(p, market)
        groups.setdefault((s.fmt, s.market, s.symbol, s.interval_ns), []).append(s.path)
    return [
        StreamSpec(f"{fmt}:{mkt}:{sym}" + (f":{iv}" if iv else ""), fmt, mkt, sym, tuple(sorted(fs)), iv)
        for (fmt, mkt, sym, iv), fs in sorted(groups.items())
    ]


def _open_bytes(path: str) -> io.BufferedIOBase:
    """Open plain or gzip files; gzip is inflated by ISA-L (about 2x zlib)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return igzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _inflate_truncated(path: str) -> bytes:
    """Everything a gzip file (one or more members) inflates to, up to where
    it was cut off."""
    data, out = Path(path).read_bytes(), []
    while data:
        d = zlib.decompressobj(31)
        out.append(d.decompress(data))
        if not d.eof:
            break
        data = d.unused_data
    return b"".join(out)


def _ws_blocks(path: str, block_bytes: int = 1 << 19) -> Iterator[list[bytes]]:
    """Yield the non-empty lines of a recording in blocks, without their
    line endings. Blank lines carry nothing and are dropped."""
    with _open_bytes(path) as f:
        rest = b""
        pos = 0
        truncated = False
        while True:
            if truncated:
                buf = b""
            else:
                try:
                    buf = f.read(block_bytes)
                except EOFError:  # a capture cut short by a crash: keep every complete line
                    log.warning("%s ends in a truncated gzip stream; read up to its last complete line", path)
                    buf, truncated = _inflate_truncated(path)[pos:], True
                    buf = buf[: buf.rfind(b"\n") + 1]
                    rest = rest if buf else b""  # an unfinished last line is dropped
            pos += len(buf)
            if not buf:
                break
            lines = (rest + buf).splitlines()
            rest = b"" if buf.endswith(b"\n") else lines.pop()
            lines = [ln for ln in lines if ln] if b"" in lines else lines
            if lines:
                yield lines
        if rest:
            yield [rest]


def line_ts(line: bytes) -> int:
    """Receive timestamp (ns) at the head of a recording line, -1 if none.

    >>> line_ts(b"1680652800004107 {}"), line_ts(b"1723161253937085768 {}"), line_ts(b"{}")
    (1680652800004107000, 1723161253937085768, -1)
    """
    sp = line.find(b" ")
    head = line[:sp]
    if sp <= 0 or not head.isdigit():
        return -1
    return int(head) * 1000 if sp <= 16 else int(head)


def _last_ts(lines: list[bytes]) -> int:
    for ln in reversed(lines):
        t = line_ts(ln)
        if t >= 0:
            return t
    return -1


def _merge_ws(paths: tuple[str, ...], out_lines: int = 4096) -> Iterator[list[bytes]]:
    """Merge the files' lines by receive time.

    A stable merge on (key, file index), where a line's key is the running
    maximum of its file's timestamps: a line without a timestamp, or whose
    timestamp goes backwards, keeps its place after its predecessor in its
    file (the parser and the bar builder then dead-letter it). Blocks that do
    not overlap another file's next line pass through whole, so
    non-overlapping files (consecutive days) cost nothing; overlapping ones
    are cut with a binary search. Output comes in lists of about
    ``out_lines`` lines.
    """
    its = [_ws_blocks(p) for p in paths]
    if len(its) == 1:
        yield from its[0]
        return
    nf = len(its)
    blocks: list[list[bytes]] = [next(it, []) for it in its]
    pos = [0] * nf
    keys: list[Optional[list[int]]] = [None] * nf
    carry = [-1] * nf  # running max timestamp before the current block

    def head(i: int) -> tuple[int, int]:
        k = keys[i]
        if k is not None:
            return (k[pos[i]], i)
        return (max(carry[i], line_ts(blocks[i][pos[i]])), i)

    out: list[bytes] = []
    while True:
        live = [i for i in range(nf) if pos[i] < len(blocks[i])]
        if not live:
            break
        heads = [head(j) for j in live]
        first = min(heads)
        i = first[1]
        block = blocks[i]
        others = [h for h in heads if h[1] != i]
        if not others:
            take = len(block)
        else:
            bound_ts, bound_file = min(others)
            if keys[i] is None and max(carry[i], _last_ts(block)) < bound_ts:
                take = len(block)
            else:
                k = keys[i]
                if k is None:
                    k, c = [], carry[i]
                    for ln in block:
                        t = line_ts(ln)
                        c = t if t > c else c
                        k.append(c)
                    keys[i] = k
                cut = bisect.bisect_right if i < bound_file else bisect.bisect_left
                take = cut(k, bound_ts, pos[i])
        out.extend(block[pos[i] : take])
        pos[i] = take
        if take == len(block):
            k = keys[i]
            carry[i] = k[-1] if k else max(carry[i], _last_ts(block))
            blocks[i], pos[i], keys[i] = next(its[i], []), 0, None
        if len(out) >= out_lines:
            yield out
            out = []
    if out:
        yield out


def _csv_text(path: str) -> Iterator[str]:
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            for name in sorted(z.namelist()):
                if name.endswith(".csv"):
                    with z.open(name) as f:
                        yield from io.TextIOWrapper(f, "utf-8", newline="")
        return
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:  # type: ignore[operator]
        yield from f


def _csv_rows(path: str, idx: int, fmt: str) -> Iterator[tuple[int, int, list[str]]]:
    tcol = {"trades": 4, "aggTrades": 5, "klines": 6}[fmt]
    for row in csv.reader(_csv_text(path)):
        try:
            ts = to_ns(int(row[tcol]))
        except (ValueError, IndexError):
            ts = 0  # header or a broken row: the parser decides
        yield (ts, idx, row)


def _feather_rows(path: str, idx: int) -> Iterator[tuple[int, int, tuple]]:
    import pyarrow.feather as feather

    table = feather.read_table(path, columns=["date", "open", "high", "low", "close", "volume"])
    dates = table.column("date").cast("int64").to_pylist()  # µs/ns per schema unit
    unit = table.schema.field("date").type.unit
    mult = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    cols = [table.column(c).to_pylist() for c in ("open", "high", "low", "close", "volume")]
    for i, d in enumerate(dates):
        t = d * mult
        yield (t, idx, (t, cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i]))


def read_stream(spec: StreamSpec, skip: int = 0) -> Iterator[list]:
    """Yield the stream's records in blocks, merged across its files in time
    order, after skipping the first ``skip`` records.

    Records are raw recording lines for ``ws`` streams, CSV rows (lists of
    strings) for archives, and ``(open_time_ns, o, h, l, c, v)`` tuples for
    Feather klines.
    """
    if spec.fmt == "ws":
        blocks: Iterator[list] = _merge_ws(spec.files)
    else:
        its = [
            _feather_rows(path, idx) if spec.fmt == "kline_rows" else _csv_rows(path, idx, spec.fmt)
            for idx, path in enumerate(spec.files)
        ]
        merged = its[0] if len(its) == 1 else heapq.merge(*its, key=lambda r: (r[0], r[1]))
        recs = (rec for _, _, rec in merged)
        blocks = iter(lambda: list(islice(recs, 4096)), [])
    for block in blocks:
        if skip >= len(block):
            skip -= len(block)
            continue
        if skip:
            block, skip = block[skip:], 0
        yield block

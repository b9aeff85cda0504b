"""Readers for recorded and archived market data (I/O only, no Bytewax).

Inputs are recognized by their content, read once per file by
:func:`describe` from a bounded prefix (the first 64 KiB, inflated when the
file is gzip); whole files are never read for this. Three kinds of file are
understood:

- **websocket recordings**, whatever their name, gzip (magic bytes ``1f 8b``)
  or plain: one ``<receive timestamp> <json>`` line per message, timestamps in
  µs (16 digits) or ns (19 digits), see :func:`line_ts`. A file is one when
  its first non-empty line is such a line holding a JSON object (a REST depth
  snapshot ``{"lastUpdateId":...}`` counts). Combined-stream messages
  (``{"stream":"btcusdt@trade","data":{...}}``) and raw stream messages
  (the data alone, as ``/ws/<stream>`` sends it) are both read. The symbol
  comes from the stream names (``btcusdt@trade`` -> ``BTCUSDT``; of raw
  messages, their ``s``) and the market from the first messages of every
  kind of stream, by the fields only one market's messages carry (checked
  on the real recordings and other projects' fixtures, tests/data/NOTICE.md):
  futures ``trade`` data has ``X`` (order type), depth data ``pu``,
  ``bookTicker`` data ``E``/``T`` and the REST snapshot ``E``/``T``; the
  ``markPrice`` and ``forceOrder`` streams exist on futures only; spot
  ``trade`` and ``aggTrade`` data have ``M`` (futures aggTrades do not);
  spot klines write every quantity with 8 decimals, futures ones with the
  contract's precision. Spot ``bookTicker``, depth and snapshot messages are
  told by what they lack, which counts only where no message tells by what
  it has. A COIN-M contract is told by its symbol (``BTCUSD_PERP``,
  ``BTCUSD_211231``): no spot or USD-M symbol looks like one. The kinds of
  stream seen are kept (:attr:`FileSpec.kinds`, :func:`unquoted`).
- **Binance public-data CSV** (``SYMBOL-trades-*.csv``,
  ``SYMBOL-aggTrades-*.csv``, ``SYMBOL-1m-*.csv``, plain, ``.csv.gz`` or
  inside the ``.zip`` Binance publishes), recognized by Binance's fixed names
  (the symbol of a delivery or COIN-M contract included: ``BTCUSD_PERP-trades-
  2024-08-08.zip``) and checked to hold a CSV. The first row tells the market
  of trades and aggTrades: spot trades have 7 columns (``id, price, qty,
  quote_qty, time, is_buyer_maker, is_best_match``), USD-M ones 6; spot
  aggTrades 8, USD-M 7 (newer USD-M files start with a header row of as many
  columns). Klines look the same on both markets. COIN-M archives (6 and 7
  columns too) are told by their symbol.
- **Feather klines** as written by freqtrade (``BTC_USDT-1m.feather``), by
  name and Arrow magic bytes.

The market is, first to last: the ``market`` argument (the
``TICKLET_INPUT__MARKET`` setting), COIN-M for a COIN-M contract's symbol,
what the content tells, then the path rule: a path part called ``usdm``,
``um``, ``futures`` or ``fapi`` means USD-M futures, anything else spot. A
recording's symbol falls back to its file name: a contract's symbol at its
start (``btcusd_perp_20240808.gz``), else the part before the first ``_`` or
``.``. An archive or Feather path that does not exist yet is classified by
its name alone. A COIN-M contract whose size ticklet does not know
(:func:`sources.symbols.coinm_contract`), or a symbol that is not a COIN-M
contract's in an input forced to COIN-M, is refused with a one-line
:class:`InputFormatError`, inside a directory too: never misread.

A file that is none of these raises :class:`InputFormatError` (a
:class:`ValueError`) with a one-line message naming the file and what was
found. Inside a directory given as input such files are skipped (logged at
debug level; a file named like a Binance archive but holding something else
is logged as a warning).

Files are grouped into *streams*: one per (format, market, symbol). The files
of a stream are merged in time order with :func:`heapq.merge`, ties broken by
path order, so the merge is deterministic.

Examples
--------
>>> s = describe("data/sample/spot/btcusdt_20240808.gz")
>>> s.fmt, s.market, s.symbol
('ws', 'spot', 'BTCUSDT')
>>> describe("data/sample/spot/btcusdt_20240808.gz", market="usdm").market
'usdm'
>>> describe("x/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2024-08-08.zip").market
'usdm'
>>> describe("BTC_USDT-15m.feather").interval_ns // 10**9
900
>>> [s.name for s in group_streams(["data/sample"])]  # NOTICE.md beside the data is skipped
['ws:spot:BTCUSDT']
>>> describe("data/sample/btcusdt_20240810.gz")
Traceback (most recent call last):
...
sources.files.InputFormatError: data/sample/btcusdt_20240810.gz: no such file
>>> describe("data/sample/NOTICE.md")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sources.files.InputFormatError: data/sample/NOTICE.md: not a recording, ... (first line: b'...')
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import heapq
import io
import logging
import os
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Optional

import msgspec
from isal import igzip, isal_zlib

from core.events import coinm_pair, instrument_key
from sources.binance import EVENT_STREAMS, LONG_LINE_HEAD, MAX_LINE_BYTES, BadRow, LongLine, to_ns
from sources.symbols import coinm_contract

log = logging.getLogger(__name__)

__all__ = [
    "FileSpec",
    "InputFormatError",
    "ReadProgress",
    "StreamSpec",
    "describe",
    "discover",
    "group_name",
    "group_streams",
    "instrument_groups",
    "line_ts",
    "read_stream",
    "read_streams",
    "unquoted",
]

_CSV_RE = re.compile(
    r"^(?P<sym>[A-Z0-9_]+)-(?P<kind>trades|aggTrades|\d+[smhdwM])-.*\.(csv|zip|csv\.gz)$"
)
_FEATHER_RE = re.compile(r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)-(?P<iv>\d+[smhdw])\.feather$")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}

#: How much of a file (inflated) is read to tell what it is.
_SNIFF_BYTES = 1 << 16
#: At most this much compressed input is read to inflate that prefix.
_SNIFF_RAW_MAX = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # an archive with members, an empty one
_FEATHER_MAGICS = (b"ARROW1", b"FEA1")  # Feather v2 (Arrow IPC file), v1
#: A recording line's head: the receive timestamp in µs or ns, one space, a JSON object.
_REC_HEAD = re.compile(rb"(?:\d{16}|\d{19}) \{")
_SYMBOL = re.compile(r"[A-Za-z0-9_]+")  # of a stream name: btcusdt@trade, btcusdt_240927@depth
#: A recording's file name that starts with a contract's symbol (``btcusd_perp_20240808.gz``).
_CONTRACT_NAME = re.compile(r"[a-z0-9]+_(?:perp|[0-9]{6})(?![a-z0-9])", re.IGNORECASE)
_NONE_OF = "not a recording, Binance CSV/zip archive or Feather klines file"
_SHOW = 60  # bytes of what was found that an error message shows (of text; of binary, a quarter)
#: Columns of the first CSV row (data or header) -> market, where they tell it.
_CSV_MARKET = {"trades": {7: "spot", 6: "usdm"}, "aggTrades": {8: "spot", 7: "usdm"}}


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
    #: The kinds of stream it holds (``trade``, ``bookTicker``, ...): of a
    #: recording, those its first messages show; of an archive, its format's.
    kinds: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StreamSpec:
    """Files of one (format, market, symbol), merged in time order."""

    name: str
    fmt: str
    market: str
    symbol: str
    files: tuple[str, ...] = field(default_factory=tuple)
    interval_ns: int = 0


class InputFormatError(ValueError):
    """An input that is none of the formats read here (or no file at all).

    The message is one line: ``"<path>: <reason>"``.

    Parameters
    ----------
    path : str
        The file, as given.
    reason : str
        What is wrong, including what was found.

    Examples
    --------
    >>> str(InputFormatError("notes.txt", "empty file"))
    'notes.txt: empty file'
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        shown = path if path.isprintable() else repr(path)
        super().__init__(f"{shown}: {reason}")

    def __reduce__(self) -> tuple:
        return type(self), (self.path, self.reason)


class _Named(InputFormatError):
    """A file named like a Binance archive or Feather klines file that holds something else.

    A broken download, most likely.
    """


def _market_of(path: str) -> str:
    parts = {p.lower() for p in Path(path).parts}
    return "usdm" if parts & {"usdm", "um", "futures", "fapi"} else "spot"


def _market(forced: Optional[str], told: Optional[str], path: str, symbol: str) -> str:
    """A file's market: the one forced, else that of a COIN-M symbol, else the content's, else the path's.

    Only COIN-M contracts tell their market by their symbol; the content
    tells it next, and the path rule last.
    """
    if forced:
        return forced
    if coinm_pair(symbol) is not None:
        return "coinm"
    return told or _market_of(path)


class _Refused(InputFormatError):
    """A file ticklet recognizes but cannot read right: refused, also inside a directory, rather than misread.

    For instance a COIN-M contract of unknown size, or a market forced
    against its symbol.
    """


def _checked(spec: FileSpec) -> FileSpec:
    """``spec``, unless its symbol cannot be read in its market (:class:`_Refused`)."""
    why = coinm_contract(spec.symbol, spec.market)
    if type(why) is str:
        forced = " (TICKLET_INPUT__MARKET=coinm)" if why.startswith("not a COIN-M") else ""
        raise _Refused(spec.path, why + forced)
    return spec


def _show(data: bytes, n: int = _SHOW) -> str:
    """``data`` for an error message: a bytes repr of at most ``n`` bytes."""
    return repr(data[:n]) + ("..." if len(data) > n else "")


def _found(head: bytes, gz: bool = False) -> str:
    r"""What a prefix holds, in a few words, for an error message.

    >>> _found(b""), _found(b"\n\nhello world\nmore"), _found(b"\x89PNG\r\n\x1a\n\x00")
    ('empty file', "first line: b'hello world'", "first bytes: b'\\x89PNG\\r\\n\\x1a\\n\\x00'")
    """
    if not head:
        return "gzip inflating to nothing" if gz else "empty file"
    pre = "gzip, " if gz else ""
    start = head[:_SHOW]
    if any(b < 9 or 13 < b < 32 for b in start):
        return f"{pre}first bytes: {_show(head, _SHOW // 4)}"
    line = _first_line(head)[0]
    return f"{pre}first line: {_show(line)}" if line else f"{pre}only blank lines"


def _read_head(path: str) -> tuple[bytes, bytes, bool, bool]:
    """The start of a file: ``(raw bytes, content, gzip, whole)``.

    ``content`` is the first ``_SNIFF_BYTES`` of the file, inflated when it is
    gzip (member after member, as far as a truncated file goes); ``whole``
    says that it is all the file holds.
    """
    n = _SNIFF_BYTES
    with open(path, "rb") as f:
        raw = f.read(n + 1)
        if raw[:2] != _GZIP_MAGIC:
            return raw[:n], raw[:n], False, len(raw) <= n
        out = bytearray()
        data, used, d = raw, len(raw), zlib.decompressobj(31)
        try:
            while len(out) <= n:
                if not data:
                    if used >= _SNIFF_RAW_MAX:
                        return raw[:n], bytes(out), True, False
                    data = f.read(n)
                    used += len(data)
                    if not data:  # end of file: all there is when the last member is complete
                        return raw[:n], bytes(out), True, d.eof
                if d.eof:  # the next member
                    if len(data) < 2 and used < _SNIFF_RAW_MAX:  # its magic bytes split between reads
                        more = f.read(n)
                        data, used = data + more, used + len(more)
                    if data[:2] != _GZIP_MAGIC:
                        break  # bytes after the last member
                    d = zlib.decompressobj(31)
                out += d.decompress(data, n + 1 - len(out))
                data = d.unused_data if d.eof else d.unconsumed_tail
        except zlib.error as ex:
            raise InputFormatError(path, f"gzip that does not inflate ({ex})") from None
        return raw[:n], bytes(out[:n]), True, len(out) <= n


def _lines(content: bytes, whole: bool) -> list[bytes]:
    """The complete non-empty lines of a prefix, without line endings."""
    lines = content.split(b"\n")
    if not whole:
        lines.pop()  # cut off at the bound
    return [s for ln in lines if (s := ln.rstrip(b"\r"))]


def _first_line(content: bytes, whole: bool = True) -> tuple[bytes, bool]:
    """The first non-empty line of a prefix, and whether it is complete (rather than cut off at the bound)."""
    pos = 0
    while pos < len(content):
        end = content.find(b"\n", pos)
        complete = end >= 0 or whole
        end = len(content) if end < 0 else end
        line = content[pos:end].rstrip(b"\r")
        if line.strip():
            return line, complete
        pos = end + 1
    return b"", True


def _is_recording(content: bytes, whole: bool) -> bool:
    """Whether the first non-empty line is ``<16 or 19 digits> <JSON object>``."""
    first, complete = _first_line(content, whole)
    if not _REC_HEAD.match(first):
        return False
    body = first[first.find(b" ") + 1 :]
    if not complete:  # longer than the prefix (a deep REST snapshot): only its start is seen
        return body.startswith(b'{"')
    try:
        return isinstance(msgspec.json.decode(body), dict)
    except msgspec.DecodeError:
        return False


def _message(msg: dict) -> tuple[Optional[str], dict, Optional[str]]:
    """``(kind, data, symbol)`` of one decoded recording message.

    The kind of its stream (``trade``, ``aggTrade``, ``bookTicker``,
    ``depth``, ``kline``, ``markPrice``...; ``snapshot`` for a REST depth
    snapshot), its data, and its symbol in upper case; None where it has
    none. A raw stream's message (no ``stream``: the data alone) is told by
    its event type ``e``; spot bookTicker data, which has none, by its
    fields.

    >>> _message({"stream": "btcusdt@kline_1m", "data": {"e": "kline"}})
    ('kline', {'e': 'kline'}, 'BTCUSDT')
    >>> _message({"u": 1, "s": "BNBUSDT", "b": "25.3", "B": "31", "a": "25.4", "A": "40"})[::2]
    ('bookTicker', 'BNBUSDT')
    """
    stream = msg.get("stream")
    if isinstance(stream, str):
        data = msg.get("data")
        name, _, rest = stream.partition("@")
        kind: Optional[str] = rest.split("@", 1)[0] or None
        sym: Any = name.upper()
    else:
        data = msg
        if "lastUpdateId" in msg and "bids" in msg:
            kind, sym = "snapshot", msg.get("symbol")  # COIN-M's names its symbol
        else:
            e = msg.get("e")
            if isinstance(e, str):
                kind = EVENT_STREAMS.get(e)
            else:  # spot bookTicker data has no event type
                kind = "bookTicker" if {"u", "b", "a"} <= msg.keys() else None
            sym = msg.get("s")
    if kind is not None and kind.startswith("kline_"):
        kind = "kline"
    symbol = sym if isinstance(sym, str) and _SYMBOL.fullmatch(sym) else None
    return kind, data if isinstance(data, dict) else {}, symbol


def _decimals(number: object) -> int:
    """Digits after the point of a decimal string (-1: not a string)."""
    if not isinstance(number, str):
        return -1
    dot = number.find(".")
    return 0 if dot < 0 else len(number) - dot - 1


def _vote(kind: Optional[str], data: dict) -> Optional[tuple[str, bool]]:
    """``(market, strong)`` that one message tells, or None.

    ``usdm`` stands for futures (a COIN-M contract is told by its symbol).

    Strong votes rest on what only that market's messages carry, weak ones
    on fields missing (spot bookTicker, depth and REST snapshot): futures
    trades have ``X``, spot trades and aggTrades ``M`` (futures aggTrades
    have none), futures bookTicker and snapshots ``E``/``T``, futures depth
    ``pu``; mark price and liquidation streams are futures' only; spot
    writes every kline quantity with 8 decimals, futures with the
    contract's precision (at most 3 for a volume).

    >>> _vote("aggTrade", {"a": 1, "p": "1.011", "m": False}), _vote("kline", {"k": {"v": "3917"}})
    (('usdm', True), ('usdm', True))
    >>> _vote("kline", {"k": {"v": "25877.00000000"}}), _vote("bookTicker", {"u": 1})
    (('spot', True), ('spot', False))
    """
    if kind in ("markPrice", "forceOrder"):
        return "usdm", True
    if kind == "trade":
        if "X" in data:
            return "usdm", True
        return ("spot", True) if "M" in data else None
    if kind == "aggTrade" and "a" in data:
        return ("spot", True) if "M" in data else ("usdm", True)
    if kind == "bookTicker" or kind == "snapshot":
        return ("usdm", True) if "E" in data or "T" in data else ("spot", False)
    if kind is not None and kind.startswith("depth") and "U" in data:  # a diff-depth update (futures' depth20 too)
        return ("usdm", True) if "pu" in data else ("spot", False)
    if kind == "kline":
        k = data.get("k")
        places = _decimals(k.get("v")) if isinstance(k, dict) else -1
        if places >= 0:
            return ("spot", True) if places == 8 else ("usdm", True)
    return None


def _sniff_ws(path: str, content: bytes, whole: bool, quiet: bool
              ) -> tuple[Optional[str], Optional[str], frozenset[str]]:
    """``(market, symbol, kinds)`` told by the messages in a recording's prefix.

    The market and the first symbol (None where none tells) and the kinds of
    stream seen. ``quiet``: do not warn about mixed markets.
    """
    strong: Counter[str] = Counter()
    weak: Counter[str] = Counter()
    symbols: dict[str, None] = {}
    kinds: set[str] = set()
    for ln in _lines(content, whole):
        sp = ln.find(b" ")
        if not _REC_HEAD.match(ln):
            continue
        try:
            msg = msgspec.json.decode(ln[sp + 1 :])
        except msgspec.DecodeError:
            continue
        if not isinstance(msg, dict):
            continue
        kind, data, sym = _message(msg)
        if sym is not None:
            symbols.setdefault(sym)
        if kind is not None:
            kinds.add(kind)
        v = _vote(kind, data)
        if v is not None:
            (strong if v[1] else weak)[v[0]] += 1
    votes = strong or weak
    market: Optional[str] = None
    if len(votes) == 1:
        (market,) = votes
    elif votes:
        (m1, n1), (_, n2) = votes.most_common(2)
        market = m1 if n1 > n2 else None
        if not quiet:
            log.warning("%s: its first messages tell both markets (%s); taking %s", path,
                        dict(sorted(votes.items())), market or "the market of the path")
    if len(symbols) > 1:
        log.debug("%s: streams of several symbols %s; named after the first", path, list(symbols))
    return market, next(iter(symbols), None), frozenset(kinds)


def _csv_head(path: str, name: str, raw: bytes, content: bytes, gz: bool) -> bytes:
    """The start of a named Binance CSV archive's (first) CSV file.

    Raises :class:`InputFormatError` where the file holds something else.
    """
    if name.endswith(".zip"):
        if not raw.startswith(_ZIP_MAGICS):
            raise _Named(path, f"named like a Binance archive but not a zip archive ({_found(content, gz)})")
        try:
            with zipfile.ZipFile(path) as z:
                members = sorted(n for n in z.namelist() if n.endswith(".csv"))
                if not members:
                    raise _Named(path, f"a zip archive without a .csv file (holds {z.namelist()[:3]})")
                with z.open(members[0]) as f:
                    return f.read(_SNIFF_BYTES)
        except (zipfile.BadZipFile, zlib.error, EOFError) as ex:
            raise _Named(path, f"a damaged zip archive ({ex})") from None
    if name.endswith(".gz") and not gz:
        raise _Named(path, f"named like a gzip CSV archive but not gzip ({_found(content)})")
    return content


def _csv_market(path: str, name: str, kind: str, raw: bytes, content: bytes, gz: bool) -> Optional[str]:
    """The market that a named Binance CSV's first row tells (None for klines and unknown widths).

    Raises :class:`InputFormatError` where the file holds no CSV.
    """
    head = _csv_head(path, name, raw, content, gz)
    first = _first_line(head)[0]
    if not first:
        raise _Named(path, "named like a Binance archive but its CSV is empty")
    try:
        row = next(csv.reader([first.decode("utf-8")]))
    except UnicodeDecodeError:
        row = []
    if len(row) < 2:
        raise _Named(path, f"named like a Binance archive but not a CSV ({_found(head)})")
    return _CSV_MARKET.get(kind, {}).get(len(row))


def describe(path: str | os.PathLike, market: str | None = None) -> FileSpec:
    """Classify a file by its content (and its name, for Binance archives).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    market : str, optional
        ``"spot"`` or ``"usdm"``: forces the market, whatever the content or
        the path tells.

    Returns
    -------
    FileSpec
        Format, market, symbol (and kline interval) of the file.

    Raises
    ------
    InputFormatError
        The file is none of the known formats, or does not exist (archive and
        Feather names excepted, see the module docstring).

    Examples
    --------
    >>> s = describe("data/sample/spot/btcusdt_20240809.gz")
    >>> s.fmt, s.market, s.symbol
    ('ws', 'spot', 'BTCUSDT')
    """
    p = str(path)
    name = Path(p).name
    feather = _FEATHER_RE.match(name)
    archive = _CSV_RE.match(name)
    try:
        raw, content, gz, whole = _read_head(p)
    except FileNotFoundError:
        if feather or archive:  # a file to come (a download's destination): its name says what it is
            return _by_name(p, market, None, feather, archive)
        raise InputFormatError(p, "no such file") from None
    except IsADirectoryError:
        raise InputFormatError(p, "a directory, not a file") from None
    except OSError as ex:
        raise InputFormatError(p, f"cannot be read ({ex.strerror or ex})") from None
    except InputFormatError as ex:  # a gzip file that does not inflate
        raise (_Named(p, ex.reason) if feather or archive else ex) from None
    if _is_recording(content, whole):
        mkt, sym, kinds = _sniff_ws(p, content, whole, quiet=market is not None)
        if sym is None:
            named = _CONTRACT_NAME.match(name)
            sym = (named.group(0) if named else name.split("_", 1)[0].split(".", 1)[0]).upper()
        return _checked(FileSpec(p, "ws", _market(market, mkt, p, sym), sym, kinds=kinds))
    if feather:
        if not raw.startswith(_FEATHER_MAGICS):
            raise _Named(p, f"named like a Feather klines file but not one ({_found(content, gz)})")
        return _by_name(p, market, None, feather, None)
    if archive:
        told = _csv_market(p, name, archive["kind"], raw, content, gz)
        return _by_name(p, market, told, None, archive)
    raise InputFormatError(p, f"{_NONE_OF} ({_found(content, gz)})")


def _by_name(p: str, market: Optional[str], told: Optional[str], feather: Optional[re.Match],
             archive: Optional[re.Match]) -> FileSpec:
    if feather:
        sym = feather["base"] + feather["quote"]
        return _checked(FileSpec(p, "kline_rows", _market(market, told, p, sym), sym, interval_ns(feather["iv"]),
                                 frozenset({"kline"})))
    assert archive is not None
    kind, sym = archive["kind"], archive["sym"]
    mkt = _market(market, told, p, sym)
    if kind in ("trades", "aggTrades"):
        return _checked(FileSpec(p, kind, mkt, sym, kinds=frozenset({kind.removesuffix("s")})))
    return _checked(FileSpec(p, "klines", mkt, sym, interval_ns(kind), frozenset({"kline"})))


def _expand(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Optional[FileSpec]]:
    """Paths given and files found under the directories given, sorted.

    The files found under directories come described (market from content
    or path); those given are described by the caller.
    """
    out: dict[str, Optional[FileSpec]] = {}
    for p in paths:
        if os.path.isdir(p):
            def unreadable(err: OSError, top: str = str(p)) -> None:
                if os.path.abspath(err.filename or "") == os.path.abspath(top):
                    raise InputFormatError(top, f"a directory that cannot be read ({err.strerror or err})")
                log.warning("skipped %s: cannot be read (%s)", err.filename, err.strerror or err)

            for root, _, files in os.walk(p, onerror=unreadable):
                for f in files:
                    full = os.path.join(root, f)
                    if full in out:
                        continue
                    try:
                        out[full] = describe(full)
                    except _Refused:
                        raise
                    except _Named as ex:
                        log.warning("skipped %s", ex)
                    except InputFormatError as ex:
                        log.debug("skipped %s", ex)
        else:
            out.setdefault(str(p), None)
    return dict(sorted(out.items()))


def discover(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Expand directories into the readable files under them, sorted.

    Files given explicitly are kept as they are (:func:`describe` judges
    them).
    """
    return list(_expand(paths))


def group_streams(paths: Sequence[str | os.PathLike[str]], market: str | None = None) -> list[StreamSpec]:
    """Group files into per-(format, market, symbol) streams, in a stable order.

    Each file is described (its prefix read) once. A file given explicitly
    that is none of the known formats raises :class:`InputFormatError`.
    """
    groups: dict[tuple[str, str, str, int], list[str]] = {}
    for s in _described(paths, market):
        groups.setdefault((s.fmt, s.market, s.symbol, s.interval_ns), []).append(s.path)
    return [
        StreamSpec(f"{fmt}:{mkt}:{sym}" + (f":{iv}" if iv else ""), fmt, mkt, sym, tuple(sorted(fs)), iv)
        for (fmt, mkt, sym, iv), fs in sorted(groups.items())
    ]


def _described(paths: Sequence[str | os.PathLike[str]], market: str | None) -> Iterator[FileSpec]:
    """Every input file described, ``market`` forced over what it tells."""
    for p, s in _expand(paths).items():
        if s is None:
            yield describe(p, market)
        else:
            yield _checked(dataclasses.replace(s, market=market)) if market else s


def unquoted(paths: Sequence[str | os.PathLike[str]], market: str | None = None) -> tuple[list[str], bool]:
    """The instruments whose inputs hold trades but no quotes, and whether any input holds quotes.

    Quotes are best bid/ask (``bookTicker``); the instruments come in input
    order. A mid-quote price leaves the former's trade bars without a price.

    An archive of trades or aggTrades holds no quotes; a recording holds the
    streams its first messages show (:attr:`FileSpec.kinds`), and an
    instrument is named after its file's (first) symbol.

    >>> unquoted(["data/sample"])
    ([], True)
    """
    traded: dict[str, None] = {}
    quoted: set[str] = set()
    for s in _described(paths, market):
        inst = instrument_key(s.symbol, s.market)
        if "bookTicker" in s.kinds:
            quoted.add(inst)
        elif s.kinds & {"trade", "aggTrade"}:
            traded.setdefault(inst)
    return [i for i in traded if i not in quoted], bool(quoted)


class ReadProgress:
    """How far the readers of one stream have got in their files, for progress bars.

    In bytes as stored (compressed bytes of gzip and zip files).

    >>> p = ReadProgress()
    >>> p.at("a.gz", 100); p.at("b.gz", 50); p.at("a.gz", 80); p.nbytes
    150
    """

    __slots__ = ("_at", "nbytes")

    def __init__(self) -> None:
        self.nbytes = 0
        self._at: dict[str, int] = {}

    def at(self, path: str, pos: int) -> None:
        """The reader of ``path`` has consumed its first ``pos`` bytes (never goes back)."""
        last = self._at.get(path, 0)
        if pos > last:
            self.nbytes += pos - last
            self._at[path] = pos

    def done(self, path: str) -> None:
        """``path`` has been read to its end."""
        self.at(path, os.path.getsize(path))


def _open_bytes(path: str) -> tuple[igzip.IGzipFile | io.BufferedReader, io.BufferedReader]:
    """Open plain or gzip files (gzip inflated by ISA-L, about 2x zlib): ``(reader, the file on disk)``.

    The second's position is how far the reader has got.
    """
    raw = open(path, "rb")  # noqa: SIM115 (closed with the reader)
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return igzip.IGzipFile(fileobj=raw, mode="rb"), raw
    raw.seek(0)
    return raw, raw


#: What reading a gzip stream raises where it is cut short or corrupt.
# isal's stub declares ``error: Exception`` (an instance); it is the class of its inflate errors
_ISAL_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]
_GZIP_ERRORS = (EOFError, OSError, zlib.error, _ISAL_ERROR)


def _salvage(path: str, skip: int, block_bytes: int) -> Iterator[bytes]:
    """What a gzip file (one or more members) inflates to after its first ``skip`` bytes.

    In blocks of at most ``block_bytes``, up to where it was cut off or
    stops inflating (corrupt data, a bad checksum: what inflated before is
    kept, the parser judges the lines). Reads the file in 64 KiB pieces:
    bounded memory whatever the file.
    """
    with open(path, "rb") as f:
        data = b""
        d = zlib.decompressobj(31)
        while True:
            if not data:
                data = f.read(1 << 16)
                if not data:
                    return
            if d.eof:  # the next member, if any
                if not data.startswith(_GZIP_MAGIC):
                    return
                d = zlib.decompressobj(31)
            try:
                out = d.decompress(data, block_bytes)
            except zlib.error:
                return
            data = d.unused_data if d.eof else d.unconsumed_tail
            if skip >= len(out):
                skip -= len(out)
            elif out:
                yield out[skip:]
                skip = 0


def _first(pieces: list[bytes], n: int) -> bytes:
    """The first ``n`` bytes of the pieces joined, without joining them all."""
    out, k = [], 0
    for p in pieces:
        out.append(p[: n - k])
        k += len(out[-1])
        if k >= n:
            break
    return b"".join(out)


def _ws_blocks(path: str, block_bytes: int = 1 << 19, progress: Optional[ReadProgress] = None,
               max_line: int = MAX_LINE_BYTES, blank: bool = False) -> Iterator[list[bytes]]:
    r"""Yield the lines of a recording in blocks, without their line endings.

    Lines end at ``\n``; a ``\r`` before it (CRLF files) is part of the
    line ending, a ``\r`` anywhere else part of the line. Blank lines are
    dropped, or kept with ``blank`` (the replay source keeps them, so that
    the parser counts them). A line longer than ``max_line`` bytes becomes a
    :class:`~sources.binance.LongLine` (its first bytes and its size) and is
    never held whole: at most ``max_line`` bytes of it and the block being
    split (twice ``block_bytes``) are held. A gzip
    stream cut short (a capture's crash) or corrupt is read to where it
    stops (:func:`_salvage`), its unfinished last line included, with a
    warning. ``progress`` follows the bytes read from disk.
    """
    f, raw = _open_bytes(path)
    keep = min(LONG_LINE_HEAD, max_line)
    with raw, f:
        parts: list[bytes] = []  # the pieces of the line being read (its first bytes only when over)
        size = 0  # the line's size so far
        over = False  # the line is longer than max_line
        pos = 0
        salvage: Optional[Iterator[bytes]] = None
        while True:
            if salvage is not None:
                buf = next(salvage, b"")
            else:
                try:
                    buf = f.read(block_bytes)
                except _GZIP_ERRORS as ex:  # a capture cut short by a crash, or corrupt: keep what it holds
                    log.warning("%s: a truncated or corrupt gzip stream (%s); read up to where it stops", path, ex)
                    salvage = _salvage(path, pos, block_bytes)
                    continue
            pos += len(buf)
            if not buf:
                break
            lines = buf.split(b"\n")
            tail = lines.pop()  # after the last line feed: the start of the next line
            if lines and (parts or over):  # the first line began in an earlier block
                first = lines[0]
                if over:
                    lines[0] = LongLine(parts[0], size + len(first))
                elif size + len(first) > max_line:
                    lines[0] = LongLine(_first([*parts, first], keep), size + len(first))
                else:
                    parts.append(first)
                    joined = b"".join(parts)
                    lines[0] = joined[:-1] if joined.endswith(b"\r") else joined
                parts, size, over = [], 0, False
            if lines:
                if len(buf) > max_line:  # a line of this block alone may be too long
                    lines = [LongLine(ln[:keep], len(ln)) if len(ln) > max_line and type(ln) is bytes else ln
                             for ln in lines]
                if b"\r" in buf:  # (one memchr: cheaper than looking for b"\r\n"; a line ending in \r had \r\n)
                    lines = [ln[:-1] if ln.endswith(b"\r") and type(ln) is bytes else ln for ln in lines]
                if not blank and b"" in lines:
                    lines = [ln for ln in lines if ln]
            if tail:
                size += len(tail)
                if not over:
                    if size > max_line:  # only its first bytes are kept from now on
                        parts, over = [_first([*parts, tail], keep)], True
                    else:
                        parts.append(tail)
            if progress is not None and salvage is None:
                progress.at(path, raw.tell())
            if lines:
                yield lines
        if progress is not None:
            progress.done(path)
        if over:
            yield [LongLine(parts[0], size)]
        elif parts:
            last = b"".join(parts)
            yield [last[:-1] if last.endswith(b"\r") else last]


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


def _merge_ws(paths: tuple[str, ...], out_lines: int = 4096, progress: Optional[ReadProgress] = None,
              max_line: int = MAX_LINE_BYTES, blank: bool = False) -> Iterator[list[bytes]]:
    """Merge the files' lines by receive time.

    A stable merge on (key, file index), where a line's key is the running
    maximum of its file's timestamps: a line without a timestamp, or whose
    timestamp goes backwards, keeps its place after its predecessor in its
    file (the parser and the bar builder then dead-letter it). Blocks that do
    not overlap another file's next line pass through whole, so
    non-overlapping files (consecutive days) cost nothing; overlapping ones
    are cut with a binary search. Output comes in lists of about
    ``out_lines`` lines. ``max_line`` and ``blank``: see :func:`_ws_blocks`.
    """
    its = [_ws_blocks(p, progress=progress, max_line=max_line, blank=blank) for p in paths]
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


def _csv_text(path: str, progress: Optional[ReadProgress]) -> Iterator[str]:
    """The lines of a CSV file (plain, gzip, or the CSV members of a zip).

    Bytes that are not UTF-8 come as surrogates (``surrogateescape``), so
    the parser dead-letters their row with its exact bytes. ``progress``
    follows the bytes read from disk every 4096 lines.
    """
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            raw = z.fp  # the members are read from it in order
            for name in sorted(z.namelist()):
                if name.endswith(".csv"):
                    with z.open(name) as member:
                        yield from _tracked(io.TextIOWrapper(member, "utf-8", "surrogateescape", newline=""), path,
                                            raw, progress)
    else:
        f, raw = _open_bytes(path)
        with raw, f:
            yield from _tracked(io.TextIOWrapper(f, "utf-8", "surrogateescape", newline=""), path, raw,
                                            progress)
    if progress is not None:
        progress.done(path)


def _tracked(lines: Iterator[str], path: str, raw: Any, progress: Optional[ReadProgress]) -> Iterator[str]:
    if progress is None:
        yield from lines
        return
    for i, ln in enumerate(lines, 1):
        if not i & 4095:
            progress.at(path, raw.tell())
        yield ln


def _csv_rows(path: str, idx: int, fmt: str, progress: Optional[ReadProgress]) -> Iterator[tuple[int, int, list[str]]]:
    tcol = {"trades": 4, "aggTrades": 5, "klines": 6}[fmt]
    reader = csv.reader(_csv_text(path, progress))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as ex:  # a field over the csv module's limit...: the parser dead-letters it
            yield (0, idx, BadRow(str(ex)))
            continue
        try:
            ts = to_ns(int(row[tcol]))
        except (ValueError, IndexError):
            ts = 0  # header or a broken row: the parser decides
        yield (ts, idx, row)


def _feather_rows(path: str, idx: int, progress: Optional[ReadProgress]) -> Iterator[tuple[int, int, tuple]]:
    import pyarrow.feather as feather

    table = feather.read_table(path, columns=["date", "open", "high", "low", "close", "volume"])
    if progress is not None:
        progress.done(path)  # read whole
    dates = table.column("date").cast("int64").to_pylist()  # µs/ns per schema unit
    unit = table.schema.field("date").type.unit
    mult = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    cols = [table.column(c).to_pylist() for c in ("open", "high", "low", "close", "volume")]
    for i, d in enumerate(dates):
        t = d * mult
        yield (t, idx, (t, cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i]))


def read_stream(spec: StreamSpec, skip: int = 0, progress: Optional[ReadProgress] = None,
                max_line_bytes: int = MAX_LINE_BYTES, blank_lines: bool = False) -> Iterator[list]:
    """Yield the stream's records in blocks, merged across its files in time order, after the first ``skip``.

    Records are raw recording lines for ``ws`` streams (a line longer than
    ``max_line_bytes`` as a :class:`~sources.binance.LongLine`; blank lines
    only with ``blank_lines``), CSV rows (lists of strings) for archives, and
    ``(open_time_ns, o, h, l, c, v)`` tuples for Feather klines.
    ``progress``, if given, follows the bytes read from the files; it
    reaches their total size when the stream ends.
    """
    if spec.fmt == "ws":
        blocks: Iterator[list] = _merge_ws(spec.files, progress=progress, max_line=max_line_bytes, blank=blank_lines)
    else:
        recs = (rec for _, _, rec in _timed(spec, 0, progress, max_line_bytes, blank_lines))
        blocks = iter(lambda: list(islice(recs, 4096)), [])
    for block in blocks:
        if skip >= len(block):
            skip -= len(block)
            continue
        if skip:
            block, skip = block[skip:], 0
        yield block



def instrument_groups(specs: Sequence[StreamSpec]) -> list[tuple[StreamSpec, ...]]:
    """The streams grouped by the instrument they hold (market and symbol), in order of first appearance.

    A group is what one reader reads in time order (:func:`read_streams`):
    an instrument's trades archive and klines, say, or its recordings. Its
    name (:func:`group_name`) is its streams' names joined by ``+``, so
    that an instrument read from one stream keeps its stream's name.

    >>> specs = group_streams(["tests/data/fixtures/binance-public-data"])
    >>> [s.name for s in specs]
    ['klines:coinm:BTCUSD_PERP:60000000000', 'trades:coinm:BTCUSD_PERP']
    >>> [group_name(g) for g in instrument_groups(specs)]
    ['klines:coinm:BTCUSD_PERP:60000000000+trades:coinm:BTCUSD_PERP']
    """
    groups: dict[str, list[StreamSpec]] = {}
    for s in specs:
        groups.setdefault(instrument_key(s.symbol, s.market), []).append(s)
    return [tuple(g) for g in groups.values()]


def group_name(group: Sequence[StreamSpec]) -> str:
    """The name of a group of streams (:func:`instrument_groups`): their names joined by ``+``."""
    return "+".join(s.name for s in group)


def _timed(spec: StreamSpec, idx: int, progress: Optional[ReadProgress], max_line_bytes: int,
           blank_lines: bool) -> Iterator[tuple[int, int, Any]]:
    """The records of a stream as ``(time, idx, record)``, in the stream's order.

    A recording line's time is the running maximum of the receive times
    (see :func:`_merge_ws`), an archive row's and a Feather kline's their own.
    The files of the stream are merged in time order, ties in path order
    (:func:`heapq.merge` is stable).
    """
    if spec.fmt == "ws":
        c = -1
        for block in _merge_ws(spec.files, progress=progress, max_line=max_line_bytes, blank=blank_lines):
            for ln in block:
                t = line_ts(ln)
                c = t if t > c else c
                yield (c, idx, ln)
        return
    its = [
        _feather_rows(path, idx, progress) if spec.fmt == "kline_rows" else _csv_rows(path, idx, spec.fmt, progress)
        for path in spec.files
    ]
    yield from its[0] if len(its) == 1 else heapq.merge(*its, key=_time)


def _time(r: tuple[int, int, Any]) -> int:
    return r[0]


def read_streams(specs: Sequence[StreamSpec], skip: int = 0, progress: Optional[ReadProgress] = None,
                 max_line_bytes: int = MAX_LINE_BYTES, blank_lines: bool = False,
                 block: int = 4096) -> Iterator[tuple[int, list]]:
    """Yield the records of several streams merged in time order, after the first ``skip``.

    Records come in runs of one stream: ``(index of the stream in specs,
    records)``, at most ``block`` records each. One stream is read as
    :func:`read_stream` reads it; several are merged by record time (see
    :func:`_timed`), ties broken by stream order, so the merge is
    deterministic and ``skip`` (records of the merge) resumes it exactly.

    >>> specs = group_streams(["tests/data/fixtures/binance-public-data"])  # klines, trades of one contract
    >>> [(i, len(recs)) for i, recs in read_streams(specs)]  # the trade came before the kline closed
    [(1, 1), (0, 1)]
    """
    if len(specs) == 1:
        for b in read_stream(specs[0], skip, progress, max_line_bytes, blank_lines):
            yield 0, b
        return
    its = [_timed(s, i, progress, max_line_bytes, blank_lines) for i, s in enumerate(specs)]
    merged = islice(heapq.merge(*its, key=lambda r: (r[0], r[1])), skip, None)
    run: list = []
    at = -1
    for _, i, rec in merged:
        if i != at or len(run) >= block:
            if run:
                yield at, run
            run, at = [], i
        run.append(rec)
    if run:
        yield at, run

"""Pure parsers from Binance wire formats to normalized events.

No I/O here: the functions take one raw record and return an event, an
:class:`~core.events.ErrorRecord`, or a *skip reason* (a ``str``) for input
that is valid but deliberately not used (mark-price streams, REST depth
snapshots, non-market futures trades, unfinished klines, blank lines). The
caller counts skips by reason, so nothing disappears silently.

The path of a chunk
-------------------
A chunk's parse goes down one path, and no module on it imports one above
it::

    sources.binance      parse_chunk -> one record: _parse_line (a recording line: the receive
                         time split off) or _parse_tick (a Kafka tick) -> parse_ws (the message
                         decoded, its symbol checked) -> the event builders
        sources.wire     tick_head (a Kafka tick's head), stream_symbol (a dead letter's
                         instrument): heads and fields read from the bytes, nothing decoded
            sources.symbols  valid_symbol, symbol_of_stream, coinm_contract: the symbol tables
                core.events  the records

:mod:`sources.binance_live` (the live collector's endpoints, streams and
settings) is not on it: it uses :mod:`sources.wire` as this module does.

JSON is decoded by :mod:`msgspec` straight into typed structs; Binance's
decimal strings become floats during decoding (``strict=False``), and missing
fields raise with the field's name, which becomes the error reason.

Hostile input
-------------
- **Any valid JSON is read.** Compact messages that start with
  ``{"stream":"`` (what Binance and the collector write) take a fast path
  that reads the stream name from the bytes; a message the fast path cannot
  vouch for (whitespace, another key order, escapes in the stream name, a
  symbol that does not match) is decoded exactly instead.
- **Symbols are checked.** The ``s`` field must be a Binance symbol
  (:mod:`sources.symbols`) and the stream name's symbol part (``btcusdt`` of
  ``btcusdt@trade``) must be the same symbol; otherwise the message is
  dead-lettered (``invalid symbol``, ``symbol ... does not match stream``).
- **Instruments are bounded** per source partition by :class:`ParseState`:
  an optional allow-list and at most ``max_instruments`` (:class:`ParseLimits`).
- **Lines are bounded**: a record longer than ``max_line_bytes`` (or a
  :class:`LongLine` from the reader) is dead-lettered with its first
  :data:`LONG_LINE_HEAD` bytes and its size.
- **Raw bytes are kept exactly** (:meth:`ErrorRecord.of`: UTF-8 text, else
  base64 with ``raw_base64``), and a dead letter names the instrument
  wherever its stream name gives one. A message that is not UTF-8 is not
  JSON and is dead-lettered, even where the bad bytes are in a field ticklet
  does not read.
- **Duplicate keys**: the last one counts (msgspec's rule), except that the
  fast path dispatches on the first ``"stream"``; the data's ``s`` must match
  that stream name either way.

Examples
--------
>>> line = (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,'
...         b'"s":"BTCUSDT","t":3735683259,"p":"61837.63","q":"0.02",'
...         b'"T":1723161255342,"m":true,"M":true}}')
>>> ev = parse_ws(1723161254087896568, line, "spot")
>>> ev.instrument, ev.price, ev.qty, ev.buyer_maker, ev.ts_event
('BTCUSDT', 61837.63, 0.02, True, 1723161255342000000)
>>> parse_ws(1, b'{"stream": "btcusdt@trade", "data": {"E": 1, "s": "BTCUSDT", "t": 1, "p": "2",'
...          b' "q": "1", "T": 1, "m": false}}', "spot").price  # whitespace: read exactly
2.0
>>> e = parse_ws(1, b'{"stream":"btcusdt@trade","data":{"p":"1"}}', "spot")
>>> e.reason, e.instrument
('missing field: Object missing required field `E` - at `$.data`', 'BTCUSDT')
>>> parse_ws(1, b'not json', "spot").reason[:8]
'bad json'
>>> parse_ws(1, b'{"lastUpdateId":1,"bids":[],"asks":[]}', "spot")
'depth_snapshot'
"""

from __future__ import annotations

import functools
import math
import operator
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import repeat
from typing import Annotated, Any, Optional, Union, cast

import msgspec
import numpy as np

from core.events import (
    MARKETS,
    BookSnapshot,
    DepthUpdate,
    ErrorRecord,
    Event,
    EventColumns,
    Kline,
    Level,
    Levels,
    Quote,
    RawChunk,
    Trade,
    instrument_key,
)
from sources.symbols import coinm_contract, symbol_of_stream, valid_symbol
from sources.wire import stream_symbol, tick_head

__all__ = [
    "EVENT_STREAMS",
    "IGNORED_STREAMS",
    "LONG_LINE_HEAD",
    "MAX_LINE_BYTES",
    "BadRow",
    "EventBatch",
    "LongLine",
    "ParseLimits",
    "ParseState",
    "Parsed",
    "message_of",
    "parse_chunk",
    "parse_csv_row",
    "parse_kline_row",
    "parse_snapshot",
    "parse_ws",
    "to_ns",
]

Parsed = Union[Event, ErrorRecord, str]

_INF = math.inf
_MS = 1_000_000
#: Receive times are int64 nanoseconds.
_MAX_TS = 1 << 63
#: Exchange times (ms) whose ns, plus one ms, still fit int64 (year 2262).
_MAX_MS = (1 << 63) // _MS - 2

# Validation happens inside msgspec's decoder (C): prices strictly positive and
# finite, quantities non-negative/positive and finite. NaN fails ``gt``.
_Px = Annotated[float, msgspec.Meta(gt=0.0, le=sys.float_info.max)]
_Qty = Annotated[float, msgspec.Meta(gt=0.0, le=sys.float_info.max)]
_Ms = Annotated[int, msgspec.Meta(ge=0, le=_MAX_MS)]

#: Longest input record parsed by default (``TICKLET_INPUT__MAX_LINE_BYTES``):
#: a recording line (without its line ending) or a Kafka message.
MAX_LINE_BYTES = 1 << 20
#: How many first bytes of an over-long record its dead letter keeps.
LONG_LINE_HEAD = 1024

#: Binance streams that are valid but carry nothing ticklet uses; they are
#: counted as skipped rather than dead-lettered.
IGNORED_STREAMS = frozenset(
    {
        "markPrice",
        "ticker",
        "miniTicker",
        "forceOrder",
        "depth5",
        "depth10",
        "depth20",
        "avgPrice",
        "contractInfo",
        "compositeIndex",
    }
)


#: A raw stream message's event type ``e`` -> the kind of its stream (spot
#: bookTicker data has no ``e``).
EVENT_STREAMS = {
    "trade": "trade", "aggTrade": "aggTrade", "bookTicker": "bookTicker", "depthUpdate": "depth",
    "kline": "kline", "markPriceUpdate": "markPrice", "24hrTicker": "ticker", "24hrMiniTicker": "miniTicker",
    "forceOrder": "forceOrder", "avgPrice": "avgPrice", "contractInfo": "contractInfo",
    "compositeIndex": "compositeIndex",
}


class _Envelope(msgspec.Struct, gc=False):
    stream: str
    data: msgspec.Raw


class _WsTrade(msgspec.Struct, gc=False):
    E: _Ms
    s: str
    t: int
    p: _Px
    q: _Qty
    T: _Ms
    m: bool
    X: Optional[str] = None  # futures only: MARKET, INSURANCE_FUND, ...


class _WsAggTrade(msgspec.Struct, gc=False):
    E: _Ms
    s: str
    a: int
    p: _Px
    q: _Qty
    T: _Ms
    m: bool


class _WsBookTicker(msgspec.Struct, gc=False):
    u: int
    s: str
    b: _Px
    B: _Qty
    a: _Px
    A: _Qty
    E: Optional[_Ms] = None  # futures only
    T: Optional[_Ms] = None


class _WsDepth(msgspec.Struct, gc=False):
    E: _Ms
    s: str
    U: int
    u: int
    b: tuple[Level, ...]
    a: tuple[Level, ...]
    pu: int = -1  # futures only
    T: Optional[_Ms] = None  # futures only: the matching engine's time, the diff's ts_event


class _WsKlineBody(msgspec.Struct, gc=False):
    t: _Ms
    T: _Ms
    o: float
    h: float
    l: float  # noqa: E741
    c: float
    v: float
    n: int
    x: bool
    q: float = 0.0
    V: float = 0.0
    Q: float = 0.0  # COIN-M: taker buy volume in coins (V: in contracts)


class _WsKline(msgspec.Struct, gc=False):
    E: _Ms
    s: str
    k: _WsKlineBody


_env_dec = msgspec.json.Decoder(_Envelope)


def _envelope(data_type: type) -> msgspec.json.Decoder:
    """A decoder of the whole ``{"stream", "data"}`` message with typed data."""
    env = msgspec.defstruct(f"_Env{data_type.__name__}", [("stream", str), ("data", data_type)], gc=False)
    return msgspec.json.Decoder(env, strict=False)


_book_env = _envelope(_WsBookTicker)
_trade_env = _envelope(_WsTrade)
_depth_env = _envelope(_WsDepth)
_agg_env = _envelope(_WsAggTrade)
_kline_env = _envelope(_WsKline)


# --- limits, per source partition ---------------------------------------------


@dataclass(frozen=True)
class ParseLimits:
    """What the parser admits (the ``TICKLET_INPUT__*`` settings).

    Parameters
    ----------
    instruments
        Allow-list of instruments (``BTCUSDT``, ``BTCUSDT-PERP``); None: any.
    max_instruments
        Most instruments admitted per source partition.
    max_line_bytes
        Longest record parsed; a longer one is dead-lettered.
    path
        How recording lines and Kafka ticks are parsed
        (``TICKLET_INPUT__PATH``): ``"message"``, each by :func:`parse_ws`
        (the reference); ``"chunk"``, each chunk first by the compiled
        scanner (:mod:`sources.columns`), the lines it leaves by
        :func:`parse_ws`. The events are the same.
    """

    instruments: Optional[frozenset[str]] = None
    max_instruments: int = 1000
    max_line_bytes: int = MAX_LINE_BYTES
    path: str = "message"


class ParseState:
    """The parser's state for one source partition (a replay stream or a Kafka partition).

    Its limits and the instruments admitted so far. An instrument is
    admitted when it is first seen if it is on the allow-list (when there is
    one) and fewer than ``max_instruments`` are admitted; it then stays
    admitted. Refused instruments are not remembered, so the state holds at
    most ``max_instruments`` names.

    >>> st = ParseState(ParseLimits(max_instruments=2))
    >>> [st.admit(i) for i in ("BTCUSDT", "ETHUSDT", "BTCUSDT")]
    ['', '', '']
    >>> st.admit("SOLUSDT")
    'too many instruments: SOLUSDT would be the 3rd of this input partition (TICKLET_INPUT__MAX_INSTRUMENTS=2)'
    >>> ParseState(ParseLimits(instruments=frozenset({"BTCUSDT"}))).admit("ETHUSDT")
    'instrument not allowed: ETHUSDT (TICKLET_INPUT__INSTRUMENTS)'
    """

    __slots__ = ("admitted", "limits")

    def __init__(self, limits: Optional[ParseLimits] = None) -> None:
        self.limits = limits if limits is not None else ParseLimits()
        self.admitted: set[str] = set()

    def admit(self, instrument: str) -> str:
        """Admit ``instrument``; return ``""``, or why it is refused."""
        if instrument in self.admitted:
            return ""
        lim = self.limits
        if lim.instruments is not None and instrument not in lim.instruments:
            return f"instrument not allowed: {instrument} (TICKLET_INPUT__INSTRUMENTS)"
        if len(self.admitted) >= lim.max_instruments:
            n = lim.max_instruments + 1
            nth = f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
            return (f"too many instruments: {instrument} would be the {nth} of this input partition "
                    f"(TICKLET_INPUT__MAX_INSTRUMENTS={lim.max_instruments})")
        self.admitted.add(instrument)
        return ""

    def __getstate__(self) -> tuple:
        return self.limits, self.admitted

    def __setstate__(self, state: tuple) -> None:
        self.limits, self.admitted = state


class LongLine(bytes):
    """The first bytes of an input line longer than the limit, with the line's whole size in bytes (``size``).

    The reader makes one instead of holding the line; :func:`parse_chunk`
    dead-letters it.

    >>> ln = LongLine(b"1723161254087891268 xxxx", 5_000_000)
    >>> ln.size, bytes(ln[:4])
    (5000000, b'1723')
    """

    size: int

    def __new__(cls, head: bytes, size: int) -> LongLine:
        """The line's first bytes ``head``, of a line of ``size`` bytes."""
        self = super().__new__(cls, head)
        self.size = size
        return self

    def __reduce__(self) -> tuple:
        return LongLine, (bytes(self), self.size)


class EventBatch(list):
    """Events of one instrument in input order, each with the input record it was parsed from.

    The records (``records``, in parallel) and their format (``fmt``) let a
    later stage dead-letter an event with its input as received
    (:func:`message_of`). Compares equal to the plain list. ``cols``: the
    events' fields in arrays (:class:`~core.events.EventColumns`), where the
    chunk path's decoder gave them; not pickled.
    """

    __slots__ = ("cols", "fmt", "records")

    def __init__(self, fmt: str = "", events: Iterable[Any] = (), records: Optional[list] = None,
                 cols: Optional[EventColumns] = None) -> None:
        super().__init__(events)
        self.fmt = fmt
        self.records: list = records if records is not None else []
        self.cols = cols

    def __reduce__(self) -> tuple:
        return _event_batch, (self.fmt, list(self), self.records)


def _event_batch(fmt: str, events: list, records: list) -> EventBatch:
    return EventBatch(fmt, events, records)


def message_of(record: object, fmt: str) -> bytes:
    """The message an input record carries, as received.

    A recording line after its receive timestamp (the whole line if it has
    none), a Kafka value, a CSV row joined with commas, a kline row's repr.

    >>> message_of(b'1723161254087891268 {"a":1}', "ws"), message_of(b'{"a":1}', "ws")
    (b'{"a":1}', b'{"a":1}')
    """
    if fmt == "ws":
        line: bytes = record  # type: ignore[assignment]
        sp = line.find(b" ", 0, 20)
        return line[sp + 1 :] if sp in (16, 19) and line[:sp].isdigit() else line
    if fmt == "kafka":
        return record  # type: ignore[return-value]
    if isinstance(record, list):
        return ",".join(record).encode()
    return repr(record).encode()


# --- websocket messages ---------------------------------------------------------


def _shown(text: str, n: int = 80) -> str:
    """``text`` for a reason: as it is when short and printable, else a shortened repr."""
    return text if len(text) <= n and text.isprintable() else repr(text[:n]) + ("..." if len(text) > n else "")


def _key_in(payload: bytes, market: str) -> str:
    """The instrument a message's stream name gives, or ``""``."""
    sym = stream_symbol(payload)
    return "" if sym is None else instrument_key(sym, market)


def _err(reason: str, payload: bytes, ts: int, key: str = "") -> ErrorRecord:
    return ErrorRecord.of("parse", reason, payload, key, ts)


def _invalid(ex: Exception, payload: bytes, ts: int, market: str) -> ErrorRecord:
    msg = str(ex)
    if isinstance(ex, msgspec.ValidationError):
        reason = f"missing field: {msg}" if "missing required" in msg else f"invalid field: {msg}"
    else:
        reason = f"bad json: {msg}"
    return _err(reason, payload, ts, _key_in(payload, market))


def _bad_px_qty(p: float, q: float) -> bool:
    # NaN fails every comparison, so it is caught here too.
    return not (0.0 < p < _INF and 0.0 < q < _INF)


def _kline_error(o: float, h: float, lo: float, c: float, v: float) -> str:
    for x in (o, h, lo, c):
        if not 0.0 < x < _INF:
            return "non-positive or non-finite price"
    if not 0.0 <= v < _INF:
        return "negative or non-finite volume"
    if h < max(o, c, lo) or lo > min(o, c, h):
        return "inconsistent high/low"
    return ""


# Builders of an event from a message's decoded data (symbol already checked).


# COIN-M messages count quantities in contracts of a fixed USD value
# (``coinm_contract``); the builders convert them to coins at the message's
# own price (a trade's, a quote side's, a depth level's), so that every event
# counts quantities in the base coin whatever the market. A symbol with "_"
# (a delivery or COIN-M contract) or a COIN-M input takes that slower path.


def _in_coins(ev: Union[Trade, Quote, DepthUpdate, BookSnapshot], s: str, market: str, payload: bytes) -> Parsed:
    """``ev`` (of symbol ``s``), its quantities in coins where they count contracts (a COIN-M contract's).

    Or the dead letter of a symbol that cannot be read in ``market``.
    """
    usd = coinm_contract(s, market)
    if isinstance(usd, str):
        return _err(usd, payload, ev.ts_recv, ev.instrument)
    if not usd:
        return ev
    if type(ev) is Trade:
        return msgspec.structs.replace(ev, qty=ev.qty * usd / ev.price)
    if type(ev) is Quote:
        return msgspec.structs.replace(ev, bid_qty=ev.bid_qty * usd / ev.bid, ask_qty=ev.ask_qty * usd / ev.ask)
    return msgspec.structs.replace(ev, bids=_coins(ev.bids, usd), asks=_coins(ev.asks, usd))  # type: ignore[union-attr]


def _coins(levels: tuple[Level, ...], usd: float) -> tuple[Level, ...]:
    return tuple([Level(lv.price, lv.qty * usd / lv.price) for lv in levels])


def _quote(d: _WsBookTicker, ts: int, market: str, payload: bytes) -> Parsed:
    s = d.s
    key = instrument_key(s, market)
    b, a = d.b, d.a
    if b >= a:
        return _err(f"crossed quote: bid {b} >= ask {a}", payload, ts, key)
    q = Quote(key, ts, None if d.E is None else d.E * _MS, b, d.B, a, d.A, d.u)
    return _in_coins(q, s, market, payload) if "_" in s or market == "coinm" else q


def _trade(d: _WsTrade, ts: int, market: str, payload: bytes) -> Parsed:
    if d.X is not None and d.X != "MARKET":
        return "non_market_trade"
    s = d.s
    t = Trade(s if market == "spot" else instrument_key(s, market), ts, d.T * _MS, d.p, d.q, d.m, d.t)
    return _in_coins(t, s, market, payload) if "_" in s or market == "coinm" else t


def _depth(d: _WsDepth, ts: int, market: str, payload: bytes) -> Parsed:
    s = d.s
    u = DepthUpdate(s if market == "spot" else instrument_key(s, market), ts, (d.E if d.T is None else d.T) * _MS,
                    d.U, d.u, d.pu, d.b, d.a)
    return _in_coins(u, s, market, payload) if "_" in s or market == "coinm" else u


def _agg(d: _WsAggTrade, ts: int, market: str, payload: bytes) -> Parsed:
    s = d.s
    t = Trade(instrument_key(s, market), ts, d.T * _MS, d.p, d.q, d.m, d.a, True)
    return _in_coins(t, s, market, payload) if "_" in s or market == "coinm" else t


def _kline(d: _WsKline, ts: int, market: str, payload: bytes) -> Parsed:
    k = d.k
    key = instrument_key(d.s, market)
    if not k.x:
        return "open_kline"
    why = _kline_error(k.o, k.h, k.l, k.c, k.v)
    if why:
        return _err(why, payload, ts, key)
    v, qv, tb = k.v, k.q, k.V
    if "_" in d.s or market == "coinm":
        usd = coinm_contract(d.s, market)
        if isinstance(usd, str):
            return _err(usd, payload, ts, key)
        if usd:  # COIN-M: v and V count contracts, q and Q coins
            v, qv, tb = k.q, k.v * usd, k.Q
    return Kline(key, ts, k.t * _MS, (k.T + 1) * _MS, k.o, k.h, k.l, k.c, v, qv, k.n, tb, True)


#: ``s`` -> its lower case followed by ``@``, as bytes, for symbols that passed
#: :func:`valid_symbol` and matched their stream name (a memo of the fast
#: path; bounded).
_LOWER: dict[str, bytes] = {}
_LOWER_MAX = 4096
#: The last ``(lower case + "@", symbol)`` the fast path matched.
_LAST: tuple[bytes, Optional[str]] = (b'"', None)


def parse_ws(ts: int, payload: bytes, market: str, at: int = -1) -> Parsed:
    """Parse one combined-stream message received at ``ts`` (ns).

    Parameters
    ----------
    ts
        Receive time in ns since the epoch.
    payload
        The JSON exactly as received.
    market
        ``"spot"`` or ``"usdm"``; decides the instrument key.
    at
        Where the stream name starts, when the caller knows that the
        message has a top-level ``"stream":"`` key just before it (the
        Kafka wire format); by default the fast path takes messages that
        start with ``{"stream":"``.

    Returns
    -------
    An event, an :class:`ErrorRecord`, or a skip reason.

    Examples
    --------
    >>> q = parse_ws(5, b'{"stream":"btcusdt@bookTicker","data":{"u":9,"s":"BTCUSDT",'
    ...              b'"b":"10.0","B":"1","a":"9.5","A":"2"}}', "spot")
    >>> q.reason
    'crossed quote: bid 10.0 >= ask 9.5'
    >>> parse_ws(5, b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT",'
    ...          b'"t":1,"p":"NaN","q":"1","T":1,"m":false}}', "spot").reason
    'invalid field: Expected `float` > 0.0 - at `$.data.p`'
    >>> parse_ws(5, b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT",'
    ...          b'"t":1,"p":"1","q":"1","T":1,"m":false,"X":"INSURANCE_FUND"}}', "usdm")
    'non_market_trade'
    >>> parse_ws(5, b'{"stream":"btcusdt@bogus","data":{}}', "spot").reason
    'unknown stream: btcusdt@bogus'
    >>> parse_ws(5, b'{"stream":"ethusdt@trade","data":{"E":1,"s":"BTCUSDT","t":1,"p":"1",'
    ...          b'"q":"1","T":1,"m":false}}', "spot").reason
    'symbol BTCUSDT does not match stream ethusdt@trade'
    """
    # The stream name is read from the bytes, then the whole message is
    # decoded in one pass by the decoder of that stream's type (key order is
    # free). Anything the bytes do not vouch for goes to _parse_exact.
    if not payload.isascii() and not _utf8(payload):
        return _not_utf8(payload, ts, market)
    if at < 0:
        if not payload.startswith(b'{"stream":"'):
            return _parse_exact(ts, payload, market)
        at = 11
    # The stream name must be the data's symbol in lower case, then "@" and
    # the kind: checked against the last symbol seen (one startswith, one
    # string comparison), else against the memo of valid symbols.
    last_low, last_s = _LAST
    if payload.startswith(last_low, at):
        k = at + len(last_low)
    else:
        last_s = None
        sep = payload.find(b"@", at, at + 64)
        if sep < 0:
            return _parse_exact(ts, payload, market)
        k = sep + 1
    dec: msgspec.json.Decoder[Any]  # the decoder of the stream's message type
    make: Callable[[Any, int, str, bytes], Parsed]  # and the builder of its event
    try:
        if payload.startswith(b'bookTicker"', k):  # most messages: inlined
            d = _book_env.decode(payload).data
            if d.s != last_s:  # the last symbol is never a contract's (_same_symbol)
                if not _same_symbol(d.s, payload, at):
                    return _parse_exact(ts, payload, market)
                if "_" in d.s:  # delivery and COIN-M contracts
                    return _quote(d, ts, market, payload)
            if market == "coinm":
                return _quote(d, ts, market, payload)
            key = d.s if market == "spot" else instrument_key(d.s, market)
            b, a = d.b, d.a
            if b >= a:
                return _err(f"crossed quote: bid {b} >= ask {a}", payload, ts, key)
            return Quote(key, ts, None if d.E is None else d.E * _MS, b, d.B, a, d.A, d.u)
        if payload.startswith(b'trade"', k):
            dec, make = _trade_env, _trade
        elif payload.startswith(b"depth", k) and (payload.startswith(b'"', k + 5) or payload.startswith(b"@", k + 5)):
            dec, make = _depth_env, _depth
        elif payload.startswith(b'aggTrade"', k):
            dec, make = _agg_env, _agg
        elif payload.startswith(b"kline_", k):
            dec, make = _kline_env, _kline
        else:
            return _parse_exact(ts, payload, market)
        d = dec.decode(payload).data
    except (msgspec.ValidationError, msgspec.DecodeError) as ex:
        return _invalid(ex, payload, ts, market)
    if d.s != last_s and not _same_symbol(d.s, payload, at):
        return _parse_exact(ts, payload, market)
    return make(d, ts, market, payload)


def _same_symbol(s: str, payload: bytes, at: int) -> bool:
    """Whether the stream name at ``at`` is ``s`` in lower case followed by ``@``.

    ``s`` is one of the memo's valid symbols; it becomes the last symbol
    seen, unless it is a contract's (with ``_``), whose messages take their
    builders' slower path.
    """
    global _LAST
    low = _LOWER.get(s)
    if low is None or not payload.startswith(low, at):
        return False
    if "_" not in s:
        _LAST = (low, s)
    return True


def _parse_exact(ts: int, payload: bytes, market: str) -> Parsed:
    """:func:`parse_ws` for any JSON layout: the stream name is decoded, not read from the bytes.

    The symbol is checked too.
    """
    try:
        stream = _env_dec.decode(payload).stream
    except msgspec.ValidationError as ex:
        if payload.find(b'"lastUpdateId"') >= 0:
            return _snapshot_skip(ts, payload)
        if "`stream`" in str(ex):
            return _parse_raw(ts, payload, market)
        return _invalid(ex, payload, ts, market)
    except msgspec.DecodeError as ex:
        return _invalid(ex, payload, ts, market)
    name, _, kind = stream.partition("@")
    sym = symbol_of_stream(name)
    key = "" if sym is None else instrument_key(sym, market)
    dec: msgspec.json.Decoder[Any]  # the decoder of the stream's message type
    make: Callable[[Any, int, str, bytes], Parsed]  # and the builder of its event
    if kind == "bookTicker":
        dec, make = _book_env, _quote
    elif kind == "trade":
        dec, make = _trade_env, _trade
    elif kind == "depth" or kind.startswith("depth@"):
        dec, make = _depth_env, _depth
    elif kind == "aggTrade":
        dec, make = _agg_env, _agg
    elif kind.startswith("kline_"):
        dec, make = _kline_env, _kline
    else:
        base = kind.split("@", 1)[0]
        if base in IGNORED_STREAMS:
            return base
        return _err(f"unknown stream: {_shown(stream)}", payload, ts, key)
    try:
        d = dec.decode(payload).data
    except (msgspec.ValidationError, msgspec.DecodeError) as ex:
        return _invalid(ex, payload, ts, market)
    s = d.s
    if not valid_symbol(s):
        return _err(f"invalid symbol: {_shown(repr(s))}", payload, ts, key)
    if sym != s:
        return _err(f"symbol {s} does not match stream {_shown(stream)}", payload, ts, key)
    if s not in _LOWER:
        if len(_LOWER) >= _LOWER_MAX:
            _LOWER.clear()
        _LOWER[s] = s.lower().encode() + b"@"
    return make(d, ts, market, payload)


class _RawHead(msgspec.Struct, gc=False):
    e: Optional[str] = None  # the event type; spot bookTicker has none


_raw_head = msgspec.json.Decoder(_RawHead)
#: A raw (not combined) stream message's event type -> its decoder and builder.
_RAW: dict[str, tuple[msgspec.json.Decoder, Callable[..., Parsed]]] = {
    "trade": (msgspec.json.Decoder(_WsTrade, strict=False), _trade),
    "aggTrade": (msgspec.json.Decoder(_WsAggTrade, strict=False), _agg),
    "bookTicker": (msgspec.json.Decoder(_WsBookTicker, strict=False), _quote),
    "depthUpdate": (msgspec.json.Decoder(_WsDepth, strict=False), _depth),
    "kline": (msgspec.json.Decoder(_WsKline, strict=False), _kline),
}
#: Event types of the streams in :data:`IGNORED_STREAMS` -> their stream kind (a skip reason).
_RAW_IGNORED = {e: k for e, k in EVENT_STREAMS.items() if k in IGNORED_STREAMS}
_COMBINED = 'not a Binance stream message: no "stream" (the combined-stream form is {"stream":"<symbol>@<kind>",' \
    '"data":{...}}) nor an event type "e"'


def _parse_raw(ts: int, payload: bytes, market: str) -> Parsed:
    """A raw stream's message (``/ws/<symbol>@<kind>``: the data alone), told by its event type ``e``.

    It comes without the combined stream's envelope; spot bookTicker data,
    which has no event type, is told by its fields.
    """
    try:
        e = _raw_head.decode(payload).e
    except (msgspec.ValidationError, msgspec.DecodeError) as ex:
        return _invalid(ex, payload, ts, market)
    if e is None:
        dec, make = _RAW["bookTicker"]
        try:
            d = dec.decode(payload)
        except msgspec.ValidationError:
            return _err(_COMBINED, payload, ts)
    else:
        kind = _RAW.get(e)
        if kind is None:
            if e in _RAW_IGNORED:
                return _RAW_IGNORED[e]
            return _err(f"unknown event type: {_shown(e)} (a raw stream message without a \"stream\")", payload, ts)
        dec, make = kind
        try:
            d = dec.decode(payload)
        except msgspec.ValidationError as ex:
            return _invalid(ex, payload, ts, market)
    if not valid_symbol(d.s):
        return _err(f"invalid symbol: {_shown(repr(d.s))}", payload, ts)
    return make(d, ts, market, payload)


def _utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _not_utf8(payload: bytes, ts: int, market: str) -> ErrorRecord:
    """JSON is UTF-8: the whole message is checked here.

    msgspec checks the strings it decodes, not those of the fields it skips.
    """
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as ex:
        return _err(f"bad json: invalid UTF-8 at byte {ex.start}", payload, ts, _key_in(payload, market))
    raise AssertionError("valid UTF-8")  # pragma: no cover


def _snapshot_skip(ts: int, payload: bytes) -> Parsed:
    """A REST depth snapshot in a recording: skipped if it is one."""
    try:
        _rest_dec.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as ex:
        return _err(f"invalid snapshot: {ex}", payload, ts)
    return _SNAPSHOT


def to_ns(t: int) -> int:
    """Convert an epoch timestamp in s, ms, µs or ns to ns, by digit count.

    Binance archives switched from ms to µs in 2025; recordings use µs or ns.

    >>> to_ns(1723161255), to_ns(1723161255342), to_ns(1723161255342123)
    (1723161255000000000, 1723161255342000000, 1723161255342123000)
    >>> to_ns(1723161255342123456)
    1723161255342123456
    """
    if t >= 10**17:
        return t
    if t >= 10**14:
        return t * 1_000
    if t >= 10**11:
        return t * 1_000_000
    return t * 1_000_000_000


def _bool(s: str) -> bool:
    s = s.strip().lower()
    if s in ("true", "1"):
        return True
    if s in ("false", "0"):
        return False
    raise ValueError(f"not a boolean: {s!r}")


def parse_csv_row(row: list[str], kind: str, symbol: str, market: str) -> Parsed:
    """Parse one row of a Binance public-data CSV file.

    ``kind`` is ``"trades"``, ``"aggTrades"`` or ``"klines"``. A header row is
    skipped. Timestamps in ms or µs are both accepted.

    >>> t = parse_csv_row(["3735683259", "61837.63", "0.02", "1236.75", "1723161255342",
    ...                    "True", "True"], "trades", "BTCUSDT", "spot")
    >>> t.price, t.ts_recv, t.buyer_maker
    (61837.63, 1723161255342000000, True)
    >>> parse_csv_row(["id", "price"], "trades", "BTCUSDT", "spot")
    'header'
    >>> parse_csv_row(["1", "-5", "1", "1", "1723161255342", "True"], "trades", "X", "spot").reason
    'non-positive or non-finite price/quantity'

    COIN-M archives count contracts; a trade's quantity is its ``base_qty``
    column, an aggTrade's its contracts' worth in coins, a kline's volume its
    ``base_asset_volume`` (Binance's public-data README's sample rows):

    >>> t = parse_csv_row(["28457", "9635.0", "1", "0.01037883", "1591250192508", "true"], "trades",
    ...                   "BTCUSD_PERP", "coinm")
    >>> t.instrument, t.qty
    ('BTCUSD_PERP', 0.01037883)
    """
    key = instrument_key(symbol, market)
    if type(row) is BadRow:
        return _row_err(f"bad {kind} row: {row.reason}", row, key, 0)
    if not row or not row[0].strip().lstrip("-").isdigit():
        return "header"
    if "_" in symbol or market == "coinm":  # delivery and COIN-M contracts
        usd = coinm_contract(symbol, market)
        if isinstance(usd, str):
            return _row_err(usd, row, key, 0)
        if usd:
            try:
                return _csv_row(_coinm_row(row, kind, usd), kind, key, row)
            except (ValueError, IndexError, ZeroDivisionError) as ex:
                return _row_err(f"bad {kind} row: {ex}", row, key, 0)
    return _csv_row(row, kind, key, row)


def _csv_row(row: list[str], kind: str, key: str, raw: list[str]) -> Parsed:
    """A data row of a spot or USD-M archive (or one of a COIN-M archive rewritten in coins, :func:`_coinm_row`).

    ``raw`` is the row as read, for its dead letter.
    """
    try:
        cols = _TRADE_COLUMNS.get(kind)
        if cols is not None:
            return _csv_trade(row, key, *cols, raw, kind == "aggTrades")
        if kind == "klines":
            o, h, lo, c, v = (float(x) for x in row[1:6])
            open_ns = to_ns(int(row[0]))
            close_ns = to_ns(int(row[6]) + 1)
            why = _kline_error(o, h, lo, c, v)
            if why:
                return _row_err(why, raw, key, close_ns)
            return Kline(
                key, close_ns, open_ns, close_ns, o, h, lo, c, v,
                float(row[7]), int(row[8]), float(row[9]), True,
            )
    except (ValueError, IndexError) as ex:
        return _row_err(f"bad {kind} row: {ex}", raw, key, 0)
    return _row_err(f"unknown csv kind: {kind}", raw, key, 0)


def _coinm_row(row: list[str], kind: str, usd: float) -> list[str]:
    """A row of a COIN-M archive (contracts of ``usd`` each) with its quantities in coins, as a USD-M row.

    The row gets the columns of a USD-M row. COIN-M trades are ``id, price,
    qty, base_qty, time, is_buyer_maker`` (the quantity is ``base_qty``);
    aggTrades are USD-M's, the quantity in contracts; klines ``open_time,
    open, high, low, close, volume, close_time, base_asset_volume, count,
    taker_buy_volume, taker_buy_base_asset_volume, ignore``, volumes in
    contracts, base ones in coins (the quote volume is the contracts' USD).
    """
    if kind == "trades":
        return [row[0], row[1], row[3], *row[3:]]
    if kind == "aggTrades":
        return [row[0], row[1], repr(float(row[2]) * usd / float(row[1])), *row[3:]]
    if kind == "klines":
        return [*row[:5], row[7], row[6], repr(float(row[5]) * usd), row[8], row[10]]
    return row


#: Columns of the time and of the buyer-maker flag in each trade CSV kind; the
#: id, price and quantity are columns 0, 1 and 2 in both.
_TRADE_COLUMNS = {"trades": (4, 5), "aggTrades": (5, 6)}


def _csv_trade(row: list[str], key: str, time_col: int, maker_col: int, raw: list[str], agg: bool) -> Parsed:
    """A row of a trades or aggTrades (``agg``) CSV file (``id, price, qty, ...``).

    The time and buyer-maker flag are in the given columns.
    """
    p, q = float(row[1]), float(row[2])
    ts = to_ns(int(row[time_col]))
    if _bad_px_qty(p, q):
        return _row_err("non-positive or non-finite price/quantity", raw, key, ts)
    return Trade(key, ts, ts, p, q, _bool(row[maker_col]), int(row[0]), agg)


def _row_err(reason: str, row: list[str], key: str, ts: int) -> ErrorRecord:
    # bytes that are not UTF-8 were read as surrogates: back to the bytes
    return ErrorRecord.of("parse", reason, ",".join(row).encode("utf-8", "surrogateescape"), key, ts)


class BadRow(list):
    """A CSV row the csv module could not read (a field over its size limit...), with why; the parser dead-letters it.

    >>> parse_csv_row(BadRow("field larger than field limit (131072)"), "trades", "BTCUSDT", "spot").reason
    'bad trades row: field larger than field limit (131072)'
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def __reduce__(self) -> tuple:
        return BadRow, (self.reason,)


def parse_kline_row(row: tuple, interval_ns: int, symbol: str, market: str) -> Parsed:
    """Parse ``(open_time_ns, open, high, low, close, volume)``, e.g. a Feather kline row, into a closed :class:`Kline`.

    >>> k = parse_kline_row((0, 1.0, 2.0, 0.5, 1.5, 10.0), 60_000_000_000, "BTCUSDT", "spot")
    >>> k.ts_close, k.close
    (60000000000, 1.5)
    >>> parse_kline_row((0, 1.0, 0.9, 0.5, 1.5, 10.0), 60, "BTCUSDT", "spot").reason
    'inconsistent high/low'
    """
    key = instrument_key(symbol, market)
    t, o, h, lo, c, v = row
    close_ns = t + interval_ns
    why = _kline_error(o, h, lo, c, v)
    if why:
        return ErrorRecord("parse", why, repr(row), key, close_ns)
    return Kline(key, close_ns, t, close_ns, o, h, lo, c, v, 0.0, 0, 0.0, True)

def _parse_line(line: bytes, market: str) -> Parsed:
    """Split ``b"<receive ts> <json>"`` and parse the message; the receive time is 16 digits (µs) or 19 (ns)."""
    sp = line.find(b" ", 0, 20)
    if sp == 19 or sp == 16:
        head = line[:sp]
        if head.isdigit():
            ts = int(head) if sp == 19 else int(head) * 1000
            if ts < 9223372036854775808:  # int64 ns
                return parse_ws(ts, line[sp + 1 :], market)
    return _no_receive_time(line, sp, market)


def _no_receive_time(line: bytes, sp: int, market: str) -> Parsed:
    if not line.strip():
        return "blank_line"
    head = line[:sp] if sp > 0 else b""
    if head.isdigit():
        why = "bad receive timestamp: " + (f"{sp} digits (16: µs, 19: ns)" if sp != 19 else "beyond int64 ns")
    else:
        why = "missing receive timestamp"
    return _err(why, line, 0, _key_in(line, market))


def _parse_tick(value: bytes) -> Parsed:
    """Parse a tick in ticklet's Kafka wire format (:mod:`sources.wire`)."""
    head = tick_head(value)
    if head is None:
        return _err("no ts_recv/market head (not a ticklet tick)", value, 0)
    ts, market, end = head
    if market not in MARKETS:
        return _err(f"unknown market: {_shown(repr(market))}", value, ts if 0 <= ts < _MAX_TS else 0)
    if not 0 <= ts < _MAX_TS:
        return _err(f"bad receive timestamp: {ts}", value, 0, _key_in(value, market))
    at = end + 11 if end and value.startswith(b',"stream":"', end) else -1
    return parse_ws(ts, value, market, at)


def _too_long(record: bytes, fmt: str, market: str, cap: int) -> ErrorRecord:
    """The dead letter of a record longer than ``cap`` bytes (or of a :class:`LongLine`).

    It holds the record's first bytes, its size, and the receive time and
    instrument its head gives.
    """
    size = record.size if type(record) is LongLine else len(record)
    head = bytes(record[: min(LONG_LINE_HEAD, cap)])
    ts, key, raw = 0, "", head
    if fmt == "ws":
        sp = head.find(b" ", 0, 20)
        if sp in (16, 19) and head[:sp].isdigit():
            t = int(head[:sp]) * (1 if sp == 19 else 1000)
            ts, raw, size = (t, head[sp + 1 :], size - sp - 1) if t < _MAX_TS else (0, head, size)
        key = _key_in(raw, market)
    else:
        h = tick_head(head)
        if h is not None and h[1] in MARKETS and 0 <= h[0] < _MAX_TS:
            ts, key = h[0], _key_in(head, h[1])
    what = "line" if fmt == "ws" else "message"
    return ErrorRecord.of("read_ticks", f"{what} too long: {size} bytes, more than the {cap} allowed "
                          "(TICKLET_INPUT__MAX_LINE_BYTES)", raw, key, ts, size)


def _parse_columns(recs: list, market: str, symbol: str) -> tuple[list[Parsed], Any]:
    """:func:`_parse_line` of each line of ``recs``, by the compiled scanner first (:mod:`sources.columns`).

    The best bid/ask, trade and depth lines of ``symbol`` in Binance's own
    layouts are decoded by the scanner, the others by :func:`_parse_line`:
    the same events. Also the scanner's columns.
    """
    from sources.columns import scan  # numba loads only when a chunk goes this path

    key = symbol if market == "spot" else instrument_key(symbol, market)
    c = scan(recs, symbol)
    return _events_of(c, recs, functools.partial(_parse_line, market=market), key), c


def _parse_tick_columns(recs: list) -> tuple[list[Parsed], Any]:
    """:func:`_parse_tick` of each Kafka message of ``recs``, by the compiled scanner first (:mod:`sources.columns`).

    The best bid/ask and trade ticks of spot and USD-M in :mod:`sources.wire`'s
    compact layout are decoded by the scanner, the others by
    :func:`_parse_tick`: the same events. Also the scanner's columns.
    """
    from sources.columns import scan_ticks

    keys: dict[tuple[bytes, int], str] = {}

    def key_of(raw: bytes, m: int) -> str:
        key = keys.get((raw, m))
        if key is None:
            sym = raw.decode()
            key = keys[(raw, m)] = sym if m == 0 else instrument_key(sym, "usdm")
        return key

    c = scan_ticks(recs)
    return _events_of(c, recs, _parse_tick, key_of), c


def _columns_of(c: Any, rows: Optional[list[int]]) -> EventColumns:
    """The scanner's columns ``c`` at ``rows`` (all of them: None), as :class:`~core.events.EventColumns`."""
    if rows is None:
        return EventColumns(c.kind, c.ts_recv, c.ts_event, c.ids, c.values, c.first_ids, c.prev_ids, c.levels,
                            c.lv_px, c.lv_qty)
    at = np.array(rows, dtype=np.int64)
    return EventColumns(c.kind[at], c.ts_recv[at], c.ts_event[at], c.ids[at], c.values[at], c.first_ids[at],
                        c.prev_ids[at], c.levels[at], c.lv_px, c.lv_qty)


def _events_of(c: Any, recs: list, one: Callable[[bytes], Parsed],
               key_of: Union[str, Callable[[bytes, int], str]]) -> list[Parsed]:
    """Each record's event: from the scanner's columns ``c`` where it took the record, else ``one(record)``.

    ``key_of``: the instrument of every row, or ``key_of(symbol bytes,
    market code)`` the instrument of a row.
    """
    kinds = c.kind
    px, qty = c.lv_px, c.lv_qty  # a depth diff's levels stay in the chunk's arrays
    at = np.flatnonzero(kinds == 0)
    made_all: list[Parsed] = [one(recs[i]) for i in at.tolist()]  # the records the scanner left to the parser
    order = [at]
    for k in (1, 2, 3):  # each kind's events made by one C-level map over its columns
        at = np.flatnonzero(kinds == k)
        if not len(at):
            continue
        order.append(at)
        rows = at.tolist()
        if isinstance(key_of, str):
            keys: list[str] = [key_of] * len(rows)
        else:
            data, sym_at, sym_len, market = c.data, c.sym_at[at].tolist(), c.sym_len[at].tolist(), c.market[at].tolist()
            keys = [key_of(data[a:a + n], m) for a, n, m in zip(sym_at, sym_len, market, strict=True)]
        t_recv, t_event, ids, v = c.ts_recv[at].tolist(), c.ts_event[at], c.ids[at].tolist(), c.values[at]
        if k == 1:  # a spot quote has no exchange time (-1 in the column)
            te = t_event.tolist() if t_event.min() >= 0 else [None if t < 0 else t for t in t_event.tolist()]
            made: Iterable[Event] = map(Quote, keys, t_recv, te, *v.T.tolist(), ids)
        elif k == 2:
            made = map(Trade, keys, t_recv, t_event.tolist(), v[:, 0].tolist(), v[:, 1].tolist(),
                       (v[:, 2] != 0.0).tolist(), ids)
        else:
            lo, mid, hi = c.levels[at].T.tolist()
            m = len(rows)
            made = map(DepthUpdate, keys, t_recv, t_event.tolist(), c.first_ids[at].tolist(), ids,
                       c.prev_ids[at].tolist(),  # the levels read as the tuples the parser makes
                       map(Levels, repeat(px, m), repeat(qty, m), lo, mid, v[:, 0].tolist()),
                       map(Levels, repeat(px, m), repeat(qty, m), mid, hi, v[:, 1].tolist()))
        made_all.extend(made)
    if len(made_all) < 2:
        return made_all
    where = np.empty(len(made_all), np.int64)  # each record's event: its place in made_all
    where[np.concatenate(order)] = np.arange(len(made_all))
    return list(operator.itemgetter(*where.tolist())(made_all))  # in the records' order, by one C-level gather


def parse_chunk(chunk: RawChunk, state: Optional[ParseState] = None
                ) -> tuple[dict[str, EventBatch], list[ErrorRecord], dict[str, int]]:
    """Parse a :class:`RawChunk` into events grouped by instrument key (in input order), dead letters, and counts.

    ``state`` is the source partition's :class:`ParseState` (its limits and
    admitted instruments; updated in place); by default a fresh one with
    the default limits, for this chunk alone. The events of each instrument
    come as an :class:`EventBatch` (with their input records).

    The counts, by outcome, hold ``"input_records"`` (records in the
    chunk), ``"ticks"`` (events produced), ``"parse_errors"`` (records
    dead-lettered here, if any), ``"instruments_refused"`` (events of them
    dead-lettered for their instrument, if any) and one
    ``"skipped_<reason>"`` entry per skip reason, so ``input_records ==
    ticks + parse_errors + the skips``. Dead letters are also counted where
    they are written.

    >>> rc = RawChunk("ws", "spot", "BTCUSDT", [
    ...     b'1723161254087891268 {"stream":"btcusdt@bookTicker","data":{"u":9,"s":"BTCUSDT",'
    ...     b'"b":"9.0","B":"1","a":"9.5","A":"2"}}',
    ...     b'1723161254087891269 garbage',
    ...     b'',
    ...     b'1723161254087891270 {"stream":"btcusdt@markPrice@1s","data":{}}'])
    >>> by_key, errors, counts = parse_chunk(rc)
    >>> [type(e).__name__ for e in by_key["BTCUSDT"]], errors[0].raw
    (['Quote'], 'garbage')
    >>> counts
    {'input_records': 4, 'ticks': 1, 'parse_errors': 1, 'skipped_blank_line': 1, 'skipped_markPrice': 1}
    """
    if state is None:
        state = ParseState()
    fmt, market, symbol = chunk.fmt, chunk.market, chunk.symbol
    recs = chunk.records
    cap = state.limits.max_line_bytes
    cols = None  # the scanner's columns, on the chunk path
    if fmt == "ws" or fmt == "kafka":
        # the scanner checks the symbol itself (a chunk's that the parser would refuse: no line taken)
        chunked = state.limits.path == "chunk" and (fmt == "kafka" or market in ("spot", "usdm"))
        if recs and max(map(len, recs)) > cap:  # a LongLine is caught below
            results = [_too_long(r, fmt, market, cap) if len(r) > cap
                       else _parse_line(r, market) if fmt == "ws" else _parse_tick(r) for r in recs]
        elif chunked:
            results, cols = _parse_columns(recs, market, symbol) if fmt == "ws" else _parse_tick_columns(recs)
        elif fmt == "ws":
            results = [_parse_line(r, market) for r in recs]
        else:
            results = [_parse_tick(r) for r in recs]
        if _SNAPSHOT in results:  # rare: a REST depth snapshot, the start of a book (operators.depth)
            results = _snapshots(results, recs, fmt, market, symbol)
    elif fmt == "kline_rows":
        iv = chunk.interval_ns
        results = [parse_kline_row(r, iv, symbol, market) for r in recs]
    else:
        results = [parse_csv_row(r, fmt, symbol, market) for r in recs]
    events = EventBatch(fmt)
    errors: list[ErrorRecord] = []
    skipped: dict[str, int] = {}
    add = events.append
    for r in results:
        cls = type(r)
        if cls is str:  # cast: a type kept aside narrows nothing (isinstance would, at a cost per event)
            reason = cast(str, r)
            skipped[reason] = skipped.get(reason, 0) + 1
        elif cls is ErrorRecord:
            errors.append(cast(ErrorRecord, r))
        else:
            add(r)
    n = len(events)
    rows: Optional[list[int]] = None  # the records of the events, by index (None: all)
    if n == len(recs):  # every record an event: the records are the chunk's
        raws = events.records = recs
    else:
        rows = [i for i, r in enumerate(results) if type(r) is not str and type(r) is not ErrorRecord]
        raws = events.records = [recs[i] for i in rows]
        if errors and fmt in ("ws", "kafka"):  # a LongLine's dead letter says so
            errors = [_too_long(rec, fmt, market, cap) if type(rec) is LongLine else r
                      for r, rec in zip(results, recs, strict=True) if type(r) is ErrorRecord]
    by_key: dict[str, EventBatch] = {}
    if n and events[0].instrument == events[-1].instrument and len({e.instrument for e in events}) == 1:
        by_key[events[0].instrument] = events
        if cols is not None:
            events.cols = _columns_of(cols, rows)
    else:
        at: dict[str, list[int]] = {}
        for i, e, rec in zip(range(n) if rows is None else rows, events, raws, strict=True):
            b = by_key.get(e.instrument)
            if b is None:
                b = by_key[e.instrument] = EventBatch(fmt)
                at[e.instrument] = []
            b.append(e)
            b.records.append(rec)
            at[e.instrument].append(i)
        if cols is not None:
            for key, b in by_key.items():
                b.cols = _columns_of(cols, at[key])
    refused = 0
    for key in [k for k in by_key if k not in state.admitted]:  # in order of first appearance
        why = state.admit(key)
        if why:
            batch = by_key.pop(key)
            refused += len(batch)
            errors.extend(ErrorRecord.of("parse", why, message_of(rec, fmt), e.instrument, e.ts_recv)
                          for e, rec in zip(batch, batch.records, strict=True))
    counts = {"input_records": len(recs), "ticks": n - refused}
    if errors:
        counts["parse_errors"] = len(errors)
    if refused:
        counts["instruments_refused"] = refused
    counts.update({f"skipped_{k}": v for k, v in sorted(skipped.items())})
    return by_key, errors, counts


# --- REST depth snapshots -----------------------------------------------------


class _RestDepth(msgspec.Struct, gc=False):
    lastUpdateId: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    E: Optional[int] = None  # futures only (ms)
    T: Optional[int] = None  # futures only (ms): the matching engine's time, the snapshot's ts_event


class _RestSymbol(msgspec.Struct, gc=False):
    symbol: Optional[str] = None  # COIN-M's; spliced in by ticklet's collector and replay (sources.wire.with_symbol)


_rest_symbol_dec = msgspec.json.Decoder(_RestSymbol, strict=False)
_SNAPSHOT = "depth_snapshot"


def _snapshots(results: list, recs: list, fmt: str, market: str, symbol: str) -> list:
    """``results`` with each REST depth snapshot skipped by the parser read as a :class:`BookSnapshot`.

    Its instrument is the symbol it carries (a COIN-M snapshot's own, or
    the one ticklet's collector and replay splice into the ticks they
    publish), else that of the recording it is in (``symbol``, for ``ws``
    chunks); a snapshot of no known instrument stays skipped.
    """
    out = list(results)
    for i, r in enumerate(results):
        if r != _SNAPSHOT:
            continue
        rec = recs[i]
        if fmt == "ws":
            sp = rec.find(b" ", 0, 20)
            ts = int(rec[:sp]) if sp == 19 else int(rec[:sp]) * 1000
            payload, mkt = rec[sp + 1 :], market
        else:
            head = tick_head(rec)
            assert head is not None  # parsed as a snapshot: it has one
            ts, mkt, payload = head[0], head[1], rec
        try:
            sym = _rest_symbol_dec.decode(payload).symbol or (symbol if fmt == "ws" else None)
        except (msgspec.ValidationError, msgspec.DecodeError):
            sym = None
        if sym and valid_symbol(sym.upper()):
            sym = sym.upper()
            snap = parse_snapshot(ts, payload, instrument_key(sym, mkt))
            out[i] = _in_coins(snap, sym, mkt, payload) if type(snap) is BookSnapshot and (
                "_" in sym or mkt == "coinm") else snap
    return out


_rest_dec = msgspec.json.Decoder(_RestDepth, strict=False)


def parse_snapshot(ts: int, payload: bytes, instrument: str) -> Union[BookSnapshot, ErrorRecord]:
    """Decode a REST depth response body (spot ``/api/v3/depth``, USD-M ``/fapi/v1/depth``).

    The body was received at ``ts`` (ns) for ``instrument``. Invalid input
    becomes an :class:`~core.events.ErrorRecord` (stage ``"parse"``) with
    the body as received.

    >>> s = parse_snapshot(5, b'{"lastUpdateId":7,"E":1680652700590,"T":1680652700580,'
    ...                    b'"bids":[["28145.10","3.818"]],"asks":[["28145.20","1"]]}', "BTCUSDT-PERP")
    >>> s.last_update_id, s.bids[0], s.ts_event  # T, the matching engine's time
    (7, Level(price=28145.1, qty=3.818), 1680652700580000000)
    >>> parse_snapshot(5, b'{"lastUpdateId":7,"bids":[["-1","1"]],"asks":[]}', "X").reason
    'invalid snapshot: Expected `float` > 0.0 - at `$.bids[0][0]`'
    """
    try:
        d = _rest_dec.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as ex:
        return ErrorRecord.of("parse", f"invalid snapshot: {ex}", payload, instrument, ts)
    t = d.T if d.T is not None else d.E
    return BookSnapshot(instrument, ts, d.lastUpdateId, d.bids, d.asks, None if t is None else t * 1_000_000)

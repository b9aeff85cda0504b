"""Pure parsers from Binance wire formats to normalized events.

No I/O here: the functions take one raw record and return an event, an
:class:`~ticklet.events.ErrorRecord`, or a *skip reason* (a ``str``) for input
that is valid but deliberately not used (mark-price streams, REST depth
snapshots, non-market futures trades, unfinished klines). The caller counts
skips by reason, so nothing disappears silently.

JSON is decoded by :mod:`msgspec` straight into typed structs; Binance's
decimal strings become floats during decoding (``strict=False``), and missing
fields raise with the field's name, which becomes the error reason.

Examples
--------
>>> line = (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,'
...         b'"s":"BTCUSDT","t":3735683259,"p":"61837.63","q":"0.02",'
...         b'"T":1723161255342,"m":true,"M":true}}')
>>> ev = parse_ws(1723161254087896568, line, "spot")
>>> ev.instrument, ev.price, ev.qty, ev.buyer_maker, ev.ts_event
('BTCUSDT', 61837.63, 0.02, True, 1723161255342000000)
>>> parse_ws(1, b'{"stream":"btcusdt@trade","data":{"p":"1"}}', "spot").reason
'missing field: Object missing required field `E` - at `$.data`'
>>> parse_ws(1, b'not json', "spot").reason[:8]
'bad json'
>>> parse_ws(1, b'{"lastUpdateId":1,"bids":[],"asks":[]}', "spot")
'depth_snapshot'
"""

from __future__ import annotations

import math
import sys
from typing import Annotated, Optional, Union

import msgspec

from sources.wire import decode_tick
from ticklet.events import (
    BookSnapshot,
    DepthUpdate,
    ErrorRecord,
    Event,
    Kline,
    Level,
    Quote,
    RawChunk,
    Trade,
    instrument_key,
)

__all__ = [
    "IGNORED_STREAMS",
    "Parsed",
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

# Validation happens inside msgspec's decoder (C): prices strictly positive and
# finite, quantities non-negative/positive and finite. NaN fails ``gt``.
_Px = Annotated[float, msgspec.Meta(gt=0.0, le=sys.float_info.max)]
_Qty = Annotated[float, msgspec.Meta(gt=0.0, le=sys.float_info.max)]

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


class _Envelope(msgspec.Struct, gc=False):
    stream: str
    data: msgspec.Raw


class _WsTrade(msgspec.Struct, gc=False):
    E: int
    s: str
    t: int
    p: _Px
    q: _Qty
    T: int
    m: bool
    X: Optional[str] = None  # futures only: MARKET, INSURANCE_FUND, ...


class _WsAggTrade(msgspec.Struct, gc=False):
    E: int
    s: str
    a: int
    p: _Px
    q: _Qty
    T: int
    m: bool


class _WsBookTicker(msgspec.Struct, gc=False):
    u: int
    s: str
    b: _Px
    B: _Qty
    a: _Px
    A: _Qty
    E: Optional[int] = None  # futures only
    T: Optional[int] = None


class _WsDepth(msgspec.Struct, gc=False):
    E: int
    s: str
    U: int
    u: int
    b: tuple[Level, ...]
    a: tuple[Level, ...]
    pu: int = -1  # futures only


class _WsKlineBody(msgspec.Struct, gc=False):
    t: int
    T: int
    o: float
    h: float
    l: float  # noqa: E741
    c: float
    v: float
    n: int
    x: bool
    q: float = 0.0
    V: float = 0.0


class _WsKline(msgspec.Struct, gc=False):
    E: int
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


def _raw(payload: bytes) -> str:
    return payload.decode("utf-8", "replace")


def _err(reason: str, payload: bytes, ts: int, key: str = "") -> ErrorRecord:
    return ErrorRecord("parse", reason, _raw(payload), key, ts)


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


def parse_ws(ts: int, payload: bytes, market: str) -> Parsed:
    """Parse one combined-stream message received at ``ts`` (ns).

    Parameters
    ----------
    ts
        Receive time in ns since the epoch.
    payload
        The JSON exactly as received.
    market
        ``"spot"`` or ``"usdm"``; decides the instrument key.

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
    """
    # The stream name is read from the bytes, then the whole message is decoded
    # in one pass by the decoder of that stream's type (key order is free).
    if payload.startswith(b'{"stream":"'):
        i = 11
    else:
        i = payload.find(b'"stream":"')
        if i < 0:
            if payload.find(b'"lastUpdateId":') >= 0:
                return "depth_snapshot"
            try:
                _env_dec.decode(payload)
            except (msgspec.ValidationError, msgspec.DecodeError) as ex:
                return _invalid(ex, payload, ts)
            return _err("unrecognized message", payload, ts)  # pragma: no cover
        i += 10
    try:
        if payload.find(b'@bookTicker"', i, i + 64) > 0:  # most messages: no slicing
            d = _book_env.decode(payload).data
            key = d.s if market == "spot" else instrument_key(d.s, market)
            b, a = d.b, d.a
            if b >= a:
                return _err(f"crossed quote: bid {b} >= ask {a}", payload, ts, key)
            return Quote(key, ts, None if d.E is None else d.E * _MS, b, d.B, a, d.A, d.u)
        end = payload.find(b'"', i)
        at = payload.find(b"@", i, end)
        kind = payload[at + 1 : end] if at >= 0 else b""
        if kind == b"trade":
            d = _trade_env.decode(payload).data
            if d.X is not None and d.X != "MARKET":
                return "non_market_trade"
            key = d.s if market == "spot" else instrument_key(d.s, market)
            return Trade(key, ts, d.T * _MS, d.p, d.q, d.m, d.t)
        if kind.startswith(b"depth") and (len(kind) == 5 or kind[5:6] == b"@"):
            d = _depth_env.decode(payload).data
            key = d.s if market == "spot" else instrument_key(d.s, market)
            return DepthUpdate(key, ts, d.E * _MS, d.U, d.u, d.pu, d.b, d.a)
        if kind == b"aggTrade":
            d = _agg_env.decode(payload).data
            key = instrument_key(d.s, market)
            return Trade(key, ts, d.T * _MS, d.p, d.q, d.m, d.a)
        if kind.startswith(b"kline_"):
            d = _kline_env.decode(payload).data
            k = d.k
            key = instrument_key(d.s, market)
            if not k.x:
                return "open_kline"
            why = _kline_error(k.o, k.h, k.l, k.c, k.v)
            if why:
                return _err(why, payload, ts, key)
            return Kline(
                key, ts, k.t * _MS, (k.T + 1) * _MS, k.o, k.h, k.l, k.c, k.v, k.q, k.n, k.V, True
            )
        _env_dec.decode(payload)  # an unknown stream must still be valid JSON
        stream = payload[i:end].decode("utf-8", "replace")
        base = kind.split(b"@", 1)[0].decode("utf-8", "replace")
        if base in IGNORED_STREAMS:
            return base
        return _err(f"unknown stream: {stream}", payload, ts)
    except (msgspec.ValidationError, msgspec.DecodeError) as ex:
        return _invalid(ex, payload, ts)


def _invalid(ex: Exception, payload: bytes, ts: int) -> ErrorRecord:
    msg = str(ex)
    if isinstance(ex, msgspec.ValidationError):
        reason = f"missing field: {msg}" if "missing required" in msg else f"invalid field: {msg}"
    else:
        reason = f"bad json: {msg}"
    return _err(reason, payload, ts)


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
    """
    key = instrument_key(symbol, market)
    if not row or not row[0].strip().lstrip("-").isdigit():
        return "header"
    try:
        cols = _TRADE_COLUMNS.get(kind)
        if cols is not None:
            return _csv_trade(row, key, *cols)
        if kind == "klines":
            o, h, lo, c, v = (float(x) for x in row[1:6])
            open_ns = to_ns(int(row[0]))
            close_ns = to_ns(int(row[6]) + 1)
            why = _kline_error(o, h, lo, c, v)
            if why:
                return _row_err(why, row, key, close_ns)
            return Kline(
                key, close_ns, open_ns, close_ns, o, h, lo, c, v,
                float(row[7]), int(row[8]), float(row[9]), True,
            )
    except (ValueError, IndexError) as ex:
        return _row_err(f"bad {kind} row: {ex}", row, key, 0)
    return _row_err(f"unknown csv kind: {kind}", row, key, 0)


#: Columns of the time and of the buyer-maker flag in each trade CSV kind; the
#: id, price and quantity are columns 0, 1 and 2 in both.
_TRADE_COLUMNS = {"trades": (4, 5), "aggTrades": (5, 6)}


def _csv_trade(row: list[str], key: str, time_col: int, maker_col: int) -> Parsed:
    """A row of a trades or aggTrades CSV file (``id, price, qty, ...``) with
    the time and buyer-maker flag in the given columns."""
    p, q = float(row[1]), float(row[2])
    ts = to_ns(int(row[time_col]))
    if _bad_px_qty(p, q):
        return _row_err("non-positive or non-finite price/quantity", row, key, ts)
    return Trade(key, ts, ts, p, q, _bool(row[maker_col]), int(row[0]))


def _row_err(reason: str, row: list[str], key: str, ts: int) -> ErrorRecord:
    return ErrorRecord("parse", reason, ",".join(row), key, ts)


def parse_kline_row(row: tuple, interval_ns: int, symbol: str, market: str) -> Parsed:
    """Parse ``(open_time_ns, open, high, low, close, volume)``, e.g. a row of
    the Feather kline files, into a closed :class:`Kline`.

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
    """Split ``b"<receive ts> <json>"`` and parse the message."""
    sp = line.find(b" ")
    head = line[:sp]
    if sp > 0 and head.isdigit():
        return parse_ws(int(head) * 1000 if sp <= 16 else int(head), line[sp + 1 :], market)
    return _err("missing receive timestamp", line, 0)


def _parse_tick(value: bytes) -> Parsed:
    """Parse a tick in ticklet's Kafka wire format (:mod:`sources.wire`)."""
    head = decode_tick(value)
    if head is None:
        return _err("no ts_recv/market head (not a ticklet tick)", value, 0)
    ts, market, message = head
    if market not in ("spot", "usdm"):
        return _err(f"unknown market: {market!r}", value, ts)
    return parse_ws(ts, message, market)


def parse_chunk(chunk: RawChunk) -> tuple[dict[str, list[Event]], list[ErrorRecord], dict[str, int]]:
    """Parse a :class:`RawChunk` into events grouped by instrument key (in
    input order), dead letters, and counts by outcome.

    The counts hold ``"ticks"`` (events produced) and one
    ``"skipped_<reason>"`` entry per skip reason; dead letters are counted
    where they are written.

    >>> rc = RawChunk("ws", "spot", "BTCUSDT", [
    ...     b'1723161254087891268 {"stream":"btcusdt@bookTicker","data":{"u":9,"s":"BTCUSDT",'
    ...     b'"b":"9.0","B":"1","a":"9.5","A":"2"}}',
    ...     b'1723161254087891269 garbage',
    ...     b'1723161254087891270 {"stream":"btcusdt@markPrice@1s","data":{}}'])
    >>> by_key, errors, counts = parse_chunk(rc)
    >>> [type(e).__name__ for e in by_key["BTCUSDT"]], errors[0].raw, counts
    (['Quote'], 'garbage', {'ticks': 1, 'skipped_markPrice': 1})
    """
    fmt, market, symbol = chunk.fmt, chunk.market, chunk.symbol
    if fmt == "ws":
        results = [_parse_line(rec, market) for rec in chunk.records]
    elif fmt == "kafka":
        results = [_parse_tick(rec) for rec in chunk.records]
    elif fmt == "kline_rows":
        iv = chunk.interval_ns
        results = [parse_kline_row(rec, iv, symbol, market) for rec in chunk.records]
    else:
        results = [parse_csv_row(rec, fmt, symbol, market) for rec in chunk.records]
    events: list[Event] = []
    errors: list[ErrorRecord] = []
    skipped: dict[str, int] = {}
    for r in results:
        cls = type(r)
        if cls is str:
            skipped[r] = skipped.get(r, 0) + 1  # type: ignore[index]
        elif cls is ErrorRecord:
            errors.append(r)  # type: ignore[arg-type]
        else:
            events.append(r)  # type: ignore[arg-type]
    n = len(events)
    by_key: dict[str, list[Event]] = {}
    if n and events[0].instrument == events[-1].instrument and len({e.instrument for e in events}) == 1:
        by_key[events[0].instrument] = events
    else:
        for e in events:
            b = by_key.get(e.instrument)
            if b is None:
                by_key[e.instrument] = [e]
            else:
                b.append(e)
    counts = {"ticks": n}
    counts.update({f"skipped_{k}": v for k, v in sorted(skipped.items())})
    return by_key, errors, counts


# --- REST depth snapshots -----------------------------------------------------


class _RestDepth(msgspec.Struct, gc=False):
    lastUpdateId: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    E: Optional[int] = None  # USD-M only (ms)


_rest_dec = msgspec.json.Decoder(_RestDepth, strict=False)


def parse_snapshot(ts: int, payload: bytes, instrument: str) -> Union[BookSnapshot, ErrorRecord]:
    """Decode a REST depth response body (spot ``/api/v3/depth``, USD-M
    ``/fapi/v1/depth``) received at ``ts`` (ns) for ``instrument``.

    Invalid input becomes an :class:`~ticklet.events.ErrorRecord` (stage
    ``"parse"``) with the body as received.

    >>> s = parse_snapshot(5, b'{"lastUpdateId":7,"E":1680652700590,"T":1680652700580,'
    ...                    b'"bids":[["28145.10","3.818"]],"asks":[["28145.20","1"]]}', "BTCUSDT-PERP")
    >>> s.last_update_id, s.bids[0], s.ts_event
    (7, Level(price=28145.1, qty=3.818), 1680652700590000000)
    >>> parse_snapshot(5, b'{"lastUpdateId":7,"bids":[["-1","1"]],"asks":[]}', "X").reason
    'invalid snapshot: Expected `float` > 0.0 - at `$.bids[0][0]`'
    """
    try:
        d = _rest_dec.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as ex:
        return ErrorRecord("parse", f"invalid snapshot: {ex}", payload.decode("utf-8", "replace"), instrument, ts)
    return BookSnapshot(instrument, ts, d.lastUpdateId, d.bids, d.asks, None if d.E is None else d.E * 1_000_000)

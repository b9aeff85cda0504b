"""Byte-level framing of ticks: ticklet's wire format for raw ticks on Kafka, and where a message names its stream.

Where a Binance combined-stream message names its stream is read from its
bytes too; pure, no I/O.

The bottom of the Binance input path (:mod:`sources.binance` states it):
this module reads heads and fields from bytes and decodes no exchange
payload; it imports nothing of ``sources.binance*``, only the symbol tables
(:mod:`sources.symbols`).

A tick is the exchange's message exactly as received, with the receive time
(ns) and the market spliced in front as two more JSON fields::

    {"ts_recv":1723161254087896568,"market":"spot","stream":"btcusdt@trade","data":{...}}

The receive time is also the Kafka timestamp (in ms), and the Kafka key is the
instrument key (``BTCUSDT``, ``BTCUSDT-PERP``), so one instrument's ticks stay
in one partition, in order.

>>> v = encode_tick(1723161254087896568, "spot", b'{"stream":"btcusdt@trade","data":{}}')
>>> v
b'{"ts_recv":1723161254087896568,"market":"spot","stream":"btcusdt@trade","data":{}}'
>>> decode_tick(v)[:2]
(1723161254087896568, 'spot')
>>> decode_tick(b'{"market":"usdm","ts_recv":5,"x":1}')[:2]  # any key order
(5, 'usdm')
>>> decode_tick(b'not json') is None
True
>>> stream_symbol(v)
'BTCUSDT'
"""

from __future__ import annotations

import re
from typing import Optional

import msgspec

from core.events import MARKETS
from sources.symbols import symbol_of_stream

__all__ = ["decode_tick", "encode_tick", "stream_symbol", "symbol_span", "tick_head", "with_symbol"]


class _Head(msgspec.Struct, gc=False):
    ts_recv: int
    market: str


_head_dec = msgspec.json.Decoder(_Head)
#: The first 5 bytes after ``"market":"`` in the compact head -> the market,
#: and what must follow them: the rest of its name and the closing quote
#: (``b'spot"'`` -> ``("spot", b"")``, ``b"coinm"`` -> ``("coinm", b'"')``).
_MARKETS = {(m + '"').encode()[:5]: (m, (m + '"').encode()[5:]) for m in MARKETS}


def encode_tick(ts_recv: int, market: str, payload: bytes) -> bytes:
    """Splice the receive time and market into a JSON object message."""
    head = b'{"ts_recv":%d,"market":"%s"' % (ts_recv, market.encode())
    body = payload.strip()
    if body.startswith(b"{") and body != b"{}":
        return head + b"," + body[1:]
    if body == b"{}":
        return head + b"}"
    # Not a JSON object: keep it whole so that the parser dead-letters it.
    return head + b',"raw":' + msgspec.json.encode(body.decode("utf-8", "replace")) + b"}"


def with_symbol(payload: bytes, symbol: str) -> bytes:
    """A REST depth snapshot that names its symbol, so that a tick of it says whose book it is.

    Binance's spot and USD-M depth snapshots do not name their symbol (a
    recording's file does); on Kafka the snapshot is read among the ticks of
    many instruments, so the collector and ``ticklet replay`` splice it in.
    Anything else, and a snapshot that names one already, is returned as it is.

    >>> with_symbol(b'{"lastUpdateId":7,"bids":[],"asks":[]}', "BTCUSDT")
    b'{"symbol":"BTCUSDT","lastUpdateId":7,"bids":[],"asks":[]}'
    >>> with_symbol(b'{"stream":"btcusdt@trade","data":{}}', "BTCUSDT")
    b'{"stream":"btcusdt@trade","data":{}}'
    """
    body = payload.strip()
    if not body.startswith(b'{"lastUpdateId":') or b'"symbol"' in body:
        return payload
    return b'{"symbol":%s,%s' % (msgspec.json.encode(symbol), body[1:])


def decode_tick(value: bytes) -> Optional[tuple[int, str, bytes]]:
    """Return ``(ts_recv, market, message)`` or None if the head is missing.

    ``message`` is the value itself: the exchange fields are still in it,
    and the typed decoders ignore the two added ones.
    """
    head = tick_head(value)
    return None if head is None else (head[0], head[1], value)


def tick_head(value: bytes) -> Optional[tuple[int, str, int]]:
    """``(ts_recv, market, end)`` of a tick, or None if the head is missing.

    ``end`` is the index just after the head when the value starts with it
    in :func:`encode_tick`'s compact layout (``{"ts_recv":N,"market":"M"``,
    so that the exchange's fields follow there, at the top level), else 0
    (the head was found by decoding the whole value: any layout).

    Every market of :data:`~core.events.MARKETS` has the compact layout's
    fast path (one look-up of the 5 bytes after ``"market":"``):

    >>> [tick_head(encode_tick(5, m, b'{"stream":"x@trade","data":{}}')) for m in MARKETS]
    [(5, 'spot', 28), (5, 'usdm', 28), (5, 'coinm', 29)]
    >>> v = encode_tick(5, "usdm", b'{"stream":"btcusdt@trade","data":{}}')
    >>> ts, market, end = tick_head(v)
    >>> ts, market, v[end:end + 10]
    (5, 'usdm', b',"stream":')
    >>> tick_head(b'{"market": "spot", "ts_recv": 7}')
    (7, 'spot', 0)
    >>> tick_head(b'{"ts_recv":7,"market":"coinmx","stream":"x@trade"}')  # not a market: decoded, as any
    (7, 'coinmx', 0)
    """
    j = value.find(b',"market":"', 11, 48)
    if j > 0 and value.startswith(b'{"ts_recv":'):
        known = _MARKETS.get(value[j + 11 : j + 16])
        if known is not None:
            market, rest = known
            head = value[11:j]
            if (not rest or value.startswith(rest, j + 16)) and head.isdigit():
                return int(head), market, j + 16 + len(rest)
    try:
        h = _head_dec.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return h.ts_recv, h.market, 0


#: ``"stream": "<symbol>@`` anywhere, with the whitespace JSON allows around the colon.
_STREAM_KEY = re.compile(rb'"stream"[ \t\r\n]*:[ \t\r\n]*"([^"\\@]{1,80})@')


def symbol_span(message: bytes) -> Optional[tuple[int, int]]:
    """Where the symbol of a combined-stream message's stream name is, read from the bytes without decoding.

    ``(start, at)``, the symbol being ``message[start:at]`` and ``at`` the
    index of the ``@`` that follows it (looked for within 70 bytes), for the
    first compact ``"stream":"``; None when there is no ``"stream":"`` or no
    such ``@``.

    Examples
    --------
    >>> m = b'{"stream":"btcusdt@depth@100ms","data":{}}'
    >>> start, at = symbol_span(m)
    >>> m[start:at], m[at:]
    (b'btcusdt', b'@depth@100ms","data":{}}')
    >>> symbol_span(b'{"lastUpdateId":1}') is None, symbol_span(b'{"stream":"btcusdt"}') is None
    (True, True)
    """
    i = message.find(b'"stream":"')
    if i < 0:
        return None
    at = message.find(b"@", i + 10, i + 80)
    return None if at < 0 else (i + 10, at)


def stream_symbol(message: bytes) -> Optional[str]:
    r"""The upper-cased symbol of a combined-stream message's stream name, read from its bytes whatever the layout.

    ``btcusdt@trade`` -> ``BTCUSDT``: that of the first ``"stream": "<symbol>@``
    in the message, or None where there is none or it cannot be a symbol
    (:func:`sources.symbols.symbol_of_stream`). For Kafka keys and for
    naming dead letters; the parser decodes the stream name exactly.

    A compact message (its first ``"stream"`` followed by ``:"``, as Binance
    writes them) is read in place (:func:`symbol_span`); any other layout is
    searched.

    >>> stream_symbol(b'{"stream":"ethusdt@depth@100ms","data":{}}'), stream_symbol(b'not json')
    ('ETHUSDT', None)
    >>> stream_symbol(b'{"data": {}, "stream" : "btcusdt@trade"}')
    'BTCUSDT'
    >>> stream_symbol(b'{"stream": "ethusdt@trade", "data": {"stream":"btcusdt@trade"}}')  # the first one
    'ETHUSDT'
    >>> stream_symbol(b'{"stream":"\\u0062tc@trade","data":{}}') is None  # an escape is not read as a symbol
    True
    >>> stream_symbol(b'{"stream":"\xe2\x80\xaebtc@trade","data":{}}') is None  # a right-to-left override
    True
    """
    span = symbol_span(message)
    if span is not None and message.find(b'"stream"', 0, span[0] - 10) < 0:  # the first "stream" is compact
        try:
            symbol = symbol_of_stream(message[span[0] : span[1]].decode("utf-8"))
        except UnicodeDecodeError:
            symbol = None
        if symbol is not None:
            return symbol
    m = _STREAM_KEY.search(message)
    if m is None:
        return None
    try:
        name = m.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return symbol_of_stream(name)

"""ticklet's wire format for raw ticks on Kafka (pure, no I/O).

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

from typing import Optional

import msgspec

from core.events import MARKETS
from sources import symbols
from sources.binance_live import symbol_span
from sources.symbols import symbol_of_stream

__all__ = ["decode_tick", "encode_tick", "stream_symbol", "tick_head"]


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


def stream_symbol(message: bytes) -> Optional[str]:
    """The upper-cased symbol of a combined-stream message (``btcusdt@trade``
    -> ``BTCUSDT``), from its bytes, or None where there is none or it is
    not a valid symbol (see :mod:`sources.symbols`). Compact messages are
    read at their start; any other JSON layout is searched.

    >>> stream_symbol(b'{"stream": "ethusdt@trade", "data": {}}')
    'ETHUSDT'
    >>> stream_symbol(b'{"stream":"\\xe2\\x80\\xaebtc@trade","data":{}}') is None
    True
    """
    span = symbol_span(message)
    if span is not None:
        try:
            symbol = symbol_of_stream(message[span[0] : span[1]].decode("utf-8"))
        except UnicodeDecodeError:
            symbol = None
        if symbol is not None:
            return symbol
    return symbols.stream_symbol(message)

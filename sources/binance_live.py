"""Binance live endpoints and combined-stream subscriptions (pure, no I/O).

Which streams the collector subscribes to, how they are split across
websocket connections, and where the REST depth snapshot lives, for spot and
USD-M futures, production and testnet.

Binance's limits (2024-2026 docs): a spot connection carries at most 1,024
streams and a USD-M one at most 200; both close every connection after 24
hours. :func:`connection_paths` never puts more than ``max_streams`` streams
on one connection.

Examples
--------
>>> stream_names(["BTCUSDT", "ethusdt"], ("trade", "depth@100ms"))
['btcusdt@trade', 'btcusdt@depth@100ms', 'ethusdt@trade', 'ethusdt@depth@100ms']
>>> connection_paths(stream_names(["BTCUSDT", "ETHUSDT"], ("trade", "bookTicker")), 3)
['/stream?streams=btcusdt@trade/btcusdt@bookTicker/ethusdt@trade', '/stream?streams=ethusdt@bookTicker']
>>> ENDPOINTS["usdm", "production"].depth_url
'https://fapi.binance.com/fapi/v1/depth'
>>> stream_of(b'{"stream":"btcusdt@depth@100ms","data":{}}')
('BTCUSDT', 'depth')
>>> stream_of(b'{"stream":"btcusdt@kline_1m","data":{}}')
('BTCUSDT', 'kline')
>>> stream_of(b'{"lastUpdateId":1}') is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["ENDPOINTS", "MAX_STREAMS", "Endpoint", "connection_paths", "stream_names", "stream_of", "symbol_span"]


@dataclass(frozen=True)
class Endpoint:
    """Where one market's websocket streams and REST depth snapshots are."""

    ws_url: str
    depth_url: str


#: Binance's endpoints by (market, network).
ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("spot", "production"): Endpoint("wss://stream.binance.com:9443", "https://api.binance.com/api/v3/depth"),
    ("spot", "testnet"): Endpoint("wss://stream.testnet.binance.vision", "https://testnet.binance.vision/api/v3/depth"),
    ("usdm", "production"): Endpoint("wss://fstream.binance.com", "https://fapi.binance.com/fapi/v1/depth"),
    ("usdm", "testnet"): Endpoint("wss://stream.binancefuture.com", "https://testnet.binancefuture.com/fapi/v1/depth"),
}

#: Streams per connection allowed by Binance, by market.
MAX_STREAMS = {"spot": 1024, "usdm": 200}


def stream_names(symbols: list[str], streams: tuple[str, ...]) -> list[str]:
    """``<symbol>@<stream>`` for every symbol and stream, symbol-major."""
    return [f"{s.strip().lower()}@{k}" for s in symbols if s.strip() for k in streams]


def connection_paths(streams: list[str], max_streams: int) -> list[str]:
    """Combined-stream URL paths, each with at most ``max_streams`` streams."""
    if max_streams < 1:
        raise ValueError("max_streams must be at least 1")
    return ["/stream?streams=" + "/".join(streams[i : i + max_streams])
            for i in range(0, len(streams), max_streams)]


_KINDS = {b"trade": "trade", b"aggTrade": "aggTrade", b"bookTicker": "bookTicker", b"depth": "depth",
          b"kline": "kline", b"markPrice": "markPrice"}


def symbol_span(message: bytes) -> Optional[tuple[int, int]]:
    """Where the symbol of a combined-stream message's stream name is, read
    from the bytes without decoding: ``(start, at)``, the symbol being
    ``message[start:at]`` and ``at`` the index of the ``@`` that follows it
    (looked for within 70 bytes); None when there is no ``"stream":"`` or no
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


def stream_of(message: bytes) -> Optional[tuple[str, str]]:
    """``(SYMBOL, kind)`` of a combined-stream message, kind one of
    ``trade``, ``aggTrade``, ``bookTicker``, ``depth``, ``kline``,
    ``markPrice``; None for anything else (a REST snapshot, a reply)."""
    span = symbol_span(message)
    if span is None:
        return None
    start, at = span
    end = message.find(b'"', at)
    if end < 0:
        return None
    name = message[at + 1 : end]
    for sep in (b"@", b"_"):
        name = name.split(sep, 1)[0]
    kind = _KINDS.get(name)
    return None if kind is None else (message[start:at].decode().upper(), kind)

"""Binance live endpoints and combined-stream subscriptions (pure, no I/O).

Which streams the collector subscribes to, how they are split across
websocket connections, and where the REST depth snapshot lives, for spot and
USD-M futures, production and testnet; and the collector's settings
(``TICKLET_COLLECT__*``, :class:`CollectConfig`), beside the endpoints and
limits they choose from (the collector itself, the app, is
:mod:`ticklet.collector`).

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

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.config import ip_address, topic_name
from core.config import url as check_url
from sources.wire import symbol_span

__all__ = ["ENDPOINTS", "MAX_STREAMS", "CollectConfig", "Endpoint", "connection_paths", "stream_names", "stream_of"]


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


def stream_of(message: bytes) -> Optional[tuple[str, str]]:
    """``(SYMBOL, kind)`` of a combined-stream message; None for anything else (a REST snapshot, a reply).

    The kind is one of ``trade``, ``aggTrade``, ``bookTicker``, ``depth``,
    ``kline``, ``markPrice``. The stream name is found by
    :func:`sources.wire.symbol_span`.
    """
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


class CollectConfig(BaseModel):
    """The live Binance collector (``ticklet collect``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbols: list[str] = Field(default_factory=lambda: ["BTCUSDT"],
        description="Symbols to collect (``--symbols`` overrides).")
    market: Literal["spot", "usdm"] = Field("spot",
        description="Binance market: spot or USD-M futures (``--market`` overrides).")
    network: Literal["production", "testnet"] = Field(
        "production", description="Binance endpoints: production or testnet (see sources/binance_live.py).")
    ws_url: Optional[str] = Field(None,
        description="Websocket base URL, overriding the network's (e.g. ws://127.0.0.1:9443).")
    depth_url: Optional[str] = Field(None, description="REST depth-snapshot URL, overriding the network's.")
    streams: tuple[str, ...] = Field(("trade", "aggTrade", "bookTicker", "depth@100ms", "kline_1m"),
                                     description="Streams per symbol, as named by Binance.")
    max_streams_per_connection: Optional[int] = Field(
        None, ge=1, description="Streams per websocket connection; unset: Binance's limit (spot 1024, USD-M 200).")
    reconnect_after_s: float = Field(
        23.5 * 3600, gt=0,
            description="Reconnect every connection after this long, before Binance's 24-hour disconnect.")
    handover_timeout_s: float = Field(
        10.0, gt=0, description="Scheduled reconnects are make-before-break: the old connection is read until it "
        "delivers the new one's first message, at most this long.")
    backoff_initial_s: float = Field(0.5, gt=0,
        description="Reconnect backoff unit: the n-th failed attempt waits a random time in [0, min(max, unit * "
        "2^n)] (full jitter).")
    backoff_max_s: float = Field(60.0, gt=0, description="Longest reconnect delay.")
    ping_interval_s: float = Field(20.0, gt=0,
        description="Client keepalive ping period (Binance's own pings are answered automatically).")
    ping_timeout_s: float = Field(20.0, gt=0,
        description="Reconnect when a keepalive ping has no pong after this long.")
    snapshot_limit: int = Field(1000, ge=5, le=5000,
        description="Levels of the REST depth snapshot (spot max 5000, USD-M 1000).")
    capture_dir: Optional[Path] = Field(Path("capture"),
        description="Raw capture directory (recording format); unset: no capture.")
    events_topic: Optional[str] = Field(
        "ticklet.events", description="Normalized events out (trade, quote, depth, kline records as JSON, keyed by "
        "instrument); unset: not published.")
    book_topic: str = Field("ticklet.book",
        description="Book quotes, depth features, gaps and resyncs out, JSON, keyed by instrument.")
    metrics_port: Optional[int] = Field(None, ge=1, le=65535,
        description="Serve Prometheus metrics on this port; unset: off.")
    metrics_address: str = Field("127.0.0.1",
        description="Address the metrics server listens on: 127.0.0.1 (this machine only) by default; 0.0.0.0 "
        "for every interface (e.g. in a container whose port is published).")

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        v = [s.strip().upper() for s in v]
        bad = [s for s in v if not re.fullmatch(r"[A-Z0-9]{2,30}", s)]
        if not v or bad:
            raise ValueError("a JSON list of one or more Binance symbols such as [\"BTCUSDT\"] is needed"
                             + (f"; not symbols: {bad}" if bad else ""))
        if len(set(v)) != len(v):
            raise ValueError("a symbol is listed twice")
        return v

    @field_validator("streams")
    @classmethod
    def _streams(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if not re.fullmatch(r"[A-Za-z0-9_@]+", s)]
        if not v or bad:
            raise ValueError("a JSON list of one or more Binance stream names such as [\"trade\"] is needed"
                             + (f"; not stream names: {bad}" if bad else ""))
        return v

    @field_validator("ws_url")
    @classmethod
    def _ws(cls, v: Optional[str]) -> Optional[str]:
        return check_url(v, ("ws", "wss"))

    @field_validator("depth_url")
    @classmethod
    def _rest(cls, v: Optional[str]) -> Optional[str]:
        return check_url(v, ("http", "https"))

    @field_validator("events_topic", "book_topic")
    @classmethod
    def _topics(cls, v: Optional[str]) -> Optional[str]:
        return topic_name(v)

    @field_validator("metrics_address")
    @classmethod
    def _address(cls, v: str) -> str:
        return ip_address(v)

    @model_validator(mode="after")
    def _backoff(self) -> CollectConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) is below backoff_initial_s "
                             f"({self.backoff_initial_s})")
        return self

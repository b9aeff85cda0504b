"""``ticklet collect``: the live Binance collector, an asyncio service.

Why a service and not a Bytewax dataflow: the collector's work is holding
websocket connections open for days, answering pings, reconnecting on a
timer and with backoff, and fetching REST snapshots when a book loses sync.
That is I/O scheduling, which asyncio does directly, while Bytewax sources
are polled and have no place for timers and side requests. Kafka sits between
the two: the collector publishes, and the forecast dataflow
(``TICKLET_INPUT__SOURCE=kafka``) consumes, each scaled and restarted on its
own. The pure logic the collector runs (order book sync, id gap detection)
lives in :mod:`operators.orderbook` and :mod:`operators.sequence`, tested
like every other operator.

For every message received, in order:

1. the receive clock stamps it (``time.time_ns()``, kept non-decreasing): the
   clock the whole pipeline orders and windows by;
2. the raw capture gets the line ``<recv ns> <message>`` (:mod:`sinks.capture`);
3. the ticks topic gets it in ticklet's wire format (:mod:`sources.wire`),
   keyed by instrument: exactly what ``ticklet replay --to kafka`` publishes,
   so a live session and the replay of its capture give the same forecasts;
4. the normalized event (:class:`~core.events.Trade`, ``Quote``,
   ``DepthUpdate`` or ``Kline``, as the dataflow's parser makes it) goes to
   the events topic as a JSON record (``type`` trade, quote, depth, kline);
5. trade and aggTrade ids go through the gap detector, depth diffs through
   the local order book, whose book quotes, depth features, gaps and resync
   requests go to the book topic as JSON records.

REST depth snapshots are captured and published like messages (on Kafka
with their symbol spliced in: :func:`sources.wire.with_symbol`), so the
forecast dataflow rebuilds the book from either. Counters: ``messages``,
``messages_<stream>``, ``gaps_<stream>``, ``reconnects``, ``reconnects_scheduled``, ``handovers_unmatched``,
``book_resyncs``, ``snapshots``, ``crossed_books``, Kafka delivery failures;
logged every minute, returned at the end, and exported as
``ticklet_collector_events_total{name}`` when a metrics port is set (served
on ``TICKLET_COLLECT__METRICS_ADDRESS``, 127.0.0.1 by default).

At start, brokers that do not answer within ``TICKLET_KAFKA__CONNECT_TIMEOUT_S``
and a metrics port that cannot be listened on are a
:class:`~core.config.ConfigError` (one line, exit status 2). A capture
file that cannot be written during the run (disk full, file too large, its
file or directory removed: :class:`sinks.capture.CaptureError`) stops the
collector: it takes no further message, delivers what it published to Kafka
(the message whose capture failed included), then writes one line naming
the file and the OS error and exits with status 74
(:func:`sinks.fatal.write_failed`): no traceback, no counters on stdout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any, NoReturn, Optional

import httpx
import msgspec
from confluent_kafka import Producer
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from core.config import ConfigError, KafkaConfig
from core.events import (
    BookSnapshot,
    Count,
    DepthUpdate,
    ErrorRecord,
    Kline,
    Quote,
    SnapshotRequest,
    Trade,
    instrument_key,
)
from core.telemetry import COLLECTOR, serve_metrics
from operators import orderbook, sequence
from operators.orderbook import OrderBookConfig, OrderBookState
from operators.sequence import SequenceEvent, SequenceGap, SequenceState
from sinks.capture import CaptureError, CaptureWriter
from sinks.fatal import EXIT_WRITE_FAILED, write_failed
from sinks.kafka import check_reachable, ensure_topic, produce, producer_config
from sinks.records import kafka_record
from sources.binance import parse_snapshot, parse_ws
from sources.binance_live import ENDPOINTS, MAX_STREAMS, CollectConfig, connection_paths, stream_names, stream_of
from sources.wire import encode_tick, with_symbol

__all__ = ["Collector"]

log = logging.getLogger(__name__)


class _TradeId(msgspec.Struct, gc=False):
    t: Optional[int] = None
    a: Optional[int] = None


class _IdEnvelope(msgspec.Struct, gc=False):
    data: _TradeId


_id_dec = msgspec.json.Decoder(_IdEnvelope)


class _BadSnapshot(Exception):
    pass


class Collector:
    """Collect ``cfg.symbols`` of ``cfg.market`` into Kafka and a raw capture."""

    def __init__(self, cfg: CollectConfig, kafka: KafkaConfig, book: Optional[OrderBookConfig] = None):
        self.cfg, self.kafka = cfg, kafka
        ep = ENDPOINTS[cfg.market, cfg.network]
        self.ws_url = (cfg.ws_url or ep.ws_url).rstrip("/")
        self.depth_url = cfg.depth_url or ep.depth_url
        limit = cfg.max_streams_per_connection or MAX_STREAMS[cfg.market]
        self.paths = connection_paths(stream_names(cfg.symbols, cfg.streams), limit)
        self.counts: collections.Counter[str] = collections.Counter()
        self.book_config = book or OrderBookConfig()
        self.books: dict[str, OrderBookState] = {}
        self.seq = SequenceState()
        self._last_ts = 0
        self._snapshots_in_flight: set[str] = set()
        self._stop = asyncio.Event()
        self._last_msg = time.monotonic()
        self._producer: Optional[Producer] = None
        self._capture: Optional[CaptureWriter] = None
        self._http: Optional[httpx.AsyncClient] = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- counters -----------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n
        COLLECTOR.labels(name).inc(n)

    # -- output -------------------------------------------------------------
    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self.counts["kafka_delivered"] += 1
        else:
            self._count("kafka_failed")
            log.error("kafka delivery failed: %s", err)

    def _produce(self, topic: str, key: bytes, value: bytes, ts_ms: int = 0) -> None:
        """Produce one message (``ts_ms`` 0: the producer's clock)."""
        assert self._producer is not None
        produce(self._producer, topic, value, key, on_delivery=self._on_delivery, timestamp=ts_ms)

    def _publish_raw(self, symbol: str, ts: int, message: bytes) -> None:
        """Capture and publish one received message (or REST snapshot).

        A capture that cannot be written stops the collector (:meth:`run`);
        the message still goes to Kafka.
        """
        if self._capture is not None:
            try:
                self._capture.write(symbol, ts, message)
            except CaptureError:
                self._stop.set()
        key = instrument_key(symbol, self.cfg.market)
        tick = encode_tick(ts, self.cfg.market, with_symbol(message, symbol))  # a snapshot says whose book it is
        self._produce(self.kafka.ticks_topic, key.encode(), tick, ts // 1_000_000)

    def _publish_records(self, outputs: Iterable[Any]) -> None:
        for rec in outputs:
            if isinstance(rec, Count):
                self._count(rec.name, rec.n)
            elif isinstance(rec, SnapshotRequest):
                self._request_snapshot(rec.instrument)
            else:
                if isinstance(rec, SequenceGap):
                    log.warning("gap on %s %s: expected id %d, got %d", rec.instrument, rec.stream, rec.expected,
                                rec.got)
                elif isinstance(rec, ErrorRecord):
                    log.warning("order book of %s: %s", rec.instrument, rec.reason)
                key, value = kafka_record(rec.instrument, rec)
                self._produce(self.cfg.book_topic, key, value)

    # -- messages -----------------------------------------------------------
    def _stamp(self) -> int:
        ts = time.time_ns()
        self._last_ts = ts = max(ts, self._last_ts)
        return ts

    def on_message(self, message: bytes) -> None:
        """Handle one websocket message (public for tests and tools)."""
        if self._capture is not None and self._capture.failed is not None:
            return  # stopping: nothing is taken after the message whose capture failed
        ts = self._stamp()
        self._last_msg = time.monotonic()
        self._count("messages")
        sk = stream_of(message)
        if sk is None:  # e.g. a subscription reply: kept, the dataflow dead-letters it
            self._count("messages_unknown")
            self._publish_raw(self.cfg.symbols[0].upper(), ts, message)
            return
        symbol, kind = sk
        self._count(f"messages_{kind}")
        self._publish_raw(symbol, ts, message)
        ev = parse_ws(ts, message, self.cfg.market)  # parsed once, for every use below
        if isinstance(ev, ErrorRecord):
            self._count("messages_invalid")
            log.warning("invalid message from the exchange: %s", ev.reason)
        elif self.cfg.events_topic and isinstance(ev, (Trade, Quote, DepthUpdate, Kline)):
            k, v = kafka_record(ev.instrument, ev)
            self._produce(self.cfg.events_topic, k, v, ts // 1_000_000)
        key = instrument_key(symbol, self.cfg.market)
        if kind in ("trade", "aggTrade"):
            if isinstance(ev, Trade):
                tid: Optional[int] = ev.trade_id
            else:  # not a market trade (a futures insurance-fund fill): its id still counts
                try:
                    d = _id_dec.decode(message).data
                except (msgspec.DecodeError, msgspec.ValidationError):
                    return
                tid = d.t if kind == "trade" else d.a
            if tid is not None:
                self.seq, out = sequence.step(self.seq, SequenceEvent(key, kind, tid, ts))
                self._publish_records(out)
        elif kind == "depth" and isinstance(ev, DepthUpdate):
            self._book_step(key, ev)

    def _book_step(self, key: str, event: Any) -> None:
        st = self.books.get(key)
        if st is None:
            st = self.books[key] = OrderBookState(self.book_config)
        self.books[key], out = orderbook.step(st, event)
        self._publish_records(out)

    # -- snapshots ----------------------------------------------------------
    def _request_snapshot(self, key: str) -> None:
        if key in self._snapshots_in_flight:
            return
        self._snapshots_in_flight.add(key)
        self._spawn(self._fetch_snapshot(key))

    async def _fetch_snapshot(self, key: str) -> None:
        """GET the REST depth snapshot, retrying with backoff until it comes."""
        symbol = key.split("-", 1)[0]
        assert self._http is not None

        def before_sleep(rs: Any) -> None:
            self._count("snapshot_failures")
            log.warning("depth snapshot of %s failed (%s); retrying in %.2f s", symbol, rs.outcome.exception(),
                        rs.next_action.sleep)

        try:
            async for attempt in AsyncRetrying(
                    wait=wait_random_exponential(self.cfg.backoff_initial_s, self.cfg.backoff_max_s),
                    retry=retry_if_exception_type((httpx.HTTPError, _BadSnapshot)),
                    before_sleep=before_sleep, reraise=True):
                with attempt:
                    r = await self._http.get(self.depth_url,
                                             params={"symbol": symbol, "limit": self.cfg.snapshot_limit})
                    r.raise_for_status()
                    body = r.content
                    ts = self._stamp()
                    snap = parse_snapshot(ts, body, key)
                    if not isinstance(snap, BookSnapshot):
                        raise _BadSnapshot(snap.reason)
        finally:
            self._snapshots_in_flight.discard(key)
        self._count("snapshots")
        self._publish_raw(symbol, ts, body)
        self._book_step(key, snap)

    # -- connections --------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, url: str) -> Any:
        def before_sleep(rs: Any) -> None:
            self._count("connect_failures")
            log.warning("connecting to %s failed (%s); retrying in %.2f s", url, rs.outcome.exception(),
                        rs.next_action.sleep)

        async for attempt in AsyncRetrying(
                wait=wait_random_exponential(self.cfg.backoff_initial_s, self.cfg.backoff_max_s),
                retry=retry_if_exception_type((OSError, InvalidHandshake, TimeoutError)),
                before_sleep=before_sleep, reraise=True):
            with attempt:
                return await connect(url, ping_interval=self.cfg.ping_interval_s, ping_timeout=self.cfg.ping_timeout_s,
                                     max_size=2**24, open_timeout=10, close_timeout=2)
        raise AssertionError("unreachable")

    async def _run_connection(self, path: str) -> None:
        url = self.ws_url + path
        ws = await self._connect(url)
        self._count("connections")
        log.info("connected to %s", url)
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self.cfg.reconnect_after_s):
                    while True:
                        self.on_message(await ws.recv(decode=False))
            except TimeoutError:
                self._count("reconnects_scheduled")
                log.info("scheduled reconnect of %s after %.0f s", url, self.cfg.reconnect_after_s)
                ws = await self._handover(ws, url)
            except ConnectionClosed as ex:
                self._count("disconnects")
                log.warning("connection to %s closed: %s", url, ex)
                await ws.close()
                ws = await self._connect(url)
            self._count("connections")
            self._count("reconnects")
        await ws.close()

    async def _handover(self, old: Any, url: str) -> Any:
        """Make before break: switch to a new connection without losing or doubling a message.

        Open the new connection, keep taking messages from the old one until
        it delivers the new one's first message, then close the old one.
        Nothing is lost or doubled when both connections carry the same
        messages in the same order, as Binance's do.
        """
        new = await self._connect(url)
        timeout = self.cfg.handover_timeout_s
        try:
            first: Optional[bytes] = await asyncio.wait_for(new.recv(decode=False), timeout)
        except (TimeoutError, ConnectionClosed):
            first = None  # a quiet stream: take what the old connection still holds, then switch
        try:
            while True:
                m = await asyncio.wait_for(old.recv(decode=False), timeout if first is not None else 0.05)
                if m == first:
                    break
                self.on_message(m)
        except (TimeoutError, ConnectionClosed):
            if first is not None:
                self._count("handovers_unmatched")
                log.warning("handover of %s: the old connection never delivered the new one's first message", url)
        await old.close()
        if first is not None:
            self.on_message(first)
        return new

    async def _housekeeping(self, duration_s: Optional[float], idle_exit_s: Optional[float]) -> None:
        t0 = last_log = last_flush = time.monotonic()
        while not self._stop.is_set():
            await asyncio.sleep(0.05)
            assert self._producer is not None
            self._producer.poll(0)
            now = time.monotonic()
            if self._capture is not None and now - last_flush >= 1.0:  # at most 1 s of capture at risk
                last_flush = now
                try:
                    self._capture.flush()
                except CaptureError:
                    self._stop.set()
                    return
            if now - last_log >= 60.0:
                last_log = now
                log.info("collector counters: %s", dict(sorted(self.counts.items())))
            if duration_s is not None and now - t0 >= duration_s:
                self._stop.set()
            if idle_exit_s is not None and now - self._last_msg >= idle_exit_s:
                self._stop.set()

    async def run(self, duration_s: Optional[float] = None, idle_exit_s: Optional[float] = None) -> dict[str, int]:
        """Collect until stopped; return the counters.

        It stops when ``duration_s`` has elapsed, after ``idle_exit_s``
        without a message, or on :meth:`stop`.
        """
        if self.cfg.metrics_port is not None:
            try:
                serve_metrics(self.cfg.metrics_address, self.cfg.metrics_port)  # for the process's lifetime
            except OSError as ex:
                raise ConfigError(f"cannot serve metrics on {self.cfg.metrics_address}:{self.cfg.metrics_port} "
                                  f"(TICKLET_COLLECT__METRICS_ADDRESS, TICKLET_COLLECT__METRICS_PORT): "
                                  f"{ex.strerror or ex}") from None
        check_reachable(self.kafka)
        pcfg = producer_config(self.kafka.brokers, self.kafka.client_config(), self.kafka.linger_ms)
        for topic in (self.kafka.ticks_topic, self.cfg.book_topic, self.cfg.events_topic):
            if topic:
                ensure_topic(pcfg, topic)
        self._producer = Producer(pcfg)
        if self.cfg.capture_dir is not None:
            self._capture = CaptureWriter(self.cfg.capture_dir, self.cfg.market)
        self._http = httpx.AsyncClient(timeout=10.0)
        self._stop.clear()
        self._last_msg = time.monotonic()
        log.info("collecting %d streams of %s on %d connection(s) from %s",
                 len(self.cfg.symbols) * len(self.cfg.streams), self.cfg.market, len(self.paths), self.ws_url)
        conns = [asyncio.create_task(self._run_connection(p)) for p in self.paths]
        house = asyncio.create_task(self._housekeeping(duration_s, idle_exit_s))
        stop = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([*conns, stop], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            self._stop.set()
            for t in [*conns, house, *self._tasks]:
                t.cancel()
            await asyncio.gather(*conns, house, *self._tasks, return_exceptions=True)
            await self._http.aclose()
            left = self._producer.flush(30.0)
            self._producer = None  # freed: its connections close now, not when the collector is collected
            if left:
                self._count("kafka_undelivered", left)
                log.error("%d message(s) not delivered to Kafka", left)
            if self._capture is not None:
                with contextlib.suppress(CaptureError):  # the line below says it
                    self._capture.close()
                if self._capture.failed is not None:
                    self._capture_failed(self._capture.failed)
        log.info("collector stopped: %s", dict(sorted(self.counts.items())))
        return dict(self.counts)

    def _capture_failed(self, ex: CaptureError) -> NoReturn:
        """One line naming the capture file and the OS error, exit status 74 (Kafka was flushed first)."""
        lost = self.counts.get("kafka_failed", 0) + self.counts.get("kafka_undelivered", 0)
        kafka = (f"{lost:,} of them could not be delivered to Kafka either" if lost else
                 f"every one of them is in Kafka ({self.kafka.ticks_topic})")
        write_failed(ex.path, ex.error, then=(
            f"The collector stopped with status {EXIT_WRITE_FAILED} after {self.counts.get('messages', 0):,} "
            f"messages: {kafka}, and the capture holds those written before the failure, up to its last flush. Fix "
            "the cause and start it again (the capture goes on in a new file beside this one)."))

    def stop(self) -> None:
        """Ask :meth:`run` to finish (thread-safe through the loop)."""
        self._stop.set()

"""``ticklet serve``: the ASGI application (FastAPI on uvicorn) over the output topic.

Routes (the README's *Serving* section has examples):

- ``GET /v1/instruments``; ``GET /v1/forecasts/latest?instrument=&model=&horizon=``;
  ``GET /v1/metrics?instrument=&model=&horizon=``; ``GET /v1/signals/latest?instrument=&model=&horizon=``:
  the latest records, exactly as published (``schema`` and ``type`` included), one per model and horizon;
- ``WS /v1/stream?instrument=&types=&after=``: each record as it arrives, in stream envelopes
  (:mod:`ticklet.serve.state`); ``after=PARTITION:OFFSET,...`` resumes after the offsets a client saw;
- ``GET /healthz`` (the consumer runs), ``GET /readyz`` (caught up with the topic), ``GET /metrics``
  (Prometheus), ``GET /openapi.json`` and ``GET /docs`` (Swagger UI, served from this machine);
- ``GET /``: the live page (plotly.js served from the plotly package, nothing fetched elsewhere).

The event loop owns all state: the Kafka consumer thread (:class:`ticklet.serve.feed.Feed`) posts
batches to it. A batch's live records are encoded once per stream filter and written straight to the
socket of each client that is keeping up (:func:`_direct_writer`). A client whose socket is full, or
that is still sending its backlog, gets them in its own queue, sent by its own task, so a client that
does not read never holds up the others or the consumer: past ``TICKLET_SERVE__MAX_PENDING`` queued
records it is dropped (close code 4008, ``ticklet_serve_ws_slow_clients_total``) and can resume with
``after=``.

A client that resumes from further back than the buffer is read from Kafka by a consumer of its own
(:class:`ticklet.serve.feed.RangeReader`, prefetch bounded), at most ``TICKLET_SERVE__MAX_RESUMING`` at
once (503 past it). Their records are decoded on the loop, a hundred at a time, not in worker threads:
a thread decoding holds the GIL, and the loop then waits for it at each step (measured: /healthz p99
0.4 s with 16 such threads, 20 ms on the loop). What the buffer held when such a client joined is
picked for it a slice at a time too, so no client holds up the loop for long.

Requests are read by uvicorn's httptools protocol with limits on the head, in bytes, fields and time, and
on the connections open (:mod:`ticklet.serve.limits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from types import GenericAlias
from typing import Annotated, Any, Literal, Optional
from urllib.parse import parse_qsl, urlsplit

import msgspec
from fastapi import FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model
from starlette.websockets import WebSocketDisconnect
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State

from core import events
from core.config import ConfigError, KafkaConfig
from core.version import ticklet_version
from sinks.kafka import check_reachable
from sinks.ratelimit import rate_limited
from sinks.records import OUTPUT_KINDS, SCHEMA_VERSION
from sinks.serve_config import ServeConfig
from ticklet.serve.feed import Feed, RangeReader, consumer_config, reader_config, release_memory
from ticklet.serve.limits import FILES_KEPT, bounded_http, open_files_for
from ticklet.serve.state import (
    INSTRUMENT_PATTERN,
    MODEL_PATTERN,
    Entry,
    LatestStore,
    ResumeBuffer,
    StreamFilter,
    check_instrument,
    check_model,
    follows,
    frame_text,
    parse_after,
    parse_backlog,
    parse_types,
)

__all__ = ["Hub", "bind", "create_app", "serve"]

log = logging.getLogger(__name__)
#: Requests refused before the API sees them (ticklet.serve.limits): one line a kind every 10 s, the others counted
_refusals = rate_limited(f"{__name__}.refused", 10.0)
#: What that line says, by reason: (what was answered, the setting)
_REFUSED = {"header_bytes": ("431, a request's head over", "TICKLET_SERVE__MAX_HEADER_BYTES"),
            "header_fields": ("431, more header fields in a request than", "TICKLET_SERVE__MAX_HEADERS"),
            "header_timeout": ("408, no complete request head on a connection within",
                               "TICKLET_SERVE__HEADER_TIMEOUT_S"),
            "connections": ("503, a connection waiting for a request closed to make room: more open than",
                            "TICKLET_SERVE__MAX_CONNECTIONS")}

STATIC = Path(__file__).resolve().parent / "static"
#: Most records in one WebSocket message (about 200 kB of JSON).
FRAME_RECORDS = 500
#: Close code of a client dropped for not reading fast enough (4000-4999: the application's own).
CLOSE_TOO_SLOW = 4008
#: Close code of a client that resumes from Kafka when every place for that is taken (RFC 6455: try again later).
CLOSE_TRY_LATER = 1013
#: How long a client read from Kafka waits when its consumer has fetched nothing yet.
READER_WAIT_S = 0.02
#: Records read from Kafka and decoded in one step of the loop, for a client that resumes (about 0.3 ms):
#: times TICKLET_SERVE__MAX_RESUMING, what the loop may do between two looks at its sockets.
READ_RECORDS = 100
#: Held records looked at in one step of the loop, for a client that resumes (about 1 ms).
HELD_SLICE = 2000
_OPEN = frozenset({"/healthz", "/readyz"})
_COOKIE = "ticklet_api_key"


# ---------------------------------------------------------------------------
# schemas (OpenAPI): the published record types, from core.events


def _record_model(cls: type[msgspec.Struct], kind: str) -> type[BaseModel]:
    """A pydantic model of one published record type, for the OpenAPI document only.

    The answers are the records' bytes as published.
    """
    fields: dict[str, Any] = {
        "schema_": (Literal[SCHEMA_VERSION], Field(alias="schema",
                                                   description="Version of the record layout.")),
        "type": (Literal[kind], Field(description="The record's type.")),
    }
    for f in msgspec.structs.fields(cls):
        default = ... if f.default is msgspec.NODEFAULT else f.default
        fields[f.name] = (f.type, default)
    return create_model(cls.__name__, __doc__=(cls.__doc__ or "").strip(),
                        __config__=ConfigDict(populate_by_name=True), **fields)


_MODELS = {k.cls: _record_model(k.cls, k.name) for k in OUTPUT_KINDS}  # the kinds table of sinks.records
ForecastModel = _MODELS[events.Forecast]
ScoredModel = _MODELS[events.ForecastRecord]
MetricsModel = _MODELS[events.MetricsRecord]
SignalModel = _MODELS[events.Signal]
FillModel = _MODELS[events.Fill]
MakerFillModel = _MODELS[events.MakerFillRecord]
MakerEconomicsModel = _MODELS[events.MakerEconomicsRecord]


class InstrumentInfo(BaseModel):
    """What the server holds of one instrument."""

    instrument: str
    partition: int = Field(description="The output topic's partition of the instrument.")
    offset: int = Field(description="Offset of its last record consumed.")
    ts_kafka: int = Field(description="Kafka timestamp (ms) of its last record consumed.")
    records: dict[str, int] = Field(description="Records consumed, by type.")
    models: list[str]
    horizons: list[int]


class Problem(BaseModel):
    """An error: ``message`` says what was wrong in one line."""

    detail: Any
    message: str


class Health(BaseModel):
    """Whether the server and its Kafka consumer run."""

    status: Literal["ok", "down"]


class Readiness(BaseModel):
    """Whether the server has caught up with the output topic, and where its consumer is."""

    ready: bool
    consumer: Optional[str] = Field(None, description="'not started' before the consumer is.")
    topic: Optional[str] = None
    consumed: Optional[int] = Field(None, description="Records consumed.")
    lag: Optional[int] = Field(None, description="Records not consumed yet.")
    refused: Optional[dict[str, int]] = Field(None, description="Values not served, by reason.")
    partitions: Optional[dict[str, dict[str, Optional[int]]]] = Field(
        None, description="Per partition: the next offset to read, and its end when the server started.")
    clients: Optional[int] = Field(None, description="Stream clients connected.")
    error: Optional[str] = Field(None, description="The Kafka client's last error.")


#: How the API key may be given (the OpenAPI document's security schemes, when the server has a key).
SECURITY_SCHEMES = {
    "header": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "bearer": {"type": "http", "scheme": "bearer"},
    "query": {"type": "apiKey", "in": "query", "name": "api_key",
              "description": "Also sets a cookie (HttpOnly, SameSite=Strict) carrying the key."},
    "cookie": {"type": "apiKey", "in": "cookie", "name": "ticklet_api_key"},
}


def _optional(check: Callable[[str], str]) -> Callable[[Optional[str]], Optional[str]]:
    def run(v: Optional[str]) -> Optional[str]:
        return None if v is None else check(v)
    return run


# the patterns are checked by check_instrument and check_model (their one-line messages), stated in the document
InstrumentQ = Annotated[str, Query(description="An instrument: BTCUSDT (spot), BTCUSDT-PERP (USD-M).",
                                   examples=["BTCUSDT"], json_schema_extra={"pattern": INSTRUMENT_PATTERN}),
                        AfterValidator(check_instrument)]
ModelQ = Annotated[Optional[str], Query(description="Only this model (e.g. linear).", examples=["linear"],
                                        json_schema_extra={"pattern": MODEL_PATTERN}),
                   AfterValidator(_optional(check_model))]
HorizonQ = Annotated[Optional[int], Query(ge=1, le=1_000_000, description="Only this horizon, in bars.")]


# ---------------------------------------------------------------------------
# metrics


class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.records = Counter("ticklet_serve_records", "Records consumed from the output topic", ["type"],
                               registry=r)
        self.refused = Counter("ticklet_serve_records_refused",
                               "Records of the output topic not served (not a record, over a bound)", ["reason"],
                               registry=r)
        self.lag = Gauge("ticklet_serve_lag_records", "Records of the output topic not consumed yet", registry=r)
        self.ready = Gauge("ticklet_serve_ready", "1 once caught up with the output topic", registry=r)
        self.clients = Gauge("ticklet_serve_ws_clients", "Stream clients connected", registry=r)
        self.sent = Counter("ticklet_serve_ws_records_sent", "Records sent to stream clients", registry=r)
        self.frames = Counter("ticklet_serve_ws_messages_sent", "WebSocket messages sent to stream clients: "
                              "path=direct written in the fan-out of a batch, path=queued by the client's own "
                              "sending task (backlog, resume, a client whose socket was full)", ["path"],
                              registry=r)
        self.slow = Counter("ticklet_serve_ws_slow_clients",
                            "Stream clients dropped for not reading fast enough (TICKLET_SERVE__MAX_PENDING)",
                            registry=r)
        self.rejected = Counter("ticklet_serve_ws_rejected", "Stream connections refused", ["reason"], registry=r)
        self.resuming = Gauge("ticklet_serve_ws_resuming", "Stream clients read from Kafka now (at most "
                              "TICKLET_SERVE__MAX_RESUMING)", registry=r)
        self.http_refused = Counter("ticklet_serve_http_refused", "Requests refused before they reach the API "
                                    "(header_bytes, header_fields: a head over the limits; header_timeout: no "
                                    "complete head in time; connections: closed to make room)", ["reason"],
                                    registry=r)
        self.requests = Histogram("ticklet_serve_http_request_seconds", "Time to answer an HTTP request",
                                  ["route", "status"], registry=r,
                                  buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0))


# ---------------------------------------------------------------------------
# the stream


class Client:
    """One stream client: its filter, what waits to be sent, its sending task."""

    __slots__ = ("abort", "after", "backlog", "direct", "dropped", "filter", "first", "held", "idle", "pending", "peer",
                 "ranges", "send", "since", "slot", "task", "wake", "ws")

    def __init__(self, ws: WebSocket, filt: StreamFilter, after: dict[int, int], peer: str,
                 abort: Optional[Callable[[], None]], first: int = 0, slot: bool = False):
        self.ws, self.filter, self.peer, self.abort = ws, filt, peer, abort
        self.slot = slot  # it holds one of the TICKLET_SERVE__MAX_RESUMING places of the readers from Kafka
        self.first = first  # the latest held records it asked for first (backlog=), when it resumes after nothing
        # the server's own ASGI send (kept by the edge middleware): a message costs less than through Starlette
        self.send: Callable[[Any], Awaitable[None]] = ws.scope.get("ticklet.send") or ws.send
        # writes an encoded message straight to the socket, False when it cannot now (see _direct_writer)
        self.direct: Optional[Callable[[bytes], bool]] = ws.scope.get("ticklet.direct")
        self.idle = False  # its sender waits with nothing queued: live records may go out directly
        self.after = dict(after)  # partitions whose live records must still pass these offsets
        self.since = dict(after)  # the offsets it resumes after
        self.pending: list[str] = []
        self.backlog: list[str] = []
        self.held: list[Entry] = []  # what the buffer held when it joined: those that follow ``since`` go first
        self.ranges: dict[int, tuple[int, int]] = {}
        self.wake = asyncio.Event()
        self.dropped = False
        self.task: Optional[asyncio.Task] = None


class Hub:
    """The latest state, the resume buffer and the stream clients, on the event loop."""

    def __init__(self, cfg: ServeConfig, kafka: KafkaConfig, metrics: Metrics):
        self.cfg, self.kafka, self.metrics = cfg, kafka, metrics
        self.store = LatestStore(cfg.max_instruments)
        self.buffer = ResumeBuffer(cfg.buffer)
        self.groups: dict[StreamFilter, set[Client]] = {}
        self.clients = 0
        self.resuming = 0  # clients read from Kafka now (each holds a slot: at most cfg.max_resuming)
        self.ready = False
        self.feed: Optional[Feed] = None
        self.failed = ""  # why the consumer stopped, when it did
        self.stop_server: Optional[Callable[[], None]] = None  # set by the runner: ends the process's server

    # -- fed by the consumer thread (through the loop)

    def begin(self, starts: dict[int, int]) -> None:
        """Start the buffer of each partition at its first offset read, ``starts[partition]``."""
        for p, off in starts.items():
            self.buffer.begin(p, off)

    def caught_up(self, _: Any = None) -> None:
        """The consumer reached the partitions' ends of the start: the server is ready."""
        self.ready = True
        self.metrics.ready.set(1)

    def fail(self, reason: str) -> None:
        """The consumer stopped on an error: stop serving what can no longer be kept up to date.

        A restart reads the topic again.
        """
        self.failed = reason
        self.ready = False
        self.metrics.ready.set(0)
        log.error("the Kafka consumer stopped (%s): the server stops", reason)
        if self.stop_server is not None:
            self.stop_server()

    def publish(self, entries: list[Entry]) -> None:
        """Keep ``entries`` and queue them for the clients that asked for them."""
        kinds: dict[str, int] = {}
        refused = 0
        for e in entries:
            if not self.store.update(e):
                refused += 1
            self.buffer.append(e)
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
        for kind, n in kinds.items():
            self.metrics.records.labels(kind).inc(n)
        if refused:
            self.metrics.refused.labels("bounds").inc(refused)
        for filt, clients in list(self.groups.items()):
            matched = [e for e in entries if filt.match(e)]
            if not matched:
                continue
            frames = [e.frame for e in matched]
            wire: Optional[bytes] = None  # the WebSocket message of ``frames``, encoded once for the group
            direct = 0
            for c in list(clients):
                if c.after:
                    self._push(c, [e.frame for e in matched if e.offset > c.after.get(e.partition, -1)])
                    for e in matched:
                        if c.after.get(e.partition, -1) < e.offset:
                            c.after.pop(e.partition, None)
                elif c.idle and c.direct is not None and len(frames) <= FRAME_RECORDS:
                    if wire is None:
                        wire = Frame(Opcode.TEXT, frame_text(frames).encode()).serialize(mask=False)
                    if c.direct(wire):
                        direct += 1
                    else:
                        self._push(c, frames)
                else:
                    self._push(c, frames)
            if direct:
                self.metrics.frames.labels("direct").inc(direct)
                self.metrics.sent.inc(direct * len(frames))

    def _push(self, c: Client, frames: list[str]) -> None:
        if c.dropped or not frames:
            return
        c.idle = False  # what is queued goes first
        c.pending.extend(frames)
        if len(c.pending) > self.cfg.max_pending:
            self.drop(c)
        else:
            c.wake.set()

    def drop(self, c: Client, why: str = "") -> None:
        """Drop a client that does not keep up: it gets nothing more, its sending task is cancelled.

        The task may be waiting on a full socket.
        """
        if c.dropped:
            return
        self.metrics.slow.inc()
        log.warning("stream client %s dropped: %s", c.peer, why or f"{len(c.pending)} records waiting, more than "
                    f"TICKLET_SERVE__MAX_PENDING ({self.cfg.max_pending})")
        c.dropped = True
        c.pending = []
        self._leave(c)
        if c.task is not None and c.task is not asyncio.current_task():
            c.task.cancel()

    def answer(self, kind: str, what: str, instrument: str, model: Optional[str], horizon: Optional[int]
               ) -> tuple[int, bytes]:
        """The answer of a ``latest`` route: (status, JSON body): the records exactly as published, or a 404 problem."""
        if instrument not in self.store:
            msg = f"no records of instrument {instrument!r} yet"
            return 404, msgspec.json.encode({"detail": msg, "message": msg + " (GET /v1/instruments lists them)"})
        entries = self.store.latest(kind, instrument, model, horizon)
        if not entries:
            which = "".join(f", {k} {v!r}" for k, v in (("model", model), ("horizon", horizon)) if v is not None)
            msg = f"no {what} of {instrument}{which} yet"
            return 404, msgspec.json.encode({"detail": msg, "message": msg})
        return 200, b"[" + b",".join(e.value for e in entries) + b"]"

    # -- clients

    def full(self) -> bool:
        """Whether the stream has as many clients as ``TICKLET_SERVE__MAX_CLIENTS`` allows."""
        return self.clients >= self.cfg.max_clients

    def take_slot(self) -> bool:
        """A place for one more client read from Kafka, if there is one."""
        if self.resuming >= self.cfg.max_resuming:
            return False
        self.resuming += 1
        self.metrics.resuming.set(self.resuming)
        return True

    def give_slot(self, c: Client) -> None:
        """Give back ``c``'s place, if it holds one (once its reader is closed)."""
        if c.slot:
            c.slot = False
            self.resuming -= 1
            self.metrics.resuming.set(self.resuming)

    def join(self, c: Client) -> bool:
        """Register ``c``, planning what it resumes after in the same loop step; False when there is no place.

        Planned in the same step, nothing falls between its backlog and its
        live records. False (and ``c`` not registered) when it must be read
        from Kafka and every place for that is taken: the buffer moved on
        since its handshake found it needed none.
        """
        if c.after:
            ranges, held = self.buffer.plan(c.after)
            if ranges and not c.slot:
                c.slot = self.take_slot()
                if not c.slot:
                    return False
            elif not ranges:
                self.give_slot(c)
            c.ranges, c.held = ranges, held  # picked from later, by its sender, a slice at a time
        elif c.first:
            c.backlog = [e.frame for e in self.buffer.last(c.first, c.filter)]
        self.groups.setdefault(c.filter, set()).add(c)
        self.clients += 1
        self.metrics.clients.set(self.clients)
        return True

    def _leave(self, c: Client) -> None:
        group = self.groups.get(c.filter)
        if group is not None and c in group:
            group.discard(c)
            if not group:
                del self.groups[c.filter]
            self.clients -= 1
            self.metrics.clients.set(self.clients)

    async def _send(self, c: Client, frames: list[str]) -> None:
        await c.send({"type": "websocket.send", "text": frame_text(frames)})
        self.metrics.frames.labels("queued").inc()
        self.metrics.sent.inc(len(frames))

    async def _from_kafka(self, c: Client) -> None:
        """Send ``c`` what it resumes after that the buffer no longer holds, read by a consumer of its own.

        The consumer has a bounded prefetch; it is closed, its memory given
        back to the system and ``c``'s place freed as soon as it is done, or
        ``c`` leaves. A client that takes nothing for
        ``TICKLET_SERVE__RESUME_STALL_S`` meanwhile is dropped (4008): it
        would hold its place for ever.
        """
        cfg = reader_config(consumer_config(self.kafka.brokers, self.cfg.group_id, self.kafka.client_config()),
                            self.cfg.resume_prefetch_kb)
        try:
            reader = await asyncio.to_thread(RangeReader, cfg, self.kafka.output_topic, c.ranges)
            try:
                frames: list[str] = []
                while not reader.done or frames:
                    chunk = reader.chunk(READ_RECORDS)  # on the loop: what was fetched, decoded
                    frames += [e.frame for e in chunk if c.filter.match(e)]
                    if not frames or (len(frames) < FRAME_RECORDS and not reader.done):
                        await asyncio.sleep(0 if chunk else READER_WAIT_S)  # the others' turn
                        continue
                    try:
                        await asyncio.wait_for(self._send(c, frames[:FRAME_RECORDS]), self.cfg.resume_stall_s)
                    except TimeoutError:
                        self.drop(c, f"it took nothing for {self.cfg.resume_stall_s:g} s while read from Kafka "
                                  "(TICKLET_SERVE__RESUME_STALL_S)")
                        return
                    del frames[:FRAME_RECORDS]
            finally:
                await asyncio.to_thread(_close_and_trim, reader)
        finally:
            self.give_slot(c)

    async def _send_held(self, c: Client) -> None:
        """Send ``c`` the held records that follow its offsets and match its filter, a slice at a time.

        They are picked from what the buffer held when it joined; a slice at
        a time, a client resuming after old offsets never holds up the loop
        (the whole buffer in one piece: 45 ms on the loaded test machine).
        """
        held, c.held = c.held, []
        frames: list[str] = []
        for i in range(0, len(held), HELD_SLICE):
            frames += [e.frame for e in held[i:i + HELD_SLICE] if follows(e, c.since) and c.filter.match(e)]
            while len(frames) >= FRAME_RECORDS:
                await self._send(c, frames[:FRAME_RECORDS])
                del frames[:FRAME_RECORDS]
            await asyncio.sleep(0)
        if frames:
            await self._send(c, frames)

    async def _sender(self, c: Client) -> None:
        if c.ranges:
            await self._from_kafka(c)
            if c.dropped:
                return
        await self._send_held(c)
        for i in range(0, len(c.backlog), FRAME_RECORDS):
            await self._send(c, c.backlog[i:i + FRAME_RECORDS])
        c.backlog = []
        while not c.dropped:
            if not c.pending:
                c.wake.clear()
                c.idle = True
                await c.wake.wait()
                continue
            frames = c.pending[:FRAME_RECORDS]
            del c.pending[:FRAME_RECORDS]
            await self._send(c, frames)

    async def run_client(self, c: Client) -> None:
        """Serve one accepted stream client until it leaves or is dropped."""
        if not self.join(c):
            self.metrics.rejected.labels("resuming").inc()
            await self._close(c, CLOSE_TRY_LATER, "too many clients resuming from Kafka: try again later")
            return
        c.task = asyncio.create_task(self._sender(c))

        async def reader() -> None:  # the client's messages are ignored; this notices that it left
            while True:
                msg = await c.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
        listen = asyncio.create_task(reader())
        try:
            await asyncio.wait({c.task, listen}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._leave(c)
            listen.cancel()
            if not c.task.done():
                c.task.cancel()
            with contextlib.suppress(BaseException):
                await c.task
            self.give_slot(c)
        if c.dropped:
            await self._close(c, CLOSE_TOO_SLOW, "too slow: reconnect with after=")
            return
        ex = None if c.task.cancelled() else c.task.exception()
        if ex is not None and not isinstance(ex, (WebSocketDisconnect, OSError)):
            log.error("stream client %s: %s: %s", c.peer, type(ex).__name__, ex)
            await self._close(c, 1011, "server error")

    async def _close(self, c: Client, code: int, reason: str) -> None:
        with contextlib.suppress(TimeoutError, RuntimeError, OSError, WebSocketDisconnect):
            await asyncio.wait_for(c.ws.close(code, reason), 2.0)
        if c.abort is not None:  # a client that reads nothing never takes the close frame: cut it off
            asyncio.get_running_loop().call_later(5.0, c.abort)


def _close_and_trim(reader: RangeReader) -> None:
    reader.close()
    release_memory()


# ---------------------------------------------------------------------------
# the edge: API key, request metrics, secrets kept out of the logs


#: The ``latest`` routes: (record type, what it is called in a 404).
LATEST = {"/v1/forecasts/latest": ("forecast", "forecast"),
          "/v1/forecasts/scored/latest": ("scored", "scored forecast"), "/v1/metrics": ("metrics", "metrics"),
          "/v1/signals/latest": ("signal", "signal"), "/v1/fills/latest": ("fill", "fill")}
_HORIZON = re.compile(r"[1-9][0-9]{0,6}")


def _plain_query(qs: bytes) -> Optional[tuple[str, Optional[str], Optional[int]]]:
    """(instrument, model, horizon) of a ``latest`` query that is valid as it is; None for anything else.

    FastAPI then answers anything else, errors included.

    >>> _plain_query(b"instrument=BTCUSDT&horizon=10"), _plain_query(b"instrument=btc"), _plain_query(b"x=1")
    (('BTCUSDT', None, 10), None, None)
    """
    try:
        pairs = parse_qsl(qs.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(qs))
    except (UnicodeDecodeError, ValueError):
        return None
    got = dict(pairs)
    if len(got) != len(pairs) or not set(got) <= {"instrument", "model", "horizon", "api_key"}:
        return None
    inst, model, horizon = got.get("instrument"), got.get("model"), got.get("horizon")
    try:
        if inst is None or check_instrument(inst) != inst or (model is not None and check_model(model) != model):
            return None
    except ValueError:
        return None
    if horizon is not None and (not _HORIZON.fullmatch(horizon) or int(horizon) > 1_000_000):
        return None
    return inst, model, None if horizon is None else int(horizon)


def _query_keys(qs: bytes) -> list[str]:
    return [v for k, v in parse_qsl(qs.decode("latin-1"), keep_blank_values=True) if k == "api_key"]


def key_cookie(key: str) -> bytes:
    """The ``Set-Cookie`` value that carries the server's own key (made once: never from what a request says).

    >>> key_cookie("k3y")
    b'ticklet_api_key=k3y; HttpOnly; Path=/; SameSite=Strict'
    """
    jar: SimpleCookie = SimpleCookie()
    jar[_COOKIE] = key
    morsel = jar[_COOKIE]
    morsel["path"], morsel["httponly"], morsel["samesite"] = "/", True, "Strict"
    return morsel.OutputString().encode("latin-1")


def _direct_writer(send: Any) -> Optional[Callable[[bytes], bool]]:
    """A function writing an encoded WebSocket message straight to the connection of ``send``, or None.

    None when ``send`` is not uvicorn's websockets protocol. It writes only
    while the connection is open, sends no extension (no compression) and
    has nothing waiting in its buffer, and says whether it did: a client
    whose socket is full goes back to its queue and its own sending task,
    where flow control and ``TICKLET_SERVE__MAX_PENDING`` apply. What it
    saves is uvicorn's per-client encoding and a task switch per client and
    message: the stream's fan-out is one message built per batch and one
    ``write`` per client.
    """
    proto = getattr(send, "__self__", None)
    conn, transport = getattr(proto, "conn", None), getattr(proto, "transport", None)
    if not isinstance(conn, Protocol) or not all(
            callable(getattr(transport, name, None)) for name in ("write", "is_closing", "get_write_buffer_size")):
        return None
    assert transport is not None

    def write(data: bytes) -> bool:
        if (conn.state is not State.OPEN or conn.extensions or transport.is_closing()
                or transport.get_write_buffer_size()):
            return False
        transport.write(data)
        return True
    return write


class _Edge:
    """Pure ASGI middleware: the API key on every route but health, and the request-time histogram.

    The histogram is by route template, so the labels stay few.
    """

    def __init__(self, app: Any, key: Optional[str], metrics: Metrics, hub: Hub):
        self.app, self.key, self.metrics, self.hub = app, key, metrics, hub
        self.cookie = key_cookie(key) if key is not None else b""

    def _is_key(self, given: str) -> bool:
        assert self.key is not None
        return hmac.compare_digest(given.encode(), self.key.encode())

    def _authorized(self, scope: dict[str, Any]) -> tuple[bool, bool]:
        """(whether the request carries the key, whether its answer sets the cookie).

        Every key the request states (header X-API-Key,
        ``Authorization: Bearer``, ``?api_key=``) must be the key, a wrong
        one is refused even beside the right one; the cookie counts only when
        it states none. The cookie is set when ``?api_key=`` was given, and
        so checked: it carries the server's key, never the request's text.
        """
        stated: list[str] = []
        cookie: Optional[str] = None
        for name, value in scope.get("headers", ()):
            if name == b"x-api-key":
                stated.append(value.decode("latin-1"))
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                stated.append(value[7:].decode("latin-1").strip())
            elif name == b"cookie":
                with contextlib.suppress(CookieError):
                    morsel = SimpleCookie(value.decode("latin-1")).get(_COOKIE)
                    if morsel is not None:
                        cookie = morsel.value
        in_query = _query_keys(scope.get("query_string", b""))
        stated += in_query
        if stated:
            ok = all(self._is_key(g) for g in stated)
            return ok, ok and bool(in_query)
        return cookie is not None and self._is_key(cookie), False

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        kind = scope["type"]
        if kind == "websocket":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            scope["ticklet.abort"] = getattr(transport, "abort", None)
            scope["ticklet.send"] = send
            scope["ticklet.direct"] = _direct_writer(send)
        if kind not in ("http", "websocket") or scope["path"] in _OPEN or self.key is None or (
                kind == "http" and scope["method"] == "OPTIONS"):
            set_cookie = False
        else:
            ok, set_cookie = self._authorized(scope)
            if not ok:
                if kind == "websocket":
                    self.metrics.rejected.labels("api_key").inc()
                    scope["ticklet.denied"] = True
                    await self.app(scope, receive, send)
                    return
                await JSONResponse({"detail": "a valid API key is needed (header X-API-Key)",
                                    "message": "a valid API key is needed: header X-API-Key, Authorization: Bearer, "
                                    "or ?api_key="}, 401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        if scope["method"] == "HEAD":  # answered as GET: uvicorn, whose scope says HEAD, sends the head only
            scope = {**scope, "method": "GET"}
        path = scope["path"]
        if path in LATEST and scope["method"] == "GET":  # the hot routes, answered here when the query is plain
            query = _plain_query(scope.get("query_string", b""))
            if query is not None:
                record_kind, what = LATEST[path]
                code, body = self.hub.answer(record_kind, what, *query)
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                if set_cookie:
                    headers.append((b"set-cookie", self.cookie))
                await send({"type": "http.response.start", "status": code, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                self.metrics.requests.labels(path, str(code)).observe(time.perf_counter() - t0)
                return
        status = [500]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                if status[0] == 405:  # what GET answers HEAD does too
                    message = {**message, "headers": [(k, v + b", HEAD" if k == b"allow" and b"GET" in v else v)
                                                      for k, v in message.get("headers", [])]}
                if set_cookie:
                    message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", self.cookie)]}
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("/docs/static" if scope["path"].startswith("/docs/static/")
                                                    else "other")
            self.metrics.requests.labels(path, str(status[0])).observe(time.perf_counter() - t0)


class RedactKey(logging.Filter):
    """Keep the API key out of every log line (uvicorn's included).

    The key itself and any ``api_key=`` query value become ``***``.
    """

    _QUERY = re.compile(r"(api_key=)[^&\s\"']*")

    def __init__(self, key: Optional[str]):
        super().__init__()
        self.key = key

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record: leave it to logging
            return True
        clean = self._QUERY.sub(r"\1***", msg)
        if self.key:
            clean = clean.replace(self.key, "***")
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


# ---------------------------------------------------------------------------
# the application


def _problem(detail: Any, message: str, status: int) -> JSONResponse:
    return JSONResponse({"detail": detail, "message": message}, status)


def _validation_message(errors: list[dict[str, Any]]) -> str:
    """One line for FastAPI's validation errors: which parameter, what is wrong, what was given."""
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ())]
        where = f"{loc[0]} parameter {'.'.join(loc[1:])!r}" if len(loc) > 1 else "request"
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        if e.get("type") == "missing":
            parts.append(f"{where} is required")
        else:
            parts.append(f"{where}: {msg} (got {e.get('input')!r:.80})")
    return "; ".join(parts)


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


def _docs_static() -> Optional[Path]:
    try:
        import fastapi_offline
    except ImportError:  # pragma: no cover (a dependency; /docs then says so)
        return None
    return Path(fastapi_offline.__file__).resolve().parent / "static"


def _origin_ok(origin: Optional[str], host: Optional[str], allowed: list[str]) -> bool:
    """Whether a browser's WebSocket from ``origin`` may connect.

    It may with no Origin (not a browser), from the server's own pages, or
    from an allowed origin.
    """
    if not origin:
        return True
    if "*" in allowed or origin in allowed:
        return True
    return bool(host) and urlsplit(origin).netloc == host


def create_app(cfg: ServeConfig, kafka: KafkaConfig, start_feed: bool = True) -> FastAPI:
    """The ASGI application.

    The Kafka consumer is built and started by the app's lifespan (when the
    server starts, ``start_feed``), never here.
    """
    metrics = Metrics()
    hub = Hub(cfg, kafka, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not start_feed:
            yield
            return
        loop = asyncio.get_running_loop()
        feed = Feed(consumer_config(kafka.brokers, cfg.group_id, kafka.client_config()), kafka.output_topic,
                    cfg.backfill, post=loop.call_soon_threadsafe, on_begin=hub.begin, on_batch=hub.publish,
                    on_ready=hub.caught_up, on_bad=lambda reason: metrics.refused.labels(reason).inc(),
                    on_fail=hub.fail)
        hub.feed = feed
        metrics.lag.set_function(lambda: feed.lag)
        feed.start()
        try:
            yield
        finally:
            await asyncio.to_thread(feed.stop)

    app = FastAPI(title="ticklet serve", version=ticklet_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="The latest forecasts, scored forecasts, metrics and signals of ticklet's output "
                  "topic, and a live stream of them (WebSocket `/v1/stream`, see the README's *Serving* section). "
                  "Answers are the records exactly as published: `schema` (3) and `type` first, then the fields "
                  "of the record types in `core/events.py`.")
    app.state.hub = hub
    app.state.metrics = metrics

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, ex: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg", "input")} for e in ex.errors()]
        return _problem(errors, _validation_message(errors), 422)

    not_found: dict[int | str, dict[str, Any]] = {
        404: {"model": Problem, "description": "Nothing of that instrument (model, horizon) yet."},
        422: {"model": Problem, "description": "A bad query parameter."}}

    def listed(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
        """The answers of a ``latest`` route: a list of ``model``, or a problem.

        ``list[model]`` would do, but a type checker takes it for a type,
        and a model made at run time cannot be one.
        """
        return {200: {"model": GenericAlias(list, (model,))}, **not_found}

    def latest(kind: str, what: str, instrument: str, model: Optional[str], horizon: Optional[int]) -> Response:
        status, body = hub.answer(kind, what, instrument, model, horizon)
        return Response(body, status, media_type="application/json")

    @app.get("/v1/instruments", response_model=None, responses={200: {"model": list[InstrumentInfo]}},
             summary="The instruments the server has records of")
    async def instruments() -> Response:
        return Response(msgspec.json.encode(hub.store.instruments()), media_type="application/json")

    @app.get("/v1/forecasts/latest", response_model=None, responses=listed(ForecastModel),
             summary="The latest forecast issued by each model at each horizon")
    async def forecasts_latest(instrument: InstrumentQ, model: ModelQ = None, horizon: HorizonQ = None) -> Response:
        return latest("forecast", "forecast", instrument, model, horizon)

    @app.get("/v1/forecasts/scored/latest", response_model=None,
             responses=listed(ScoredModel),
             summary="The latest scored forecast (paired with its realized value) of each model and horizon")
    async def scored_latest(instrument: InstrumentQ, model: ModelQ = None, horizon: HorizonQ = None) -> Response:
        return latest("scored", "scored forecast", instrument, model, horizon)

    @app.get("/v1/metrics", response_model=None, responses=listed(MetricsModel),
             summary="The latest prequential metrics of each model and horizon")
    async def metrics_latest(instrument: InstrumentQ, model: ModelQ = None, horizon: HorizonQ = None) -> Response:
        return latest("metrics", "metrics", instrument, model, horizon)

    @app.get("/v1/signals/latest", response_model=None, responses=listed(SignalModel),
             summary="The latest signal (decision) of each model and horizon")
    async def signals_latest(instrument: InstrumentQ, model: ModelQ = None, horizon: HorizonQ = None) -> Response:
        return latest("signal", "signal", instrument, model, horizon)

    @app.get("/v1/fills/latest", response_model=None, responses=listed(FillModel),
             summary="The latest simulated fill of each book (model and horizon)")
    async def fills_latest(instrument: InstrumentQ, model: ModelQ = None, horizon: HorizonQ = None) -> Response:
        return latest("fill", "fill", instrument, model, horizon)

    @app.get("/v1/maker/fills/latest", response_model=None, responses=listed(MakerFillModel),
             summary="The latest fill of each maker book's resting orders (model and horizon; the baseline: touch)")
    async def maker_fills_latest(instrument: InstrumentQ, model: ModelQ = None, horizon: HorizonQ = None) -> Response:
        return latest("maker_fill", "maker fill", instrument, model, horizon)

    @app.get("/v1/maker/economics/latest", response_model=None, responses=listed(MakerEconomicsModel),
             summary="The latest running economics of each maker book: fill rate, adverse selection, break-even fee")
    async def maker_economics_latest(instrument: InstrumentQ, model: ModelQ = None,
                                     horizon: HorizonQ = None) -> Response:
        return latest("maker_economics", "maker economics", instrument, model, horizon)

    def _status() -> dict[str, Any]:
        feed = hub.feed
        if feed is None:
            return {"ready": hub.ready, "consumer": "not started"}
        parts = {str(p): {"position": feed.positions.get(p), "end_at_start": end}
                 for p, end in sorted(feed.targets.items())}
        return {"ready": hub.ready, "topic": kafka.output_topic, "consumed": feed.consumed, "lag": feed.lag,
                "refused": dict(feed.bad), "partitions": parts, "clients": hub.clients,
                **({"error": feed.error} if feed.error else {})}

    @app.get("/healthz", summary="Whether the server and its Kafka consumer run (no API key needed)",
             response_model=None, responses={200: {"model": Health}, 503: {"model": Health, "description":
                                                                          "The Kafka consumer has stopped."}})
    async def healthz() -> JSONResponse:
        alive = hub.feed is not None and hub.feed.alive
        return JSONResponse({"status": "ok" if alive else "down"}, 200 if alive else 503)

    @app.get("/readyz", summary="Whether the server has caught up with the output topic (no API key needed)",
             response_model=None, responses={200: {"model": Readiness}, 503: {
                 "model": Readiness, "description": "Not caught up yet, or the Kafka consumer has stopped."}})
    async def readyz() -> JSONResponse:
        status = _status()
        return JSONResponse(status, 200 if hub.ready and hub.feed is not None and hub.feed.alive else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        """Each record as it arrives (JSON arrays of envelopes); see the module docstring."""
        if ws.scope.get("ticklet.denied"):
            await ws.send_denial_response(JSONResponse(
                {"detail": "a valid API key is needed", "message": "a valid API key is needed: header X-API-Key, "
                 "Authorization: Bearer, or ?api_key="}, 401))
            return
        q = ws.query_params
        name, value = "", ""
        try:
            name, value = "instrument", q.get("instrument") or ""
            inst = check_instrument(value) if value else None
            name, value = "types", q.get("types") or ""
            types = parse_types(value)
            name, value = "after", q.get("after") or ""
            after = parse_after(value)
            name, value = "backlog", q.get("backlog") or ""
            backlog = parse_backlog(value, cfg.buffer)
        except ValueError as ex:
            metrics.rejected.labels("query").inc()
            detail = [{"type": "value_error", "loc": ["query", name], "msg": str(ex), "input": value}]
            await ws.send_denial_response(_problem(detail, f"query parameter {name!r}: {ex} (got {value!r:.80})",
                                                   422))
            return
        if not _origin_ok(ws.headers.get("origin"), ws.headers.get("host"), cfg.cors_origins):
            metrics.rejected.labels("origin").inc()
            await ws.send_denial_response(_problem("origin not allowed", "this origin may not open the stream "
                                                   "(TICKLET_SERVE__CORS_ORIGINS)", 403))
            return
        if hub.full():
            metrics.rejected.labels("full").inc()
            await ws.send_denial_response(_problem("too many stream clients", "too many stream clients "
                                                   "(TICKLET_SERVE__MAX_CLIENTS); try again later", 503))
            return
        slot = bool(after) and bool(hub.buffer.ranges(after))  # it must be read from Kafka
        if slot and not hub.take_slot():
            metrics.rejected.labels("resuming").inc()
            await ws.send_denial_response(_problem("too many clients resuming from Kafka", "too many stream clients "
                                                   "resuming further back than the buffer "
                                                   "(TICKLET_SERVE__MAX_RESUMING); try again later", 503))
            return
        peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
        client = Client(ws, StreamFilter(inst, types), after, peer, ws.scope.get("ticklet.abort"), backlog, slot)
        try:
            await ws.accept()
        except BaseException:
            hub.give_slot(client)
            raise
        await hub.run_client(client)

    # -- the live page and the docs, all served from this machine

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "live.html", media_type="text/html")

    @app.get("/static/plotly.min.js", include_in_schema=False)
    async def plotly_js() -> FileResponse:
        return FileResponse(_plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        path = STATIC / name
        if not re.fullmatch(r"[a-z0-9_-]+\.(js|css)", name) or not path.is_file():
            return _problem("no such file", f"no such file: {name}", 404)
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return FileResponse(path, media_type=media)

    docs_static = _docs_static()

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if docs_static is None:
            return HTMLResponse("<p>Install fastapi-offline for the docs; the API is at /openapi.json.</p>")
        return get_swagger_ui_html(openapi_url="/openapi.json", title="ticklet serve - API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon.png")

    @app.get("/docs/static/{name}", include_in_schema=False)
    async def docs_files(name: str) -> Response:
        if docs_static is None or name not in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
            return _problem("no such file", f"no such file: {name}", 404)
        return FileResponse(docs_static / name, headers={"Cache-Control": "max-age=86400"})

    if cfg.api_key is not None:
        _document_key(app)
    edge: Any = _Edge(app, cfg.api_key.get_secret_value() if cfg.api_key else None, metrics, hub)
    if cfg.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        edge = CORSMiddleware(edge, allow_origins=cfg.cors_origins, allow_methods=["GET"],
                              allow_headers=["X-API-Key", "Authorization"])
    wrapped: Any = edge
    wrapped.state = app.state  # for the tests and the runner: the hub and the metrics
    wrapped.fastapi = app
    return wrapped


def _document_key(app: FastAPI) -> None:
    """State in ``app``'s OpenAPI document that every route but health needs the API key.

    The document gives the ways to give it, and the 401 without it.
    """
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = plain()  # it keeps the document as app.openapi_schema, completed here once
        spec.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        for path, operations in spec["paths"].items():
            if path in _OPEN:
                continue
            for op in operations.values():
                op["security"] = [{name: []} for name in SECURITY_SCHEMES]
                op["responses"]["401"] = {"description": "No valid API key (or a wrong one given).", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        return spec
    app.openapi = openapi  # type: ignore[method-assign]


# ---------------------------------------------------------------------------
# the runner


def bind(address: str, port: int) -> socket.socket:
    """A listening socket on ``address:port``.

    A :class:`ConfigError` naming the settings when it cannot be had (in
    use, no such address).
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(2048)
    except OSError as ex:
        sock.close()
        raise ConfigError(f"cannot listen on {address}:{port} (TICKLET_SERVE__ADDRESS, TICKLET_SERVE__PORT): "
                          f"{ex.strerror or ex}") from None
    sock.set_inheritable(True)
    return sock


def serve(cfg: ServeConfig, kafka: KafkaConfig, check_kafka: bool = True) -> int:
    """Run the server until SIGINT or SIGTERM (exit status 0), or until its Kafka consumer stops on an error.

    On an error the status is 1, the reason logged: a supervisor restarts
    it, and it reads the topic again. A bad setting (brokers that do not
    answer, an address that cannot be had) raises :class:`ConfigError`
    before anything starts.
    """
    import uvicorn

    key = cfg.api_key.get_secret_value() if cfg.api_key else None
    redact = RedactKey(key)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "ticklet", "fastapi"):
        logging.getLogger(name).addFilter(redact)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
    if check_kafka:
        check_reachable(kafka)
    connections, files = open_files_for(cfg.max_connections)
    if connections < cfg.max_connections:
        if connections < 16:
            raise ConfigError(f"this process may open {files} files: too few for TICKLET_SERVE__MAX_CONNECTIONS "
                              f"(ulimit -n must be at least {16 + FILES_KEPT})")
        log.warning("at most %d connections at once, not TICKLET_SERVE__MAX_CONNECTIONS=%d: this process may open "
                    "%d files (ulimit -Hn), %d of them kept for Kafka and files", connections, cfg.max_connections,
                    files, FILES_KEPT)
    sock = bind(cfg.address, cfg.port)
    host, port = sock.getsockname()[:2]
    app = create_app(cfg, kafka)
    metrics: Metrics = app.state.metrics

    def refused(reason: str, client: Any) -> None:
        metrics.http_refused.labels(reason).inc()
        _refusals.warning("refused: %s %s (from %s)", *_REFUSED[reason], client and client[0])
    config = uvicorn.Config(app, log_config=None, access_log=False, server_header=False, lifespan="on",
                            http=bounded_http(cfg.max_header_bytes, cfg.max_headers, cfg.header_timeout_s,
                                              connections, refused),
                            ws_per_message_deflate=False, ws_max_size=65536, timeout_graceful_shutdown=5,
                            proxy_headers=False)
    shown = f"[{host}]" if ":" in host else host
    log.info("serving http://%s:%d (the output topic %r of %s; live page at /, API docs at /docs)", shown, port,
             kafka.output_topic, kafka.bootstrap_servers)
    # what was imported and built so far lives as long as the process: out of the collector's full passes,
    # which then only walk what the server holds (its latest state and buffer): shorter pauses of the stream
    gc.collect()
    gc.freeze()
    server = uvicorn.Server(config)
    hub: Hub = app.state.hub

    def stop() -> None:
        server.should_exit = True
    hub.stop_server = stop
    server.run(sockets=[sock])
    return 1 if hub.failed else 0

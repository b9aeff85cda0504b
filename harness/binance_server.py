"""A local Binance look-alike that serves the real recordings, for the
collector tests (loopback only).

One ``websockets`` server on 127.0.0.1 answers both:

- ``/stream?streams=a/b/c``: the combined-stream websocket. Each connection
  path has a cursor over the recorded messages of its streams, in recorded
  order, so a reconnect continues where the last connection stopped. Each
  message is sent exactly as recorded (the JSON after the receive time).
- ``/api/v3/depth`` and ``/fapi/v1/depth?symbol=S&limit=N``: the REST depth
  snapshot. The server keeps each symbol's true book: the REST snapshot
  recorded in the file, then every recorded diff after it that the
  cursors have passed (sent or dropped). Asked before the cursor reaches the
  recorded snapshot, it answers with the recorded snapshot itself.

Faults, to test the collector: ``drop`` (a set of (stream, k): the k-th
message of that stream, 0-based, is never sent), ``close_after`` (a set of
counts of messages sent in all after which the server closes the connection
that sent the last one), ``lose_on_reconnect`` (messages skipped, never sent, when a path
reconnects: what was published while the client was away),
``reject_handshakes`` (the first n websocket handshakes get HTTP 503) and
``ping_interval`` (the server's own pings, which the client must answer).
``speed`` paces the messages by their recorded receive times, ``speed``
times faster (default: as fast as the socket takes them). With
``broadcast=True`` each path has one paced timeline, published whether
anyone listens or not, and a connection receives what is published after it
opened, as on the real exchange (two connections overlap; nothing is
replayed to a reconnecting client).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

__all__ = ["ReplayExchange"]


def _stream_of(payload: bytes) -> Optional[str]:
    i = payload.find(b'"stream":"')
    if i < 0:
        return None
    return payload[i + 10 : payload.find(b'"', i + 10)].decode()


class ReplayExchange:
    """Serve recordings over a websocket and a REST depth endpoint."""

    def __init__(self, files: list[Path], *, drop: Optional[set[tuple[str, int]]] = None,
                 close_after: Optional[set[int]] = None, lose_on_reconnect: int = 0,
                 reject_handshakes: int = 0, ping_interval: Optional[float] = None, ping_timeout: float = 5.0,
                 yield_every: int = 64, speed: Optional[float] = None, broadcast: bool = False):
        self.messages: list[tuple[str, bytes]] = []  # (stream, payload) in recorded order
        self.times: list[int] = []  # their receive times in the recording (ns)
        self.snapshot_at: dict[str, tuple[int, dict]] = {}  # symbol -> (index in messages, snapshot)
        lines = []
        for f in files:
            sym = f.name.split("_", 1)[0].upper()
            with gzip.open(f, "rb") as fh:
                for ln in fh:
                    recv, _, payload = ln.rstrip(b"\n").partition(b" ")
                    lines.append((int(recv) * (1000 if len(recv) <= 16 else 1), sym, payload))
        lines.sort(key=lambda x: x[0])
        for ts, sym, payload in lines:
            stream = _stream_of(payload)
            if stream is None:  # the recorded REST snapshot
                if sym not in self.snapshot_at:
                    self.snapshot_at[sym] = (len(self.messages), json.loads(payload))
                continue
            self.messages.append((stream, payload))
            self.times.append(ts)
        self.speed = speed
        self.broadcast = broadcast
        self.published: dict[str, list[bytes]] = {}
        self._pub_done: set[str] = set()
        self._pub_cond: Optional[asyncio.Condition] = None
        self.drop = drop or set()
        self.close_after = close_after or set()
        self.lose_on_reconnect = lose_on_reconnect
        self.reject_handshakes = reject_handshakes
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.yield_every = yield_every
        self.sent: list[bytes] = []
        self.dropped: list[bytes] = []
        self.lost: list[bytes] = []
        self.connections: list[str] = []
        self.handshakes_rejected = 0
        self.snapshot_requests: Counter[str] = Counter()
        self._cursor: dict[str, int] = {}
        self._ordinal: Counter[str] = Counter()
        self._book: dict[str, tuple[dict[str, float], dict[str, float], int]] = {}
        self._early: defaultdict[str, list[bytes]] = defaultdict(list)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Any = None
        self.port = 0
        self.all_sent = threading.Event()
        self._lock = threading.Lock()

    # -- the true book --------------------------------------------------------
    def _passed(self, idx: int, stream: str, payload: bytes) -> None:
        """The cursor moved past message ``idx``: keep the true book."""
        sym = stream.split("@", 1)[0].upper()
        snap = self.snapshot_at.get(sym)
        if "@depth" in stream:
            self._early[sym].append(payload)
        if snap is not None and sym not in self._book and idx >= snap[0]:
            s = snap[1]
            self._book[sym] = ({p: float(q) for p, q, *_ in s["bids"]}, {p: float(q) for p, q, *_ in s["asks"]},
                               s["lastUpdateId"])
            for early in self._early.pop(sym, []):  # diffs received before the snapshot came back
                self._apply(sym, early)
            return
        if "@depth" in stream and sym in self._book:
            self._early.pop(sym, None)
            self._apply(sym, payload)

    def _apply(self, sym: str, payload: bytes) -> None:
        d = json.loads(payload)["data"]
        bids, asks, last = self._book[sym]
        if d["u"] <= last:
            return
        for side, levels in ((bids, d["b"]), (asks, d["a"])):
            for p, q in levels:
                if float(q) == 0.0:
                    side.pop(p, None)
                else:
                    side[p] = float(q)
        self._book[sym] = (bids, asks, d["u"])

    def book_top(self, symbol: str) -> tuple[float, float, int]:
        """Best bid, best ask and last update id of the true book."""
        bids, asks, last = self._book[symbol]
        return max(map(float, bids)), min(map(float, asks)), last

    def _snapshot(self, symbol: str, limit: int) -> bytes:
        with self._lock:
            if symbol in self._book:
                bids, asks, last = self._book[symbol]
                b = sorted(bids.items(), key=lambda kv: -float(kv[0]))[:limit]
                a = sorted(asks.items(), key=lambda kv: float(kv[0]))[:limit]
                body = {"lastUpdateId": last, "bids": [[p, repr(q)] for p, q in b],
                        "asks": [[p, repr(q)] for p, q in a]}
            else:
                body = self.snapshot_at[symbol][1]
        return json.dumps(body).encode()

    # -- HTTP and websocket ------------------------------------------------------
    def _process_request(self, connection: Any, request: Any) -> Optional[Response]:
        url = urlsplit(request.path)
        if url.path in ("/api/v3/depth", "/fapi/v1/depth"):
            q = parse_qs(url.query)
            sym = q["symbol"][0].upper()
            self.snapshot_requests[sym] += 1
            if sym not in self.snapshot_at:
                return Response(400, "Bad Request", Headers([("Content-Type", "application/json")]),
                                b'{"code":-1121,"msg":"Invalid symbol."}')
            body = self._snapshot(sym, int(q.get("limit", ["1000"])[0]))
            return Response(200, "OK", Headers([("Content-Type", "application/json"),
                                                ("Content-Length", str(len(body)))]), body)
        if self.handshakes_rejected < self.reject_handshakes:
            self.handshakes_rejected += 1
            return connection.respond(503, "try again later\n")
        return None

    async def _pace(self, loop: asyncio.AbstractEventLoop, t0_wall: float, t0_rec: int, i: int) -> None:
        """Wait until message ``i`` is due: recorded receive times, ``speed`` times faster."""
        if self.speed is not None:
            wait = t0_wall + (self.times[i] - t0_rec) / 1e9 / self.speed - loop.time()
            if wait > 0.001:
                await asyncio.sleep(wait)

    async def _publish(self, path: str, streams: set[str]) -> None:
        """Broadcast mode: one paced timeline per path, as the exchange
        publishes it whether anyone listens or not."""
        loop = asyncio.get_running_loop()
        assert self._pub_cond is not None
        t0_wall, t0_rec = loop.time(), self.times[0]
        timeline = self.published[path]
        for i, (stream, payload) in enumerate(self.messages):
            if stream not in streams:
                continue
            await self._pace(loop, t0_wall, t0_rec, i)
            k = self._ordinal[stream]
            self._ordinal[stream] += 1
            with self._lock:
                self._passed(i, stream, payload)
            if (stream, k) in self.drop:
                self.dropped.append(payload)
                continue
            timeline.append(payload)
            async with self._pub_cond:
                self._pub_cond.notify_all()
        self._pub_done.add(path)
        if self._pub_done >= set(self.connections):
            self.all_sent.set()
        async with self._pub_cond:
            self._pub_cond.notify_all()

    async def _broadcast_handler(self, ws: Any, path: str, streams: set[str]) -> None:
        self.connections.append(path)
        if self._pub_cond is None:
            self._pub_cond = asyncio.Condition()
        if path not in self.published:
            self.published[path] = []
            asyncio.get_running_loop().create_task(self._publish(path, streams))
        timeline = self.published[path]
        j = len(timeline)  # a new subscriber gets what is published from now on
        try:
            while True:
                while j < len(timeline):
                    await ws.send(timeline[j], text=True)
                    self.sent.append(timeline[j])
                    j += 1
                if path in self._pub_done:
                    break
                async with self._pub_cond:
                    def more(seen: int = j) -> bool:
                        return seen < len(timeline) or path in self._pub_done

                    await self._pub_cond.wait_for(more)
        except ConnectionClosed:
            return
        await ws.wait_closed()

    async def _handler(self, ws: Any) -> None:
        path = ws.request.path
        if self.broadcast:
            streams = set(parse_qs(urlsplit(path).query)["streams"][0].split("/"))
            return await self._broadcast_handler(ws, path, streams)
        streams = set(parse_qs(urlsplit(path).query)["streams"][0].split("/"))
        reconnect = path in self._cursor
        self.connections.append(path)
        i = self._cursor.get(path, 0)
        n_sent = 0
        msgs = self.messages
        if reconnect:
            lost = 0
            while i < len(msgs) and lost < self.lose_on_reconnect:
                stream, payload = msgs[i]
                if stream in streams:
                    with self._lock:
                        self._passed(i, stream, payload)
                    self.lost.append(payload)
                    lost += 1
                i += 1
        loop = asyncio.get_running_loop()
        t0_wall, t0_rec = loop.time(), self.times[i] if i < len(msgs) else 0
        while i < len(msgs):
            stream, payload = msgs[i]
            await self._pace(loop, t0_wall, t0_rec, i)
            i += 1
            self._cursor[path] = i
            if stream not in streams:
                continue
            k = self._ordinal[stream]
            self._ordinal[stream] += 1
            with self._lock:
                self._passed(i - 1, stream, payload)
            if (stream, k) in self.drop:
                self.dropped.append(payload)
                continue
            try:
                await ws.send(payload, text=True)
            except ConnectionClosed:  # the client went away (e.g. a scheduled reconnect)
                self._cursor[path] = i - 1
                return
            self.sent.append(payload)
            n_sent += 1
            if n_sent % self.yield_every == 0:
                await asyncio.sleep(0)
            if len(self.sent) in self.close_after:
                await ws.close()
                return
        self._cursor[path] = i
        if all(self._cursor.get(p, 0) >= len(msgs) for p in set(self.connections)):
            self.all_sent.set()
        await ws.wait_closed()

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> ReplayExchange:
        started = threading.Event()

        async def main() -> None:
            self._server = await serve(self._handler, "127.0.0.1", 0, process_request=self._process_request,
                                       ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
                                       max_size=2**24)
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()
            await self._server.serve_forever()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(main())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert started.wait(10), "the replay exchange did not start"
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def depth_url(self, market: str) -> str:
        return f"http://127.0.0.1:{self.port}" + ("/fapi/v1/depth" if market == "usdm" else "/api/v3/depth")

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ReplayExchange:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def stream_counts(payloads: list[bytes]) -> dict[str, int]:
    c: defaultdict[str, int] = defaultdict(int)
    for p in payloads:
        c[_stream_of(p) or "?"] += 1
    return dict(c)

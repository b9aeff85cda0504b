"""InfluxDB v2 sink: batched, retried with backoff, bounded, never blocking.

Points go through influxdb-client's batching :class:`WriteApi` (a background
thread: batches of ``batch_size`` or every ``flush_interval_ms``; a failed
batch is retried with exponential backoff up to ``max_retries`` /
``max_retry_time_ms``). ticklet adds the bound: points handed over but not yet
confirmed are counted, and while ``max_buffered_points`` of them are pending
(the server is down or slow) new points are dropped, counted and logged
instead of queued, so memory stays bounded and the dataflow never waits. A
batch that still fails after its retries, or that the server rejects (4xx:
a wrong token, a missing bucket), is counted as failed and logged in one
line (at most one line per 5 s, and the first of each HTTP status); 4xx
answers are never retried. A partial write (422: a field whose type changed,
a point outside the bucket's retention) counts the points the server
dropped as failed (its ``dropped=N``) and the rest as written.

Shutdown honours ``max_close_wait_ms``: :meth:`InfluxWriter.close` waits at
most that long for the pending points, then gives up on them: they are
counted as ``abandoned``, their retries stop at once, and the writer's
thread is a daemon, so a server that is down cannot hold the process.

Counters (:attr:`InfluxWriter.stats`): ``written``, ``dropped`` (over the
bound), ``failed`` (after retries, or rejected), ``abandoned`` (still pending
when the close wait ran out), ``pending``. The token is a
:class:`~pydantic.SecretStr`, revealed only to the client inside ``build``.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from influxdb_client import InfluxDBClient, Point, WriteOptions
from influxdb_client.client.write.retry import WritesRetry
from influxdb_client.client.write_api import WriteType
from reactivex.scheduler import NewThreadScheduler, ThreadPoolScheduler

from sinks.influx_config import InfluxConfig
from sinks.influx_points import to_point
from ticklet.events import Bar, Count, ErrorRecord, Forecast, ForecastRecord

__all__ = ["InfluxConfig", "InfluxSink", "InfluxWriter"]

log = logging.getLogger(__name__)

#: what a rejected write means, by HTTP status (the server's own message follows)
_HINTS = {
    400: "the server rejected the points (not retried)",
    401: "unauthorized: TICKLET_INFLUX__TOKEN is wrong or revoked (not retried)",
    403: "forbidden: the token may not write to this bucket (not retried)",
    404: "not found: check TICKLET_INFLUX__ORG and TICKLET_INFLUX__BUCKET (not retried)",
    413: "request too large: lower TICKLET_INFLUX__BATCH_SIZE (not retried)",
    422: "partial write: the server dropped points, kept the rest (not retried)",
}
_DROPPED = re.compile(r"\bdropped=(\d+)")


class WriterClosed(Exception):
    """A batch still retrying when :meth:`InfluxWriter.close` gave up on it."""


def describe(exc: BaseException) -> str:
    """One line for a failed write: HTTP status, what it means, the server's
    message. Never the request (its headers carry the token)."""
    status = getattr(exc, "status", None)
    if status is None:
        reason = getattr(exc, "reason", None)  # urllib3's MaxRetryError: the last cause
        return f"{type(exc).__name__}: {reason or exc}".replace("\n", " ")[:500]
    body = getattr(exc, "body", None) or b""
    try:
        msg = json.loads(body)["message"]
    except Exception:
        msg = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    hint = _HINTS.get(status, getattr(exc, "reason", "") or "")
    return f"HTTP {status} {hint}: {msg}".replace("\n", " ")[:500]


class _DaemonExecutor:
    """The writer's one HTTP thread, in order (the submit() of an executor):
    a daemon, so a write that close() gave up on never keeps the process
    alive. (influxdb-client's default is one non-daemon pool thread shared
    by every writer of the process.)"""

    def __init__(self, name: str):
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fut, fn = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as ex:  # reported through the future, as a pool would
                fut.set_exception(ex)

    def submit(self, fn: Callable[[], Any]) -> Future:
        fut: Future = Future()
        self._q.put((fut, fn))
        return fut

    def shutdown(self) -> None:
        self._q.put(None)


class _WriteScheduler(NewThreadScheduler):
    """reactivex scheduler running everything on one :class:`_DaemonExecutor`."""

    def __init__(self, executor: _DaemonExecutor):
        super().__init__(lambda target: ThreadPoolScheduler.ThreadPoolThread(executor, target))  # type: ignore[arg-type]


class _Retry(WritesRetry):
    """influxdb-client's retry (backoff, max retries, max retry time), whose
    wait between two attempts ends, and whose next attempt is refused, as
    soon as ``abort`` is set (the writer closed)."""

    def __init__(self, abort: threading.Event | None = None, **kw: Any):
        super().__init__(**kw)
        self.abort = abort

    def new(self, **kw: Any) -> _Retry:
        kw.setdefault("abort", self.abort)
        return super().new(**kw)

    def increment(self, *args: Any, **kw: Any) -> _Retry:
        if self.abort is not None and self.abort.is_set():
            raise WriterClosed("the writer closed: batch abandoned")
        return super().increment(*args, **kw)

    def sleep(self, response: Any = None) -> None:
        delay = self.get_retry_after(response) if self.respect_retry_after_header and response else None
        if not delay:
            delay = self.get_backoff_time()
        if delay > 0 and self.abort is not None and self.abort.wait(delay):
            raise WriterClosed("the writer closed: batch abandoned")


class _Options(WriteOptions):
    """WriteOptions whose retries stop when ``abort`` is set."""

    def __init__(self, abort: threading.Event, **kw: Any):
        super().__init__(**kw)
        self.abort = abort

    def to_retry_strategy(self, **kwargs: Any) -> _Retry:
        return _Retry(abort=self.abort, total=self.max_retries, retry_interval=self.retry_interval / 1_000,
                      jitter_interval=self.jitter_interval / 1_000, max_retry_delay=self.max_retry_delay / 1_000,
                      max_retry_time=self.max_retry_time / 1_000, exponential_base=self.exponential_base,
                      retry_callback=kwargs.get("retry_callback"))


class InfluxWriter:
    """One client and write API with bounded pending points."""

    def __init__(self, cfg: InfluxConfig):
        self.bucket, self.org = cfg.bucket, cfg.org
        self.max_buffered = cfg.max_buffered_points
        self.max_close_wait_ms = cfg.max_close_wait_ms
        self._lock = threading.Lock()
        self.written = self.dropped = self.failed = self.abandoned = self.pending = 0
        self._closed = False
        self._last_drop_log = self._last_fail_log = 0.0
        self._fail_statuses: set = set()
        self._abort = threading.Event()
        self._executor = _DaemonExecutor("influx-write")
        self._client = InfluxDBClient(url=cfg.url, token=cfg.token.get_secret_value(), org=cfg.org,
                                      timeout=cfg.timeout_ms)
        self._api = self._client.write_api(
            write_options=_Options(
                self._abort, write_type=WriteType.batching, batch_size=cfg.batch_size,
                flush_interval=cfg.flush_interval_ms, retry_interval=cfg.retry_interval_ms,
                max_retries=cfg.max_retries, max_retry_delay=cfg.max_retry_delay_ms,
                max_retry_time=cfg.max_retry_time_ms, max_close_wait=cfg.max_close_wait_ms,
                exponential_base=2, write_scheduler=_WriteScheduler(self._executor)),
            success_callback=self._ok, error_callback=self._error)

    @staticmethod
    def _lines(data: Any) -> int:
        body = data if isinstance(data, (bytes, bytearray)) else str(data).encode()
        return body.count(b"\n") + 1 if body else 0

    def _ok(self, conf: Any, data: Any) -> None:
        n = self._lines(data)
        with self._lock:
            self.written += n
            if self._closed:  # in flight when close() gave up, and made it after all
                self.abandoned -= n
            else:
                self.pending -= n

    def _error(self, conf: Any, data: Any, exc: Exception) -> None:
        n = self._lines(data)
        status = getattr(exc, "status", None)
        m = _DROPPED.search(describe(exc)) if status == 422 else None
        lost = min(int(m.group(1)), n) if m else n  # a partial write kept the others
        with self._lock:
            if self._closed:  # already counted as abandoned
                return
            self.failed += lost
            self.written += n - lost
            self.pending -= n
            total = self.failed
        now = time.monotonic()
        if status not in self._fail_statuses or now - self._last_fail_log >= 5.0:
            self._fail_statuses.add(status)
            self._last_fail_log = now
            log.error("influx: %d points not written (%d in all), %s", lost, total, describe(exc))

    def write(self, points: Sequence[Point]) -> int:
        """Hand points over without blocking; returns how many were dropped."""
        if not points:
            return 0
        with self._lock:
            room = max(self.max_buffered - self.pending, 0)
            take = points[:room]
            dropped = len(points) - len(take)
            self.pending += len(take)
            self.dropped += dropped
            total_dropped = self.dropped
        if take:
            self._api.write(bucket=self.bucket, org=self.org, record=list(take))
        if dropped:
            now = time.monotonic()
            if now - self._last_drop_log >= 5.0:  # one line per 5 s at most
                self._last_drop_log = now
                log.warning("influx: %d points pending (bound %d): dropped %d new points (%d in all)",
                            self.max_buffered, self.max_buffered, dropped, total_dropped)
        return dropped

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"written": self.written, "dropped": self.dropped, "failed": self.failed,
                    "abandoned": self.abandoned, "pending": self.pending}

    def close(self) -> None:
        """Flush what is pending, waiting at most ``max_close_wait_ms``; what
        is still pending then is abandoned (counted) and its retries stop."""
        t0 = time.monotonic()
        self._api.close()  # flushes, then waits up to max_close_wait for the batches in flight
        self._abort.set()
        with self._lock:
            self._closed = True
            left, self.pending = self.pending, 0
            self.abandoned += left
        self._executor.shutdown()
        self._client.close()
        if left:
            log.error("influx: closed after %.1f s (max_close_wait_ms %d): %d points not written (server down or "
                      "slow); %s", time.monotonic() - t0, self.max_close_wait_ms, left, self.stats)
        else:
            log.info("influx: closed; %s", self.stats)


class _Partition(StatelessSinkPartition[Any]):
    def __init__(self, writer: InfluxWriter, features: Sequence[str], worker: int, health_s: float):
        self._w = writer
        self._features = tuple(features)
        self._worker = str(worker)
        self._health_s = health_s
        self._ticks = 0
        self._dead = 0
        self._last_event = 0
        self._last_health = time.monotonic()
        self._ticks_at_health = 0

    def write_batch(self, items: list[Any]) -> None:
        points: list[Point] = []
        feats = self._features
        for rec in items:
            t = type(rec)
            if t is Count:
                if rec.name == "ticks":
                    self._ticks += rec.n
                continue
            if t is ErrorRecord:
                self._dead += 1
                continue
            if t is Bar:
                self._last_event = max(self._last_event, rec.ts_end)
            elif t is Forecast or t is ForecastRecord:
                self._last_event = max(self._last_event, rec.ts_forecast)
            p = to_point(rec, feats)
            if p is not None:
                points.append(p)
        now = time.monotonic()
        if now - self._last_health >= self._health_s:
            points.append(self._health_point(now))
        self._w.write(points)

    def _health_point(self, now: float) -> Point:
        rate = (self._ticks - self._ticks_at_health) / max(now - self._last_health, 1e-9)
        self._last_health, self._ticks_at_health = now, self._ticks
        wall_ns = time.time_ns()
        s = self._w.stats
        p = Point("health").tag("worker", self._worker)
        p.field("ticks_total", self._ticks).field("ticks_per_s", float(rate))
        p.field("dead_letters_total", self._dead)
        p.field("points_dropped", s["dropped"]).field("points_failed", s["failed"])
        if self._last_event:
            p.field("lag_s", (wall_ns - self._last_event) / 1e9)
        return p.time(wall_ns)

    def close(self) -> None:
        self._w.write([self._health_point(time.monotonic())])  # the final totals
        self._w.close()


class InfluxSink(DynamicSink[Any]):
    """Write forecasts, scored forecasts, metrics, bars, chosen features and
    pipeline health to InfluxDB (one writer per worker, built in ``build``).

    Items are records (see :mod:`sinks.influx_points`) plus :class:`Count`
    and :class:`ErrorRecord` items, which feed the health point.
    """

    def __init__(self, cfg: InfluxConfig):
        self._cfg = cfg

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        cfg = self._cfg
        return _Partition(InfluxWriter(cfg), cfg.features, worker_index, cfg.health_interval_s)

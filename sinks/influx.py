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
line; 4xx answers are never retried. Each kind of line (a failure by its
HTTP status or error, a retry, points dropped over the bound) is logged the
first time, then at most once every 5 s, saying how many were held back
(:mod:`sinks.ratelimit`); influxdb-client's own lines about each batch (an
ERROR block with the response's headers, a warning per retry) are dropped.
A partial write (422: a field whose type changed, a point outside the
bucket's retention) counts the points the server dropped as failed (its
``dropped=N``) and the rest as written.

Shutdown honours ``max_close_wait_ms``: :meth:`InfluxWriter.close` waits at
most that long for the pending points, then gives up on them: they are
counted as ``abandoned``, their retries stop at once, and the writer's
thread is a daemon, so a server that is down cannot hold the process.

Counters (:attr:`InfluxWriter.stats`): ``written``, ``dropped`` (over the
bound), ``failed`` (after retries, or rejected), ``abandoned`` (still pending
when the close wait ran out), ``pending``. Every point handed over is in
exactly one of them. The token is a :class:`~pydantic.SecretStr`, revealed
only to the client inside ``build``.

At start, :func:`unwritable` asks the server to write no points, which
checks the URL, token, org, bucket and write permission without storing
anything (the dataflow stops with one line and exit status 2 when it fails).
At the end of a run, a sink whose points were not all written (dropped,
failed or abandoned) ends the process with one line and
:data:`~sinks.fatal.EXIT_WRITE_FAILED` (:func:`sinks.fatal.stop_run`), so
that no summary lists InfluxDB as written: once the dataflow has ended
(at the process's exit), so that the other sinks, which may close after it,
are complete.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Optional

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from influxdb_client import InfluxDBClient, Point, WriteOptions, WritePrecision
from influxdb_client.client.write.retry import WritesRetry
from influxdb_client.client.write_api import WriteType
from influxdb_client.rest import ApiException
from influxdb_client.service.write_service import WriteService
from reactivex.scheduler import NewThreadScheduler, ThreadPoolScheduler
from urllib3.exceptions import HTTPError

from core.events import Bar, Count, ErrorRecord, Forecast, ForecastRecord
from sinks.fatal import EXIT_WRITE_FAILED, stop_run
from sinks.influx_config import InfluxConfig
from sinks.influx_points import Stamped, to_point
from sinks.ratelimit import rate_limited

__all__ = ["InfluxConfig", "InfluxSink", "InfluxWriter", "describe", "unwritable"]

log = logging.getLogger(__name__)
#: failed writes, retries and dropped points: the first line of a kind, then at most one every 5 s
_writes = rate_limited(f"{__name__}.writes", 5.0)

#: what a rejected write means, by HTTP status (the server's own message follows)
_HINTS = {
    400: "the server rejected the points",
    401: "unauthorized: TICKLET_INFLUX__TOKEN is wrong or revoked",
    403: "forbidden: the token (TICKLET_INFLUX__TOKEN) may not write to this bucket",
    404: "not found: check TICKLET_INFLUX__ORG and TICKLET_INFLUX__BUCKET",
    413: "request too large: lower TICKLET_INFLUX__BATCH_SIZE",
    422: "partial write: the server dropped points, kept the rest",
}
_DROPPED = re.compile(r"\bdropped[= ](\d+)")  # "dropped=3" (type conflict), "dropped 1000 points" (retention)
#: influxdb-client's own lines about one batch (the writer reports each failure itself, rate-limited)
_CLIENT_BATCH_LINES = frozenset({
    "The batch item wasn't processed successfully because: %s",
    "Reached max_close_wait (%s seconds) waiting for batches to finish writing. Force closing",
})


#: the writer's HTTP thread
_THREAD = "influx-write"


class WriterClosed(Exception):
    """A batch still retrying when :meth:`InfluxWriter.close` gave up on it."""


def _failure(exc: BaseException) -> tuple[str, str, str]:
    """(kind, what it means, the server's message or the error) of a failed request.

    The kind is ``HTTP <status>`` or the error's type.
    """
    status = getattr(exc, "status", None)
    if status is None:
        reason = getattr(exc, "reason", None)  # urllib3's MaxRetryError: the last cause
        return type(exc).__name__, "the server did not answer", str(reason or exc).replace("\n", " ")[:400]
    body = getattr(exc, "body", None) or b""
    try:
        msg = json.loads(body)["message"]
    except Exception:
        msg = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    return f"HTTP {status}", _HINTS.get(status, getattr(exc, "reason", "") or ""), msg.replace("\n", " ")[:400]


def describe(exc: BaseException) -> str:
    """One line for a failed request: HTTP status, what it means, the server's message.

    Never the request (its headers carry the token).

    >>> describe(ConnectionRefusedError(111, "Connection refused"))
    'ConnectionRefusedError (the server did not answer): [Errno 111] Connection refused'
    """
    kind, hint, msg = _failure(exc)
    return f"{kind} {hint}: {msg}" if kind.startswith("HTTP") else f"{kind} ({hint}): {msg}"


class _ClientBatchLines(logging.Filter):
    """Drops influxdb-client's lines about each batch and each retry.

    Also urllib3's line about each retry of the writer's thread.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "urllib3.connectionpool":
            return not (record.threadName == _THREAD and str(record.msg).startswith("Retrying ("))
        return record.msg not in _CLIENT_BATCH_LINES and not record.name.endswith(".write.retry")


def _quiet_client() -> None:
    """influxdb-client's write and retry loggers without their lines about each batch (added once)."""
    for name in ("influxdb_client.client.write_api", "influxdb_client.client.write.retry", "urllib3.connectionpool"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ClientBatchLines) for f in logger.filters):
            logger.addFilter(_ClientBatchLines())


def unwritable(cfg: InfluxConfig) -> Optional[str]:
    """Why the sink could not write to ``cfg``'s server, org and bucket, as one line naming the settings.

    None when it can.

    It writes no points: InfluxDB checks the token, the org, the bucket and
    the permission to write there, answers 204 and stores nothing. A server
    that does not answer, or answers 5xx (starting up), is asked again until
    ``connect_timeout_s`` has passed; a 4xx answer is final.
    """
    deadline = time.monotonic() + cfg.connect_timeout_s
    wait = 0.25
    with InfluxDBClient(url=cfg.url, token=cfg.token.get_secret_value(), org=cfg.org, timeout=cfg.timeout_ms,
                        retries=False) as client:
        service = WriteService(client.api_client)
        while True:
            left = deadline - time.monotonic()
            try:
                service.post_write(cfg.org, cfg.bucket, b"", precision=WritePrecision.NS,
                                   _request_timeout=max(min(left * 1000, cfg.timeout_ms), 50))  # in ms
                return None
            except (ApiException, HTTPError, OSError) as ex:
                why, status = describe(ex), getattr(ex, "status", None)
            if (status is not None and status < 500) or time.monotonic() + wait > deadline:
                break
            time.sleep(wait)
            wait = min(wait * 2, 2.0)
    if status is not None and status < 500:
        return (f"InfluxDB at {cfg.url} (TICKLET_INFLUX__URL) refuses writes to org {cfg.org!r}, bucket "
                f"{cfg.bucket!r}: {why}")
    return (f"cannot reach InfluxDB at {cfg.url} (TICKLET_INFLUX__URL) within {cfg.connect_timeout_s:g} s "
            f"(TICKLET_INFLUX__CONNECT_TIMEOUT_S): {why}")


class _DaemonExecutor:
    """The writer's one HTTP thread, in order (the submit() of an executor), a daemon.

    As a daemon, a write that close() gave up on never keeps the process
    alive. (influxdb-client's default is one non-daemon pool thread shared
    by every writer of the process.)
    """

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
    """influxdb-client's retry (backoff, max retries, max retry time), cut short when ``abort`` is set.

    The wait between two attempts ends, and the next attempt is refused, as
    soon as ``abort`` is set (the writer closed).
    """

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
    """WriteOptions whose retries stop when ``abort`` is set.

    A write sent again (after a read timeout) rewrites the same points:
    idempotent.
    """

    def __init__(self, abort: threading.Event, **kw: Any):
        super().__init__(**kw)
        self.abort = abort

    def to_retry_strategy(self, **kwargs: Any) -> _Retry:
        return _Retry(abort=self.abort, total=self.max_retries, retry_interval=self.retry_interval / 1_000,
                      jitter_interval=self.jitter_interval / 1_000, max_retry_delay=self.max_retry_delay / 1_000,
                      max_retry_time=self.max_retry_time / 1_000, exponential_base=self.exponential_base,
                      retry_callback=kwargs.get("retry_callback"),
                      allowed_methods=["POST"])  # as influxdb-client's: 429/5xx and read timeouts are retried


class InfluxWriter:
    """One client and write API with bounded pending points."""

    def __init__(self, cfg: InfluxConfig):
        self.bucket, self.org = cfg.bucket, cfg.org
        self.max_buffered = cfg.max_buffered_points
        self.max_close_wait_ms = cfg.max_close_wait_ms
        self._lock = threading.Lock()
        self.written = self.dropped = self.failed = self.abandoned = self.pending = 0
        self._closed = False
        self._abort = threading.Event()
        _quiet_client()
        self._executor = _DaemonExecutor(_THREAD)
        self._client = InfluxDBClient(url=cfg.url, token=cfg.token.get_secret_value(), org=cfg.org,
                                      timeout=cfg.timeout_ms)
        self._api = self._client.write_api(
            write_options=_Options(
                self._abort, write_type=WriteType.batching, batch_size=cfg.batch_size,
                flush_interval=cfg.flush_interval_ms, retry_interval=cfg.retry_interval_ms,
                max_retries=cfg.max_retries, max_retry_delay=cfg.max_retry_delay_ms,
                max_retry_time=cfg.max_retry_time_ms, max_close_wait=cfg.max_close_wait_ms,
                exponential_base=2, write_scheduler=_WriteScheduler(self._executor)),
            success_callback=self._ok, error_callback=self._error, retry_callback=self._retrying)

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
        kind, hint, msg = _failure(exc)
        m = _DROPPED.search(msg) if kind == "HTTP 422" else None
        lost = min(int(m.group(1)), n) if m else n  # a partial write kept the others
        with self._lock:
            if self._closed:  # already counted as abandoned
                return
            self.failed += lost
            self.written += n - lost
            self.pending -= n
            total = self.failed
        final = " (not retried)" if kind.startswith("HTTP 4") else ""
        _writes.error("influx: %s %s%s: %d points not written (%d in all): %s", kind, hint, final, lost, total, msg)

    def _retrying(self, conf: Any, data: Any, exc: Exception) -> None:
        kind, hint, msg = _failure(exc)
        _writes.warning("influx: %s (%s), retrying a batch of %d points with backoff: %s", kind, hint,
                        self._lines(data), msg)

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
            _writes.warning("influx: %s (TICKLET_INFLUX__MAX_BUFFERED_POINTS %d): dropped %d new points (%d in all)",
                            "points pending at the bound, the server is down or slow", self.max_buffered, dropped,
                            total_dropped)
        return dropped

    @property
    def stats(self) -> dict[str, int]:
        """The writer's point counts: written, dropped, failed, abandoned and pending."""
        with self._lock:
            return {"written": self.written, "dropped": self.dropped, "failed": self.failed,
                    "abandoned": self.abandoned, "pending": self.pending}

    def close(self) -> None:
        """Flush what is pending, waiting at most ``max_close_wait_ms``.

        What is still pending then is abandoned (counted) and its retries
        stop.
        """
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


class _Verdict:
    """The writers of one process's partitions, whose totals are reported when the last one closes.

    The report is one line, or, when points were not written,
    :func:`~sinks.fatal.stop_run` with
    :data:`~sinks.fatal.EXIT_WRITE_FAILED`.
    """

    def __init__(self, cfg: InfluxConfig, report: bool):
        self._cfg, self._report = cfg, report
        self._lock = threading.Lock()
        self._open = 0
        self._totals: dict[str, int] = {}

    def opened(self) -> None:
        with self._lock:
            self._open += 1

    def closed(self, handed: int, stats: dict[str, int]) -> None:
        with self._lock:
            t = self._totals
            for k, v in {"handed": handed, **stats}.items():
                t[k] = t.get(k, 0) + v
            self._open -= 1
            if self._open:
                return
        cfg, where = self._cfg, f"InfluxDB at {self._cfg.url}, bucket {self._cfg.bucket!r}"
        lost = t["dropped"] + t["failed"] + t["abandoned"]
        if lost:  # at the exit, once the other outputs are complete; nothing may list InfluxDB as written
            atexit.register(stop_run, f"{where}: {lost} of {t['handed']} points not written (dropped over "
                            f"TICKLET_INFLUX__MAX_BUFFERED_POINTS: {t['dropped']}, failed or rejected: {t['failed']}, "
                            f"abandoned after TICKLET_INFLUX__MAX_CLOSE_WAIT_MS ({cfg.max_close_wait_ms} ms): "
                            f"{t['abandoned']}; see the lines above). The run ends with status {EXIT_WRITE_FAILED}.",
                            EXIT_WRITE_FAILED)
            return
        if self._report:  # the end-of-run report, beside the summary (sinks.report)
            sys.stderr.write(f"ticklet: {where}: {t['written']} points written\n")
            sys.stderr.flush()


class _Partition(StatelessSinkPartition[Any]):
    def __init__(self, writer: InfluxWriter, cfg: InfluxConfig, worker: int, verdict: _Verdict):
        self._w = writer
        self._verdict = verdict
        self._features = tuple(cfg.features)
        self._worker = str(worker)
        self._health_s = cfg.health_interval_s
        self._ticks = 0
        self._dead = 0
        self._handed = 0
        self._last_event = 0
        self._last_health = time.monotonic()
        self._last_health_ns = 0
        self._ticks_at_health = 0
        verdict.opened()

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
            at = None
            if t is Stamped:  # a record whose point goes after its own time (sinks.influx_points.stamp)
                rec, at = rec
                t = type(rec)
            if t is Bar:
                self._last_event = max(self._last_event, rec.ts_end)
            elif t is Forecast or t is ForecastRecord:
                self._last_event = max(self._last_event, rec.ts_forecast)
            p = to_point(rec, feats, at)
            if p is not None:
                points.append(p)
        now = time.monotonic()
        if now - self._last_health >= self._health_s:
            points.append(self._health_point(now))
        self._handed += len(points)
        self._w.write(points)

    def _health_point(self, now: float) -> Point:
        rate = (self._ticks - self._ticks_at_health) / max(now - self._last_health, 1e-9)
        self._last_health, self._ticks_at_health = now, self._ticks
        wall_ns = self._last_health_ns = max(time.time_ns(), self._last_health_ns + 1)  # one point each
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
        self._handed += 1
        self._w.close()
        self._verdict.closed(self._handed, self._w.stats)


class InfluxSink(DynamicSink[Any]):
    """Write forecasts, scored forecasts, metrics, bars, chosen features and pipeline health to InfluxDB.

    One writer per worker, built in ``build``.

    Items are records (see :mod:`sinks.influx_points`), as they are or
    :class:`~sinks.influx_points.Stamped`, plus :class:`Count` and
    :class:`ErrorRecord` items, which feed the health point. When the last
    writer of the process closes, the sink reports its totals: with
    ``report``, ``ticklet: InfluxDB at URL, bucket B: N points written`` on
    stderr; when points were not written (dropped, failed or abandoned), one
    line with their count and the process ends with status 74
    (:data:`~sinks.fatal.EXIT_WRITE_FAILED`).
    """

    def __init__(self, cfg: InfluxConfig, report: bool = True):
        self._cfg = cfg
        self._verdict = _Verdict(cfg, report)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        """The writer of one worker, reporting to the process's totals."""
        return _Partition(InfluxWriter(self._cfg), self._cfg, worker_index, self._verdict)

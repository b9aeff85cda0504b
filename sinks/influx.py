"""InfluxDB v2 sink: batched, retried with backoff, bounded, never blocking.

Points go through influxdb-client's batching :class:`WriteApi` (a background
thread: batches of ``batch_size`` or every ``flush_interval_ms``; a failed
batch is retried with exponential backoff up to ``max_retries`` /
``max_retry_time_ms``). ticklet adds the bound: points handed over but not yet
confirmed are counted, and while ``max_buffered_points`` of them are pending
(the server is down or slow) new points are dropped, counted and logged
instead of queued, so memory stays bounded and the dataflow never waits. A
batch that still fails after its retries is counted as failed and logged.

Counters (:attr:`InfluxWriter.stats`): ``written``, ``dropped`` (over the
bound), ``failed`` (after retries), ``pending``. The token is a
:class:`~pydantic.SecretStr`, revealed only to the client inside ``build``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from influxdb_client import InfluxDBClient, Point, WriteOptions
from influxdb_client.client.write_api import WriteType

from sinks.influx_config import InfluxConfig
from sinks.influx_points import to_point
from ticklet.events import Bar, Count, ErrorRecord, Forecast, ForecastRecord

__all__ = ["InfluxConfig", "InfluxSink", "InfluxWriter"]

log = logging.getLogger(__name__)


class InfluxWriter:
    """One client and write API with bounded pending points."""

    def __init__(self, cfg: InfluxConfig):
        self.bucket, self.org = cfg.bucket, cfg.org
        self.max_buffered = cfg.max_buffered_points
        self._lock = threading.Lock()
        self.written = self.dropped = self.failed = self.pending = 0
        self._last_drop_log = 0.0
        self._client = InfluxDBClient(url=cfg.url, token=cfg.token.get_secret_value(), org=cfg.org,
                                      timeout=cfg.timeout_ms)
        self._api = self._client.write_api(
            write_options=WriteOptions(
                write_type=WriteType.batching, batch_size=cfg.batch_size,
                flush_interval=cfg.flush_interval_ms, retry_interval=cfg.retry_interval_ms,
                max_retries=cfg.max_retries, max_retry_delay=cfg.max_retry_delay_ms,
                max_retry_time=cfg.max_retry_time_ms, max_close_wait=cfg.max_close_wait_ms,
                exponential_base=2),
            success_callback=self._ok, error_callback=self._error)

    @staticmethod
    def _lines(data: Any) -> int:
        body = data if isinstance(data, (bytes, bytearray)) else str(data).encode()
        return body.count(b"\n") + 1 if body else 0

    def _ok(self, conf: Any, data: Any) -> None:
        n = self._lines(data)
        with self._lock:
            self.written += n
            self.pending -= n

    def _error(self, conf: Any, data: Any, exc: Exception) -> None:
        n = self._lines(data)
        with self._lock:
            self.failed += n
            self.pending -= n
        log.error("influx: %d points failed after retries and were dropped: %s", n, exc)

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
                    "pending": self.pending}

    def close(self) -> None:
        """Flush what is pending (waiting at most ``max_close_wait_ms``)."""
        self._api.close()
        self._client.close()
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

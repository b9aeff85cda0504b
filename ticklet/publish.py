"""``ticklet replay PATH... --to kafka``: publish recordings to Kafka.

Every recorded message goes to the ticks topic in ticklet's wire format
(:mod:`sources.wire`): keyed by instrument, with the original receive time as
both the Kafka timestamp (ms) and the ``ts_recv`` field (ns). Messages of all
files are merged in receive-time order. ``speed`` divides the gaps between
messages (``None``: as fast as possible); at a speed, a gap in event time
longer than ``max_gap_s`` (recordings of different days: a year apart, it
would be 49 days of sleep at ``--speed 10``) is skipped, with one line saying
so, naming the files on either side. The producer is idempotent with
``acks=all``; delivery failures are counted, logged and returned, never
swallowed.

A message the brokers have not acknowledged within ``delivery_timeout_s``
(``TICKLET_KAFKA__DELIVERY_TIMEOUT_S``, librdkafka's
``message.timeout.ms``) fails as timed out. Brokers that are gone make every
message time out, so the first time-out stops the replay: what is still
queued is purged, and the summary counts what was not delivered (exit
status 1 from the CLI) after about ``delivery_timeout_s``, not after
librdkafka's default of 5 minutes per queue-full of messages. Brokers that do
not answer within ``connect_timeout_s`` at start leave the topic unchecked (a
warning line), and the messages are produced anyway.

Ctrl-C (SIGINT) stops the replay where it is: what was produced is flushed,
and the summary counts it, with ``interrupted`` true (exit status 130 from
the CLI); a second Ctrl-C drops what is still queued (counted as
undelivered).
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional

from confluent_kafka import KafkaError, Producer

from core.events import instrument_key
from sinks.kafka import ensure_topic, kafka_unreachable, produce, producer_config
from sources.files import InputFormatError, StreamSpec, group_streams, line_ts, read_stream
from sources.wire import encode_tick, stream_symbol, with_symbol

__all__ = ["duration", "publish"]

log = logging.getLogger(__name__)


class _Quiet:
    """Move librdkafka's own lines (every failed connection attempt) to debug level.

    The replay's summary and its one error line say what failed.
    """

    def log(self, level: int, msg: str, *args: Any) -> None:
        log.debug(msg, *args)


def _lines(spec_idx: int, spec: Any) -> Iterator[tuple[int, int, bytes]]:
    prev = 0
    for block in read_stream(spec):
        for line in block:
            t = line_ts(line)
            prev = t if t >= 0 else prev
            yield prev, spec_idx, line


def duration(ns: int) -> str:
    """A span of time (ns) as a person reads it, to the minute or the hour.

    >>> duration(42 * 10**9), duration(3_000 * 10**9), duration(26 * 3_600 * 10**9 + 61 * 10**9)
    ('42 s', '50 min', '26 h 1 min')
    >>> duration((491 * 24 + 3) * 3_600 * 10**9)
    '491 d 3 h'
    """
    s = ns / 1e9
    if s < 120:
        return f"{s:.0f} s"
    m = int(s // 60)
    if m < 120:
        return f"{m} min"
    h = m // 60
    return f"{h} h {m % 60} min" if h < 48 else f"{h // 24} d {h % 24} h"


def _first_ts(spec: StreamSpec, path: str) -> int:
    """The first receive time (ns) in the recording ``path`` of ``spec`` (-1: none)."""
    for block in read_stream(dataclasses.replace(spec, files=(path,))):
        for line in block:
            t = line_ts(line)
            if t >= 0:
                return t
    return -1


class _Files:
    """Which file of its stream a message comes from, by its receive time: for the line that names a skipped gap.

    The files of a stream are merged in time order.
    """

    def __init__(self, specs: list[StreamSpec]):
        self._specs = specs
        self._starts: dict[int, list[tuple[int, str]]] = {}

    def at(self, idx: int, ts: int) -> str:
        spec = self._specs[idx]
        if len(spec.files) == 1:
            return spec.files[0]
        if idx not in self._starts:
            self._starts[idx] = sorted((_first_ts(spec, f), f) for f in spec.files)
        found = spec.files[0]
        for start, f in self._starts[idx]:
            if start <= ts:
                found = f
        return found


def publish(paths: list[str], brokers: list[str], topic: str, *, speed: Optional[float] = None,
            client_config: Optional[dict[str, Any]] = None, market: Optional[str] = None,
            partitions: int = 4, delivery_timeout_s: float = 30.0, connect_timeout_s: float = 15.0,
            linger_ms: int = 5, max_gap_s: Optional[float] = 60.0,
            on_produce: Optional[Callable[[str, int, float], None]] = None) -> dict[str, Any]:
    """Publish the recordings under ``paths``; return a summary.

    The summary: ``messages`` (handed to the producer), ``delivered``,
    ``failed`` (with a delivery error), ``undelivered`` (messages less
    delivered), ``stopped`` (why the replay stopped before the end of its
    input, or None), ``topic``, ``wall_s``, ``messages_per_s``,
    ``interrupted`` (Ctrl-C stopped it).

    ``on_produce(key, ts_recv, wall)`` is called after each message is handed
    to the producer (``wall``: :func:`time.time`), e.g. to measure latency.

    Raises
    ------
    InputFormatError
        An input that does not exist, cannot be read, or is not a websocket
        recording.
    """
    specs = group_streams(paths, market)
    bad = [s for s in specs if s.fmt != "ws"]
    if bad:
        raise InputFormatError(bad[0].files[0], f"a {bad[0].fmt} file: only websocket recordings can be replayed "
                               "to Kafka")
    cfg = {**producer_config(brokers, client_config, linger_ms=linger_ms), "logger": _Quiet(),
           "message.timeout.ms": max(1, round(delivery_timeout_s * 1000))}
    why = kafka_unreachable(brokers, client_config or {}, connect_timeout_s)
    if why is None:
        ensure_topic(cfg, topic, partitions, timeout_s=max(connect_timeout_s, delivery_timeout_s))
    else:  # brokers that come up within the delivery timeout still get every message
        log.warning("replay: Kafka at %s did not answer within %g s (TICKLET_KAFKA__CONNECT_TIMEOUT_S: %s): topic %r "
                    "not checked; producing anyway", ",".join(brokers), connect_timeout_s, why, topic)
    producer = Producer(cfg)
    failed: list[str] = []
    delivered = 0
    stopped: Optional[str] = None

    def on_delivery(err: Any, msg: Any) -> None:
        nonlocal delivered, stopped
        if err is None:
            delivered += 1
            return
        failed.append(str(err))
        if err.code() == KafkaError._MSG_TIMED_OUT and stopped is None:
            stopped = (f"a message was not acknowledged within {delivery_timeout_s:g} s "
                       f"(TICKLET_KAFKA__DELIVERY_TIMEOUT_S): {err.str()}")

    merged = heapq.merge(*(_lines(i, s) for i, s in enumerate(specs)))
    n = 0
    t_wall0 = time.monotonic()
    ts0: Optional[int] = None
    max_gap = None if max_gap_s is None else round(max_gap_s * 1e9)
    prev_ts, prev_idx = -1, 0  # the last message's receive time and stream
    files = _Files(specs)
    interrupted = False
    try:
        for ts, idx, line in merged:
            spec = specs[idx]
            if speed is not None:
                if ts0 is None:
                    ts0 = ts
                elif max_gap is not None and ts - prev_ts > max_gap:  # sent at once, as if it followed on
                    ts0 += ts - prev_ts
                    log.warning("replay: skipped a gap of %s in event time between %s and %s (longer than "
                                "--max-gap-s %g s)", duration(ts - prev_ts), files.at(prev_idx, prev_ts),
                                files.at(idx, ts), max_gap_s)
                wait = t_wall0 + (ts - ts0) / 1e9 / speed - time.monotonic()
                if wait > 0.0005:
                    producer.poll(0)
                    time.sleep(wait)
            prev_ts, prev_idx = ts, idx
            sp = line.find(b" ")
            has_ts = sp > 0 and line[:sp].isdigit()
            payload = line[sp + 1 :] if has_ts else line
            named = stream_symbol(payload)
            key = instrument_key(named or spec.symbol, spec.market)
            if named is None:  # a REST depth snapshot says whose book it is
                payload = with_symbol(payload, spec.symbol)
            value = encode_tick(ts, spec.market, payload) if has_ts else line
            produce(producer, topic, value, key.encode(), on_delivery=on_delivery, timestamp=ts // 1_000_000)
            if on_produce is not None:
                on_produce(key, ts, time.time())
            n += 1
            if n % 1000 == 0:
                producer.poll(0)
            if stopped is not None:  # the brokers are gone: the rest would time out too
                break
    except KeyboardInterrupt:  # Ctrl-C: what was produced is flushed and summed up
        interrupted = True
        stopped = f"stopped on request (SIGINT) after {n:,} messages"
    if stopped is not None and not interrupted:
        producer.purge()  # what is queued fails now (counted) instead of after another time-out
    try:
        producer.flush(delivery_timeout_s + 5.0)
    except KeyboardInterrupt:  # a second Ctrl-C: what is still queued is dropped (counted as undelivered)
        interrupted = True
        stopped = f"stopped on request (SIGINT) after {n:,} messages, the rest of the queue dropped"
        producer.purge()
        producer.poll(0)
    wall = time.monotonic() - t_wall0
    undelivered = n - delivered
    if undelivered:
        log.error("replay: %d of %d messages not delivered to %r on %s (%d failed)%s; first errors: %s",
                  undelivered, n, topic, ",".join(brokers), len(failed),
                  f"; stopped: {stopped}" if stopped else "", sorted(set(failed))[:3])
    return {"messages": n, "delivered": delivered, "failed": len(failed), "undelivered": undelivered,
            "stopped": stopped, "topic": topic, "wall_s": round(wall, 4),
            "messages_per_s": round(n / wall, 1) if wall else None, "interrupted": interrupted}

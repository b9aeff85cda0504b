"""``ticklet replay PATH... --to kafka``: publish recordings to Kafka.

Every recorded message goes to the ticks topic in ticklet's wire format
(:mod:`sources.wire`): keyed by instrument, with the original receive time as
both the Kafka timestamp (ms) and the ``ts_recv`` field (ns). Messages of all
files are merged in receive-time order. ``speed`` divides the gaps between
messages (``None``: as fast as possible). The producer is idempotent with
``acks=all``; delivery failures are counted, logged and returned, never
swallowed.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional

from confluent_kafka import Producer

from sinks.kafka import ensure_topic, produce, producer_config
from sources.files import group_streams, line_ts, read_stream
from sources.wire import encode_tick, stream_symbol
from ticklet.events import instrument_key

__all__ = ["publish"]

log = logging.getLogger(__name__)


def _lines(spec_idx: int, spec: Any) -> Iterator[tuple[int, int, bytes]]:
    prev = 0
    for block in read_stream(spec):
        for line in block:
            t = line_ts(line)
            prev = t if t >= 0 else prev
            yield prev, spec_idx, line


def publish(paths: list[str], brokers: list[str], topic: str, *, speed: Optional[float] = None,
            client_config: Optional[dict[str, Any]] = None, market: Optional[str] = None,
            partitions: int = 4, flush_timeout_s: float = 60.0, linger_ms: int = 5,
            on_produce: Optional[Callable[[str, int, float], None]] = None) -> dict[str, Any]:
    """Publish the recordings under ``paths``; return a summary.

    ``on_produce(key, ts_recv, wall)`` is called after each message is handed
    to the producer (``wall``: :func:`time.time`), e.g. to measure latency.
    """
    specs = group_streams(paths, market)
    bad = [s.name for s in specs if s.fmt != "ws"]
    if bad:
        raise ValueError(f"only websocket recordings can be replayed to Kafka, not {bad}")
    cfg = producer_config(brokers, client_config, linger_ms=linger_ms)
    ensure_topic(cfg, topic, partitions)
    producer = Producer(cfg)
    failed: list[str] = []
    delivered = 0

    def on_delivery(err: Any, msg: Any) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1
        else:
            failed.append(str(err))

    merged = heapq.merge(*(_lines(i, s) for i, s in enumerate(specs)))
    n = 0
    t_wall0 = time.monotonic()
    ts0: Optional[int] = None
    for ts, idx, line in merged:
        spec = specs[idx]
        if speed is not None:
            ts0 = ts if ts0 is None else ts0
            wait = t_wall0 + (ts - ts0) / 1e9 / speed - time.monotonic()
            if wait > 0.0005:
                producer.poll(0)
                time.sleep(wait)
        sp = line.find(b" ")
        has_ts = sp > 0 and line[:sp].isdigit()
        payload = line[sp + 1 :] if has_ts else line
        key = instrument_key(stream_symbol(payload) or spec.symbol, spec.market)
        value = encode_tick(ts, spec.market, payload) if has_ts else line
        produce(producer, topic, value, key.encode(), on_delivery=on_delivery, timestamp=ts // 1_000_000)
        if on_produce is not None:
            on_produce(key, ts, time.time())
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
    left = producer.flush(flush_timeout_s)
    wall = time.monotonic() - t_wall0
    if failed or left:
        log.error("replay: %d of %d messages failed (%d undelivered); first errors: %s",
                  len(failed), n, left, failed[:3])
    return {"messages": n, "delivered": delivered, "failed": len(failed), "undelivered": left,
            "topic": topic, "wall_s": round(wall, 4), "messages_per_s": round(n / wall, 1) if wall else None}

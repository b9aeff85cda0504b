"""Publish records to Kafka with an idempotent producer, failures reported.

The producer is built in :meth:`KafkaRecordSink.build` (never pickled), with
``enable.idempotence=true`` and ``acks=all``: librdkafka retries transient
errors without duplicating or reordering. Every batch is flushed before the
dataflow moves on; a message that still could not be delivered raises, so the
dataflow stops instead of losing output, and a restart from the last
snapshot re-publishes it (at-least-once; see the README on deduplication).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Optional

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaException, Producer

__all__ = ["KafkaRecordSink", "ensure_topic", "produce", "producer_config"]

log = logging.getLogger(__name__)


def producer_config(brokers: list[str], extra: Optional[dict[str, Any]] = None,
                    linger_ms: int = 1) -> dict[str, Any]:
    """Idempotent, acks=all producer settings."""
    cfg: dict[str, Any] = {
        "bootstrap.servers": ",".join(brokers),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": linger_ms,
        "compression.type": "lz4",
    }
    cfg.update(extra or {})
    return cfg


def produce(producer: Producer, topic: str, value: bytes, key: bytes, *,
            on_delivery: Callable[[Any, Any], None], timestamp: int = 0, wait_s: float = 0.05) -> None:
    """Hand one message to ``producer``, waiting while its local queue is full.

    :meth:`Producer.produce` raises :class:`BufferError` when librdkafka's
    local queue is full; the producer is then polled for ``wait_s`` seconds,
    so that deliveries drain, and the message is handed over again, until it
    is accepted.

    Parameters
    ----------
    producer
        The producer (anything with confluent-kafka's ``produce``/``poll``).
    topic, value, key
        Where the message goes and what it is.
    on_delivery
        Delivery report callback ``(err, msg)``.
    timestamp
        Kafka timestamp in ms; 0: the producer's clock.
    wait_s
        How long to poll when the queue is full.

    Examples
    --------
    >>> from confluent_kafka import Producer
    >>> p = Producer({"bootstrap.servers": "127.0.0.1:9", "log_level": 0,  # no broker there
    ...               "queue.buffering.max.messages": 1, "message.timeout.ms": 100})
    >>> failed = []
    >>> for v in (b"1", b"2"):  # the second waits until the first times out and leaves the queue
    ...     produce(p, "ticks", v, b"k", on_delivery=lambda err, msg: failed.append(err is not None))
    >>> p.flush(10), failed
    (0, [True, True])
    """
    while True:
        try:
            producer.produce(topic, value, key, timestamp=timestamp, on_delivery=on_delivery)
            return
        except BufferError:  # local queue full: let deliveries drain
            producer.poll(wait_s)


class _Partition(StatelessSinkPartition[tuple[bytes, bytes]]):
    def __init__(self, producer: Producer, topic: str, flush_timeout_s: float):
        self._p = producer
        self._topic = topic
        self._timeout = flush_timeout_s
        self._failed: list[str] = []

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._failed.append(f"{err} (key {msg.key()!r})")

    def write_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        p, topic, cb = self._p, self._topic, self._on_delivery
        for key, value in items:
            produce(p, topic, value, key, on_delivery=cb, wait_s=0.1)
            p.poll(0)
        left = p.flush(self._timeout)
        if self._failed or left:
            failed, self._failed = self._failed, []
            msg = f"{len(failed)} message(s) to {topic!r} failed, {left} undelivered: {failed[:3]}"
            log.error(msg)
            raise KafkaException(msg)

    def close(self) -> None:
        self._p.flush(self._timeout)


class KafkaRecordSink(DynamicSink[tuple[bytes, bytes]]):
    """Write ``(key, value)`` byte pairs to ``topic``; one producer per worker."""

    def __init__(self, topic: str, config: dict[str, Any], flush_timeout_s: float = 30.0):
        self._topic = topic
        self._config = config
        self._timeout = flush_timeout_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        ensure_topic(self._config, self._topic)
        return _Partition(Producer(self._config), self._topic, self._timeout)


def ensure_topic(config: dict[str, Any], topic: str, partitions: int = 4, replication: int = 1,
                 timeout_s: float = 30.0, topic_config: Optional[dict[str, str]] = None) -> None:
    """Create ``topic`` unless it exists (safe to call from many workers).

    Records keep their event time as Kafka timestamp, which for replayed
    history is old: topics are created with ``retention.ms=-1`` by default,
    or the broker would delete them at once.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    admin_cfg = {k: v for k, v in config.items()
                 if k in ("bootstrap.servers", "security.protocol") or k.startswith(("sasl.", "ssl."))}
    admin = AdminClient(admin_cfg)
    if topic in admin.list_topics(timeout=timeout_s).topics:
        return
    cfg = {"retention.ms": "-1", **(topic_config or {})}
    fut = admin.create_topics([NewTopic(topic, partitions, replication, config=cfg)],
                              request_timeout=timeout_s)[topic]
    try:
        fut.result(timeout_s)
    except KafkaException as ex:
        if ex.args[0].code() != ex.args[0].TOPIC_ALREADY_EXISTS:
            raise

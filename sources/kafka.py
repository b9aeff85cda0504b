"""Ticks from Kafka: a partitioned, resumable confluent-kafka source.

Why not :class:`bytewax.connectors.kafka.KafkaSource` as it is: it emits one
Python object per message into the dataflow, which alone cost about a third
of the throughput here. :class:`KafkaTickSource` follows the same design (one
Bytewax partition per topic partition, consumer built in ``build_part``,
offsets as recovery state, assign without a consumer group, EOF when not
tailing) but emits each consumed batch as one :class:`RawChunk` of message
values. Consumer errors become dead letters instead of stopping the flow.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Union

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from sources.symbols import valid_symbol
from ticklet.events import ErrorRecord, RawChunk

__all__ = ["KafkaTickSource", "chunk_messages"]

log = logging.getLogger(__name__)

Item = Union[RawChunk, ErrorRecord]


def _key(m: Any) -> str:
    """A message's key as text, if it is an instrument (for a dead letter), else empty."""
    try:
        key = (m.key() or b"").decode("utf-8")
    except UnicodeDecodeError:
        return ""
    sym = key.removesuffix("-PERP")
    return key if valid_symbol(sym) else ""


def chunk_messages(msgs: list[Any], source: str = "") -> tuple[list[Item], bool]:
    """One chunk of the values of ``msgs`` (confluent-kafka messages) plus a
    dead letter per error or empty message; and whether a partition EOF was
    seen (pure). ``source`` names the partition on the chunk.
    """
    values: list[bytes] = []
    out: list[Item] = []
    eof = False
    for m in msgs:
        err = m.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                eof = True
                continue
            out.append(ErrorRecord.of("read_ticks", f"kafka error: {err}", m.value() or b"", _key(m), 0))
            continue
        v = m.value()
        if v is None:
            out.append(ErrorRecord("read_ticks", "empty kafka message", "", _key(m), 0))
        else:
            values.append(v)
    if values:
        out.insert(0, RawChunk("kafka", "", "", values, source=source))
    return out, eof


class _Partition(StatefulSourcePartition[Item, int]):
    def __init__(self, config: dict[str, Any], topic: str, part: int, offset: int, batch_size: int):
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, part, offset)])
        self._offset = offset
        self._batch = batch_size
        self._eof = False
        self._source = f"{part}-{topic}"

    def next_batch(self) -> list[Item]:
        if self._eof:
            raise StopIteration()
        msgs = self._consumer.consume(self._batch, 0.001)
        if not msgs:
            return []
        out, self._eof = chunk_messages(msgs, self._source)
        for m in reversed(msgs):
            if m.error() is None or m.error().code() != KafkaError._PARTITION_EOF:
                self._offset = m.offset() + 1
                break
        return out

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


class KafkaTickSource(FixedPartitionedSource[Item, int]):
    """Every partition of ``topic``, from the beginning or the recovered offsets.

    Parameters
    ----------
    brokers
        ``host:port`` of the brokers.
    topic
        The ticks topic.
    tail
        Keep waiting at the end of the topic (live); otherwise stop there.
    batch_size
        Most messages per poll, i.e. per chunk.
    config
        More librdkafka settings (security...).
    """

    def __init__(self, brokers: list[str], topic: str, *, tail: bool = True, batch_size: int = 5000,
                 config: Optional[dict[str, Any]] = None):
        self._brokers = ",".join(brokers)
        self._topic = topic
        self._tail = tail
        self._batch = batch_size
        self._config = dict(config or {})

    def list_parts(self) -> list[str]:
        admin = AdminClient({"bootstrap.servers": self._brokers, **self._config})
        md = admin.list_topics(self._topic, timeout=30).topics.get(self._topic)
        if md is None or md.error is not None or not md.partitions:
            raise RuntimeError(f"Kafka topic {self._topic!r} not found at {self._brokers}: "
                               f"{md.error if md is not None else 'no metadata'}")
        return [f"{p}-{self._topic}" for p in sorted(md.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _Partition:
        idx, topic = for_part.split("-", 1)
        if topic != self._topic:
            raise ValueError(f"recovery state is for topic {topic!r}, not {self._topic!r}")
        config = {
            "bootstrap.servers": self._brokers,
            "group.id": "ticklet-unused",  # offsets live in Bytewax recovery, not in a group
            "enable.auto.commit": False,
            "enable.partition.eof": not self._tail,
            "fetch.wait.max.ms": 10,
            "max.partition.fetch.bytes": 8 << 20,  # fewer, larger fetches when catching up
            **self._config,
        }
        offset = OFFSET_BEGINNING if resume_state is None else resume_state
        return _Partition(config, topic, int(idx), offset, self._batch)

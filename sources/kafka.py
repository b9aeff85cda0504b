"""Ticks from Kafka: a partitioned, resumable confluent-kafka source.

Why not :class:`bytewax.connectors.kafka.KafkaSource` as it is: it emits one
Python object per message into the dataflow, which alone cost about a third
of the throughput here. :class:`KafkaTickSource` follows the same design (one
Bytewax partition per topic partition, consumer built in ``build_part``,
offsets as recovery state, assign without a consumer group, EOF when not
tailing) but emits each consumed batch as one :class:`RawChunk` of message
values. Consumer errors become dead letters instead of stopping the flow.

A broker outage pauses the reading: librdkafka reconnects by itself and the
consumers go on from where they were. With an ``outage`` (the dataflow gives
one bounded by ``TICKLET_KAFKA__OUTAGE_TIMEOUT_S``), the source checks that
the cluster answers again, with a growing wait between checks, logs at most
a line every 30 s, and gives up when the outage lasts too long.

Tailing (live), the source logs one line the first time it has read every
partition to its end (``caught up with TOPIC at offsets ...; waiting for new
ticks``), and never again: until then a run is reading the topic's history.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional, Protocol, Union

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from core.events import ErrorRecord, RawChunk
from sources.symbols import valid_symbol

__all__ = ["KafkaTickSource", "chunk_messages"]

log = logging.getLogger(__name__)

Item = Union[RawChunk, ErrorRecord]

#: Client errors that mean the cluster cannot be reached now.
_UNREACHABLE = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE,
                          KafkaError._TIMED_OUT})


class OutagePolicy(Protocol):
    """How long to wait out an unreachable broker (``sinks.kafka.Outage``)."""

    def waiting(self, detail: str, started: Optional[float] = None) -> float:
        """Note a failed attempt (begun at ``started``, ``time.monotonic``): the seconds to wait before the next.

        Past the longest outage it waits out, the policy gives up instead.
        """

    def over(self) -> None:
        """An attempt got through."""


def _key(m: Any) -> str:
    """A message's key as text, if it is an instrument (for a dead letter), else empty."""
    try:
        key = (m.key() or b"").decode("utf-8")
    except UnicodeDecodeError:
        return ""
    sym = key.removesuffix("-PERP")
    return key if valid_symbol(sym) else ""


def chunk_messages(msgs: list[Any], source: str = "") -> tuple[list[Item], bool]:
    """One chunk of the values of ``msgs`` (confluent-kafka messages), and whether a partition EOF was seen.

    A dead letter follows the chunk per error or empty message (pure).
    ``source`` names the partition on the chunk.
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


class _CatchUp:
    """The partitions of a tailing source in this process, and the end offset at which each first reached its end.

    It logs one line when every one has, once.
    """

    def __init__(self, topic: str):
        self._topic = topic
        self._lock = threading.Lock()
        self._ends: dict[int, Optional[int]] = {}
        self._said = False

    def built(self, part: int) -> None:
        with self._lock:
            self._ends.setdefault(part, None)

    def reached(self, part: int, offset: int) -> None:
        with self._lock:
            if self._said or self._ends.get(part) is not None:
                return
            self._ends[part] = offset
            if any(end is None for end in self._ends.values()):
                return
            self._said = True
            ends = ", ".join(f"{p}:{end}" for p, end in sorted(self._ends.items()))
        log.warning("caught up with %s at offsets %s (partition:offset); waiting for new ticks", self._topic, ends)


class _Partition(StatefulSourcePartition[Item, int]):
    def __init__(self, config: dict[str, Any], topic: str, part: int, offset: int, batch_size: int,
                 outage: Optional[OutagePolicy] = None, catch_up: Optional[_CatchUp] = None):
        self._consumer = Consumer({**config, "error_cb": self._on_error})
        self._consumer.assign([TopicPartition(topic, part, offset)])
        self._topic, self._part = topic, part
        self._offset = offset
        self._batch = batch_size
        self._eof = False
        self._outage = outage
        self._down: Optional[float] = None  # since when the cluster cannot be reached, until it answers again
        self._next_probe = 0.0
        self._said = ""
        self._source = f"{part}-{topic}"
        self._catch_up = catch_up  # tailing: the end of the partition is where it waits, not where it stops
        if catch_up is not None:
            catch_up.built(part)

    def next_batch(self) -> list[Item]:
        if self._eof:
            raise StopIteration()
        msgs = self._consumer.consume(self._batch, 0)  # never blocks: Bytewax waits 1 ms after an empty batch
        if not msgs:
            if self._down is not None and self._outage is not None:
                self._probe()
            return []
        if self._down is not None:
            self._reachable()
        out, eof = chunk_messages(msgs, self._source)
        if eof and self._catch_up is None:
            self._eof = True
        for m in reversed(msgs):
            off = m.offset()
            if m.error() is None and off is not None:  # error events carry no offset of this partition
                self._offset = off + 1
                break
        if eof and self._catch_up is not None:
            end = max(self._offset, 0)  # the end event's offset, when it carries one
            for m in msgs:
                err, at = m.error(), m.offset()
                if err is not None and err.code() == KafkaError._PARTITION_EOF and at is not None:
                    end = at
            self._catch_up.reached(self._part, end)
        return out

    def _on_error(self, err: KafkaError) -> None:
        """Client-wide errors (librdkafka retries them itself): note an outage."""
        if err.code() in _UNREACHABLE:
            if self._down is None:
                self._down = time.monotonic()
        elif err.fatal():
            raise KafkaException(err)
        elif str(err.str()) != self._said:  # the same error again and again: said once
            self._said = str(err.str())
            log.warning("Kafka consumer of %s [%d]: %s", self._topic, self._part, self._said)

    def _probe(self) -> None:
        """While the cluster is unreachable: ask it for metadata, now and then."""
        now = time.monotonic()
        if now < self._next_probe:
            return
        try:
            self._consumer.list_topics(self._topic, timeout=1.0)
        except KafkaException as ex:
            assert self._outage is not None
            detail = f"partition {self._part} paused at offset {self._offset} (last error: {ex.args[0].str()})"
            self._next_probe = time.monotonic() + self._outage.waiting(detail, self._down)
            return
        self._reachable()

    def _reachable(self) -> None:
        self._down = None
        self._next_probe = 0.0
        self._said = ""
        if self._outage is not None:
            self._outage.over()

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
    outage
        How long to wait out an unreachable cluster (``sinks.kafka.Outage``,
        shared by the partitions); None: wait as long as it takes, silently.
    """

    def __init__(self, brokers: list[str], topic: str, *, tail: bool = True, batch_size: int = 5000,
                 config: Optional[dict[str, Any]] = None, outage: Optional[OutagePolicy] = None):
        self._brokers = ",".join(brokers)
        self._topic = topic
        self._tail = tail
        self._batch = batch_size
        self._config = dict(config or {})
        self._outage = outage
        self._catch_up = _CatchUp(topic) if tail else None

    def list_parts(self) -> list[str]:
        """The topic's partitions, ``"<index>-<topic>"`` each, once the cluster answers.

        An unreachable cluster is waited out as ``outage`` says; a topic that
        does not exist is a :class:`RuntimeError`.
        """
        admin = AdminClient({"bootstrap.servers": self._brokers, **self._config})
        while True:
            t0 = time.monotonic()
            try:
                topics = admin.list_topics(self._topic, timeout=30 if self._outage is None else 10).topics
                break
            except KafkaException as ex:
                if self._outage is None or ex.args[0].code() not in _UNREACHABLE:
                    raise
                time.sleep(self._outage.waiting(f"cannot list the partitions: {ex.args[0].str()}", t0))
        if self._outage is not None:
            self._outage.over()
        md = topics.get(self._topic)
        if md is None or md.error is not None or not md.partitions:
            raise RuntimeError(f"Kafka topic {self._topic!r} not found at {self._brokers}: "
                               f"{md.error if md is not None else 'no metadata'}")
        return [f"{p}-{self._topic}" for p in sorted(md.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _Partition:
        """A consumer of partition ``for_part`` from its recovered offset ``resume_state``, else the beginning.

        A ``resume_state`` of another topic's partition is a
        :class:`ValueError`.
        """
        idx, topic = for_part.split("-", 1)
        if topic != self._topic:
            raise ValueError(f"recovery state is for topic {topic!r}, not {self._topic!r}")
        config = {
            "bootstrap.servers": self._brokers,
            "group.id": "ticklet-unused",  # offsets live in Bytewax recovery, not in a group
            "enable.auto.commit": False,
            "enable.partition.eof": True,  # tailing, the end of each partition is only logged (_CatchUp)
            "fetch.wait.max.ms": 10,
            "max.partition.fetch.bytes": 8 << 20,  # fewer, larger fetches when catching up
            "reconnect.backoff.max.ms": 2000,  # back within 2 s of the broker
            **self._config,
        }
        offset = OFFSET_BEGINNING if resume_state is None else resume_state
        return _Partition(config, topic, int(idx), offset, self._batch, self._outage, self._catch_up)

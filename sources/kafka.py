"""Ticks from Kafka, through :mod:`bytewax.connectors.kafka`.

Bytewax's :class:`~bytewax.connectors.kafka.KafkaSource` reads each topic
partition as one Bytewax partition and keeps its offset in the recovery
state, so a resumed dataflow continues from the snapshotted offsets. Its
messages are grouped here into :class:`~ticklet.events.RawChunk` batches for
the parser; consumer errors become dead letters.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage

from ticklet.events import ErrorRecord, RawChunk

__all__ = ["chunk_messages", "kafka_source"]


def kafka_source(brokers: list[str], topic: str, *, tail: bool = True, batch_size: int = 5000,
                 config: Optional[dict[str, Any]] = None) -> KafkaSource:
    """A source over every partition of ``topic`` from its beginning (or from
    the recovered offsets)."""
    return KafkaSource(brokers, [topic], tail=tail, batch_size=batch_size,
                       add_config=dict(config or {}), raise_on_errors=False)


def chunk_messages(msgs: list[Union[KafkaSourceMessage, KafkaError]]) -> list[Union[RawChunk, ErrorRecord]]:
    """One chunk of message values per batch, plus a dead letter per
    consumer error or empty message (pure)."""
    values: list[bytes] = []
    out: list[Union[RawChunk, ErrorRecord]] = []
    for m in msgs:
        if isinstance(m, KafkaError):
            src = m.msg
            out.append(ErrorRecord("read_ticks", f"kafka error: {m.err}",
                                   (src.value or b"").decode("utf-8", "replace"),
                                   (src.key or b"").decode("utf-8", "replace"), 0))
        elif m.value is None:
            out.append(ErrorRecord("read_ticks", "empty kafka message", "",
                                   (m.key or b"").decode("utf-8", "replace"), 0))
        else:
            values.append(m.value)
    if values:
        out.append(RawChunk("kafka", "", "", values))
    return out

"""The Kafka sink against a real Apache Kafka broker: a snapshot never gets ahead of the topic.

The sink hands each batch to the producer without waiting for the broker
(issue 28: a flush per batch held the worker 4 to 9 ms per bar); it waits
in ``snapshot``, so that a run resumed from a snapshot has every record
written before it on the topic (at-least-once).
"""

from __future__ import annotations

import pytest

from core.events import ErrorRecord
from harness.kafkautil import consume_all, topic_name
from harness.realdata import lines, payload, recv_ns
from sinks.kafka import KafkaRecordSink, producer_config
from sinks.records import kafka_record

#: Integration tests (tests/integration_mark.py): a Kafka broker.
pytestmark = pytest.mark.integration

SRC = "spot/btcusdt_20240808.gz"


def test_every_record_written_before_a_snapshot_is_on_the_topic_when_it_returns(kafka_bootstrap, ws_dir):
    """2,000 dead letters of real lines in two batches, a snapshot after
    each, with a producer that lingers 200 ms: after each snapshot the topic
    holds every record written so far, whole and in order."""
    topic = topic_name("sink.snapshot")
    sink = KafkaRecordSink(topic, producer_config([kafka_bootstrap], linger_ms=200))
    assert sink.list_parts() == [topic]  # the topic is made here, and the writer
    part = sink.build_part("publish_dead_letters", topic, None)
    real = lines(ws_dir / SRC)[:2000]
    records = [kafka_record("BTCUSDT", ErrorRecord.of("parse", "test", payload(ln), "BTCUSDT", recv_ns(ln)))
               for ln in real]
    for upto in (1000, 2000):
        part.write_batch(records[upto - 1000:upto])
        assert part.snapshot() is None  # nothing to resume from: at-least-once
        got = [(k, v) for k, v, _, _ in consume_all(kafka_bootstrap, topic)]
        assert got == records[:upto]
    part.close()

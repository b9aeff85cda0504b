"""Oversize input and oversize dead letters, against a real Apache Kafka
broker (issue 23, item 1).

A Kafka message longer than ``TICKLET_INPUT__MAX_LINE_BYTES`` in the middle
of a batch of real messages is one dead letter, every other message of the
batch is read as it would be without it, and a run with recovery goes on
life after life. A dead letter too large for its topic (or for the
producer) is cut to fit, with the whole payload's size and SHA-256, instead
of stopping the run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time

import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from core.events import ErrorRecord
from harness.kafkautil import consume_all, flow_env, run_flow, topic_name
from harness.realdata import RECORD_FILES, SCRATCH, lines, payload, recv_ns
from sinks.kafka import KafkaRecordSink, producer_config, topic_limit
from sinks.records import fit_dead_letter, kafka_record
from sources.binance import MAX_LINE_BYTES
from sources.wire import encode_tick

#: Integration tests (tests/integration_mark.py): a Kafka broker, and the dataflow in subprocesses.
pytestmark = pytest.mark.integration

SRC = "spot/btcusdt_20240808.gz"
N = 16_000  # about two minutes of ticks: bars, forecasts at both horizons, signals and fills
BIG = 8 << 20  # the ticks topic and the test's producer take messages this large


def _topic(bootstrap: str, prefix: str, max_message_bytes: int, partitions: int = 1) -> str:
    name = topic_name(prefix)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    cfg = {"max.message.bytes": str(max_message_bytes), "retention.ms": "-1"}
    admin.create_topics([NewTopic(name, partitions, 1, config=cfg)])[name].result(30)
    return name


def _publish(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": BIG, "linger.ms": 5,
                  "enable.idempotence": True})
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(err)

    for v in values:
        while True:
            try:
                p.produce(topic, v, b"BTCUSDT", on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0 and not failed, failed


def _ticks(real: list[bytes]) -> list[bytes]:
    """The recording's lines as ticklet's Kafka ticks (what ``ticklet replay`` publishes)."""
    return [encode_tick(recv_ns(ln), "spot", payload(ln)) for ln in real]


def _padded_trade(line: bytes, pad: int) -> bytes:
    """A real trade message with a field of ``pad`` bytes added to its data: valid JSON, read as a trade."""
    msg = json.loads(payload(line))
    assert msg["stream"].endswith("@trade")
    msg["data"]["pad"] = "x" * pad
    return encode_tick(recv_ns(line), "spot", json.dumps(msg, separators=(",", ":")).encode())


def _dead_letters(out) -> list[dict]:
    path = out / "dead_letters.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def test_an_oversize_message_amid_a_batch_is_one_dead_letter_and_recovery_goes_on(kafka_bootstrap, ws_dir,
                                                                                  tmp_path):
    """Real ticks with a message over the line limit (the default 1 MiB) in
    the middle of each half, read by the dataflow in two lives with recovery
    (the first to the end of the first half, the second resuming from its
    snapshot when the second half has arrived). Each oversize message is one
    dead letter with its size, instrument and receive time; the outputs are
    byte for byte those of one run over the same ticks without them; the
    counters differ by exactly the two messages. (Before the fix of b52f37d
    the first life died on a TypeError, exit 1, and so did every restart.)"""
    real = list(lines(ws_dir / SRC)[:N])
    ticks = _ticks(real)
    half = N // 2
    trades = [i for i, ln in enumerate(real) if b'@trade"' in ln[:60]]
    at = [next(i for i in trades if i >= half // 2), next(i for i in trades if i >= half + half // 2)]
    big = [_padded_trade(real[i], MAX_LINE_BYTES + 1000 * (k + 1)) for k, i in enumerate(at)]
    assert all(len(b) > MAX_LINE_BYTES for b in big)

    ref_topic = _topic(kafka_bootstrap, "oversize.ref", BIG)
    _publish(kafka_bootstrap, ref_topic, ticks)
    run_flow(flow_env(kafka_bootstrap, ref_topic, tmp_path / "ref"))

    topic = _topic(kafka_bootstrap, "oversize", BIG)
    rec_dir, out = tmp_path / "recovery", tmp_path / "out"
    rec_dir.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec_dir), "1"], check=True, cwd=SCRATCH)
    env = flow_env(kafka_bootstrap, topic, out, RUST_BACKTRACE="0")
    recovery = ("-r", str(rec_dir), "-s", "1", "-b", "0")
    _publish(kafka_bootstrap, topic, ticks[: at[0] + 1] + [big[0]] + ticks[at[0] + 1 : half])
    run_flow(env, *recovery)
    assert [d["raw_size"] for d in _dead_letters(out)] == [len(big[0])]
    _publish(kafka_bootstrap, topic, ticks[half : at[1] + 1] + [big[1]] + ticks[at[1] + 1 :])
    run_flow(env, *recovery)  # the second life resumes from the first one's snapshot

    ref = tmp_path / "ref"
    for name in RECORD_FILES:  # one instrument, one partition: the same bytes
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert len((ref / "forecasts.csv").read_text().splitlines()) > 400
    dead = _dead_letters(out)
    assert dead[: len(dead) - 2] == _dead_letters(ref)
    for d, b, i in zip(dead[-2:], big, at, strict=True):
        assert d["stage"] == "read_ticks" and d["instrument"] == "BTCUSDT" and d["ts_recv"] == recv_ns(real[i])
        assert d["raw_size"] == len(b) and d["reason"] == (
            f"message too long: {len(b)} bytes, more than the {MAX_LINE_BYTES} allowed (TICKLET_INPUT__MAX_LINE_BYTES)")
        assert b.startswith(d["raw"].encode()) and 0 < len(d["raw"]) <= 1024
    got, want = (json.loads((d / "counters.json").read_text()) for d in (out, ref))
    assert got == want | {k: want.get(k, 0) + 2 for k in ("input_records", "parse_errors", "dead_letters")}


def _raw(d: dict) -> bytes:
    return base64.b64decode(d["raw"]) if d["raw_base64"] else d["raw"].encode()


def test_a_dead_letter_too_large_for_its_topic_is_cut_to_fit_with_its_size_and_hash(kafka_bootstrap, ws_dir,
                                                                                    tmp_path):
    """With the line limit raised to 4 MiB, a 3 MiB message that is not JSON
    and a 300 kB one that is not UTF-8 (base64 in the dead letter) among real
    ticks are dead letters larger than the producer's message.max.bytes (1 MB)
    and than the dead-letter topic takes (max.message.bytes 64 KiB). The run
    ends normally; on the topic each is cut to fit, its first bytes in raw,
    with the whole payload's size and SHA-256; dead_letters.jsonl keeps it
    whole; a small dead letter is whole in both. (Before: the run died on
    MSG_SIZE_TOO_LARGE while publishing it.)"""
    real = list(lines(ws_dir / SRC)[:3000])
    ticks = _ticks(real)
    trades = [i for i, ln in enumerate(real) if b'@trade"' in ln[:60]]
    text = _padded_trade(real[trades[100]], 3 << 20)[:-1]  # the closing brace cut off: not JSON
    binary = _padded_trade(real[trades[200]], 300_000).replace(b'"e":"trade"', b'"e":"tr\xffde"')
    small = b"{not json"
    bad = [text, binary, small]
    ticks[1000:1000] = bad
    limit = 64 << 10
    ticks_topic, dlq = _topic(kafka_bootstrap, "cut.ticks", BIG), _topic(kafka_bootstrap, "cut.dlq", limit)
    _publish(kafka_bootstrap, ticks_topic, ticks)
    out = tmp_path / "out"
    run_flow(flow_env(kafka_bootstrap, ticks_topic, out, topic_name("cut.out"), dlq,
                      TICKLET_INPUT__MAX_LINE_BYTES=str(4 << 20)))

    letters = consume_all(kafka_bootstrap, dlq)
    assert len(letters) == len(bad) and all(len(k) + len(v) <= limit for k, v, _, _ in letters)
    on_topic = [json.loads(v) for _, v, _, _ in letters]
    in_file = _dead_letters(out)
    assert len(in_file) == len(bad) == json.loads((out / "counters.json").read_text())["dead_letters"]
    for b, was_b64 in ((text, False), (binary, True)):
        (d,) = [d for d in on_topic if b.startswith(_raw(d)) and d["raw_size"] == len(b)]
        assert d["raw_base64"] is was_b64 and d["raw_sha256"] == hashlib.sha256(b).hexdigest()
        assert len(_raw(d)) > 45_000  # cut to fit, not emptied: 64 KiB less the record's other fields
        assert d["reason"].startswith("bad json") and d["stage"] == "parse"
        (f,) = [f for f in in_file if _raw(f) == b]  # the file keeps it whole
        assert f["raw_size"] is None and f["raw_sha256"] is None and f["reason"] == d["reason"]
    (d,) = [d for d in on_topic if _raw(d) == small]
    assert d["raw_size"] is None and d["raw_sha256"] is None


def _lower_limit(bootstrap: str, topic: str, limit: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entry = ConfigEntry("max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    next(iter(admin.incremental_alter_configs([res]).values())).result(30)
    deadline = time.monotonic() + 30
    while topic_limit({"bootstrap.servers": bootstrap}, topic) != limit:
        assert time.monotonic() < deadline, "the broker did not apply the new max.message.bytes"
        time.sleep(0.2)


def test_records_refused_as_too_large_are_sent_again_in_smaller_batches_cut_to_fit(kafka_bootstrap, ws_dir):
    """The dead-letter topic's limit lowered to 8 KiB after the sink has read
    it (1 MB): the broker refuses the sink's record batches, some of them
    only for holding too many records. The sink reads the limit again,
    sends the records again with batches that fit, and cuts the one dead
    letter that cannot fit whole (100 kB, from real lines). Every record
    arrives, the others whole."""
    topic = _topic(kafka_bootstrap, "cut.lowered", 1_000_000)
    sink = KafkaRecordSink(topic, producer_config([kafka_bootstrap], linger_ms=50), shrink=fit_dead_letter)
    part = sink.build_part("publish_dead_letters", topic, None)
    limit = 8 << 10
    _lower_limit(kafka_bootstrap, topic, limit)
    real = [ln for ln in lines(ws_dir / SRC)[:1000] if len(ln) < 2000][:400]  # no snapshot, no large depth update
    letters = [ErrorRecord.of("parse", "bad json", payload(ln)[:-1], "BTCUSDT", recv_ns(ln)) for ln in real]
    whole = b"".join(payload(ln) for ln in real)[:100_000]
    letters.insert(200, ErrorRecord.of("parse", "bad json", whole, "BTCUSDT", recv_ns(real[200])))
    part.write_batch([kafka_record(e.instrument, e) for e in letters])
    part.close()
    got = [json.loads(v) for k, v, _, _ in consume_all(kafka_bootstrap, topic) if len(k) + len(v) <= limit]
    assert len(got) == len(letters)
    cut = [d for d in got if d["raw_size"] is not None]
    assert sorted((d for d in got if d not in cut), key=json.dumps) == sorted(
        (json.loads(kafka_record(e.instrument, e)[1]) for e in letters[:200] + letters[201:]), key=json.dumps)
    (d,) = cut
    assert d["raw_size"] == len(whole) and whole.startswith(_raw(d)) and len(_raw(d)) > 4000
    assert d["raw_sha256"] == hashlib.sha256(whole).hexdigest()


def test_a_record_too_large_for_its_topic_that_is_no_dead_letter_stops_the_run_in_one_line(kafka_bootstrap,
                                                                                           ws_dir, tmp_path):
    """An output topic that takes records of at most 256 bytes: the first
    forecast record is larger, cannot be cut, and the run stops with one
    line naming the topic and what to do, and exit status 2 (before: a
    KafkaException in the sink, a panic and its traceback, exit 1)."""
    real = list(lines(ws_dir / SRC)[:N // 2])
    ticks_topic, out_topic = _topic(kafka_bootstrap, "tiny.ticks", BIG), _topic(kafka_bootstrap, "tiny.out", 256)
    _publish(kafka_bootstrap, ticks_topic, _ticks(real))
    env = flow_env(kafka_bootstrap, ticks_topic, tmp_path / "out", out_topic, RUST_BACKTRACE="0")
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.forecast"], cwd=SCRATCH, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("ticklet:")]
    assert len(ours) == 1 and "Traceback" not in proc.stderr and "panicked" not in proc.stderr, proc.stderr[-3000:]
    assert ours[0].startswith("ticklet: a record of ") and f"bytes does not fit in Kafka topic {out_topic!r}: it " \
        "takes record batches of at most 256 bytes" in ours[0] and "raise the topic's max.message.bytes" in ours[0], \
        ours[0]

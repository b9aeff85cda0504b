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

import json
import subprocess
import sys

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafkautil import flow_env, run_flow, topic_name
from realdata import RECORD_FILES, SCRATCH, lines, payload, recv_ns

from sources.binance import MAX_LINE_BYTES
from sources.wire import encode_tick

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
    failed: list = []
    for v in values:
        while True:
            try:
                p.produce(topic, v, b"BTCUSDT", on_delivery=lambda err, _m: err and failed.append(err))
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

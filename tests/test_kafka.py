"""Kafka in and out, against a real Apache Kafka broker (KRaft, single node)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from harness.kafkautil import consume_all, decoded, flow_env, replay, run_flow, topic_name
from harness.realdata import RECORD_FILES, csv_dicts, lines, payload, recv_ns, write_gz
from sinks.records import SCHEMA_VERSION

#: Integration tests (tests/integration_mark.py): a Kafka broker, and the dataflow in subprocesses.
pytestmark = pytest.mark.integration


def _recordings(ws_dir: Path) -> list[Path]:
    return sorted(p for p in ws_dir.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def replayed(kafka_bootstrap, ws_dir):
    """Every real recording replayed into a fresh topic at full speed."""
    topic = topic_name("ticks")
    proc, summary = replay(kafka_bootstrap, topic, ws_dir)
    assert proc.returncode == 0, proc.stderr
    return topic, summary


def test_replay_publishes_every_message_with_its_receive_time(kafka_bootstrap, ws_dir, replayed):
    topic, summary = replayed
    expected: Counter = Counter()
    for f in _recordings(ws_dir):
        market = "usdm" if "usdm" in f.parts else "spot"
        for ln in lines(f):
            expected[(recv_ns(ln), market, json.dumps(json.loads(payload(ln)), sort_keys=True))] += 1
    n = sum(expected.values())
    assert summary["messages"] == summary["delivered"] == n and summary["failed"] == 0
    recs = consume_all(kafka_bootstrap, topic)
    assert len(recs) == n
    got: Counter = Counter()
    key_partitions: dict[bytes, set[int]] = {}
    last_ts: dict[int, int] = {}
    for key, value, ts_ms, part in recs:
        d = json.loads(value)
        recv, market = d.pop("ts_recv"), d.pop("market")
        assert ts_ms == recv // 1_000_000  # the Kafka timestamp is the receive time too
        if "lastUpdateId" in d:  # a REST depth snapshot says whose book it is: the key's (sources.wire.with_symbol)
            assert d.pop("symbol") + ("-PERP" if market == "usdm" else "") == key.decode()
        got[(recv, market, json.dumps(d, sort_keys=True))] += 1
        sym = d["stream"].split("@")[0].upper() if "stream" in d else None
        if sym:
            assert key.decode() == (sym if market == "spot" else sym + "-PERP")
        key_partitions.setdefault(key, set()).add(part)
        assert recv >= last_ts.get(part, 0)  # receive-time order within a partition
        last_ts[part] = recv
    assert got == expected
    assert set(key_partitions) == {b"BTCUSDT", b"ETHUSDT", b"BTCUSDT-PERP"}
    assert all(len(p) == 1 for p in key_partitions.values())  # one instrument, one partition


def test_replay_speed_divides_the_gaps(kafka_bootstrap, ws_dir, tmp_path):
    src = lines(ws_dir / "spot" / "btcusdt_20240808.gz")
    t0 = recv_ns(src[1])
    window = [ln for ln in src[1:] if recv_ns(ln) - t0 <= 3_000_000_000]  # 3 s of ticks
    span_s = (recv_ns(window[-1]) - t0) / 1e9
    rec = write_gz(tmp_path / "spot" / "btcusdt_20240808.gz", window)
    proc, summary = replay(kafka_bootstrap, topic_name("speed"), rec, speed="6")
    assert proc.returncode == 0, proc.stderr
    assert summary["messages"] == len(window)
    assert summary["wall_s"] >= 0.95 * span_s / 6  # paced: gaps divided by 6, not skipped


def test_replay_reports_delivery_failures(kafka_bootstrap, ws_dir, tmp_path):
    """A topic that refuses large messages: depth updates fail to deliver, and
    the replay says so (exit code 1, counts) instead of swallowing it."""
    topic = topic_name("small")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "700"})])[topic].result(30)
    rec = write_gz(tmp_path / "spot" / "btcusdt_20240808.gz", lines(ws_dir / "spot" / "btcusdt_20240808.gz")[:400])
    proc, summary = replay(kafka_bootstrap, topic, rec)
    assert proc.returncode == 1
    assert summary["failed"] > 0 and summary["delivered"] + summary["failed"] == summary["messages"] == 400
    assert "failed" in proc.stderr
    assert len(consume_all(kafka_bootstrap, topic)) == summary["delivered"]


@pytest.fixture(scope="module")
def kafka_run(kafka_bootstrap, replayed, tmp_path_factory):
    """The forecast dataflow reading the replayed topic and publishing."""
    ticks, _ = replayed
    out = tmp_path_factory.mktemp("kafka_run")
    topic = topic_name("out")
    run_flow(flow_env(kafka_bootstrap, ticks, out, topic))
    return out, topic


def test_dataflow_from_kafka_equals_the_file_replay(kafka_run, full_run, ws_dir):
    out, _ = kafka_run
    _, file_out = full_run
    for name in RECORD_FILES:
        a = (out / name).read_text().splitlines()
        b = (file_out / name).read_text().splitlines()
        assert a[0] == b[0] and len(a) > 1000
        assert sorted(a[1:]) == sorted(b[1:]), name
    from_kafka, from_files = (json.loads((o / "counters.json").read_text()) for o in (out, file_out))
    # files report the bytes they read (for the progress bar), Kafka does not
    assert from_files.pop("input_bytes") == sum(p.stat().st_size for p in _recordings(ws_dir))
    assert from_kafka == from_files


def test_output_topic_carries_versioned_json_keyed_by_symbol(kafka_bootstrap, kafka_run):
    out, topic = kafka_run
    recs = decoded(consume_all(kafka_bootstrap, topic))
    kinds = Counter(v["type"] for _, v in recs)
    counters = json.loads((out / "counters.json").read_text())
    assert kinds["scored"] == kinds["metrics"] == counters["forecasts"]
    assert kinds["forecast"] >= kinds["scored"] + counters["forecasts_expired"]
    assert set(kinds) == {"forecast", "scored", "metrics", "signal", "fill"}
    assert kinds["signal"] == len(csv_dicts(out / "signals.csv"))
    assert kinds["fill"] == len(csv_dicts(out / "trades.csv"))
    assert all(v["schema"] == SCHEMA_VERSION and v["instrument"] == k for k, v in recs)
    scored = {(v["instrument"], v["model"], v["horizon"], v["ts_forecast"]): v
              for _, v in recs if v["type"] == "scored"}
    for row in csv_dicts(out / "forecasts.csv"):
        v = scored[(row["instrument"], row["model"], int(row["horizon"]), int(row["ts_forecast"]))]
        assert float(row["pred_return"]) == v["pred_return"] and float(row["realized_return"]) == v["realized_return"]
    issued = {(v["instrument"], v["model"], v["horizon"], v["ts_forecast"]): v
              for _, v in recs if v["type"] == "forecast"}
    for k, v in scored.items():  # every scored forecast was issued earlier with the same prediction
        assert issued[k]["pred_return"] == v["pred_return"] and issued[k]["ts_target"] == v["ts_target"]


def test_malformed_records_go_to_the_dead_letter_topic(kafka_bootstrap, ws_dir, tmp_path):
    ticks, dlq = topic_name("dirty"), topic_name("dlq")
    good = lines(ws_dir / "spot" / "btcusdt_20240809.gz")[:20000]
    proc, _ = replay(kafka_bootstrap, ticks, write_gz(tmp_path / "spot" / "btcusdt_20240809.gz", good))
    assert proc.returncode == 0, proc.stderr
    ts = recv_ns(good[-1]) + 1
    bad = {
        b"{not json": "no ts_recv/market head",
        b'{"ts_recv":%d,"market":"spot","stream":"btcusdt@trade","data":{"e":"trade"' % ts: "bad json",
        b'{"ts_recv":%d,"market":"spot","stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT",'
        b'"b":"62000.5","B":"1","a":"62000.0","A":"1"}}' % ts: "crossed quote",
        b'{"ts_recv":%d,"market":"spot","stream":"btcusdt@trade","data":{"e":"trade","E":1,'
        b'"s":"BTCUSDT","t":1,"p":"-3","q":"1","T":1,"m":true}}' % ts: "invalid field",
        b'{"ts_recv":%d,"market":"moon","stream":"btcusdt@trade","data":{}}' % ts: "unknown market",
    }
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for value in bad:
        p.produce(ticks, value, b"BTCUSDT")
    assert p.flush(30) == 0
    out = tmp_path / "out"
    run_flow(flow_env(kafka_bootstrap, ticks, out, topic_name("out"), dlq))
    letters = decoded(consume_all(kafka_bootstrap, dlq))
    assert len(letters) == len(bad)
    by_raw = {v["raw"]: v for _, v in letters}
    for value, reason in bad.items():
        v = by_raw[value.decode()]
        assert v["schema"] == SCHEMA_VERSION and v["type"] == "dead_letter" and reason in v["reason"], v
    counters = json.loads((out / "counters.json").read_text())
    assert counters["dead_letters"] == len(bad)
    assert counters["forecasts"] > 0  # the flow kept running around them

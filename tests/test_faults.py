"""Infrastructure faults on the Kafka path, against a real broker that these
tests start for themselves (they kill it): a broker outage longer than 30 s
in the middle of a run, and a dataflow killed over and over (a crash loop).
Nothing is lost and nothing changes: the outputs match an uninterrupted
run's as the README states (``assert_files_match``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.kafka_broker import BrokerStartError, kafka_broker, kill_broker, restart_broker
from harness.kafkautil import (
    assert_files_match,
    consume_all,
    decoded,
    dedup,
    flow_env,
    recovery_progress,
    replay,
    run_flow,
    topic_name,
)
from harness.realdata import SCRATCH

#: Integration tests (tests/integration_mark.py): a Kafka broker, killed and restarted, and the
#: dataflow in subprocesses.
pytestmark = pytest.mark.integration

#: How long the broker stays dead: longer than the 30 s that used to end the run.
OUTAGE_S = 35.0
#: The kill interval that the README guarantees progress at (Crash recovery).
KILL_EVERY_S = 8.0
#: The snapshot interval the README recommends.
SNAPSHOT_S = "1"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory):
    """A broker of this module's own, even when ``$KAFKA_BOOTSTRAP_SERVERS``
    names a shared one: (bootstrap, run_dir)."""
    run_dir = tmp_path_factory.mktemp("faults-kafka")
    try:
        with kafka_broker(run_dir, own=True) as bootstrap:
            yield bootstrap, run_dir
    except BrokerStartError as ex:
        pytest.fail(str(ex))


@pytest.fixture(scope="module")
def reference(broker, ws_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Every recording replayed into a ticks topic, and the uninterrupted run
    over it: (ticks topic, output dir, output topic's records)."""
    bootstrap, _ = broker
    ticks = topic_name("faults.ticks")
    proc, _ = replay(bootstrap, ticks, ws_dir)
    assert proc.returncode == 0, proc.stderr
    out, topic = tmp_path_factory.mktemp("faults-ref"), topic_name("faults.ref")
    run_flow(flow_env(bootstrap, ticks, out, topic))
    records = decoded(consume_all(bootstrap, topic))
    assert len(dedup(records)) == len(records) > 10_000  # keys are unique in a clean run
    return ticks, out, records


def _recovery_dir(path: Path) -> Path:
    path.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(path), "1"], check=True, cwd=SCRATCH)
    return path


def _flow(env: dict[str, str], err: Path, *args: str) -> subprocess.Popen:
    """The dataflow in the background, its stderr to ``err``."""
    with open(err, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.forecast", *args], cwd=SCRATCH,
                                env=env, stdout=subprocess.DEVNULL, stderr=f)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _by_instrument_and_type(records: list[tuple[str, dict]]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for key, v in records:
        out.setdefault((key, v["type"]), []).append(v)
    return out


def test_a_broker_outage_longer_than_30_s_loses_and_changes_nothing(broker, reference, tmp_path):
    """The broker is killed (kill -9) in the middle of two runs that read
    ticks from it and publish to it, and comes back 35 s later on the same
    port with the same data. Run ``wait`` (default outage timeout) waits it
    out and ends normally with the uninterrupted run's outputs, in Kafka
    exactly once. Run ``stop`` (outage timeout 8 s, recovery on) gives up
    with one line and exit status 75; the same command then resumes and
    completes."""
    bootstrap, run_dir = broker
    ticks, ref_out, ref_records = reference
    full = _size(ref_out / "forecasts.csv")
    wait_out, wait_topic = tmp_path / "wait", topic_name("faults.wait")
    stop_out, stop_topic, rec = tmp_path / "stop", topic_name("faults.stop"), _recovery_dir(tmp_path / "recovery")
    stop_env = flow_env(bootstrap, ticks, stop_out, stop_topic, TICKLET_KAFKA__OUTAGE_TIMEOUT_S="8",
                        RUST_BACKTRACE="0")
    recovery = ("-r", str(rec), "-s", SNAPSHOT_S, "-b", "0")
    waiting = _flow(flow_env(bootstrap, ticks, wait_out, wait_topic), tmp_path / "wait.err")
    stopping = _flow(stop_env, tmp_path / "stop.err", *recovery)
    deadline = time.monotonic() + 180
    while min(_size(wait_out / "forecasts.csv"), _size(stop_out / "forecasts.csv")) < 0.2 * full:
        assert waiting.poll() is None and stopping.poll() is None, "a run ended before the outage"
        assert time.monotonic() < deadline, "no progress before the outage"
        time.sleep(0.01)
    kill_broker(run_dir)
    killed_at = time.monotonic()
    progress = [_size(wait_out / "forecasts.csv") / full, _size(stop_out / "forecasts.csv") / full]
    time.sleep(OUTAGE_S)
    assert waiting.poll() is None, "the run did not wait for the broker"
    assert stopping.poll() == 75, "the run with an 8 s outage timeout did not stop with status 75"
    assert restart_broker(run_dir) == bootstrap
    down = time.monotonic() - killed_at
    assert waiting.wait(300) == 0, (tmp_path / "wait.err").read_text()[-4000:]
    print(f"broker down {down:.0f} s, killed at {progress} of the output")

    err = (tmp_path / "wait.err").read_text()
    assert "panicked" not in err and "Traceback" not in err, err[-4000:]
    held_up = [ln for ln in err.splitlines() if ln.startswith("Kafka unreachable")]
    assert 1 <= len(held_up) <= 3 * (2 + down // 30), held_up  # rate-limited, not one per retry
    assert "Kafka reachable again" in err
    refused = [ln for ln in err.splitlines() if "Connection refused" in ln]
    assert len(refused) <= 8 * (2 + down // 30), refused[:5]  # librdkafka's lines, rate-limited too
    assert_files_match(wait_out, ref_out, "outage waited out")
    got = decoded(consume_all(bootstrap, wait_topic))
    assert len(got) == len(ref_records)  # exactly once: the idempotent producer retried without duplicates
    assert _by_instrument_and_type(got) == _by_instrument_and_type(ref_records)

    err = (tmp_path / "stop.err").read_text()
    assert "panicked" not in err and "Traceback" not in err, err[-4000:]
    final = [ln for ln in err.splitlines() if ln.startswith("ticklet: ")]
    assert len(final) == 1 and "Kafka unreachable for" in final[0] and "status 75" in final[0], err[-4000:]
    run_flow(stop_env, *recovery)  # the same command resumes from the last snapshot
    assert_files_match(stop_out, ref_out, "outage timeout, then resumed")
    assert dedup(decoded(consume_all(bootstrap, stop_topic))) == dedup(ref_records)  # at least once


def test_a_crash_loop_progresses_at_the_documented_kill_interval(broker, reference, tmp_path):
    """A live run (tail) killed with kill -9 every 8 s (the README's
    interval) and restarted at once, while the ticks arrive in four slices,
    one before each life: every life commits more of the input than the one
    before; a last run to the end of the topic completes, and the outputs
    match the uninterrupted run's."""
    from confluent_kafka import Producer

    from sinks.kafka import ensure_topic, producer_config

    bootstrap, _ = broker
    ticks, ref_out, ref_records = reference
    by_part: dict[int, list[tuple]] = {}
    for key, value, ts, part in consume_all(bootstrap, ticks):
        by_part.setdefault(part, []).append((key, value, ts))
    live = topic_name("faults.loop.ticks")
    cfg = producer_config([bootstrap], {"log_level": 0})
    ensure_topic(cfg, live, partitions=max(by_part) + 1)
    producer = Producer(cfg)
    slices = 4

    def publish(i: int) -> None:  # the i-th slice of every partition, in order
        for part, msgs in by_part.items():
            n = len(msgs)
            for key, value, ts in msgs[n * i // slices:n * (i + 1) // slices]:
                producer.produce(live, value, key, partition=part, timestamp=ts)
                producer.poll(0)
        assert producer.flush(60) == 0

    out, topic, rec = tmp_path / "out", topic_name("faults.loop"), _recovery_dir(tmp_path / "recovery")
    env = flow_env(bootstrap, live, out, topic, RUST_BACKTRACE="0", TICKLET_KAFKA__TAIL="true")
    recovery = ("-r", str(rec), "-s", SNAPSHOT_S, "-b", "0")
    committed = [0]
    for life in range(slices):
        publish(life)
        p = _flow(env, tmp_path / "loop.err", *recovery)
        time.sleep(KILL_EVERY_S)
        assert p.poll() is None, (tmp_path / "loop.err").read_text()[-4000:]
        p.kill()
        p.wait()
        committed.append(recovery_progress(rec)["offsets"])
        assert committed[-1] > committed[-2], f"life {life} made no progress: committed input offsets {committed}"
    print(f"{slices} lives killed after {KILL_EVERY_S} s each: committed input offsets {committed}")
    run_flow({**env, "TICKLET_KAFKA__TAIL": "false"}, *recovery)  # to the end of the topic
    assert_files_match(out, ref_out, f"crash loop {committed}")
    assert dedup(decoded(consume_all(bootstrap, topic))) == dedup(ref_records)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_kafka_source_and_sink_give_up_after_the_outage_timeout():
    """No broker at all, an outage timeout of 2 s: the source pauses and
    probes, the sink retries creating its topic, and both give up with
    KafkaOutageError after the timeout (the dataflow exits 75 instead)."""
    from sinks.kafka import KafkaOutageError, KafkaRecordSink, Outage
    from sources.kafka import KafkaTickSource

    brokers = [f"127.0.0.1:{_closed_port()}"]
    src = KafkaTickSource(brokers, "ticks", config={"log_level": 0}, outage=Outage("reading 'ticks'", 2.0))
    part = src.build_part("read_ticks", "0-ticks", None)
    t0 = time.monotonic()
    with pytest.raises(KafkaOutageError, match="reading 'ticks'"):
        while time.monotonic() - t0 < 60:
            assert part.next_batch() == []
            time.sleep(0.01)
    assert 2 <= time.monotonic() - t0 < 60
    assert part.snapshot() == -2  # OFFSET_BEGINNING: nothing read, nothing skipped
    part.close()
    sink = KafkaRecordSink("out", {"bootstrap.servers": brokers[0], "log_level": 0}, outage_timeout_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(KafkaOutageError, match="writing to 'out'"):
        sink.build_part("publish", "out", None)
    assert 2 <= time.monotonic() - t0 < 60

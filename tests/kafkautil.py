"""Helpers for the tests against the real Kafka broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from realdata import SCRATCH


def topic_name(prefix: str) -> str:
    return f"test.{prefix}.{uuid.uuid4().hex[:10]}"


def consume_all(bootstrap: str, topic: str, timeout_s: float = 60.0,
                with_offsets: bool = False) -> list[tuple]:
    """Every message of ``topic`` as (key, value, timestamp_ms, partition
    [, offset]), in partition order; reads each partition to its end."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        md = c.list_topics(topic, timeout=timeout_s).topics[topic]
        parts = sorted(md.partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out: dict[int, list] = {p: [] for p in parts}
        done: set[int] = set()
        empty_polls = 0
        while len(done) < len(parts):
            m = c.poll(1.0)
            if m is None:
                empty_polls += 1
                assert empty_polls < timeout_s, f"no end of partitions of {topic} within {timeout_s}s"
                continue
            if m.error():
                assert m.error().code() == m.error()._PARTITION_EOF, m.error()
                done.add(m.partition())
                continue
            out[m.partition()].append((m.key(), m.value(), m.timestamp()[1], m.partition(), m.offset()))
        return [x[:4] for p in parts for x in out[p]] if not with_offsets else [x for p in parts for x in out[p]]
    finally:
        c.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The high watermark of each partition (0 for a topic not created yet)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"offsets-{uuid.uuid4().hex}"})
    try:
        md = c.list_topics(timeout=30).topics.get(topic)
        if md is None or not md.partitions:
            return {}
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in md.partitions}
    finally:
        c.close()


def consume_with_offsets(bootstrap: str, topic: str) -> list[tuple[int, int, dict]]:
    """(partition, offset, decoded value) of every message of ``topic``."""
    return [(part, off, json.loads(v)) for _, v, _, part, off in consume_all(bootstrap, topic, with_offsets=True)]


def flow_env(bootstrap: str, ticks_topic: str, out_dir: Path, output_topic: str | None = None,
             dlq_topic: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env.update({
        "TICKLET_INPUT__SOURCE": "kafka",
        "TICKLET_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "TICKLET_KAFKA__TICKS_TOPIC": ticks_topic,
        "TICKLET_KAFKA__TAIL": "false",
        "TICKLET_OUTPUT__DIR": str(out_dir),
    })
    if output_topic:
        env.update({"TICKLET_OUTPUT__KAFKA": "true", "TICKLET_KAFKA__OUTPUT_TOPIC": output_topic,
                    "TICKLET_KAFKA__DEAD_LETTER_TOPIC": dlq_topic or output_topic + ".dlq"})
    env.update(extra)
    return env


def run_flow(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m bytewax.run dataflows.forecast ARGS``."""
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.forecast", *args],
                          cwd=SCRATCH, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def replay(bootstrap: str, topic: str, *paths: Path | str, speed: str = "max",
           extra: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, dict[str, Any] | None]:
    local = Path(sys.executable).parent / "ticklet"
    exe = [str(local)] if local.exists() else [sys.executable, "-m", "ticklet.cli"]
    proc = subprocess.run([*exe, "replay", *map(str, paths), "--to", "kafka", "--speed", speed,
                           "--bootstrap-servers", bootstrap, "--topic", topic, *extra],
                          cwd=SCRATCH, capture_output=True, text=True, timeout=600)
    summary = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc, summary


def decoded(records: list[tuple[bytes, bytes, int, int]]) -> list[tuple[str, dict]]:
    return [(k.decode(), json.loads(v)) for k, v, _, _ in records]

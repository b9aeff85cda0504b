"""Helpers for the tests against the real Kafka broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from harness.realdata import SCRATCH


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
            err, p = m.error(), m.partition()
            if err is not None:
                assert err.code() == err._PARTITION_EOF and p is not None, err
                done.add(p)
                continue
            assert p is not None, m
            out[p].append((m.key(), m.value(), m.timestamp()[1], p, m.offset()))
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


def produce_all(bootstrap: str, topic: str, pairs: Iterable[tuple[bytes, bytes]]) -> int:
    """Produce the (key, value) ``pairs`` into ``topic`` in order, as fast as
    the producer takes them; how many, once all are acknowledged."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    n = 0
    for key, value in pairs:
        while True:
            try:
                p.produce(topic, value, key)
                break
            except BufferError:  # its queue is full: let it send
                p.poll(0.05)
        n += 1
    assert p.flush(120) == 0, f"records of {topic} not acknowledged"
    return n


def publish_forecasts(bootstrap: str, topic: str, paths: list[Path | str], out_dir: Path,
                      **extra: str) -> list[tuple]:
    """The forecast dataflow over the recordings ``paths`` (read as files),
    publishing its records to ``topic``: those records, as :func:`consume_all`
    gives them. ``extra``: more settings (``TICKLET_...`` variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env.update({"TICKLET_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "TICKLET_KAFKA__OUTPUT_TOPIC": topic,
                "TICKLET_OUTPUT__KAFKA": "true", "TICKLET_OUTPUT__FILES": "false", "TICKLET_OUTPUT__DIR": str(out_dir),
                "TICKLET_OUTPUT__SUMMARY": "false", "TICKLET_INPUT__PATHS": json.dumps([str(p) for p in paths])})
    env.update(extra)
    run_flow(env, timeout=600)
    return consume_all(bootstrap, topic)


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


def dedup_key(v: dict) -> tuple:
    """What identifies a record of the output topic (the README's deduplication key)."""
    if v["type"] == "metrics":
        return (v["type"], v["instrument"], v["model"], v["horizon"], v["ts_target"])
    if v["type"] == "fill":  # a book closed before a gap in the data fills twice at its last decision
        return (v["type"], v["instrument"], v["model"], v["horizon"], v["ts_forecast"], v["position"])
    return (v["type"], v["instrument"], v["model"], v["horizon"], v["ts_forecast"])


def dedup(records: list[tuple[str, dict]], note: str = "") -> dict[tuple, dict]:
    """The records of a topic by :func:`dedup_key`; a duplicate must equal its first copy."""
    out: dict[tuple, dict] = {}
    for _, v in records:
        k = dedup_key(v)
        assert out.setdefault(k, v) == v, f"a replayed duplicate differs: {k}; {note}"
    return out


def by_instrument(path: Path) -> tuple[str, dict[str, list[str]]]:
    """The header of a CSV output and each instrument's lines (first column), in file order."""
    header, *rows = path.read_text().splitlines()
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row.split(",", 1)[0], []).append(row)
    return header, out


def assert_files_match(out: Path, ref: Path, note: str = "") -> None:
    """The README's guarantee for the output files of a run that was
    interrupted (kill -9 and restart, broker outage) against an uninterrupted
    run's: every record file has the same header and, instrument by
    instrument, the same lines in the same order (only the interleaving of
    instruments may differ); dead_letters.jsonl has the same lines;
    counters.json is equal."""
    from harness.realdata import RECORD_FILES

    for name in RECORD_FILES:
        got, want = by_instrument(out / name), by_instrument(ref / name)
        assert got[0] == want[0], (name, note)
        assert got[1].keys() == want[1].keys(), (name, note)
        for inst in want[1]:
            a, b = got[1][inst], want[1][inst]
            first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            assert a == b, f"{name} {inst}: {len(a)} vs {len(b)} lines, first difference at line {first}; {note}"
    dead = [sorted(p.read_text().splitlines()) if (p := d / "dead_letters.jsonl").exists() else None
            for d in (out, ref)]
    assert dead[0] == dead[1], note  # the same lines, or no file in either (no dead letters)
    counters = [json.loads((d / "counters.json").read_text()) for d in (out, ref)]
    assert counters[0] == counters[1], note


def kill_when(args: list[str], env: dict[str, str], rec_dir: Path, reached: Callable[[], bool],
              timeout_s: float = 120, fresh: bool = False) -> None:
    """Run the dataflow (``args``) and ``kill -9`` it once ``reached()`` and its recovery store has a snapshot.

    The first snapshot (epoch past 1) makes every restart resume from one;
    with ``fresh``, the run is killed only after a snapshot of its own (the
    store's epoch past the one it resumed from), so that each life gets
    somewhere. An assertion error if the run ends before.
    """
    floor = max(1, recovery_progress(rec_dir)["epoch"]) if fresh else 1
    p = subprocess.Popen(args, cwd=SCRATCH, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while p.poll() is None and time.monotonic() < deadline and (
            not reached() or recovery_progress(rec_dir)["epoch"] <= floor):
        time.sleep(0.005)
    assert p.poll() is None, f"the run ended before the kill: {p.stderr.read()[-2000:] if p.stderr else ''}"
    p.send_signal(signal.SIGKILL)
    p.wait()
    if p.stderr:
        p.stderr.close()


def recovery_progress(rec_dir: Path) -> dict[str, int]:
    """What a restart would resume from, read from Bytewax 0.21's recovery
    store (one partition, ``part-0.sqlite3``): ``epoch``, the resume epoch,
    and ``offsets``, the sum of the Kafka source's committed offsets (0 for a
    partition not read yet)."""
    import pickle
    import sqlite3

    con = sqlite3.connect(f"file:{rec_dir / 'part-0.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        ex = con.execute("SELECT ex_num, resume_epoch FROM exs ORDER BY ex_num DESC LIMIT 1").fetchone()
        if ex is None:
            return {"epoch": 1, "offsets": 0}
        front = con.execute("SELECT MIN(worker_frontier) FROM fronts WHERE ex_num = ?", (ex[0],)).fetchone()[0]
        epoch = ex[1] if front is None else front
        snaps = con.execute("SELECT state_key, snap_epoch, ser_change FROM snaps "
                            "WHERE step_id = 'ticklet_forecast.read_ticks' AND snap_epoch < ?", (epoch,)).fetchall()
    finally:
        con.close()
    latest: dict[str, tuple[int, Any]] = {}
    for key, snap_epoch, ser in snaps:
        if key not in latest or snap_epoch > latest[key][0]:
            latest[key] = (snap_epoch, ser)
    def offset(state: Any) -> int:  # the reader's, beside the per-instrument steps' states (dataflows.local)
        return max(0, state[0] if isinstance(state, tuple) else state)

    return {"epoch": epoch, "offsets": sum(offset(pickle.loads(ser)) for _, ser in latest.values() if ser)}

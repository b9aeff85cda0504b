"""End-to-end latency through a real Kafka broker at 10x real time, as JSON.

The forecast dataflow runs live (tailing the ticks topic, one worker) while
recordings are replayed into Kafka at ``--speed`` times real time. A bar
closes when the first tick at or after its end that the parser makes an event
of arrives (a ``markPrice`` message, which it skips, closes none: in a quiet
market the next event can come a second later); the latency of a bar is the
time from that closing tick's produce call to the moment its first forecast
is appended to the output topic (the topic is created with
``message.timestamp.type=LogAppendTime``, so the broker stamps the append;
same machine, same clock, millisecond resolution).

Where the time goes: the ticks topic is created with ``LogAppendTime``
too, so each bar's latency splits into ``to_broker_ms`` (the closing tick's
produce call to its append to the ticks topic: the producer's linger and
the network) and ``through_dataflow_ms`` (that append to the forecast's:
the source's fetch and batching, the steps, the output producer). Both are
p50/p99/max over the bars, at the broker's millisecond resolution.

Usage::

    python benchmarks/kafka_latency.py [PATH ...] [--speed 10]

Defaults to the 2024-08-08 spot BTCUSDT and ETHUSDT recordings (about 6
minutes of market time). Uses ``$KAFKA_BOOTSTRAP_SERVERS`` or starts a broker
with scripts/kafka.sh.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core.events import RawChunk  # noqa: E402
from harness.kafka_broker import kafka_broker  # noqa: E402
from harness.kafkautil import consume_all  # noqa: E402
from sinks.kafka import ensure_topic  # noqa: E402
from sources.binance import parse_chunk  # noqa: E402
from sources.files import group_streams, read_stream  # noqa: E402
from sources.wire import tick_head  # noqa: E402
from ticklet.publish import publish  # noqa: E402


def event_times(paths: list[str]) -> dict[str, set[int]]:
    """Per instrument, the receive times (ns) of the recordings' ticks that ticklet's parser makes events of."""
    out: dict[str, set[int]] = defaultdict(set)
    for spec in group_streams(paths):
        recs = [r for block in read_stream(spec) for r in block]
        by_key, _, _ = parse_chunk(RawChunk(spec.fmt, spec.market, spec.symbol, recs, spec.interval_ns))
        for key, evs in by_key.items():
            out[key].update(e.ts_recv for e in evs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    spot = ROOT.parent / "shared" / "data" / "binance-ws" / "spot"
    ap.add_argument("paths", nargs="*", default=[str(spot / "btcusdt_20240808.gz"), str(spot / "ethusdt_20240808.gz")])
    ap.add_argument("--speed", type=float, default=10.0)
    ap.add_argument("--partitions", type=int, default=4, help="partitions of the ticks and output topics")
    ap.add_argument("--path", choices=("auto", "chunk", "message"), default="auto",
                    help="TICKLET_INPUT__PATH of the dataflow (auto, the default, takes the chunk path on Kafka)")
    args = ap.parse_args()
    with kafka_broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        ticks, out_topic = f"lat.ticks.{uuid.uuid4().hex[:8]}", f"lat.out.{uuid.uuid4().hex[:8]}"
        cfg = {"bootstrap.servers": bootstrap}
        ensure_topic(cfg, ticks, partitions=args.partitions, topic_config={"message.timestamp.type": "LogAppendTime"})
        ensure_topic(cfg, out_topic, partitions=args.partitions,
                     topic_config={"message.timestamp.type": "LogAppendTime"})
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
        env.update({
            "TICKLET_INPUT__SOURCE": "kafka", "TICKLET_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "TICKLET_KAFKA__TICKS_TOPIC": ticks, "TICKLET_KAFKA__TAIL": "true",
            "TICKLET_KAFKA__OUTPUT_TOPIC": out_topic, "TICKLET_KAFKA__LINGER_MS": "0",
            "TICKLET_OUTPUT__KAFKA": "true", "TICKLET_OUTPUT__FILES": "false",
            "TICKLET_OUTPUT__DIR": tmp, "TICKLET_INPUT__PATH": args.path,
        })
        flow = subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.forecast"], cwd=ROOT,
                                env=env, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not (Path(tmp) / "counters.json").exists() and time.monotonic() < deadline:
                time.sleep(0.1)  # the sinks are built: the dataflow is up
            time.sleep(1.0)
            produced: dict[str, list[tuple[int, float]]] = defaultdict(list)
            started = time.time()
            rep = publish(args.paths, [bootstrap], ticks, speed=args.speed, linger_ms=0,
                          on_produce=lambda key, ts, wall: produced[key].append((ts, wall)))
            time.sleep(3.0)  # let the last bars through
        finally:
            flow.terminate()
            flow.wait(30)
        records = [(ts_ms, json.loads(value)) for _, value, ts_ms, _ in consume_all(bootstrap, out_topic)]
        tick_append: dict[tuple[str, int], float] = {}
        for key, value, ts_ms, _ in consume_all(bootstrap, ticks):
            head = tick_head(value)
            if head is not None:
                tick_append.setdefault((key.decode(), head[0]), ts_ms / 1e3)
    first_append: dict[tuple[str, int], float] = {}
    for ts_ms, v in records:
        if v["type"] == "forecast":
            k = (v["instrument"], v["ts_forecast"])
            first_append[k] = min(first_append.get(k, ts_ms / 1e3), ts_ms / 1e3)
    lat_ms, to_broker, through = [], [], []
    slowest: list[tuple[float, float, str, int, Optional[float]]] = []
    t_first = min((rows[0][1] for rows in produced.values() if rows), default=0.0)
    events = event_times(args.paths)
    after_skipped = 0
    for (sym, t), appended in first_append.items():
        rows = produced[sym]
        i = bisect.bisect_left(rows, (t, -1.0))  # the first tick at or after the bar's end
        first = i
        while i < len(rows) and rows[i][0] not in events[sym]:  # that the parser makes an event of
            i += 1
        after_skipped += i != first
        if i < len(rows):
            lat_ms.append((appended - rows[i][1]) * 1e3)
            landed = tick_append.get((sym, rows[i][0]))
            slowest.append((lat_ms[-1], rows[i][1] - t_first, sym, t,
                            None if landed is None else round((landed - rows[i][1]) * 1e3, 1)))
            if landed is not None:
                to_broker.append((landed - rows[i][1]) * 1e3)
                through.append((appended - landed) * 1e3)

    def spread(xs: list[float]) -> dict[str, float]:
        return {"p50": round(statistics.median(xs), 2), "p99": round(float(np.percentile(xs, 99, method="higher")), 2),
                "max": round(max(xs), 2), "min": round(min(xs), 2)}

    result = {
        "benchmark": "kafka_latency",
        "inputs": args.paths,
        "speed": args.speed,
        "partitions": args.partitions,
        "path": args.path,
        "ticks_replayed": rep["messages"],
        "replay_failed": rep["failed"],
        "bars_measured": len(lat_ms),
        "bars_closed_after_a_skipped_tick": after_skipped,
        "latency_ms": spread(lat_ms),
        "bars_split": len(through),
        "to_broker_ms": spread(to_broker) if to_broker else None,
        "through_dataflow_ms": spread(through) if through else None,
        "replay_started_unix_s": round(started, 3),
        "slowest_bars": [{"latency_ms": round(ms, 2), "to_broker_ms": tb, "at_s": round(at, 2), "instrument": sym,
                          "ts_forecast": t} for ms, at, sym, t, tb in sorted(slowest, reverse=True)[:10]],
        "measured_from": "produce call of the tick that closes the bar: the first at or after its end that the "
                         "parser makes an event of",
        "measured_to": "broker append time (LogAppendTime, ms) of the bar's first forecast",
    }
    sys.stdout.write(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

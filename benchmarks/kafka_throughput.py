"""Maximum sustained ticks/s through a real Kafka broker, as JSON.

1. Replays the recordings into a fresh topic as fast as possible
   (``replay_messages_per_s``).
2. Runs the forecast dataflow (one worker) from that topic to the end, with
   forecasts and metrics published to an output topic, and reports
   ``dataflow_ticks_per_s`` = ticks / wall time of the whole run (start-up,
   connections and metadata included) and ``sustained_ticks_per_s`` = ticks /
   time from the first consumed batch to the end of the run.

Usage::

    python benchmarks/kafka_throughput.py [PATH ...] [--repeat N]

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` or starts a broker with scripts/kafka.sh.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bytewax.testing import run_main  # noqa: E402

import sources.kafka  # noqa: E402
from core.config import KafkaConfig  # noqa: E402
from dataflows.forecast import build_flow  # noqa: E402
from dataflows.settings import Settings
from harness.kafka_broker import kafka_broker  # noqa: E402
from sinks.output_config import OutputConfig
from sources.input_config import InputConfig
from ticklet.publish import publish  # noqa: E402

_first_batch: list[float] = []


def _timed_next_batch(self):  # instrumentation: when did data start flowing?
    out = _orig_next_batch(self)
    if out and not _first_batch:
        _first_batch.append(time.perf_counter())
    return out


_orig_next_batch = sources.kafka._Partition.next_batch
sources.kafka._Partition.next_batch = _timed_next_batch  # type: ignore[method-assign]  # instrumentation, on purpose


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", default=[str(ROOT.parent / "shared" / "data" / "binance-ws")])
    ap.add_argument("--repeat", type=int, default=3, help="dataflow runs; the best is reported")
    ap.add_argument("--path", choices=("auto", "chunk", "message"), default="auto",
                    help="TICKLET_INPUT__PATH (auto, the default, takes the chunk path on Kafka)")
    args = ap.parse_args()
    with kafka_broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        topic = f"bench.ticks.{uuid.uuid4().hex[:8]}"
        rep = publish(args.paths, [bootstrap], topic, partitions=4)
        runs, sustained = [], []
        counters: dict = {}
        for i in range(args.repeat):
            s = Settings()
            settings = s.model_copy(update={
                "input": InputConfig(source="kafka", path=args.path),
                "kafka": KafkaConfig(bootstrap_servers=bootstrap, ticks_topic=topic, tail=False,
                                     output_topic=f"bench.out.{uuid.uuid4().hex[:8]}"),
                "output": OutputConfig(dir=Path(tmp) / str(i), kafka=True),
            })
            flow = build_flow(settings)
            _first_batch.clear()
            t0 = time.perf_counter()
            run_main(flow)
            t1 = time.perf_counter()
            runs.append(t1 - t0)
            sustained.append(t1 - _first_batch[0])
            counters = json.loads((Path(tmp) / str(i) / "counters.json").read_text())
    best = min(runs)
    result = {
        "benchmark": "kafka_throughput",
        "inputs": args.paths,
        "broker": "Apache Kafka 3.9 (KRaft, single node, 127.0.0.1)",
        "replay_messages": rep["messages"],
        "replay_failed": rep["failed"],
        "replay_messages_per_s": rep["messages_per_s"],
        "ticks": counters.get("ticks"),
        "forecasts": counters.get("forecasts"),
        "dataflow_wall_s": round(best, 4),
        "dataflow_ticks_per_s": round(counters.get("ticks", 0) / best),
        "startup_s": round(min(r - s for r, s in zip(runs, sustained, strict=True)), 4),
        "sustained_ticks_per_s": round(counters.get("ticks", 0) / min(sustained)),
        "workers": 1,
        "path": args.path,
        "repeat": args.repeat,
    }
    sys.stdout.write(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

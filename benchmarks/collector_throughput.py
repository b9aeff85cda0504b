"""Messages per second through ``ticklet collect``, as JSON.

The local exchange of the tests (``harness/binance_server.py``) serves the real
spot recordings of BTCUSDT and ETHUSDT (2024-08-08/09) as fast as the socket
takes them, and the collector takes every message through the whole path:
receive-clock stamp, raw capture (gzip), Kafka produce (idempotent, acks=all,
flushed at the end), trade-id gap check and local order book. Reported:
``messages_per_s`` = messages / time from the first to the last message, and
the collector's counters. Both processes share the machine's cores.

Usage::

    python benchmarks/collector_throughput.py [--repeat N]

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` or starts a broker with scripts/kafka.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import KafkaConfig  # noqa: E402
from harness.binance_server import ReplayExchange  # noqa: E402
from harness.kafka_broker import kafka_broker  # noqa: E402
from sources.binance_live import CollectConfig
from ticklet.collector import Collector  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "binance-ws" / "spot"
FILES = [DATA / f"{s}_{d}.gz" for s in ("btcusdt", "ethusdt") for d in ("20240808", "20240809")]


class _Timed(Collector):
    first = last = 0.0

    def on_message(self, message: bytes) -> None:
        now = time.perf_counter()
        self.first = self.first or now
        super().on_message(message)
        self.last = time.perf_counter()


def once(bootstrap: str) -> dict:
    with tempfile.TemporaryDirectory() as cap:
        ex = ReplayExchange(FILES).start()
        try:
            cfg = CollectConfig(symbols=["BTCUSDT", "ETHUSDT"], streams=("trade", "bookTicker", "depth@100ms"),
                                ws_url=ex.url, depth_url=ex.depth_url("spot"), capture_dir=Path(cap),
                                book_topic=f"bench.book.{uuid.uuid4().hex[:8]}")
            c = _Timed(cfg, KafkaConfig(bootstrap_servers=bootstrap, ticks_topic=f"bench.ticks.{uuid.uuid4().hex[:8]}"))
            counts = asyncio.run(c.run(idle_exit_s=1.0))
        finally:
            ex.stop()
    wall = c.last - c.first
    return {"messages": counts["messages"], "sent_by_exchange": len(ex.sent), "wall_s": round(wall, 3),
            "messages_per_s": round(counts["messages"] / wall, 1), "counters": counts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    with kafka_broker() as bootstrap:
        runs = [once(bootstrap) for _ in range(args.repeat)]
    best = max(runs, key=lambda r: r["messages_per_s"])
    sys.stdout.write(json.dumps({"runs": [r["messages_per_s"] for r in runs], "best": best}) + "\n")


if __name__ == "__main__":
    main()

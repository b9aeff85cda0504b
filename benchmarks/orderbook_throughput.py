"""Cost of the local order book (:mod:`operators.orderbook`) per depth diff
on the real recordings, as JSON.

Parses the depth diffs and the REST snapshot of each window first, then
times only ``orderbook.step`` over them (best of ``--repeat`` runs, fresh
state each run, snapshot load and every BookQuote included).

Usage::

    python benchmarks/orderbook_throughput.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.events import DepthUpdate  # noqa: E402
from harness.realdata import book_stream  # noqa: E402
from operators import orderbook  # noqa: E402

DATA = Path(os.environ.get("TICKLET_DATA", ROOT.parent / "shared" / "data")) / "binance-ws"
WINDOWS = {
    "BTCUSDT spot 2024-08-08/09": ("spot", ("spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz")),
    "ETHUSDT spot 2024-08-08/09": ("spot", ("spot/ethusdt_20240808.gz", "spot/ethusdt_20240809.gz")),
    "BTCUSDT USD-M 2023-04-04/05": ("usdm", ("usdm/btcusdt_20230404.dat.gz", "usdm/btcusdt_20230405.dat.gz")),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    cfg = orderbook.OrderBookConfig()
    windows: dict[str, dict] = {}
    result = {"python": platform.python_version(), "config": cfg.model_dump(), "windows": windows}
    for name, (market, files) in WINDOWS.items():
        items, _ = book_stream(tuple(str(DATA / f) for f in files), market)
        diffs = sum(1 for e in items if type(e) is DepthUpdate)
        levels = sum(len(e.bids) + len(e.asks) for e in items if type(e) is DepthUpdate)
        best = float("inf")
        for _ in range(args.repeat):
            st = orderbook.OrderBookState(cfg)
            step = orderbook.step
            t0 = time.perf_counter()
            for e in items:
                st, _out = step(st, e)
            best = min(best, time.perf_counter() - t0)
        windows[name] = {
            "diffs": diffs,
            "levels": levels,
            "us_per_diff": round(best / diffs * 1e6, 2),
            "us_per_level": round(best / levels * 1e6, 3),
            "diffs_per_s": round(diffs / best),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

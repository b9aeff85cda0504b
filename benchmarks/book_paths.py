"""The order books of the two paths, alone, on a recording's events, as JSON.

The events of a recording (by default the USD-M BTCUSDT-PERP recordings of
../shared/data/binance-ws), parsed once by each path, go through:

- ``orderbook``: the order book alone (:mod:`operators.orderbook`, no quotes);
- ``depth``: the bars with their book and its depth features
  (:mod:`operators.depth`, the dataflow's ``make_bars``);
- ``maker``: the maker's book and its baseline quotes and fills
  (:mod:`operators.maker`, no model decisions);

each on the per-message path (the events' levels in tuples, the book in
Python dicts and lists: ``_message``) and on the chunk path (the levels in the
scanner's arrays, the book in :mod:`operators.flatbook`: ``_chunk``), the
compiled code loaded before. Figures: seconds (best of ``--repeat``) and µs
per depth diff; ``same``: whether both paths gave the same outputs.

Usage::

    python benchmarks/book_paths.py [PATH ...] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.events import BookSnapshot, DepthUpdate  # noqa: E402
from harness.realdata import best_of, drive, parse_paths  # noqa: E402

DATA = Path(os.environ.get("TICKLET_DATA", ROOT.parent / "shared" / "data")) / "binance-ws"
DEFAULT = [DATA / "usdm" / "btcusdt_20230404.dat.gz", DATA / "usdm" / "btcusdt_20230405.dat.gz"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    paths = args.paths or DEFAULT
    from dataflows.settings import Settings
    from operators import depth, flatbook, maker, orderbook

    s = Settings()
    events = {}
    for path in ("message", "chunk"):
        (evs,) = parse_paths(paths, path)[0].values()
        events[path] = list(evs)
    diffs = sum(type(e) is DepthUpdate for e in events["message"])
    flatbook.warm()

    def book(compiled: bool):
        cfg = orderbook.OrderBookConfig(quotes=False, compiled=compiled)
        return orderbook.step, lambda: orderbook.OrderBookState(cfg)

    cases: dict = {
        "orderbook": (book, lambda evs: [e for e in evs if type(e) is DepthUpdate or type(e) is BookSnapshot]),
        "depth": (lambda c: (depth.step, lambda: depth.DepthState(s.bars, s.features.depth, c)), list),
        "maker": (lambda c: (maker.step, lambda: maker.QuoterState(maker.MakerConfig(), compiled=c)), list),
    }
    out: dict = {"benchmark": "book_paths", "python": platform.python_version(), "cpus": os.cpu_count(),
                 "repeat": args.repeat, "files": [str(p) for p in paths], "events": len(events["message"]),
                 "depth_diffs": diffs}
    for name, (make, pick) in cases.items():
        outs = {}
        for path in ("message", "chunk"):
            step, fresh = make(path == "chunk")
            items = pick(events[path])
            outs[path] = drive(step, fresh(), items)[1]
            def run(step=step, fresh=fresh, items=items) -> None:
                drive(step, fresh(), items)

            sec = best_of(args.repeat, run)
            out[f"{name}_{path}_s"] = round(sec, 4)
            out[f"{name}_{path}_us_per_diff"] = round(sec / diffs * 1e6, 2)
        out[f"{name}_same"] = outs["message"] == outs["chunk"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

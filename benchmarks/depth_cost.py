"""What the order book in the dataflow costs, on the real recordings, as JSON.

For each window of the recordings:

- ``book_us_per_depth_update``: the bars with their order book
  (:func:`operators.depth.step`: the checked book, the multi-level OFI, book
  events and each bar's book) minus the bars alone (:func:`operators.bars.step`)
  over the same parsed events, per depth diff (best of ``--repeat`` runs,
  fresh states, parsing excluded);
- ``features_us_per_bar_depth`` / ``features_us_per_bar_top``: the features
  of a bar with and without the depth features (integrated OFI's PCA
  included);
- ``dataflow_lines_per_s_depth`` / ``dataflow_lines_per_s_top``: the whole
  forecasting dataflow (``ticklet.backtest.run_backtest``, one worker, every
  output file) on the window's recordings, input lines per second of wall
  time, with depth features on (the default) and off.

Usage::

    python benchmarks/depth_cost.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.events import Bar, DepthUpdate  # noqa: E402
from dataflows.settings import Settings  # noqa: E402
from harness.realdata import best_of, drive, parse_paths  # noqa: E402
from operators import bars, depth, features  # noqa: E402
from operators.depth import DepthConfig  # noqa: E402

DATA = Path(os.environ.get("TICKLET_DATA", ROOT.parent / "shared" / "data")) / "binance-ws"
WINDOWS = {
    "BTCUSDT USD-M 2023-04-04/05": ("usdm/btcusdt_20230404.dat.gz", "usdm/btcusdt_20230405.dat.gz"),
    "BTCUSDT spot 2024-08-08/09": ("spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz"),
    "ETHUSDT spot 2024-08-08/09": ("spot/ethusdt_20240808.gz", "spot/ethusdt_20240809.gz"),
}


def _window(name: str, files: tuple[str, ...], repeat: int) -> dict:
    paths = [DATA / f for f in files]
    by_key, _, counts = parse_paths(paths)
    (events,) = by_key.values()
    s = Settings()
    n_depth = sum(type(e) is DepthUpdate for e in events)
    t_bars = best_of(repeat, lambda: drive(bars.step, bars.BarState(s.bars), events))
    t_book = best_of(repeat, lambda: drive(depth.step, depth.DepthState(s.bars, s.features.depth), events))
    _, with_book = drive(depth.step, depth.DepthState(s.bars, s.features.depth), events)
    bar_list = [b for b in with_book if type(b) is Bar]
    top = s.features.model_copy(update={"depth": DepthConfig(enabled=False)})
    t_feat = best_of(repeat, lambda: drive(features.step, features.FeatureState(s.features), bar_list))
    t_top = best_of(repeat, lambda: drive(features.step, features.FeatureState(top), bar_list))

    from ticklet.backtest import run_backtest

    lines = counts["input_records"]
    walls = {}
    for label, base in (("depth", s), ("top", s.model_copy(update={"features": top}))):
        best = float("inf")
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as out:
                base_quiet = base.model_copy(update={"output": base.output.model_copy(update={"summary": False})})
                t0 = time.perf_counter()
                run_backtest([str(p) for p in paths], Path(out), base=base_quiet)
                best = min(best, time.perf_counter() - t0)
        walls[label] = best
    return {
        "window": name, "events": len(events), "input_lines": lines, "depth_updates": n_depth, "bars": len(bar_list),
        "book_us_per_depth_update": round((t_book - t_bars) / n_depth * 1e6, 2),
        "bars_us_per_event": round(t_bars / len(events) * 1e6, 3),
        "features_us_per_bar_depth": round(t_feat / len(bar_list) * 1e6, 1),
        "features_us_per_bar_top": round(t_top / len(bar_list) * 1e6, 1),
        "dataflow_lines_per_s_depth": round(lines / walls["depth"]),
        "dataflow_lines_per_s_top": round(lines / walls["top"]),
        "dataflow_wall_s_depth": round(walls["depth"], 3), "dataflow_wall_s_top": round(walls["top"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    res = [_window(name, files, args.repeat) for name, files in WINDOWS.items()]
    print(json.dumps({"benchmark": "depth_cost", "python": platform.python_version(), "cpus": os.cpu_count(),
                      "repeat": args.repeat, "windows": res}, indent=1))


if __name__ == "__main__":
    main()

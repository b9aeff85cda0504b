"""Cost per bar and hit rate of the DeepLOB-style book learner on real feature rows, as JSON.

The real USD-M BTCUSDT 2023-04-04 -> 05 recordings go through the project's
bar and feature operators with the default settings and the book in the row
(``TICKLET_FEATURES__DEPTH__BOOK_IN_ROW``); the rows then drive one
horizon-1 :class:`models.deeplob.DeepLOBModel` the way the time-travel join
does (``learn_one`` for the forecast made one bar earlier, then
``predict_one``). One untimed pass warms torch up; ``--repeats`` timed
passes follow, each with a fresh model. Reported: ``avg_us_per_bar``,
``p50``, ``p99`` (predict_one + learn_one, scheduled retraining included),
``steady_avg_us_per_bar`` (after the first retrain), ``retrain_ms`` (a
learn_one that retrains), the parameters, and the hit rate over the non-zero
1-second mid moves (a zero forecast a miss, as the metrics count it) and
over those it called. ``--seeds K`` adds the hit rates of seeds ``0 ..
K-1`` (one untimed pass each): on a few hundred labels the figure of one
seed says little.

Usage::

    python benchmarks/book_learner.py [--repeats 3] [--seeds 10] [--data DIR] [--config JSON]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dataflows.settings import Settings  # noqa: E402
from harness.realdata import run_chain  # noqa: E402
from models.deeplob import DeepLOBConfig, DeepLOBModel  # noqa: E402


def rows_with_book(data: Path) -> list:
    s = Settings()
    depth = s.features.depth.model_copy(update={"book_in_row": True})
    s = s.model_copy(update={"features": s.features.model_copy(update={"depth": depth})})
    chain = run_chain([data / "usdm" / "btcusdt_20230404.dat.gz", data / "usdm" / "btcusdt_20230405.dat.gz"], s)
    return chain.rows


def one_pass(rows: list, cfg: DeepLOBConfig) -> tuple[list[float], list[float], list[tuple[float, float]], int]:
    """(µs per bar, ms per retraining learn_one, (forecast, realized) pairs, bar of the first retrain)."""
    m = DeepLOBModel(cfg)
    costs, retrains, scored = [], [], []
    first = -1
    prev = None
    for r in rows:
        t0 = time.perf_counter()
        if prev is not None and r.ts_end == prev[0].ts_end + prev[0].interval:
            n = m.n_retrains
            m.learn_one(prev[0].x, math.log(r.price / prev[0].price))
            if m.n_retrains > n:
                retrains.append((time.perf_counter() - t0) * 1e3)
                if first < 0:
                    first = len(costs)
            scored.append((prev[1], math.log(r.price / prev[0].price)))
        prev = None
        if r.ready:
            prev = (r, m.predict_one(r.x))
        costs.append((time.perf_counter() - t0) * 1e6)
    return costs, retrains, scored, first


def _hits(scored: list[tuple[float, float]]) -> tuple[list, list, int]:
    """(the non-zero moves, those with a non-zero forecast, the moves whose sign the forecast got)."""
    moves = [(p, y) for p, y in scored if y != 0.0]
    called = [(p, y) for p, y in moves if p != 0.0]
    return moves, called, sum(1 for p, y in moves if p * y > 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "binance-ws")
    ap.add_argument("--config", default="{}", help="DeepLOBConfig fields as JSON")
    ap.add_argument("--seeds", type=int, default=0, help="also the hit rates of seeds 0 .. SEEDS-1")
    args = ap.parse_args()
    cfg = DeepLOBConfig(**json.loads(args.config))
    rows = rows_with_book(args.data)
    n_book = sum(1 for r in rows if r.ready and "lob_ap1" in r.x)
    _, _, scored, _ = one_pass(rows, cfg)  # warm-up, and the forecasts (identical in every pass)
    costs: list[float] = []
    steady: list[float] = []
    retrain_ms: list[float] = []
    for _ in range(args.repeats):
        c, rt, _, first = one_pass(rows, cfg)
        costs += c
        steady += c[first + 1:] if first >= 0 else []
        retrain_ms += rt
    moves, called, hits = _hits(scored)
    by_seed = {}
    for seed in range(args.seeds):
        m, c, h = _hits(one_pass(rows, cfg.model_copy(update={"seed": seed}))[2])
        by_seed[seed] = {"hit_rate": round(h / len(m), 4) if m else None,
                         "hit_rate_called": round(h / len(c), 4) if c else None}
    net = DeepLOBModel(cfg)._make_net()
    report = {
        "config": cfg.model_dump(), "rows": len(rows), "rows_with_book": n_book, "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(), "parameters": sum(p.numel() for p in net.parameters()),
        "avg_us_per_bar": round(float(np.mean(costs)), 1), "p50_us": round(float(np.percentile(costs, 50)), 1),
        "p99_us": round(float(np.percentile(costs, 99)), 1),
        "steady_avg_us_per_bar": round(float(np.mean(steady)), 1) if steady else None,
        "retrain_ms": round(float(np.mean(retrain_ms)), 2) if retrain_ms else None,
        "moves": len(moves), "hits": hits, "hit_rate": round(hits / len(moves), 4) if moves else None,
        "called": len(called), "hit_rate_called": round(hits / len(called), 4) if called else None,
    }
    if by_seed:
        rates = [v["hit_rate"] for v in by_seed.values() if v["hit_rate"] is not None]
        report["hit_rate_by_seed"] = by_seed
        report["hit_rate_seeds_mean"] = round(float(np.mean(rates)), 4) if rates else None
    sys.stdout.write(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

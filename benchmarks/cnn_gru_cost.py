"""Cost of the CNN-GRU learner per bar on real feature rows, as JSON.

The real spot BTCUSDT 2024-08-08 -> 09 recordings (one continuous window of
about 11 minutes) go through the project's bar and feature operators with the
default settings; the resulting feature rows then drive one horizon-1
:class:`models.cnn_gru.CNNGRUModel` the way the time-travel join does: at
each bar, first ``learn_one`` for the forecast whose target is this bar (with
the realized log return of the bar price), then ``predict_one`` on this
bar's features. The cost of a bar is the wall time of both calls together,
scheduled retraining included.

One untimed pass warms torch up; then ``--repeats`` passes, each with a fresh
model, are timed and pooled. Reported (microseconds unless named ``_ms``):

- ``avg_us_per_bar`` / ``p50`` / ``p99`` / ``max``: over every ready bar;
- ``steady_avg_us_per_bar``: over bars after the first retrain (the model
  forecasts for real there; before it, predict_one only fills its window);
- ``predict_us``: predict_one alone once trained; ``learn_us``: learn_one
  without a retrain; ``retrain_ms``: a learn_one that retrains, per retrain.

Usage::

    python benchmarks/cnn_gru_cost.py [--repeats 5] [--data DIR] [--config JSON]

``--config`` overrides :class:`models.cnn_gru.CNNGRUConfig` fields, e.g.
``'{"hidden": 16}'`` or ``'{"objective": "direction"}'``. ``--warm`` times a
warm start: each pass starts from a copy of a model trained on the same rows
(an online pass, then its offline epochs, as a model bundle gives it), its
stream afresh, so it forecasts (and retrains) from the first bar.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np
import torch

from harness.realdata import run_chain
from models.cnn_gru import CNNGRUConfig, CNNGRUModel

TARGET_US = 5000.0


def one_pass(rows: list, cfg: CNNGRUConfig, start: CNNGRUModel | None = None) -> dict:
    if start is not None:  # a warm start: a copy of a trained model, its stream afresh
        m = copy.deepcopy(start)
        m.reset_stream()
    else:
        m = CNNGRUModel(cfg)
    bar_us, steady_us, pred_us, learn_us, retrain_ms = [], [], [], [], []
    prev = None
    clock = time.perf_counter_ns
    for r in rows:
        t0 = clock()
        retrained = learned = False
        if prev is not None and r.ts_end == prev.ts_end + prev.interval:
            before = m.n_retrains
            m.learn_one(prev.x, math.log(r.price / prev.price))
            learned, retrained = True, m.n_retrains > before
        t1 = clock()
        trained = m.n_retrains > 0
        if r.ready:
            m.predict_one(r.x)
        t2 = clock()
        prev = r if r.ready else None
        if not (learned or r.ready):
            continue
        bar_us.append((t2 - t0) / 1e3)
        if trained:
            steady_us.append((t2 - t0) / 1e3)
            if r.ready:
                pred_us.append((t2 - t1) / 1e3)
        if retrained:
            retrain_ms.append((t1 - t0) / 1e6)
        elif learned:
            learn_us.append((t1 - t0) / 1e3)
    return {"bar": bar_us, "steady": steady_us, "predict": pred_us, "learn": learn_us,
            "retrain": retrain_ms, "retrains": m.n_retrains, "labelled": m.n_labelled}


def one_pass_model(rows: list, m: CNNGRUModel) -> None:
    """Drive ``m`` over the rows as the join does (untimed)."""
    prev = None
    for r in rows:
        if prev is not None and r.ts_end == prev.ts_end + prev.interval:
            m.learn_one(prev.x, math.log(r.price / prev.price))
        if r.ready:
            m.predict_one(r.x)
        prev = r if r.ready else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data", default=os.environ.get("TICKLET_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--config", default="{}", help="JSON overrides of CNNGRUConfig fields")
    ap.add_argument("--warm", action="store_true",
                    help="time a warm start: every pass starts from a model trained on the rows (one online pass, "
                    "then its offline epochs), as a bundle would give it")
    a = ap.parse_args()

    spot = Path(a.data) / "binance-ws" / "spot"
    paths = [spot / "btcusdt_20240808.gz", spot / "btcusdt_20240809.gz"]
    rows = run_chain(paths).rows
    cfg = CNNGRUConfig(**json.loads(a.config))

    start = None
    offline_s = None
    if a.warm:
        start = CNNGRUModel(cfg)
        start.record_offline()
        one_pass_model(rows, start)
        t0 = time.perf_counter()
        start.fit_offline()
        offline_s = round(time.perf_counter() - t0, 2)
    one_pass(rows, cfg, start)  # warm-up, untimed
    runs = [one_pass(rows, cfg, start) for _ in range(a.repeats)]
    pool = {k: np.array([v for run in runs for v in run[k]]) for k in ("bar", "steady", "predict", "learn", "retrain")}

    def r1(v: float) -> float:
        return round(float(v), 1)

    out = {
        "data": [str(p.relative_to(Path(a.data))) for p in paths],
        "rows": len(rows),
        "ready_rows": sum(r.ready for r in rows),
        "horizon": 1,
        "repeats": a.repeats,
        "bars_timed": int(pool["bar"].size),
        "avg_us_per_bar": r1(pool["bar"].mean()),
        "p50_us_per_bar": r1(np.percentile(pool["bar"], 50)),
        "p99_us_per_bar": r1(np.percentile(pool["bar"], 99)),
        "max_us_per_bar": r1(pool["bar"].max()),
        "steady_avg_us_per_bar": r1(pool["steady"].mean()),
        "steady_p99_us_per_bar": r1(np.percentile(pool["steady"], 99)),
        "predict_us": r1(pool["predict"].mean()),
        "learn_us": r1(pool["learn"].mean()),
        "retrain_ms": round(float(pool["retrain"].mean()), 2),
        "retrain_p99_ms": round(float(np.percentile(pool["retrain"], 99)), 2),
        "retrains_per_run": runs[0]["retrains"],
        "labelled_per_run": runs[0]["labelled"],
        "target_avg_us_per_bar": TARGET_US,
        "meets_target": bool(pool["bar"].mean() <= TARGET_US and pool["steady"].mean() <= TARGET_US),
        "warm": a.warm,
        "offline_fit_s": offline_s,
        "offline_report": start.offline_report if start is not None else None,
        "config": cfg.model_dump(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

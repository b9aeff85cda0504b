"""Every ensemble rule against the best single model on the recordings, as JSON.

Runs the forecast dataflow once over every websocket recording with the whole
learner suite, then replays the members' scored 1-bar forecasts, in the
order the join produced them, through a fresh :class:`EnsembleModel` of each
rule (``eg``, ``hedge``, ``direction``, ``stack``): each ensemble forecast is
made before the ensemble learns from that target, as in the dataflow. For
each instrument it prints the hits over the realized non-zero moves of every
rule and of every single model.

Usage::

    python benchmarks/ensemble_rules.py [--eta 0.05] [--decay 0.995]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "binance-ws"

from models.ensemble import EnsembleModel  # noqa: E402
from models.registry import MODELS  # noqa: E402
from operators.forecast import ForecastConfig  # noqa: E402
from ticklet.cli import run_backtest  # noqa: E402
from ticklet.settings import Settings  # noqa: E402

RULES = ("eg", "hedge", "direction", "stack")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eta", type=float, default=0.05)
    ap.add_argument("--decay", type=float, default=0.995)
    args = ap.parse_args()
    members = tuple(sorted(MODELS))
    base = Settings()
    s = base.model_copy(update={"forecast": ForecastConfig(horizons=(1,), models=members)})
    rows: dict[str, dict[int, dict]] = defaultdict(dict)  # symbol -> forecast_time -> {model: pred, "y": y}
    with tempfile.TemporaryDirectory() as tmp:
        run_backtest([str(DATA)], Path(tmp), base=s)
        with open(Path(tmp) / "forecasts.csv", newline="") as f:
            for r in csv.DictReader(f):
                d = rows[r["symbol"]].setdefault(int(r["forecast_time"]), {})
                d[r["model"]] = float(r["pred_return"])
                d["y"] = float(r["realized_return"])
    report = {}
    for sym, by_t in sorted(rows.items()):
        times = sorted(by_t)
        moves = [t for t in times if by_t[t]["y"] != 0.0]
        single = {m: sum(by_t[t][m] * by_t[t]["y"] > 0.0 for t in moves) for m in members}
        rules = {}
        for rule in RULES:
            ens = EnsembleModel(members, rule, args.eta, args.decay)
            hits = 0
            for t in times:  # horizon 1: the previous target is known before the next forecast
                preds = {m: by_t[t][m] for m in members}
                y = by_t[t]["y"]
                hits += ens.predict_one(preds) * y > 0.0
                ens.learn_one(preds, y)
            rules[rule] = hits
        best = max(single, key=single.get)
        report[sym] = {"n_directional": len(moves), "best_single": best, "best_single_hits": single[best],
                       "rules": rules, "single": single}
    pooled = {r: sum(v["rules"][r] for v in report.values()) for r in RULES}
    pooled_single = {m: sum(v["single"][m] for v in report.values()) for m in members}
    sys.stdout.write(json.dumps({"eta": args.eta, "decay": args.decay, "instruments": report,
                                 "pooled": {"n_directional": sum(v["n_directional"] for v in report.values()),
                                            "rules": pooled, "single": pooled_single}}, indent=1) + "\n")


if __name__ == "__main__":
    main()

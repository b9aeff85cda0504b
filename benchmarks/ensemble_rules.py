"""Every ensemble rule against the best single model on the recordings, as JSON.

Runs the forecast dataflow once over every websocket recording with the whole
learner suite, then replays the members' scored 1-bar forecasts, in the
order the join produced them, through a fresh :class:`EnsembleModel` of each
rule (``eg``, ``hedge``, ``direction``, ``stack``): each ensemble forecast is
made before the ensemble learns from that target, as in the dataflow. For
each instrument it prints the hits over the realized non-zero moves of every
rule and of every single model, and two checks of how much any combination
could gain:

- ``paired``: the default rule against the best single model on the same
  moves: the moves only one of them calls right, and the exact McNemar
  p-value of that split;
- ``hindsight_vote``: the best unweighted majority vote of 3 or 5 members,
  chosen *after* seeing every outcome (an upper bound for fixed votes, not
  a forecast anyone could have made).

Usage::

    python benchmarks/ensemble_rules.py [--eta 0.05] [--decay 0.995] [--rule direction]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "binance-ws"

from scipy.stats import binomtest  # noqa: E402

from dataflows.settings import Settings  # noqa: E402
from models.ensemble import EnsembleModel  # noqa: E402
from models.registry import MODELS  # noqa: E402
from operators.forecast import ForecastConfig  # noqa: E402
from ticklet.backtest import run_backtest  # noqa: E402

RULES = ("eg", "hedge", "direction", "stack")


def hindsight_vote(by_t: dict[int, dict], moves: list[int], members: tuple[str, ...]) -> dict:
    """The best majority vote of 3 or 5 members, picked after seeing the outcomes."""
    best: tuple[int, tuple[str, ...]] = (-1, ())
    for k in (3, 5):
        for combo in itertools.combinations(members, k):
            hits = sum(sum((by_t[t][m] > 0.0) - (by_t[t][m] < 0.0) for m in combo) * by_t[t]["y"] > 0.0
                       for t in moves)
            best = max(best, (hits, combo))
    return {"hits": best[0], "members": list(best[1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eta", type=float, default=0.05)
    ap.add_argument("--decay", type=float, default=0.995)
    ap.add_argument("--rule", choices=RULES, default="direction", help="the rule of the paired test")
    args = ap.parse_args()
    members = tuple(sorted(MODELS))
    base = Settings()
    s = base.model_copy(update={"forecast": ForecastConfig(horizons=(1,), models=members)})
    rows: dict[str, dict[int, dict]] = defaultdict(dict)  # symbol -> ts_forecast -> {model: pred, "y": y}
    with tempfile.TemporaryDirectory() as tmp:
        run_backtest([str(DATA)], Path(tmp), base=s)
        with open(Path(tmp) / "forecasts.csv", newline="") as f:
            for r in csv.DictReader(f):
                d = rows[r["instrument"]].setdefault(int(r["ts_forecast"]), {})
                d[r["model"]] = float(r["pred_return"])
                d["y"] = float(r["realized_return"])
    report = {}
    for sym, by_t in sorted(rows.items()):
        times = sorted(by_t)
        moves = [t for t in times if by_t[t]["y"] != 0.0]
        single = {m: sum(by_t[t][m] * by_t[t]["y"] > 0.0 for t in moves) for m in members}
        rules: dict[str, int] = {}
        right: dict[str, set[int]] = {}
        for rule in RULES:
            ens = EnsembleModel(members, rule, args.eta, args.decay)
            hits, right[rule] = 0, set()
            for t in times:  # horizon 1: the previous target is known before the next forecast
                preds = {m: by_t[t][m] for m in members}
                y = by_t[t]["y"]
                if ens.predict_one(preds) * y > 0.0:
                    hits += 1
                    right[rule].add(t)
                ens.learn_one(preds, y)
            rules[rule] = hits
        best = max(single, key=lambda m: single[m])
        best_right = {t for t in moves if by_t[t][best] * by_t[t]["y"] > 0.0}
        only_ens, only_best = len(right[args.rule] - best_right), len(best_right - right[args.rule])
        p = binomtest(only_ens, only_ens + only_best).pvalue if only_ens + only_best else 1.0
        report[sym] = {"n_directional": len(moves), "best_single": best, "best_single_hits": single[best],
                       "rules": rules, "single": single,
                       "paired": {"rule": args.rule, "only_rule_right": only_ens, "only_best_right": only_best,
                                  "mcnemar_p": round(p, 4)},
                       "hindsight_vote": hindsight_vote(by_t, moves, members)}
    pooled = {r: sum(v["rules"][r] for v in report.values()) for r in RULES}
    pooled_single = {m: sum(v["single"][m] for v in report.values()) for m in members}
    pooled_vote = sum(v["hindsight_vote"]["hits"] for v in report.values())
    sys.stdout.write(json.dumps({"eta": args.eta, "decay": args.decay, "instruments": report,
                                 "pooled": {"n_directional": sum(v["n_directional"] for v in report.values()),
                                            "rules": pooled, "single": pooled_single,
                                            "hindsight_vote_hits": pooled_vote}}, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Evaluate every learner on the real data, as JSON (and a Markdown table).

For each dataset the forecast dataflow runs with the whole learner suite and
the ensemble, prequentially (each forecast is scored before its model learns
from it):

- ``recordings``: every websocket recording in ../shared/data/binance-ws,
  1-second bars, horizons 1 and 10;
- ``klines_1m``: BTC/USDT 1-minute klines, horizons 1 and 15;
- ``klines_15m``: BTC/USDT 15-minute klines, horizon 1, against the published
  51.7% directional accuracy on BTC/USDT 15-minute bars.

For each model and horizon: n, the hit rate with its 95% Wilson interval
(over the effective number of moves at h > 1), the plain binomial p-value
(valid at h = 1 only; kept at h > 1 to show what overlap does), the
Pesaran-Timmermann and Diebold-Mariano p-values with their Holm flags over
the dataset's run, the RMSE skill against the zero-return forecast, and, from a separate timing
loop over the recordings' real feature rows, the cost per bar in µs
(``predict_one`` + ``learn_one``).

Usage::

    python benchmarks/evaluate_models.py [--datasets recordings,klines_15m,klines_1m]
        [--models naive,linear,...] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

from scipy.stats import binomtest  # noqa: E402

from dataflows.settings import Settings  # noqa: E402
from models.ensemble import EnsembleModel  # noqa: E402
from models.registry import ENSEMBLE, MODELS, LearnerConfig, build  # noqa: E402
from operators.forecast import ForecastConfig  # noqa: E402
from ticklet.backtest import run_backtest  # noqa: E402

DATASETS = {
    "recordings": ([DATA / "binance-ws"], (1, 10)),
    "klines_1m": ([DATA / "klines" / "BTC_USDT-1m.feather"], (1, 15)),
    "klines_15m": ([DATA / "klines" / "BTC_USDT-15m.feather"], (1,)),
}
ANCHOR_15M = 0.517


def evaluate(name: str, models: tuple[str, ...]) -> dict:
    paths, horizons = DATASETS[name]
    base = Settings()
    s = base.model_copy(update={"forecast": ForecastConfig(horizons=horizons, models=models)})
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_backtest([str(p) for p in paths], Path(tmp), base=s)
    out: dict[str, dict[str, dict]] = {}  # symbol -> model -> horizon -> results
    for sym, body in summary["instruments"].items():
        for model, hs in body["models"].items():
            for h, m in hs.items():
                iid_p = None  # the plain binomial test, valid at h = 1 only: kept to show what overlap does
                if m["hit_rate"] is not None and m["n_directional"]:
                    iid_p = binomtest(m["hits"], m["n_directional"], 0.5, alternative="greater").pvalue
                out.setdefault(sym, {}).setdefault(model, {})[h] = {
                    "n": m["n"], "hit_rate": m["hit_rate"], "hit_rate_ci95": m["hit_rate_ci95"],
                    "hit_rate_n_eff": m["hit_rate_n_eff"], "n_directional": m["n_directional"], "hits": m["hits"],
                    "skill": m["skill"], "rmse": m["rmse"], "binomial_p_value_iid": iid_p,
                    "dm_stat": m["dm_stat"], "dm_p_value": m["dm_p_value"], "dm_holm": m["dm_holm"],
                    "pt_stat": m["pt_stat"], "pt_p_value": m["pt_p_value"], "n_pt": m["n_pt"], "pt_holm": m["pt_holm"],
                }
    return {"wall_s": summary["wall_s"], "bars": summary["bars"], "results": out}


def cost_per_bar(models: tuple[str, ...], max_rows: int = 3000) -> dict[str, float]:
    """µs per bar of predict_one + learn_one at horizon 1 on real feature rows."""
    from harness.realdata import run_chain

    chain = run_chain([DATA / "binance-ws" / "spot" / "btcusdt_20240808.gz",
                       DATA / "binance-ws" / "spot" / "btcusdt_20240809.gz"])
    rows = [r for r in chain.rows if r.ready][:max_rows]
    pairs = [(a.x, math.log(b.price / a.price)) for a, b in pairwise(rows)]
    cfg = LearnerConfig()
    costs = {}
    members = tuple(m for m in models if m != ENSEMBLE)
    for name in models:
        model = EnsembleModel(members) if name == ENSEMBLE else build(name, cfg, 1)
        feed = [({m: 1e-4 * math.tanh(x.get("ofi", 0.0) + i) for i, m in enumerate(members)}, y)
                for x, y in pairs] if name == ENSEMBLE else pairs
        t0 = time.perf_counter()
        for x, y in feed:
            model.predict_one(x)
            model.learn_one(x, y)
        costs[name] = round((time.perf_counter() - t0) / len(feed) * 1e6, 1)
    return costs


def _p(v: float | None, holm: bool | None = None) -> str:
    return "-" if v is None else f"{v:.2g}" + (" ✓" if holm else "")


def markdown(report: dict) -> str:
    lines = []
    for ds, body in report["datasets"].items():
        lines.append(f"**{ds}** ({body['bars']:,} bars, {body['wall_s']} s)\n")
        lines.append("| instrument | model | h | n | hit rate [95% CI] | n_dir | binomial p (iid) | PT p (n) "
                     "| skill | DM p | µs/bar |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for sym, models in body["results"].items():
            for model, hs in models.items():
                for h, m in hs.items():
                    hr = "-" if m["hit_rate"] is None else \
                        f"{m['hit_rate']:.3f} [{m['hit_rate_ci95'][0]:.3f}, {m['hit_rate_ci95'][1]:.3f}]"
                    sk = "-" if m["skill"] is None else f"{m['skill']:.4f}"
                    binom = _p(m["binomial_p_value_iid"]) + (" (invalid: overlap)" if h != "1" and
                                                            m["binomial_p_value_iid"] is not None else "")
                    pt = "-" if m["pt_p_value"] is None else f"{_p(m['pt_p_value'], m['pt_holm'])} ({m['n_pt']})"
                    lines.append(f"| {sym} | {model} | {h} | {m['n']} | {hr} | {m['n_directional']} | {binom} "
                                 f"| {pt} | {sk} | {_p(m['dm_p_value'], m['dm_holm'])} "
                                 f"| {report['cost_us_per_bar'].get(model, '-')} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="recordings,klines_15m,klines_1m")
    ap.add_argument("--models", default=",".join([*sorted(MODELS), ENSEMBLE]))
    ap.add_argument("--markdown", type=Path, help="also write the tables here")
    args = ap.parse_args()
    models = tuple(args.models.split(","))
    if "naive" in models:  # the reference first
        models = ("naive", *[m for m in models if m != "naive"])
    datasets: dict[str, dict] = {}
    report = {"models": models, "cost_us_per_bar": cost_per_bar(models), "datasets": datasets,
              "anchor_15m_hit_rate": ANCHOR_15M}
    for ds in args.datasets.split(","):
        datasets[ds] = evaluate(ds, models)
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(report))


if __name__ == "__main__":
    main()

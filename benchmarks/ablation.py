"""Ablation of features and learners on the real recordings, as JSON (and Markdown tables).

The forecast dataflow (:func:`ticklet.backtest.run_backtest`, as
``benchmarks/evaluate_models.py`` runs it) runs prequentially, 1-second bars,
horizons 1 and 10, with every learner of :data:`models.registry.MODELS` and
the ensemble, on two datasets of ../shared/data/binance-ws:

- ``usdm``: the USD-M BTCUSDT-PERP recording (one ~8.5-minute window, REST
  snapshot at its start);
- ``spot``: the spot BTCUSDT and ETHUSDT 2024-08-08/09 recordings (one
  ~11-minute window each, snapshots at their start);

under each feature set:

- ``top``: top of the book only (``features.depth.enabled = False``);
- ``depth``: the default, depth features on (operators/features.py);
- ``depth+cross``: plus ``cross.pairs``: ``BTCUSDT->ETHUSDT`` on spot and
  ``BTCUSDT->BTCUSDT-PERP`` on USD-M, whose leader is the spot BTCUSDT
  recording of 2023-04-05 (same time, no snapshot: its depth features stay
  missing). Only the followers are reported. Where the follower's forecasts
  are those of ``depth`` to the last digit, the dataflow did not add the
  leader's features: the set is reported as not available (``available:
  false``) and left out of the tests' Holm families;
- ``book``: the book learner ``deeplob`` (with ``features.depth.book_in_row``)
  against ``naive``, where ``deeplob`` is a registered model (else skipped).

For each (dataset, set, instrument, learner, horizon), from the run's summary
(the pipeline's own metrics, as ``evaluate_models.py`` reports them): n, the
hit rate over realized non-zero moves with its 95% Wilson interval (over the
HAC effective n at h > 1), the skill ``1 - MSE / MSE(zero)``, the
Diebold-Mariano p-value against the zero-return forecast (HAC at lag h - 1)
and the Pesaran-Timmermann p-value on non-overlapping forecasts, each with
Holm's correction over every comparison of the dataset (all sets, instruments,
learners and horizons; DM and PT separately). From the run's forecasts.csv:
the information coefficient (Spearman's rank correlation of ``pred_return``
and ``realized_return``) over all forecasts, and over the non-overlapping ones
(every h-th) with its p-value (the only valid one at h > 1); and the
break-even cost of trading the forecast's sign: over non-overlapping
forecasts with a non-zero prediction, gross return per round trip
``sign(pred) x realized``, break-even per side = its mean in bps / 2 (with
its standard error).

Then a drop-one ablation (``features.drop``) of each feature family for the
best 1-bar learner (highest skill) on ``usdm`` with depth, and the issue's
target: "on the USD-M recordings, the best 1-bar learner with depth beats the
best top-of-book learner, with DM-significant skill over the zero-return
forecast after Holm, and a break-even cost above 1 bp per side at some
horizon".

Usage::

    python benchmarks/ablation.py [--datasets usdm,spot] [--sets top,depth,depth+cross,book]
        [--models naive,linear,...] [--no-drop] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # its sibling, as mypy names it (a file of the tree)

from evaluate_models import DATA, _p  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from core.stats import HacMean, dm_test, holm  # noqa: E402
from dataflows.settings import Settings  # noqa: E402
from models.registry import ENSEMBLE, MODELS  # noqa: E402
from operators.features import FeatureConfig, feature_names  # noqa: E402
from ticklet.backtest import run_backtest  # noqa: E402

WS = DATA / "binance-ws"
HORIZONS = (1, 10)
BOOK_MODEL = "deeplob"
SETS = ("top", "depth", "depth+cross", "book")

#: dataset -> its recordings, the cross set's extra (leader) recordings and pairs
DATASETS: dict[str, dict[str, Any]] = {
    "usdm": {"paths": [WS / "usdm"], "leaders": [WS / "spot" / "btcusdt_20230405.dat.gz"],
             "pairs": ("BTCUSDT->BTCUSDT-PERP",)},
    "spot": {"paths": [WS / "spot" / f"{s}_{d}.gz" for s in ("btcusdt", "ethusdt") for d in ("20240808", "20240809")],
             "leaders": [], "pairs": ("BTCUSDT->ETHUSDT",)},
}

#: family -> the ``features.drop`` patterns that remove it (exact names where a prefix would catch another family:
#: ``book_*`` would drop ``book_imb``, ``ofi*`` the level OFIs)
FAMILIES: dict[str, tuple[str, ...]] = {
    "ofi_l*": ("ofi_l*",),
    "ofi_int": ("ofi_int",),
    "depth_imb_*": ("depth_imb_*",),
    "depth_b/a_*bp": ("depth_b_*", "depth_a_*"),
    "walk_*": ("walk_*",),
    "book events": ("book_adds_*", "book_cancels_*", "book_changes_*"),
    "all depth": ("ofi_l*", "ofi_int", "depth_imb_*", "depth_b_*", "depth_a_*", "walk_*", "book_adds_*",
                  "book_cancels_*", "book_changes_*"),
    "ret_*": ("ret_*",),
    "ofi, ofi_w": ("ofi", "ofi_w"),
    "flow_imb*": ("flow_imb*",),
    "micro_dev, spread, book_imb, last_vs_mid": ("micro_dev", "spread", "book_imb", "last_vs_mid"),
    "swt_*": ("swt_*",),
    "macd*, rsi": ("macd*", "rsi"),
    "rv, vwap_dev, log_volume": ("rv", "vwap_dev", "log_volume"),
}


def _validated(cfg: Any, **update: Any) -> Any:
    """``cfg`` with ``update``, validated (``model_copy`` does not validate)."""
    return type(cfg).model_validate({**cfg.model_dump(), **update})


def settings(feature_set: str, models: tuple[str, ...], pairs: tuple[str, ...] = (),
             drop: tuple[str, ...] = ()) -> Settings:
    """The environment's settings with the feature set, learners, horizons and dropped features of a run."""
    base = Settings()
    depth = _validated(base.features.depth, enabled=feature_set != "top",
                       **({"book_in_row": True} if feature_set == "book" else {}))
    update: dict[str, Any] = {
        "features": _validated(base.features, depth=depth.model_dump(), drop=drop),
        "forecast": _validated(base.forecast, horizons=HORIZONS, models=models),
    }
    if feature_set == "depth+cross":
        update["cross"] = _validated(base.cross, pairs=pairs)
    return base.model_copy(update=update)


def _forecasts(path: Path) -> dict[tuple[str, str, int], list[tuple[int, float, float]]]:
    """(instrument, model, horizon) -> [(ts_forecast, pred_return, realized_return)] in time order."""
    out: dict[tuple[str, str, int], list[tuple[int, float, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault((row["instrument"], row["model"], int(row["horizon"])), []).append(
                (int(row["ts_forecast"]), float(row["pred_return"]), float(row["realized_return"])))
    for v in out.values():
        v.sort()
    return out


def _spearman(pred: list[float], real: list[float]) -> tuple[Optional[float], Optional[float]]:
    if len(pred) < 3 or len(set(pred)) < 2 or len(set(real)) < 2:
        return None, None
    rho, p = spearmanr(pred, real)
    return float(rho), float(p)


def forecast_stats(rows: list[tuple[int, float, float]], h: int) -> dict[str, Any]:
    """IC and break-even cost of one (instrument, model, horizon)'s forecasts.

    ``rows``: (ts_forecast, pred_return, realized_return) in time order.
    Long +2 bps, then short a rise of 1 bp: gross +2 and -1 bps, 0.25 bp a side.

    >>> forecast_stats([(0, 1e-4, 2e-4), (1, -1e-4, 1e-4)], 1)["breakeven_bps"]
    0.25
    """
    pred = [p for _, p, _ in rows]
    real = [r for _, _, r in rows]
    ic, ic_p_iid = _spearman(pred, real)
    nov = rows[::h]  # non-overlapping: the 1st, (h+1)-th... as the PT test takes them
    ic_nov, ic_nov_p = _spearman([p for _, p, _ in nov], [r for _, _, r in nov])
    gross = [(r if p > 0.0 else -r) * 1e4 for _, p, r in nov if p != 0.0]  # bps per round trip
    be = be_se = None
    if gross:
        be = statistics.fmean(gross) / 2
        be_se = statistics.stdev(gross) / math.sqrt(len(gross)) / 2 if len(gross) > 1 else None
    return {"ic": ic, "ic_p_value_iid": ic_p_iid, "ic_nonoverlap": ic_nov, "ic_nonoverlap_p_value": ic_nov_p,
            "n_trades": len(gross), "breakeven_bps": be, "breakeven_se_bps": be_se}


def oracle_breakeven(rows: list[tuple[int, float, float]], h: int) -> Optional[float]:
    """The break-even cost per side in bps of a perfect sign forecast: mean |realized| / 2, non-overlapping."""
    nov = rows[::h]
    return statistics.fmean(abs(r) * 1e4 for _, _, r in nov) / 2 if nov else None


def run(dataset: str, feature_set: str, models: tuple[str, ...], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """One backtest: {instrument: {model: {horizon: entry}}} with the run's counts."""
    ds = DATASETS[dataset]
    paths = list(ds["paths"]) + (list(ds["leaders"]) if feature_set == "depth+cross" else [])
    s = settings(feature_set, models, ds["pairs"], drop)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_backtest([str(p) for p in paths], Path(tmp), base=s)
        fc = _forecasts(Path(tmp) / "forecasts.csv")
    followers = {p.split("->")[1] for p in ds["pairs"]}
    results: dict[str, dict[str, dict[str, dict]]] = {}
    for sym, body in summary["instruments"].items():
        if feature_set == "depth+cross" and sym not in followers:
            continue  # the leaders' rows are as in `depth`
        for model, hs in body["models"].items():
            for h, m in hs.items():
                rows = fc.get((sym, model, int(h)), [])
                assert len(rows) == m["n"], (sym, model, h, len(rows), m["n"])
                results.setdefault(sym, {}).setdefault(model, {})[h] = {
                    "n": m["n"], "hit_rate": m["hit_rate"], "hit_rate_ci95": m["hit_rate_ci95"],
                    "hit_rate_n_eff": m["hit_rate_n_eff"], "n_directional": m["n_directional"],
                    "skill": m["skill"], "dm_stat": m["dm_stat"], "dm_p_value": m["dm_p_value"], "dm_holm": None,
                    "pt_stat": m["pt_stat"], "pt_p_value": m["pt_p_value"], "n_pt": m["n_pt"], "pt_holm": None,
                    **forecast_stats(rows, int(h)),
                    "_rows": rows,  # for the cross check and the target's test; removed before the output
                }
    oracle = {sym: {str(h): oracle_breakeven(rows, h) for (s, m, h), rows in fc.items() if s == sym and m == "naive"}
              for sym in results}
    return {"bars": summary["bars"], "wall_s": summary["wall_s"], "oracle_breakeven_bps": oracle,
            "cross_counters": {k: v for k, v in summary["counters"].items() if k.startswith("cross")},
            "results": results}


def _entries(body: dict[str, Any]) -> list[tuple[str, str, str, dict]]:
    return [(sym, model, h, e) for sym, ms in body["results"].items() for model, hs in ms.items()
            for h, e in hs.items()]


def _strip(report: dict[str, Any]) -> None:
    for body in report["datasets"].values():
        for sb in body["sets"].values():
            if "results" in sb:
                for *_, e in _entries(sb):
                    e.pop("_rows", None)


def dm_between(a: list[tuple[int, float, float]], b: list[tuple[int, float, float]],
               h: int) -> tuple[Optional[float], Optional[float], int]:
    """Diebold-Mariano of forecasts ``a`` against ``b`` on their common targets (H1: ``a`` has the lower MSE), n."""
    other = {ts: p for ts, p, _ in b}
    acc = HacMean(h - 1)
    for ts, p, r in a:
        if ts in other:
            acc.add((r - other[ts]) ** 2 - (r - p) ** 2)
    stat, pv = dm_test(acc, h)
    return stat, pv, acc.n


def _holm(sets: dict[str, dict[str, Any]]) -> int:
    """Holm over every available set's comparisons of a dataset, DM and PT separately; the family's size (DM)."""
    family = [e for body in sets.values() if body.get("available", True) for *_, e in _entries(body)]
    for test in ("dm", "pt"):
        for e, flag in zip(family, holm([e[f"{test}_p_value"] for e in family]), strict=True):
            e[f"{test}_holm"] = flag
    return sum(e["dm_p_value"] is not None for e in family)


def best(body: dict[str, Any], h: str, sym: Optional[str] = None) -> Optional[tuple[str, str, dict]]:
    """The (instrument, model, entry) of highest skill at horizon ``h`` (the zero-return baseline aside)."""
    cands = [(s, m, e) for s, m, hh, e in _entries(body)
             if hh == h and m != "naive" and e["skill"] is not None and (sym is None or s == sym)]
    return max(cands, key=lambda c: c[2]["skill"]) if cands else None


def evaluate(dataset: str, sets: tuple[str, ...], models: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fs in sets:
        if fs == "book":
            if BOOK_MODEL not in MODELS:
                out[fs] = {"available": False, "why": f"{BOOK_MODEL!r} is not in models.registry.MODELS"}
                continue
            out[fs] = run(dataset, fs, ("naive", BOOK_MODEL))
        elif fs == "depth+cross" and "cross" not in Settings.model_fields:
            out[fs] = {"available": False, "why": "no cross settings (TICKLET_CROSS__PAIRS)"}
            continue
        else:
            out[fs] = run(dataset, fs, models)
        sys.stderr.write(f"{dataset} {fs}: {out[fs]['bars']} bars, {out[fs]['wall_s']:.1f} s\n")
    cross, depth = out.get("depth+cross"), out.get("depth")
    if cross and depth and "results" in cross:
        if all([p for _, p, _ in e["_rows"]] == [p for _, p, _ in depth["results"][sym][m][h]["_rows"]]
               for sym, m, h, e in _entries(cross)):
            cross["available"] = False
            cross["why"] = ("the followers' forecasts are those of `depth` to the last digit: the dataflow did not "
                            "add the leaders' lead_* features")
        else:
            cross["available"] = True
    family = _holm(out)
    top = [(fs, sym, m, h, e) for fs, body in out.items() if body.get("available", True) and "results" in body
           for sym, m, h, e in _entries(body) if e["breakeven_bps"] is not None]
    fs, sym, m, h, e = max(top, key=lambda c: c[4]["breakeven_bps"])
    return {"sets": out, "holm_family_dm": family,
            "max_breakeven": {"set": fs, "instrument": sym, "model": m, "h": h, "breakeven_bps": e["breakeven_bps"],
                              "breakeven_se_bps": e["breakeven_se_bps"], "n_trades": e["n_trades"]}}


def drop_one(model: str, models: tuple[str, ...]) -> dict[str, Any]:
    """``model``'s metrics on ``usdm`` with depth, with each feature family dropped in turn."""
    names = feature_names(FeatureConfig())
    run_models = models if model == ENSEMBLE else (model,)
    rows: dict[str, Any] = {}
    for fam, patterns in {"(none)": (), **FAMILIES}.items():
        gone = [n for n in names if n not in feature_names(FeatureConfig(drop=patterns))]
        r = run("usdm", "depth", run_models, patterns)
        (sym, hs), = ((s, ms[model]) for s, ms in r["results"].items())
        for e in hs.values():
            e.pop("_rows", None)
        rows[fam] = {"drop": list(patterns), "dropped": gone, "instrument": sym, "horizons": hs}
        sys.stderr.write(f"drop {fam}: {len(gone)} features, {r['wall_s']:.1f} s\n")
    ref = rows["(none)"]["horizons"]
    for row in rows.values():
        for h, e in row["horizons"].items():
            for k in ("hit_rate", "skill"):
                e[f"d_{k}"] = None if e[k] is None or ref[h][k] is None else e[k] - ref[h][k]
    return {"model": model, "dataset": "usdm", "set": "depth", "rows": rows}


def target(usdm: dict[str, Any]) -> dict[str, Any]:
    """The issue's target on ``usdm``, judged on the run."""
    sets = usdm["sets"]
    if "results" not in sets.get("depth", {}) or "results" not in sets.get("top", {}):
        return {"met": None, "why": "the depth and top sets were not both run"}
    bd, bt = best(sets["depth"], "1"), best(sets["top"], "1")
    if bd is None or bt is None:
        return {"met": None, "why": "no learner with a skill"}
    sym, model, e = bd
    be = {h: sets["depth"]["results"][sym][model][h]["breakeven_bps"] for h in sets["depth"]["results"][sym][model]}
    beats = e["skill"] > bt[2]["skill"]
    stat, pv, n = dm_between(e["_rows"], bt[2]["_rows"], 1)
    dm = bool(e["dm_holm"])
    be_ok = any(v is not None and v > 1.0 for v in be.values())
    return {"best_depth_h1": {"model": model, "skill": e["skill"], "hit_rate": e["hit_rate"],
                              "dm_p_value": e["dm_p_value"], "dm_holm": e["dm_holm"], "breakeven_bps": be},
            "best_top_h1": {"model": bt[1], "skill": bt[2]["skill"], "hit_rate": bt[2]["hit_rate"],
                            "dm_p_value": bt[2]["dm_p_value"], "dm_holm": bt[2]["dm_holm"]},
            "depth_beats_top": beats,
            "dm_depth_vs_top_h1": {"stat": stat, "p_value": pv, "n": n},
            "dm_significant_after_holm": dm, "breakeven_above_1bp": be_ok,
            "met": beats and dm and be_ok}


# --- Markdown ------------------------------------------------------------------------------------


def _f(v: Optional[float], fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _hr(e: dict) -> str:
    if e["hit_rate"] is None:
        return "-"
    lo, hi = e["hit_rate_ci95"]
    return f"{e['hit_rate']:.3f} [{lo:.3f}, {hi:.3f}]"


def _be(e: dict) -> str:
    if e["breakeven_bps"] is None:
        return "-"
    se = "" if e["breakeven_se_bps"] is None else f" ± {e['breakeven_se_bps']:.3f}"
    return f"{e['breakeven_bps']:.3f}{se} ({e['n_trades']})"


def _ic(e: dict) -> str:
    return "-" if e["ic"] is None else f"{e['ic']:.3f} ({_p(e['ic_nonoverlap_p_value'])})"


_HEAD = ("| hit rate [95% CI] | skill | DM p | PT p (n) | IC (p, non-overl.) | break-even bps/side ± se (trades) |",
         "|---|---|---|---|---|---|")


def _cells(e: dict) -> str:
    pt = "-" if e["pt_p_value"] is None else f"{_p(e['pt_p_value'], e['pt_holm'])} ({e['n_pt']})"
    return (f"| {_hr(e)} | {_f(e['skill'], '.4f')} | {_p(e['dm_p_value'], e['dm_holm'])} | {pt} | {_ic(e)} "
            f"| {_be(e)} |")


def markdown(report: dict[str, Any]) -> str:
    lines = ["Benchmark: `benchmarks/ablation.py`. ✓: significant at 5% after Holm over the dataset "
             "(DM and PT separately). Best = highest skill among the learners (naive aside).", ""]
    lines += ["**Best learner per set (by skill)**", "",
              "| dataset | set | instrument | h | model " + _HEAD[0], "|---|---|---|---|---" + _HEAD[1]]
    for ds, body in report["datasets"].items():
        for fs, sb in body["sets"].items():
            if "results" not in sb:
                continue
            for sym in sb["results"]:
                for h in map(str, HORIZONS):
                    b = best(sb, h, sym)
                    if b is not None:
                        mark = "" if sb.get("available", True) else " (no lead_*)"
                        lines.append(f"| {ds} | {fs}{mark} | {sym} | {h} | {b[1]} " + _cells(b[2]))
    lines.append("")
    for ds, body in report["datasets"].items():
        ref = next(sb for sb in body["sets"].values() if "oracle_breakeven_bps" in sb)["oracle_breakeven_bps"]
        lines.append(f"Break-even of a perfect sign forecast (mean |move| / 2, non-overlapping) on {ds}: "
                     + "; ".join(f"{sym} h={h}: {v:.3f} bps/side" for sym, hs in ref.items() for h, v in hs.items())
                     + ".\n")
        mb = body["max_breakeven"]
        lines.append(f"Highest break-even on {ds}: {mb['breakeven_bps']:.3f} ± {mb['breakeven_se_bps']:.3f} bps/side "
                     f"({mb['model']}, {mb['set']}, {mb['instrument']}, h={mb['h']}, {mb['n_trades']} trades).\n")
    for ds, body in report["datasets"].items():
        lines.append(f"**{ds}, every learner** (Holm family: {body['holm_family_dm']} DM tests)\n")
        for fs, sb in body["sets"].items():
            if not sb.get("available", True):
                lines.append(f"- `{fs}`: not available: {sb['why']}.")
            elif sb.get("cross_counters"):
                lines.append(f"- `{fs}`: leader features added; the cross step's counts: {sb['cross_counters']}.")
        lines += ["", "| set | instrument | model | h | n " + _HEAD[0], "|---|---|---|---|---" + _HEAD[1]]
        for fs, sb in body["sets"].items():
            if "results" not in sb or not sb.get("available", True):
                continue
            for sym, ms in sb["results"].items():
                for model, hs in ms.items():
                    for h, e in hs.items():
                        lines.append(f"| {fs} | {sym} | {model} | {h} | {e['n']} " + _cells(e))
        lines.append("")
    d = report.get("drop_one")
    if d:
        lines += [f"**Drop-one: `{d['model']}` on {d['dataset']} with depth** (Δ against no drop)", "",
                  "| dropped | features | h=1 hit rate (Δ) | h=1 skill (Δ) | h=1 DM p | h=10 hit rate (Δ) "
                  "| h=10 skill (Δ) | h=10 DM p |", "|---|---|---|---|---|---|---|---|"]
        for fam, row in d["rows"].items():
            cells = []
            for h in map(str, HORIZONS):
                e = row["horizons"][h]
                cells += [f"{_f(e['hit_rate'], '.3f')} ({_f(e['d_hit_rate'], '+.3f')})",
                          f"{_f(e['skill'], '.4f')} ({_f(e['d_skill'], '+.4f')})", _p(e["dm_p_value"])]
            lines.append(f"| {fam} | {len(row['dropped'])} | " + " | ".join(cells) + " |")
        lines.append("")
    t = report.get("target")
    if t and t.get("met") is not None:
        bd, bt = t["best_depth_h1"], t["best_top_h1"]
        be = ", ".join(f"h={h}: {_f(v, '.3f')}" for h, v in bd["breakeven_bps"].items())
        lines += [f"**Target (usdm)**: met = {t['met']}. Best 1-bar with depth: `{bd['model']}` (skill "
                  f"{bd['skill']:.4f}, DM p {_p(bd['dm_p_value'], bd['dm_holm'])}, break-even bps/side {be}); "
                  f"best 1-bar top of book: `{bt['model']}` (skill {bt['skill']:.4f}). Depth beats top: "
                  f"{t['depth_beats_top']} (DM of the one against the other, h=1: p "
                  f"{_p(t['dm_depth_vs_top_h1']['p_value'])}); DM after Holm: {t['dm_significant_after_holm']}; "
                  f"break-even > 1 bp: {t['breakeven_above_1bp']}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="usdm,spot")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--models", default=",".join([*sorted(m for m in MODELS if m != BOOK_MODEL), ENSEMBLE]))
    ap.add_argument("--no-drop", action="store_true", help="skip the drop-one ablation")
    ap.add_argument("--markdown", type=Path, help="also write the tables here")
    args = ap.parse_args()
    models = tuple(args.models.split(","))
    if "naive" in models:  # the reference first
        models = ("naive", *[m for m in models if m != "naive"])
    sets = tuple(args.sets.split(","))
    unknown = [s for s in sets if s not in SETS] + [d for d in args.datasets.split(",") if d not in DATASETS]
    if unknown:
        ap.error(f"unknown sets or datasets: {unknown}")
    report: dict[str, Any] = {"models": models, "horizons": HORIZONS, "book_model_registered": BOOK_MODEL in MODELS,
                              "datasets": {}}
    for ds in args.datasets.split(","):
        report["datasets"][ds] = evaluate(ds, sets, models)
    usdm = report["datasets"].get("usdm")
    if usdm:
        report["target"] = target(usdm)
    _strip(report)
    if usdm:
        b = best(usdm["sets"]["depth"], "1") if "results" in usdm["sets"].get("depth", {}) else None
        if b is not None and not args.no_drop:
            report["drop_one"] = drop_one(b[1], models)
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(report))


if __name__ == "__main__":
    main()

"""Cold against warm start, on data the bundle never saw, as JSON (and Markdown).

For each case a model bundle is made by the forecast dataflow on one part of
the data (``run_backtest(..., save_models=DIR)``, as ``ticklet backtest
--save-models`` does), then the same dataflow runs on the other part twice:
cold (every learner from nothing) and warm (``--warm-start DIR``), both
prequential (each forecast scored before its learner learns from it) and
learning online all along. Cases:

- ``klines_1m``: Binance BTC/USDT 1-minute klines (``$TICKLET_DATA/klines/
  BTC_USDT-1m.feather``, 130,708 bars), the bundle from the first 70% of the
  bars, the evaluation on the last 30%; horizons 1 and 15 bars.
  ``klines_1m_trim`` is the same on the repository's trimmed file
  (``tests/data/klines``, the first 63,360 bars); ``--rows A:B`` cuts a
  contiguous subset of the bars first.
- ``day``: spot BTCUSDT 2024-08-08 -> 2024-08-09 (recordings, 1-second
  bars, horizons 1 and 10).
- ``perp``: spot BTCUSDT (2024-08-08 and 09) -> USD-M BTCUSDT-PERP
  (2023-04-04 and 05), with ``TICKLET_FORECAST__WARM_START_MAP``
  ``{"BTCUSDT-PERP": "BTCUSDT"}``.

Per instrument, model and horizon, for the cold and the warm run: over the
whole evaluation, n, the hit rate with its 95% interval, the binomial
p-value (h = 1), the Pesaran-Timmermann and Diebold-Mariano p-values and
the RMSE skill (from the run's summary); and over the first 300 scored
forecasts (the first 300 bars once the features are ready), the hit rate
and the skill, from ``forecasts.csv``. Settings come from the environment
(``TICKLET_*``), with ``--models`` and the case's horizons over them.

Usage::

    python benchmarks/warm_start.py --case klines_1m [--models naive,logistic,cnn_gru]
        [--rows A:B] [--first 300] [--markdown FILE] [--keep DIR [--phases bundle|cold,warm|...]]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("TICKLET_DATA", ROOT.parent / "shared" / "data"))

from dataflows.settings import read_settings  # noqa: E402
from models.registry import ENSEMBLE, MODELS  # noqa: E402
from operators.forecast import ForecastConfig  # noqa: E402
from ticklet.backtest import run_backtest  # noqa: E402

WS = DATA / "binance-ws"


def _split_feather(src: Path, tmp: Path, rows: str | None, frac: float = 0.7) -> tuple[list[Path], list[Path], dict]:
    """The first ``frac`` and the rest of a Feather klines file (after
    ``rows``, a contiguous ``A:B`` slice), each in a directory of its own
    under the file's name (the name says the pair and interval)."""
    import pyarrow.feather as feather

    table = feather.read_table(src)
    if rows:
        a, b = (int(x) if x else None for x in rows.split(":"))
        table = table.slice(a or 0, (b if b is not None else table.num_rows) - (a or 0))
    cut = int(table.num_rows * frac)
    parts = {}
    for name, part in (("train", table.slice(0, cut)), ("eval", table.slice(cut))):
        d = tmp / name
        d.mkdir()
        feather.write_feather(part, d / src.name)
        parts[name] = part
    dates = {k: [str(v.column("date")[0]), str(v.column("date")[-1])] for k, v in parts.items()}
    info = {"file": str(src), "rows": rows, "bars": {k: v.num_rows for k, v in parts.items()}, "dates": dates}
    return [tmp / "train"], [tmp / "eval"], info


def _case(name: str, tmp: Path, rows: str | None) -> tuple[list[Path], list[Path], tuple[int, ...], dict, dict]:
    """(bundle inputs, evaluation inputs, horizons, warm-start map, description)."""
    if name in ("klines_1m", "klines_1m_trim"):
        src = (DATA if name == "klines_1m" else ROOT / "tests" / "data") / "klines" / "BTC_USDT-1m.feather"
        train, ev, info = _split_feather(src, tmp, rows)
        return train, ev, (1, 15), {}, info
    if name == "day":
        return [WS / "spot" / "btcusdt_20240808.gz"], [WS / "spot" / "btcusdt_20240809.gz"], (1, 10), {}, {}
    if name == "perp":
        return ([WS / "spot" / "btcusdt_20240808.gz", WS / "spot" / "btcusdt_20240809.gz"],
                [WS / "usdm" / "btcusdt_20230404.dat.gz", WS / "usdm" / "btcusdt_20230405.dat.gz"], (1, 10),
                {"BTCUSDT-PERP": "BTCUSDT"}, {})
    raise SystemExit(f"unknown case {name!r}")


def _first(out: Path, k: int) -> dict:
    """Hit rate and skill of the first ``k`` scored forecasts of every
    instrument, model and horizon (in forecast time order)."""
    rows: dict[tuple[str, str, str], list[tuple[int, float, float]]] = defaultdict(list)
    with open(out / "forecasts.csv", newline="") as f:
        for r in csv.DictReader(f):
            rows[(r["instrument"], r["model"], r["horizon"])].append(
                (int(r["ts_forecast"]), float(r["pred_return"]), float(r["realized_return"])))
    res: dict = {}
    for (inst, model, h), rs in rows.items():
        rs = sorted(rs)[:k]
        moved = [(p, y) for _, p, y in rs if y != 0.0]
        hits = sum(1 for p, y in moved if p * y > 0.0)  # as operators.metrics: a zero forecast is a miss
        calls = any(p != 0.0 for _, p, _ in rs)
        sse = math.fsum((y - p) ** 2 for _, p, y in rs)
        sse0 = math.fsum(y * y for _, _, y in rs)
        res.setdefault(inst, {}).setdefault(model, {})[h] = {
            "n": len(rs), "n_directional": len(moved), "hits": hits,
            "hit_rate": hits / len(moved) if calls and moved else None,
            "skill": 1.0 - sse / sse0 if sse0 > 0 else None}
    return res


def _whole(summary: dict) -> dict:
    keep = ("n", "hit_rate", "hit_rate_ci95", "hit_rate_p_value", "hits", "n_directional", "skill", "rmse",
            "pt_p_value", "n_pt", "dm_p_value")
    return {inst: {m: {h: {k: v.get(k) for k in keep} for h, v in hs.items()} for m, hs in body["models"].items()}
            for inst, body in summary["instruments"].items()}


def _settings(models: tuple[str, ...], horizons: tuple[int, ...], mapping: dict):
    base = read_settings()
    fc = base.forecast.model_copy(update={"models": models, "horizons": horizons, "warm_start_map": mapping})
    return base.model_copy(update={"forecast": ForecastConfig.model_validate(fc.model_dump())})


def run_case(name: str, models: tuple[str, ...], rows: str | None, first: int, keep: Path | None,
             phases: tuple[str, ...] = ("bundle", "cold", "warm"), horizons: tuple[int, ...] = ()) -> dict:
    """Run the case's phases (``bundle``, ``cold``, ``warm``); with ``keep``,
    each phase's result is kept in ``keep/<phase>.json`` and the phases can
    run in separate processes (the data split is made once)."""
    with tempfile.TemporaryDirectory() as t:
        tmp = keep or Path(t)
        tmp.mkdir(parents=True, exist_ok=True)
        meta = tmp / "case.json"
        if meta.exists():
            out = json.loads(meta.read_text())
            train, ev, mapping = [Path(p) for p in out["train"]], [Path(p) for p in out["eval"]], out["warm_start_map"]
            horizons = tuple(out["horizons"])
            if (name, list(models)) != (out["case"], out["models"]):
                raise SystemExit(f"{tmp} holds case {out['case']} with models {out['models']}")
        else:
            train, ev, case_horizons, mapping, info = _case(name, tmp, rows)
            horizons = horizons or case_horizons
            s = _settings(models, horizons, mapping)
            out = {"case": name, "data": info, "models": list(models), "horizons": list(horizons),
                   "cnn_gru": s.forecast.learners.cnn_gru.model_dump(mode="json") if "cnn_gru" in models else None,
                   "train": [str(p) for p in train], "eval": [str(p) for p in ev], "warm_start_map": mapping}
            meta.write_text(json.dumps(out, indent=1))
        s = _settings(models, horizons, mapping)
        if "bundle" in phases:
            t0 = time.perf_counter()
            made = run_backtest([str(p) for p in train], tmp / "bundle_run", base=s, save_models=tmp / "bundle")
            manifest = json.loads((tmp / "bundle" / "manifest.json").read_text())
            res = {"id": manifest["bundle_id"], "wall_s": round(time.perf_counter() - t0, 1), "bars": made["bars"],
                   "instruments": manifest["data"]["instruments"], "offline": manifest["offline"],
                   "metrics": _whole(made)}
            (tmp / "bundle.json").write_text(json.dumps(res, indent=1))
        for mode in ("cold", "warm"):
            if mode not in phases:
                continue
            t0 = time.perf_counter()
            summary = run_backtest([str(p) for p in ev], tmp / mode, base=s,
                                   warm_start=tmp / "bundle" if mode == "warm" else None)
            res = {"wall_s": round(time.perf_counter() - t0, 1), "bars": summary["bars"],
                   "whole": _whole(summary), f"first_{first}": _first(tmp / mode, first)}
            (tmp / f"{mode}.json").write_text(json.dumps(res, indent=1))
        for part in ("bundle", "cold", "warm"):
            if (tmp / f"{part}.json").exists():
                out[part] = json.loads((tmp / f"{part}.json").read_text())
    return out


def _f(v, fmt: str = ".4f") -> str:
    return "-" if v is None else format(v, fmt)


def _p(v) -> str:
    return "-" if v is None else f"{v:.1e}"


def markdown(res: dict, first: int) -> str:
    lines = [f"| instrument | model | h | start | n | hit rate [95% CI] | binomial p | PT p | DM p | skill "
             f"| first {first}: hit rate | first {first}: skill |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for inst, models in res["cold"]["whole"].items():
        for model, hs in sorted(models.items()):
            for h in sorted(hs, key=int):
                for mode in ("cold", "warm"):
                    m = res[mode]["whole"][inst][model][h]
                    f1 = res[mode][f"first_{first}"][inst][model][h]
                    ci = m["hit_rate_ci95"]
                    hr = "-" if m["hit_rate"] is None else f"{m['hit_rate']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"
                    lines.append(f"| {inst} | {model} | {h} | {mode} | {m['n']} | {hr} | {_p(m['hit_rate_p_value'])} "
                                 f"| {_p(m['pt_p_value'])} | {_p(m['dm_p_value'])} | {_f(m['skill'])} "
                                 f"| {_f(f1['hit_rate'])} | {_f(f1['skill'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", required=True, choices=["klines_1m", "klines_1m_trim", "day", "perp"])
    ap.add_argument("--models", default=",".join([*sorted(MODELS), ENSEMBLE]))
    ap.add_argument("--rows", help="klines: a contiguous A:B slice of the bars before the 70/30 split")
    ap.add_argument("--horizons", default="", help="over the case's, e.g. 1")
    ap.add_argument("--first", type=int, default=300, help="scored forecasts at the start of the evaluation")
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    ap.add_argument("--keep", type=Path, help="keep the bundle and the runs' outputs in this directory")
    ap.add_argument("--phases", default="bundle,cold,warm",
                    help="which runs, e.g. 'bundle' then 'cold,warm' in another process (with --keep); '' "
                    "reports what --keep holds")
    a = ap.parse_args()
    models = tuple(a.models.split(","))
    if "naive" in models:
        models = ("naive", *[m for m in models if m != "naive"])
    phases = tuple(p for p in a.phases.split(",") if p)
    if phases != ("bundle", "cold", "warm") and a.keep is None:
        ap.error("--phases needs --keep")
    horizons = tuple(int(h) for h in a.horizons.split(",") if h)
    res = run_case(a.case, models, a.rows, a.first, a.keep, phases, horizons)
    sys.stdout.write(json.dumps(res, indent=1) + "\n")
    if a.markdown and "cold" in res and "warm" in res:
        a.markdown.write_text(markdown(res, a.first))


if __name__ == "__main__":
    main()

"""Passive execution on the real recordings: what each learner's forecast is worth to a market maker, as JSON.

Issue 27's evaluation. For each dataset of ../shared/data/binance-ws (the
USD-M BTCUSDT-PERP recording, one ~8.5-minute window; the spot BTCUSDT and
ETHUSDT 2024-08-08/09 recordings, one ~11-minute window each):

1. the forecast dataflow (:func:`ticklet.backtest.run_backtest`) runs once
   with every learner of :data:`models.registry.MODELS` but the book learner,
   and the ensemble, at horizons 1 and 10 (1-second bars, depth features:
   ``benchmarks/ablation.py``'s ``depth`` set); its decisions
   (``signals.csv``) are each (model, horizon)'s maker book's decisions;
2. the quoting step (:func:`operators.maker.step_batch`, then
   :func:`operators.maker.finish`: exactly what the dataflow's
   ``rest_quotes`` step runs, checked row for row by
   ``tests/operators/test_maker.py``) replays each instrument's events with
   those decisions under each **variant**: the default (risk-averse queue,
   10 ms entry latency, forecast scale 1, one lot at the centre's prices),
   the power queue with n = 2 and 3, 50 ms latency, the feed latency model
   (10 ms plus the recording's own feed latency), and forecast scale 0 (the
   same decisions, the forecast not used: the unskewed maker).

For each book (the baseline ``touch``, quoting at the touch every second, and
each model's): orders, fill rate, post-only refusals, fills, the mean adverse
selection at 1 s and 10 s (bps of the mid), the **break-even maker fee**
(gross PnL, the position marked to the last mid, per value filled, bps) and
the net return per value filled at maker fees of +2 (Binance VIP 0 on USD-M),
0 and -0.5 bps (a rebate): ``break_even - fee``.

**Paired test.** The run is cut into blocks of ``--block-s`` seconds
(receive clock). Each book's gross PnL is marked at every block's end
(``operators.maker.economics``: the fills gone out, the position at the mid
then), so its increments ``g_b`` add up to its gross PnL. For a book X
against a reference R, ``d_b = B x (g_X,b / V_X - g_R,b / V_R) x 1e4`` with
``V`` the value each filled over the run and ``B`` the blocks: the mean of
``d_b`` is exactly ``break_even_X - break_even_R``. Its one-sided p-value (H1:
X's break-even is higher) is the Diebold-Mariano test with a Newey-West
variance at lag 1 (``core.stats.dm_test``: inventory carries over a block's
end), Holm-corrected over every comparison of the run. References: the
baseline ``touch`` and the book's own forecast-scale-0 twin (same decisions
and times, no forecast: the forecast's own contribution).

The issue's target: "some learner's forecast raises the break-even maker fee
above the unskewed maker's on the USD-M recordings, with the difference
significant (paired test over days or blocks)". Whatever comes out is
reported as it is.

Usage::

    python benchmarks/maker_evaluation.py [--datasets usdm,spot] [--models naive,linear,...] [--block-s 30]
        [--markdown FILE] > docs/maker_evaluation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # its siblings, as mypy names them (files of the tree)

from ablation import BOOK_MODEL, DATASETS, HORIZONS, settings  # noqa: E402

from core.events import EconomicsRecord, MakerEconomicsRecord, Signal  # noqa: E402
from core.stats import HacMean, dm_test, holm  # noqa: E402
from harness.realdata import parse_paths  # noqa: E402
from models.registry import ENSEMBLE, MODELS  # noqa: E402
from operators import maker  # noqa: E402
from sinks.report import read_last  # noqa: E402
from ticklet.backtest import run_backtest  # noqa: E402

FEES_BPS = (2.0, 0.0, -0.5)
#: variant -> the quoting settings it changes from the default
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "power2": {"queue": "power", "power_n": 2.0},
    "power3": {"queue": "power", "power_n": 3.0},
    "latency50": {"latency_ms": 50.0},
    "feed": {"latency_model": "feed"},
    "unskewed": {"forecast_scale": 0.0},
}
TOUCH = ("touch", 0)


def _signals(path: Path) -> dict[str, list[Signal]]:
    """The run's decisions (signals.csv), per instrument, in file order."""
    import csv

    from sinks.summary import record_from_row

    out: dict[str, list[Signal]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            s = record_from_row(row, Signal)
            if s.horizon > 0:  # the taker baselines (buy_and_hold, flat) are not forecasts
                out.setdefault(s.instrument, []).append(s)
    return out


def _replay(events: list, signals: list[Signal], config: maker.MakerConfig, instrument: str,
            block_ns: int) -> tuple[dict, dict]:
    """The quoting step over one instrument's events and decisions, in blocks of ``block_ns`` (receive clock).

    Returns each book's last economics and its gross PnL marked at each
    block's end (cumulative), with the value filled by then.
    """
    st = maker.QuoterState(config, instrument)
    sigs = sorted(signals, key=lambda s: s.ts_forecast)
    marks: dict[tuple, list[tuple[float, float]]] = {}
    i = j = 0
    n_blocks = 0
    while i < len(events):
        end = (events[i].ts_recv // block_ns + 1) * block_ns
        k = i
        while k < len(events) and events[k].ts_recv < end:
            k += 1
        m = j
        while m < len(sigs) and sigs[m].ts_forecast < end:
            m += 1
        st, _ = maker.step_batch(st, [events[i:k], *sigs[j:m]])
        i, j = k, m
        n_blocks += 1
        for key in st.books.keys() | st.ledgers.keys():
            e = maker.economics(st, key)
            marks.setdefault(key, [(0.0, 0.0)] * (n_blocks - 1)).append((e.gross_pnl, e.traded))
    st, out = maker.finish(st)
    last = {(r.model, r.horizon): r for r in out if type(r) is MakerEconomicsRecord}
    for key, ms in marks.items():  # the fills settled at the end belong to the last block
        ms[-1] = (last[key].gross_pnl, last[key].traded)
    return last, marks


def _book(e: MakerEconomicsRecord) -> dict[str, Any]:
    be = e.break_even_bps
    return {"orders": e.orders, "fill_rate": e.fill_rate, "refused": e.refused, "fills": e.fills,
            "traded": e.traded, "position": e.position, "adverse_1s_bps": e.adverse_1s_bps,
            "adverse_10s_bps": e.adverse_10s_bps, "break_even_bps": be,
            "net_bps": {f"{fee:+g}": None if be is None else be - fee for fee in FEES_BPS}}


def _paired(x: list[tuple[float, float]], r: list[tuple[float, float]]) -> Optional[dict[str, Any]]:
    """The paired block test of X's break-even against R's (see the module docstring)."""
    vx, vr = x[-1][1], r[-1][1]
    if not vx or not vr or len(x) != len(r):
        return None
    b = len(x)
    acc = HacMean(lag=1)
    prev_x = prev_r = 0.0
    for (gx, _), (gr, _) in zip(x, r, strict=True):
        acc.add(b * ((gx - prev_x) / vx - (gr - prev_r) / vr) * 1e4)
        prev_x, prev_r = gx, gr
    stat, p = dm_test(acc, 1)
    return {"diff_bps": acc.mean, "blocks": b, "se_bps": acc.standard_error(), "dm_stat": stat, "p_value": p}


def evaluate(dataset: str, models: tuple[str, ...], block_s: float) -> dict[str, Any]:
    spec = DATASETS[dataset]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        run_backtest([str(p) for p in spec["paths"]], out, base=settings("depth", models))
        decided = _signals(out / "signals.csv")
        taker = {(e.instrument, e.model, e.horizon): e for e in read_last(out / "economics.csv", EconomicsRecord)}
    forecast_s = time.perf_counter() - t0
    paths = [Path(p) for p in spec["paths"]]
    files = sorted(q for p in paths for q in (p.glob("*") if p.is_dir() else [p]))
    by_inst: dict[str, list[Path]] = {}
    for f in files:
        by_inst.setdefault(f.name.split("_", 1)[0], []).append(f)
    result: dict[str, Any] = {"forecast_run_s": round(forecast_s, 1), "instruments": {}}
    for _, fs in sorted(by_inst.items()):
        (inst, events), = parse_paths(fs)[0].items()
        sigs = decided.get(inst, [])
        entry: dict[str, Any] = {"events": len(events), "decisions": len(sigs), "variants": {}, "tests": []}
        marks_of: dict[str, dict] = {}
        for name, change in VARIANTS.items():
            t1 = time.perf_counter()
            cfg = maker.MakerConfig(**change)
            last, marks = _replay(events, sigs, cfg, inst, round(block_s * 1e9))
            marks_of[name] = marks
            books = {f"{m}/{h}": _book(e) for (m, h), e in sorted(last.items(), key=lambda kv: (kv[0] != TOUCH,
                                                                                                   kv[0]))}
            for (m, h), e in last.items():
                t = taker.get((inst, m, h))
                books[f"{m}/{h}"]["maker_share"] = e.fills / (e.fills + t.fills) if t and e.fills + t.fills else (
                    1.0 if e.fills else None)
            entry["variants"][name] = {"books": books, "replay_s": round(time.perf_counter() - t1, 2)}
        base, flat = marks_of["default"], marks_of["unskewed"]
        for key in sorted(k for k in base if k != TOUCH):
            for ref_name, ref in (("touch", base.get(TOUCH)), ("unskewed", flat.get(key))):
                test = None if ref is None else _paired(base[key], ref)
                if test is not None:
                    entry["tests"].append({"book": f"{key[0]}/{key[1]}", "against": ref_name, **test})
        result["instruments"][inst] = entry
    return result


def _holm_all(report: dict[str, Any]) -> None:
    tests = [t for d in report["datasets"].values() for e in d["instruments"].values() for t in e["tests"]]
    for t, ok in zip(tests, holm([t["p_value"] for t in tests]), strict=True):
        t["holm"] = ok


def _markdown(report: dict[str, Any]) -> str:
    lines = []
    for ds, d in report["datasets"].items():
        for inst, e in d["instruments"].items():
            lines.append(f"\n#### {ds}: {inst} ({e['decisions']:,} decisions)\n")
            lines.append("| book | fill rate | fills | adverse 1 s | adverse 10 s | break-even fee | net at +2 | "
                         "net at 0 | net at -0.5 | power n=2 | power n=3 | 50 ms | feed latency | unskewed |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            v = e["variants"]
            for book, b in v["default"]["books"].items():
                def f(x: Any, spec: str = ".3f") -> str:
                    return "–" if x is None else format(x, spec)
                alt = [f(v[n]["books"].get(book, {}).get("break_even_bps")) for n in
                       ("power2", "power3", "latency50", "feed", "unskewed")]
                lines.append(f"| {book} | {f(b['fill_rate'])} | {b['fills']} | {f(b['adverse_1s_bps'])} | "
                             f"{f(b['adverse_10s_bps'])} | {f(b['break_even_bps'])} | {f(b['net_bps']['+2'])} | "
                             f"{f(b['net_bps']['+0'])} | {f(b['net_bps']['-0.5'])} | {' | '.join(alt)} |")
            if e["tests"]:
                lines.append("\n| book | against | break-even difference, bps | HAC se | blocks | p (one-sided) | "
                             "Holm |")
                lines.append("|---|---|---|---|---|---|---|")
                for t in e["tests"]:
                    p = "–" if t["p_value"] is None else f"{t['p_value']:.2g}"
                    lines.append(f"| {t['book']} | {t['against']} | {t['diff_bps']:+.3f} | {t['se_bps']:.3f} | "
                                 f"{t['blocks']} | {p} | {'✓' if t['holm'] else '✗'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="usdm,spot")
    ap.add_argument("--models", default=",".join([*sorted(m for m in MODELS if m != BOOK_MODEL), ENSEMBLE]))
    ap.add_argument("--block-s", type=float, default=30.0)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    models = tuple(args.models.split(","))
    report: dict[str, Any] = {"models": models, "horizons": HORIZONS, "block_s": args.block_s,
                              "fees_bps": FEES_BPS, "variants": VARIANTS, "datasets": {}}
    for ds in args.datasets.split(","):
        report["datasets"][ds] = evaluate(ds, models, args.block_s)
    _holm_all(report)
    tests = [t for d in report["datasets"].values() for e in d["instruments"].values() for t in e["tests"]]
    usdm = [t for t in tests if t in report["datasets"].get("usdm", {"instruments": {}}).get(
        "instruments", {}).get("BTCUSDT-PERP", {"tests": []})["tests"]]
    won = [t for t in usdm if t["against"] == "unskewed" and t["diff_bps"] > 0 and t["holm"]]
    report["target"] = {"met": bool(won), "books": [t["book"] for t in won],
                        "text": "some learner's forecast raises the break-even maker fee above the unskewed maker's "
                                "on the USD-M recordings, significant after Holm (paired block test)"}
    if args.markdown:
        args.markdown.write_text(_markdown(report))
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()

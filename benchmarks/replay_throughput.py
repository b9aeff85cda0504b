"""Throughput of the forecasting dataflow on the real recordings, as JSON.

Measures, on the same input and settings:

- ``dataflow_ticks_per_s``: the full Bytewax dataflow (``run_main``, one
  worker), sinks included;
- ``loop_ticks_per_s``: a plain Python loop doing the same work with the same
  pure functions (read, parse, bars, features, join, metrics, signals, fill
  quotes, books, CSV output) and no engine, so ``overhead_ratio`` (dataflow
  time / loop time) shows what Bytewax costs;
- ``bar_latency_us``: compute per closed bar from its bar to its forecasts
  (features + time-travel join + metrics), p50/p99/max, from the loop;
- ``decision_us_per_bar``: compute per closed bar of the decision layer
  (signals and the simulated books), p50/p99/max, from the loop.

Both take the path the settings take for these inputs (``path``:
``TICKLET_INPUT__PATH``, ``auto`` by default: the chunk path from about
150,000 lines).

Usage::

    python benchmarks/replay_throughput.py [PATH ...] [--repeat N]

Defaults to every recording in ../shared/data/binance-ws.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core.events import (  # noqa: E402
    Bar,
    EconomicsRecord,
    EquityPoint,
    Fill,
    ForecastRecord,
    MetricsRecord,
    RawChunk,
    Signal,
)
from dataflows.settings import Settings  # noqa: E402
from harness.realdata import bar_step  # noqa: E402
from operators import features, fills, forecast, metrics, pnl, sanity, signals  # noqa: E402
from sinks.records import csv_lines, header  # noqa: E402
from sources.binance import ParseLimits, ParseState, parse_chunk  # noqa: E402
from sources.files import group_streams, read_stream  # noqa: E402


def plain_loop(paths: list[str], settings: Settings, out_dir: Path) -> tuple[int, int, float, list[float], list[float]]:
    """The dataflow's work without the engine, output files included.
    Returns ticks, bars, seconds, per-bar latencies (s) of the forecasting
    path (features, join, metrics) and of the decision layer (signals and
    the books; the fill-quote search runs per tick and is in the total)."""
    states: dict[str, tuple] = {}
    files = {name: open(out_dir / f"loop_{name}.csv", "w")  # noqa: SIM115
             for name in ("forecasts", "metrics", "signals", "trades", "equity", "economics")}
    for name, cls in (("forecasts", ForecastRecord), ("metrics", MetricsRecord), ("signals", Signal),
                      ("trades", Fill), ("equity", EquityPoint), ("economics", EconomicsRecord)):
        files[name].write(",".join(header(cls)) + "\n")
    kinds = {ForecastRecord: "forecasts", MetricsRecord: "metrics", Signal: "signals", Fill: "trades",
             EquityPoint: "equity", EconomicsRecord: "economics"}
    ticks = n_bars = 0
    lat: list[float] = []
    dlat: list[float] = []
    perf = time.perf_counter
    b_cfg, x_cfg = settings.bars, settings.execution
    path = settings.input.model_copy(update={"paths": list(paths)}).parse_path()
    parse_state = ParseState(ParseLimits(path=path))
    compiled = path == "chunk"
    bstep = bar_step(settings, compiled)[0]  # the bars with their order book, as in the dataflow
    t0 = perf()
    for spec in group_streams(paths, settings.input.market):
        for block in read_stream(spec):
            for i in range(0, len(block), settings.input.batch_size):
                chunk = RawChunk(spec.fmt, spec.market, spec.symbol,
                                 block[i : i + settings.input.batch_size], spec.interval_ns)
                by_key, _errors, counts = parse_chunk(chunk, parse_state)
                ticks += counts["ticks"]
                for key, batch in by_key.items():
                    st = states.get(key)
                    if st is None:
                        st = states[key] = (sanity.SanityState(settings.sanity),
                                            bar_step(settings, compiled)[1], features.FeatureState(settings.features),
                                            forecast.JoinState(settings.forecast), metrics.MetricsState(),
                                            signals.SignalState(settings.signals),
                                            fills.FillState(x_cfg.latency_ms, b_cfg.interval_ms, b_cfg.max_gap_bars),
                                            pnl.PnlState(x_cfg, b_cfg.interval_ms, b_cfg.max_gap_bars))
                    cs, bs, fs, js, ms, ss, qs, ps = st
                    cs, checked = sanity.step_batch(cs, batch)
                    events = checked[0] if checked and type(checked[0]) is list else []
                    written: dict[str, list] = {name: [] for name in files}
                    for ev in events:
                        qs, quotes = fills.step(qs, ev)
                        for q in quotes:
                            ps, books = pnl.step(ps, q)
                            for x in books:
                                written[kinds[type(x)]].append(x)
                        bs, out = bstep(bs, ev)
                        for b in out:
                            if type(b) is not Bar:
                                continue
                            n_bars += 1
                            tb = perf()
                            fs, rows = features.step(fs, b)
                            joined: list = []
                            for row in rows:
                                js, recs = forecast.step(js, row)
                                joined.extend(recs)
                                for r in recs:
                                    if type(r) is not ForecastRecord:
                                        continue
                                    written["forecasts"].append(r)
                                    ms, mets = metrics.step(ms, r)
                                    written["metrics"].extend(mets)
                            td = perf()
                            lat.append(td - tb)
                            for r in joined:
                                ss, sigs = signals.step(ss, r)
                                for sig in sigs:
                                    written["signals"].append(sig)
                                    ps, books = pnl.step(ps, sig)
                                    for x in books:
                                        written[kinds[type(x)]].append(x)
                            dlat.append(perf() - td)
                    for name, kept in written.items():
                        if kept:
                            files[name].write(csv_lines(kept))
    for f in files.values():
        f.close()
    return ticks, n_bars, perf() - t0, lat, dlat


def dataflow_run(paths: list[str], out_dir: Path) -> dict:
    from ticklet.backtest import run_backtest

    return run_backtest(paths, out_dir)


def _us(xs: list[float]) -> dict[str, float]:
    """p50 / p99 / max of seconds, in µs."""
    return {"p50": round(statistics.median(xs) * 1e6, 1),
            "p99": round(float(np.percentile(xs, 99, method="higher")) * 1e6, 1), "max": round(max(xs) * 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", default=[str(ROOT.parent / "shared" / "data" / "binance-ws")])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the best is reported")
    args = ap.parse_args()
    settings = Settings()
    flow_runs, loop_runs = [], []
    summary: dict = {}
    lat: list[float] = []
    dlat: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            summary = dataflow_run(args.paths, Path(tmp))
            flow_runs.append(summary["wall_s"])
            ticks, n_bars, secs, lat_run, dlat_run = plain_loop(args.paths, settings, Path(tmp))
            loop_runs.append(secs)
            lat, dlat = lat or lat_run, dlat or dlat_run
    flow_s, loop_s = min(flow_runs), min(loop_runs)
    assert ticks == summary["ticks"], (ticks, summary["ticks"])
    result = {
        "benchmark": "replay_throughput",
        "inputs": args.paths,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "path": settings.input.model_copy(update={"paths": list(args.paths)}).parse_path(),
        "ticks": ticks,
        "bars": n_bars,
        "forecasts": summary["forecasts"],
        "dataflow_wall_s": round(flow_s, 4),
        "dataflow_ticks_per_s": round(ticks / flow_s),
        "loop_wall_s": round(loop_s, 4),
        "loop_ticks_per_s": round(ticks / loop_s),
        "overhead_ratio": round(flow_s / loop_s, 3),
        "bar_latency_us": _us(lat),
        "decision_us_per_bar": _us(dlat),
        "repeat": args.repeat,
    }
    sys.stdout.write(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

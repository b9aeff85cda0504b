"""Throughput of the forecasting dataflow on the real recordings, as JSON.

Measures, on the same input and settings:

- ``dataflow_ticks_per_s``: the full Bytewax dataflow (``run_main``, one
  worker), sinks included;
- ``loop_ticks_per_s``: a plain Python loop doing the same work with the same
  pure functions (read, parse, bars, features, join, metrics, CSV output) and
  no engine, so ``overhead_ratio`` (dataflow time / loop time) shows what
  Bytewax costs;
- ``bar_latency_us``: compute per closed bar from its bar to its forecasts
  (features + time-travel join + metrics), p50/p99/max, from the loop.

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

from operators import bars, features, forecast, metrics  # noqa: E402
from sinks.records import csv_lines, header  # noqa: E402
from sources.binance import parse_chunk  # noqa: E402
from sources.files import group_streams, read_stream  # noqa: E402
from ticklet.events import Bar, ForecastRecord, MetricsRecord, RawChunk  # noqa: E402
from ticklet.settings import Settings  # noqa: E402


def plain_loop(paths: list[str], settings: Settings, out_dir: Path) -> tuple[int, int, float, list[float]]:
    """The dataflow's work without the engine, output files included.
    Returns ticks, bars, seconds, per-bar latencies (s)."""
    states: dict[str, tuple] = {}
    f_out = open(out_dir / "loop_forecasts.csv", "w")  # noqa: SIM115
    m_out = open(out_dir / "loop_metrics.csv", "w")  # noqa: SIM115
    f_out.write(",".join(header(ForecastRecord)) + "\n")
    m_out.write(",".join(header(MetricsRecord)) + "\n")
    ticks = n_bars = 0
    lat: list[float] = []
    perf = time.perf_counter
    t0 = perf()
    for spec in group_streams(paths, settings.input.market):
        for block in read_stream(spec):
            for i in range(0, len(block), settings.input.batch_size):
                chunk = RawChunk(spec.fmt, spec.market, spec.symbol,
                                 block[i : i + settings.input.batch_size], spec.interval_ns)
                by_key, _errors, counts = parse_chunk(chunk)
                ticks += counts["ticks"]
                for key, events in by_key.items():
                    st = states.get(key)
                    if st is None:
                        st = states[key] = (bars.BarState(settings.bars),
                                            features.FeatureState(settings.features),
                                            forecast.JoinState(settings.forecast),
                                            metrics.MetricsState())
                    bs, fs, js, ms = st
                    recs_out: list = []
                    mets_out: list = []
                    for ev in events:
                        bs, out = bars.step(bs, ev)
                        for b in out:
                            if type(b) is not Bar:
                                continue
                            n_bars += 1
                            tb = perf()
                            fs, rows = features.step(fs, b)
                            for row in rows:
                                js, recs = forecast.step(js, row)
                                for r in recs:
                                    if type(r) is not ForecastRecord:
                                        continue
                                    recs_out.append(r)
                                    ms, mets = metrics.step(ms, r)
                                    mets_out.extend(mets)
                            lat.append(perf() - tb)
                    if recs_out:
                        f_out.write(csv_lines(recs_out))
                        m_out.write(csv_lines(mets_out))
    f_out.close()
    m_out.close()
    return ticks, n_bars, perf() - t0, lat


def dataflow_run(paths: list[str], out_dir: Path) -> dict:
    from ticklet.cli import run_backtest

    return run_backtest(paths, out_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", default=[str(ROOT.parent / "shared" / "data" / "binance-ws")])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the best is reported")
    args = ap.parse_args()
    settings = Settings()
    flow_runs, loop_runs = [], []
    summary: dict = {}
    lat: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            summary = dataflow_run(args.paths, Path(tmp))
            flow_runs.append(summary["wall_s"])
            ticks, n_bars, secs, lat_run = plain_loop(args.paths, settings, Path(tmp))
            loop_runs.append(secs)
            lat = lat or lat_run
    flow_s, loop_s = min(flow_runs), min(loop_runs)
    assert ticks == summary["ticks"], (ticks, summary["ticks"])
    result = {
        "benchmark": "replay_throughput",
        "inputs": args.paths,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "ticks": ticks,
        "bars": n_bars,
        "forecasts": summary["forecasts"],
        "dataflow_wall_s": round(flow_s, 4),
        "dataflow_ticks_per_s": round(ticks / flow_s),
        "loop_wall_s": round(loop_s, 4),
        "loop_ticks_per_s": round(ticks / loop_s),
        "overhead_ratio": round(flow_s / loop_s, 3),
        "bar_latency_us": {
            "p50": round(statistics.median(lat) * 1e6, 1),
            "p99": round(float(np.percentile(lat, 99, method="higher")) * 1e6, 1),
            "max": round(max(lat) * 1e6, 1),
        },
        "repeat": args.repeat,
    }
    sys.stdout.write(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

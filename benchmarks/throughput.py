"""The whole pipeline against the per-message ceiling, on the USD-M recordings, as JSON (issue 28's targets).

In one run, on the same files (by default the USD-M BTCUSDT-PERP
recordings of ../shared/data/binance-ws, depth features on, the defaults
otherwise):

- ``bare_decode_lines_per_s``: a plain Python loop that only gunzips the
  files, splits their lines, and decodes each line's JSON with msgspec (the
  receive time as an int): the ceiling of any design that touches every
  message in Python (best of ``--repeat``);
- ``pipeline_lines_per_s``: the whole forecasting dataflow in this process
  (:func:`ticklet.backtest.run_backtest`, one worker, every output file,
  fixed costs included), input lines per second of wall time (best of
  ``--repeat``), and ``ratio_to_bare_decode`` (issue 28's target: at least
  1.0), on the chunk path (``TICKLET_INPUT__PATH=chunk``; the compiled
  code loaded by a first run that is not counted); ``_message``: on the
  per-message path;
- with ``--maker``, the same with the maker books on
  (``pipeline_lines_per_s_maker``; issue 27's target: above 100,000);
- ``backtest_process_s`` and ``backtest_peak_rss_mib``: ``ticklet backtest``
  of the first file alone as a new process, wall time and peak resident
  memory (the process's ``ru_maxrss``), best of ``--repeat``;
  ``river_import_s``: a new Python process that only imports what the
  default learners are made of (``river.linear_model``, ``river.preprocessing``,
  which import ``scipy.stats``), best of ``--repeat``: a floor of that
  process time which no change to ticklet moves;
- ``stage_s``: where the best pipeline run's time went, per step
  (``ticklet_stage_seconds``: parse, sanity, bars and the book, features,
  join, metrics, signals, pnl, fills, maker), and ``other_s``, the rest
  (reading, Bytewax, the output files, set-up);
- ``inflate_s``: gunzipping the files alone (ISA-L, as the reader does), and
  ``per_bar_s``: the steps that run once per bar or forecast (features,
  join, metrics, signals, pnl). Their sum is a floor of any design that keeps
  today's per-bar work and reads these files: ``lines_per_s_ceiling`` is the
  input lines over it, what the pipeline would reach if parsing, checks,
  bars, books, Bytewax and the outputs took no time at all.

Usage::

    python benchmarks/throughput.py [PATH ...] [--repeat N] [--maker]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

DATA = Path(os.environ.get("TICKLET_DATA", ROOT.parent / "shared" / "data")) / "binance-ws"
DEFAULT = [DATA / "usdm" / "btcusdt_20230404.dat.gz", DATA / "usdm" / "btcusdt_20230405.dat.gz"]


def bare_decode(paths: list[Path]) -> int:
    """Gunzip, split and decode every line: the number of lines decoded."""
    decode = msgspec.json.decode
    n = 0
    for p in paths:
        with gzip.open(p, "rb") as f:
            data = f.read()
        for line in data.split(b"\n"):
            if not line:
                continue
            sp = line.find(b" ")
            int(line[:sp])
            decode(line[sp + 1:])
            n += 1
    return n


#: The steps that run once per bar or per forecast, not per tick.
PER_BAR = ("features", "join", "metrics", "signals", "pnl")


def _stages() -> dict[str, float]:
    """Seconds spent so far in each step of the dataflow (``ticklet_stage_seconds``)."""
    from core.telemetry import STAGE_SECONDS

    return {m.labels["stage"]: m.value for metric in STAGE_SECONDS.collect() for m in metric.samples
            if m.name.endswith("_sum")}


def inflate(paths: list[Path]) -> float:
    """Seconds to gunzip the files whole with ISA-L (best of 3)."""
    from isal import igzip

    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for p in paths:
            with igzip.open(p, "rb") as f:
                f.read()
        best = min(best, time.perf_counter() - t0)
    return best


def _pipeline(paths: list[Path], maker: bool, path: str = "chunk") -> tuple[float, int, dict[str, float]]:
    from dataflows.settings import Settings
    from ticklet.backtest import run_backtest

    s = Settings()
    base = s.model_copy(update={"maker": s.maker.model_copy(update={"enabled": maker}),
                                "input": s.input.model_copy(update={"path": path}),
                                "output": s.output.model_copy(update={"summary": False})})
    with tempfile.TemporaryDirectory() as out:
        before = _stages()
        t0 = time.perf_counter()
        run_backtest([str(p) for p in paths], Path(out), base=base)
        wall = time.perf_counter() - t0
        after = _stages()
        lines = json.loads((Path(out) / "counters.json").read_text())["input_records"]
    return wall, lines, {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def _process(path: Path) -> tuple[float, float]:
    """``ticklet backtest PATH`` as a new process: wall seconds and peak RSS (MiB)."""
    exe = Path(sys.executable).parent / "ticklet"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ticklet.cli"]
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run([*cmd, "backtest", str(path), "--out", out], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"ticklet backtest failed: {proc.stderr.decode()[-2000:]}")
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far: these runs
    return wall, rss_kib / 1024


def _river_import() -> float:
    """Wall seconds of a new process that imports the River modules of the default learners, and nothing else."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import river.linear_model, river.preprocessing"], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--maker", action="store_true", help="also run the pipeline with the maker books on")
    args = ap.parse_args()
    paths = args.paths or DEFAULT
    # The new processes first, while this one is small: a child's peak RSS counts the parent's pages it was forked
    # with, before it runs ticklet.
    procs = [_process(paths[0]) for _ in range(args.repeat)]
    river = min(_river_import() for _ in range(args.repeat))
    bare = float("inf")
    lines = 0
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        lines = bare_decode(paths)
        bare = min(bare, time.perf_counter() - t0)
    _pipeline(paths[:1], False)  # the imports, and the compiled scanner loaded: not in the figures
    kinds = {"pipeline": (False, "chunk"), "message": (False, "message")}
    if args.maker:
        kinds.update({"maker": (True, "chunk"), "maker_message": (True, "message")})
    runs: dict[str, list] = {k: [] for k in kinds}
    for _ in range(args.repeat):  # interleaved: a process that slows as it runs favours no path
        for k, (maker, path) in kinds.items():
            runs[k].append(_pipeline(paths, maker, path))
    best = {k: min(w for w, _, _ in v) for k, v in runs.items()}
    n = runs["pipeline"][0][1]
    wall, _, stages = min(runs["pipeline"], key=lambda r: r[0])
    per_bar = sum(stages.get(k, 0.0) for k in PER_BAR)
    gunzip = inflate(paths)
    out = {
        "benchmark": "throughput", "python": platform.python_version(), "cpus": os.cpu_count(),
        "repeat": args.repeat, "files": [str(p) for p in paths], "input_lines": n, "lines_decoded": lines,
        "bare_decode_lines_per_s": round(lines / bare), "bare_decode_s": round(bare, 3),
        "pipeline_lines_per_s": round(n / best["pipeline"]), "pipeline_s": round(best["pipeline"], 3),
        "ratio_to_bare_decode": round((n / best["pipeline"]) / (lines / bare), 3),
        "pipeline_lines_per_s_message": round(n / best["message"]), "pipeline_s_message": round(best["message"], 3),
        **({"pipeline_lines_per_s_maker": round(n / best["maker"]), "pipeline_s_maker": round(best["maker"], 3),
            "pipeline_lines_per_s_maker_message": round(n / best["maker_message"]),
            "pipeline_s_maker_message": round(best["maker_message"], 3)}
           if "maker" in best else {}),
        "stage_s": {k: round(v, 4) for k, v in sorted(stages.items())},
        "other_s": round(wall - sum(stages.values()), 4),
        "inflate_s": round(gunzip, 4), "per_bar_s": round(per_bar, 4),
        "lines_per_s_ceiling": round(n / (gunzip + per_bar)),
        "backtest_process_file": str(paths[0]),
        "backtest_process_s": round(min(w for w, _ in procs), 3),
        "backtest_peak_rss_mib": round(max(r for _, r in procs), 1),
        "river_import_s": round(river, 3),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

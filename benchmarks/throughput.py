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
  1.0);
- with ``--maker``, the same with the maker books on
  (``pipeline_lines_per_s_maker``; issue 27's target: above 100,000);
- ``backtest_process_s`` and ``backtest_peak_rss_mib``: ``ticklet backtest``
  of the first file alone as a new process, wall time and peak resident
  memory (the process's ``ru_maxrss``), best of ``--repeat``.

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


def _pipeline(paths: list[Path], maker: bool) -> tuple[float, int]:
    from dataflows.settings import Settings
    from ticklet.backtest import run_backtest

    s = Settings()
    base = s.model_copy(update={"maker": s.maker.model_copy(update={"enabled": maker}),
                                "output": s.output.model_copy(update={"summary": False})})
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run_backtest([str(p) for p in paths], Path(out), base=base)
        wall = time.perf_counter() - t0
        lines = json.loads((Path(out) / "counters.json").read_text())["input_records"]
    return wall, lines


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--maker", action="store_true", help="also run the pipeline with the maker books on")
    args = ap.parse_args()
    paths = args.paths or DEFAULT
    bare = float("inf")
    lines = 0
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        lines = bare_decode(paths)
        bare = min(bare, time.perf_counter() - t0)
    runs = {"pipeline": [_pipeline(paths, False) for _ in range(args.repeat)]}
    if args.maker:
        runs["maker"] = [_pipeline(paths, True) for _ in range(args.repeat)]
    procs = [_process(paths[0]) for _ in range(args.repeat)]
    best = {k: min(w for w, _ in v) for k, v in runs.items()}
    n = runs["pipeline"][0][1]
    out = {
        "benchmark": "throughput", "python": platform.python_version(), "cpus": os.cpu_count(),
        "repeat": args.repeat, "files": [str(p) for p in paths], "input_lines": n, "lines_decoded": lines,
        "bare_decode_lines_per_s": round(lines / bare), "bare_decode_s": round(bare, 3),
        "pipeline_lines_per_s": round(n / best["pipeline"]), "pipeline_s": round(best["pipeline"], 3),
        "ratio_to_bare_decode": round((n / best["pipeline"]) / (lines / bare), 3),
        **({"pipeline_lines_per_s_maker": round(n / best["maker"]), "pipeline_s_maker": round(best["maker"], 3)}
           if "maker" in best else {}),
        "backtest_process_file": str(paths[0]),
        "backtest_process_s": round(min(w for w, _ in procs), 3),
        "backtest_peak_rss_mib": round(max(r for _, r in procs), 1),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

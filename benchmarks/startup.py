"""Start-up time and peak memory of the command line, as JSON.

Each command runs in a fresh process (``python -m ticklet.cli ...`` in the
checkout given by ``--repo``, so an older checkout can be measured the same
way); the figure is the median of ``--repeat`` runs:

- ``help_s``, ``config_s``, ``download_help_s``: wall time of ``ticklet
  --help``, ``ticklet config`` and ``ticklet download --help``;
- ``backtest``: ``ticklet backtest FILE --json`` on one small recording:
  ``wall_s`` (whole process), ``dataflow_s`` (the run itself, from its JSON),
  ``startup_s`` (the difference: imports, settings, building the flow,
  the summary), ``peak_rss_mb`` (the process's maximum resident set size).

Usage::

    python benchmarks/startup.py [--repo DIR] [--file RECORDING] [--repeat N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs one command and prints its maximum RSS (KiB on Linux): the wrapper's
# only child is the command, so RUSAGE_CHILDREN is that command's own peak.
_RSS = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, "
        "stderr=subprocess.DEVNULL); sys.stderr.write(p.stdout.decode()); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)")


def timed(args: list[str], cwd: Path) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in KiB, stdout) of one run."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _RSS, *args], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed with status {p.returncode}")
    return wall, int(p.stdout.strip().splitlines()[-1]), p.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout to measure (default: this one)")
    ap.add_argument("--file", type=Path, default=ROOT / "data" / "sample" / "spot" / "btcusdt_20240808.gz",
                    help="recording for the backtest (default: the bundled sample's first file)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per command; the median is reported")
    a = ap.parse_args()
    cli = [sys.executable, "-m", "ticklet.cli"]
    res: dict = {"repo": str(a.repo.resolve()), "python": platform.python_version(), "repeat": a.repeat}
    for name, args in (("help_s", ["--help"]), ("config_s", ["config"]), ("download_help_s", ["download", "--help"])):
        res[name] = round(statistics.median(timed([*cli, *args], a.repo)[0] for _ in range(a.repeat)), 3)
    runs = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(a.repeat):
            wall, rss, stdout = timed([*cli, "backtest", str(a.file.resolve()), "--json", "--out", out], a.repo)
            runs.append((wall, json.loads(stdout)["wall_s"], rss))
    with gzip.open(a.file, "rb") as f:
        n_lines = sum(1 for _ in f)
    wall = statistics.median(r[0] for r in runs)
    flow = statistics.median(r[1] for r in runs)
    res["backtest"] = {
        "file": a.file.name, "lines": n_lines, "wall_s": round(wall, 3), "dataflow_s": round(flow, 3),
        "startup_s": round(wall - flow, 3), "peak_rss_mb": round(statistics.median(r[2] for r in runs) / 1024, 1),
    }
    sys.stdout.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()

"""Build time and size of the HTML report (``ticklet report``), as JSON.

Runs one backtest over the recordings (by default every bundled recording in
``tests/data/binance-ws``, with the default models and an interval model,
``bayes_linear``, so every kind of plot is built), then builds its report:

- ``cli_s``: wall time of ``ticklet report OUT_DIR -o FILE`` in a fresh
  process (imports included), the median of ``--repeat`` runs; the target is
  at most ``target_s`` (10 s);
- ``build_s``: :func:`ticklet.report.build_report` in this process, once
  the imports are warm (median);
- ``html_bytes`` (the file), ``plotlyjs_bytes`` (the embedded library, once),
  ``plots``; the size of the run: ``forecasts``, ``equity_points`` rows.

Usage::

    python benchmarks/report_build.py [PATH ...] [--models a,b,c] [--repeat N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataflows.settings import Settings  # noqa: E402
from ticklet.backtest import run_backtest  # noqa: E402
from ticklet.report import build_report  # noqa: E402

TARGET_S = 10.0


def _rows(path: Path) -> int:
    with open(path, "rb") as f:
        return max(sum(1 for _ in f) - 1, 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", default=[str(ROOT / "tests" / "data" / "binance-ws")])
    ap.add_argument("--models", default="naive,linear,logistic,bayes_linear", help="models of the backtest")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="run and report in this directory (default: a temporary one)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "run"
        s = Settings()
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
        base = s.model_copy(update={"forecast": s.forecast.model_copy(update={"models": models}),
                                    "output": s.output.model_copy(update={"summary": False})})
        t0 = time.perf_counter()
        summary = run_backtest(args.paths, out, base=base)
        backtest_s = time.perf_counter() - t0

        html = out / "report.html"
        cli = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ticklet.cli", "report", str(out), "-o", str(html)], check=True,
                           cwd=ROOT, stdout=subprocess.DEVNULL)
            cli.append(time.perf_counter() - t0)
        build_report(out, html)  # warm the imports
        warm = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            build_report(out, html)
            warm.append(time.perf_counter() - t0)

        import plotly.offline

        text = html.read_text()
        result = {
            "inputs": args.paths,
            "models": list(models),
            "forecasts": summary["forecasts"],
            "equity_points": _rows(out / "equity.csv"),
            "backtest_s": round(backtest_s, 3),
            "cli_s": round(statistics.median(cli), 3),
            "build_s": round(statistics.median(warm), 3),
            "target_s": TARGET_S,
            "within_target": statistics.median(cli) <= TARGET_S,
            "html_bytes": html.stat().st_size,
            "plotlyjs_bytes": len(plotly.offline.get_plotlyjs().encode()),
            "plots": text.count('class="plot"'),
            "repeat": args.repeat,
            "python": platform.python_version(),
            "machine": platform.machine(),
        }
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

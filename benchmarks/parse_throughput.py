"""Throughput of the input parser alone on real recordings, as JSON.

The recordings are read into memory first (blocks of raw lines, as the
replay source makes them); then only :func:`sources.binance.parse_chunk`
is timed, in CPU time of the process (``time.process_time``: a machine
busy with other work changes it less than wall time), best of ``--repeat``
runs, per stream and in total:
``records_per_s`` (lines parsed per second, dead letters and skips
included) and ``ticks_per_s`` (events made per second).

Usage::

    python benchmarks/parse_throughput.py [PATH ...] [--repeat N]

Defaults to the recordings of ``tests/data/binance-ws``. Run it in two
checkouts (``git worktree add``) to compare two versions of the parser.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sources.binance import ParseState, parse_chunk  # noqa: E402
from sources.files import group_streams, read_stream  # noqa: E402
from ticklet.events import RawChunk  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", default=[str(ROOT / "tests" / "data" / "binance-ws")])
    ap.add_argument("--repeat", type=int, default=5, help="runs of each stream; the best is reported")
    args = ap.parse_args()
    streams = {}
    for spec in group_streams(args.paths):
        if spec.fmt == "ws":
            streams[spec.name] = (spec, [RawChunk(spec.fmt, spec.market, spec.symbol, block)
                                         for block in read_stream(spec)])
    out: dict = {"python": platform.python_version(), "streams": {}}
    total_recs = total_ticks = 0
    total_s = 0.0
    for name, (_spec, chunks) in streams.items():
        best = float("inf")
        recs = ticks = 0
        for _ in range(args.repeat):
            state = ParseState()
            recs = ticks = 0
            t0 = time.process_time()
            for c in chunks:
                _, _, counts = parse_chunk(c, state)
                recs += counts["input_records"]
                ticks += counts["ticks"]
            best = min(best, time.process_time() - t0)
        out["streams"][name] = {"records": recs, "ticks": ticks, "seconds": round(best, 4),
                                "records_per_s": round(recs / best)}
        total_recs, total_ticks, total_s = total_recs + recs, total_ticks + ticks, total_s + best
    out["records"], out["ticks"] = total_recs, total_ticks
    out["records_per_s"] = round(total_recs / total_s) if total_s else None
    out["ticks_per_s"] = round(total_ticks / total_s) if total_s else None
    sys.stdout.write(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

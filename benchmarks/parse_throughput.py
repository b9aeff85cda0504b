"""Throughput of the input parser alone on real recordings, as JSON.

The recordings are read into memory first (blocks of raw lines, as the
replay source makes them); then only :func:`sources.binance.parse_chunk`
is timed, in CPU time of the process (``time.process_time``: a machine
busy with other work changes it less than wall time), best of ``--repeat``
runs, per stream and in total:
``records_per_s`` (lines parsed per second, dead letters and skips
included) and ``ticks_per_s`` (events made per second), and
``records_per_s`` per market (``markets``). With ``--kafka`` each line is
first made the Kafka message ``ticklet replay --to kafka`` and ``ticklet
collect`` publish (:func:`sources.wire.encode_tick`: the receive time and
market spliced in front), and the chunks are parsed as the Kafka source
hands them over (format ``kafka``).

Usage::

    python benchmarks/parse_throughput.py [PATH ...] [--repeat N] [--kafka]

Defaults to the recordings of ``tests/data/binance-ws``; the COIN-M
recordings are in ``tests/data/fixtures/hftbacktest/cm``. Run it in two
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

from core.events import RawChunk  # noqa: E402
from sources.binance import ParseState, parse_chunk, to_ns  # noqa: E402
from sources.files import group_streams, read_stream  # noqa: E402
from sources.wire import encode_tick  # noqa: E402


def _kafka_chunk(market: str, block: list) -> RawChunk:
    """A block of recording lines as the Kafka source hands their messages over."""
    values = []
    for line in block:
        sp = line.find(b" ")
        values.append(encode_tick(to_ns(int(line[:sp])), market, line[sp + 1 :]))
    return RawChunk("kafka", "", "", values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", default=[str(ROOT / "tests" / "data" / "binance-ws")])
    ap.add_argument("--repeat", type=int, default=5, help="runs of each stream; the best is reported")
    ap.add_argument("--kafka", action="store_true", help="parse the lines as Kafka messages of the wire format")
    args = ap.parse_args()
    streams = {}
    for spec in group_streams(args.paths):
        if spec.fmt == "ws":
            blocks = [[ln for ln in block if ln[:1].isdigit()] if args.kafka else block for block in read_stream(spec)]
            streams[spec.name] = (spec, [_kafka_chunk(spec.market, b) if args.kafka
                                         else RawChunk(spec.fmt, spec.market, spec.symbol, b) for b in blocks])
    out: dict = {"python": platform.python_version(), "format": "kafka" if args.kafka else "ws", "streams": {}}
    markets: dict = {}
    total_recs = total_ticks = 0
    total_s = 0.0
    for name, (spec, chunks) in streams.items():
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
        out["streams"][name] = {"market": spec.market, "records": recs, "ticks": ticks, "seconds": round(best, 4),
                                "records_per_s": round(recs / best)}
        total_recs, total_ticks, total_s = total_recs + recs, total_ticks + ticks, total_s + best
        m = markets.setdefault(spec.market, [0, 0.0])
        m[0], m[1] = m[0] + recs, m[1] + best
    out["records"], out["ticks"] = total_recs, total_ticks
    out["records_per_s"] = round(total_recs / total_s) if total_s else None
    out["ticks_per_s"] = round(total_ticks / total_s) if total_s else None
    out["markets"] = {m: {"records": n, "records_per_s": round(n / s) if s else None} for m, (n, s) in markets.items()}
    sys.stdout.write(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

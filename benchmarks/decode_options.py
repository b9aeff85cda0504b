"""How fast can a chunk of recorded lines become columns? Decoders compared on the real recordings, as JSON.

Issue 28 asks for work per chunk instead of per message. Before the
pipeline changes, this measures the candidate decoders on the same lines
(read into memory first; best of ``--repeat``), lines per second of each:

- ``per_line_msgspec``: the bare loop of ``benchmarks/throughput.py``
  (split each line, ``int`` its receive time, ``msgspec.json.decode`` its
  JSON into Python objects): the per-message ceiling;
- ``parse_chunk``: ticklet's parser today (:func:`sources.binance.parse_chunk`:
  typed events, every check, dead letters);
- ``bulk_msgspec``: the lines of each stream picked out of the block by one
  regular expression, joined into one JSON array, decoded by one
  ``msgspec`` call into typed structs, then turned into NumPy columns;
- ``pyarrow_json``: the same groups read by ``pyarrow.json.read_json``
  (Arrow's C++ reader) with an explicit schema, numbers cast to float64 by
  Arrow: columns without a Python object per message;
- ``numba_columns``: ticklet's compiled scanner (:mod:`sources.columns`),
  per chunk of 2,048 lines: the best bid/ask and trade lines in Binance's
  own layouts become columns, checked as the parser checks them (its
  ``decoded`` count: the lines it took; the depth diffs and the rest are
  left to the per-line parser, not counted). Its first call compiles, or
  loads the compiled code from numba's cache: not counted either (the
  best of ``--repeat`` runs).

Only the trade, best bid/ask and depth streams are decoded by the bulk
decoders (the others are counted); they check nothing, so they are upper
bounds of what a columnar parser can reach, not parsers.

Usage::

    python benchmarks/decode_options.py [PATH ...] [--repeat N]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402

from core.events import RawChunk  # noqa: E402
from sources.binance import ParseState, parse_chunk  # noqa: E402

DATA = Path(os.environ.get("TICKLET_DATA", ROOT.parent / "shared" / "data")) / "binance-ws"
DEFAULT = [DATA / "usdm" / "btcusdt_20230404.dat.gz", DATA / "usdm" / "btcusdt_20230405.dat.gz"]

#: stream -> the regular expression that picks its lines' receive times and JSON data out of a block
_STREAMS = {
    "trade": re.compile(rb'^(\d{16,19}) \{"stream":"[a-z0-9_]+@trade","data":(\{[^\n]*\})\}$', re.M),
    "bookTicker": re.compile(rb'^(\d{16,19}) \{"stream":"[a-z0-9_]+@bookTicker","data":(\{[^\n]*\})\}$', re.M),
    "depth": re.compile(rb'^(\d{16,19}) \{"stream":"[a-z0-9_]+@depth[^"]*","data":(\{[^\n]*\})\}$', re.M),
}


class _Trade(msgspec.Struct):
    T: int
    p: str
    q: str
    m: bool
    t: int


class _Book(msgspec.Struct):
    u: int
    b: str
    B: str
    a: str
    A: str


class _Depth(msgspec.Struct):
    T: int
    U: int
    u: int
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]


_DEC: dict[str, msgspec.json.Decoder[Any]] = {
    "trade": msgspec.json.Decoder(list[_Trade]), "bookTicker": msgspec.json.Decoder(list[_Book]),
    "depth": msgspec.json.Decoder(list[_Depth])}


def _blocks(paths: list[Path]) -> list[bytes]:
    out = []
    for p in paths:
        with gzip.open(p, "rb") as f:
            out.append(f.read())
    return out


def per_line(blocks: list[bytes]) -> int:
    decode = msgspec.json.decode
    n = 0
    for data in blocks:
        for line in data.split(b"\n"):
            if line:
                sp = line.find(b" ")
                int(line[:sp])
                decode(line[sp + 1:])
                n += 1
    return n


def ticklet_parse(blocks: list[bytes]) -> int:
    n = 0
    state = ParseState()
    for data in blocks:
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        _, _, counts = parse_chunk(RawChunk("ws", "usdm", "BTCUSDT", lines), state)
        n += counts["input_records"]
    return n


def _columns_msgspec(kind: str, found: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    ts = np.array([int(t) for t, _ in found], dtype=np.int64)
    rows = _DEC[kind].decode(b"[" + b",".join(d for _, d in found) + b"]")
    if kind == "trade":
        return {"ts": ts, "T": np.array([r.T for r in rows], dtype=np.int64),
                "p": np.array([r.p for r in rows], dtype=np.float64),
                "q": np.array([r.q for r in rows], dtype=np.float64), "m": np.array([r.m for r in rows], dtype=bool)}
    if kind == "bookTicker":
        return {"ts": ts, "b": np.array([r.b for r in rows], dtype=np.float64),
                "a": np.array([r.a for r in rows], dtype=np.float64)}
    sizes = np.array([len(r.b) + len(r.a) for r in rows], dtype=np.int64)
    px = np.array([p for r in rows for p, _ in (*r.b, *r.a)], dtype=np.float64)
    return {"ts": ts, "T": np.array([r.T for r in rows], dtype=np.int64), "sizes": sizes, "px": px}


def bulk_msgspec(blocks: list[bytes]) -> int:
    n = 0
    for data in blocks:
        for kind, rx in _STREAMS.items():
            found = rx.findall(data)
            if found:
                _columns_msgspec(kind, found)
                n += len(found)
    return n


def _pyarrow_schema(kind: str) -> Any:
    import pyarrow as pa

    s = pa.string()
    if kind == "trade":
        return pa.schema([("T", pa.int64()), ("p", s), ("q", s), ("m", pa.bool_()), ("t", pa.int64())])
    if kind == "bookTicker":
        return pa.schema([("u", pa.int64()), ("b", s), ("B", s), ("a", s), ("A", s)])
    return pa.schema([("T", pa.int64()), ("U", pa.int64()), ("u", pa.int64()), ("b", pa.list_(pa.list_(s))),
                      ("a", pa.list_(pa.list_(s)))])


def pyarrow_json(blocks: list[bytes]) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import json as pajson

    n = 0
    for data in blocks:
        for kind, rx in _STREAMS.items():
            found = rx.findall(data)
            if not found:
                continue
            body = b"\n".join(d for _, d in found)
            opts = pajson.ParseOptions(explicit_schema=_pyarrow_schema(kind), unexpected_field_behavior="ignore")
            table = pajson.read_json(io.BytesIO(body), parse_options=opts,
                                     read_options=pajson.ReadOptions(block_size=1 << 24))
            for c in ("p", "q", "b", "a"):
                if c in table.column_names and pa.types.is_string(table.schema.field(c).type):
                    pc.cast(table.column(c), pa.float64()).to_numpy()
            n += table.num_rows
    return n


def numba_columns(blocks: list[bytes]) -> int:
    """The compiled scanner (:func:`sources.columns.scan`) over chunks of 2,048 lines: the lines it takes."""
    from sources.columns import OTHER, scan

    n = 0
    for data in blocks:
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        for i in range(0, len(lines), 2048):
            n += int((scan(lines[i:i + 2048], "BTCUSDT").kind != OTHER).sum())
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    blocks = _blocks(args.paths or DEFAULT)
    lines = sum(b.count(b"\n") for b in blocks)
    out: dict[str, Any] = {"benchmark": "decode_options", "python": platform.python_version(),
                           "cpus": os.cpu_count(), "repeat": args.repeat,
                           "files": [str(p) for p in (args.paths or DEFAULT)], "lines": lines, "decoders": {}}
    fns: dict[str, Callable[[list[bytes]], int]] = {"per_line_msgspec": per_line, "parse_chunk": ticklet_parse,
                                                    "bulk_msgspec": bulk_msgspec, "pyarrow_json": pyarrow_json,
                                                    "numba_columns": numba_columns}
    for name, fn in fns.items():
        best, n = float("inf"), 0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            n = fn(blocks)
            best = min(best, time.perf_counter() - t0)
        out["decoders"][name] = {"lines": n, "s": round(best, 4), "lines_per_s": round(n / best)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

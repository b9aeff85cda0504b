"""Quotes and trades into bars: ticklet's per-event step against a NumPy fold per chunk, as JSON.

Issue 28 asks for the bar aggregation over columns with NumPy. This measures
it before it goes into the dataflow: the same checked events of each
recording (parsed and checked by ticklet, in chunks of 2,048 lines, in
memory first) go through

- ``per_event``: the bar step today, one call per event
  (:func:`operators.bars.step`, or :func:`operators.depth.step` with the
  book: ``--book``);
- ``numpy_fold``: per chunk, the running maximum of the receive times finds
  the bar boundaries; between two, the quotes' and trades' accumulators
  (OHLC, volumes, OFI, depth sums) are folded with NumPy
  (``np.add.accumulate``, so the sums are the same floats), from columns
  built from the events; the boundary events, depth events and any chunk
  with a late event go through the per-event step.

Both must give the same bars and states (``same``: their pickles are
equal); the figures are seconds (best of ``--repeat``) and events per
second.

Usage::

    python benchmarks/fold_options.py [PATH ...] [--repeat N] [--book]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import time
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core.events import Quote, RawChunk, Trade  # noqa: E402
from dataflows.settings import Settings  # noqa: E402
from operators import bars, depth, sanity  # noqa: E402
from operators.bars import _UNSET, BarState  # noqa: E402
from sources.binance import ParseState, parse_chunk  # noqa: E402
from sources.files import group_streams, read_stream  # noqa: E402

DATA = Path(os.environ.get("TICKLET_DATA", ROOT.parent / "shared" / "data")) / "binance-ws"
DEFAULT = [DATA / "usdm" / "btcusdt_20230404.dat.gz", DATA / "spot" / "btcusdt_20240808.gz"]

_Q = attrgetter("bid", "bid_qty", "ask", "ask_qty")
_T = attrgetter("price", "qty", "buyer_maker")
_TS = attrgetter("ts_recv")
_acc = np.add.accumulate


def _fold(st: BarState, qs: Any, ts: Any) -> None:
    """Fold a bar's quotes (rows bid, bid qty, ask, ask qty) and trades (price, qty, buyer maker) into ``st``."""
    if len(qs):
        b, bq, a, aq = qs[:, 0], qs[:, 1], qs[:, 2], qs[:, 3]
        pb, pbq, pa, paq = (np.concatenate(([x0], x[:-1])) for x0, x in
                            ((st.bid, b), (st.bid_qty, bq), (st.ask, a), (st.ask_qty, aq)))
        e = 0.0 + np.where(b >= pb, bq, 0.0)
        e -= np.where(b <= pb, pbq, 0.0)
        e -= np.where(a <= pa, aq, 0.0)
        e += np.where(a >= pa, paq, 0.0)
        e = e[pa > 0.0]
        if len(e):
            st.ofi = float(_acc(np.concatenate(([st.ofi], e)))[-1])
        st.depth_sum = float(_acc(np.concatenate(([st.depth_sum], (bq + aq) * 0.5)))[-1])
        st.n_quotes += len(b)
        st.bid, st.bid_qty, st.ask, st.ask_qty = float(b[-1]), float(bq[-1]), float(a[-1]), float(aq[-1])
    if len(ts):
        p, q, m = ts[:, 0], ts[:, 1], ts[:, 2] != 0.0
        hi, lo = float(p.max()), float(p.min())
        if st.trades == 0:
            st.open, st.high, st.low = float(p[0]), hi, lo
        else:
            st.high, st.low = max(st.high, hi), min(st.low, lo)
        st.close = st.last_trade = float(p[-1])
        st.trades += len(p)
        st.volume = float(_acc(np.concatenate(([st.volume], q)))[-1])
        st.quote_volume = float(_acc(np.concatenate(([st.quote_volume], p * q)))[-1])
        st.sell_volume = float(_acc(np.concatenate(([st.sell_volume], np.where(m, q, 0.0))))[-1])
        st.buy_volume = float(_acc(np.concatenate(([st.buy_volume], np.where(m, 0.0, q))))[-1])


def fold_chunk(state: Any, events: list, bar_state: Callable[[Any], BarState], step: Callable) -> tuple[Any, list]:
    """The NumPy fold of one chunk (see the module docstring); ``step`` is the per-event reference."""
    bst = bar_state(state)
    out: list = []
    n = len(events)
    ts = np.fromiter(map(_TS, events), np.int64, n)
    run = np.maximum.accumulate(np.concatenate(([bst.max_ts], ts)))
    if n < 32 or bst.start == _UNSET or bst.kline_end >= 0 or (ts < run[:-1] - bst.lateness).any():
        for ev in events:
            state, o = step(state, ev)
            out.extend(o)
        return state, out
    bar = run // bst.interval
    types = list(map(type, events))
    start = 0
    for b in [*np.flatnonzero(bar[1:] > bar[:-1]).tolist(), n]:
        if b > start:
            seg, kinds = events[start:b], types[start:b]
            qs = [ev for ev, t in zip(seg, kinds, strict=True) if t is Quote]
            tr = [ev for ev, t in zip(seg, kinds, strict=True) if t is Trade]
            if len(qs) + len(tr) < b - start:
                for ev, t in zip(seg, kinds, strict=True):
                    if t is not Quote and t is not Trade:
                        state, o = step(state, ev)
                        out.extend(o)
            _fold(bst, np.array(list(map(_Q, qs))) if qs else (), np.array(list(map(_T, tr)), float) if tr else ())
            bst.n_events += len(qs) + len(tr)
            bst.max_ts = int(run[b])
        if b < n:
            state, o = step(state, events[b])
            out.extend(o)
            start = b + 1
    return state, out


def _chunks(path: Path, s: Settings) -> list[list]:
    """The checked events of ``path``, one list per chunk of 2,048 lines."""
    (spec,) = group_streams([path])
    pst, san, chunks = ParseState(), sanity.SanityState(s.sanity), []
    lines = [ln for block in read_stream(spec) for ln in block]
    for i in range(0, len(lines), 2048):
        by_key, _, _ = parse_chunk(RawChunk("ws", spec.market, spec.symbol, lines[i:i + 2048]), pst)
        for evs in by_key.values():
            san, o = sanity.step_batch(san, list(evs))
            if o and type(o[0]) is list:
                chunks.append(o[0])
    return chunks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--book", action="store_true", help="the bars with the order book (operators.depth)")
    args = ap.parse_args()
    s = Settings()
    make: Callable[[], Any]
    step: Callable[[Any, Any], tuple[Any, Any]]
    of: Callable[[Any], BarState]
    if args.book:
        make, step, of = (lambda: depth.DepthState(s.bars, s.features.depth)), depth.step, (lambda st: st.bars)
    else:
        make, step, of = (lambda: BarState(s.bars)), bars.step, (lambda st: st)
    results = []
    for path in args.paths or DEFAULT:
        chunks = _chunks(path, s)
        n = sum(map(len, chunks))
        best = {"per_event": float("inf"), "numpy_fold": float("inf")}
        finals: dict[str, bytes] = {}
        for _ in range(args.repeat):
            for name in best:
                st: Any = make()
                outs: list[Any] = []
                t0 = time.perf_counter()
                for c in chunks:
                    if name == "per_event":
                        for ev in c:
                            st, o = step(st, ev)
                            outs.extend(o)
                    else:
                        st, o = fold_chunk(st, c, of, step)
                        outs.extend(o)
                best[name] = min(best[name], time.perf_counter() - t0)
                finals[name] = pickle.dumps((st, outs))
        results.append({"file": str(path), "events": n, "same": finals["per_event"] == finals["numpy_fold"],
                        **{f"{k}_s": round(v, 4) for k, v in best.items()},
                        **{f"{k}_events_per_s": round(n / v) for k, v in best.items()}})
    print(json.dumps({"benchmark": "fold_options", "python": platform.python_version(), "cpus": os.cpu_count(),
                      "book": args.book, "repeat": args.repeat, "results": results}, indent=1))


if __name__ == "__main__":
    main()

"""Applying depth diffs to an order book: ticklet's Python book against sorted arrays in compiled code, as JSON.

Issue 28 needs the book updates per chunk, and NumPy cannot run them: each
diff applies to the book the one before left. This measures the candidate
before it goes into the dataflow. The depth diffs of a recording (parsed by
ticklet, the REST snapshot first) are applied

- ``python``: by the collector's book, :func:`operators.orderbook._apply` on
  each side (a dict of quantities and a sorted list of prices, the levels
  beyond ``max_depth`` trimmed: :func:`operators.orderbook._trim`), the
  sequence checks left out;
- ``numba_arrays``: by one compiled call for all the diffs, on each side's
  prices and quantities in sorted NumPy arrays (binary search; a new price
  shifts the worse ones; each side's best at the end, the asks' prices
  negated, so that the changes near the touch move few levels), the same
  trim, from the diffs' levels flattened
  into arrays (their flattening, from the parsed events, timed apart:
  ``flatten_s``; the chunk path's scanner would give them).

Both must leave the same book, and the same best bid and ask after every
diff (``same``). Figures: seconds (best of ``--repeat``) and µs per diff.

Usage::

    python benchmarks/book_options.py [PATH] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402
import numpy as np  # noqa: E402

from core.events import BookSnapshot, DepthUpdate, RawChunk  # noqa: E402
from operators.orderbook import OrderBookConfig, OrderBookState, _apply, _trim  # noqa: E402
from sources.binance import ParseState, parse_chunk  # noqa: E402
from sources.files import group_streams, read_stream  # noqa: E402

DATA = Path(os.environ.get("TICKLET_DATA", ROOT.parent / "shared" / "data")) / "binance-ws"
DEFAULT = DATA / "usdm" / "btcusdt_20230404.dat.gz"


@numba.njit(cache=True)
def _side(px: np.ndarray, q: np.ndarray, n: int, lp: np.ndarray, lq: np.ndarray, a: int, b: int) -> int:
    """Levels ``a:b`` of ``lp``/``lq`` applied to one side (``n`` levels, prices ascending); its new size."""
    for k in range(a, b):
        p, v = lp[k], lq[k]
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if px[mid] < p:
                lo = mid + 1
            else:
                hi = mid
        found = lo < n and px[lo] == p
        if v != 0.0:
            if found:
                q[lo] = v
            else:
                for j in range(n, lo, -1):
                    px[j] = px[j - 1]
                    q[j] = q[j - 1]
                px[lo] = p
                q[lo] = v
                n += 1
        elif found:
            for j in range(lo, n - 1):
                px[j] = px[j + 1]
                q[j] = q[j + 1]
            n -= 1
    return n


@numba.njit(cache=True)
def _apply_all(bpx: np.ndarray, bq: np.ndarray, nb: int, apx: np.ndarray, aq: np.ndarray, na: int,
               lp: np.ndarray, lq: np.ndarray, starts: np.ndarray, cap: int, best: np.ndarray) -> tuple[int, int]:
    """Every diff (bids ``starts[3i]:starts[3i+1]``, asks ``..:starts[3i+2]``); the best bid and ask after each."""
    for i in range(len(starts) // 3):
        nb = _side(bpx, bq, nb, lp, lq, starts[3 * i], starts[3 * i + 1])
        na = _side(apx, aq, na, lp, lq, starts[3 * i + 1], starts[3 * i + 2])
        if nb > cap:  # the farthest levels are the front of each side
            d = nb - cap
            for j in range(cap):
                bpx[j] = bpx[j + d]
                bq[j] = bq[j + d]
            nb = cap
        if na > cap:
            d = na - cap
            for j in range(cap):
                apx[j] = apx[j + d]
                aq[j] = aq[j + d]
            na = cap
        best[i, 0] = bpx[nb - 1] if nb else 0.0
        best[i, 1] = -apx[na - 1] if na else 0.0
    return nb, na


def _events(path: Path) -> tuple[BookSnapshot, list[DepthUpdate]]:
    (spec,) = group_streams([path])
    lines = [ln for block in read_stream(spec) for ln in block]
    by_key, _, _ = parse_chunk(RawChunk("ws", spec.market, spec.symbol, lines), ParseState())
    (events,) = by_key.values()
    snap = next(e for e in events if type(e) is BookSnapshot)
    after = events.index(snap)
    return snap, [e for e in events[after:] if type(e) is DepthUpdate and e.last_id > snap.last_update_id]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    snap, diffs = _events(args.path)
    cap = OrderBookConfig().max_depth

    def python() -> tuple[OrderBookState, list]:
        st = OrderBookState(OrderBookConfig())
        st.bid_qty = {lv.price: lv.qty for lv in snap.bids if lv.qty > 0}
        st.ask_qty = {lv.price: lv.qty for lv in snap.asks if lv.qty > 0}
        st.bid_px, st.ask_px = sorted(st.bid_qty), sorted(st.ask_qty)
        _trim(st)
        best = []
        for d in diffs:
            _apply(st.bid_qty, st.bid_px, d.bids)
            _apply(st.ask_qty, st.ask_px, d.asks)
            _trim(st)
            best.append((st.bid_px[-1] if st.bid_px else 0.0, st.ask_px[0] if st.ask_px else 0.0))
        return st, best

    def flatten() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lp = [lv.price * sign for d in diffs for side, sign in ((d.bids, 1.0), (d.asks, -1.0)) for lv in side]
        lq = [lv.qty for d in diffs for side in (d.bids, d.asks) for lv in side]
        sizes = [n for d in diffs for n in (len(d.bids), len(d.asks))]
        ends = np.cumsum([0, *sizes])
        starts = np.empty(3 * len(diffs), np.int64)
        starts[0::3], starts[1::3], starts[2::3] = ends[0:-1:2], ends[1::2], ends[2::2]
        return np.array(lp), np.array(lq), starts

    flat = flatten()
    room = cap + max(len(d.bids) + len(d.asks) for d in diffs) + 1

    def arrays() -> tuple[np.ndarray, ...]:
        bp = sorted(lv.price for lv in snap.bids if lv.qty > 0)[-cap:]
        ap_ = sorted(-lv.price for lv in snap.asks if lv.qty > 0)[-cap:]
        bqty = {lv.price: lv.qty for lv in snap.bids}
        aqty = {-lv.price: lv.qty for lv in snap.asks}
        bpx, bq, apx, aq = np.zeros(room), np.zeros(room), np.zeros(room), np.zeros(room)
        bpx[:len(bp)], bq[:len(bp)] = bp, [bqty[p] for p in bp]
        apx[:len(ap_)], aq[:len(ap_)] = ap_, [aqty[p] for p in ap_]
        best = np.zeros((len(diffs), 2))
        nb, na = _apply_all(bpx, bq, len(bp), apx, aq, len(ap_), *flat, cap, best)
        return bpx[:nb], bq[:nb], -apx[:na][::-1], aq[:na][::-1], best

    arrays()  # compiled, or loaded from numba's cache: not timed
    times = {"python": float("inf"), "numba_arrays": float("inf"), "flatten": float("inf")}
    for _ in range(args.repeat):
        for name, fn in (("python", python), ("numba_arrays", arrays), ("flatten", flatten)):
            t0 = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - t0)
    st, best = python()
    bpx, bq, apx, aq, nbest = arrays()
    same = (bpx.tolist() == st.bid_px and apx.tolist() == st.ask_px
            and bq.tolist() == [st.bid_qty[p] for p in st.bid_px] and aq.tolist() == [st.ask_qty[p] for p in st.ask_px]
            and [tuple(r) for r in nbest.tolist()] == best)
    n = len(diffs)
    levels = int(flat[2][-1]) if n else 0
    print(json.dumps({"benchmark": "book_options", "python": platform.python_version(), "cpus": os.cpu_count(),
                      "repeat": args.repeat, "file": str(args.path), "diffs": n, "levels": levels,
                      "max_depth": cap, "same": same,
                      **{f"{k}_s": round(v, 4) for k, v in times.items()},
                      **{f"{k}_us_per_diff": round(v / n * 1e6, 3) for k, v in times.items()}}, indent=1))


if __name__ == "__main__":
    main()

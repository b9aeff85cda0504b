"""hftbacktest's side of the maker-fill comparison: a fixed quoting strategy run by hftbacktest itself.

Run by hftbacktest's own interpreter (a virtualenv of its own: hftbacktest
pins NumPy below ticklet's), never imported by ticklet::

    <venv>/bin/python harness/hftbacktest_ref.py OUT.json REC.gz [REC.gz ...] \
        [--latency-ms 10] [--lot 0.001] [--tick 0.1] [--queue risk_averse]

The recordings are ticklet's Binance USD-M captures (``<receive µs or ns>
<combined-stream JSON>`` per line, a REST snapshot line among them). They are
converted with hftbacktest's own ``binancefutures.convert`` (the receive
time written in ns first, as it expects), the diffs older than the REST
snapshot dropped (Binance's rule: the snapshot replaces them), and the
snapshot given as the initial book.

The strategy: at every whole second of the recording's receive clock, cancel
the resting orders, then quote one lot, post-only (GTX), at the best bid
and at the best ask of the local book. A constant order latency (entry
and response), no fees, the queue model asked for. Out: every fill (order
id, side, price, quantity, the exchange and local times at which it was
seen) and the final position, as JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile

import numpy as np
from hftbacktest import (
    BUY_EVENT,
    DEPTH_SNAPSHOT_EVENT,
    GTX,
    LIMIT,
    SELL_EVENT,
    BacktestAsset,
    HashMapMarketDepthBacktest,
)
from hftbacktest.data.utils import binancefutures
from hftbacktest.order import FILLED
from hftbacktest.types import event_dtype
from numba import njit
from numba.typed import List

S = 1_000_000_000


def _lines(paths: list[str]) -> list[bytes]:
    out: list[bytes] = []
    for p in paths:
        with gzip.open(p, "rb") as f:
            out.extend(ln for ln in f.read().split(b"\n") if ln.strip())
    return out


def _ns(line: bytes) -> tuple[int, bytes]:
    head, rest = line.split(b" ", 1)
    t = int(head)
    return (t * 1000 if len(head) == 16 else t), rest


def prepare(paths: list[str], work: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(events, initial snapshot, local clock shift) of the recordings, in hftbacktest's event format.

    The shift is what hftbacktest's conversion adds to every local time
    (``correct_local_timestamp``: the most negative feed latency, so that
    nothing is received before the exchange stamped it), in ns.
    """
    snap = None
    rows = []
    shift = 0
    for ln in _lines(paths):
        ts, msg = _ns(ln)
        if msg.startswith(b"{\"lastUpdateId\""):
            if snap is None:
                snap = (ts, json.loads(msg))
            continue
        if snap is None:
            continue  # before the book exists
        data = json.loads(msg).get("data", {})
        if data.get("e") == "depthUpdate" and data["u"] < snap[1]["lastUpdateId"]:
            continue  # older than the snapshot: Binance drops it
        if data.get("e") in ("depthUpdate", "trade") and data.get("X", "MARKET") == "MARKET":
            shift = max(shift, int(data["T"]) * 1_000_000 - ts)
        rows.append(b"%d %s" % (ts, msg))
    if snap is None:
        raise SystemExit("no REST snapshot in the recordings")
    src = os.path.join(work, "ns.gz")
    with gzip.open(src, "wb") as f:
        f.write(b"\n".join(rows) + b"\n")
    events = binancefutures.convert(src, combined_stream=True, buffer_size=10_000_000)
    ts, body = snap
    exch = int(body["T"]) * 1_000_000
    book = [(DEPTH_SNAPSHOT_EVENT | BUY_EVENT, exch, ts, float(p), float(q), 0, 0, 0) for p, q in body["bids"]]
    book += [(DEPTH_SNAPSHOT_EVENT | SELL_EVENT, exch, ts, float(p), float(q), 0, 0, 0) for p, q in body["asks"]]
    return events, np.array(book, dtype=event_dtype), shift


@njit
def quote_every_second(hbt, lot, first, fills):
    """The fixed strategy; ``fills`` gets (order id, side, price, qty, exch ts, local ts) rows."""
    oid = 1
    if hbt.elapse(1) != 0 or hbt.elapse(first - hbt.current_timestamp) != 0:  # the clock starts at the data's
        return
    while True:
        orders = hbt.orders(0)
        values = orders.values()
        while values.has_next():
            o = values.get()
            if o.status == FILLED:
                fills.append((float(o.order_id), float(o.side), o.exec_price, o.exec_qty,
                              float(o.exch_timestamp), float(o.local_timestamp)))
        hbt.clear_inactive_orders(0)
        values = orders.values()
        while values.has_next():
            o = values.get()
            if o.cancellable:
                hbt.cancel(0, o.order_id, False)
        depth = hbt.depth(0)
        bid, ask = depth.best_bid, depth.best_ask
        if np.isfinite(bid) and np.isfinite(ask) and bid < ask:
            hbt.submit_buy_order(0, oid, bid, lot, GTX, LIMIT, False)
            hbt.submit_sell_order(0, oid + 1, ask, lot, GTX, LIMIT, False)
            oid += 2
        if hbt.elapse(S) != 0:
            break


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("recordings", nargs="+")
    ap.add_argument("--latency-ms", type=float, default=10.0)
    ap.add_argument("--lot", type=float, default=0.001)
    ap.add_argument("--tick", type=float, default=0.1)
    ap.add_argument("--queue", default="risk_averse", choices=["risk_averse", "power2", "power3", "log"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        events, snapshot, shift = prepare(args.recordings, work)
        lat = int(args.latency_ms * 1_000_000)
        asset = (BacktestAsset().data(events).initial_snapshot(snapshot).linear_asset(1.0)
                 .constant_order_latency(lat, lat).tick_size(args.tick).lot_size(args.lot)
                 .trading_value_fee_model(0.0, 0.0).no_partial_fill_exchange())
        asset = {"risk_averse": lambda a: a.risk_adverse_queue_model(),
                 "power2": lambda a: a.power_prob_queue_model(2.0),
                 "power3": lambda a: a.power_prob_queue_model(3.0),
                 "log": lambda a: a.log_prob_queue_model()}[args.queue](asset)
        hbt = HashMapMarketDepthBacktest([asset])
        # decisions at the whole seconds of the recording's own receive clock (hftbacktest's local clock less
        # the shift its conversion added), as ticklet's bars end
        first = ((int(events[0]["local_ts"]) - shift) // S + 1) * S + shift
        fills = List()
        fills.append((0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
        fills.pop()
        quote_every_second(hbt, args.lot, first, fills)
        position = float(hbt.position(0))
        hbt.close()
    out: dict = {"fills": [{"order_id": int(f[0]), "side": int(f[1]), "price": f[2], "qty": f[3],
                      "exch_ts": int(f[4]), "local_ts": int(f[5])} for f in fills],
           "position": position, "first_decision_ns": first, "events": int(len(events)), "local_shift_ns": shift}
    with open(args.out, "w") as f:
        json.dump(out, f)
    sys.stdout.write(f"{len(out['fills'])} fills, position {position}\n")


if __name__ == "__main__":
    main()

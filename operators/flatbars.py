"""The bars and their book over a run of events in compiled code: the chunk path's bars (issue 28).

:func:`operators.depth.step` takes one event at a time, in Python. On the
chunk path a batch's events also come as arrays
(:class:`~core.events.EventColumns`), and most of them change only the open
bar's accumulators and the book: a best bid/ask or a trade inside the open
bar, a depth diff that follows the book's last one. :func:`advance` runs
over such events in one call of a kernel compiled with numba, and stops at
the first event that may do anything else (close a bar, be late, be a
diff the book must check in Python, an event without columns), which the
caller steps as before. The state after the run is the one stepping each
event gives, to the bit: the same fields, set by the same float operations
in the same order (``tests/operators/test_flatbars.py`` checks it over the
recordings, event by event).

A diff the kernel takes is one that :mod:`operators.orderbook` would apply
straight away: the book is synced, the diff is newer than it and follows
it (``pu`` is the book's update id, or ``U`` the next one on spot), and the
book's rows have room for its levels. A diff that leaves the book crossed
is applied and ends the run; the caller hands it on to the book's rules
(:func:`operators.depth.run`).
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

import numba
import numpy as np

from core.events import EventColumns
from operators.bars import BarState, ofi_term
from operators.flatbook import _NO_SEEN, _NO_WATCH, _accumulate, _apply, _events, _takes
from operators.orderbook import OrderBookState

__all__ = ["CROSSED", "BarsAndBook", "advance"]

#: the modules whose code this one's kernels compile in, with their digests (the first 16 hex digits of their files'
#: SHA-256): numba caches a kernel under its own file's digest only, so a change there must change this too
#: (tests/test_kernel_caches.py)
KERNEL_SOURCES = {"operators.bars": "066498beca7ce91e", "operators.flatbook": "787b9eec35e6bd52"}

_ofi_term = numba.njit(cache=True, nogil=True)(ofi_term)  # the reference's own function, compiled

#: :func:`advance`'s code for a run that ended with a diff that left the book crossed (applied, and counted).
CROSSED = 1

# the state's integers and floats, in the kernel's arrays
_I_START, _I_MAX_TS, _I_TRADES, _I_EVENTS, _I_QUOTES, _I_LAST_ID, _I_BOOK_TS, _I_UPDATES, _I_LIVE, _I_SEEN = range(10)
(_F_OPEN, _F_HIGH, _F_LOW, _F_CLOSE, _F_VOLUME, _F_QUOTE_VOLUME, _F_BUY, _F_SELL, _F_OFI, _F_DEPTH_SUM, _F_LAST,
 _F_BID, _F_BID_QTY, _F_ASK, _F_ASK_QTY, _F_BOOK_BID, _F_BOOK_ASK) = range(17)


class BarsAndBook(Protocol):
    """What :func:`advance` reads and sets of a compiled :class:`operators.depth.DepthState`."""

    bars: BarState
    book: OrderBookState
    depth: Any  # its DepthConfig: levels
    flat: Optional[np.ndarray]
    counts: Optional[np.ndarray]
    live: bool
    seen: bool
    updates: int


def advance(st: BarsAndBook, cols: EventColumns, i: int, synced: bool) -> tuple[int, int]:
    """Step the events of ``cols`` from row ``i`` on that change only accumulators (see the module docstring).

    ``st`` is a compiled :class:`operators.depth.DepthState`, updated in
    place; ``synced``: whether its book is synced. Returns ``(j, code)``:
    the events ``i`` to ``j - 1`` were stepped, each without an output;
    ``code`` is :data:`CROSSED` if the last of them is a diff that left the
    book crossed (its book rules still to run), else 0.
    """
    b, book = st.bars, st.book
    f, flat, counts = book.flat, st.flat, st.counts
    assert f is not None and flat is not None and counts is not None
    ints = np.array([b.start, b.max_ts, b.trades, b.n_events, b.n_quotes, book.last_id,
                     -1 if book.ts_event is None else book.ts_event, st.updates, st.live, st.seen], dtype=np.int64)
    floats = np.array([b.open, b.high, b.low, b.close, b.volume, b.quote_volume, b.buy_volume, b.sell_volume, b.ofi,
                       b.depth_sum, b.last_trade, b.bid, b.bid_qty, b.ask, b.ask_qty, f.bid, f.ask])
    c = cols
    j, code = _advance(c.kind, c.ts_recv, c.ts_event, c.ids, c.first_ids, c.prev_ids, c.values, c.levels, c.lv_px,
                       c.lv_qty, i, b.interval, b.lateness, synced, ints, floats, f.keys, f.qty, f.ix, f.max_depth,
                       st.depth.levels, flat, counts, _NO_WATCH, _NO_SEEN)
    if j == i:
        return j, code
    b.start, b.max_ts, b.trades, b.n_events, b.n_quotes, last_id, book_ts, st.updates, live, seen = ints.tolist()
    (b.open, b.high, b.low, b.close, b.volume, b.quote_volume, b.buy_volume, b.sell_volume, b.ofi, b.depth_sum,
     b.last_trade, b.bid, b.bid_qty, b.ask, b.ask_qty, f.bid, f.ask) = floats.tolist()
    book.last_id = last_id
    if book_ts >= 0 or book.ts_event is not None:
        book.ts_event = book_ts
    st.live, st.seen = bool(live), bool(seen)
    return j, code


@numba.njit(cache=True, nogil=True)
def _advance(kind: np.ndarray, ts_recv: np.ndarray, ts_event: np.ndarray, ids: np.ndarray, first_ids: np.ndarray,
             prev_ids: np.ndarray, values: np.ndarray, levels: np.ndarray, lv_px: np.ndarray, lv_qty: np.ndarray,
             i: int, interval: int, lateness: int, synced: bool, ints: np.ndarray, floats: np.ndarray,
             keys: np.ndarray, qty: np.ndarray, ix: np.ndarray, max_depth: int, n: int, flat: np.ndarray,
             counts: np.ndarray, watch: np.ndarray,
             notes: np.ndarray) -> tuple[int, int]:  # pragma: no cover - compiled
    start, max_ts, trades, n_events, n_quotes = ints[0], ints[1], ints[2], ints[3], ints[4]
    last_id, book_ts, updates, live, seen = ints[5], ints[6], ints[7], ints[8], ints[9]
    (o, h, lo_, c, volume, quote_volume, buy, sell, ofi, depth_sum, last_trade, bid, bid_qty, ask, ask_qty, fbid,
     fask) = (floats[0], floats[1], floats[2], floats[3], floats[4], floats[5], floats[6], floats[7], floats[8],
              floats[9], floats[10], floats[11], floats[12], floats[13], floats[14], floats[15], floats[16])
    end = start + interval
    cap = keys.shape[1]
    code = 0
    j = i
    rows = len(kind)
    while j < rows:
        k = kind[j]
        if k == 0:
            break
        ts = ts_recv[j]
        if ts < max_ts - lateness or ts >= end:  # late, or it closes the bar: operators.bars' step
            break
        if k == 3:  # a diff the book applies at once (operators.orderbook._on_diff), with room for it
            if not synced or not _takes(ids, first_ids, prev_ids, levels, j, last_id, ix, cap):
                break
            a, m, z = levels[j, 0], levels[j, 1], levels[j, 2]
        if ts > max_ts:
            max_ts = ts
        n_events += 1
        if k == 2:  # a trade: operators.bars.step
            p, q = values[j, 0], values[j, 1]
            if trades == 0:
                o = h = lo_ = p
            elif p > h:
                h = p
            elif p < lo_:
                lo_ = p
            c = p
            last_trade = p
            trades += 1
            volume += q
            quote_volume += p * q
            if values[j, 2] != 0.0:
                sell += q
            else:
                buy += q
        elif k == 1:  # a best bid/ask: operators.bars.step
            b, bq, a_, aq = values[j, 0], values[j, 1], values[j, 2], values[j, 3]
            if ask > 0.0:
                ofi += _ofi_term(b, bq, a_, aq, bid, bid_qty, ask, ask_qty)
            bid, bid_qty, ask, ask_qty = b, bq, a_, aq
            depth_sum += (bq + aq) * 0.5
            n_quotes += 1
        else:  # a diff: operators.depth._flat_diff
            seen = 1
            _events(keys, qty, ix, lv_px, lv_qty, a, m, z, n, counts[2:])
            crossed, fbid, fask, _ = _apply(keys, qty, ix, lv_px, lv_qty, a, m, z, max_depth, watch, notes)
            last_id = ids[j]
            book_ts = ts_event[j]
            if crossed == 1:
                code = 1
                j += 1
                break
            _accumulate(keys, qty, ix, n, flat, counts, live != 0)
            if live != 0:
                updates += 1
            live = 1
        j += 1
    ints[0], ints[1], ints[2], ints[3], ints[4] = start, max_ts, trades, n_events, n_quotes
    ints[5], ints[6], ints[7], ints[8], ints[9] = last_id, book_ts, updates, live, seen
    floats[0], floats[1], floats[2], floats[3], floats[4], floats[5] = o, h, lo_, c, volume, quote_volume
    floats[6], floats[7], floats[8], floats[9], floats[10] = buy, sell, ofi, depth_sum, last_trade
    floats[11], floats[12], floats[13], floats[14], floats[15], floats[16] = bid, bid_qty, ask, ask_qty, fbid, fask
    return j, code

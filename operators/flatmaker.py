"""The maker books over a run of events in compiled code: the chunk path's resting orders (issues 27 and 28).

:func:`operators.maker.step` takes one event at a time, in Python. On the
chunk path a batch's events also come as arrays
(:class:`~core.events.EventColumns`), and most of them change nothing but
the book, the clocks, the queue ahead of the resting orders and their
fills: a best bid/ask; a trade, which moves the queue at its price and
fills the orders it reaches; a depth diff that follows the book's last one
and fills nothing. :func:`advance` runs over such events in one call of a
kernel compiled with numba, and stops at the first event that may do
anything else, which the caller steps in Python: a decision due (the
baseline's, or a signal's), an order that reaches the exchange or a cancel
that settles (a wake), a trade whose fills would be more than may wait for
their moves, a diff the book's rules must check, an event without columns;
and after an event that lets a fill waiting go out. The state after the
run is the one stepping each event gives, to the bit: the same fields, set
by the same float operations in the same order; the fills it found are
made by the caller, in order, as the Python step makes them
(``tests/operators/test_flatmaker.py`` checks it over the recordings, with
each queue model).

A diff the kernel takes is one :mod:`operators.orderbook` applies straight
away (``operators.flatbook._takes``). When, applied, it leaves the book
crossed or fills an order, the run ends with it applied (:data:`APPLIED`):
the book's rules and the fills are the caller's
(:func:`operators.maker.step_batch`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import numba
import numpy as np

from core.events import EventColumns
from operators.flatbook import _NO_WATCH, _apply, _takes

__all__ = ["APPLIED", "Quoting", "Run", "advance"]

#: :func:`advance`'s code for a run that ended with a diff applied (its levels only) that left the book crossed or
#: fills an order: the book's rules and the orders' part of it are the caller's.
APPLIED = 1

_NEVER = 2**63 - 1
_QUEUES = {"risk_averse": 0, "power": 1, "log": 2}

# The kernel's arrays of the state. ints: clock, depth_ts, trade_ts, feed, ahead, wake, wake_settled, next_quote,
# the book's last_id and ts_event, whether the book is synced or loaded, synced, the baseline, settle_at, the last
# mid's time, whether there is one, the queue model; out: the notes of the diff applied, whether the book was ready
# before it. floats: the best bid and ask, lot, last_mid, the last mid recorded, power_n, whether it is an integer,
# the highest live bid, the lowest live ask.


class Quoting(Protocol):
    """What :func:`advance` reads and sets of a compiled :class:`operators.maker.QuoterState`."""

    config: Any  # its MakerConfig
    book: Any  # its OrderBookState, compiled
    clock: int
    depth_ts: int
    trade_ts: int
    feed: int
    ahead: int
    wake: int
    wake_settled: int
    next_quote: int
    live: list  # (book, order) of the live orders
    hi_b: float
    lo_a: float
    mid_ts: list
    mid_px: list
    last_mid: float


class Run(NamedTuple):
    """What :func:`advance` did: the events ``i`` to ``j - 1`` stepped, and more (see there)."""

    j: int
    code: int  # APPLIED: event j's levels applied too
    noted: int  # with APPLIED: the notes of event j's levels at the watched prices (FlatSides.notes)
    ready: bool  # with APPLIED: whether the book had both sides before event j
    mid_ts: list  # the mid's changes to record (operators.maker._keep_mid), in order
    mid_px: list
    fills: list  # (r, qty, k): the fills to make (operators.maker._fill), in order: st.live[r] by event k


def advance(st: Quoting, cols: EventColumns, i: int, limit: int, settle_at: int, room: int, horizon: int,
            status_ok: bool, synced: bool) -> Run:
    """Step the events of ``cols`` from row ``i`` on that change only the book, clocks and queues (module docstring).

    ``st`` is updated in place, but for the mid's changes and the fills,
    which it returns for the caller to make (as ``operators.maker._note_mid``
    and ``operators.maker._fill`` would); its live orders (``st.live``)
    must be current (``operators.maker._watch``). ``limit``: the receive
    time of the next decision (a signal): the run stops at the first event
    received at or after it. The fills wait ``horizon`` for their moves:
    ``settle_at``, the time the first waiting goes out (``2**63 - 1``:
    none waiting); the run stops after the event that takes the depth stream
    past it, and before one whose fills would be more than ``room`` more.
    ``status_ok``, ``synced``: whether the book is synced or loaded, synced.
    """
    c = st.config
    book = st.book
    f = book.flat
    live = st.live
    orders = [o for _, o in live]
    o_f = np.array([(o.side, o.price, o.front, o.traded, o.qty) for o in orders], np.float64).reshape(-1, 5)
    o_i = np.array([(o.arrival, _NEVER if o.cancel_at is None else o.cancel_at) for o in orders],
                   np.int64).reshape(-1, 2)
    mid_ts, mid_px = st.mid_ts, st.mid_px
    ints = np.array([st.clock, st.depth_ts, st.trade_ts, st.feed, st.ahead, st.wake, st.wake_settled, st.next_quote,
                     book.last_id, -1 if book.ts_event is None else book.ts_event, status_ok, synced, c.baseline,
                     settle_at, mid_ts[-1] if mid_ts else -1, 1 if mid_px else 0, _QUEUES[c.queue], 0, 0],
                     dtype=np.int64)
    floats = np.array([f.bid, f.ask, c.lot, st.last_mid, mid_px[-1] if mid_px else 0.0, c.power_n,
                       1.0 if float(c.power_n).is_integer() else 0.0, st.hi_b, st.lo_a])
    rows = len(cols) - i
    out_ts = np.empty(rows, np.int64)
    out_px = np.empty(rows)
    most = 8 * len(orders) + 8  # fills a run makes at most
    fill_r, fill_j, fill_q = np.empty(most, np.int64), np.empty(most, np.int64), np.empty(most)
    watch = _NO_WATCH if f.watch is None else f.watch
    k = cols
    j, code, m, nf = _advance(k.kind, k.ts_recv, k.ts_event, k.ids, k.first_ids, k.prev_ids, k.values, k.levels,
                              k.lv_px, k.lv_qty, i, limit, c.interval_ms * 1_000_000, ints, floats, f.keys, f.qty,
                              f.ix, f.max_depth, watch, f.notes, o_f, o_i, out_ts, out_px, room, horizon, fill_r,
                              fill_j, fill_q)
    if j == i and code == 0:
        return Run(j, 0, 0, False, [], [], [])
    (st.clock, st.depth_ts, st.trade_ts, st.feed, st.ahead, _, _, _, last_id, book_ts, _, _, _, _, _, _, _, noted,
     ready) = ints.tolist()
    book.last_id = last_id
    if book_ts >= 0 or book.ts_event is not None:
        book.ts_event = book_ts
    f.bid, f.ask, _, st.last_mid = floats[:4].tolist()
    for o, (fr, tr) in zip(orders, o_f[:, 2:4].tolist(), strict=True):
        o.front, o.traded = fr, tr
    fills = list(zip(fill_r[:nf].tolist(), fill_q[:nf].tolist(), fill_j[:nf].tolist(), strict=True)) if nf else []
    return Run(j, code, noted, bool(ready), out_ts[:m].tolist(), out_px[:m].tolist(), fills)


@numba.njit(cache=True, nogil=True)
def _fmin(a: float, b: float) -> float:  # pragma: no cover - compiled
    """``min`` that ignores a NaN (``operators.maker._fmin``)."""
    if a != a:
        return b
    if b != b:
        return a
    return a if a <= b else b


@numba.njit(cache=True, nogil=True)
def _f(queue: int, power: float, integral: bool, x: float) -> float:  # pragma: no cover - compiled
    if queue == 1:
        if x < 0.0 and not integral:
            return np.nan
        return x**power
    if x > -1.0:
        return math.log1p(x)
    return -np.inf if x == -1.0 else np.nan


@numba.njit(cache=True, nogil=True)
def _requeue(queue: int, power: float, integral: bool, front: float, traded: float, prev_qty: float,
             new_qty: float) -> tuple[float, float]:  # pragma: no cover - compiled
    """``operators.maker._requeue``: the new front and traded."""
    if queue == 0:
        return _fmin(front, new_qty), traded
    chg = prev_qty - new_qty - traded
    if chg < 0.0:
        return _fmin(front, new_qty), 0.0
    back = prev_qty - front
    fb, ff = _f(queue, power, integral, back), _f(queue, power, integral, front)
    den = fb + ff
    p = fb / den if den != 0.0 else (np.nan if fb == 0.0 else np.inf)  # IEEE's 0/0 and x/0
    if math.isinf(p):
        p = 1.0
    return _fmin(front - (1.0 - p) * chg + _fmin(back - p * chg, 0.0), new_qty), 0.0


@numba.njit(cache=True, nogil=True)
def _advance(kind: np.ndarray, ts_recv: np.ndarray, ts_event: np.ndarray, ids: np.ndarray, first_ids: np.ndarray,
             prev_ids: np.ndarray, values: np.ndarray, levels: np.ndarray, lv_px: np.ndarray, lv_qty: np.ndarray,
             i: int, limit: int, interval: int, ints: np.ndarray, floats: np.ndarray, keys: np.ndarray,
             qty: np.ndarray, ix: np.ndarray, max_depth: int, watch: np.ndarray, notes: np.ndarray, o_f: np.ndarray,
             o_i: np.ndarray, out_ts: np.ndarray, out_px: np.ndarray, room: int, horizon: int, fill_r: np.ndarray,
             fill_j: np.ndarray, fill_q: np.ndarray) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    clock, depth_ts, trade_ts, feed, ahead = ints[0], ints[1], ints[2], ints[3], ints[4]
    wake, wake_settled, next_quote, last_id, book_ts = ints[5], ints[6], ints[7], ints[8], ints[9]
    status_ok, synced, baseline, settle_at, mid_ts = ints[10] != 0, ints[11] != 0, ints[12] != 0, ints[13], ints[14]
    has_mid, queue = ints[15] != 0, ints[16]
    fbid, fask, lot, last_mid, mid_px = floats[0], floats[1], floats[2], floats[3], floats[4]
    power, integral, hi_b, lo_a = floats[5], floats[6] != 0.0, floats[7], floats[8]
    n_orders = o_f.shape[0]
    room = min(room, fill_r.shape[0])
    n_fill = 0
    code = 0
    noted = 0
    m = 0
    j = i
    rows = len(kind)
    while j < rows:
        k = kind[j]
        if k == 0:
            break
        ts = ts_recv[j]
        if ts >= limit:  # a decision comes first
            break
        ready = status_ok and fbid == fbid and fask == fask
        if k == 1:  # a best bid/ask: its time only (operators.maker.step_batch)
            if next_quote < 0 and baseline and ready:
                break
            if ts > clock:
                clock = ts
            j += 1
            continue
        if ready and baseline and (next_quote < 0 or next_quote <= ts):  # the baseline decides first
            break
        te = ts_event[j]
        if te < 0:
            break
        if k == 2:  # a trade
            new_trade = te if te > trade_ts else trade_ts
            if ready:
                settled = depth_ts if depth_ts < new_trade else new_trade
                if te > wake or settled > wake_settled:
                    break
                price, q, sale = values[j, 0], values[j, 1], values[j, 2] != 0.0
                if (sale and price <= hi_b) or (not sale and price >= lo_a):
                    nf = 0  # its fills: through an order, or the queue ahead passed (operators.maker._trade_order)
                    for r in range(n_orders):
                        side, p = o_f[r, 0], o_f[r, 1]
                        if (((side > 0.0 and p >= price) if sale else (side < 0.0 and p <= price))
                                and o_i[r, 0] < te <= o_i[r, 1]
                                and (p != price or -(o_f[r, 2] - q) / lot > 0.5)):
                            nf += 1
                    if nf and n_fill + nf > room:  # more than may wait (or than the arrays hold): step() takes it
                        break
                    for r in range(n_orders):
                        side, p = o_f[r, 0], o_f[r, 1]
                        if not (((side > 0.0 and p >= price) if sale else (side < 0.0 and p <= price))
                                and o_i[r, 0] < te <= o_i[r, 1]):
                            continue
                        if p != price:  # traded through: all of it
                            fq = o_f[r, 4]
                        else:
                            o_f[r, 2] -= q
                            o_f[r, 3] += q
                            lots = np.round(-o_f[r, 2] / lot)  # round half to even, as Python's round
                            if lots <= 0.0:
                                continue
                            o_f[r, 2] = 0.0
                            fq = lots * lot
                        fill_r[n_fill], fill_j[n_fill], fill_q[n_fill] = r, j, fq
                        n_fill += 1
                        left = o_f[r, 4]  # operators.maker._fill: at most what is left; gone when under half a lot
                        left -= left if left < fq else fq
                        o_f[r, 4] = left
                        if np.round(left / lot) <= 0.0:
                            o_f[r, 0] = 0.0  # filled: it rests no more
                    if nf and settle_at == _NEVER:  # the first to wait
                        settle_at = te + horizon
            trade_ts = new_trade
            if ts > clock:
                clock = ts
            j += 1
            if depth_ts > settle_at:  # a fill waiting goes out
                break
            continue
        # a diff
        if not synced or not _takes(ids, first_ids, prev_ids, levels, j, last_id, ix, keys.shape[1]):
            break
        a, mm, z = levels[j, 0], levels[j, 1], levels[j, 2]
        if z - a > notes.shape[1]:  # no room for its notes: operators.flatbook's apply makes some
            break
        new_depth = te if te > depth_ts else depth_ts
        if ready:
            settled = new_depth if new_depth < trade_ts else trade_ts
            if te > wake or settled > wake_settled:
                break
        if ts > clock:
            clock = ts
        depth_ts = new_depth
        feed = ts - te
        if -feed > ahead:
            ahead = -feed
        crossed, fbid, fask, noted = _apply(keys, qty, ix, lv_px, lv_qty, a, mm, z, max_depth, watch, notes)
        if crossed == 1:
            code = 1
            ints[18] = ready
            break
        if ready and n_orders:
            best_b = fbid if fbid == fbid else -np.inf
            best_a = fask if fask == fask else np.inf
            any_b, any_a = mm > a, z > mm
            fills = False
            for r in range(n_orders):
                if o_f[r, 0] != 0.0 and o_i[r, 0] < te <= o_i[r, 1]:
                    p = o_f[r, 1]
                    if (any_a and p >= best_a) if o_f[r, 0] > 0.0 else (any_b and p <= best_b):
                        fills = True
                        break
            if fills:
                code = 1
                ints[18] = ready
                break
            for r in range(n_orders):
                if o_f[r, 0] == 0.0 or not o_i[r, 0] < te <= o_i[r, 1]:
                    continue
                sd = 0.0 if o_f[r, 0] > 0.0 else 1.0
                p = o_f[r, 1]
                found = False
                before = after = 0.0
                for w in range(noted):  # the level's first quantity before, last after (FlatSides.noted)
                    if notes[0, w] == sd and notes[1, w] == p:
                        if not found:
                            before = notes[2, w]
                            found = True
                        after = notes[3, w]
                if found:
                    o_f[r, 2], o_f[r, 3] = _requeue(queue, power, integral, o_f[r, 2], o_f[r, 3], before, after)
        last_id = ids[j]
        book_ts = te
        # the mid after it (operators.maker._note_mid)
        mid = (fbid + fask) * 0.5 if status_ok and fbid == fbid and fask == fask else np.nan
        if mid == mid:
            last_mid = mid
        if not (has_mid and (mid_px == mid or (mid != mid and mid_px != mid_px))):
            t = te
            if has_mid and t < mid_ts:
                t = mid_ts
            out_ts[m] = t
            out_px[m] = mid
            m += 1
            mid_ts, mid_px, has_mid = t, mid, True
        j += 1
        if depth_ts > settle_at:  # a fill waiting goes out
            break
    ints[0], ints[1], ints[2], ints[3], ints[4] = clock, depth_ts, trade_ts, feed, ahead
    ints[8], ints[9], ints[17] = last_id, book_ts, noted
    floats[0], floats[1], floats[3] = fbid, fask, last_mid
    return j, code, m, n_fill

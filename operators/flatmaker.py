"""The maker books over a run of events in compiled code: the chunk path's resting orders (issues 27 and 28).

:func:`operators.maker.step` takes one event at a time, in Python. On the
chunk path a batch's events also come as arrays
(:class:`~core.events.EventColumns`), and most of them change nothing but
the book, the clocks, the resting orders and their fills: a best bid/ask;
a trade, which moves the queue at its price and fills the orders it
reaches; a depth diff that follows the book's last one and fills nothing;
and before either, the orders that reach the exchange by then go live (or
are refused: post-only) and those whose cancel has settled go
(:func:`operators.maker.on_time`). :func:`advance` runs over such events in
one call of a kernel compiled with numba, and stops at the first event that
may do anything else, which the caller steps in Python: a decision due (the
baseline's, or a signal's), a trade whose fills would be more than may wait
for their moves, a diff the book's rules must check, an event without
columns; and after an event that lets a fill waiting go out. The state
after the run is the one stepping each event gives, to the bit: the same
fields, set by the same float operations in the same order; the fills it
found are made by the caller, in order, as the Python step makes them
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
from itertools import accumulate, chain
from typing import Any, NamedTuple, Protocol

import numba
import numpy as np

from core.events import EventColumns
from operators.flatbook import _apply, _qty_at, _takes

__all__ = ["APPLIED", "Quoting", "Run", "advance"]

#: :func:`advance`'s code for a run that ended with a diff applied (its levels only) that left the book crossed or
#: fills an order: the book's rules and the orders' part of it are the caller's.
APPLIED = 1

_NEVER = 2**63 - 1
_QUEUES = {"risk_averse": 0, "power": 1, "log": 2}

# The kernel's arrays of the state. ints: clock, depth_ts, trade_ts, feed, ahead, wake, wake_settled, next_quote,
# the book's last_id and ts_event, whether the book is synced or loaded, synced, the baseline, settle_at, the last
# mid's time, whether there is one, the queue model, late (ns); out: the notes of the diff applied, whether the book
# was ready before it, whether orders woke. floats: the best bid and ask, lot, last_mid, the last mid recorded,
# power_n, whether it is an integer. The orders (every book's, book by book): o_f side (0: gone), price, front,
# traded, qty, queue, live; o_i arrival, cancel (2**63 - 1: none), fate (1 cancelled, 2 refused); per book, its
# wake and wake_settled, and its orders' rows (from, to).


class Quoting(Protocol):
    """What :func:`advance` reads and sets of a compiled :class:`operators.maker.QuoterState`."""

    config: Any  # its MakerConfig
    book: Any  # its OrderBookState, compiled
    books: dict  # (model, horizon) -> MakerState
    clock: int
    depth_ts: int
    trade_ts: int
    feed: int
    ahead: int
    wake: int
    wake_settled: int
    next_quote: int
    mid_ts: list
    mid_px: list
    last_mid: float


class Run(NamedTuple):
    """What :func:`advance` did: the events ``i`` to ``j - 1`` stepped, and more (see there)."""

    j: int
    code: int  # APPLIED: event j's levels applied too
    noted: int  # with APPLIED: the notes of event j's levels at the watched prices (FlatSides.notes)
    ready: bool  # with APPLIED: whether the book had both sides before event j
    woke: bool  # whether orders went live or went (the books' live orders changed)
    mid_ts: list  # the mid's changes to record (operators.maker._keep_mid), in order
    mid_px: list
    fills: list  # (book, order, qty, k): the fills to make (operators.maker._fill), in order, by event k
    gone: list  # (book, order, fate): the orders to drop, cancelled (1) or refused (2)


def advance(st: Quoting, cols: EventColumns, i: int, limit: int, settle_at: int, room: int, horizon: int,
            status_ok: bool, synced: bool) -> Run:
    """Step the events of ``cols`` from row ``i`` on that change only the book, clocks and orders (module docstring).

    ``st`` is updated in place, but for the mid's changes, the fills and
    the orders that go, which it returns for the caller to make (as
    ``operators.maker._note_mid``, ``operators.maker._fill`` and
    :func:`operators.maker.on_time` would). ``limit``: the receive time of
    the next decision (a signal): the run stops at the first event received
    at or after it. The fills wait ``horizon`` for their moves:
    ``settle_at``, the time the first waiting goes out (``2**63 - 1``: none
    waiting); the run stops after the event that takes the depth stream
    past it, and before one whose fills would be more than ``room`` more.
    ``status_ok``, ``synced``: whether the book is synced or loaded, synced.
    """
    c = st.config
    book = st.book
    f = book.flat
    books = list(st.books.values())
    entries = [(m, o) for m in books for o in m.orders.values()]
    n = len(entries)
    o_f = np.fromiter(chain.from_iterable((o.side, o.price, o.front, o.traded, o.qty, o.queue, o.live)
                                          for _, o in entries), np.float64, 7 * n).reshape(n, 7)
    o_i = np.fromiter(chain.from_iterable((o.arrival, _NEVER if o.cancel_at is None else o.cancel_at, 0)
                                          for _, o in entries), np.int64, 3 * n).reshape(n, 3)
    ends = accumulate(len(m.orders) for m in books)
    b_w = np.fromiter(chain.from_iterable((m.wake, m.wake_settled, e - len(m.orders), e)
                                          for m, e in zip(books, ends, strict=True)), np.int64,
                      4 * len(books)).reshape(-1, 4)
    mid_ts, mid_px = st.mid_ts, st.mid_px
    ints = np.array([st.clock, st.depth_ts, st.trade_ts, st.feed, st.ahead, st.wake, st.wake_settled, st.next_quote,
                     book.last_id, -1 if book.ts_event is None else book.ts_event, status_ok, synced, c.baseline,
                     settle_at, mid_ts[-1] if mid_ts else -1, 1 if mid_px else 0, _QUEUES[c.queue],
                     round(c.late_ms * 1_000_000), 0, 0, 0], dtype=np.int64)
    floats = np.array([f.bid, f.ask, c.lot, st.last_mid, mid_px[-1] if mid_px else 0.0, c.power_n,
                       1.0 if float(c.power_n).is_integer() else 0.0])
    rows = len(cols) - i
    out_ts = np.empty(rows, np.int64)
    out_px = np.empty(rows)
    most = 8 * n + 8  # fills a run makes at most
    fill_r, fill_j, fill_q = np.empty(most, np.int64), np.empty(most, np.int64), np.empty(most)
    k = cols
    j, code, m, nf = _advance(k.kind, k.ts_recv, k.ts_event, k.ids, k.first_ids, k.prev_ids, k.values, k.levels,
                              k.lv_px, k.lv_qty, i, limit, ints, floats, f.keys, f.qty, f.ix, f.max_depth, f.notes,
                              o_f, o_i, b_w, out_ts, out_px, room, horizon, fill_r, fill_j, fill_q)
    if j == i and code == 0:
        return Run(j, 0, 0, False, False, [], [], [], [])
    (st.clock, st.depth_ts, st.trade_ts, st.feed, st.ahead, st.wake, st.wake_settled, _, last_id, book_ts, *_, noted,
     ready, woke) = ints.tolist()
    book.last_id = last_id
    if book_ts >= 0 or book.ts_event is not None:
        book.ts_event = book_ts
    f.bid, f.ask, _, st.last_mid = floats[:4].tolist()
    for (_, o), (_, _, front, traded, _, queue, live) in zip(entries, o_f.tolist(), strict=True):
        o.front, o.traded, o.queue, o.live = front, traded, queue, live != 0.0
    for mk, (w, ws, _, _) in zip(books, b_w.tolist(), strict=True):
        mk.wake, mk.wake_settled = w, ws
    fills = [(*entries[r], q, at) for r, q, at in zip(fill_r[:nf].tolist(), fill_q[:nf].tolist(),
                                                      fill_j[:nf].tolist(), strict=True)] if nf else []
    gone = [(*entries[r], fate) for r, fate in enumerate(o_i[:, 2].tolist()) if fate] if woke else []
    return Run(j, code, noted, bool(ready), bool(woke), out_ts[:m].tolist(), out_px[:m].tolist(), fills, gone)


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
def _rests(o_f: np.ndarray, o_i: np.ndarray, r: int, te: int) -> bool:  # pragma: no cover - compiled
    """Whether order ``r`` is live and rests on the exchange at ``te`` (``operators.maker._rests``)."""
    return o_f[r, 0] != 0.0 and o_f[r, 6] != 0.0 and o_i[r, 0] < te <= o_i[r, 1]


@numba.njit(cache=True, nogil=True)
def _on_time(o_f: np.ndarray, o_i: np.ndarray, b_w: np.ndarray, te: int, settled: int, late: int, best_b: float,
             best_a: float, keys: np.ndarray, qty: np.ndarray, ix: np.ndarray) -> tuple[int, int]:  # pragma: no cover
    """:func:`operators.maker.on_time` of every book (``operators.maker._wake``); the new wake and wake_settled.

    The book before the event: its best prices (infinite where a side is
    empty) and its levels (an order going live queues behind its level).
    """
    wake = wake_settled = _NEVER
    for b in range(b_w.shape[0]):
        if not (te <= b_w[b, 0] and settled <= b_w[b, 1]):
            w = ws = _NEVER
            for r in range(b_w[b, 2], b_w[b, 3]):
                if o_f[r, 0] == 0.0:
                    continue
                ca = o_i[r, 1]
                if ca != _NEVER and (ca < settled or ca + late < te):
                    o_f[r, 0], o_i[r, 2] = 0.0, 1  # cancelled
                    continue
                side, p = o_f[r, 0], o_f[r, 1]
                if o_f[r, 6] == 0.0 and o_i[r, 0] < te <= ca:
                    if (side > 0.0 and p >= best_a) or (side < 0.0 and p <= best_b):
                        o_f[r, 0], o_i[r, 2] = 0.0, 2  # refused: post-only
                        continue
                    s = 0 if side > 0.0 else 1
                    o_f[r, 6] = 1.0
                    o_f[r, 2] = o_f[r, 5] = _qty_at(keys[s], qty[s], ix[2 * s], ix[2 * s + 1], p if s == 0 else -p)
                if o_f[r, 6] == 0.0 and o_i[r, 0] < w:
                    w = o_i[r, 0]
                if ca != _NEVER:
                    if ca + late < w:
                        w = ca + late
                    if ca < ws:
                        ws = ca
            b_w[b, 0], b_w[b, 1] = w, ws
        if b_w[b, 0] < wake:
            wake = b_w[b, 0]
        if b_w[b, 1] < wake_settled:
            wake_settled = b_w[b, 1]
    return wake, wake_settled


@numba.njit(cache=True, nogil=True)
def _watch(o_f: np.ndarray, watch: np.ndarray) -> tuple[float, float]:  # pragma: no cover - compiled
    """The live orders' prices per side in ``watch`` (NaN pads; ``operators.maker._watch``); the top bid, lowest ask."""
    watch[:] = np.nan
    hi_b, lo_a = -np.inf, np.inf
    nb = na = 0
    for r in range(o_f.shape[0]):
        if o_f[r, 0] == 0.0 or o_f[r, 6] == 0.0:
            continue
        p = o_f[r, 1]
        if o_f[r, 0] > 0.0:
            watch[0, nb] = p
            nb += 1
            if p > hi_b:
                hi_b = p
        else:
            watch[1, na] = p
            na += 1
            if p < lo_a:
                lo_a = p
    return hi_b, lo_a


@numba.njit(cache=True, nogil=True)
def _advance(kind: np.ndarray, ts_recv: np.ndarray, ts_event: np.ndarray, ids: np.ndarray, first_ids: np.ndarray,
             prev_ids: np.ndarray, values: np.ndarray, levels: np.ndarray, lv_px: np.ndarray, lv_qty: np.ndarray,
             i: int, limit: int, ints: np.ndarray, floats: np.ndarray, keys: np.ndarray,
             qty: np.ndarray, ix: np.ndarray, max_depth: int, notes: np.ndarray, o_f: np.ndarray, o_i: np.ndarray,
             b_w: np.ndarray, out_ts: np.ndarray, out_px: np.ndarray, room: int, horizon: int, fill_r: np.ndarray,
             fill_j: np.ndarray, fill_q: np.ndarray) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    clock, depth_ts, trade_ts, feed, ahead = ints[0], ints[1], ints[2], ints[3], ints[4]
    wake, wake_settled, next_quote, last_id, book_ts = ints[5], ints[6], ints[7], ints[8], ints[9]
    status_ok, synced, baseline, settle_at, mid_ts = ints[10] != 0, ints[11] != 0, ints[12] != 0, ints[13], ints[14]
    has_mid, queue, late = ints[15] != 0, ints[16], ints[17]
    fbid, fask, lot, last_mid, mid_px = floats[0], floats[1], floats[2], floats[3], floats[4]
    power, integral = floats[5], floats[6] != 0.0
    n_orders = o_f.shape[0]
    watch = np.empty((2, max(n_orders, 1)))
    hi_b, lo_a = _watch(o_f, watch)
    room = min(room, fill_r.shape[0])
    n_fill = 0
    woke = 0
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
        if k == 3 and not (synced and _takes(ids, first_ids, prev_ids, levels, j, last_id, ix, keys.shape[1])
                           and levels[j, 2] - levels[j, 0] <= notes.shape[1]):  # room for its notes, too
            break  # a diff the book's rules check: orderbook.step
        new_trade = te if k == 2 and te > trade_ts else trade_ts
        new_depth = te if k == 3 and te > depth_ts else depth_ts
        if ready:
            settled = new_depth if new_depth < new_trade else new_trade
            if te > wake or settled > wake_settled:  # orders reach the exchange, cancels settle: on_time
                if k == 2 and n_fill + n_orders > room:  # its fills might be more than may wait: step() takes it
                    break
                wake, wake_settled = _on_time(o_f, o_i, b_w, te, settled, late, fbid if fbid == fbid else -np.inf,
                                              fask if fask == fask else np.inf, keys, qty, ix)
                hi_b, lo_a = _watch(o_f, watch)
                woke = 1
        if k == 2:  # a trade
            if ready:
                price, q, sale = values[j, 0], values[j, 1], values[j, 2] != 0.0
                if (sale and price <= hi_b) or (not sale and price >= lo_a):
                    nf = 0  # its fills: through an order, or the queue ahead passed (operators.maker._trade_order)
                    for r in range(n_orders):
                        side, p = o_f[r, 0], o_f[r, 1]
                        if (((side > 0.0 and p >= price) if sale else (side < 0.0 and p <= price))
                                and _rests(o_f, o_i, r, te) and (p != price or -(o_f[r, 2] - q) / lot > 0.5)):
                            nf += 1
                    if nf and n_fill + nf > room:  # more than may wait: step() takes it
                        break
                    for r in range(n_orders):
                        side, p = o_f[r, 0], o_f[r, 1]
                        if not (((side > 0.0 and p >= price) if sale else (side < 0.0 and p <= price))
                                and _rests(o_f, o_i, r, te)):
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
        # a diff: orderbook.step's fast path, then the orders it reaches (operators.maker._reach)
        a, mm, z = levels[j, 0], levels[j, 1], levels[j, 2]
        if ts > clock:
            clock = ts
        depth_ts = new_depth
        feed = ts - te
        if -feed > ahead:
            ahead = -feed
        crossed, fbid, fask, noted = _apply(keys, qty, ix, lv_px, lv_qty, a, mm, z, max_depth, watch, notes)
        if crossed == 1:
            code = 1
            ints[19] = ready
            break
        if ready and n_orders:
            best_b = fbid if fbid == fbid else -np.inf
            best_a = fask if fask == fask else np.inf
            any_b, any_a = mm > a, z > mm
            fills = False
            if (any_a and hi_b >= best_a) or (any_b and lo_a <= best_b):  # the other side came to a live order
                for r in range(n_orders):
                    if _rests(o_f, o_i, r, te):
                        p = o_f[r, 1]
                        if (any_a and p >= best_a) if o_f[r, 0] > 0.0 else (any_b and p <= best_b):
                            fills = True
                            break
            if fills:
                code = 1
                ints[19] = ready
                break
            for r in range(n_orders if noted else 0):  # the orders whose level changed
                if not _rests(o_f, o_i, r, te):
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
    ints[5], ints[6], ints[8], ints[9], ints[18], ints[20] = wake, wake_settled, last_id, book_ts, noted, woke
    floats[0], floats[1], floats[3] = fbid, fask, last_mid
    return j, code, m, n_fill

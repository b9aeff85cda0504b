"""The maker books over a run of events in compiled code: the chunk path's resting orders (issues 27 and 28).

:func:`operators.maker.step` takes one event at a time, in Python. On the
chunk path a batch's events also come as arrays
(:class:`~core.events.EventColumns`), and most of them change nothing but
the book, the clocks, the resting orders and their fills: a best bid/ask;
a trade, which moves the queue at its price and fills the orders it
reaches; a depth diff that follows the book's last one and fills nothing;
and before either, the orders that reach the exchange by then go live (or
are refused: post-only) and those whose cancel has settled go
(:func:`operators.maker.on_time`). The decisions due before an event
(:func:`operators.maker._requote`: the models' signals, the baseline's
interval) cancel a book's orders and send its new quotes. :func:`advance`
runs over such events and decisions in one call of a kernel compiled with
numba, and stops at the first that may do anything else, which the caller
steps in Python: a decision of a book not made yet, or that the kernel
cannot price to the bit (no price grid yet, or one it does not round as
Python does: :func:`_grid`), a trade whose fills would be more than may
wait for their moves, a diff the book's rules must check, an event without
columns. The fills waiting that go out after an event of the run are noted
with the state they go out with. The state after the run is the one
stepping each event gives, to the bit: the same fields, set by the same
float operations in the same order; the orders it sent and kept, the fills
it found and those that went out are made by the caller, in the order of
the events, as the Python step makes them (``tests/operators/test_flatmaker.py``
checks it over the recordings, with each queue model and the settings that
price the quotes).

A diff the kernel takes is one :mod:`operators.orderbook` applies straight
away (``operators.flatbook._takes``). When, applied, it leaves the book
crossed or fills an order, the run ends with it applied (:data:`APPLIED`):
the book's rules and the fills are the caller's
(:func:`operators.maker.step_batch`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any, NamedTuple, Protocol

import numba
import numpy as np

from core.events import EventColumns
from operators.flatbook import _apply, _qty_at, _takes

__all__ = ["APPLIED", "Decisions", "Quoting", "Run", "advance", "decisions"]

#: the modules whose code this one's kernels compile in, with their digests (the first 16 hex digits of their files'
#: SHA-256): numba caches a kernel under its own file's digest only, so a change there must change this too
#: (tests/test_kernel_caches.py)
KERNEL_SOURCES = {"operators.flatbook": "787b9eec35e6bd52"}

#: :func:`advance`'s code for a run that ended with a diff applied (its levels only) that left the book crossed or
#: fills an order: the book's rules and the orders' part of it are the caller's.
APPLIED = 1

_NEVER = 2**63 - 1
#: rows for the orders a run's decisions send beyond two for each model decision due in its batch (the baseline's)
_SPARE = 128
_QUEUES = {"risk_averse": 0, "power": 1, "log": 2}
_BASELINE = ("touch", 0)  # the baseline's book (operators.maker.QuoterState.maker)

# The kernel's arrays of the state. ints: clock, depth_ts, trade_ts, feed, ahead, wake, wake_settled, next_quote,
# the book's last_id and ts_event, whether the book is synced or loaded, synced, the baseline, max_pending_fills,
# the last mid's time, whether there is one, the queue model, late (ns); out: the notes of the diff applied, whether
# the book was ready before it, whether orders woke; the next decision, the orders' rows used, then (out) the
# decisions taken, late and without a book; the quotes' settings: distance_ticks, max_inventory_lots, a bid, an ask,
# quote_lots, signal sizing, the feed latency model, the baseline's interval (ns), its book (-1: none), whether
# clock_offset_ms is set. floats: the best bid and ask, lot, last_mid, the last mid recorded, power_n, whether it is
# an integer; forecast_scale, skew_ticks, equity, the tick, its decimals' scale, clock_offset_ms, latency_ms,
# feed_latency_mul, the tick's integer (_grid). The orders (every book's, book by book, then those the run's
# decisions send): o_f side (0: gone), price, front, traded, qty, queue, live, qty sent; o_i arrival, cancel
# (2**63 - 1: none), fate (1 cancelled, 2 refused), book, id, side, the event it went at; per book, b_w its wake,
# wake_settled, next id, orders sent, and b_pos its position. The fills waiting: pend, their exchange times; the
# points where some go out: s_i the event, the mids recorded by then, how many go, depth_ts; s_f last_mid; s_sent
# each book's orders sent.


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
    tick: float
    decimals: int
    quotes: int
    late_signals: int
    without_book: int
    mid_ts: list
    mid_px: list
    last_mid: float
    pending: Any  # the fills waiting for their moves: (MakerFill, ts_recv), first in, first out


class Decisions(NamedTuple):
    """A batch's decisions (``Signal`` s, sorted by time) as the kernel reads them: see :func:`decisions`."""

    ts: np.ndarray  # ts_forecast
    book: np.ndarray  # the book's place in the state's books; -1: none yet (step makes it); -2: horizon 0 (none)
    f: np.ndarray  # expected_return, target_position (NaN: None)
    books: int  # the state's books then: with more, the places are to be taken again


def decisions(st: Quoting, sigs: list) -> Decisions:
    """``sigs`` (sorted by ``ts_forecast``) as arrays for :func:`advance`, their books' places those of ``st``."""
    at = {key: b for b, key in enumerate(st.books)}
    n = len(sigs)
    return Decisions(np.fromiter((s.ts_forecast for s in sigs), np.int64, n),
                     np.fromiter((at.get((s.model, s.horizon), -1) if s.horizon else -2 for s in sigs), np.int64, n),
                     np.fromiter(chain.from_iterable((s.expected_return, math.nan if s.target_position is None
                                                      else s.target_position) for s in sigs), np.float64,
                                 2 * n).reshape(n, 2), len(st.books))


class Run(NamedTuple):
    """What :func:`advance` did: the events ``i`` to ``j - 1`` stepped, and more (see there)."""

    j: int
    k: int  # the next decision: those before it taken
    code: int  # APPLIED: event j's levels applied too
    noted: int  # with APPLIED: the notes of event j's levels at the watched prices (FlatSides.notes)
    ready: bool  # with APPLIED: whether the book had both sides before event j
    woke: bool  # whether orders went live, went or came (the books' orders changed)
    mid_ts: list  # the mid's changes to record (operators.maker._keep_mid), in order
    mid_px: list
    fills: list  # (book, order, qty, k): the fills to make (operators.maker._fill), in order, by event k
    gone: list  # (book, order, fate, k): the orders to drop, cancelled (1) or refused (2) at event k, in order;
    # order None: one never made (refused)
    cancelled: list  # per book, the orders its decisions sent in the run that were cancelled before any fill
    settles: list  # (k, mids, n, depth_ts, last_mid, sent): after event k, with the mid's first changes (mids) kept,
    # the first n fills waiting go out, with the depth stream's time, the last mid and each book's orders sent then


def _grid(st: Quoting) -> tuple[float, float]:
    """The price grid's step and its decimals' scale as integers: ``round(k x tick, decimals)`` is ``k x m / scale``.

    That holds where the tick is the float nearest ``m / 10**decimals``
    (and ``|k x m| < 2**50``, which the kernel checks): ``k x tick`` is then
    within far less than half a last decimal of ``k x m / 10**decimals``,
    which ``round`` gives, as the float nearest it, as IEEE division does.
    ``m`` is -1 where it does not hold (the Python step decides).

    >>> from types import SimpleNamespace as S
    >>> _grid(S(tick=0.1, decimals=1)), _grid(S(tick=0.5, decimals=1)), _grid(S(tick=0.25, decimals=1))
    ((1.0, 10.0), (5.0, 10.0), (-1.0, 1.0))
    """
    tick, d = st.tick, st.decimals
    m = round(tick * 10**d) if tick and 0 <= d <= 15 else 0
    return (float(m), float(10**d)) if m > 0 and m / 10**d == tick else (-1.0, 1.0)


def advance(st: Quoting, cols: EventColumns, i: int, dec: Decisions, k: int, horizon: int, status_ok: bool,
            synced: bool, order: Callable[..., Any]) -> Run:
    """Step the events of ``cols`` from row ``i`` on that change only the book, clocks and orders (module docstring).

    ``st`` is updated in place, but for the mid's changes, the fills, the
    orders that go and the fills waiting that go out, which it returns for
    the caller to make, in the order of the events (as
    ``operators.maker._note_mid``, ``operators.maker._fill``,
    :func:`operators.maker.on_time` and ``operators.maker._went_out``
    would). The decisions ``dec`` from ``k`` on are taken before the first
    event received at or after their time, as the baseline's, unless the
    Python step must take one (a book not made yet, no price grid yet): the
    run stops there. The fills wait ``horizon`` for their moves, in
    ``st.pending`` (first in, first out) and after it: once the depth
    stream is past the first's time plus ``horizon``, it goes out with the
    state after that event (:attr:`Run.settles`). The run stops before a
    trade whose fills would be more than may wait
    (``max_pending_fills``). ``status_ok``, ``synced``: whether the book is
    synced or loaded, synced. ``order``: makes an order the decisions sent
    (``operators.maker.Order``).
    """
    c = st.config
    book = st.book
    f = book.flat
    books = list(st.books.values())
    entries = [(m, o) for m in books for o in m.orders.values()]
    n = len(entries)
    due = int(np.searchsorted(dec.ts, cols.ts_recv[-1], "right")) if len(cols) else k  # the decisions before the end
    cap = n + 2 * (max(due - k, 0) + _SPARE)  # rows for the orders the decisions send
    o_f = np.zeros((cap, 8))
    o_f[:n, :7] = np.fromiter(chain.from_iterable((o.side, o.price, o.front, o.traded, o.qty, o.queue, o.live)
                                                  for _, o in entries), np.float64, 7 * n).reshape(n, 7)
    o_i = np.zeros((cap, 7), np.int64)
    o_i[:n] = np.fromiter(chain.from_iterable((o.arrival, _NEVER if o.cancel_at is None else o.cancel_at, 0, b,
                                               o.oid, o.side, 0) for b, m in enumerate(books)
                                              for o in m.orders.values()), np.int64, 7 * n).reshape(n, 7)
    b_w = np.fromiter(chain.from_iterable((m.wake, m.wake_settled, m.next_oid, m.sent) for m in books), np.int64,
                      4 * len(books)).reshape(-1, 4)
    b_pos = np.fromiter((m.position for m in books), np.float64, len(books))
    mid_ts, mid_px = st.mid_ts, st.mid_px
    m_int, scale = _grid(st)
    ints = np.array([st.clock, st.depth_ts, st.trade_ts, st.feed, st.ahead, st.wake, st.wake_settled, st.next_quote,
                     book.last_id, -1 if book.ts_event is None else book.ts_event, status_ok, synced, c.baseline,
                     c.max_pending_fills, mid_ts[-1] if mid_ts else -1, 1 if mid_px else 0, _QUEUES[c.queue],
                     round(c.late_ms * 1_000_000), 0, 0, 0, k, n, 0, 0, 0, c.distance_ticks, c.max_inventory_lots,
                     c.sides != "ask", c.sides != "bid", c.quote_lots, c.sizing == "signal",
                     c.latency_model == "feed", c.interval_ms * 1_000_000,
                     list(st.books).index(_BASELINE) if _BASELINE in st.books else -1,
                     c.clock_offset_ms is not None],
                    dtype=np.int64)
    floats = np.array([f.bid, f.ask, c.lot, st.last_mid, mid_px[-1] if mid_px else 0.0, c.power_n,
                       1.0 if float(c.power_n).is_integer() else 0.0, c.forecast_scale, c.skew_ticks, c.equity,
                       st.tick, scale, math.nan if c.clock_offset_ms is None else c.clock_offset_ms, c.latency_ms,
                       c.feed_latency_mul, m_int])
    rows = len(cols) - i
    out_ts = np.empty(rows, np.int64)
    out_px = np.empty(rows)
    most = 8 * cap + 8  # fills a run makes at most
    fill_r, fill_j, fill_q = np.empty(most, np.int64), np.empty(most, np.int64), np.empty(most)
    waiting = len(st.pending)
    pend = np.empty(waiting + most, np.int64)  # the fills waiting: their exchange times
    pend[:waiting] = np.fromiter((w[0].ts_exch for w in st.pending), np.int64, waiting)
    s_i, s_f, s_sent = np.empty((rows, 4), np.int64), np.empty(rows), np.empty((rows, len(books)), np.int64)
    q = cols
    j, code, m, nf, ns = _advance(q.kind, q.ts_recv, q.ts_event, q.ids, q.first_ids, q.prev_ids, q.values, q.levels,
                                  q.lv_px, q.lv_qty, i, ints, floats, f.keys, f.qty, f.ix, f.max_depth, f.notes,
                                  o_f, o_i, b_w, b_pos, dec.ts, dec.book, dec.f, out_ts, out_px, horizon, fill_r,
                                  fill_j, fill_q, pend, waiting, s_i, s_f, s_sent)
    out = ints[:26].tolist()
    *_, next_quote, last_id, book_ts = out[:10]
    *_, noted, ready, woke, k_to, used, quotes, late, unbooked = out
    if j == i and code == 0 and k_to == k and next_quote == st.next_quote:  # nothing taken: what it did is undone
        return Run(j, k, 0, 0, False, False, [], [], [], [], [0] * len(books), [])
    st.clock, st.depth_ts, st.trade_ts, st.feed, st.ahead, st.wake, st.wake_settled = out[:7]
    st.next_quote = next_quote
    book.last_id = last_id
    if book_ts >= 0 or book.ts_event is not None:
        book.ts_event = book_ts
    f.bid, f.ask, _, st.last_mid = floats[:4].tolist()
    for (_, o), (_, _, front, traded, _, queue, live, _), cancel in zip(entries, o_f[:n].tolist(),
                                                                         o_i[:n, 1].tolist(), strict=True):
        o.front, o.traded, o.queue, o.live = front, traded, queue, live != 0.0
        if cancel != _NEVER:
            o.cancel_at = cancel
    made = dict(enumerate(entries))  # row -> (book, order)
    unmade = np.zeros(used, bool)  # the orders the decisions sent that went without a fill: counted only
    if used > n:  # the others are made
        unmade[n:] = o_i[n:used, 2] != 0
        unmade[fill_r[:nf]] = False
        keep = np.flatnonzero(~unmade[n:]) + n
        for r, (_, price, front, traded, _, queue, live, qty), (arrival, cancel, _, b, oid, side, _) in zip(
                keep.tolist(), o_f[keep].tolist(), o_i[keep].tolist(), strict=True):
            mk = books[b]
            o = mk.orders[oid] = order(oid, side, price, qty, arrival, live != 0.0, front, queue, traded,
                                       None if cancel == _NEVER else cancel)
            made[r] = (mk, o)
    for mk, (w, ws, nxt, sent) in zip(books, b_w.tolist(), strict=True):
        mk.wake, mk.wake_settled, mk.next_oid, mk.sent = w, ws, nxt, sent
    st.quotes += quotes
    st.late_signals += late
    st.without_book += unbooked
    fills = []
    if nf:
        at_r: Iterable = zip(fill_j[:nf].tolist(), fill_r[:nf].tolist(), fill_q[:nf].tolist(), strict=True)
        if used > n:  # an event's fills book by book, each book's by its orders' ids, as the Python step
            at_r = sorted(at_r, key=lambda x: (x[0], o_i[x[1], 3], o_i[x[1], 4]))
        fills = [(*made[r], fq, at) for at, r, fq in at_r]
    gone: list = []
    cancelled = [0] * len(books)
    if woke:
        fate = o_i[:used, 2]
        dropped = unmade & (fate == 1)  # cancelled before it was made: a count, in any order (no record reads it)
        cancelled = np.bincount(o_i[:used, 3][dropped], minlength=len(books)).tolist()
        g = np.flatnonzero((fate != 0) & ~dropped)
        g = g[np.argsort(o_i[g, 6], kind="stable")]  # in the order of the events
        gone = [(*made.get(r, (books[b], None)), fate, at)
                for r, (_, _, fate, b, _, _, at) in zip(g.tolist(), o_i[g].tolist(), strict=True)]
    settles = [(*x, lm, sent) for x, lm, sent in zip(s_i[:ns].tolist(), s_f[:ns].tolist(), s_sent[:ns].tolist(),
                                                      strict=True)]
    return Run(j, k_to, code, noted, bool(ready), bool(woke or used > n or quotes), out_ts[:m].tolist(),
               out_px[:m].tolist(), fills, gone, cancelled, settles)


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
def _on_time(o_f: np.ndarray, o_i: np.ndarray, act: np.ndarray, n: int, b_w: np.ndarray, due: np.ndarray, te: int,
             settled: int, late: int, best_b: float, best_a: float, keys: np.ndarray, qty: np.ndarray,
             ix: np.ndarray, j: int) -> tuple[int, int]:  # pragma: no cover - compiled
    """:func:`operators.maker.on_time` of every book (``operators.maker._wake``); the new wake and wake_settled.

    The book before the event: its best prices (infinite where a side is
    empty) and its levels (an order going live queues behind its level).
    ``due``: a scratch row per book (whether it looks, its new wake and
    wake_settled), so that one pass over the orders serves every book.
    The orders that go are marked as gone at event ``j``. The orders: the
    rows ``act[:n]``.
    """
    looks = False
    for b in range(b_w.shape[0]):
        due[b, 0] = not (te <= b_w[b, 0] and settled <= b_w[b, 1])
        due[b, 1] = due[b, 2] = _NEVER
        looks = looks or due[b, 0] != 0
    if looks:
        for t in range(n):  # the orders' rows in act[:n], each book's in its order
            r = act[t]
            b = o_i[r, 3]
            if due[b, 0] == 0 or o_f[r, 0] == 0.0:
                continue
            ca = o_i[r, 1]
            if ca != _NEVER and (ca < settled or ca + late < te):
                o_f[r, 0], o_i[r, 2], o_i[r, 6] = 0.0, 1, j  # cancelled
                continue
            side, p = o_f[r, 0], o_f[r, 1]
            if o_f[r, 6] == 0.0 and o_i[r, 0] < te <= ca:
                if (side > 0.0 and p >= best_a) or (side < 0.0 and p <= best_b):
                    o_f[r, 0], o_i[r, 2], o_i[r, 6] = 0.0, 2, j  # refused: post-only
                    continue
                s = 0 if side > 0.0 else 1
                o_f[r, 6] = 1.0
                o_f[r, 2] = o_f[r, 5] = _qty_at(keys[s], qty[s], ix[2 * s], ix[2 * s + 1], p if s == 0 else -p)
            if o_f[r, 6] == 0.0 and o_i[r, 0] < due[b, 1]:
                due[b, 1] = o_i[r, 0]
            if ca != _NEVER:
                if ca + late < due[b, 1]:
                    due[b, 1] = ca + late
                if ca < due[b, 2]:
                    due[b, 2] = ca
    wake = wake_settled = _NEVER
    for b in range(b_w.shape[0]):
        if due[b, 0]:
            b_w[b, 0], b_w[b, 1] = due[b, 1], due[b, 2]
        if b_w[b, 0] < wake:
            wake = b_w[b, 0]
        if b_w[b, 1] < wake_settled:
            wake_settled = b_w[b, 1]
    return wake, wake_settled


@numba.njit(cache=True, nogil=True)
def _compact(o_f: np.ndarray, act: np.ndarray, n: int) -> int:  # pragma: no cover - compiled
    """Drop the rows of the orders gone (side 0) from ``act[:n]``, in order; how many are left."""
    m = 0
    for t in range(n):
        r = act[t]
        if o_f[r, 0] != 0.0:
            act[m] = r
            m += 1
    return m


@numba.njit(cache=True, nogil=True)
def _watch(o_f: np.ndarray, act: np.ndarray, n: int, watch: np.ndarray,
           width: int) -> tuple[float, float, int]:  # pragma: no cover - compiled
    """The live orders' prices per side in ``watch`` (NaN pads; ``operators.maker._watch``).

    The orders: the rows ``act[:n]``; ``width``: the columns of ``watch``
    that held prices before. The top bid, the lowest ask, and the columns
    that hold them now (at least 1).
    """
    watch[:, :width] = np.nan  # (the other columns: NaN from the start)
    hi_b, lo_a = -np.inf, np.inf
    nb = na = 0
    for t in range(n):
        r = act[t]
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
    return hi_b, lo_a, max(nb, na, 1)


@numba.njit(cache=True, nogil=True)
def _at_exchange(t: int, feed: int, ahead: int, ints: np.ndarray, floats: np.ndarray) -> int:  # pragma: no cover
    """``operators.maker._at_exchange``: when what is sent at local time ``t`` reaches the exchange."""
    off = floats[12] * 1e6 if ints[35] else float(ahead if ahead > 0 else 0)
    lat = floats[13] * 1e6
    if ints[32]:  # the feed latency model
        v = lat + floats[14] * (feed + off)
        lat = v if v > 0.0 else 0.0  # max(0.0, v), NaN included
    return t + int(np.round(off + lat))


@numba.njit(cache=True, nogil=True)
def _requote(o_f: np.ndarray, o_i: np.ndarray, n: int, act: np.ndarray, n_act: int, b_w: np.ndarray,
             b_pos: np.ndarray, b: int, t: int, expected: float, size: float, feed: int, ahead: int, bid: float,
             ask: float, ints: np.ndarray, floats: np.ndarray) -> int:  # pragma: no cover - compiled
    """``operators.maker._requote`` of book ``b`` at local time ``t``: the orders' rows used then; -1: not taken.

    The orders: the rows ``act[:n_act]``, and the rows ``n`` on are free;
    the rows of the orders sent are added to ``act`` after them.

    Not taken (nothing changed; the Python step takes it): no price grid
    yet, or none the kernel rounds as ``round`` does (:func:`_grid`), no
    rows left, or numbers out of range. ``bid``, ``ask``: the book's best
    prices; ``size``: the decision's target position (NaN: none).
    """
    tick, lot, m_int, scale = floats[10], floats[2], floats[15], floats[11]
    if tick == 0.0 or m_int < 0.0 or n + 2 > o_f.shape[0]:
        return -1
    held = np.round(b_pos[b] / lot)
    # quote_prices
    mid = (bid + ask) * 0.5
    half = (ask - bid) * 0.5
    centre = mid * (1.0 + floats[7] * expected) - floats[8] * held * tick
    lo = (centre - half) / tick + 1e-6
    hi = (centre + half) / tick - 1e-6
    if not (abs(lo) < 2.0**50 and abs(hi) < 2.0**50 and abs(held) < 2.0**50):
        return -1
    max_inv = ints[27]
    px_b = (np.floor(lo) - ints[26]) * m_int
    px_a = (np.ceil(hi) + ints[26]) * m_int
    if not (abs(px_b) < 2.0**50 and abs(px_a) < 2.0**50):
        return -1
    lots = ints[30]
    if ints[31] and size == size:  # signal sizing
        v = np.round(abs(size) * floats[9] / ((bid + ask) * 0.5) / lot)
        if not abs(v) < 2.0**50:
            return -1
        lots = max(1, np.int64(v))
    h = np.int64(held)
    at = _at_exchange(t, feed, ahead, ints, floats)  # the cancels and the quotes reach the exchange at once
    late = ints[17]
    for x in range(n_act):
        r = act[x]
        if o_i[r, 3] == b and o_f[r, 0] != 0.0 and o_i[r, 1] == _NEVER:
            o_i[r, 1] = at
            if at + late < b_w[b, 0]:
                b_w[b, 0] = at + late
            if at < b_w[b, 1]:
                b_w[b, 1] = at
    nxt = b_w[b, 2]
    for s in range(2):  # each decision takes two ids: bid, then ask
        side = 1 if s == 0 else -1
        quoted = (ints[28] != 0 and h < max_inv) if s == 0 else (ints[29] != 0 and h > -max_inv)
        k = min(lots, max_inv - h if s == 0 else max_inv + h)
        if quoted and k > 0:
            o_f[n, 0], o_f[n, 1] = side, (px_b if s == 0 else px_a) / scale
            o_f[n, 2], o_f[n, 3], o_f[n, 5], o_f[n, 6] = 0.0, 0.0, 0.0, 0.0
            o_f[n, 4] = o_f[n, 7] = k * lot
            o_i[n, 0], o_i[n, 1], o_i[n, 2], o_i[n, 3], o_i[n, 4], o_i[n, 5] = at, _NEVER, 0, b, nxt + s, side
            act[n_act] = n
            n_act += 1
            n += 1
            b_w[b, 3] += 1
            if at < b_w[b, 0]:
                b_w[b, 0] = at
    b_w[b, 2] = nxt + 2
    ints[23] += 1
    return n


@numba.njit(cache=True, nogil=True)
def _advance(kind: np.ndarray, ts_recv: np.ndarray, ts_event: np.ndarray, ids: np.ndarray, first_ids: np.ndarray,
             prev_ids: np.ndarray, values: np.ndarray, levels: np.ndarray, lv_px: np.ndarray, lv_qty: np.ndarray,
             i: int, ints: np.ndarray, floats: np.ndarray, keys: np.ndarray, qty: np.ndarray, ix: np.ndarray,
             max_depth: int, notes: np.ndarray, o_f: np.ndarray, o_i: np.ndarray, b_w: np.ndarray, b_pos: np.ndarray,
             sig_ts: np.ndarray, sig_b: np.ndarray, sig_f: np.ndarray, out_ts: np.ndarray, out_px: np.ndarray,
             horizon: int, fill_r: np.ndarray, fill_j: np.ndarray, fill_q: np.ndarray, pend: np.ndarray, tail: int,
             s_i: np.ndarray, s_f: np.ndarray,
             s_sent: np.ndarray) -> tuple[int, int, int, int, int]:  # pragma: no cover - compiled
    """The run (:func:`advance`): the next event, its code, the mids, fills and settle points recorded."""
    clock, depth_ts, trade_ts, feed, ahead = ints[0], ints[1], ints[2], ints[3], ints[4]
    wake, wake_settled, next_quote, last_id, book_ts = ints[5], ints[6], ints[7], ints[8], ints[9]
    status_ok, synced, baseline, cap, mid_ts = ints[10] != 0, ints[11] != 0, ints[12] != 0, ints[13], ints[14]
    has_mid, queue, late = ints[15] != 0, ints[16], ints[17]
    ks, n_orders, iv, base = ints[21], ints[22], ints[33], ints[34]
    fbid, fask, lot, last_mid, mid_px = floats[0], floats[1], floats[2], floats[3], floats[4]
    power, integral = floats[5], floats[6] != 0.0
    watch = np.full((2, max(o_f.shape[0], 1)), np.nan)
    due = np.empty((b_w.shape[0], 3), np.int64)  # _on_time's scratch
    act = np.arange(o_f.shape[0])  # the rows of the orders not gone, in order
    n_act = _compact(o_f, act, n_orders)
    hi_b, lo_a, width = _watch(o_f, act, n_act, watch, 1)
    most = fill_r.shape[0]
    head = 0  # the fills waiting: pend[head:tail], their exchange times, the first the next to go out
    n_fill = 0
    ns = 0
    woke = 0
    code = 0
    noted = 0
    m = 0
    j = i
    rows = len(kind)
    n_sig = len(sig_ts)
    while j < rows:
        k = kind[j]
        if k == 0:
            break
        ts = ts_recv[j]
        ready = status_ok and fbid == fbid and fask == fask
        held = False  # a decision the Python step takes
        while ks < n_sig and sig_ts[ks] <= ts:  # the models' decisions before the event (operators.maker.step)
            b = sig_b[ks]
            if b != -2:  # -2: horizon 0, the taker books' benchmarks: none here
                if sig_ts[ks] <= clock:
                    ints[24] += 1  # late
                elif not ready:
                    ints[25] += 1  # without a book
                else:
                    u = -1 if b < 0 else _requote(o_f, o_i, n_orders, act, n_act, b_w, b_pos, b, sig_ts[ks],
                                                  sig_f[ks, 0], sig_f[ks, 1], feed, ahead, fbid, fask, ints, floats)
                    if u < 0:
                        held = True
                        break
                    n_act += u - n_orders
                    n_orders = u
                    wake, wake_settled = min(wake, b_w[b, 0]), min(wake_settled, b_w[b, 1])
            ks += 1
        if held:
            break
        if k == 1:  # a best bid/ask: its time only (operators.maker.step_batch)
            if next_quote < 0 and baseline and ready:
                next_quote = (ts // iv + 1) * iv
            if ts > clock:
                clock = ts
            j += 1
            continue
        if ready and baseline:  # the baseline's decisions due first (operators.maker._baseline)
            if next_quote < 0:
                next_quote = (ts // iv + 1) * iv
            while next_quote <= ts:
                u = _requote(o_f, o_i, n_orders, act, n_act, b_w, b_pos, base, next_quote, 0.0, np.nan, feed, ahead,
                             fbid, fask, ints, floats)
                if u < 0:
                    held = True
                    break
                n_act += u - n_orders
                n_orders = u
                wake, wake_settled = min(wake, b_w[base, 0]), min(wake_settled, b_w[base, 1])
                next_quote += iv
            if held:
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
                if k == 2 and (tail - head + n_act > cap or n_fill + n_act > most):
                    break  # its fills might be more than may wait: step() takes it
                wake, wake_settled = _on_time(o_f, o_i, act, n_act, b_w, due, te, settled, late,
                                              fbid if fbid == fbid else -np.inf, fask if fask == fask else np.inf,
                                              keys, qty, ix, j)
                n_act = _compact(o_f, act, n_act)
                hi_b, lo_a, width = _watch(o_f, act, n_act, watch, width)
                woke = 1
        if k == 2:  # a trade
            if ready:
                price, q, sale = values[j, 0], values[j, 1], values[j, 2] != 0.0
                if (sale and price <= hi_b) or (not sale and price >= lo_a):
                    nf = 0  # its fills: through an order, or the queue ahead passed (operators.maker._trade_order)
                    for t in range(n_act):
                        r = act[t]
                        side, p = o_f[r, 0], o_f[r, 1]
                        if (((side > 0.0 and p >= price) if sale else (side < 0.0 and p <= price))
                                and _rests(o_f, o_i, r, te) and (p != price or -(o_f[r, 2] - q) / lot > 0.5)):
                            nf += 1
                    if nf and (tail - head + nf > cap or n_fill + nf > most):  # more than may wait: step() takes it
                        break
                    for t in range(n_act):
                        r = act[t]
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
                        pend[tail] = te  # it waits for its moves
                        tail += 1
                        left = o_f[r, 4]  # operators.maker._fill: at most what is left; gone when under half a lot
                        took = left if left < fq else fq
                        b_pos[o_i[r, 3]] += o_i[r, 5] * took  # the book's position, which its decisions read
                        left -= took
                        o_f[r, 4] = left
                        if np.round(left / lot) <= 0.0:
                            o_f[r, 0] = 0.0  # filled: it rests no more
                    if nf:
                        n_act = _compact(o_f, act, n_act)
            trade_ts = new_trade
            if ts > clock:
                clock = ts
        else:  # a diff: orderbook.step's fast path, then the orders it reaches (operators.maker._reach)
            a, mm, z = levels[j, 0], levels[j, 1], levels[j, 2]
            if ts > clock:
                clock = ts
            depth_ts = new_depth
            feed = ts - te
            if -feed > ahead:
                ahead = -feed
            crossed, fbid, fask, noted = _apply(keys, qty, ix, lv_px, lv_qty, a, mm, z, max_depth,
                                                watch[:, :width], notes)
            if crossed == 1:
                code = 1
                ints[19] = ready
                break
            if ready and n_act:
                best_b = fbid if fbid == fbid else -np.inf
                best_a = fask if fask == fask else np.inf
                any_b, any_a = mm > a, z > mm
                fills = False
                if (any_a and hi_b >= best_a) or (any_b and lo_a <= best_b):  # the other side came to a live order
                    for t in range(n_act):
                        r = act[t]
                        if _rests(o_f, o_i, r, te):
                            p = o_f[r, 1]
                            if (any_a and p >= best_a) if o_f[r, 0] > 0.0 else (any_b and p <= best_b):
                                fills = True
                                break
                if fills:
                    code = 1
                    ints[19] = ready
                    break
                for t in range(n_act if noted else 0):  # the orders whose level changed
                    r = act[t]
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
        if head < tail and pend[head] + horizon < depth_ts:  # fills waiting go out (operators.maker._went_out)
            s_i[ns, 0], s_i[ns, 1], s_i[ns, 3] = j, m, depth_ts
            s_f[ns] = last_mid
            s_sent[ns] = b_w[:, 3]
            h = head
            while head < tail and pend[head] + horizon < depth_ts:
                head += 1
            s_i[ns, 2] = head - h
            ns += 1
        j += 1
    ints[0], ints[1], ints[2], ints[3], ints[4] = clock, depth_ts, trade_ts, feed, ahead
    ints[5], ints[6], ints[7], ints[8], ints[9] = wake, wake_settled, next_quote, last_id, book_ts
    ints[18], ints[20], ints[21], ints[22] = noted, woke, ks, n_orders
    floats[0], floats[1], floats[3] = fbid, fask, last_mid
    return j, code, m, n_fill, ns

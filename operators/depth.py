"""Bars that keep the order book: event-time bars with the book over each bar.

The whole event stream of an instrument goes through :mod:`operators.bars`
as before, and its depth diffs and REST snapshots also through a checked
local order book, the collector's (:mod:`operators.orderbook`: Binance's
sequence rules for spot ``U``/``u`` and USD-M ``pu``; a gap or a crossed
book drops the book and waits for a snapshot, counted; a crossed book is a
dead letter with the diff that crossed it). Each bar then carries a
:class:`~core.events.BookStats`, what :mod:`operators.features` makes the
depth features of:

- **multi-level order-flow imbalance** (Xu, Gould & Howison 2019): for each
  level ``m = 1..L`` and each diff ``n`` applied, with ``P``/``q`` the price
  and quantity of the ``m``-th best level before and after the diff,

  .. code-block:: text

      e_m(n) = q^b_m(n) 1{P^b_m(n) >= P^b_m(n-1)} - q^b_m(n-1) 1{P^b_m(n) <= P^b_m(n-1)}
             - q^a_m(n) 1{P^a_m(n) <= P^a_m(n-1)} + q^a_m(n-1) 1{P^a_m(n) >= P^a_m(n-1)}

  summed over the bar, with each level's mean depth ``(q^b_m + q^a_m) / 2``
  over the same diffs (the book's at the bar's end in a bar without diffs);
- the top ``L`` levels at the bar's end, the quantity within each of
  ``within_bps`` of the mid on each side, and the cost of walking a market
  order of ``walk_notional`` through the book;
- **book events** per side: the levels of the bar's diffs, at or better than
  the ``L``-th level before the diff, that appeared (adds), went (cancels) or
  changed quantity (changes).

The book's state is causal: an event updates the book after the bars it
closes are emitted, so a bar's book is the one of the events received
before its end. A diff that :mod:`operators.bars` dead-letters as late is
not applied either (the next diff then shows a gap, and the book resyncs).

Until an instrument's book is ready (no snapshot yet, or a resync), its bars
carry ``BookStats(ready=False)``, counted (``depth_features_missing``), and
:mod:`operators.features` leaves the depth features out of their rows. An instrument without any depth event has
``depth=None``: no depth features at all. State per instrument: the bars'
(O(1)), the book (at most ``max_depth`` levels per side and ``max_buffer``
diffs waiting for a snapshot) and O(``L``) accumulators.

Examples
--------
>>> from core.events import BookSnapshot, DepthUpdate, Level, Quote, Trade
>>> from operators.bars import BarConfig
>>> S = 10**9
>>> cfg = DepthConfig(levels=2, imbalance_levels=(1, 2), within_bps=(5.0,), walk_notional=150.0)
>>> st = DepthState(BarConfig(), cfg)
>>> snap = BookSnapshot("X", 0, 10, (Level(99.0, 1.0), Level(98.0, 2.0)), (Level(101.0, 1.0), Level(102.0, 3.0)))
>>> st, out = step(st, snap)
>>> st, out = step(st, Quote("X", 1, None, 99.0, 1.0, 101.0, 1.0, 1))
>>> st, out = step(st, Trade("X", 2, 2, 101.0, 0.5, False, 1))
>>> st, out = step(st, DepthUpdate("X", S // 2, 0, 11, 11, -1, (Level(99.0, 3.0),), ()))  # the bid grows
>>> st, out = step(st, Quote("X", S + 1, None, 99.0, 3.0, 101.0, 1.0, 2))  # closes the bar [0, 1 s)
>>> d = out[0].depth
>>> d.ready, d.ofi, d.level_depth, d.bid_qty, d.updates, d.changes_bid
(True, (2.0, 0.0), (2.0, 2.5), (3.0, 2.0), 1, 1)
>>> d.within_bid, round(d.walk_buy, 2)  # nothing within 5 bps of 100; 150 buys 1 at 101 and 49/102 at 102
((0.0,), 132.45)
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import add, sub
from typing import Any, Optional, Union

import msgspec
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.events import Bar, BookSnapshot, BookStats, Count, DepthUpdate, ErrorRecord, Event, EventColumns
from operators import bars, orderbook
from operators.bars import BarConfig, BarState
from operators.orderbook import LOADED, SYNCED, OrderBookConfig, OrderBookState

__all__ = ["DepthConfig", "DepthState", "book_names", "run", "step", "warm"]

Out = Union[Bar, ErrorRecord, Count]
_NOT_READY = BookStats(False)
_BPS = 1e4


class DepthConfig(BaseModel):
    """The order book kept per instrument, and the depth features made of it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        True,
        description="Keep a checked order book per instrument from the depth diffs and REST snapshots of the input, "
        "and make depth features of it (wherever the input carries depth). False: top-of-book features only.")
    levels: int = Field(10, ge=1, le=100,
        description="L: the levels per side of the multi-level order-flow imbalance, the depth imbalances and the "
        "book a book learner reads.")
    imbalance_levels: tuple[int, ...] = Field(
        (1, 3, 5, 10), description="Depth imbalance (bid - ask) / (bid + ask) over the top k levels, for each k "
        "(at most L).")
    within_bps: tuple[float, ...] = Field(
        (5.0, 10.0, 25.0), description="Quantity on each side within these distances of the mid (bps).")
    walk_notional: float = Field(
        100_000.0, gt=0,
        description="Quote notional (e.g. USDT) of the market order whose cost, walked through the book, is a "
        "feature (bps of the mid, per side).")
    max_depth: int = Field(
        1000, ge=1,
        description="Price levels kept per side; the levels farthest from the top are trimmed beyond this, which "
        "bounds the state (the features read at most L levels, and the levels within the largest within_bps).")
    max_buffer: int = Field(
        1000, ge=1,
        description="Depth diffs held per instrument while waiting for a snapshot (the oldest dropped beyond "
        "this, counted as depth_buffer_overflow).")
    pca_halflife: int = Field(
        1800, ge=2,
        description="Half-life in bars of the exponentially weighted covariance of the level OFIs whose first "
        "principal component integrates them (integrated OFI).")
    pca_warmup: int = Field(
        30, ge=2, description="Bars with a ready book before the integrated OFI is given (missing before).")
    book_in_row: bool = Field(
        False,
        description="Put the top L levels themselves into the feature row (lob_ap<i>, lob_aq<i>, lob_bp<i>, "
        "lob_bq<i>), for a learner that reads the book; on when one is among the models.")

    @field_validator("imbalance_levels")
    @classmethod
    def _ks(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(k < 1 for k in v) or len(set(v)) != len(v):
            raise ValueError("level counts must be distinct positive integers")
        return v

    @field_validator("within_bps")
    @classmethod
    def _bps(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < b < 10_000 for b in v) or len(set(v)) != len(v):
            raise ValueError("distances must be distinct, in (0, 10000) bps")
        return tuple(sorted(v))

    @model_validator(mode="after")
    def _within_levels(self) -> DepthConfig:
        if self.imbalance_levels and max(self.imbalance_levels) > self.levels:
            raise ValueError(f"imbalance_levels {list(self.imbalance_levels)} go beyond levels ({self.levels})")
        if self.max_depth < self.levels:
            raise ValueError(f"max_depth ({self.max_depth}) must be at least levels ({self.levels})")
        return self

    def book(self, compiled: bool = False) -> OrderBookConfig:
        """The configuration of the order book kept (``compiled``: in :mod:`operators.flatbook`'s arrays)."""
        return OrderBookConfig(levels=self.levels, max_depth=self.max_depth, max_buffer=self.max_buffer, quotes=False,
                               compiled=compiled)


def book_names(levels: int) -> tuple[str, ...]:
    """The names of the book itself in a feature row, level by level (see :attr:`DepthConfig.book_in_row`).

    >>> book_names(2)
    ('lob_ap1', 'lob_aq1', 'lob_bp1', 'lob_bq1', 'lob_ap2', 'lob_aq2', 'lob_bp2', 'lob_bq2')
    """
    return tuple(f"lob_{k}{i}" for i in range(1, levels + 1) for k in ("ap", "aq", "bp", "bq"))


@dataclass(slots=True)
class DepthState:
    """Per-instrument bars, order book and the accumulators of the open bar.

    ``compiled``: the book in :mod:`operators.flatbook`'s arrays, and the
    accumulators with it (``flat``: rows of the top ``L`` prices and
    quantities, bids then asks, then the level OFIs and depth sums;
    ``counts``: the top ``L`` levels per side, then the book events), each
    diff's part made by compiled code; the same bars as the reference's
    Python, to the bit.
    """

    config: BarConfig
    depth: DepthConfig
    compiled: bool = False
    bars: BarState = field(init=False)
    book: OrderBookState = field(init=False)
    seen: bool = False  # the instrument has had a depth event
    prev: Optional[tuple[list, list, list, list]] = None  # top L (bid px, bid qty, ask px, ask qty) of a live book
    ofi: list = field(init=False)
    depth_sum: list = field(init=False)  # per level, bid + ask quantity summed over the bar's diffs
    updates: int = 0
    events: list = field(init=False)  # adds, cancels, changes: bid then ask
    flat: Optional[np.ndarray] = None  # compiled: (6, L) top prices, quantities, level OFIs, depth sums
    counts: Optional[np.ndarray] = None  # compiled: top levels per side (2), book events (6)
    live: bool = False  # compiled: the top L in flat is a live book's (the reference's prev is not None)

    def __post_init__(self) -> None:
        self.bars = BarState(self.config)
        self.book = OrderBookState(self.depth.book(self.compiled))
        n = self.depth.levels
        self.ofi = [0.0] * n
        self.depth_sum = [0.0] * n
        self.events = [0] * 6
        if self.compiled:
            self.flat = np.zeros((6, n))
            self.counts = np.zeros(8, dtype=np.int64)


def _top(book: OrderBookState, n: int) -> tuple[list, list, list, list]:
    bpx = book.bid_px[-n:][::-1]
    apx = book.ask_px[:n]
    return bpx, list(map(book.bid_qty.__getitem__, bpx)), apx, list(map(book.ask_qty.__getitem__, apx))


def _scan(st: DepthState, ev: DepthUpdate) -> Optional[list]:
    """Count the diff's levels at or better than the ``L``-th level of the book before it (book events).

    Returns the quantity changes it makes to the top ``L`` levels, as
    ``(side, m, old, new)`` (side 0 bid, 1 ask; ``m`` the level, 0 the
    best), if it leaves their prices as they were; None if it may move them
    (it adds or removes one of those levels, or a side it updates has fewer
    than ``L``).
    """
    book, n, e = st.book, st.depth.levels, st.events
    changes: Optional[list] = []
    px = book.bid_px
    if ev.bids:
        if len(px) >= n:
            worst = px[-n]
        else:
            changes = None
            worst = px[0] if px else 0.0
        if px:
            qty = book.bid_qty
            for lv in ev.bids:
                p = lv.price
                if p >= worst:
                    old, q = qty.get(p), lv.qty
                    if not q:
                        if old is not None:
                            e[1] += 1
                            changes = None
                    elif old is None:
                        e[0] += 1
                        changes = None
                    elif old != q:
                        e[2] += 1
                        if changes is not None:
                            changes.append((0, len(px) - 1 - bisect_left(px, p), old, q))
    px = book.ask_px
    if ev.asks:
        if len(px) >= n:
            worst = px[n - 1]
        else:
            changes = None
            worst = px[-1] if px else 0.0
        if px:
            qty = book.ask_qty
            for lv in ev.asks:
                p = lv.price
                if p <= worst:
                    old, q = qty.get(p), lv.qty
                    if not q:
                        if old is not None:
                            e[4] += 1
                            changes = None
                    elif old is None:
                        e[3] += 1
                        changes = None
                    elif old != q:
                        e[5] += 1
                        if changes is not None:
                            changes.append((1, bisect_left(px, p), old, q))
    return changes


def _requantify(st: DepthState, top: tuple[list, list, list, list], changes: list) -> bool:
    """Apply quantity changes (:func:`_scan`'s) to the top ``L`` and add their level OFIs; False if a level repeats.

    The OFI's terms of a level whose price stays are ``q^b_m(n) - q^b_m(n-1)``
    and ``-(q^a_m(n) - q^a_m(n-1))``, 0 for the levels the diff leaves.
    """
    if len(changes) > 1 and len({c[:2] for c in changes}) < len(changes):
        return False  # one price twice in a diff: the top is read again
    _, bq, _, aq = top
    ofi = st.ofi
    for side, m, old, q in changes:
        if side:
            aq[m] = q
            ofi[m] -= q - old
        else:
            bq[m] = q
            ofi[m] += q - old
    return True


def _accumulate(st: DepthState, now: tuple[list, list, list, list], moved: bool = True) -> None:
    """Add one applied diff's level OFIs and level depths (``now``: the top ``L`` after it).

    ``moved``: whether the top ``L``'s prices may differ from the ones before
    the diff (if not, the diff's level OFIs were added by
    :func:`_requantify`).

    The common cases run as C-level maps over the levels: a side whose
    level prices did not move adds its quantity changes (the OFI's terms
    then reduce to ``q^b_m(n) - q^b_m(n-1)`` and ``-(q^a_m(n) - q^a_m(n-1))``).
    """
    bp1, bq1, ap1, aq1 = now
    n = st.depth.levels
    ofi = st.ofi
    prev = st.prev
    if prev is not None and moved:
        bp0, bq0, ap0, aq0 = prev
        if bp1 == bp0 and len(bq1) == n:
            if bq1 != bq0:
                ofi = list(map(add, ofi, map(sub, bq1, bq0)))
        else:  # zip stops at the shallowest of the two books
            for m, (b1, b0, q1, q0) in enumerate(zip(bp1, bp0, bq1, bq0, strict=False)):
                ofi[m] += (q1 if b1 >= b0 else 0.0) - (q0 if b1 <= b0 else 0.0)
        if ap1 == ap0 and len(aq1) == n:
            if aq1 != aq0:
                ofi = list(map(add, ofi, map(sub, aq0, aq1)))
        else:
            for m, (a1, a0, r1, r0) in enumerate(zip(ap1, ap0, aq1, aq0, strict=False)):
                ofi[m] += (r0 if a1 >= a0 else 0.0) - (r1 if a1 <= a0 else 0.0)
        st.ofi = ofi
    dsum = st.depth_sum
    if len(bq1) == n and len(aq1) == n:
        st.depth_sum = list(map(add, map(add, dsum, bq1), aq1))
    else:
        for m, (q1, r1) in enumerate(zip(bq1, aq1, strict=False)):
            dsum[m] += q1 + r1
    st.updates += 1


def _within(px: list, qty: dict, mid: float, bps: tuple[float, ...], sign: float) -> tuple[float, ...]:
    """The quantity on one side within each of ``bps`` (ascending) of ``mid``, the touch included.

    ``sign``: -1 for the bids (below ``mid``), 1 for the asks. The bands are
    nested, so each level is read once: summed from the touch outward, one
    band after the other.
    """
    get = qty.__getitem__
    total, res = 0.0, []
    if sign < 0:
        end = bisect_right(px, mid)
        for b in bps:
            i = bisect_left(px, mid * (1.0 - b / _BPS), 0, end)
            total = sum(map(get, px[i:end][::-1]), total)
            res.append(total)
            end = i
    else:
        start = bisect_left(px, mid)
        for b in bps:
            k = bisect_right(px, mid * (1.0 + b / _BPS), start)
            total = sum(map(get, px[start:k]), total)
            res.append(total)
            start = k
    return tuple(res)


def _walk(levels: Sequence[float], qty: dict, notional: float, mid: float, sign: float) -> Optional[float]:
    """The cost (bps of ``mid``) of taking ``notional`` from ``levels``, best first; None if they hold less."""
    left, base = notional, 0.0
    for p in levels:
        v = p * qty[p]
        if v >= left:
            base += left / p
            return sign * (notional / base / mid - 1.0) * _BPS
        left -= v
        base += qty[p]
    return None


def _flat_stats(st: DepthState, first: bool) -> BookStats:
    """:func:`_stats` of a compiled book."""
    book, f = st.book, st.book.flat
    assert f is not None and st.flat is not None and st.counts is not None
    if book.status != LOADED and book.status != SYNCED or f.bid != f.bid or f.ask != f.ask:
        return _NOT_READY
    c = st.depth
    if st.live:
        nb, na = st.counts[:2].tolist()
        top = st.flat[:4].tolist()
        bpx, bq, apx, aq = top[0][:nb], top[1][:nb], top[2][:na], top[3][:na]
    else:
        bpx, bq = f.levels(0, c.levels)
        apx, aq = f.levels(1, c.levels)
    k = min(len(bpx), len(apx))
    if first and st.updates:
        u = st.updates
        ofi = tuple(st.flat[4, :k].tolist())
        level_depth = tuple(d * 0.5 / u for d in st.flat[5, :k].tolist())
        e = st.counts[2:].tolist()
    else:
        ofi = (0.0,) * k
        level_depth = tuple((bq[m] + aq[m]) * 0.5 for m in range(k))
        e = [0] * 6
    mid = (bpx[0] + apx[0]) * 0.5
    bps = np.array(c.within_bps, dtype=np.float64)
    w = c.walk_notional
    return BookStats(True, ofi, level_depth, tuple(bpx), tuple(bq), tuple(apx), tuple(aq),
                     f.within(0, mid, bps), f.within(1, mid, bps), f.walk(1, w, mid), f.walk(0, w, mid),
                     e[0], e[3], e[1], e[4], e[2], e[5], st.updates if first else 0)


def _stats(st: DepthState, first: bool) -> BookStats:
    """The book over the bar now closing; ``first``: the bar that had the accumulated diffs (not a carried one)."""
    if st.compiled:
        return _flat_stats(st, first)
    book = st.book
    if book.status != LOADED and book.status != SYNCED or not book.bid_px or not book.ask_px:
        return _NOT_READY
    c = st.depth
    bpx, bq, apx, aq = st.prev if st.prev is not None else _top(book, c.levels)
    k = min(len(bpx), len(apx))
    if first and st.updates:
        u = st.updates
        ofi = tuple(st.ofi[:k])
        level_depth = tuple(d * 0.5 / u for d in st.depth_sum[:k])
        e = st.events
    else:
        ofi = (0.0,) * k
        level_depth = tuple((bq[m] + aq[m]) * 0.5 for m in range(k))
        e = [0] * 6
    mid = (bpx[0] + apx[0]) * 0.5
    within_b = _within(book.bid_px, book.bid_qty, mid, c.within_bps, -1.0)
    within_a = _within(book.ask_px, book.ask_qty, mid, c.within_bps, 1.0)
    w = c.walk_notional
    buy = _walk(book.ask_px, book.ask_qty, w, mid, 1.0)
    sell = _walk(reversed(book.bid_px), book.bid_qty, w, mid, -1.0)  # type: ignore[arg-type]
    return BookStats(True, ofi, level_depth, tuple(bpx), tuple(bq), tuple(apx), tuple(aq), within_b, within_a,
                     buy, sell, e[0], e[3], e[1], e[4], e[2], e[5], st.updates if first else 0)


def _clear(st: DepthState) -> None:
    if st.flat is not None and st.counts is not None:
        st.flat[4:] = 0.0
        st.counts[2:] = 0
        st.updates = 0
        return
    n = st.depth.levels
    st.ofi = [0.0] * n
    st.depth_sum = [0.0] * n
    st.events = [0] * 6
    st.updates = 0


def _with_depth(st: DepthState, out: Sequence[Out], start: int) -> list:
    """The bars' outputs, each bar with the book over it (``start``: the start of the bar the diffs went to).

    The bars without a ready book are counted (``depth_features_missing``).
    """
    res: list = []
    missing = 0
    for o in out:
        if type(o) is Bar:
            d = _stats(st, o.ts_start == start)
            missing += not d.ready
            o = msgspec.structs.replace(o, depth=d)
        res.append(o)
    if missing:
        res.append(Count("depth_features_missing", missing))
    return res


def step(state: DepthState, event: Event) -> tuple[DepthState, Sequence[Out]]:
    """Feed one event; return the bars it closes, with the book over each, and the book's dead letters and counts.

    ``state`` is updated in place and returned. The book's own records
    (quotes, gaps, snapshot requests) stay inside: its counts and dead
    letters go out.
    """
    st = state
    bst = st.bars  # bars.step updates it in place
    start = bst.start
    cls = type(event)
    if cls is not DepthUpdate and cls is not BookSnapshot:
        out = bars.step(bst, event)[1]
        if out and st.seen:
            out = _with_depth(st, out, start)
        if bst.start != start:
            _clear(st)
        return st, out
    late = event.ts_recv < bst.max_ts - bst.lateness
    out = bars.step(bst, event)[1]
    if out and st.seen:
        out = _with_depth(st, out, start)
    if bst.start != start:
        _clear(st)
    if late:
        return st, out
    st.seen = True
    book = st.book
    if st.compiled:
        return st, _flat_diff(st, event, out)  # type: ignore[arg-type]
    changes = None
    if cls is DepthUpdate and (book.status == SYNCED or book.status == LOADED):
        changes = _scan(st, event)  # type: ignore[arg-type]
    _, recs = orderbook.step(book, event)
    if book.status == SYNCED or book.status == LOADED:
        prev = st.prev
        applied = cls is DepthUpdate and prev is not None and book.last_id == event.last_id  # type: ignore[union-attr]
        # a diff that leaves the top L's prices: its quantity changes are applied to the top L kept, not read again
        if changes is not None and prev is not None and (not applied or not changes or _requantify(st, prev, changes)):
            if applied:
                _accumulate(st, prev, moved=False)
        else:
            now = _top(book, st.depth.levels)
            if applied:
                _accumulate(st, now)
            st.prev = now
    else:
        st.prev = None
    side = [r for r in recs if type(r) is Count or type(r) is ErrorRecord]
    return st, [*out, *side] if side else out


def _flat_diff(st: DepthState, event: Union[DepthUpdate, BookSnapshot], out: list) -> list:
    """The book's part of :func:`step` with a compiled book: the same counts and accumulators as the reference's."""
    book, counts = st.book, st.counts
    assert book.flat is not None and counts is not None
    if type(event) is DepthUpdate and (book.status == SYNCED or book.status == LOADED):
        book.flat.events(*orderbook.flat_levels(event), st.depth.levels, counts[2:])
    _, recs = orderbook.step(book, event)
    return _flat_tail(st, event, out, recs)


def _flat_tail(st: DepthState, event: Union[DepthUpdate, BookSnapshot], out: list, recs: Sequence[Any]) -> list:
    """The rest of :func:`_flat_diff` once the book has taken ``event`` (its records ``recs``)."""
    book, flat, counts = st.book, st.flat, st.counts
    assert book.flat is not None and flat is not None and counts is not None
    if book.status == SYNCED or book.status == LOADED:
        applied = type(event) is DepthUpdate and st.live and book.last_id == event.last_id
        book.flat.accumulate(st.depth.levels, flat, counts, applied)
        st.live = True
        if applied:
            st.updates += 1
    else:
        st.live = False
    side = [r for r in recs if type(r) is Count or type(r) is ErrorRecord]
    return [*out, *side] if side else out


def warm() -> None:
    """Load the compiled code of :func:`run` (from numba's cache; compiled the first time), as a live run does."""
    from operators import flatbars

    z = np.zeros(1, np.int64)
    cols = EventColumns(np.ones(1, np.int8), z, z, z, np.zeros((1, 4)), z, z, np.zeros((1, 3), np.int64),
                        np.zeros(0), np.zeros(0))
    flatbars.advance(DepthState(BarConfig(), DepthConfig(), True), cols, 0, False)


def run(state: DepthState, events: Sequence[Event], cols: EventColumns, i: int) -> tuple[DepthState, int, list]:
    """:func:`step` over ``events`` from ``i`` on, as far as compiled code takes them (:mod:`operators.flatbars`).

    ``cols`` are the events' fields in arrays. Returns the state and
    ``(j, out)``: the events ``i`` to ``j - 1`` were stepped, and ``out``
    is what the last of them gave (the others gave nothing); the caller
    steps event ``j`` with :func:`step`. A state without a compiled book
    takes none (``j == i``).
    """
    st = state
    if not st.compiled:
        return st, i, []
    from operators import flatbars  # numba: the chunk path's

    j, code = flatbars.advance(st, cols, i, st.book.status == SYNCED)
    if code != flatbars.CROSSED:
        return st, j, []
    ev = events[j - 1]  # a diff applied that left the book crossed: the book's rules, then the rest of the step
    assert type(ev) is DepthUpdate
    recs: list = []
    orderbook.after_diff(st.book, ev, recs, ev.ts_recv, True, True)
    return st, j, _flat_tail(st, ev, [], recs)

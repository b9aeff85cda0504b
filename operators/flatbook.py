"""The sides of an order book in sorted NumPy arrays, changed by compiled code: the chunk path's book (issue 28).

:mod:`operators.orderbook` keeps each side as a dict of quantities and a
sorted list of prices, in Python: the reference. With
``OrderBookConfig(compiled=True)`` it keeps them here instead, and a depth
diff's levels are applied by one call of a kernel compiled with numba; the
book's rules (sequence checks, snapshots, resyncs) stay in
:mod:`operators.orderbook`, once. The books are the same, level for level
(``tests/operators/test_flatbook.py`` checks it over the recordings).

Layout: per side (0 bids, 1 asks) a row of keys and a row of quantities,
sorted by key, the best level last. A bid's key is its price and an ask's is
minus its price (negation is exact), so both sides are one code. The levels
of a side lie in ``[lo, hi)`` of a row with room on both ends: a level
joins or leaves by moving the shorter part of the row, and the levels beyond
``max_depth`` (the farthest from the top, at the front) go by moving ``lo``.

>>> import numpy as np
>>> s = new(3)
>>> s.load([99.0, 98.0], [1.0, 2.0], [101.0], [3.0])
>>> s.apply(np.array([99.5, 98.0, 100.5]), np.array([4.0, 0.0, 1.0]), 0, 2, 3)   # a bid joins, one goes; an ask
False
>>> s.bid, s.ask, s.levels(0), s.levels(1)
(99.5, 100.5, ([99.5, 99.0], [4.0, 1.0]), ([100.5, 101.0], [1.0, 3.0]))
>>> s.qty_at(1, 101.0), s.qty_at(1, 102.0)
(3.0, 0.0)

Only the chunk path imports this module (and numba with it): the
per-message path's operators reach it through the compiled states they
make, never at their own import.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import numba
import numpy as np

__all__ = ["FlatSides", "levels_fine", "new", "warm"]


@dataclass(slots=True)
class FlatSides:
    """Both sides of a book: ``keys`` and ``qty`` of shape (2, capacity), ``ix`` the ``lo, hi`` of each side.

    ``bid`` and ``ask``: the best prices, NaN for an empty side. A side is
    0 (bids) or 1 (asks).
    """

    keys: np.ndarray
    qty: np.ndarray
    ix: np.ndarray
    max_depth: int
    bid: float = math.nan
    ask: float = math.nan
    watch: Optional[np.ndarray] = None  # the maker's: prices per side (2, n; NaN pads) whose levels apply() notes
    noted: tuple = field(default_factory=lambda: ({}, {}))  # what apply() noted: bids, asks; price -> (before, after)
    notes: np.ndarray = field(default_factory=lambda: np.empty((4, 64)))  # apply()'s room for them

    def __setstate__(self, state: tuple[None, dict]) -> None:
        """Unpickle (the state of a class with slots: ``(None, {slot: value})``).

        A snapshot taken when the notes were one map, ``seen``: ``(side,
        price) -> (before, after)``, resumes with them as the bids' and the
        asks' (``noted``).
        """
        for name, value in state[1].items():
            if name == "seen":
                name, value = "noted", tuple({p: v for (sd, p), v in value.items() if sd == side} for side in (0, 1))
            setattr(self, name, value)

    def load(self, bid_px: Sequence[float], bid_qty: Sequence[float], ask_px: Sequence[float],
             ask_qty: Sequence[float]) -> None:
        """Replace both sides: each given best first, positive quantities, distinct prices."""
        n = max(len(bid_px), len(ask_px))
        cap = max(_capacity(self.max_depth), _capacity(n))
        if cap != self.keys.shape[1]:
            self.keys, self.qty = np.zeros((2, cap)), np.zeros((2, cap))
        for side, px, qt, sign in ((0, bid_px, bid_qty, 1.0), (1, ask_px, ask_qty, -1.0)):
            m = len(px)
            lo = (cap - m) // 2
            self.keys[side, lo:lo + m] = np.asarray(px[::-1], dtype=np.float64) * sign
            self.qty[side, lo:lo + m] = np.asarray(qt[::-1], dtype=np.float64)
            self.ix[2 * side], self.ix[2 * side + 1] = lo, lo + m
        for side in range(2):
            if self.ix[2 * side + 1] - self.ix[2 * side] > self.max_depth:
                self.ix[2 * side] = self.ix[2 * side + 1] - self.max_depth
        self.bid = float(bid_px[0]) if len(bid_px) else math.nan
        self.ask = float(ask_px[0]) if len(ask_px) else math.nan

    def count(self, side: int) -> int:
        """The levels of a side."""
        return int(self.ix[2 * side + 1] - self.ix[2 * side])

    def levels(self, side: int, n: int = -1) -> tuple[list[float], list[float]]:
        """The prices and quantities of a side's best ``n`` levels (all: -1), best first."""
        lo, hi = int(self.ix[2 * side]), int(self.ix[2 * side + 1])
        if n >= 0:
            lo = max(lo, hi - n)
        keys = self.keys[side, lo:hi][::-1]
        return (keys if side == 0 else -keys).tolist(), self.qty[side, lo:hi][::-1].tolist()

    def qty_at(self, side: int, price: float) -> float:
        """The quantity at ``price`` on a side, 0 where it has no level."""
        return float(_qty_at(self.keys[side], self.qty[side], self.ix[2 * side], self.ix[2 * side + 1],
                             price if side == 0 else -price))

    def apply(self, prices: np.ndarray, qty: np.ndarray, lo: int, mid: int, hi: int) -> bool:
        """Set a diff's levels and trim the sides; whether the book is then crossed.

        The bids are ``[lo, mid)`` of the arrays, the asks ``[mid, hi)``. A
        quantity sets the level, 0 removes it, as
        :func:`operators.orderbook._apply` does.
        """
        watch = self.watch
        if watch is None:
            watch, out = _NO_WATCH, _NO_SEEN
        else:
            out = self.notes
            if out.shape[1] < hi - lo:
                out = self.notes = np.empty((4, hi - lo))
        r, self.bid, self.ask, n = _apply(self.keys, self.qty, self.ix, prices, qty, lo, mid, hi, self.max_depth,
                                          watch, out)
        if r == 2:  # rows too short for this diff: longer ones, the levels as they are
            need = max(self.count(0), self.count(1)) + hi - lo + 2
            (bp, bq), (ap, aq) = self.levels(0), self.levels(1)
            depth, self.max_depth = self.max_depth, max(self.max_depth, need)  # load() sizes the rows by it
            self.load(bp, bq, ap, aq)
            self.max_depth = depth
            r, self.bid, self.ask, n = _apply(self.keys, self.qty, self.ix, prices, qty, lo, mid, hi, self.max_depth,
                                              watch, out)
        if self.watch is not None:
            self.noted = self.note(n)
        return r == 1

    def note(self, n: int) -> tuple[dict, dict]:
        """The first ``n`` notes: the levels at the watched prices, as bids' and asks' ``price -> (before, after)``.

        A price set twice by one diff: the quantity before the first, after the last.
        """
        bids: dict = {}
        asks: dict = {}
        if n:
            for side, p, before, after in zip(*self.notes[:, :n].tolist(), strict=True):
                d = bids if side == 0.0 else asks
                was = d.get(p)
                d[p] = (before if was is None else was[0], after)
        return bids, asks

    # --- the depth features' part (operators.depth) ----------------------------------------------------

    def events(self, prices: np.ndarray, qty: np.ndarray, lo: int, mid: int, hi: int, n: int,
               counts: np.ndarray) -> None:
        """Count a diff's book events against the book before it, as :func:`operators.depth._scan` does.

        ``counts``: adds, cancels, changes of the bids, then of the asks, for
        the diff's levels at or better than the ``n``-th level of their side.
        """
        _events(self.keys, self.qty, self.ix, prices, qty, lo, mid, hi, n, counts)

    def accumulate(self, n: int, acc: np.ndarray, lens: np.ndarray, applied: bool) -> None:
        """Read the top ``n`` levels into ``acc``, after adding, if ``applied``, their change's level OFIs and depths.

        ``acc``'s rows: the top's bid prices, bid quantities, ask prices, ask
        quantities (``lens[0]``, ``lens[1]`` of them), then the level OFIs and
        the depth sums, added to as :func:`operators.depth._accumulate` adds.
        """
        _accumulate(self.keys, self.qty, self.ix, n, acc, lens, applied)

    def within(self, side: int, mid: float, bps: np.ndarray) -> tuple[float, ...]:
        """The quantity on a side within each of ``bps`` (ascending) of ``mid``, as :func:`operators.depth._within`."""
        out = np.zeros(len(bps))
        _within(self.keys[side], self.qty[side], self.ix[2 * side], self.ix[2 * side + 1], 1.0 if side == 0 else -1.0,
                mid, bps, out)
        return tuple(out.tolist())

    def walk(self, side: int, notional: float, mid: float) -> Optional[float]:
        """The cost (bps of ``mid``) of taking ``notional`` from a side, best first; None if it holds less."""
        x = _walk(self.keys[side], self.qty[side], self.ix[2 * side], self.ix[2 * side + 1],
                  1.0 if side == 0 else -1.0, notional, mid)
        return None if x != x else float(x)


def warm() -> None:
    """Load every kernel (from numba's cache; compiled the first time), as a live run does before its first tick."""
    s = new(2)
    s.load([1.0], [1.0], [2.0], [1.0])
    px, qty = np.array([1.5, 2.5]), np.array([1.0, 0.0])
    s.events(px, qty, 0, 1, 2, 2, np.zeros(6, np.int64))
    s.apply(px, qty, 0, 1, 2)
    s.watch = np.array([[1.5], [2.5]])
    s.apply(px, qty, 0, 1, 2)
    s.accumulate(2, np.zeros((6, 2)), np.zeros(2, np.int64), True)
    s.within(0, 2.0, np.array([5.0]))
    s.walk(1, 1.0, 2.0)
    s.qty_at(0, 1.0)
    levels_fine(px, qty, 0, 2, 1.0)


_NO_WATCH = np.full((2, 1), np.nan)
_NO_SEEN = np.empty((4, 0))


def _capacity(n: int) -> int:
    return 2 * n + 64


def new(max_depth: int) -> FlatSides:
    """Two empty sides keeping at most ``max_depth`` levels each."""
    cap = _capacity(max_depth)
    mid = cap // 2
    return FlatSides(np.zeros((2, cap)), np.zeros((2, cap)), np.array([mid, mid, mid, mid], dtype=np.int64),
                     max_depth)


# --- kernels -----------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _find(k: np.ndarray, lo: int, hi: int, key: float) -> int:  # pragma: no cover - compiled
    """``bisect_left(k, key, lo, hi)``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if k[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True, nogil=True)
def _qty_at(k: np.ndarray, q: np.ndarray, lo: int, hi: int, key: float) -> float:  # pragma: no cover - compiled
    i = _find(k, lo, hi, key)
    return q[i] if i < hi and k[i] == key else 0.0


@numba.njit(cache=True, nogil=True)
def _recenter(k: np.ndarray, q: np.ndarray, lo: int, hi: int) -> int:  # pragma: no cover - compiled
    """Move ``[lo, hi)`` to the middle of the row; its new ``lo``."""
    n = hi - lo
    to = (k.shape[0] - n) // 2
    if to < lo:
        for t in range(n):
            k[to + t] = k[lo + t]
            q[to + t] = q[lo + t]
    elif to > lo:
        for t in range(n - 1, -1, -1):
            k[to + t] = k[lo + t]
            q[to + t] = q[lo + t]
    return to


@numba.njit(cache=True, nogil=True)
def _shift(k: np.ndarray, q: np.ndarray, a: int, b: int, d: int) -> None:  # pragma: no cover - compiled
    """Move the levels ``[a, b)`` by ``d`` places (1 up or -1 down), into the free place beside them.

    The places are unsigned: then numba has no negative index to wrap, and
    the loops compile to vector moves (four times faster on 128 levels).
    """
    one = np.uint64(1)
    lo = np.uint64(a)
    if d > 0:
        t = np.uint64(b)
        while t > lo:
            t -= one
            k[t + one] = k[t]
            q[t + one] = q[t]
    else:
        for x in range(np.uint64(b - a)):
            t = lo + x
            k[t - one] = k[t]
            q[t - one] = q[t]


@numba.njit(cache=True, nogil=True)
def _apply_side(k: np.ndarray, q: np.ndarray, ix: np.ndarray, side: int, prices: np.ndarray, qty: np.ndarray,
                a: int, b: int, sign: float, watch: np.ndarray, out: np.ndarray,
                n_out: int) -> int:  # pragma: no cover - compiled
    """The levels ``[a, b)`` set on one side; the number noted in ``out`` then.

    Those at the prices of ``watch[side]`` are noted in ``out`` from
    ``n_out`` on: side, price, quantity before, after.
    """
    lo = ix[2 * side]
    hi = ix[2 * side + 1]
    cap = k.shape[0]
    if lo < b - a or cap - hi < b - a:  # not room for every level on each end: to the middle
        to = _recenter(k, q, lo, hi)
        hi += to - lo
        lo = to
    w_lo, w_hi = np.inf, -np.inf  # the watched prices' range (NaN pads fall out)
    if out.shape[1]:
        for w in range(watch.shape[1]):
            px = watch[side, w]
            if px < w_lo:
                w_lo = px
            if px > w_hi:
                w_hi = px
    for j in range(a, b):
        key = prices[j] * sign
        x = qty[j]
        i = _find(k, lo, hi, key)
        found = i < hi and k[i] == key
        if w_lo <= prices[j] <= w_hi:
            for w in range(watch.shape[1]):
                if watch[side, w] == prices[j]:
                    out[0, n_out] = side
                    out[1, n_out] = prices[j]
                    out[2, n_out] = q[i] if found else 0.0
                    out[3, n_out] = x
                    n_out += 1
                    break
        if x != 0.0:
            if found:
                q[i] = x
            else:
                if i - lo < hi - i:  # the levels below it move down one
                    _shift(k, q, lo, i, -1)
                    lo -= 1
                    i -= 1
                else:  # the levels from it up move up one
                    _shift(k, q, i, hi, 1)
                    hi += 1
                k[i] = key
                q[i] = x
        elif found:  # it goes: the shorter part closes the gap
            if i - lo < hi - 1 - i:
                _shift(k, q, lo, i, 1)
                lo += 1
            else:
                _shift(k, q, i + 1, hi, -1)
                hi -= 1
    ix[2 * side] = lo
    ix[2 * side + 1] = hi
    return n_out


@numba.njit(cache=True, nogil=True)
def _takes(ids: np.ndarray, first_ids: np.ndarray, prev_ids: np.ndarray, levels: np.ndarray, j: int, last_id: int,
           ix: np.ndarray, cap: int) -> bool:  # pragma: no cover - compiled
    """Whether a synced book applies diff ``j`` of a batch's columns at once, with room in its rows for it.

    As :func:`operators.orderbook.step` does: the diff is newer than the
    book's update ``last_id`` and follows it (``pu`` is it, or ``U`` the
    next one on spot); and the rows (``cap`` long) hold every level of the
    diff beside a side's (:func:`_apply`'s room).
    """
    if ids[j] <= last_id:
        return False
    if prev_ids[j] >= 0:
        if prev_ids[j] != last_id:
            return False
    elif first_ids[j] != last_id + 1:
        return False
    return 2 * (max(ix[1] - ix[0], ix[3] - ix[2]) + levels[j, 2] - levels[j, 0] + 2) <= cap


@numba.njit(cache=True, nogil=True)
def _apply(keys: np.ndarray, qty: np.ndarray, ix: np.ndarray, prices: np.ndarray, q: np.ndarray, lo: int, mid: int,
           hi: int, max_depth: int, watch: np.ndarray,
           out: np.ndarray) -> tuple[int, float, float, int]:  # pragma: no cover - compiled
    """Whether the book is then crossed (1, 0; 2: rows too short for the diff, nothing done), best prices, notes.

    The best bid and ask are NaN where a side is empty; the notes: the
    number of levels noted at the prices of ``watch`` (:func:`_apply_side`).
    """
    if 2 * (max(ix[1] - ix[0], ix[3] - ix[2]) + hi - lo + 2) > keys.shape[1]:
        return 2, np.nan, np.nan, 0  # a side centred must have room on both ends for every level
    n = _apply_side(keys[0], qty[0], ix, 0, prices, q, lo, mid, 1.0, watch, out, 0)
    n = _apply_side(keys[1], qty[1], ix, 1, prices, q, mid, hi, -1.0, watch, out, n)
    for side in range(2):
        if ix[2 * side + 1] - ix[2 * side] > max_depth:
            ix[2 * side] = ix[2 * side + 1] - max_depth
    bid = keys[0, ix[1] - 1] if ix[1] > ix[0] else np.nan
    ask = -keys[1, ix[3] - 1] if ix[3] > ix[2] else np.nan
    return (1 if bid >= ask else 0), bid, ask, n


# --- the depth features' kernels ----------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _events_side(k: np.ndarray, q: np.ndarray, lo: int, hi: int, prices: np.ndarray, qty: np.ndarray, a: int,
                 b: int, sign: float, n: int, counts: np.ndarray, c: int) -> None:  # pragma: no cover - compiled
    if a == b or hi == lo:
        return
    worst = k[hi - n] if hi - lo >= n else k[lo]
    for j in range(a, b):
        key = prices[j] * sign
        if key >= worst:
            i = _find(k, lo, hi, key)
            found = i < hi and k[i] == key
            x = qty[j]
            if x == 0.0:
                if found:
                    counts[c + 1] += 1
            elif not found:
                counts[c] += 1
            elif q[i] != x:
                counts[c + 2] += 1


@numba.njit(cache=True, nogil=True)
def _events(keys: np.ndarray, qty: np.ndarray, ix: np.ndarray, prices: np.ndarray, q: np.ndarray, lo: int, mid: int,
            hi: int, n: int, counts: np.ndarray) -> None:  # pragma: no cover - compiled
    _events_side(keys[0], qty[0], ix[0], ix[1], prices, q, lo, mid, 1.0, n, counts, 0)
    _events_side(keys[1], qty[1], ix[2], ix[3], prices, q, mid, hi, -1.0, n, counts, 3)


@numba.njit(cache=True, nogil=True)
def _accumulate(keys: np.ndarray, qty: np.ndarray, ix: np.ndarray, n: int, prev: np.ndarray, lens: np.ndarray,
                applied: bool) -> None:  # pragma: no cover - compiled
    ofi = prev[4]
    dsum = prev[5]
    nb = min(n, ix[1] - ix[0])
    na = min(n, ix[3] - ix[2])
    if applied:
        m0 = min(nb, lens[0])
        for m in range(m0):  # bids: e = q1 1{b1 >= b0} - q0 1{b1 <= b0}
            b1, b0 = keys[0, ix[1] - 1 - m], prev[0, m]
            ofi[m] += (qty[0, ix[1] - 1 - m] if b1 >= b0 else 0.0) - (prev[1, m] if b1 <= b0 else 0.0)
        m0 = min(na, lens[1])
        for m in range(m0):  # asks: e = q0 1{a1 >= a0} - q1 1{a1 <= a0}
            a1, a0 = -keys[1, ix[3] - 1 - m], prev[2, m]
            ofi[m] += (prev[3, m] if a1 >= a0 else 0.0) - (qty[1, ix[3] - 1 - m] if a1 <= a0 else 0.0)
        full = nb == n and na == n
        for m in range(min(nb, na)):
            q1, r1 = qty[0, ix[1] - 1 - m], qty[1, ix[3] - 1 - m]
            if full:
                dsum[m] = dsum[m] + q1 + r1
            else:
                dsum[m] = dsum[m] + (q1 + r1)
    for m in range(nb):
        prev[0, m] = keys[0, ix[1] - 1 - m]
        prev[1, m] = qty[0, ix[1] - 1 - m]
    for m in range(na):
        prev[2, m] = -keys[1, ix[3] - 1 - m]
        prev[3, m] = qty[1, ix[3] - 1 - m]
    lens[0] = nb
    lens[1] = na


@numba.njit(cache=True, nogil=True)
def _within(k: np.ndarray, q: np.ndarray, lo: int, hi: int, sign: float, mid: float, bps: np.ndarray,
            out: np.ndarray) -> None:  # pragma: no cover - compiled
    t = hi - 1
    while t >= lo and (k[t] > mid if sign > 0 else -k[t] < mid):  # beyond the mid: not on this side's way out
        t -= 1
    total = 0.0
    for j in range(bps.shape[0]):
        if sign > 0:
            bound = mid * (1.0 - bps[j] / 10_000.0)
            while t >= lo and k[t] >= bound:
                total += q[t]
                t -= 1
        else:
            bound = mid * (1.0 + bps[j] / 10_000.0)
            while t >= lo and -k[t] <= bound:
                total += q[t]
                t -= 1
        out[j] = total


@numba.njit(cache=True, nogil=True)
def _walk(k: np.ndarray, q: np.ndarray, lo: int, hi: int, sign: float, notional: float,
          mid: float) -> float:  # pragma: no cover - compiled
    left, base = notional, 0.0
    for t in range(hi - 1, lo - 1, -1):
        p = k[t] * sign
        v = p * q[t]
        if v >= left:
            base += left / p
            return -sign * (notional / base / mid - 1.0) * 10_000.0
        left -= v
        base += q[t]
    return np.nan


_MIN = sys.float_info.min  # the smallest positive normal float
_MAX = sys.float_info.max


def levels_fine(px: np.ndarray, qty: np.ndarray, lo: int, hi: int, max_notional: float) -> bool:
    """Whether every level in ``[lo, hi)`` has a normal price, a 0 or normal quantity and a notional within the cap.

    :func:`operators.sanity._levels_fine` on arrays.

    >>> levels_fine(np.array([100.0, 101.0]), np.array([0.0, 5e-324]), 0, 2, 1e9)
    False
    """
    return bool(_levels_fine(px, qty, lo, hi, max_notional))


@numba.njit(cache=True, nogil=True)
def _levels_fine(px: np.ndarray, qty: np.ndarray, lo: int, hi: int,
                 max_notional: float) -> bool:  # pragma: no cover - compiled
    for i in range(lo, hi):
        p, q = px[i], qty[i]
        if not (_MIN <= p <= _MAX and (_MIN <= q <= _MAX or q == 0.0) and p * q <= max_notional):
            return False
    return True

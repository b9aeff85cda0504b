"""The plausibility checks over a run of events in compiled code: the chunk path's ``check_ticks`` (issue 28).

:func:`operators.sanity.step_batch` checks one event at a time, in Python,
with an inline fast path for the common case: a best bid/ask, a trade or a
depth diff received in time, inside the price band, with normal floats and
notionals within the cap, a trade the next id of its instrument's one
sequence. On the chunk path a batch's events also come as arrays
(:class:`~core.events.EventColumns`); :func:`run` takes the events that
the fast path would pass, in one call of a kernel compiled with numba, and
stops at the first it would not (or that has no columns: an event the
per-message parser made), which the caller checks as before. Every event
the kernel takes is passed on unchanged; it keeps the clock, the price
band's samples and median, and the trade id sequence as the fast path does,
by the same float operations in the same order
(``tests/operators/test_flatsanity.py`` checks it over the recordings).
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Any

import numba
import numpy as np

from core.events import EventColumns

__all__ = ["run"]

_MIN = sys.float_info.min
_MAX = sys.float_info.max


@numba.njit(cache=True, nogil=True)
def _push(p: float, rec: np.ndarray, rk: np.ndarray, m: int, window: int,
          band: float) -> tuple[int, float, float, float]:
    """``operators.sanity._push`` on arrays; the samples' new count, the reference and the band.

    ``rec[:m]`` are the samples in order, ``rk[:m]`` the same sorted.
    """
    rec[m] = p
    m += 1
    if m > window:  # the oldest goes: from the sorted ones at its leftmost place (bisect_left)
        old = rec[0]
        rec[: m - 1] = rec[1:m].copy()
        m -= 1
        k = np.searchsorted(rk[:m], old, side="left")
        rk[k : m - 1] = rk[k + 1 : m].copy()
        k = np.searchsorted(rk[: m - 1], p, side="right")  # insort: after its equals
        rk[k + 1 : m] = rk[k : m - 1].copy()
        rk[k] = p
    else:
        k = np.searchsorted(rk[: m - 1], p, side="right")
        rk[k + 1 : m] = rk[k : m - 1].copy()
        rk[k] = p
    ref = rk[m // 2]
    return m, ref, max(ref * (1.0 - band), _MIN), min(ref * (1.0 + band), _MAX)


@numba.njit(cache=True, nogil=True)
def _run(kind: np.ndarray, ts_recv: np.ndarray, values: np.ndarray, ids: np.ndarray, i: int, n: int,
         ints: np.ndarray, floats: np.ndarray, rec: np.ndarray, rk: np.ndarray, window: int, band: float) -> int:
    """The fast path over events ``[i, n)`` while it applies; the index of the first it does not.

    ``ints``: clock, skew, next sample, sample, traded, dedup window (0:
    off), sequences, the sequence's first and latest ids, its gaps, the
    samples' count, samples taken, a quote or trade taken, the first id
    of its first gap, the most gaps kept;
    ``floats``: the band's low and high, the notional cap, the reference.
    Both are updated.
    """
    clock, skew, nxt, sample, traded, dedup = ints[0], ints[1], ints[2], ints[3], ints[4], ints[5]
    nseq, s0, s1, ngaps, m, gap0, most_gaps = ints[6], ints[7], ints[8], ints[9], ints[10], ints[13], ints[14]
    lo, hi, mx = floats[0], floats[1], floats[2]
    pushed = 0
    priced = 0
    j = i
    while j < n:
        k = kind[j]
        ts = ts_recv[j]
        if k == 0 or ts > clock + skew:
            break
        if k == 1:
            b, bq, a, aq = values[j, 0], values[j, 1], values[j, 2], values[j, 3]
            if not (lo <= b and b <= a and a <= hi and b * bq <= mx and a * aq <= mx and (bq >= _MIN or bq == 0.0)
                    and (aq >= _MIN or aq == 0.0)):
                break
            priced = 1
            if ts >= nxt:
                m, floats[3], lo, hi = _push(b * 0.5 + a * 0.5, rec, rk, m, window, band)
                nxt = ts + sample
                pushed += 1
        elif k == 3:  # a depth diff: the largest notional of each side (its floats vouched for by the decoder)
            if not (values[j, 0] <= mx and values[j, 1] <= mx):
                break
        else:  # a plain trade (the decoder's are)
            p, q = values[j, 0], values[j, 1]
            if not (traded and lo <= p and p <= hi and p * q <= mx and (q >= _MIN or q == 0.0)):
                break
            if dedup:
                if not (nseq == 1 and ids[j] == s1 + 1):
                    break
                if s1 + 1 - s0 >= dedup:  # the window moves on: its first id (operators.sanity._forget)
                    first = s1 + 2 - dedup
                    if ngaps and (first > gap0 or ngaps > most_gaps):  # a gap to cut or drop: in Python
                        break
                    s0 = first
                s1 += 1
            priced = 1
            if ts >= nxt:
                m, floats[3], lo, hi = _push(p, rec, rk, m, window, band)
                nxt = ts + sample
                pushed += 1
        if ts > clock:
            clock = ts
        j += 1
    ints[0], ints[2], ints[7], ints[8], ints[10], ints[11], ints[12] = clock, nxt, s0, s1, m, pushed, priced
    floats[0], floats[1] = lo, hi
    return j


def run(st: Any, cols: EventColumns, i: int, n: int, most_gaps: int) -> tuple[int, bool]:
    """How far from ``i`` the events ``[i, n)`` of a batch (``cols``) pass the fast path of ``check_ticks``.

    ``st`` is a :class:`operators.sanity.SanityState` whose fast path
    applies (after the warm-up, nothing held, a reference, a clock);
    ``most_gaps`` the most gaps a trade id sequence keeps.
    Returns ``(j, priced)``: events ``[i, j)`` pass, and whether one of
    them was a quote or a trade. ``st`` is then as passing them leaves it,
    but for the agreeing out-of-band prices (``outside``), which a quote or
    a trade passed empties: the caller's to clear where ``priced``.
    """
    c = st.config
    seqs = st.ids
    s0, s1, gaps = (seqs[0][0], seqs[0][1], seqs[0][2]) if seqs else (0, 0, ())
    m = len(st.ranked)
    ints = np.array([st.clock, st.skew, st.next_sample, st.sample, int(st.traded), c.duplicate_window, len(seqs), s0,
                     s1, len(gaps), m, 0, 0, gaps[0][0] if gaps else 0, most_gaps], dtype=np.int64)
    floats = np.array([st.lo, st.hi, st.max_notional, st.reference])
    rec = np.empty(c.window + 1)
    rk = np.empty(c.window + 1)
    rec[:m] = st.recent
    rk[:m] = st.ranked
    j = int(_run(cols.kind, cols.ts_recv, cols.values, cols.ids, i, n, ints, floats, rec, rk, c.window,
                 c.price_band))
    st.clock, st.next_sample = int(ints[0]), int(ints[2])
    if seqs and c.duplicate_window:
        seqs[0][0], seqs[0][1] = int(ints[7]), int(ints[8])
    if ints[11]:  # samples taken
        m = int(ints[10])
        st.recent = deque(rec[:m].tolist())
        st.ranked = rk[:m].tolist()
        st.reference = float(floats[3])
        st.lo, st.hi = float(floats[0]), float(floats[1])
    return j, bool(ints[12])


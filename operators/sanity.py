"""Plausibility checks on market data, per instrument, before the bars.

The parser rejects what is malformed (bad JSON, missing fields, NaN, infinite
or non-positive numbers, crossed quotes). What it lets through can still be
implausible: a quote at 1e300, a subnormal price whose log underflows, a
kline that ends where it starts, a line stamped an hour ahead. This operator
dead-letters such events (an :class:`ErrorRecord` with the reason and the
event, and a counter ``implausible_<check>``) and passes every other event on
unchanged and in order. Each decision uses only what the instrument accepted
before it (and, for a jump of the clock, the next event: see below), so the
checks are causal and prefix-invariant.

First, an aggTrade of an instrument that has passed on a plain trade is
skipped (counter ``aggtrades_skipped``; see *Trades and aggTrades* below).
Then the checks, in order (the first that fails names the dead letter):

``duplicate``
    A trade whose id the instrument has already passed on, within the last
    ``duplicate_window`` ids of its sequence (counter ``duplicate_trades``;
    see *Duplicates* below). A copy of a trade passed on is caught as it
    arrives, before any other check or hold, so it changes nothing.
``kline``
    A kline must cover time (``ts_open < ts_close``), have
    ``high >= max(open, close)``, ``low <= min(open, close)``, a volume,
    quote volume, taker-buy volume and trade count ``>= 0``.
``float``
    Every price is a finite **normal** float (``>= 2.2e-308``: a subnormal
    price loses precision and its log return underflows), every quantity is
    0 or a finite normal float.
``notional``
    ``price x quantity`` of a trade, of each side of a quote and of each depth
    level is at most ``max_notional`` (in the quote currency): a quantity cap
    that scales with the price, so one value fits every instrument.
``future``
    The instrument's **clock** is the latest receive time it accepted. An
    event more than ``max_skew_ms`` ahead of it is held, and the instrument's
    next ``future_confirmations`` events decide: if each of them is also more
    than the skew ahead of the clock, and at or after the held event's time
    (less the skew), time really moved on (the feed was silent) and the held
    events go through, in order; as soon as one is not, the held events were
    stamped in the future: they are dead-lettered and the clock does not move. A kline that starts
    where the last accepted kline of the instrument closed (within the skew),
    received within the skew after its own close, vouches for itself and is
    not held (klines arrive one interval apart). The cost: after a silence
    longer than the skew an instrument's first event waits for the next
    ``future_confirmations``; the limit: that many consecutive lines forged
    in the same future, and nothing real between them, do move the clock.
``price_band``
    The **reference** is the median (the upper median of an even count) of
    the last ``window`` samples of the accepted prices (trade prices, quote
    mids, kline closes), at most one every ``sample_ms`` of receive time: a
    time-weighted median of the last seconds, and cheap to keep. A trade
    price, both sides of a quote and the low and high of a kline must lie
    within ``reference x (1 +- price_band)``. Depth updates are
    not banded: a book legitimately holds orders far from the price. A real
    regime jump (a crash after a gap in the feed) must not freeze the
    instrument: after ``reanchor_after`` consecutive out-of-band prices that
    agree with each other (each within the band of the first), the last of
    them is accepted and becomes the new reference (counted in
    ``price_band_reanchors``); the ones before it stay dead-lettered.

**Silences.** After the instrument's feed was silent for longer than
``stale_after_ms`` (a gap in a recording, a reconnect), the reference price
says nothing about the price now: the instrument starts afresh, with a
warm-up as below (counted in ``price_band_restarts``).

**Warm-up.** The first price of an instrument has nothing to be compared
with, and a bad first price would poison the reference. So the first
``warmup`` events of an instrument are held; then the reference starts at
the median of their prices and the clock at the median of their receive
times, and the held events are checked in order against them (a single bad
price or timestamp among them is outvoted). Until an instrument has had
``warmup`` events, nothing of it is passed on.

**Duplicates.** The same trade can arrive twice: two collectors feed one
topic, a producer or a replay delivers again what it had delivered (Kafka
is at least once), a recording is read twice. Binance numbers the trades of
a symbol consecutively, and its aggTrades in a numbering of their own, so
each instrument follows the ids of the trades it passed on as
**sequences**, those of plain trades and those of aggTrades apart (told by
:attr:`Trade.agg`, never by the ids; at most four of each kind, the least
recently used forgotten first). A sequence is
its first and latest ids and the gaps (runs of ids not passed on) between
them, within its last ``duplicate_window`` ids: O(1) however many trades it
has seen. A trade whose id a sequence has passed on is dead-lettered as a
duplicate; otherwise it goes through the other checks, and if it is passed
on, its id joins

- the sequence it continues (the next id: the common case, one comparison),
- or the sequence whose gap it fills (a late trade),
- or the sequence it precedes within the window (a trade older than the
  first one seen),
- or the sequence it follows within the window (after a gap: the ids in
  between become a gap; a sequence keeps at most 256 gaps, and forgets the
  ids below its oldest gap beyond them, as if never seen),
- or a new sequence.

So within the window a trade passed on is never passed on again, and a
trade never passed on is never taken for a duplicate: a copy that a check
dead-letters (a line forged in the future with the id of the next trade)
does not make the real trade a duplicate. A copy older than the window is
not caught (the bar builder dead-letters it as late on the receive clock).
A trade id and an aggTrade id are never compared, however close they are
(a symbol listed minutes ago numbers both from near 0).

**Trades and aggTrades.** Binance reports the same fills twice to whoever
streams both ``trade`` and ``aggTrade`` (``ticklet collect`` records both
by default): each fill as a trade, and each run of fills of one taker
order at one price and time as an aggTrade. Passed on both, they would
count every fill twice in the bars (volume, VWAP, trade counts, buy and
sell volume) and in every feature made from them. So once an instrument
has passed on a plain trade, its aggTrades are skipped as they arrive,
before any other check or hold, and counted (``aggtrades_skipped``); an
aggTrade held (warm-up, clock) when the instrument passes on its first
plain trade is skipped when its turn comes. The plain trades are kept:
they are each fill, the aggTrades only their sums. An instrument that
never has a plain trade (aggTrade streams or archives alone) keeps its
aggTrades. The rule looks only at what the instrument passed on before,
so it is causal and prefix-invariant. Its cost: aggTrades passed on before
the first plain trade (the ``aggTrade`` stream started first) may hold
fills that plain trades report again; a ``trade`` stream that stops while
the ``aggTrade`` stream goes on loses those fills (``ticklet collect``
reports them as ``gaps_trade``).

Examples
--------
>>> from core.events import Quote, Trade
>>> cfg = SanityConfig(warmup=3, reanchor_after=3)
>>> st = SanityState(cfg)
>>> S = 10**9
>>> def q(t, bid, ask):
...     return Quote("X", t, None, bid, 1.0, ask, 1.0, t)
>>> evs = [q(0, 100.0, 100.2), q(1 * S, 100.1, 100.3), q(2 * S, 100.0, 100.2),  # the warm-up
...        q(3 * S, 150.0, 150.2),                 # a quote out of the band
...        q(4 * S, 100.1, 100.3),
...        q(3600 * S, 100.1, 100.3),              # stamped an hour ahead: held...
...        q(5 * S, 100.2, 100.4)]                 # ...and the next event is back at the clock
>>> out = []
>>> for ev in evs:
...     st, o = step(st, ev)
...     out += o
>>> [e.ts_recv // S for e in out if type(e) is Quote]
[0, 1, 2, 4, 5]
>>> for e in out:
...     if type(e) is ErrorRecord:
...         print(e.ts_recv // S, e.reason)
3 outside the price band: [150.0, 150.2] > 120.12 (reference 100.1 +-20%)
3600 from the future: 3596.000 s ahead of the instrument's clock (more than 5000 ms), and the next event was not
>>> st.clock // S, round(st.reference, 6)  # the clock never moved to 3600 s
(5, 100.2)
"""

from __future__ import annotations

import sys
from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field

from core.events import (
    BookSnapshot,
    Count,
    DepthUpdate,
    ErrorRecord,
    Event,
    EventColumns,
    Kline,
    Levels,
    Quote,
    Trade,
    event_json,
)

__all__ = ["STAGE", "SanityConfig", "SanityState", "step", "step_batch", "warm"]

#: The ``stage`` of this operator's dead letters (the dataflow step's name).
STAGE = "check_ticks"

Out = Union[Event, ErrorRecord, Count]

_MIN = sys.float_info.min  # the smallest positive normal float
_MAX = sys.float_info.max
_INF = float("inf")
_T = TypeVar("_T", int, float)


class SanityConfig(BaseModel):
    """What market data is plausible (see :mod:`operators.sanity`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    price_band: float = Field(
        0.2, gt=0.0, allow_inf_nan=False,
        description="A price more than this fraction away from the instrument's reference price (the median "
        "of its last accepted prices) is dead-lettered, e.g. 0.2 = +-20%. A value of 1 or more leaves only "
        "the upper bound.",
    )
    window: int = Field(64, ge=1, description="How many samples of the instrument's accepted prices (trades, "
                        "quote mids, kline closes) the reference price is the median of.")
    sample_ms: int = Field(100, ge=0, description="At most one accepted price per this many milliseconds of "
                           "receive time becomes a sample of the reference (0: every one).")
    reanchor_after: int = Field(
        10, ge=1,
        description="After this many consecutive out-of-band prices that agree with each other (each within "
        "the band of the first), the last is accepted and becomes the new reference: a real regime jump does "
        "not freeze the instrument.",
    )
    warmup: int = Field(
        5, ge=1,
        description="An instrument's first events are held until there are this many; the reference price "
        "and the clock start at the medians of their prices and receive times, and they are checked against "
        "them.",
    )
    max_notional: float = Field(
        1e12, gt=0.0, allow_inf_nan=False,
        description="Largest price x quantity (quote currency) of a trade, of each side of a quote and of each "
        "depth level: a quantity cap that scales with the price.",
    )
    max_skew_ms: int = Field(
        5000, ge=0,
        description="An event received more than this ahead of the latest receive time its instrument accepted "
        "is held until its next events confirm that time moved on (the feed was silent); otherwise it is "
        "dead-lettered as from the future, and it never moves the clock.",
    )
    stale_after_ms: int = Field(
        600_000, ge=0,
        description="After a silence of the instrument longer than this (confirmed as time moving on, see "
        "max_skew_ms), its reference price is stale: the next warmup events start it afresh, as at the "
        "start (0: never).",
    )
    future_confirmations: int = Field(
        2, ge=0,
        description="How many next events of the instrument must be as far ahead as an event held for its "
        "receive time before it goes through (0 turns the check off).",
    )
    duplicate_window: int = Field(
        10_000, ge=0,
        description="A trade whose id its instrument has passed on already, within the last this many ids of the "
        "same sequence (trade ids, aggTrade ids), is dead-lettered as a duplicate (counter duplicate_trades); an id "
        "this many or more away from every sequence starts a new one (0 turns the check off).",
    )


@dataclass(slots=True)
class SanityState:
    """Per-instrument state; bounded by ``window``, ``reanchor_after`` and ``warmup``."""

    config: SanityConfig
    recent: deque = field(default_factory=deque)  # the last `window` samples of accepted prices, in order
    ranked: list = field(default_factory=list)  # the same, sorted
    reference: float = 0.0  # median of `ranked`; 0 before the first price
    lo: float = _MIN  # the band, within the normal floats
    hi: float = _MAX
    next_sample: int = 0  # receive time from which the next accepted price is sampled
    outside: list = field(default_factory=list)  # consecutive agreeing out-of-band prices
    clock: int = -1  # latest accepted receive time; -1 before the first
    kline_close: int = -1  # close of the last accepted kline
    ahead: list = field(default_factory=list)  # events ahead of the clock, waiting for confirmation
    held: Optional[list] = field(default_factory=list)  # the warm-up; None once it is over
    ids: list = field(default_factory=list)  # trade ids passed on: sequences [first, latest, gaps], most recent first
    skew: int = field(init=False)
    sample: int = field(init=False)
    max_notional: float = field(init=False)
    agg_ids: list = field(default_factory=list)  # aggTrade ids passed on: sequences, as ids
    traded: bool = False  # a plain trade was passed on: aggTrades are skipped

    def __post_init__(self) -> None:
        self.skew = self.config.max_skew_ms * 1_000_000
        self.sample = self.config.sample_ms * 1_000_000
        self.max_notional = self.config.max_notional

    def __setstate__(self, state: tuple[None, dict]) -> None:
        """Unpickle (the state of a class with slots: ``(None, {slot: value})``).

        A snapshot taken before ``agg_ids`` and ``traded`` existed resumes
        with their defaults (its sequences, of both kinds then, taken as
        trade ids).
        """
        self.agg_ids, self.traded = [], False
        for name, value in state[1].items():
            setattr(self, name, value)

    def holding(self) -> list:
        """The events held, to be passed on or dead-lettered later, in order.

        The warm-up and those ahead of the clock.
        """
        return [*(self.held or ()), *self.ahead]


def _dead(check: str, reason: str, ev: Event, counter: str = "") -> tuple[ErrorRecord, Count]:
    return (ErrorRecord(STAGE, reason, event_json(ev), ev.instrument, ev.ts_recv),
            Count(counter or f"implausible_{check}", 1))


#: How many trade id sequences an instrument follows, and how many gaps each remembers.
_SEQUENCES = 4
_GAPS = 256


def _first(gap: tuple[int, int]) -> int:
    return gap[0]


def _forget(seq: list, window: int) -> None:
    """Keep a sequence ``[first, latest, gaps]`` to its window.

    ``first`` stays at most ``window - 1`` ids below ``latest``, and at most
    ``_GAPS`` gaps are kept (the ids up to the oldest one beyond them are
    forgotten: unknown, as below ``first``).
    """
    first, latest, gaps = seq
    first = max(first, latest - window + 1)
    k = 0
    while k < len(gaps) and (gaps[k][1] < first or len(gaps) - k > _GAPS):
        first = max(first, gaps[k][1] + 1)
        k += 1
    if k:
        del gaps[:k]
    if gaps and gaps[0][0] < first:
        gaps[0] = (first, gaps[0][1])
    seq[0] = first


def _gap(gaps: list, t: int) -> int:
    """The index of the gap of the sorted ``gaps`` that holds id ``t``, -1 if none."""
    i = bisect_right(gaps, t, key=_first) - 1
    return i if i >= 0 and gaps[i][1] >= t else -1


def _known(seqs: list, t: int) -> Optional[int]:
    """The latest id of the sequence that has passed on trade id ``t``, None if none has (see *Duplicates*)."""
    for s in seqs:
        if s[0] <= t <= s[1] and (not s[2] or _gap(s[2], t) < 0):
            return s[1]
    return None


def _note(seqs: list, t: int, window: int) -> None:
    """Add trade id ``t``, which no sequence of ``seqs`` knows, to them (see *Duplicates*).

    ``seqs``: sequences ``[first, latest, gaps]``, most recently used first:
    every id from ``first`` to ``latest`` was passed on but those in
    ``gaps``, sorted runs ``(first, last)``.

    >>> seqs = []
    >>> for t in (10, 11, 15, 13, 12, 9, 5000, 14, 4999):
    ...     assert _known(seqs, t) is None
    ...     _note(seqs, t, 100)
    >>> seqs, [_known(seqs, t) for t in (8, 9, 11, 14, 15, 16, 4998, 5000)]
    ([[4999, 5000, []], [9, 15, []]], [None, 15, 15, 15, 15, None, None, 5000])
    """
    for i, s in enumerate(seqs):
        if t == s[1] + 1:  # the next id
            s[1] = t
            if t - s[0] >= window:
                _forget(s, window)
        elif s[0] < t < s[1]:  # a late one, in a gap
            gaps = s[2]
            k = _gap(gaps, t)
            lo, hi = gaps[k]
            gaps[k : k + 1] = [g for g in ((lo, t - 1), (t + 1, hi)) if g[0] <= g[1]]
        else:
            continue
        if i:
            seqs.insert(0, seqs.pop(i))
        return
    below = [s for s in seqs if s[1] - window < t < s[0]]
    ahead = [s for s in seqs if s[1] < t <= s[1] + window]
    if below:  # older than the first id of a sequence, within its window
        s = min(below, key=_first)
        if t + 1 < s[0]:
            s[2].insert(0, (t + 1, s[0] - 1))
        s[0] = t
    elif ahead:  # after a gap: the sequence just below
        s = max(ahead, key=lambda q: q[1])
        s[2].append((s[1] + 1, t - 1))
        s[1] = t
        _forget(s, window)
    else:  # a new sequence
        s = [t, t, []]
        if len(seqs) >= _SEQUENCES:
            seqs.pop()
        seqs.insert(0, s)
        return
    seqs.remove(s)
    seqs.insert(0, s)


def _duplicate(st: SanityState, ev: Trade) -> Optional[tuple[ErrorRecord, Count]]:
    """The dead letter of a trade whose id was passed on already (among the ids of its kind), else None."""
    latest = _known(st.agg_ids if ev.agg else st.ids, ev.trade_id)
    if latest is None:
        return None
    return _dead("duplicate", f"duplicate trade: id {ev.trade_id} was passed on already (the latest id of its "
                 f"sequence is {latest})", ev, "duplicate_trades")


def _qty_bad(q: float) -> bool:
    return not (q == 0.0 or _MIN <= q <= _MAX)


def _levels_fine(levels: tuple, max_notional: float) -> bool:
    """Whether every level has a normal price, a 0 or normal quantity and a notional within the cap.

    One inlined test per level: depth diffs have dozens.

    >>> from core.events import Level
    >>> _levels_fine((Level(100.0, 0.0), Level(101.0, 2.0)), 1e9), _levels_fine((Level(100.0, 5e-324),), 1e9)
    (True, False)
    """
    if type(levels) is Levels:  # the chunk path's
        if levels.notional is not None:  # normal floats, vouched for by the scanner: the notionals are left
            return levels.notional <= max_notional
        from operators.flatbook import levels_fine  # else checked in its arrays, in compiled code

        return levels_fine(levels.px, levels.qty, levels.lo, levels.hi, max_notional)
    for lv in levels:
        p, q = lv.price, lv.qty
        if not (_MIN <= p <= _MAX and (_MIN <= q <= _MAX or q == 0.0) and p * q <= max_notional):
            return False
    return True


def _static(ev: Event, max_notional: float) -> Optional[tuple[str, str]]:
    """(check, reason) of the first content check ``ev`` fails, None if none.

    The comparisons are written so that NaN fails them.
    """
    cls = type(ev)
    if cls is Quote:
        b, bq, a, aq = ev.bid, ev.bid_qty, ev.ask, ev.ask_qty  # type: ignore[union-attr]
        if not (_MIN <= b <= _MAX and _MIN <= a <= _MAX) or _qty_bad(bq) or _qty_bad(aq):
            return "float", f"not a normal float: bid {b!r} x {bq!r}, ask {a!r} x {aq!r}"
        if not (b * bq <= max_notional and a * aq <= max_notional):
            return "notional", f"notional above {max_notional:g}: bid {b!r} x {bq!r}, ask {a!r} x {aq!r}"
        return None
    if cls is Trade:
        p, q = ev.price, ev.qty  # type: ignore[union-attr]
        if not _MIN <= p <= _MAX or _qty_bad(q):
            return "float", f"not a normal float: price {p!r} x {q!r}"
        if not p * q <= max_notional:
            return "notional", f"notional above {max_notional:g}: price {p!r} x {q!r}"
        return None
    if cls is DepthUpdate or cls is BookSnapshot:
        if _levels_fine(ev.bids, max_notional) and _levels_fine(ev.asks, max_notional):  # type: ignore[union-attr]
            return None
        for side in (ev.bids, ev.asks):  # type: ignore[union-attr]
            for lv in side:
                p, q = lv.price, lv.qty
                if not _MIN <= p <= _MAX or _qty_bad(q):
                    return "float", f"not a normal float: level {p!r} x {q!r}"
                if not p * q <= max_notional:
                    return "notional", f"notional above {max_notional:g}: level {p!r} x {q!r}"
        return None
    if cls is Kline:
        k: Kline = ev  # type: ignore[assignment]
        if not k.ts_open < k.ts_close:
            return "kline", f"inconsistent kline: open time {k.ts_open} not before close time {k.ts_close}"
        o, h, lo, c = k.open, k.high, k.low, k.close
        if not all(_MIN <= x <= _MAX for x in (o, h, lo, c)) or any(
                _qty_bad(x) for x in (k.volume, k.quote_volume, k.taker_buy_volume)):
            return "float", f"not a normal float: kline o {o!r} h {h!r} l {lo!r} c {c!r} v {k.volume!r}"
        if not (h >= o and h >= c and lo <= o and lo <= c):
            return "kline", f"inconsistent kline: high {h!r} low {lo!r} open {o!r} close {c!r}"
        if not (k.trades >= 0 and k.taker_buy_volume <= k.volume):
            return "kline", f"inconsistent kline: {k.trades} trades, taker buy volume {k.taker_buy_volume!r} " \
                            f"of {k.volume!r}"
        return None
    raise TypeError(f"not an event: {ev!r}")


def _push(st: SanityState, p: float) -> None:
    """Add a sample to the window and move the band."""
    recent, ranked = st.recent, st.ranked
    recent.append(p)
    if len(recent) > st.config.window:
        del ranked[bisect_left(ranked, recent.popleft())]
    insort(ranked, p)
    ref = st.reference = ranked[len(ranked) // 2]
    band = st.config.price_band
    st.lo, st.hi = max(ref * (1.0 - band), _MIN), min(ref * (1.0 + band), _MAX)


def _sample(st: SanityState, p: float, ts: int) -> None:
    """Sample an accepted price received at ``ts`` if it is time to."""
    if ts >= st.next_sample:
        _push(st, p)
        st.next_sample = ts + st.sample


def _anchor(st: SanityState, prices: list[float], ts: int) -> None:
    """Start the window afresh from ``prices``, the last received at ``ts``."""
    st.recent.clear()
    st.ranked.clear()
    for p in prices:
        _push(st, p)
    st.next_sample = ts + st.sample


def _price(ev: Event) -> Optional[float]:
    """The price an event adds to the reference: trade price, quote mid, kline close."""
    cls = type(ev)
    if cls is Quote:
        return ev.bid * 0.5 + ev.ask * 0.5  # type: ignore[union-attr]  # no overflow, unlike (bid + ask) / 2
    if cls is Trade:
        return ev.price  # type: ignore[union-attr]
    if cls is Kline:
        return ev.close  # type: ignore[union-attr]
    return None


def _band(st: SanityState, ev: Event, out: list) -> bool:
    """Whether ``ev`` is inside the price band (or re-anchors it); dead-letters it if not."""
    cls = type(ev)
    if cls is DepthUpdate or cls is BookSnapshot:
        return True
    p: float = _price(ev)  # type: ignore[assignment]
    if not st.ranked:  # no reference yet
        _anchor(st, [p], ev.ts_recv)
        return True
    lo, hi = st.lo, st.hi
    if cls is Quote:
        low, high = ev.bid, ev.ask  # type: ignore[union-attr]
    elif cls is Trade:
        low = high = p
    else:
        low, high = ev.low, ev.high  # type: ignore[union-attr]
    if lo <= low and high <= hi:
        if st.outside:
            st.outside.clear()
        _sample(st, p, ev.ts_recv)
        return True
    outside = st.outside
    band = st.config.price_band
    if outside and not abs(p - outside[0]) <= band * outside[0]:
        outside.clear()
    outside.append(p)
    if len(outside) >= st.config.reanchor_after:
        _anchor(st, outside, ev.ts_recv)
        outside.clear()
        out.append(Count("price_band_reanchors", 1))
        return True
    what = f"{low!r}" if low == high else f"[{low!r}, {high!r}]"
    side = "<" if low < lo else ">"
    bound = lo if low < lo else hi
    out.extend(_dead("price_band", f"outside the price band: {what} {side} {bound:.10g} (reference "
                     f"{st.reference:.10g} +-{band:.0%})", ev))
    return False


def _accept(st: SanityState, ev: Event, out: list) -> None:
    """Price-check an event that passed the clock; pass it on and move the clock if it is accepted.

    A trade held until now whose id was passed on meanwhile is a duplicate;
    an aggTrade held until now while a plain trade was passed on is skipped.
    """
    trade = type(ev) is Trade
    window = st.config.duplicate_window
    if trade:
        if ev.agg and st.traded:  # type: ignore[union-attr]
            out.append(_AGG_SKIPPED)
            return
        dup = _duplicate(st, ev) if window else None  # type: ignore[arg-type]
        if dup is not None:
            out.extend(dup)
            return
    if _band(st, ev, out):
        ts = ev.ts_recv
        if ts > st.clock:
            st.clock = ts
        if type(ev) is Kline:
            st.kline_close = ev.ts_close
        elif trade:
            agg = ev.agg  # type: ignore[union-attr]
            if window:
                _note(st.agg_ids if agg else st.ids, ev.trade_id, window)  # type: ignore[union-attr]
            if not agg:
                st.traded = True
        out.append(ev)


def _vouched(st: SanityState, ev: Event) -> bool:
    """A kline that continues the last accepted one and was received by its own close (plus the skew)."""
    if type(ev) is not Kline or st.kline_close < 0:
        return False
    k: Kline = ev
    return k.ts_open <= st.kline_close + st.skew and k.ts_recv <= k.ts_close + st.skew


def _check(st: SanityState, ev: Event, out: list) -> None:
    """Every check on one event, after the warm-up."""
    why = _static(ev, st.max_notional)
    if why is not None:
        out.extend(_dead(*why, ev))
        return
    _timed(st, ev, out)


def _timed(st: SanityState, ev: Event, out: list) -> None:
    """The clock check of a valid event, then the price check."""
    held = st.ahead
    if held:  # the events after one ahead of the clock decide about it
        ts = ev.ts_recv
        if ts > st.clock + st.skew and ts >= held[0].ts_recv - st.skew:
            held.append(ev)
            if len(held) <= st.config.future_confirmations:
                return
            st.ahead = []  # confirmed: time moved on
            stale = st.config.stale_after_ms * 1_000_000
            if stale and held[0].ts_recv - st.clock > stale:  # a long silence: start afresh
                _restart(st, held, out)
                return
            _accept(st, held[0], out)
            for e in held[1:]:
                _timed(st, e, out)
            return
        st.ahead = []  # back at the clock: they were stamped in the future
        for e in held:
            ahead_s = (e.ts_recv - st.clock) / 1e9
            out.extend(_dead("future", f"from the future: {ahead_s:.3f} s ahead of the instrument's clock "
                             f"(more than {st.config.max_skew_ms} ms), and the next event was not", e))
    if (st.clock >= 0 and ev.ts_recv > st.clock + st.skew and st.config.future_confirmations
            and not _vouched(st, ev)):
        st.ahead.append(ev)
        return
    _accept(st, ev, out)


def _restart(st: SanityState, events: list[Event], out: list) -> None:
    """Start the instrument afresh, as at its first events, with ``events``.

    This follows a silence longer than ``stale_after_ms``: the reference is
    stale.
    """
    st.recent.clear()
    st.ranked.clear()
    st.outside.clear()
    st.reference, st.lo, st.hi, st.kline_close = 0.0, _MIN, _MAX, -1
    st.held = []
    for ev in events:
        if st.held is None:
            _check(st, ev, out)
            continue
        st.held.append(ev)
        if len(st.held) >= st.config.warmup:
            _end_warmup(st, out)
    out.append(Count("price_band_restarts", 1))


def _median(xs: list[_T]) -> _T:
    s = sorted(xs)
    return s[len(s) // 2]


def _end_warmup(st: SanityState, out: list) -> None:
    held, st.held = st.held, None
    assert held is not None
    mx = st.max_notional
    valid = [ev for ev in held if _static(ev, mx) is None]
    prices = [p for p in map(_price, valid) if p is not None]
    if prices:
        _anchor(st, [_median(prices)], -1)
    if valid:
        st.clock = _median([ev.ts_recv for ev in valid])
    for ev in held:
        _check(st, ev, out)


_NOTHING: tuple = ()
_AGG_SKIPPED = Count("aggtrades_skipped", 1)
_SKIP: tuple = (_AGG_SKIPPED,)


def step(state: SanityState, event: Event) -> tuple[SanityState, Sequence[Out]]:
    """Check one event; return it if it is plausible (with any event it released), else its dead letter.

    An implausible event gives its dead letter and counter; an aggTrade
    skipped (*Trades and aggTrades*) is only counted. ``state`` is updated
    in place and returned.

    An aggTrade before the instrument's first plain trade is passed on; the
    plain trades after it are too, their ids apart from the aggTrade ids
    (the same numbers here: no duplicate); the aggTrade of two of them is
    skipped:

    >>> st = SanityState(SanityConfig(warmup=1))
    >>> evs = [Trade("X", 1, 1, 100.0, 3.0, False, 900, agg=True),
    ...        Trade("X", 2, 2, 100.0, 1.0, False, 900), Trade("X", 3, 2, 100.0, 2.0, False, 901),
    ...        Trade("X", 4, 2, 100.0, 3.0, False, 901, agg=True)]
    >>> for ev in evs:
    ...     st, out = step(st, ev)
    ...     print(ev.trade_id, ev.agg, list(out) == [ev] or out)
    900 True True
    900 False True
    901 False True
    901 True (Count(name='aggtrades_skipped', n=1),)
    """
    st = state
    if type(event) is Trade:
        if event.agg and st.traded:
            return st, _SKIP
        if st.config.duplicate_window:
            dup = _duplicate(st, event)
            if dup is not None:
                return st, dup
    out: list = []
    if st.held is not None:
        st.held.append(event)
        if len(st.held) < st.config.warmup:
            return st, _NOTHING
        _end_warmup(st, out)
        return st, out
    _check(st, event, out)
    return st, out


def _fast(st: SanityState) -> bool:
    """Whether :func:`step_batch`'s fast path applies: the warm-up over, nothing held ahead, a clock and a reference."""
    return st.held is None and not st.ahead and st.clock >= 0 and bool(st.ranked)


def _one(st: SanityState, ev: Event, accepted: list, side: list) -> SanityState:
    """:func:`step` of one event, its outputs sorted: what passes on to ``accepted``, dead letters and counts aside."""
    st, out = step(st, ev)
    for o in out:
        kind = type(o)
        (side if kind is ErrorRecord or kind is Count else accepted).append(o)
    return st


def warm() -> None:
    """Load the chunk path's kernel (:mod:`operators.flatsanity`; from numba's cache, compiled the first time).

    As a live run does before its first tick.
    """
    import numpy as np

    from operators.flatsanity import run

    st = SanityState(SanityConfig())
    st.held, st.clock, st.ranked, st.recent = None, 0, [1.0], deque([1.0])
    z = np.zeros(1, np.int64)
    run(st, EventColumns(np.ones(1, np.int8), z, z, z, np.ones((1, 4)), z, z, np.zeros((1, 3), np.int64),
                         np.zeros(0), np.zeros(0)), 0, 1, _GAPS)


def _by_runs(st: SanityState, events: list[Event], cols: EventColumns) -> tuple[SanityState, list]:
    """:func:`step_batch` of a batch with its columns: its fast path taken by runs of compiled code.

    :func:`operators.flatsanity.run` passes on the events the fast path
    would, from where it is called, and stops at the first it would not;
    that one is stepped (:func:`step`), and the run goes on after it.
    """
    from operators.flatsanity import run  # numba loads only when a batch comes with columns

    accepted: list = []
    side: list = []
    skipped = 0
    i, n = 0, len(events)
    while i < n:
        j = i
        if _fast(st):
            j, priced = run(st, cols, i, n, _GAPS)
            if j > i:
                accepted.extend(events[i:j])
                if priced and st.outside:
                    st.outside.clear()
            if j == n:
                break
        ev = events[j]
        if type(ev) is Trade and st.traded and ev.agg:
            skipped += 1
        else:
            st = _one(st, ev, accepted, side)
        i = j + 1
    if skipped:
        side.append(Count("aggtrades_skipped", skipped))
    return st, ([accepted] + side if accepted else side)


def step_batch(state: SanityState, events: list[Event]) -> tuple[SanityState, list]:
    """:func:`step` over a list of events, for the dataflow, which passes events on in lists.

    Returns ``[accepted events]`` (one list, omitted if empty), then the dead
    letters and counters, the aggTrades skipped counted once at the end (one
    ``Count("aggtrades_skipped", n)``, where :func:`step` gives one per
    aggTrade).

    >>> from core.events import Trade
    >>> st = SanityState(SanityConfig(warmup=1))
    >>> st, out = step_batch(st, [Trade("X", 1, 1, 100.0, 1.0, False, 1), Trade("X", 2, 2, 5e-324, 1.0, False, 2)])
    >>> [len(out[0]), out[1].reason, out[2]]
    [1, 'not a normal float: price 5e-324 x 1.0', Count(name='implausible_float', n=1)]
    >>> st, out = step_batch(st, [Trade("X", 3, 3, 100.0, 1.0, False, 1, agg=True)] * 3)
    >>> out
    [Count(name='aggtrades_skipped', n=3)]
    """
    st = state
    accepted: list = []
    side: list = []
    cols = getattr(events, "cols", None)  # the chunk path's arrays (an EventBatch's): the fast path compiled
    if cols is not None:
        return _by_runs(st, events, cols)
    skew, mx, sample = st.skew, st.max_notional, st.sample
    window = st.config.duplicate_window
    dedup = window > 0
    ids, aggs = st.ids, st.agg_ids
    skipped = 0
    # The common case inline: a quote or trade in time, inside the band (so
    # its prices are normal floats: the band lies within them), with 0 or
    # normal quantities and a notional within the cap, after the warm-up; a
    # trade also the next id of its instrument's one sequence of ids of its
    # kind (a plain trade once the instrument has one: the first goes
    # through step); a depth diff in time whose levels all pass (no price
    # band for them); an aggTrade skipped once the instrument has plain trades.
    # The state it reads is kept in locals, written back before any other
    # event and at the end; the result is step's (tested).
    fast = _fast(st)
    clock, lo, hi, nxt = st.clock, st.lo, st.hi, st.next_sample
    traded = st.traded
    for ev in events:
        ts = ev.ts_recv
        cls = type(ev)
        if cls is Trade and traded and ev.agg:  # type: ignore[union-attr]
            skipped += 1
            continue
        if fast and ts <= clock + skew:
            if cls is Quote:
                b, a, bq, aq = ev.bid, ev.ask, ev.bid_qty, ev.ask_qty  # type: ignore[union-attr]
                if (lo <= b <= a <= hi and b * bq <= mx and a * aq <= mx and (bq >= _MIN or bq == 0.0)
                        and (aq >= _MIN or aq == 0.0)):
                    if st.outside:
                        st.outside.clear()
                    if ts >= nxt:
                        _push(st, b * 0.5 + a * 0.5)
                        lo, hi, nxt = st.lo, st.hi, ts + sample
                    if ts > clock:
                        clock = ts
                    accepted.append(ev)
                    continue
            elif cls is DepthUpdate:  # no price band: only its levels' contents are checked
                if _levels_fine(ev.bids, mx) and _levels_fine(ev.asks, mx):  # type: ignore[union-attr]
                    if ts > clock:
                        clock = ts
                    accepted.append(ev)
                    continue
            elif cls is Trade:
                p, q = ev.price, ev.qty  # type: ignore[union-attr]
                seqs = aggs if ev.agg else ids  # type: ignore[union-attr]
                if (traded or seqs is aggs) and lo <= p <= hi and p * q <= mx and (q >= _MIN or q == 0.0) and (
                        not dedup or (len(seqs) == 1 and ev.trade_id == seqs[0][1] + 1)):  # type: ignore[union-attr]
                    if dedup:
                        seq = seqs[0]
                        seq[1] += 1
                        if seq[1] - seq[0] >= window:
                            if seq[2]:
                                _forget(seq, window)
                            else:
                                seq[0] = seq[1] - window + 1
                    if st.outside:
                        st.outside.clear()
                    if ts >= nxt:
                        _push(st, p)
                        lo, hi, nxt = st.lo, st.hi, ts + sample
                    if ts > clock:
                        clock = ts
                    accepted.append(ev)
                    continue
        st.clock, st.next_sample = clock, nxt
        st = _one(st, ev, accepted, side)
        fast = _fast(st)
        clock, lo, hi, nxt = st.clock, st.lo, st.hi, st.next_sample
        traded = st.traded
    st.clock, st.next_sample = clock, nxt
    if skipped:
        side.append(Count("aggtrades_skipped", skipped))
    return st, ([accepted] + side if accepted else side)

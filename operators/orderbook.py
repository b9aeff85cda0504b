"""A local order book kept from Binance depth diffs and REST snapshots.

One :class:`OrderBookState` per instrument follows Binance's documented
procedure ("How to manage a local order book correctly"), with the websocket
and REST I/O left to the caller: the collector feeds every
:class:`~core.events.DepthUpdate` of the instrument in arrival order and,
when asked by a :class:`~core.events.SnapshotRequest`, the REST depth
snapshot as a :class:`~core.events.BookSnapshot` (see
:func:`sources.binance.parse_snapshot`), in the order in which it arrived between the diffs.

States
------
``waiting``
    No usable book. Diffs are buffered (at most ``max_buffer``, the oldest
    dropped first and counted as ``depth_buffer_overflow``). The first diff
    of a book without a snapshot emits one ``SnapshotRequest("no_snapshot")``;
    later buffered diffs request nothing more.
``loaded``
    A snapshot with ``lastUpdateId`` L is the book. Diffs it already contains
    are dropped (spot ``u <= L``, USD-M ``u < L``; counted as
    ``depth_before_snapshot``). The first diff kept must cover the snapshot
    (spot ``U <= L + 1``, USD-M ``U <= L``); if it starts later, the snapshot
    is older than the diffs at hand: a :class:`~core.events.BookGap` of
    kind ``"snapshot"``, ``Count("stale_snapshots")`` and
    ``SnapshotRequest("stale_snapshot")``, back to ``waiting`` with that diff
    buffered.
``synced``
    Every diff must continue the previous one (spot ``U == u_prev + 1``,
    USD-M ``pu == u_prev``). A diff that does not is a gap:
    ``BookGap("depth")``, ``Count("depth_gaps")``, ``Count("book_resyncs")``,
    ``SnapshotRequest("gap")``; the book is dropped and the diff buffered
    (back to ``waiting``). A diff with ``u`` at or below the book's update id
    is old (a replay): it cannot apply, and is a dead letter
    (:class:`~core.events.ErrorRecord` with the diff) counted as
    ``depth_stale_updates``; the book is unchanged.

Applying a diff sets each level's quantity (absolute, not a delta); quantity
0 removes the level. After every diff the book is checked: a crossed book
(best bid >= best ask) is dead-lettered as an
:class:`~core.events.ErrorRecord` with ``Count("crossed_books")``,
``Count("book_resyncs")`` and ``SnapshotRequest("crossed_book")``, and the
book is dropped. Every diff applied while synced emits one
:class:`~core.events.BookQuote` (when the book has both sides). A
snapshot that brings the book in sync (applying the buffered diffs that
follow it) emits one ``BookQuote`` stamped with the snapshot's receive time,
because that is when that book became known; the buffered diffs emit none of
their own. A snapshot that is not newer than a loaded or synced book is
ignored (``book_snapshots_ignored``); a newer one replaces the book.

Every record a step emits carries the receive time ``ts_recv`` of the event fed
to that step (a gap found while a snapshot replays the buffer is stamped with
the snapshot's time), so outputs never predate their cause.

The market is read from each diff: USD-M diffs carry ``pu``
(``prev_last_id >= 0``), spot diffs do not (``-1``).

Bounds: at most ``max_depth`` levels per side (the levels farthest from the
top are trimmed after each diff and snapshot) and ``max_buffer`` buffered
diffs. A trimmed level comes back with its exact quantity as soon as a diff
touches it; until then it is missing, like the levels beyond a REST
snapshot's own depth limit that no diff has touched yet (Binance warns of
the same). Far from the top this matters only once the price has moved into
such levels: on the recordings, with the default 1000 levels, the best bid
and ask never differed from those of an unbounded book, and 2 of 6,493
BTCUSDT spot quotes had a different ``depth_bid``.

Examples
--------
>>> from core.events import BookSnapshot, DepthUpdate, Level
>>> st = OrderBookState(OrderBookConfig(levels=2))
>>> def diff(U, u, bids=(), asks=()):
...     return DepthUpdate("X", u, u, U, u, -1, tuple(Level(*b) for b in bids),
...                        tuple(Level(*a) for a in asks))
>>> st, out = step(st, diff(5, 7, bids=[(99.0, 1.0)]))
>>> out
[SnapshotRequest(instrument='X', ts_recv=7, reason='no_snapshot')]
>>> st, out = step(st, diff(8, 9, asks=[(101.0, 3.0)]))
>>> out, st.status, len(st.buffer)
([], 'waiting', 2)
>>> snap = BookSnapshot("X", 10, 7, (Level(99.0, 2.0), Level(98.0, 1.0)), (Level(102.0, 1.0),))
>>> st, out = step(st, snap)                  # the diff 5..7 is in the snapshot
>>> out[0], st.status, st.last_id
(Count(name='depth_before_snapshot', n=1), 'synced', 9)
>>> q = out[1]
>>> q.ts_recv, q.update_id, q.bid, q.bid_qty, q.ask, q.ask_qty, q.depth_bid
(10, 9, 99.0, 2.0, 101.0, 3.0, 3.0)
>>> st, out = step(st, diff(10, 10, bids=[(100.0, 1.0)], asks=[(101.0, 0.0)]))
>>> q = out[0]
>>> q.bid, q.ask, q.spread, q.imbalance, q.microprice
(100.0, 102.0, 2.0, 0.5, 101.0)
>>> st, out = step(st, diff(12, 13))          # ids 11..11 never arrived
>>> out  # doctest: +NORMALIZE_WHITESPACE
[BookGap(instrument='X', ts_recv=13, kind='depth', expected=11, got=12), Count(name='depth_gaps', n=1),
 Count(name='book_resyncs', n=1), SnapshotRequest(instrument='X', ts_recv=13, reason='gap')]
>>> st.status, len(st.buffer), st.best_bid
('waiting', 1, None)
"""

from __future__ import annotations

import logging
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.events import (
    BookGap,
    BookQuote,
    BookSnapshot,
    Count,
    DepthUpdate,
    ErrorRecord,
    Kline,
    Level,
    Levels,
    Quote,
    SnapshotRequest,
    Trade,
    event_json,
)

if TYPE_CHECKING:
    from operators.flatbook import FlatSides

__all__ = [
    "LOADED",
    "SYNCED",
    "WAITING",
    "OrderBookConfig",
    "OrderBookState",
    "step",
]

log = logging.getLogger(__name__)

Out = Union[BookQuote, BookGap, SnapshotRequest, ErrorRecord, Count]

WAITING = "waiting"
LOADED = "loaded"
SYNCED = "synced"

_NOTHING: tuple = ()
_IGNORED = (Trade, Quote, Kline)


class OrderBookConfig(BaseModel):
    """How a local order book is kept and what it reports."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: int = Field(
        10, gt=0,
        description="Levels per side summed into a BookQuote's depth_bid/depth_ask and imbalance.",
    )
    max_depth: int = Field(
        1000, gt=0,
        description="Price levels kept per side; the levels farthest from the top are trimmed "
        "beyond this, which bounds the state. Binance REST snapshots hold up to 5000 (spot) or "
        "1000 (USD-M) levels; diffs touch levels at any distance.",
    )
    quotes: bool = Field(
        True, description="Emit a BookQuote for every diff applied (the collector's book topic); off where only "
        "the book itself is read (operators.depth).")
    max_buffer: int = Field(
        1000, gt=0,
        description="Depth diffs buffered per instrument while waiting for a snapshot; beyond "
        "this the oldest is dropped and counted (depth_buffer_overflow). Spot sends about 10 "
        "diffs a second at 100 ms, USD-M up to about 40 at 0 ms.",
    )
    compiled: bool = Field(
        False, description="Keep the sides in sorted arrays changed by compiled code (operators.flatbook: the "
        "chunk path's book) rather than in Python dicts and lists (the reference); the same book.")

    @model_validator(mode="after")
    def _depth_covers_levels(self) -> OrderBookConfig:
        if self.max_depth < self.levels:
            raise ValueError(f"max_depth ({self.max_depth}) must be at least levels ({self.levels})")
        return self


@dataclass(slots=True)
class OrderBookState:
    """The local order book of one instrument.

    Each side is a dict price -> quantity plus the sorted list of its prices
    (ascending on both sides: the best bid is ``bid_px[-1]``, the best ask
    ``ask_px[0]``). Everything is plain Python containers: picklable and
    deep-copyable, bounded by ``max_depth`` levels per side and
    ``max_buffer`` buffered diffs. With ``config.compiled`` the sides are
    ``flat`` instead (:class:`operators.flatbook.FlatSides`, NumPy arrays)
    and the dicts and lists stay empty.
    """

    config: OrderBookConfig
    status: str = WAITING
    last_id: int = -1  # update id of the book: the snapshot's L, then each applied u
    ts_event: Optional[int] = None  # exchange time of the last applied diff (or snapshot)
    requested: bool = False  # a SnapshotRequest is outstanding
    bid_qty: dict[float, float] = field(default_factory=dict)
    bid_px: list[float] = field(default_factory=list)
    ask_qty: dict[float, float] = field(default_factory=dict)
    ask_px: list[float] = field(default_factory=list)
    buffer: deque = field(init=False)
    flat: Optional[FlatSides] = None

    def __post_init__(self) -> None:
        self.buffer = deque(maxlen=self.config.max_buffer)
        if self.config.compiled and self.flat is None:
            from operators import flatbook  # numba loads with the first compiled book, never on the reference's path

            self.flat = flatbook.new(self.config.max_depth)

    @property
    def best_bid(self) -> Optional[float]:
        """The best bid price, None when the bid side is empty."""
        f = self.flat
        if f is not None:
            return None if f.bid != f.bid else f.bid
        return self.bid_px[-1] if self.bid_px else None

    @property
    def best_ask(self) -> Optional[float]:
        """The best ask price, None when the ask side is empty."""
        f = self.flat
        if f is not None:
            return None if f.ask != f.ask else f.ask
        return self.ask_px[0] if self.ask_px else None

    def sizes(self) -> tuple[int, int]:
        """The levels on each side: bids, asks."""
        f = self.flat
        if f is not None:
            return f.count(0), f.count(1)
        return len(self.bid_px), len(self.ask_px)

    def qty(self, side: int, price: float) -> float:
        """The quantity at ``price`` on a side (1 bids, -1 asks), 0 where it has no level."""
        f = self.flat
        if f is not None:
            return f.qty_at(0 if side > 0 else 1, price)
        return (self.bid_qty if side > 0 else self.ask_qty).get(price, 0.0)

    def top(self, n: int) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        """The best ``n`` levels of each side, best first.

        >>> st = OrderBookState(OrderBookConfig())
        >>> st, _ = step(st, BookSnapshot("X", 0, 1, (Level(9.0, 1.0), Level(8.0, 2.0)), (Level(10.0, 3.0),)))
        >>> st.top(1)
        ((Level(price=9.0, qty=1.0),), (Level(price=10.0, qty=3.0),))
        """
        f = self.flat
        if f is not None:
            bp, bq_ = f.levels(0, max(n, 0))
            ap, aq_ = f.levels(1, max(n, 0))
            return tuple(map(Level, bp, bq_)), tuple(map(Level, ap, aq_))
        bq, aq = self.bid_qty, self.ask_qty
        bids = tuple(Level(p, bq[p]) for p in reversed(self.bid_px[-n:])) if n > 0 else ()
        asks = tuple(Level(p, aq[p]) for p in self.ask_px[:n])
        return bids, asks

    def to_snapshot(self, key: str, ts: int) -> BookSnapshot:
        """The whole book as a :class:`BookSnapshot` at its update id.

        For handing a book over, or seeding another book with it.

        >>> st = OrderBookState(OrderBookConfig())
        >>> snap = BookSnapshot("X", 0, 1, (Level(9.0, 1.0),), (Level(10.0, 3.0),))
        >>> st, _ = step(st, snap)
        >>> st.to_snapshot("X", 0) == snap
        True
        """
        bids, asks = self.top(sum(self.sizes()))
        return BookSnapshot(key, ts, self.last_id, bids, asks, self.ts_event)


# --- book mechanics ------------------------------------------------------------------


def _apply(qty: dict, px: list, levels: tuple) -> None:
    """Set absolute quantities on one side; quantity 0 removes the level."""
    for lv in levels:
        p = lv.price
        q = lv.qty
        if q:  # quantities are >= 0 (validated on decoding)
            if p not in qty:
                insort(px, p)
            qty[p] = q
        elif qty.pop(p, None) is not None:
            del px[bisect_left(px, p)]


def flat_levels(ev: DepthUpdate) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """A diff's levels in arrays: prices, quantities, and where its bids start, its asks start and end in them.

    The arrays the chunk path's decoder made them in (:class:`~core.events.Levels`), or new ones.
    """
    bids, asks = ev.bids, ev.asks
    if type(bids) is Levels and type(asks) is Levels and bids.px is asks.px and bids.hi == asks.lo:
        return bids.px, bids.qty, bids.lo, bids.hi, asks.hi
    px = [lv.price for lv in bids]
    px.extend(lv.price for lv in asks)
    qt = [lv.qty for lv in bids]
    qt.extend(lv.qty for lv in asks)
    return np.array(px, dtype=np.float64), np.array(qt, dtype=np.float64), 0, len(bids), len(px)


def _apply_diff(st: OrderBookState, ev: DepthUpdate) -> bool:
    """Apply a diff's levels to both sides and trim them; whether the book is then crossed."""
    f = st.flat
    if f is not None:
        return f.apply(*flat_levels(ev))
    _apply(st.bid_qty, st.bid_px, ev.bids)
    _apply(st.ask_qty, st.ask_px, ev.asks)
    _trim(st)
    return bool(st.bid_px) and bool(st.ask_px) and st.bid_px[-1] >= st.ask_px[0]


def _trim(st: OrderBookState) -> None:
    """Drop the levels farthest from the top beyond ``max_depth`` per side."""
    cap = st.config.max_depth
    n = len(st.bid_px) - cap
    if n > 0:
        far = st.bid_px[:n]
        del st.bid_px[:n]
        q = st.bid_qty
        for p in far:
            del q[p]
    n = len(st.ask_px) - cap
    if n > 0:
        far = st.ask_px[-n:]
        del st.ask_px[-n:]
        q = st.ask_qty
        for p in far:
            del q[p]


def _clear_book(st: OrderBookState) -> None:
    st.bid_qty = {}
    st.bid_px = []
    st.ask_qty = {}
    st.ask_px = []
    if st.flat is not None:
        st.flat.load((), (), (), ())
    st.status = WAITING
    st.last_id = -1
    st.ts_event = None


def _load(st: OrderBookState, snap: BookSnapshot) -> None:
    bq = {lv.price: lv.qty for lv in snap.bids if lv.qty > 0.0}
    aq = {lv.price: lv.qty for lv in snap.asks if lv.qty > 0.0}
    if st.flat is not None:
        bp, ap = sorted(bq, reverse=True), sorted(aq)
        st.flat.load(bp, [bq[p] for p in bp], ap, [aq[p] for p in ap])
    else:
        st.bid_qty, st.bid_px = bq, sorted(bq)
        st.ask_qty, st.ask_px = aq, sorted(aq)
        _trim(st)
    st.status = LOADED
    st.last_id = snap.last_update_id
    st.ts_event = snap.ts_event
    st.requested = False


def _quote(st: OrderBookState, key: str, ts: int) -> Optional[BookQuote]:
    n = st.config.levels
    f = st.flat
    if f is not None:
        if f.bid != f.bid or f.ask != f.ask:
            return None
        bpx, bqs = f.levels(0, n)
        apx, aqs = f.levels(1, n)
        b, bv, a, av = bpx[0], bqs[0], apx[0], aqs[0]
        db = sum(reversed(bqs))  # summed from the n-th level to the best, as the reference's slice
        da = sum(aqs)
        return BookQuote(key, ts, st.ts_event, b, bv, a, av, st.last_id, db, da,
                         (db - da) / (db + da), (b * av + a * bv) / (bv + av), a - b)
    bp, ap = st.bid_px, st.ask_px
    if not bp or not ap:
        return None
    bq, aq = st.bid_qty, st.ask_qty
    b = bp[-1]
    a = ap[0]
    bv = bq[b]
    av = aq[a]
    db = sum(map(bq.__getitem__, bp[-n:]))
    da = sum(map(aq.__getitem__, ap[:n]))
    return BookQuote(key, ts, st.ts_event, b, bv, a, av, st.last_id, db, da,
                     (db - da) / (db + da), (b * av + a * bv) / (bv + av), a - b)


def _crossed(st: OrderBookState) -> bool:
    if st.flat is not None:
        b, a = st.best_bid, st.best_ask
        return b is not None and a is not None and b >= a
    return bool(st.bid_px) and bool(st.ask_px) and st.bid_px[-1] >= st.ask_px[0]


def _request(st: OrderBookState, key: str, ts: int, reason: str, out: list) -> None:
    st.requested = True
    out.append(SnapshotRequest(key, ts, reason))


def _resync(st: OrderBookState, key: str, ts: int, reason: str, out: list, records: tuple,
            keep: Optional[DepthUpdate] = None) -> None:
    """Give the book up and request a snapshot for ``reason``.

    Emit ``records`` (what went wrong and its counts), drop the book and
    buffer ``keep`` (the diff that showed it).
    """
    out.extend(records)
    _clear_book(st)
    if keep is not None:
        st.buffer.append(keep)
    _request(st, key, ts, reason, out)


# --- events ---------------------------------------------------------------------------


def _after_apply(st: OrderBookState, ev: DepthUpdate, out: list, now: int, emit: bool, crossed: bool) -> None:
    """Check the book just changed by ``ev`` (``crossed``: whether it is); quote it or drop it."""
    if crossed:
        b, a = st.best_bid, st.best_ask
        log.warning("%s: crossed book after update %d (bid %s >= ask %s); resyncing", ev.instrument, ev.last_id, b, a)
        err = ErrorRecord("orderbook", f"crossed book after update {ev.last_id}: bid {b} >= ask {a}",
                          event_json(ev), ev.instrument, now)
        _resync(st, ev.instrument, now, "crossed_book", out,
                (err, Count("crossed_books", 1), Count("book_resyncs", 1)))
    elif emit and st.config.quotes:
        q = _quote(st, ev.instrument, now)
        if q is not None:
            out.append(q)


def _follows(ev: DepthUpdate, last: int) -> bool:
    """Whether a diff follows the book's update ``last``: ``pu`` is ``last`` (futures), or ``U`` the next (spot)."""
    pu = ev.prev_last_id
    return pu == last if pu >= 0 else ev.first_id == last + 1


def _on_diff(st: OrderBookState, ev: DepthUpdate, out: list, now: int, emit: bool = True) -> None:
    """Handle one diff; records are stamped ``now``.

    ``now`` is the receive time of the event being stepped: the diff itself,
    or a snapshot replaying its buffer.
    """
    status = st.status
    if status == SYNCED:
        last = st.last_id
        if ev.last_id <= last:
            out.append(ErrorRecord("orderbook", f"depth update {ev.first_id}..{ev.last_id} is not newer than the "
                                   f"book (update id {last}): a repeat, not applied",
                                   event_json(ev), ev.instrument, now))
            out.append(Count("depth_stale_updates", 1))
            return
        if not _follows(ev, last):
            pu = ev.prev_last_id
            expected, got = (last, pu) if pu >= 0 else (last + 1, ev.first_id)
            log.warning("%s: depth gap, expected %d got %d; resyncing", ev.instrument, expected, got)
            _resync(st, ev.instrument, now, "gap", out,
                    (BookGap(ev.instrument, now, "depth", expected, got), Count("depth_gaps", 1),
                     Count("book_resyncs", 1)), keep=ev)
            return
    elif status == LOADED:
        last = st.last_id
        futures = ev.prev_last_id >= 0
        if ev.last_id < last or (ev.last_id == last and not futures):
            out.append(Count("depth_before_snapshot", 1))
            return
        bound = last if futures else last + 1
        if ev.first_id > bound:
            log.warning("%s: snapshot %d is older than the diffs (first U %d); requesting another",
                        ev.instrument, last, ev.first_id)
            _resync(st, ev.instrument, now, "stale_snapshot", out,
                    (BookGap(ev.instrument, now, "snapshot", bound, ev.first_id), Count("stale_snapshots", 1)), keep=ev)
            return
        st.status = SYNCED
    else:
        buf = st.buffer
        if len(buf) == buf.maxlen:
            out.append(Count("depth_buffer_overflow", 1))
        buf.append(ev)  # a full deque drops its oldest
        if not st.requested:
            _request(st, ev.instrument, now, "no_snapshot", out)
        return
    after_diff(st, ev, out, now, emit, _apply_diff(st, ev))


def after_diff(st: OrderBookState, ev: DepthUpdate, out: list, now: int, emit: bool, crossed: bool) -> None:
    """The rest of :func:`_on_diff` once ``ev``'s levels are applied (``crossed``: whether the book is then crossed).

    The book takes its update id and time, then is checked (a crossed book
    resyncs) and quoted; records are stamped ``now``.
    """
    st.last_id = ev.last_id
    st.ts_event = ev.ts_event
    _after_apply(st, ev, out, now, emit, crossed)


def _on_snapshot(st: OrderBookState, snap: BookSnapshot, out: list) -> None:
    if st.status != WAITING and snap.last_update_id <= st.last_id:
        out.append(Count("book_snapshots_ignored", 1))
        return
    _load(st, snap)
    if _crossed(st):
        b, a = st.best_bid, st.best_ask
        err = ErrorRecord("orderbook", f"crossed snapshot {snap.last_update_id}: bid {b} >= ask {a}",
                          event_json(snap), snap.instrument, snap.ts_recv)
        _resync(st, snap.instrument, snap.ts_recv, "crossed_book", out, (err, Count("crossed_books", 1)))
        return
    pending = list(st.buffer)
    st.buffer.clear()
    for i, ev in enumerate(pending):
        _on_diff(st, ev, out, snap.ts_recv, emit=False)
        if st.status == WAITING:  # stale snapshot, gap or crossed: keep what follows
            st.buffer.extend(pending[i + 1:])
            return
    q = _quote(st, snap.instrument, snap.ts_recv) if st.config.quotes else None
    if q is not None:
        out.append(q)


def step(state: OrderBookState, event) -> tuple[OrderBookState, Sequence[Out]]:
    """Feed one depth diff or REST snapshot; return what it produced.

    ``state`` is updated in place and returned. Trades, quotes and klines are
    accepted and ignored, so the whole event stream of an instrument can be
    fed; anything else raises ``TypeError``.

    Returns
    -------
    The state and a sequence of :class:`~core.events.BookQuote`,
    :class:`~core.events.BookGap`,
    :class:`~core.events.SnapshotRequest`,
    :class:`~core.events.ErrorRecord` (crossed book) and
    :class:`~core.events.Count` records, in that causal order.
    """
    cls = type(event)
    if cls is DepthUpdate:
        out: list = []
        f = state.flat
        if (f is not None and state.status == SYNCED and event.last_id > state.last_id and not state.config.quotes
                and _follows(event, state.last_id)):  # the common case of a compiled book, as _on_diff takes it
            crossed = f.apply(*flat_levels(event))
            if not crossed:
                state.last_id = event.last_id
                state.ts_event = event.ts_event
                return state, _NOTHING
            after_diff(state, event, out, event.ts_recv, True, crossed)
            return state, out
        _on_diff(state, event, out, event.ts_recv)
        return state, out
    if cls is BookSnapshot:
        out = []
        _on_snapshot(state, event, out)
        return state, out
    if isinstance(event, _IGNORED):
        return state, _NOTHING
    raise TypeError(f"not a depth update or book snapshot: {event!r}")

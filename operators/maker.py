"""Resting (maker) orders against the recorded book and trades: queue position, latency, fills.

This is the exchange side of passive execution, as hftbacktest models it
(``RiskAdverseQueueModel``, ``ProbQueueModel``; its partial-fill exchange),
on ticklet's event clock:

- **Entry and cancel latency.** An order sent at local time ``t`` reaches
  the exchange at ``t + clock_offset + latency`` on the exchange clock; a
  cancel too, so a fill can land while a cancel is in flight. An order
  rests on the exchange clock from its arrival to its cancel's: a market
  event stamped by the exchange (``ts_event``) inside that span sees it,
  whenever it is received. Feeds lag (a trade stream seconds behind the
  depth stream), so an order whose cancel has arrived is kept until both
  streams have passed its cancel (at most ``late_ms``), for the events
  stamped before the cancel that come late.
- **Post-only.** On arrival, a buy at or above the best ask (a sell at or
  below the best bid) would take liquidity: refused, as Binance's GTX
  refuses it, and counted.
- **Queue position.** On arrival, the quantity ahead is the book's quantity
  at the order's price. A trade at that price takes from it; a decrease of
  the level takes from it with the queue model: risk-averse (only trades
  advance it, and it never exceeds the level), or probabilistic, where a
  decrease comes from ahead of the order with probability
  ``f(back) / (f(back) + f(front))`` (``f = x^n`` or ``log(1 + x)``), the
  trades already counted taken out of the decrease first.
- **Fills.** The order fills, at its own price, as much as the queue ahead
  has gone negative, in whole lots (partial fills), when a trade prints at
  its price; all of it when a trade prints through its price, or when the
  other side of the book comes to its price.

State per instrument and book: the live and in-flight orders (bounded by
the caller's quoting: at most a few per book). Pure: the caller feeds the
market events with the book's quantities before and after each change, and
the orders to send or cancel.

Examples
--------
>>> cfg = MakerConfig(latency_ms=1.0, lot=1.0)
>>> st = MakerState(cfg)
>>> MS = 1_000_000
>>> submit(st, 1, 1, 100.0, 2.0, 0)                    # a bid of 2 at 100, sent at t = 0
>>> book = Book(best_bid=100.0, best_ask=101.0, bid_qty={100.0: 5.0}, ask_qty={101.0: 3.0})
>>> on_time(st, book, 2 * MS)                          # live from 1 ms: 5 ahead of it
>>> on_trade(st, book, 100.0, 1.0, True, 2 * MS)       # a sale of 1 at 100
[]
>>> st.orders[1].front
4.0
>>> [(f.oid, f.qty, f.price, f.queue) for f in on_trade(st, book, 100.0, 5.0, True, 3 * MS)]  # 4 ahead, 5 sold
[(1, 1.0, 100.0, 5.0)]
>>> [(f.oid, f.qty) for f in on_trade(st, book, 99.5, 0.1, True, 4 * MS)]  # sold through it: the rest
[(1, 1.0)]
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Optional, Protocol, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core.events import (
    BookSnapshot,
    Count,
    DepthUpdate,
    Event,
    MakerEconomicsRecord,
    MakerFillRecord,
    Quote,
    Signal,
    Trade,
    market_of,
)
from operators import orderbook
from operators.orderbook import LOADED, SYNCED, OrderBookConfig, OrderBookState

if TYPE_CHECKING:
    from operators.flatmaker import Decisions  # numba: imported where the chunk path runs

__all__ = ["Book", "Ledger", "MakerConfig", "MakerFill", "MakerState", "Order", "QuoterState", "cancel", "economics",
           "finish", "interleave", "on_depth", "on_diff", "on_time", "on_trade", "quote_prices", "step", "step_batch",
           "submit", "warm"]

_MS = 1_000_000
_NEVER = 2**63 - 1


class MakerConfig(BaseModel):
    """How resting orders are simulated (the exchange side)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        False, description="Run the maker books (resting post-only quotes, filled from the book and the trades) "
        "beside the taker books: maker_fills.csv.")
    queue: Literal["risk_averse", "power", "log"] = Field(
        "risk_averse",
        description="Queue model: risk_averse (only trades at the price advance an order), power (a level's "
        "decrease comes from ahead with probability back^n / (back^n + front^n)) or log (with f(x) = log(1 + x)).")
    power_n: float = Field(2.0, gt=0.0, description="n of the power queue model.")
    latency_ms: float = Field(
        10.0, ge=0.0, description="Order entry (and cancel) latency, ms: from the decision to the exchange.")
    lot: float = Field(0.001, gt=0.0, description="Quantity step of fills (the instrument's lot size).")
    late_ms: float = Field(
        5000.0, ge=0.0,
        description="How long (exchange clock) a cancelled order is kept for market events stamped before its "
        "cancel arrived that are received late (a lagging stream).")
    clock_offset_ms: Optional[float] = Field(
        None, ge=0.0,
        description="How far the local (receive) clock is behind the exchange's: an order sent at local time t "
        "reaches the exchange at t + clock_offset + latency on the exchange clock. None: measured as it goes, the "
        "most that a depth message received so far was received before its exchange time (hftbacktest's shift of "
        "the local clock, over the messages received by then).")
    interval_ms: int = Field(
        1000, ge=1, description="The baseline book's quotes are replaced at every multiple of this, receive clock "
        "(the forecast books' at each of their decisions).")
    quote_lots: int = Field(1, ge=1, description="Size of each quote, in lots (sizing lots; the baseline's always).")
    sizing: Literal["lots", "signal"] = Field(
        "lots", description="A model book's quote size: lots (quote_lots), or signal: the decision's own size, "
        "|target_position| x equity / mid, in whole lots (at least one). Either way a quote is cut to what the "
        "inventory limit leaves.")
    equity: float = Field(10_000.0, gt=0.0, description="With sizing signal: the capital a decision's "
                          "target_position is a fraction of, in quote currency.")
    forecast_scale: float = Field(
        1.0, description="How far a forecast moves a book's quotes: their centre is the mid times (1 + scale x the "
        "forecast's expected log return). 0: the forecast is not used.")
    skew_ticks: float = Field(
        0.0, ge=0.0, description="Inventory skew: the centre moves this many ticks down per lot held (up per lot "
        "short).")
    distance_ticks: int = Field(0, ge=0, description="Quotes this many ticks behind the prices the centre gives.")
    max_inventory_lots: int = Field(
        10, ge=1, description="No bid while a book holds this many lots, no ask while it is this many short.")
    sides: Literal["both", "bid", "ask"] = Field("both", description="The sides a book quotes.")
    baseline: bool = Field(
        True, description="Also run the unskewed book (model 'touch', horizon 0): the same quoting without a "
        "forecast, the benchmark of the forecast books.")
    latency_model: Literal["constant", "feed"] = Field(
        "constant",
        description="Order entry latency: constant (latency_ms), or feed: latency_ms plus feed_latency_mul times "
        "the recording's own feed latency (the latest depth message's receive time minus its exchange time, on "
        "clocks aligned by clock_offset_ms), as hftbacktest's latency generated from the feed.")
    feed_latency_mul: float = Field(1.0, ge=0.0, description="The feed latency model's multiplier.")
    spot_fee_bps: float = Field(
        10.0, ge=-10.0, le=100.0,
        description="Maker fee on spot, bps of the filled value; negative: a rebate (Binance VIP 0: 0.10%).")
    usdm_fee_bps: float = Field(
        2.0, ge=-10.0, le=100.0,
        description="Maker fee on USD-M futures, bps of the filled value; negative: a rebate (Binance VIP 0: 0.02%).")
    coinm_fee_bps: float = Field(
        2.0, ge=-10.0, le=100.0,
        description="Maker fee on COIN-M futures, bps; negative: a rebate (Binance VIP 0: 0.02%). COIN-M books are "
        "accounted in quote terms (USD) like the others.")
    max_pending_fills: int = Field(
        10_000, ge=1, description="Most fills of an instrument waiting for their mid 10 s later (the oldest go out "
        "without it, counted: maker_fills_without_moves).")

    def fee_bps(self, market: str) -> float:
        """The maker fee of a market (``spot``, ``usdm``, ``coinm``: :func:`core.events.market_of`)."""
        return {"spot": self.spot_fee_bps, "usdm": self.usdm_fee_bps}.get(market, self.coinm_fee_bps)


@dataclass(slots=True)
class Order:
    """One order of a book: at the exchange from ``arrival`` until its cancel arrives (``cancel_at``)."""

    oid: int
    side: int  # 1 buy, -1 sell
    price: float
    qty: float  # left to fill
    arrival: int
    live: bool = False
    front: float = 0.0  # quantity ahead of it
    queue: float = 0.0  # quantity ahead when it went live
    traded: float = 0.0  # traded at its price since the level last changed (probabilistic models)
    cancel_at: Optional[int] = None  # exchange time its cancel arrives
    hit: bool = False  # filled at least once


class MakerFill(NamedTuple):
    """A fill of a book's resting order, at the order's price, on the exchange clock.

    The book is a model's at a horizon (the baseline: ``"touch"``, 0);
    ``queue`` was ahead of the order when it went live.
    """

    model: str
    horizon: int
    oid: int
    side: int
    price: float
    qty: float
    ts_exch: int
    queue: float
    position: float  # the book's, after the fill


class _Quantities(Protocol):
    def get(self, price: float, default: float, /) -> float: ...


class Book(NamedTuple):
    """What the exchange side reads of the book: the best prices and the quantity at each price (``get``)."""

    best_bid: float
    best_ask: float
    bid_qty: _Quantities
    ask_qty: _Quantities


@dataclass(slots=True)
class MakerState:
    """Per instrument and book: the orders in flight or resting, by id, and the refusals counted."""

    config: MakerConfig
    model: str = "touch"
    horizon: int = 0
    orders: dict = field(default_factory=dict)
    refused: int = 0  # post-only orders that would have crossed
    cancelled: int = 0
    position: float = 0.0  # filled, signed
    sent: int = 0  # orders sent
    filled_orders: int = 0  # orders with at least one fill
    next_oid: int = 1  # order ids are the book's own: each decision takes two, bid then ask
    wake: int = _NEVER  # no order to look at while the market's events are stamped at or before this
    wake_settled: int = _NEVER  # and every stream has passed no further than this (a cancelled order's cancel)


def _at_exchange(c: MakerConfig, t_local: int, feed: int = 0, ahead: int = 0) -> int:
    """When something sent at local time ``t_local`` reaches the exchange, on the exchange clock.

    ``feed``: the latest depth message's receive time less its exchange
    time (ns, raw); ``ahead``: the most a message was received before its
    exchange time so far, the clock offset when ``clock_offset_ms`` is None.
    The feed latency model scales ``feed`` on the aligned clocks (``feed``
    plus the offset); the latency is never negative.

    >>> _at_exchange(MakerConfig(latency_ms=10.0, clock_offset_ms=0.0), 0, feed=5_000_000)
    10000000
    >>> _at_exchange(MakerConfig(latency_ms=10.0), 0, ahead=3_000_000)                  # the offset measured: 3 ms
    13000000
    >>> c = MakerConfig(latency_ms=1.0, latency_model="feed", feed_latency_mul=2.0)
    >>> _at_exchange(c, 0, feed=-1_000_000, ahead=3_000_000)                       # 3 + 1 + 2 x (-1 + 3) ms
    8000000
    """
    off = c.clock_offset_ms * _MS if c.clock_offset_ms is not None else max(0, ahead)
    lat = c.latency_ms * _MS
    if c.latency_model == "feed":
        lat = max(0.0, lat + c.feed_latency_mul * (feed + off))
    return t_local + round(off + lat)


def submit(st: MakerState, oid: int, side: int, price: float, qty: float, t_local: int, feed: int = 0,
           ahead: int = 0) -> None:
    """Send a post-only limit order at local time ``t_local`` (ns); ``feed``, ``ahead``: see :func:`_at_exchange`."""
    _send(st, oid, side, price, qty, _at_exchange(st.config, t_local, feed, ahead))


def _send(st: MakerState, oid: int, side: int, price: float, qty: float, at: int) -> None:
    """:func:`submit`, the order reaching the exchange at ``at``."""
    st.orders[oid] = Order(oid, side, price, qty, at)
    st.sent += 1
    if at < st.wake:
        st.wake = at


def cancel(st: MakerState, oid: int, t_local: int, feed: int = 0, ahead: int = 0) -> None:
    """Send the cancel of order ``oid`` at local time ``t_local``; it takes effect when it reaches the exchange."""
    o = st.orders.get(oid)
    if o is not None:
        _cancel(st, o, _at_exchange(st.config, t_local, feed, ahead))


def _cancel(st: MakerState, o: Order, at: int) -> None:
    """:func:`cancel`, the cancel reaching the exchange at ``at`` (none if one was sent)."""
    if o.cancel_at is None:
        o.cancel_at = at
        st.wake = min(st.wake, at + round(st.config.late_ms * _MS))
        if at < st.wake_settled:
            st.wake_settled = at


def on_time(st: MakerState, book: Book, ts_exch: int, settled: int = -1) -> None:
    """The orders that reached the exchange by ``ts_exch`` go live (or are refused); cancelled ones go once settled.

    Call it with the book as it stands *before* a market event stamped
    ``ts_exch`` changes it: an order that arrived before the event joins
    the queue the event then changes. A cancelled order is kept while a
    market event stamped before its cancel can still come: until every
    stream has passed its cancel (``settled``: the earliest of the streams'
    latest exchange stamps), and at most ``late_ms``.
    """
    if ts_exch <= st.wake and settled <= st.wake_settled:
        return
    gone = []
    late = round(st.config.late_ms * _MS)
    wake = wake_settled = _NEVER
    for o in st.orders.values():
        if o.cancel_at is not None and (o.cancel_at < settled or o.cancel_at + late < ts_exch):
            gone.append(o.oid)
            st.cancelled += 1
            continue
        if not o.live and _rests(o, ts_exch):
            if (o.side > 0 and o.price >= book.best_ask) or (o.side < 0 and o.price <= book.best_bid):
                gone.append(o.oid)
                st.refused += 1
                continue
            o.live = True
            o.front = o.queue = (book.bid_qty if o.side > 0 else book.ask_qty).get(o.price, 0.0)
        if not o.live:
            wake = min(wake, o.arrival)
        if o.cancel_at is not None:
            wake = min(wake, o.cancel_at + late)
            wake_settled = min(wake_settled, o.cancel_at)
    for oid in gone:
        del st.orders[oid]
    st.wake = wake
    st.wake_settled = wake_settled


def _rests(o: Order, ts_exch: int) -> bool:
    """Whether the order rests on the exchange at ``ts_exch``: arrived before, its cancel not before.

    At equal exchange times the market's event comes first (it was in the
    exchange's queue already), as in hftbacktest.
    """
    return o.arrival < ts_exch and (o.cancel_at is None or ts_exch <= o.cancel_at)


def _fill(st: MakerState, o: Order, qty: float, ts_exch: int, out: list) -> None:
    qty = min(qty, o.qty)
    st.position += o.side * qty
    if not o.hit:
        o.hit = True
        st.filled_orders += 1
    out.append(MakerFill(st.model, st.horizon, o.oid, o.side, o.price, qty, ts_exch, o.queue, st.position))
    o.qty -= qty
    if round(o.qty / st.config.lot) <= 0:
        del st.orders[o.oid]


def _lots(st: MakerState, o: Order) -> float:
    """What the queue ahead, gone negative, fills (in whole lots); the queue is then at the front (0)."""
    lot = st.config.lot
    n = round(-o.front / lot)
    if n > 0:
        o.front = 0.0
        return n * lot
    return 0.0


def on_trade(st: MakerState, book: Book, price: float, qty: float, buyer_maker: bool, ts_exch: int) -> list:
    """A market trade at ``price`` (``buyer_maker``: the taker sold, hitting bids); return the fills.

    ``book`` is the book as it stands when the trade prints.
    """
    out: list = []
    side = 1 if buyer_maker else -1  # the resting side it trades against
    for o in list(st.orders.values()):
        if not o.live or o.side != side or not _rests(o, ts_exch):
            continue
        _trade_order(st, o, price, qty, ts_exch, out)
    return out


def _trade_order(st: MakerState, o: Order, price: float, qty: float, ts_exch: int, out: list) -> None:
    """A trade at ``price`` against the side of ``o``, a live order of book ``st`` resting then."""
    if (o.side > 0 and o.price > price) or (o.side < 0 and o.price < price):  # traded through
        _fill(st, o, o.qty, ts_exch, out)
    elif o.price == price:
        o.front -= qty
        o.traded += qty
        q = _lots(st, o)
        if q > 0.0:
            _fill(st, o, q, ts_exch, out)


def _f(c: MakerConfig, x: float) -> float:
    """The queue model's ``f``, with IEEE results where the math has none (NaN, as hftbacktest's Rust gives)."""
    if c.queue == "power":
        if x < 0.0 and not c.power_n.is_integer():
            return math.nan
        return x**c.power_n
    return math.log1p(x) if x > -1.0 else (-math.inf if x == -1.0 else math.nan)


def _fmin(a: float, b: float) -> float:
    """``min`` that ignores a NaN, as Rust's ``f64::min``."""
    return b if a != a else a if b != b else min(a, b)


def _prob(st: MakerState, front: float, back: float) -> float:
    """The probability that a level's decrease came from behind the order: ``f(back) / (f(back) + f(front))``."""
    fb, ff = _f(st.config, back), _f(st.config, front)
    den = fb + ff
    p = fb / den if den != 0.0 else (math.nan if fb == 0.0 else math.inf)  # IEEE's 0/0 and x/0
    return 1.0 if math.isinf(p) else p


def _requeue(st: MakerState, o: Order, prev_qty: float, new_qty: float) -> None:
    """The level of ``o`` went from ``prev_qty`` to ``new_qty``: the queue model's new quantity ahead of it."""
    if st.config.queue == "risk_averse":
        o.front = _fmin(o.front, new_qty)
        return
    chg = prev_qty - new_qty - o.traded
    o.traded = 0.0
    if chg < 0.0:
        o.front = _fmin(o.front, new_qty)
        return
    front = o.front
    back = prev_qty - front
    p = _prob(st, front, back)
    o.front = _fmin(front - (1.0 - p) * chg + _fmin(back - p * chg, 0.0), new_qty)


def on_diff(st: MakerState, book: Book, bids: dict, asks: dict, ts_exch: int,
            changed: Optional[tuple[bool, bool]] = None) -> list:
    """A depth diff changed the levels ``bids`` and ``asks`` (``price -> (before, after)``); return the fills.

    ``book`` is the book after the diff: an order whose level changed gets
    its new place in the queue; then an order on one side, when the other
    side changed, is filled if that side's best is at or through its price
    (the book came to it). ``changed``: whether each side (bids, asks)
    changed, when ``bids`` and ``asks`` hold only the levels of some prices
    (by default: whether they hold any).
    """
    out: list = []
    any_b, any_a = (bool(bids), bool(asks)) if changed is None else changed
    for o in list(st.orders.values()):
        if o.live and _rests(o, ts_exch):
            _diff_order(st, o, book, bids, asks, any_b, any_a, ts_exch, out)
    return out


def _diff_order(st: MakerState, o: Order, book: Book, bids: dict, asks: dict, any_b: bool, any_a: bool,
                ts_exch: int, out: list) -> None:
    """A diff (see :func:`on_diff`) against ``o``, a live order of book ``st`` resting then."""
    if o.side > 0:
        ch = bids.get(o.price)
        if ch is not None:
            _requeue(st, o, ch[0], ch[1])
        if any_a and o.price >= book.best_ask:
            _fill(st, o, o.qty, ts_exch, out)
    else:
        ch = asks.get(o.price)
        if ch is not None:
            _requeue(st, o, ch[0], ch[1])
        if any_b and o.price <= book.best_bid:
            _fill(st, o, o.qty, ts_exch, out)


def on_depth(st: MakerState, book: Book, side: int, price: float, prev_qty: float, new_qty: float,
             ts_exch: int) -> list:
    """:func:`on_diff` of a diff that changed one level, ``price`` of ``side``, from ``prev_qty`` to ``new_qty``."""
    ch = {price: (prev_qty, new_qty)}
    return on_diff(st, book, ch if side > 0 else {}, {} if side > 0 else ch, ts_exch)


# --- the step over an instrument's events: its book, the quotes, the fills ----------------------------------


@dataclass(slots=True)
class QuoterState:
    """Per instrument: a checked order book (:mod:`operators.orderbook`) and the quoting books.

    Each book rests a bid and an ask, replaced at each of its decisions: the
    resting ones cancelled, new ones placed around a centre (the mid, moved
    by the book's forecast and its inventory, :func:`quote_prices`),
    ``quote_lots`` each, post-only. The baseline book (``touch``) decides at
    every multiple of ``interval_ms`` of the receive clock without a
    forecast; a model's book at each of its :class:`~core.events.Signal` s.
    """

    config: MakerConfig
    instrument: str = ""
    book: OrderBookState = field(init=False)
    books: dict = field(default_factory=dict)  # (model, horizon) -> MakerState
    next_quote: int = -1  # the baseline's next decision; -1: none yet (no book)
    clock: int = -1  # the receive time of the latest event
    tick: float = 0.0  # the price grid, from the first book (0: not known yet)
    decimals: int = 0
    quotes: int = 0  # decisions taken
    late_signals: int = 0  # decisions received after the events at their time: not taken (no look-ahead)
    without_book: int = 0  # decisions while the instrument had no book (no snapshot yet, a resync): not taken
    depth_ts: int = -1  # the latest exchange stamps of the depth and trade streams
    trade_ts: int = -1
    wake: int = _NEVER  # the books' earliest wakes (MakerState.wake, .wake_settled): no order to look at before
    wake_settled: int = _NEVER
    dirty: bool = True  # the live orders changed since watch_b, watch_a, hi_b and lo_a were taken
    live: list = field(default_factory=list)  # (book, order): the books' live orders, book by book
    watch_b: set = field(default_factory=set)  # the prices of the books' live bids and asks
    watch_a: set = field(default_factory=set)
    hi_b: float = -math.inf  # the highest live bid, the lowest live ask
    lo_a: float = math.inf
    feed: int = 0  # the latest depth message's feed latency (receive time - exchange time), ns
    ahead: int = 0  # the most a depth message was received before its exchange time, ns (the clock offset)
    fee_bps: float = field(init=False)  # the instrument's market's maker fee
    mid_ts: list = field(default_factory=list)  # the mid's changes (exchange time, mid or NaN without a book),
    mid_px: list = field(default_factory=list)  # kept for _KEEP_NS behind the depth stream
    last_mid: float = 0.0  # the last mid there was (0: none yet), the positions' mark
    pending: deque = field(default_factory=deque)  # (MakerFill, ts_recv): fills waiting for their mid 10 s on
    ledgers: dict = field(default_factory=dict)  # (model, horizon) -> Ledger, over the fills gone out
    unmoved: int = 0  # fills that went out without their moves (too many waiting)
    finished: bool = False  # the input ended and finish() gave its outputs (once, a recovery after it included)
    compiled: bool = False  # the book in operators.flatbook's arrays (the chunk path's)
    sides: tuple = ()  # compiled: the book's sides as Book reads them

    def __post_init__(self) -> None:
        self.book = OrderBookState(OrderBookConfig(quotes=False, compiled=self.compiled))  # max_depth levels a side
        if self.compiled:
            self.sides = (_Side(self.book, 1), _Side(self.book, -1))
        self.fee_bps = self.config.fee_bps(market_of(self.instrument)) if self.instrument else 0.0
        if self.config.baseline:
            self.books[("touch", 0)] = MakerState(self.config)

    @property
    def maker(self) -> MakerState:
        """The baseline book."""
        return self.books[("touch", 0)]

    @property
    def position(self) -> float:
        """The baseline book's position."""
        return self.maker.position


@dataclass(slots=True)
class Ledger:
    """A maker book's accounts over its fills gone out: cash and position at the fill prices, fees, adverse moves."""

    fills: int = 0
    qty: float = 0.0
    traded: float = 0.0  # value filled, at the fill prices
    position: float = 0.0
    cash: float = 0.0
    fees: float = 0.0
    adverse_1s: float = 0.0  # sums of the fills' adverse moves (bps), and how many fills had one
    n_1s: int = 0
    adverse_10s: float = 0.0
    n_10s: int = 0


#: how far behind the depth stream the mid's changes are kept: the 10 s of the moves, the late trades' fills
_HORIZONS = (1_000 * _MS, 10_000 * _MS)
_KEEP_NS = 70_000 * _MS
_KEEP_MAX = 1_000_000  # and at most this many changes


def _mid_at(st: QuoterState, t: int, strict: bool = False) -> Optional[float]:
    """The mid at exchange time ``t`` (``strict``: just before it); None without a book then, or not kept."""
    ts = st.mid_ts
    i = (bisect_left if strict else bisect_right)(ts, t) - 1
    if i < 0:
        return None
    m = st.mid_px[i]
    return None if m != m else m


def _note_mid(st: QuoterState, ts_exch: int) -> None:
    """Record the mid after a book change stamped ``ts_exch`` (NaN without a book), if it changed."""
    b = st.book
    if b.flat is not None:
        mid = (b.flat.bid + b.flat.ask) * 0.5 if _ready(b) else math.nan
    else:
        mid = (b.bid_px[-1] + b.ask_px[0]) * 0.5 if _ready(b) else math.nan
    if mid == mid:
        st.last_mid = mid
    px = st.mid_px
    if px and (px[-1] == mid or (mid != mid and px[-1] != px[-1])):
        return
    ts = st.mid_ts
    if ts and ts_exch < ts[-1]:
        ts_exch = ts[-1]  # the depth stream's stamps never go back on the book's changes (bisect stays sorted)
    _keep_mid(st, ts_exch, mid)


def _keep_mid(st: QuoterState, ts_exch: int, mid: float) -> None:
    """Record a change of the mid (at or after the last), keeping those of the last :data:`_KEEP_NS` or so."""
    ts, px = st.mid_ts, st.mid_px
    ts.append(ts_exch)
    px.append(mid)
    if len(ts) > 64 and (ts[len(ts) // 2] < ts_exch - _KEEP_NS or len(ts) > _KEEP_MAX):
        k = len(ts) // 2
        del ts[:k]
        del px[:k]


def _settle(st: QuoterState, waiting: tuple[MakerFill, int], out: list) -> None:
    """A fill (and the receive time of the event that made it) goes out with its mids (known or None).

    Out: its record, and its book's running economics.
    """
    f, ts_recv = waiting
    mid = _mid_at(st, f.ts_exch, strict=True)
    known = st.depth_ts
    moves = [_mid_at(st, f.ts_exch + h) if f.ts_exch + h < known else None for h in _HORIZONS]
    value = f.price * f.qty
    fee = value * st.fee_bps * 1e-4
    out.append(MakerFillRecord(st.instrument, f.model, f.horizon, f.oid, f.side, f.price, f.qty, f.ts_exch, ts_recv,
                               f.queue, "maker", fee, f.position, mid, moves[0], moves[1]))
    key = (f.model, f.horizon)
    g = st.ledgers.get(key)
    if g is None:
        g = st.ledgers[key] = Ledger()
    g.fills += 1
    g.qty += f.qty
    g.traded += value
    g.position += f.side * f.qty
    g.cash -= f.side * value
    g.fees += fee
    if mid is not None:
        if moves[0] is not None:
            g.adverse_1s += -f.side * (moves[0] - mid) / mid * 1e4
            g.n_1s += 1
        if moves[1] is not None:
            g.adverse_10s += -f.side * (moves[1] - mid) / mid * 1e4
            g.n_10s += 1
    out.append(economics(st, key))


def economics(st: QuoterState, key: tuple) -> MakerEconomicsRecord:
    """A book's economics as of the depth stream's latest stamp, its position marked to the latest mid."""
    g = st.ledgers.get(key) or Ledger()
    m = st.books.get(key)
    gross = g.cash + g.position * st.last_mid  # without a book now: the last mid there was
    net = gross - g.fees
    sent = m.sent if m is not None else 0
    hit = m.filled_orders if m is not None else 0
    traded = g.traded
    return MakerEconomicsRecord(
        st.instrument, key[0], key[1], st.depth_ts, sent, hit, hit / sent if sent else None,
        m.refused if m is not None else 0, g.fills, g.qty, traded, g.position, gross, g.fees, net, st.fee_bps,
        gross / traded * 1e4 if traded else None, net / traded * 1e4 if traded else None,
        g.adverse_1s / g.n_1s if g.n_1s else None, g.adverse_10s / g.n_10s if g.n_10s else None)


class _Side(NamedTuple):
    """A side of a compiled book as :class:`Book` reads it: the quantity at a price."""

    book: OrderBookState
    side: int

    def get(self, price: float, default: float = 0.0) -> float:
        q = self.book.qty(self.side, price)
        return q if q else default


def _view(st: QuoterState) -> Book:
    b = st.book
    f = b.flat
    if f is not None:
        bb, ba = f.bid, f.ask
        return Book(-math.inf if bb != bb else bb, math.inf if ba != ba else ba, *st.sides)
    return Book(b.bid_px[-1] if b.bid_px else -math.inf, b.ask_px[0] if b.ask_px else math.inf, b.bid_qty, b.ask_qty)


def _grid(st: QuoterState) -> None:
    """The price grid: the smallest step between the book's first 50 levels on each side, and its decimals."""
    b = st.book
    if b.flat is not None:
        px = sorted({*b.flat.levels(0, 50)[0], *b.flat.levels(1, 50)[0]})
    else:
        px = sorted({*b.bid_px[-50:], *b.ask_px[:50]})
    steps = [round(q - p, 10) for p, q in zip(px, px[1:], strict=False) if q > p]
    if steps:
        st.tick = min(steps)
        st.decimals = max(0, -math.floor(math.log10(st.tick) + 1e-9))


def quote_prices(c: MakerConfig, tick: float, decimals: int, best_bid: float, best_ask: float,
                 expected_return: float, lots: float) -> tuple[Optional[float], Optional[float]]:
    """A book's bid and ask (None: no quote on that side) around its centre.

    The centre is ``mid (1 + forecast_scale x expected_return) - skew_ticks x
    lots x tick`` (``lots``: the book's position); the bid is the centre less
    half the spread, rounded down to the grid, ``distance_ticks`` further; the
    ask likewise up. Without forecast, skew or distance: the best bid and ask.

    >>> c = MakerConfig(lot=1.0, skew_ticks=1.0)
    >>> quote_prices(c, 0.1, 1, 100.0, 100.2, 0.0, 0.0)       # at the touch
    (100.0, 100.2)
    >>> quote_prices(c, 0.1, 1, 100.0, 100.2, 0.002, 0.0)     # +20 bps expected: centre 100.3002, rounded out
    (100.2, 100.5)
    >>> quote_prices(c, 0.1, 1, 100.0, 100.2, 0.0, 3.0)       # 3 lots long: 3 ticks down
    (99.7, 99.9)
    >>> quote_prices(c, 0.1, 1, 100.0, 100.2, 0.0, 10.0)      # at the inventory limit: no bid
    (None, 99.2)
    """
    mid = (best_bid + best_ask) * 0.5
    half = (best_ask - best_bid) * 0.5
    centre = mid * (1.0 + c.forecast_scale * expected_return) - c.skew_ticks * lots * tick
    bid_t = math.floor((centre - half) / tick + 1e-6) - c.distance_ticks
    ask_t = math.ceil((centre + half) / tick - 1e-6) + c.distance_ticks
    bid = round(bid_t * tick, decimals) if c.sides != "ask" and lots < c.max_inventory_lots else None
    ask = round(ask_t * tick, decimals) if c.sides != "bid" and lots > -c.max_inventory_lots else None
    return bid, ask


def _requote(st: QuoterState, m: MakerState, t: int, expected_return: float, size: Optional[float] = None) -> None:
    """Book ``m`` decides at local time ``t``: cancel its resting orders, place its quotes.

    ``size``: the decision's target position (a fraction of ``equity``),
    the quotes' size with ``sizing="signal"``.
    """
    c = st.config
    at = _at_exchange(c, t, st.feed, st.ahead)  # the cancels and the quotes sent at t reach the exchange at once
    for o in m.orders.values():
        _cancel(m, o, at)
    b = _view(st)
    if not st.tick:
        _grid(st)
    if not st.tick:
        return
    held = round(m.position / c.lot)
    bid, ask = quote_prices(c, st.tick, st.decimals, b.best_bid, b.best_ask, expected_return, held)
    lots = c.quote_lots
    if size is not None and c.sizing == "signal":
        lots = max(1, round(abs(size) * c.equity / ((b.best_bid + b.best_ask) * 0.5) / c.lot))
    room = (c.max_inventory_lots - held, c.max_inventory_lots + held)  # what the limit leaves each side
    for i, (side, price) in enumerate(((1, bid), (-1, ask))):  # each decision takes two ids: bid, then ask
        n = min(lots, room[i])
        if price is not None and n > 0:
            _send(m, m.next_oid + i, side, price, n * c.lot, at)
    m.next_oid += 2
    st.quotes += 1
    if m.wake < st.wake:
        st.wake = m.wake
    if m.wake_settled < st.wake_settled:
        st.wake_settled = m.wake_settled


def _wake(st: QuoterState, view: Book, ts_exch: int, settled: int) -> None:
    """:func:`on_time` for every book (a market event stamped ``ts_exch``, the book ``view`` before it)."""
    wake = wake_settled = _NEVER
    for m in st.books.values():
        on_time(m, view, ts_exch, settled)
        if m.wake < wake:
            wake = m.wake
        if m.wake_settled < wake_settled:
            wake_settled = m.wake_settled
    st.wake, st.wake_settled = wake, wake_settled
    st.dirty = True


def _watch(st: QuoterState) -> None:
    """Take the prices of the books' live orders: which market events can touch them."""
    wb: set = set()
    wa: set = set()
    live = []
    for m in st.books.values():
        for o in m.orders.values():
            if o.live:
                (wb if o.side > 0 else wa).add(o.price)
                live.append((m, o))
    st.live, st.watch_b, st.watch_a = live, wb, wa
    f = st.book.flat
    if f is not None:  # the compiled book notes the levels of these prices as it applies a diff
        watch = np.full((2, max(len(wb), len(wa), 1)), np.nan)
        watch[0, :len(wb)] = sorted(wb)
        watch[1, :len(wa)] = sorted(wa)
        f.watch = watch
    st.hi_b = max(wb) if wb else -math.inf
    st.lo_a = min(wa) if wa else math.inf
    st.dirty = False


def _ready(book: OrderBookState) -> bool:
    f = book.flat
    if f is not None:  # both sides have a best price
        return (book.status == SYNCED or book.status == LOADED) and f.bid == f.bid and f.ask == f.ask
    return (book.status == SYNCED or book.status == LOADED) and bool(book.bid_px) and bool(book.ask_px)


def step(state: QuoterState, item: Union[Event, Signal]) -> tuple[QuoterState, list]:
    """Feed one event of the instrument, or a decision of a model's book; return the fills it makes.

    ``state`` is updated in place and returned. A :class:`~core.events.Signal`
    is the decision of the book of its model and horizon at its
    ``ts_forecast``, on the book as received by then: it must come before
    the events received at or after that time (the dataflow puts it there),
    or it is not taken (counted: ``late_signals``); nor is one while the
    instrument has no book (``without_book``). The taker books' benchmarks'
    decisions (horizon 0: ``buy_and_hold``, ``flat``) make no maker book:
    the maker's benchmark is ``touch``. An event: the baseline's
    decisions due at or before its receive time are taken first; the orders
    that reached the exchange before its exchange time join the book it
    changes; then its fills (:class:`MakerFill`).

    >>> from core.events import BookSnapshot, DepthUpdate, Level, Trade
    >>> S, MS = 10**9, 10**6
    >>> st = QuoterState(MakerConfig(latency_ms=10, lot=1.0))
    >>> st, _ = step(st, BookSnapshot("X", S // 2, 5, (Level(100.0, 3.0),), (Level(101.0, 2.0),), S // 2))
    >>> st, _ = step(st, Trade("X", S // 2 + 1, S // 2, 100.5, 1.0, True, 0))   # the book is there: quotes from 1 s
    >>> st, _ = step(st, DepthUpdate("X", S + 20 * MS, S + 20 * MS, 4, 6, 3, (Level(100.0, 1.0),), ()))
    >>> st.maker.orders[1].queue, st.maker.orders[2].queue   # quoted at 1 s: live at 1.01 s, before this diff
    (3.0, 2.0)
    >>> st, fills = step(st, Trade("X", S + 30 * MS, S + 30 * MS, 100.0, 2.0, True, 1))  # 1 ahead, 2 sold
    >>> [(f.model, f.oid, f.side, f.price, f.qty) for f in fills], st.position
    ([('touch', 1, 1, 100.0, 1.0)], 1.0)
    """
    st = state
    c = st.config
    cls = type(item)
    book = st.book
    if cls is Signal:
        sig: Signal = item  # type: ignore[assignment]
        if not sig.horizon:  # the taker books' benchmarks (buy_and_hold, flat): no forecast; the maker's is touch
            return st, []
        if sig.ts_forecast <= st.clock:
            st.late_signals += 1
            return st, []
        if not _ready(book):
            st.without_book += 1
            return st, []
        key = (sig.model, sig.horizon)
        m = st.books.get(key)
        if m is None:
            m = st.books[key] = MakerState(c, sig.model, sig.horizon)
        _requote(st, m, sig.ts_forecast, sig.expected_return, sig.target_position)
        return st, []
    event: Event = item  # type: ignore[assignment]
    ready = _ready(book)
    if ready and c.baseline:
        _baseline(st, event.ts_recv)
    if event.ts_recv > st.clock:
        st.clock = event.ts_recv
    fills: list = []
    if cls is DepthUpdate:
        ev: DepthUpdate = event  # type: ignore[assignment]
        if ev.ts_event > st.depth_ts:
            st.depth_ts = ev.ts_event
        st.feed = feed = ev.ts_recv - ev.ts_event
        if -feed > st.ahead:
            st.ahead = -feed
        if ready:
            ts = ev.ts_event
            settled = min(st.depth_ts, st.trade_ts)
            if ts > st.wake or settled > st.wake_settled:  # orders that arrived before it join the book it changes
                _wake(st, _view(st), ts, settled)
            if st.dirty:
                _watch(st)
            wb, wa = st.watch_b, st.watch_a
            bids = asks = None
            f = book.flat
            if f is None:  # the levels at the watched prices: (quantity before, the diff's)
                if wb:
                    bq = book.bid_qty
                    bids = {p: (bq.get(p, 0.0), lv.qty) for lv in ev.bids if (p := lv.price) in wb}
                if wa:
                    aq = book.ask_qty
                    asks = {p: (aq.get(p, 0.0), lv.qty) for lv in ev.asks if (p := lv.price) in wa}
            last = book.last_id
            orderbook.step(book, ev)
            if f is not None and book.last_id != last:  # the compiled book noted them as it applied the diff
                bids, asks = f.noted
            _reach(st, ev, last, bids, asks, fills)
        else:
            orderbook.step(book, ev)
        _note_mid(st, ev.ts_event)
    elif cls is BookSnapshot:
        snap: BookSnapshot = event  # type: ignore[assignment]
        orderbook.step(book, snap)
        _note_mid(st, snap.ts_event if snap.ts_event is not None else st.depth_ts)  # spot's: no exchange time
    elif cls is Trade:
        tr: Trade = event  # type: ignore[assignment]
        if tr.ts_event > st.trade_ts:
            st.trade_ts = tr.ts_event
        if ready:
            ts = tr.ts_event
            settled = min(st.depth_ts, st.trade_ts)
            if ts > st.wake or settled > st.wake_settled:
                _wake(st, _view(st), ts, settled)
            if st.dirty:
                _watch(st)
            price = tr.price
            if tr.buyer_maker:  # a sale: the bids at or above its price
                if price <= st.hi_b:
                    for m, o in st.live:
                        if o.side > 0 and o.price >= price and _rests(o, ts):
                            _trade_order(m, o, price, tr.qty, ts, fills)
            elif price >= st.lo_a:
                for m, o in st.live:
                    if o.side < 0 and o.price <= price and _rests(o, ts):
                        _trade_order(m, o, price, tr.qty, ts, fills)
            if fills:
                    st.dirty = True
    return st, fills


def _baseline(st: QuoterState, t: int) -> None:
    """The baseline's decisions due by receive time ``t`` (its book ready), taken before an event received at ``t``."""
    iv = st.config.interval_ms * _MS
    if st.next_quote < 0:
        st.next_quote = (t // iv + 1) * iv
    while st.next_quote <= t:
        _requote(st, st.maker, st.next_quote, 0.0)
        st.next_quote += iv


def _reach(st: QuoterState, ev: DepthUpdate, last: int, bids: Optional[dict], asks: Optional[dict],
           fills: list) -> None:
    """The orders a diff reaches, once the book (its update id ``last`` before) has taken it; their fills to ``fills``.

    ``bids`` and ``asks``: the levels it changed at the prices of the live
    orders, ``price -> (before, after)`` (None: none). An order whose level
    changed gets its new place in the queue; one the other side came to is
    filled (:func:`_diff_order`).
    """
    book = st.book
    if (st.watch_b or st.watch_a) and book.last_id != last and book.status == SYNCED:
        after = _view(st)
        if bids or asks or (ev.asks and after.best_ask <= st.hi_b) or (ev.bids and after.best_bid >= st.lo_a):
            ts = ev.ts_event
            any_b, any_a = bool(ev.bids), bool(ev.asks)
            bids, asks = bids or {}, asks or {}
            best_b, best_a = after.best_bid, after.best_ask
            for m, o in st.live:  # an order whose level changed, or that the other side came to
                p = o.price
                if ((p in bids or (any_a and p >= best_a)) if o.side > 0 else
                        (p in asks or (any_b and p <= best_b))) and _rests(o, ts):
                    _diff_order(m, o, after, bids, asks, any_b, any_a, ts, fills)
            if fills:
                st.dirty = True


def interleave(events: list, signals: list) -> list:
    """``events`` (in receive order) with each signal put before the first event received at or after its time.

    The order :func:`step` takes them in: a decision at a bar's end ``e``
    sees the book as received before ``e``.

    >>> from core.events import Signal, Trade
    >>> evs = [Trade("X", t, t, 100.0, 1.0, True, t) for t in (5, 10, 15)]
    >>> sig = Signal("X", "linear", 1, 10, 1, None, 0.0, 0.5)
    >>> [type(x).__name__ + str(x.ts_recv if type(x) is Trade else x.ts_forecast) for x in interleave(evs, [sig])]
    ['Trade5', 'Signal10', 'Trade10', 'Trade15']
    """
    out: list = []
    sigs = sorted(signals, key=lambda s: s.ts_forecast)
    i = 0
    for ev in events:
        j = _due(sigs, i, ev.ts_recv)
        out.extend(sigs[i:j])
        out.append(ev)
        i = j
    out.extend(sigs[i:])
    return out


def _due(sigs: list, k: int, t: int) -> int:
    """Past the decisions of ``sigs`` (sorted by time) from ``k`` on that come before an event received at ``t``."""
    while k < len(sigs) and sigs[k].ts_forecast <= t:
        k += 1
    return k


def step_batch(state: QuoterState, values: list) -> tuple[QuoterState, list]:
    """:func:`step` over a chunk's events (lists of them) and decisions (``Signal`` s), for the dataflow.

    The decisions are put before the events received at their time
    (:func:`interleave`). A fill goes out once the depth stream has passed
    its time plus 10 s, with its mids then known: a
    :class:`~core.events.MakerFillRecord`, and its book's running
    :class:`~core.events.MakerEconomicsRecord`. Also counts: the post-only
    orders refused, decisions not taken (too late, or without a book), and
    fills that went out without their moves (too many waiting). The own
    book's dead letters and counts are not repeated: the bars' book reports
    them.

    >>> from core.events import BookSnapshot, DepthUpdate, Level, Signal, Trade
    >>> S = 10**9
    >>> st = QuoterState(MakerConfig(latency_ms=10, lot=1.0, baseline=False), "X")
    >>> snap = BookSnapshot("X", S // 2, 5, (Level(100.0, 1.0),), (Level(100.2, 1.0),), S // 2)
    >>> evs = [snap, Trade("X", S // 2 + 1, S // 2, 100.1, 1.0, True, 1),
    ...        Trade("X", S + 2 * 10**7, S + 15 * 10**6, 99.9, 1.0, True, 2)]   # stamped 5 ms after the bid arrived
    >>> st, out = step_batch(st, [evs, Signal("X", "linear", 1, S, 1, None, 0.0, 0.5)])
    >>> out, len(st.pending)        # the bid at 100.0, sold through at 99.9: it waits for the mid 10 s on
    ([], 1)
    >>> later = DepthUpdate("X", 12 * S, 12 * S, 4, 6, 3, (Level(100.0, 0.0), Level(99.8, 1.0)), ())
    >>> st, out = step_batch(st, [[later]])
    >>> fill, econ = out
    >>> (fill.model, fill.side, fill.price, fill.qty, fill.queue, fill.mid, fill.mid_1s, fill.mid_10s)
    ('linear', 1, 100.0, 1.0, 1.0, 100.1, 100.1, 100.1)
    >>> econ.fills, econ.position, round(econ.gross_pnl, 9), econ.fill_rate   # marked at the mid now, 100.0; 1 of 2
    (1, 1.0, 0.0, 0.5)
    """
    st = state
    batches: list = []
    signals: list = []
    for v in values:
        if type(v) is Signal:
            signals.append(v)
        elif isinstance(v, list):
            batches.append(v)
    refused = sum(m.refused for m in st.books.values())
    late, unbooked, unmoved = st.late_signals, st.without_book, st.unmoved
    out: list = []
    iv = st.config.interval_ms * _MS
    sigs = sorted(signals, key=lambda s: s.ts_forecast) if signals else signals
    k = 0  # the next decision: before the first event received at or after its time (interleave)
    dec: Optional[Decisions] = None  # the decisions as the runs read them
    for events in batches:
        cols = getattr(events, "cols", None) if st.compiled else None  # the chunk path's arrays: runs compiled
        i, n = 0, len(events)
        while i < n:
            item = events[i]
            due = _due(sigs, k, item.ts_recv)
            for sig in sigs[k:due]:
                st, _ = step(st, sig)
            k = due
            if cols is not None and cols.kind[i]:
                if type(item) is not Quote and st.config.baseline and _ready(st.book):
                    _baseline(st, item.ts_recv)  # step's first part: then the run can take the event
                if _quiet(st, item):
                    if dec is None or dec.books != len(st.books):  # a book made since: its decisions' place
                        from operators import flatmaker  # numba: the chunk path's

                        dec = flatmaker.decisions(st, sigs)
                    j, k = _by_run(st, events, cols, i, dec, k, out)
                    if j > i:
                        i = j
                        continue
            i += 1
            if type(item) is Quote:  # it changes nothing of the book here: its time only (step's outputs unchanged)
                t = item.ts_recv
                if t > st.clock:
                    st.clock = t
                if st.next_quote < 0 and st.config.baseline and _ready(st.book):
                    st.next_quote = (t // iv + 1) * iv
                continue
            st, fills = step(st, item)
            _went_out(st, fills, item.ts_recv, out)
    for sig in sigs[k:]:
        st, _ = step(st, sig)
    refused = sum(m.refused for m in st.books.values()) - refused
    if refused:
        out.append(Count("maker_orders_refused", refused))
    if st.late_signals > late:
        out.append(Count("maker_late_decisions", st.late_signals - late))
    if st.without_book > unbooked:
        out.append(Count("maker_decisions_without_book", st.without_book - unbooked))
    if st.unmoved > unmoved:
        out.append(Count("maker_fills_without_moves", st.unmoved - unmoved))
    return st, out


def _went_out(st: QuoterState, fills: list, t: int, out: list) -> None:
    """After an event (received at ``t``) that made ``fills``: they wait; those whose moves are known go out."""
    pending = st.pending
    if fills:
        pending.extend((f, t) for f in fills)
        cap = st.config.max_pending_fills
        while len(pending) > cap:
            st.unmoved += 1
            _settle(st, pending.popleft(), out)
    last = _HORIZONS[-1]
    while pending and pending[0][0].ts_exch + last < st.depth_ts:
        _settle(st, pending.popleft(), out)


def _quiet(st: QuoterState, ev: Event) -> bool:
    """Whether a run of compiled code may take ``ev``: not one without an exchange time, nor with the baseline's due."""
    if type(ev) is Quote:
        return True
    return getattr(ev, "ts_event", None) is not None and not (st.config.baseline and 0 <= st.next_quote <= ev.ts_recv)


def warm() -> None:
    """Load the chunk path's kernel (:mod:`operators.flatmaker`; from numba's cache, compiled the first time).

    As a live run with the maker books does before its first tick.
    """
    from core.events import EventColumns
    from operators import flatmaker

    z = np.zeros(1, np.int64)
    cols = EventColumns(np.ones(1, np.int8), z, z, z, np.zeros((1, 4)), z, z, np.zeros((1, 3), np.int64),
                        np.zeros(0), np.zeros(0))
    st = QuoterState(MakerConfig(), compiled=True)
    flatmaker.advance(st, cols, 0, flatmaker.decisions(st, []), 0, 1, False, False, Order)


def _by_run(st: QuoterState, events: list, cols: Any, i: int, dec: Decisions, k: int,
            out: list) -> tuple[int, int]:
    """Step ``events`` from ``i`` on by a run of compiled code (:mod:`operators.flatmaker`); the next to step.

    And the decisions of ``dec`` (:func:`operators.flatmaker.decisions`)
    from ``k`` on before them: the next one is returned too. A diff the run
    ends with applied (the book crossed, or fills) is finished here: the
    book's rules, the orders it reaches, the mid.
    """
    from operators import flatmaker  # numba: the chunk path's

    book = st.book
    status = book.status
    run = flatmaker.advance(st, cols, i, dec, k, _HORIZONS[-1], status in (SYNCED, LOADED), status == SYNCED, Order)
    if run.fills or run.woke:
        st.dirty = True
    for m, n in zip(st.books.values(), run.cancelled, strict=True):
        m.cancelled += n
    at = (0, 0, 0)  # what of the run is made: its mids, fills and orders gone up to an event (_made)
    if run.settles:  # fills waiting went out in the run: each with the state after its event
        after = st.depth_ts, st.last_mid, [m.sent for m in st.books.values()]
        for e, mids, n, known, last_mid, sent in run.settles:
            at = _made(st, events, run, at, e, mids)
            st.depth_ts, st.last_mid = known, last_mid
            for m, s in zip(st.books.values(), sent, strict=True):
                m.sent = s
            for _ in range(n):
                _settle(st, st.pending.popleft(), out)
        st.depth_ts, st.last_mid, sent = after
        for m, s in zip(st.books.values(), sent, strict=True):
            m.sent = s
    _made(st, events, run, at, len(events), len(run.mid_ts))
    j = run.j
    if run.code != flatmaker.APPLIED:
        return j, run.k
    ev = events[j]
    f = book.flat
    assert f is not None and type(ev) is DepthUpdate
    if st.dirty:
        _watch(st)
    last_id = book.last_id
    bids, asks = f.noted = f.note(run.noted)
    orderbook.after_diff(book, ev, [], ev.ts_recv, True, f.bid >= f.ask)  # what orderbook.step does after applying
    fills: list = []
    if run.ready:
        _reach(st, ev, last_id, bids, asks, fills)
    _note_mid(st, ev.ts_event)
    _went_out(st, fills, ev.ts_recv, out)
    return j + 1, run.k


def _made(st: QuoterState, events: list, run: Any, at: tuple[int, int, int], e: int,
          mids: int) -> tuple[int, int, int]:
    """What a run (:func:`operators.flatmaker.advance`) did up to its event ``e``, from ``at`` on; where it is then.

    The mid's changes up to the ``mids`` th, the fills (they wait) and the
    orders gone (on_time's), from ``at``: the places in ``run.mid_ts``,
    ``run.fills`` and ``run.gone`` reached before.
    """
    mi, fi, gi = at
    for t, mid in zip(run.mid_ts[mi:mids], run.mid_px[mi:mids], strict=True):
        _keep_mid(st, t, mid)
    fills, gone = run.fills, run.gone
    made: list = []
    while fi < len(fills) and fills[fi][3] <= e:  # the fills of the run's trades, in order: they wait
        m, o, qty, k = fills[fi]
        _fill(m, o, qty, events[k].ts_event, made)
        st.pending.append((made[-1], events[k].ts_recv))
        fi += 1
    while gi < len(gone) and gone[gi][3] <= e:  # orders that went: on_time's
        m, o, fate, _ = gone[gi]
        if o is not None:  # (None: one the run's decisions sent, refused before it was made)
            del m.orders[o.oid]
        if fate == 1:
            m.cancelled += 1
        else:
            m.refused += 1
        gi += 1
    return mids, fi, gi


def finish(state: QuoterState) -> tuple[QuoterState, list]:
    """When the input ends: the fills still waiting go out, then every book's economics.

    The fills' moves are None where the input ended before them; the
    positions are marked to the last mid. Once only: a run resumed from a
    snapshot taken after the end gets nothing more.

    >>> st = QuoterState(MakerConfig(lot=1.0), "BTCUSDT-PERP")
    >>> st, out = finish(st)
    >>> [(r.model, r.fills, r.fee_bps, r.break_even_bps) for r in out]     # the baseline, which never quoted
    [('touch', 0, 2.0, None)]
    >>> finish(st)[1]
    []
    """
    st = state
    out: list = []
    if st.finished:
        return st, out
    st.finished = True
    while st.pending:
        _settle(st, st.pending.popleft(), out)
    for key in sorted(st.books.keys() | st.ledgers.keys()):
        out.append(economics(st, key))
    return st, out

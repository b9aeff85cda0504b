"""Resting (maker) orders against the recorded book and trades: queue position, latency, fills.

This is the exchange side of passive execution, as hftbacktest models it
(``RiskAdverseQueueModel``, ``ProbQueueModel``; its partial-fill exchange),
on ticklet's event clock:

- **Entry and cancel latency.** An order sent at local time ``t`` reaches
  the exchange at ``t + latency`` on the exchange clock; a cancel too, so a
  fill can land while a cancel is in flight. An order rests on the
  exchange clock from its arrival to its cancel's: a market event stamped
  by the exchange (``ts_event``) inside that span sees it, whenever it is
  received. Feeds lag (a trade stream seconds behind the depth stream), so
  an order whose cancel has arrived is kept for ``late_ms`` of exchange
  time more, for the events stamped before the cancel that come late.
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
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Optional

from pydantic import BaseModel, ConfigDict, Field

from core.events import BookSnapshot, DepthUpdate, Event, Trade
from operators import orderbook
from operators.orderbook import LOADED, SYNCED, OrderBookConfig, OrderBookState

__all__ = ["Book", "MakerConfig", "MakerFill", "MakerState", "Order", "QuoterState", "cancel", "on_depth", "on_time",
           "on_trade", "step", "submit"]

_MS = 1_000_000


class MakerConfig(BaseModel):
    """How resting orders are simulated (the exchange side)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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
    clock_offset_ms: float = Field(
        0.0, ge=0.0,
        description="How far the local (receive) clock is behind the exchange's: an order sent at local time t "
        "reaches the exchange at t + clock_offset + latency on the exchange clock.")
    interval_ms: int = Field(1000, ge=1, description="Quotes are replaced at every multiple of this, receive clock.")
    quote_lots: int = Field(1, ge=1, description="Size of each quote, in lots.")


@dataclass(slots=True)
class Order:
    """One resting order: sent at ``sent`` (local clock), at the exchange from ``arrival`` (exchange clock)."""

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


class MakerFill(NamedTuple):
    """A fill of a resting order: at the order's price, on the exchange clock; ``queue``: ahead of it when live."""

    oid: int
    side: int
    price: float
    qty: float
    ts_exch: int
    queue: float


class Book(NamedTuple):
    """What the exchange side reads of the book: the best prices and the quantity at each price."""

    best_bid: float
    best_ask: float
    bid_qty: dict
    ask_qty: dict


@dataclass(slots=True)
class MakerState:
    """Per instrument and book: the orders in flight or resting, by id, and the refusals counted."""

    config: MakerConfig
    orders: dict = field(default_factory=dict)
    refused: int = 0  # post-only orders that would have crossed
    cancelled: int = 0


def _at_exchange(c: MakerConfig, t_local: int) -> int:
    """When something sent at local time ``t_local`` reaches the exchange, on the exchange clock."""
    return t_local + round((c.clock_offset_ms + c.latency_ms) * _MS)


def submit(st: MakerState, oid: int, side: int, price: float, qty: float, t_local: int) -> None:
    """Send a post-only limit order at local time ``t_local`` (ns)."""
    st.orders[oid] = Order(oid, side, price, qty, _at_exchange(st.config, t_local))


def cancel(st: MakerState, oid: int, t_local: int) -> None:
    """Send the cancel of order ``oid`` at local time ``t_local``; it takes effect when it reaches the exchange."""
    o = st.orders.get(oid)
    if o is not None and o.cancel_at is None:
        o.cancel_at = _at_exchange(st.config, t_local)


def on_time(st: MakerState, book: Book, ts_exch: int) -> None:
    """The orders that reached the exchange by ``ts_exch`` go live (or are refused); cancelled ones past ``late_ms`` go.

    Call it with the book as it stands *before* a market event stamped
    ``ts_exch`` changes it: an order that arrived before the event joins
    the queue the event then changes.
    """
    gone = []
    late = round(st.config.late_ms * _MS)
    for o in st.orders.values():
        if o.cancel_at is not None and o.cancel_at + late < ts_exch:
            gone.append(o.oid)
            st.cancelled += 1
        elif not o.live and _rests(o, ts_exch):
            if (o.side > 0 and o.price >= book.best_ask) or (o.side < 0 and o.price <= book.best_bid):
                gone.append(o.oid)
                st.refused += 1
                continue
            o.live = True
            o.front = o.queue = (book.bid_qty if o.side > 0 else book.ask_qty).get(o.price, 0.0)
    for oid in gone:
        del st.orders[oid]


def _rests(o: Order, ts_exch: int) -> bool:
    """Whether the order rests on the exchange at ``ts_exch``: arrived before, its cancel not before.

    At equal exchange times the market's event comes first (it was in the
    exchange's queue already), as in hftbacktest.
    """
    return o.arrival < ts_exch and (o.cancel_at is None or ts_exch <= o.cancel_at)


def _fill(st: MakerState, o: Order, qty: float, ts_exch: int, out: list) -> None:
    qty = min(qty, o.qty)
    out.append(MakerFill(o.oid, o.side, o.price, qty, ts_exch, o.queue))
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
        if (side > 0 and o.price > price) or (side < 0 and o.price < price):  # traded through
            _fill(st, o, o.qty, ts_exch, out)
        elif o.price == price:
            o.front -= qty
            o.traded += qty
            q = _lots(st, o)
            if q > 0.0:
                _fill(st, o, q, ts_exch, out)
    return out


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


def on_depth(st: MakerState, book: Book, side: int, price: float, prev_qty: float, new_qty: float,
             ts_exch: int) -> list:
    """The level ``price`` of ``side`` went from ``prev_qty`` to ``new_qty``; return the fills.

    ``book`` is the book after the change: an order on the other side at or
    through its best price is filled (the book came to it).
    """
    out: list = []
    for o in list(st.orders.values()):
        if not o.live or not _rests(o, ts_exch):
            continue
        if o.side == side and o.price == price:
            if st.config.queue == "risk_averse":
                o.front = _fmin(o.front, new_qty)
                continue
            chg = prev_qty - new_qty - o.traded
            o.traded = 0.0
            if chg < 0.0:
                o.front = _fmin(o.front, new_qty)
                continue
            front = o.front
            back = prev_qty - front
            p = _prob(st, front, back)
            o.front = _fmin(front - (1.0 - p) * chg + _fmin(back - p * chg, 0.0), new_qty)
        elif (o.side < 0 and side > 0 and o.price <= book.best_bid) or (
                o.side > 0 and side < 0 and o.price >= book.best_ask):
            _fill(st, o, o.qty, ts_exch, out)
    return out


# --- the step over an instrument's events: its book, the quotes, the fills ----------------------------------


@dataclass(slots=True)
class QuoterState:
    """Per instrument: a checked order book (:mod:`operators.orderbook`), the resting orders, the position.

    The quotes are replaced at every multiple of ``interval_ms`` of the
    receive clock: the resting ones cancelled, one bid at the best bid and
    one ask at the best ask of the book as received by then, ``quote_lots``
    each, post-only.
    """

    config: MakerConfig
    book: OrderBookState = field(init=False)
    maker: MakerState = field(init=False)
    next_quote: int = -1  # the next time quotes are replaced; -1: none yet (no book)
    next_oid: int = 1
    position: float = 0.0
    quotes: int = 0  # times quotes were replaced

    def __post_init__(self) -> None:
        self.book = OrderBookState(OrderBookConfig(quotes=False, max_depth=100_000))
        self.maker = MakerState(self.config)


def _view(b: OrderBookState) -> Book:
    return Book(b.bid_px[-1] if b.bid_px else -math.inf, b.ask_px[0] if b.ask_px else math.inf, b.bid_qty, b.ask_qty)


def _requote(st: QuoterState, t: int) -> None:
    """Replace the quotes at local time ``t``: cancel the resting orders, quote at the touch."""
    m, c = st.maker, st.config
    for o in list(m.orders.values()):
        cancel(m, o.oid, t)
    b = _view(st.book)
    qty = c.quote_lots * c.lot
    submit(m, st.next_oid, 1, b.best_bid, qty, t)
    submit(m, st.next_oid + 1, -1, b.best_ask, qty, t)
    st.next_oid += 2
    st.quotes += 1


def step(state: QuoterState, event: Event) -> tuple[QuoterState, list]:
    """Feed one event of the instrument; return the fills (:class:`MakerFill`) it makes.

    ``state`` is updated in place and returned. Quotes due at or before
    the event's receive time are replaced first, on the book as received
    by then; the orders that reached the exchange before the event's
    exchange time join the book it changes.

    >>> from core.events import BookSnapshot, DepthUpdate, Level, Trade
    >>> S, MS = 10**9, 10**6
    >>> st = QuoterState(MakerConfig(latency_ms=10, lot=1.0))
    >>> st, _ = step(st, BookSnapshot("X", S // 2, 5, (Level(100.0, 3.0),), (Level(101.0, 2.0),), S // 2))
    >>> st, _ = step(st, Trade("X", S // 2 + 1, S // 2, 100.5, 1.0, True, 0))   # the book is there: quotes from 1 s
    >>> st, _ = step(st, DepthUpdate("X", S + 20 * MS, S + 20 * MS, 4, 6, 3, (Level(100.0, 1.0),), ()))
    >>> st.maker.orders[1].queue, st.maker.orders[2].queue   # quoted at 1 s: live at 1.01 s, before this diff
    (3.0, 2.0)
    >>> st, fills = step(st, Trade("X", S + 30 * MS, S + 30 * MS, 100.0, 2.0, True, 1))  # 1 ahead, 2 sold
    >>> [(f.oid, f.side, f.price, f.qty) for f in fills], st.position
    ([(1, 1, 100.0, 1.0)], 1.0)
    """
    st = state
    c = st.config
    cls = type(event)
    book = st.book
    ready = (book.status == SYNCED or book.status == LOADED) and bool(book.bid_px) and bool(book.ask_px)
    if ready:
        t = event.ts_recv
        if st.next_quote < 0:
            st.next_quote = (t // (c.interval_ms * _MS) + 1) * c.interval_ms * _MS
        while st.next_quote <= t:
            _requote(st, st.next_quote)
            st.next_quote += c.interval_ms * _MS
    fills: list = []
    m = st.maker
    if cls is DepthUpdate:
        ev: DepthUpdate = event  # type: ignore[assignment]
        if ready:
            changes = [(1, lv.price, book.bid_qty.get(lv.price, 0.0), lv.qty) for lv in ev.bids]
            changes += [(-1, lv.price, book.ask_qty.get(lv.price, 0.0), lv.qty) for lv in ev.asks]
            on_time(m, _view(book), ev.ts_event)  # orders that arrived before it join the book it changes
            last = book.last_id
            orderbook.step(book, ev)
            if book.last_id != last and book.status == SYNCED:
                after = _view(book)
                for side, p, prev, new in changes:
                    fills += on_depth(m, after, side, p, prev, new, ev.ts_event)
        else:
            orderbook.step(book, ev)
    elif cls is BookSnapshot:
        orderbook.step(book, event)
    elif cls is Trade and ready:
        tr: Trade = event  # type: ignore[assignment]
        view = _view(book)
        on_time(m, view, tr.ts_event)
        fills = on_trade(m, view, tr.price, tr.qty, tr.buyer_maker, tr.ts_event)
    for f in fills:
        st.position += f.side * f.qty
    return st, fills

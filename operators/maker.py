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

__all__ = ["Book", "MakerConfig", "MakerFill", "MakerState", "Order", "cancel", "on_depth", "on_time", "on_trade",
           "submit"]

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


def submit(st: MakerState, oid: int, side: int, price: float, qty: float, t_local: int) -> None:
    """Send a post-only limit order at local time ``t_local`` (ns)."""
    st.orders[oid] = Order(oid, side, price, qty, t_local + round(st.config.latency_ms * _MS))


def cancel(st: MakerState, oid: int, t_local: int) -> None:
    """Send the cancel of order ``oid`` at local time ``t_local``; it takes effect when it reaches the exchange."""
    o = st.orders.get(oid)
    if o is not None and o.cancel_at is None:
        o.cancel_at = t_local + round(st.config.latency_ms * _MS)


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


def _prob(st: MakerState, front: float, back: float) -> float:
    c = st.config
    if c.queue == "power":
        fb, ff = back ** c.power_n, front ** c.power_n
    else:
        fb, ff = math.log1p(back), math.log1p(front)
    p = fb / (fb + ff) if fb + ff > 0.0 else 1.0
    return 1.0 if math.isinf(p) or math.isnan(p) else p


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
                o.front = min(o.front, new_qty)
                continue
            chg = prev_qty - new_qty - o.traded
            o.traded = 0.0
            if chg < 0.0:
                o.front = min(o.front, new_qty)
                continue
            front = o.front
            back = prev_qty - front
            p = _prob(st, front, back)
            o.front = min(front - (1.0 - p) * chg + min(back - p * chg, 0.0), new_qty)
        elif (o.side < 0 and side > 0 and o.price <= book.best_bid) or (
                o.side > 0 and side < 0 and o.price >= book.best_ask):
            _fill(st, o, o.qty, ts_exch, out)
    return out

"""Event-time bars on the receive clock.

A bar covers ``[ts_start, ts_end)`` with ``ts_start`` a multiple of the interval
since the epoch. It is emitted when the first event at or after ``ts_end`` arrives,
never earlier, so later data can never change a bar that was already
emitted. Empty intervals are carried forward (same price, zero volume), so a
horizon in bars is a horizon in time; a silence longer than
``max_gap_bars`` is not filled, and the next bar is marked ``reset``.

Order-flow imbalance follows Cont, Kukanov & Stoikov (2014): for each quote
update ``n``

    e_n = q^b_n 1{P^b_n >= P^b_{n-1}} - q^b_{n-1} 1{P^b_n <= P^b_{n-1}}
        - q^a_n 1{P^a_n <= P^a_{n-1}} + q^a_{n-1} 1{P^a_n >= P^a_{n-1}}

summed over the bar, reported with the bar's mean top-of-book depth so that
it can be normalized.

Closed klines become bars directly (their own interval), with the close as
price.

Examples
--------
>>> from core.events import Trade, Quote
>>> cfg = BarConfig(interval_ms=1000, price="last")
>>> st = BarState(cfg)
>>> S = 10**9
>>> st, out = step(st, Trade("X", 0 * S + 1, 0, 100.0, 1.0, False, 1))
>>> st, out = step(st, Trade("X", 0 * S + 5, 0, 101.0, 3.0, True, 2))
>>> out
()
>>> st, out = step(st, Trade("X", 3 * S, 0, 102.0, 1.0, False, 3))
>>> [(b.ts_start // S, b.close, b.volume, b.n_events) for b in out]
[(0, 101.0, 4.0, 2), (1, 101.0, 0.0, 0), (2, 101.0, 0.0, 0)]
>>> out[0].vwap, out[0].buy_volume, out[0].sell_volume
(100.75, 1.0, 3.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from core.events import Bar, BookSnapshot, Count, DepthUpdate, ErrorRecord, Event, Kline, Quote, Trade, event_json

__all__ = ["BarConfig", "BarState", "ofi_term", "step"]

Out = Union[Bar, ErrorRecord, Count]
_UNSET = -(1 << 62)


class BarConfig(BaseModel):
    """How ticks become bars."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval_ms: int = Field(1000, gt=0, description="Bar length in milliseconds of the receive clock.")
    price: Literal["mid", "last"] = Field(
        "mid",
        description="Reference price of a bar, used for returns and targets: the mid-quote at "
        "the bar's end ('mid', needs quotes) or the last trade ('last'). Kline bars always use "
        "their close.",
    )
    allowed_lateness_ms: int = Field(
        1000, ge=0,
        description="An event whose receive time is more than this behind the latest one seen "
        "for its instrument is dead-lettered as late.",
    )
    max_gap_bars: int = Field(
        300, ge=0,
        description="Empty intervals up to this many bars are carried forward; a longer "
        "silence restarts the series (the next bar has reset=True).",
    )


@dataclass(slots=True)
class BarState:
    """Per-instrument bar builder state. Everything here is O(1) in size."""

    config: BarConfig
    start: int = _UNSET  # start of the open bar; _UNSET before the first event
    max_ts: int = -1
    # trades within the open bar
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    close: float = 0.0
    volume: float = 0.0
    quote_volume: float = 0.0
    trades: int = 0
    buy_volume: float = 0.0
    sell_volume: float = 0.0
    n_events: int = 0
    ofi: float = 0.0
    depth_sum: float = 0.0
    n_quotes: int = 0
    # carried across bars
    last_trade: float = 0.0
    bid: float = 0.0
    bid_qty: float = 0.0
    ask: float = 0.0
    ask_qty: float = 0.0
    reset_next: bool = False
    kline_end: int = -1
    interval: int = field(init=False)
    lateness: int = field(init=False)

    def __post_init__(self) -> None:
        self.interval = self.config.interval_ms * 1_000_000
        self.lateness = self.config.allowed_lateness_ms * 1_000_000


def _price(st: BarState, close: float) -> float:
    if st.config.price == "mid":
        return st.bid * 0.5 + st.ask * 0.5 if st.ask > 0.0 else 0.0  # (bid + ask) * 0.5 overflows near 1e308
    return close


def _emit(st: BarState, key: str, start: int, end: int, carried: bool) -> Optional[Bar]:
    """Build the bar for [start, end) from the accumulators (or carry)."""
    if carried or st.trades == 0:
        c = st.last_trade
        if c <= 0.0:
            return None
        o = h = lo = c
        vwap = c
    else:
        o, h, lo, c = st.open, st.high, st.low, st.close
        vwap = st.quote_volume / st.volume
    price = _price(st, c)
    if price <= 0.0:
        return None
    depth = (st.bid_qty + st.ask_qty) * 0.5
    mean_depth = depth if carried or st.n_quotes == 0 else st.depth_sum / st.n_quotes
    reset = st.reset_next
    st.reset_next = False
    if carried:
        return Bar(key, start, end, o, h, lo, c, 0.0, 0.0, vwap, 0, 0.0, 0.0,
                   st.bid, st.bid_qty, st.ask, st.ask_qty, 0.0, mean_depth, price, 0, reset)
    return Bar(key, start, end, o, h, lo, c, st.volume, st.quote_volume, vwap, st.trades,
               st.buy_volume, st.sell_volume, st.bid, st.bid_qty, st.ask, st.ask_qty,
               st.ofi, mean_depth, price, st.n_events, reset)


def _clear(st: BarState) -> None:
    st.volume = st.quote_volume = st.buy_volume = st.sell_volume = 0.0
    st.ofi = st.depth_sum = 0.0
    st.trades = st.n_events = st.n_quotes = 0


def _close_bars(st: BarState, key: str, ts: int, out: list) -> None:
    """Close the open bar and carry forward empty bars up to ``ts``'s bar."""
    iv = st.interval
    end = st.start + iv
    b = _emit(st, key, st.start, end, False)
    if b is not None:
        out.append(b)
    new_start = ts - ts % iv
    gap = (new_start - end) // iv
    if gap > st.config.max_gap_bars:
        st.reset_next = True
        out.append(Count("bar_gap_resets", 1))
    else:
        for s in range(end, new_start, iv):
            b = _emit(st, key, s, s + iv, True)
            if b is not None:
                out.append(b)
    st.start = new_start
    _clear(st)


def _kline(st: BarState, k: Kline, out: list) -> None:
    if k.ts_close <= k.ts_open:  # a kline must cover time: its length is the interval of its gaps
        out.append(ErrorRecord("make_bars", f"kline without duration: open time {k.ts_open} not before "
                               f"close time {k.ts_close}", event_json(k), k.instrument, k.ts_recv))
        return
    if k.ts_close <= st.kline_end:
        out.append(ErrorRecord("make_bars", "kline out of order or duplicated",
                               event_json(k), k.instrument, k.ts_recv))
        return
    iv = k.ts_close - k.ts_open
    if st.kline_end >= 0 and k.ts_open > st.kline_end:
        gap = (k.ts_open - st.kline_end) // iv
        if gap > st.config.max_gap_bars:
            st.reset_next = True
            out.append(Count("bar_gap_resets", 1))
        else:
            c = st.last_trade
            for s in range(st.kline_end, k.ts_open, iv):
                out.append(Bar(k.instrument, s, s + iv, c, c, c, c, 0.0, 0.0, c, 0, 0.0, 0.0,
                               0.0, 0.0, 0.0, 0.0, 0.0, 0.0, c, 0, False))
    vwap = k.quote_volume / k.volume if k.quote_volume > 0 and k.volume > 0 else (k.high + k.low + k.close) / 3
    reset = st.reset_next
    st.reset_next = False
    out.append(Bar(k.instrument, k.ts_open, k.ts_close, k.open, k.high, k.low, k.close, k.volume,
                   k.quote_volume, vwap, k.trades, k.taker_buy_volume,
                   max(k.volume - k.taker_buy_volume, 0.0) if k.trades else 0.0,
                   0.0, 0.0, 0.0, 0.0, 0.0, 0.0, k.close, 1, reset))
    st.kline_end = k.ts_close
    st.last_trade = k.close


def ofi_term(b: float, bq: float, a: float, aq: float, pb: float, pbq: float, pa: float, paq: float) -> float:
    """Cont, Kukanov & Stoikov's ``e_n`` of a best bid/ask after the one before it (the module docstring).

    Plain arithmetic, so that :mod:`operators.flatbars` compiles this same
    function for its kernel.

    >>> ofi_term(100.0, 2.0, 101.0, 1.0, 100.0, 1.0, 101.0, 3.0)   # the bid grew by 1, the ask shrank by 2
    3.0
    """
    e = 0.0
    if b >= pb:
        e += bq
    if b <= pb:
        e -= pbq
    if a <= pa:
        e -= aq
    if a >= pa:
        e += paq
    return e


_NOTHING: tuple = ()


def step(state: BarState, event: Event) -> tuple[BarState, Sequence[Out]]:
    """Feed one event; return the bars (and dead letters, counts) it closes.

    ``state`` is updated in place and returned.
    """
    out: Sequence[Out] = _NOTHING
    st = state
    ts = event.ts_recv
    if ts > st.max_ts:
        st.max_ts = ts
    elif ts < st.max_ts - st.lateness:
        late_ms = (st.max_ts - ts) / 1e6
        return st, [ErrorRecord("make_bars", f"late by {late_ms:.3f} ms",
                                event_json(event), event.instrument, ts)]
    cls = type(event)
    if cls is Kline:
        out = []
        _kline(st, event, out)  # type: ignore[arg-type]
        return st, out
    if ts >= st.start + st.interval:
        if st.start == _UNSET:
            st.start = ts - ts % st.interval
        else:
            out = []
            _close_bars(st, event.instrument, ts, out)
    st.n_events += 1
    if cls is Trade:
        p, q = event.price, event.qty  # type: ignore[union-attr]
        if st.trades == 0:
            st.open = st.high = st.low = p
        elif p > st.high:
            st.high = p
        elif p < st.low:
            st.low = p
        st.close = p
        st.last_trade = p
        st.trades += 1
        st.volume += q
        st.quote_volume += p * q
        if event.buyer_maker:  # type: ignore[union-attr]
            st.sell_volume += q
        else:
            st.buy_volume += q
    elif cls is Quote:
        b, bq, a, aq = event.bid, event.bid_qty, event.ask, event.ask_qty  # type: ignore[union-attr]
        if st.ask > 0.0:
            st.ofi += ofi_term(b, bq, a, aq, st.bid, st.bid_qty, st.ask, st.ask_qty)
        st.bid, st.bid_qty, st.ask, st.ask_qty = b, bq, a, aq
        st.depth_sum += (bq + aq) * 0.5
        st.n_quotes += 1
    elif cls is not DepthUpdate and cls is not BookSnapshot:
        raise TypeError(f"not an event: {event!r}")
    return st, out

"""The quote each decision is filled against, found in the raw ticks.

A decision is taken at a bar's end ``e`` (a multiple of the bar interval on
the receive clock, where the forecasts are issued). A market order sent then
reaches the exchange ``latency`` later, so it is filled against the first
best bid/ask **received at or after** ``e + latency``: never a quote known
before. This operator reads an instrument's events in arrival order (the
same stream the bar builder reads) and emits, for every bar end, a
:class:`~core.events.FillQuote` with that quote, as soon as it arrives.

Events arrive in receive-time order, so a quote at ``ts`` is the first one at
or after ``e + latency`` exactly for the bar ends ``e`` with
``e + latency <= ts`` that no earlier quote covered. After a silence longer
than ``max_gap_bars`` bars (the bar builder restarts its series there, so no
forecast is made in between) only the last ``max_gap_bars`` bar ends get a
quote, which bounds the output of one event. Only best bid/ask updates
(bookTicker :class:`~core.events.Quote` s) are quotes; trades, depth
updates and klines are ignored, so kline and trade archives get no fills.

The matching of decisions and fill quotes is done by :mod:`operators.pnl`
on ``(instrument, ts_forecast)``, whatever order the two streams arrive in.

Examples
--------
>>> from core.events import Quote, Trade
>>> st = FillState(latency_ms=50, interval_ms=1000, max_gap_bars=300)
>>> S = 10**9
>>> evs = [Quote("X", 2 * S + 10**7, None, 99.0, 1.0, 101.0, 2.0, 1),  # 2.01 s
...        Trade("X", 3 * S, 3 * S, 100.0, 0.1, False, 7),          # not a quote
...        Quote("X", 3 * S + 4 * 10**7, None, 99.5, 1.0, 100.5, 1.0, 2),  # 3.04 s < 3 s + 50 ms
...        Quote("X", 3 * S + 6 * 10**7, None, 99.6, 1.0, 100.6, 1.0, 3)]  # 3.06 s
>>> out = []
>>> for ev in evs:
...     st, o = step(st, ev)
...     out += o
>>> [(q.ts_forecast // S, q.ts_recv, q.bid) for q in out]  # bar end 2 s: 3.04 s; bar end 3 s: 3.06 s
[(2, 3040000000, 99.5), (3, 3060000000, 99.6)]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.events import FillQuote, Quote

__all__ = ["FillState", "step", "step_batch"]


@dataclass
class FillState:
    """Per instrument: the next bar end without a fill quote.

    ``latency_ms`` is the order latency
    (:class:`operators.pnl.ExecutionConfig`), ``interval_ms`` and
    ``max_gap_bars`` the bar builder's.
    """

    latency_ms: int
    interval_ms: int
    max_gap_bars: int
    next_end: int = -1  # -1: no quote seen yet
    interval: int = field(init=False)
    latency: int = field(init=False)

    def __post_init__(self) -> None:
        self.interval = self.interval_ms * 1_000_000
        self.latency = self.latency_ms * 1_000_000


def step(state: FillState, event: object) -> tuple[FillState, list[FillQuote]]:
    """Feed one event; emit the fill quotes it is the first quote for."""
    if type(event) is not Quote:
        return state, []
    q: Quote = event
    iv, ts = state.interval, q.ts_recv
    last_end = (ts - state.latency) // iv * iv  # the latest bar end this quote can fill
    if state.next_end < 0:
        state.next_end = last_end + iv  # the first quote fills nothing before it: decisions need bars
        return state, []
    if last_end < state.next_end:
        return state, []
    first = max(state.next_end, last_end - (state.max_gap_bars - 1) * iv)
    out = [FillQuote(q.instrument, e, ts, q.bid, q.bid_qty, q.ask, q.ask_qty) for e in range(first, last_end + 1, iv)]
    state.next_end = last_end + iv
    return state, out


def step_batch(state: FillState, batches: list) -> tuple[FillState, list[FillQuote]]:
    """:func:`step` over a chunk's lists of events, for the dataflow, which passes events on in lists.

    Only the quotes received at or after the next bar end plus the latency
    go through :func:`step`: the others give nothing (tested to give what
    :func:`step` gives event by event).

    >>> from core.events import Quote
    >>> S = 10**9
    >>> st = FillState(latency_ms=50, interval_ms=1000, max_gap_bars=300)
    >>> evs = [Quote("X", t, None, 99.0, 1.0, 101.0, 1.0, 1) for t in (S, 2 * S, 2 * S + 6 * 10**7)]
    >>> st, out = step_batch(st, [evs[:1], evs[1:]])
    >>> [(q.ts_forecast // S, q.ts_recv) for q in out]
    [(1, 2000000000), (2, 2060000000)]
    """
    st = state
    out: list[FillQuote] = []
    due = st.next_end + st.latency if st.next_end >= 0 else -1  # (ts - latency) // iv * iv >= next_end
    for events in batches:
        for ev in events:
            if type(ev) is Quote and ev.ts_recv >= due:
                st, o = step(st, ev)
                if o:
                    out.extend(o)
                due = st.next_end + st.latency
    return st, out

"""ticklet's side of the maker-fill comparison with hftbacktest (``harness/hftbacktest_ref.py``).

The same fixed strategy on the same recordings, with ticklet's parser, its
checked order book (:mod:`operators.orderbook`) and its exchange side of
resting orders (:mod:`operators.maker`): at every whole second of the
receive clock, cancel the resting orders, then quote one lot at the best
bid and at the best ask of the book as received by then.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from core.events import BookSnapshot, DepthUpdate, Trade
from harness.realdata import parse_paths
from operators import maker, orderbook
from operators.orderbook import LOADED, SYNCED, OrderBookConfig, OrderBookState

S = 1_000_000_000


def _book(b: OrderBookState) -> maker.Book:
    return maker.Book(b.bid_px[-1] if b.bid_px else float("-inf"), b.ask_px[0] if b.ask_px else float("inf"),
                      b.bid_qty, b.ask_qty)


def quote_every_second(paths: Sequence[str | Path], config: maker.MakerConfig, local_offset_ns: int = 0,
                       upto: Optional[int] = None) -> dict:
    """Run the fixed strategy; return its fills (``MakerFill``), final position and decisions made.

    ``local_offset_ns`` is added to every receive time (hftbacktest moves its
    local clock so that no event is received before the exchange stamped
    it: the same shift here makes the two decide on the same book).
    ``upto``: only the first events.
    """
    (events,) = parse_paths(paths)[0].values()
    events = events[:upto]  # (a prefix of the events, for the causality test)
    book = OrderBookState(OrderBookConfig(quotes=False, max_depth=100_000))
    st = maker.MakerState(config)
    fills: list = []
    nxt = -1  # the next decision time
    oid = 1
    decisions = 0
    for ev in events:
        ready = book.status in (SYNCED, LOADED) and book.bid_px and book.ask_px
        recv = ev.ts_recv + local_offset_ns
        if nxt < 0 and ready:
            nxt = (recv // S + 1) * S
        while ready and 0 <= nxt <= recv:  # decisions due before this event is received
            for o in list(st.orders.values()):
                maker.cancel(st, o.oid, nxt)
            b = _book(book)
            maker.submit(st, oid, 1, b.best_bid, config.lot, nxt)
            maker.submit(st, oid + 1, -1, b.best_ask, config.lot, nxt)
            oid += 2
            decisions += 1
            nxt += S
        cls = type(ev)
        if cls is DepthUpdate and book.status in (SYNCED, LOADED):
            changes = [(1, lv.price, book.bid_qty.get(lv.price, 0.0), lv.qty) for lv in ev.bids]
            changes += [(-1, lv.price, book.ask_qty.get(lv.price, 0.0), lv.qty) for lv in ev.asks]
            last = book.last_id
            maker.on_time(st, _book(book), ev.ts_event)  # orders that arrived before it join the book it changes
            orderbook.step(book, ev)
            if book.last_id != last and book.status == SYNCED:
                b = _book(book)
                for side, p, prev, new in changes:
                    fills += maker.on_depth(st, b, side, p, prev, new, ev.ts_event)
        elif cls is DepthUpdate or cls is BookSnapshot:
            orderbook.step(book, ev)
        elif cls is Trade and ready:
            b = _book(book)
            # (orders go live on the book's clock, its diffs: see operators.maker.on_time)
            fills += maker.on_trade(st, b, ev.price, ev.qty, ev.buyer_maker, ev.ts_event)
    position = sum(f.side * f.qty for f in fills)
    return {"fills": fills, "position": position, "decisions": decisions, "refused": st.refused}

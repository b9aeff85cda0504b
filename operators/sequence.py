"""Gap detection on exchange sequence ids (trade ids, aggregate-trade ids).

Binance numbers the trades of a symbol consecutively (``t`` on the trade
stream, ``a`` on the aggTrade stream). After the first id of a stream, every
next id must be the last one plus one; anything else is a gap (messages lost,
for example across a reconnect) and is reported as a :class:`SequenceGap`
with the ids expected and received, plus ``Count("gaps_<stream>")``. An id at
or below the last one is a duplicate or a replay and is counted
(``duplicates_<stream>``) without moving the last id back. The depth stream's
update ids are checked by the local order book (:mod:`operators.orderbook`).

The state holds one integer per (instrument, stream): bounded by the number
of subscriptions.

Examples
--------
>>> st = SequenceState()
>>> out = []
>>> for i in (10, 11, 12, 15, 16, 16):
...     st, o = step(st, SequenceEvent("BTCUSDT", "trade", i, i * 1000))
...     out += o
>>> out  # doctest: +NORMALIZE_WHITESPACE
[SequenceGap(instrument='BTCUSDT', ts_recv=15000, stream='trade', expected=13, got=15),
 Count(name='gaps_trade', n=1),
 Count(name='duplicates_trade', n=1)]
>>> st.last[("BTCUSDT", "trade")]
16
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import msgspec

from core.events import Count

__all__ = ["SequenceEvent", "SequenceGap", "SequenceState", "step"]


class SequenceEvent(msgspec.Struct, frozen=True, gc=False):
    """One id seen on a stream of an instrument at receive time ``ts_recv``."""

    instrument: str
    stream: str
    id: int
    ts_recv: int


class SequenceGap(msgspec.Struct, frozen=True, gc=False):
    """Ids ``expected`` .. ``got - 1`` of ``stream`` never arrived."""

    instrument: str
    ts_recv: int
    stream: str
    expected: int
    got: int


@dataclass
class SequenceState:
    """The last id of every (instrument, stream)."""

    last: dict[tuple[str, str], int] = field(default_factory=dict)


def step(state: SequenceState, event: SequenceEvent) -> tuple[SequenceState, list[Union[SequenceGap, Count]]]:
    """Check one id against the last of its stream."""
    k = (event.instrument, event.stream)
    last = state.last.get(k)
    if last is None or event.id == last + 1:
        state.last[k] = event.id
        return state, []
    if event.id <= last:
        return state, [Count(f"duplicates_{event.stream}", 1)]
    state.last[k] = event.id
    return state, [SequenceGap(event.instrument, event.ts_recv, event.stream, last + 1, event.id),
                   Count(f"gaps_{event.stream}", 1)]

"""One reader per instrument: an instrument read from a second input partition is a dead letter.

Each instrument's steps run where its ticks are read (:mod:`dataflows.local`),
one state per instrument and input partition. An instrument must therefore
come from one partition: its files are one, and ticklet's collector and
publisher key Kafka records by instrument. Where a second partition holds
the same instrument (a topic written without keys, say), each partition
makes its own bars, forecasts and books of it, each from part of its
ticks. This step, keyed by instrument, takes the claim a partition makes
the first time it reads an instrument, and dead-letters every claim after
the first, with a reason that says what to do.

Examples
--------
>>> st = OwnerState()
>>> st, out = step(st, ("0-ticks", b"claim of 0-ticks"))
>>> st, out2 = step(st, ("3-ticks", b"claim of 3-ticks"))
>>> out, st.source, out2[0].stage, out2[0].raw
([], '0-ticks', 'one_reader', 'claim of 3-ticks')
>>> print(out2[0].reason)  # doctest: +NORMALIZE_WHITESPACE
read from two input partitions, 0-ticks (first) and 3-ticks, each of which makes its own bars, forecasts and books
of it from its part of the ticks: give an instrument one partition (key the Kafka records by instrument, as
ticklet's collector and publisher do)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import msgspec

from core.events import ErrorRecord

__all__ = ["OwnerState", "step"]


@dataclass(slots=True)
class OwnerState:
    """The input partition that read an instrument first (None before its claim), and how many others did."""

    source: Optional[str] = None
    others: int = 0


def step(state: OwnerState, item: tuple[str, Any]) -> tuple[OwnerState, list[ErrorRecord]]:
    """Take the claim ``item = (partition, claim)``: nothing for the first partition, a dead letter for another."""
    source, claim = item
    if state.source is None:
        state.source = source
        return state, []
    if source == state.source:
        return state, []
    state.others += 1
    raw = claim if type(claim) is bytes else msgspec.json.encode(claim)
    reason = (f"read from two input partitions, {state.source} (first) and {source}, each of which makes its own bars, "
              "forecasts and books of it from its part of the ticks: give an instrument one partition (key the Kafka "
              "records by instrument, as ticklet's collector and publisher do)")
    return state, [ErrorRecord.of("one_reader", reason, raw, getattr(claim, "instrument", ""))]

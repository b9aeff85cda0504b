"""Cross-asset features in the dataflow: a follower's rows meet its leaders' rows, keyed by follower.

::

    feature rows of every instrument (from where its ticks are read: dataflows.local)
        -> route: each row to its own instrument, and a copy (LeaderRow) to each of its followers
        -> follow_leaders (operators.cross, keyed by follower)
        -> the join and what follows it, keyed by instrument (keyed_step)

An instrument's feature rows are made where its ticks are read, as without
cross-asset features; but a follower's forecasts need its leaders' rows,
which another partition, worker or process may read. So with
``TICKLET_CROSS__PAIRS`` set, the steps after the features run as keyed
Bytewax steps: the rows cross to the worker that owns their follower, and
:mod:`operators.cross` emits a follower row only once every leader has
passed its time, so the outputs do not depend on which worker sent what
first.

The steps run here are the same :class:`~dataflows.local.TickStep` as where
the ticks are read, each instrument's state made by the step's ``init`` from
the instrument of its first input.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream

from core.events import FeatureRow
from dataflows.local import TickStep
from dataflows.ops import StepOut, run_step
from operators import cross

__all__ = ["follow_leaders", "keyed_step"]


def _route(config: cross.CrossConfig, kv: tuple[str, FeatureRow]) -> list[tuple[str, Any]]:
    inst, row = kv
    return [kv, *((f, cross.LeaderRow(f, row)) for f in config.followers_of(inst))]


@operator
def follow_leaders(step_id: str, rows: KeyedStream[FeatureRow], config: cross.CrossConfig) -> StepOut:
    """Each follower's rows with its leaders' lagged features (:mod:`operators.cross`); other rows as they are."""
    routed = op.flat_map("route", rows, functools.partial(_route, config))
    return run_step("follow", routed, cross.step, functools.partial(cross.CrossState, config))


def _started(init: Callable[[str], Any], step: Callable, state: Any, item: Any) -> tuple[Any, Any]:
    """``step``, with the state of an instrument made by ``init`` from the instrument of its first item."""
    if state is None:
        state = init(item.instrument)
    return step(state, item)


def _none() -> None:
    return None


@operator
def keyed_step(step_id: str, up: KeyedStream[Any], step: TickStep) -> StepOut:
    """A tick step (:class:`~dataflows.local.TickStep`) run keyed by instrument, on the worker that owns it.

    A step that exports its states (:attr:`~dataflows.local.TickStep.export`) exports them once the input ends
    (:attr:`~dataflows.ops.StepOut.exports`).
    """
    return run_step(step.name, up, functools.partial(_started, step.init, step.step), _none, step.flatten,
                    step.count_as, step.export)

"""Prequential (test-then-train) metrics per model and horizon.

Each :class:`ForecastRecord` is scored once, when it is resolved, and the
running metrics of its (model, horizon) are emitted:

- ``n``, ``mae``, ``rmse`` of the log-return forecast;
- ``skill = 1 - MSE_model / MSE_naive``, where the naive forecast of a zero
  return has squared error ``realized**2`` on exactly the same targets;
- ``hit_rate``: the share of realized non-zero moves whose sign the forecast
  got right (a zero forecast is a miss), over ``n_directional`` moves;
  None while the model has never forecast a non-zero return;
- ``coverage``: the share of realized returns inside the predictive
  interval, over the ``n_interval`` forecasts that had one.

>>> from ticklet.events import ForecastRecord
>>> st = MetricsState()
>>> for pred, real in [(0.001, 0.002), (-0.001, 0.001), (0.002, 0.0)]:
...     st, out = step(st, ForecastRecord("X", "m", 1, 0, 1, pred, 0, real, 0, real - pred))
>>> m = out[0]
>>> m.n, round(m.mae, 6), m.hits, m.n_directional, m.hit_rate
(3, 0.001667, 1, 2, 0.5)
>>> round(m.skill, 4)  # 1 - (1e-6 + 4e-6 + 4e-6) / (4e-6 + 1e-6)
-0.8
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ticklet.events import ForecastRecord, MetricsRecord

__all__ = ["MetricsState", "step"]


@dataclass(slots=True)
class _Acc:
    n: int = 0
    abs_err: float = 0.0
    sq_err: float = 0.0
    sq_naive: float = 0.0
    n_dir: int = 0
    hits: int = 0
    calls: int = 0
    n_interval: int = 0
    covered: int = 0


@dataclass(slots=True)
class MetricsState:
    """Running sums per (model, horizon): O(models x horizons)."""

    acc: dict[tuple[str, int], _Acc] = field(default_factory=dict)


def step(state: MetricsState, rec: ForecastRecord) -> tuple[MetricsState, list[MetricsRecord]]:
    """Score one resolved forecast; emit the updated metrics of its model."""
    key = (rec.model, rec.horizon)
    a = state.acc.get(key)
    if a is None:
        a = state.acc[key] = _Acc()
    e, r, p = rec.error, rec.realized_return, rec.pred_return
    a.n += 1
    a.abs_err += abs(e)
    a.sq_err += e * e
    a.sq_naive += r * r
    if p != 0.0:
        a.calls += 1
    if r != 0.0:
        a.n_dir += 1
        if p * r > 0.0:
            a.hits += 1
    if rec.pred_lo is not None:
        a.n_interval += 1
        if rec.pred_lo <= r <= rec.pred_hi:  # type: ignore[operator]
            a.covered += 1
    skill = 1.0 - a.sq_err / a.sq_naive if a.sq_naive > 0.0 else None
    hit = a.hits / a.n_dir if a.calls and a.n_dir else None
    coverage = a.covered / a.n_interval if a.n_interval else None
    return state, [MetricsRecord(rec.instrument, rec.model, rec.horizon, rec.ts_target, a.n,
                                 a.abs_err / a.n, math.sqrt(a.sq_err / a.n), skill, hit,
                                 a.n_dir, a.hits, coverage, a.n_interval)]

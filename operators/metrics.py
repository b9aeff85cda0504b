"""Prequential (test-then-train) metrics per model and horizon, with their significance.

Each :class:`ForecastRecord` is scored once, when it is resolved, and the
running metrics of its (model, horizon) are emitted:

- ``n``, ``mae``, ``rmse`` of the log-return forecast;
- ``skill = 1 - MSE_model / MSE_naive``, where the naive forecast of a zero
  return has squared error ``realized**2`` on exactly the same targets;
- ``hit_rate``: the share of realized non-zero moves whose sign the forecast
  got right (a zero forecast is a miss), over ``n_directional`` moves;
  None while the model has never forecast a non-zero return;
  ``hit_rate_se`` its standard error, HAC as below;
- ``coverage``: the share of realized returns inside the predictive
  interval, over the ``n_interval`` forecasts that had one.

**Overlap.** A forecast is made every bar, so at a horizon of ``h > 1`` bars
consecutive targets overlap by ``h - 1`` bars and their outcomes are
dependent. Every test below accounts for it.

**Diebold-Mariano** (:func:`core.stats.dm_test`; against the zero-return forecast, squared error). With
the loss differential ``d_t = realized_t**2 - error_t**2`` (positive when
the model did better), ``DM = mean(d) / sqrt(V / n)``, where ``V`` is the
Newey-West long-run variance of ``d`` with Bartlett weights at lag
``h - 1`` (:class:`core.stats.HacMean`; at ``h = 1`` the plain variance). ``dm_stat``
is DM with the Harvey-Leybourne-Newbold small-sample correction,
``DM x sqrt((n + 1 - 2h + h(h - 1)/n) / n)``, and ``dm_p_value`` its
one-sided p-value (H1: the model's expected squared error is lower) from
Student's t with ``n - 1`` degrees of freedom. None while ``V = 0`` (the
naive model itself) or ``n <= 2h``.

**Pesaran-Timmermann** (:func:`core.stats.pt_test`; directional accuracy, allowing for how often the
market and the model go up): run on **non-overlapping** forecasts, the
1st, (h+1)-th, (2h+1)-th... scored forecast of each (model, horizon), so
that at ``h > 1`` no two outcomes share a bar; ``n_pt`` counts the pairs
used (realized and forecast returns both non-zero). With ``P`` the share of
correct signs, ``Py``/``Px`` the shares of realized/forecast ups and
``P* = Py Px + (1 - Py)(1 - Px)``::

    PT = (P - P*) / sqrt(P*(1 - P*)/n - [(2Py - 1)^2 Px(1 - Px)/n
                                          + (2Px - 1)^2 Py(1 - Py)/n + 4 Py Px (1 - Py)(1 - Px)/n^2])

``pt_p_value`` is one-sided from the standard normal (H1: the forecast's
direction beats chance). None while the variance is not positive (e.g. a
model that always calls the same side).

The plain binomial test of the hit rate is valid only at ``h = 1``; the
summary (:mod:`sinks.summary`) reports it there alone.

>>> from core.events import ForecastRecord
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

from core.events import ForecastRecord, MetricsRecord
from core.stats import HacMean, dm_test, pt_test

__all__ = ["MetricsState", "step"]


@dataclass(slots=True)
class _Acc:
    horizon: int
    n: int = 0
    abs_err: float = 0.0
    sq_err: float = 0.0
    sq_naive: float = 0.0
    n_dir: int = 0
    hits: int = 0
    calls: int = 0
    n_interval: int = 0
    covered: int = 0
    loss_diff: HacMean = field(init=False)  # realized^2 - error^2
    hit_seq: HacMean = field(init=False)  # 1 for a hit, over realized non-zero moves
    pt_n: int = 0
    pt_hits: int = 0
    pt_up_real: int = 0
    pt_up_pred: int = 0

    def __post_init__(self) -> None:
        self.loss_diff = HacMean(self.horizon - 1)
        self.hit_seq = HacMean(self.horizon - 1)


@dataclass(slots=True)
class MetricsState:
    """Running sums per (model, horizon): O(models x horizons x horizon)."""

    acc: dict[tuple[str, int], _Acc] = field(default_factory=dict)


def step(state: MetricsState, rec: ForecastRecord) -> tuple[MetricsState, list[MetricsRecord]]:
    """Score one resolved forecast; emit the updated metrics of its model."""
    key = (rec.model, rec.horizon)
    a = state.acc.get(key)
    if a is None:
        a = state.acc[key] = _Acc(rec.horizon)
    e, r, p = rec.error, rec.realized_return, rec.pred_return
    if p != 0.0 and r != 0.0 and a.n % a.horizon == 0:  # a non-overlapping forecast
        a.pt_n += 1
        a.pt_hits += p * r > 0.0
        a.pt_up_real += r > 0.0
        a.pt_up_pred += p > 0.0
    a.n += 1
    a.abs_err += abs(e)
    a.sq_err += e * e
    a.sq_naive += r * r
    a.loss_diff.add(r * r - e * e)
    if p != 0.0:
        a.calls += 1
    if r != 0.0:
        a.n_dir += 1
        hit = p * r > 0.0
        a.hits += hit
        a.hit_seq.add(1.0 if hit else 0.0)
    if rec.pred_lo is not None:
        a.n_interval += 1
        if rec.pred_lo <= r <= rec.pred_hi:  # type: ignore[operator]
            a.covered += 1
    skill = 1.0 - a.sq_err / a.sq_naive if a.sq_naive > 0.0 else None
    hit_rate = hit_se = None
    if a.calls and a.n_dir:
        hit_rate = a.hits / a.n_dir
        hit_se = a.hit_seq.standard_error()
    coverage = a.covered / a.n_interval if a.n_interval else None
    dm, dm_p = dm_test(a.loss_diff, a.horizon)
    pt, pt_p = pt_test(a.pt_n, a.pt_hits, a.pt_up_real, a.pt_up_pred)
    return state, [MetricsRecord(rec.instrument, rec.model, rec.horizon, rec.ts_target, a.n,
                                 a.abs_err / a.n, math.sqrt(a.sq_err / a.n), skill, hit_rate,
                                 a.n_dir, a.hits, coverage, a.n_interval, hit_se, dm, dm_p, pt, pt_p, a.pt_n)]

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

**Diebold-Mariano** (against the zero-return forecast, squared error). With
the loss differential ``d_t = realized_t**2 - error_t**2`` (positive when
the model did better), ``DM = mean(d) / sqrt(V / n)``, where ``V`` is the
Newey-West long-run variance of ``d`` with Bartlett weights at lag
``h - 1`` (:class:`HacMean`; at ``h = 1`` the plain variance). ``dm_stat``
is DM with the Harvey-Leybourne-Newbold small-sample correction,
``DM x sqrt((n + 1 - 2h + h(h - 1)/n) / n)``, and ``dm_p_value`` its
one-sided p-value (H1: the model's expected squared error is lower) from
Student's t with ``n - 1`` degrees of freedom. None while ``V = 0`` (the
naive model itself) or ``n <= 2h``.

**Pesaran-Timmermann** (directional accuracy, allowing for how often the
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
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from scipy.special import ndtr, stdtr

from core.events import ForecastRecord, MetricsRecord

__all__ = ["HacMean", "MetricsState", "dm_test", "pt_test", "step"]


@dataclass(slots=True)
class HacMean:
    """Running mean of a series and its Newey-West long-run variance at a
    fixed ``lag``, exact, in O(lag) memory.

    ``long_run_variance() = g0 + 2 sum_{k=1..lag} (1 - k/(lag+1)) g_k``, with
    ``g_k = (1/n) sum_{t>k} (x_t - mean)(x_{t-k} - mean)`` (Bartlett weights;
    the estimator of Newey and West, 1987). The centered sums are expanded
    into running cross products, the first ``lag`` values and the last
    ``lag`` values, so nothing else is kept.

    >>> acc = HacMean(lag=1)
    >>> for x in [1.0, 2.0, 4.0, 3.0]:
    ...     acc.add(x)
    >>> acc.mean
    2.5
    >>> # deviations -1.5, -0.5, 1.5, 0.5: g0 = 5/4, g1 = (0.75 - 0.75 + 0.75)/4
    >>> acc.long_run_variance()  # g0 + 2 x 1/2 x g1
    1.4375
    """

    lag: int
    n: int = 0
    total: float = 0.0
    cross: list[float] = field(default_factory=list)  # cross[k] = sum_{t>k} x_t x_{t-k}
    head: list[float] = field(default_factory=list)  # the first `lag` values
    tail: deque = field(default_factory=deque)  # the last `lag` values, newest last

    def __post_init__(self) -> None:
        if not self.cross:
            self.cross = [0.0] * (self.lag + 1)

    def add(self, x: float) -> None:
        """Append one observation."""
        tail, cross = self.tail, self.cross
        cross[0] += x * x
        for k in range(1, len(tail) + 1):
            cross[k] += x * tail[-k]
        if self.lag:
            if len(self.head) < self.lag:
                self.head.append(x)
            tail.append(x)
            if len(tail) > self.lag:
                tail.popleft()
        self.n += 1
        self.total += x

    @property
    def mean(self) -> float:
        """The mean so far (NaN when empty)."""
        return self.total / self.n if self.n else math.nan

    def long_run_variance(self) -> float:
        """The Newey-West long-run variance (``n x`` the HAC variance of the mean)."""
        n, s, m = self.n, self.total, self.mean
        v = self.cross[0] / n - m * m
        head_sum = tail_sum = 0.0
        tail = self.tail
        for k in range(1, min(self.lag, n - 1) + 1):
            head_sum += self.head[k - 1]
            tail_sum += tail[-k]
            g = (self.cross[k] - m * (s - head_sum) - m * (s - tail_sum) + (n - k) * m * m) / n
            v += 2.0 * (1.0 - k / (self.lag + 1)) * g
        return v


def dm_test(acc: HacMean, horizon: int) -> tuple[Optional[float], Optional[float]]:
    """The HLN-corrected Diebold-Mariano statistic of the loss differentials
    in ``acc`` and its one-sided p-value; ``(None, None)`` while undefined.

    >>> acc = HacMean(lag=0)
    >>> for d in [1.0, 2.0, 0.5, 1.5, 1.0, 2.0]:
    ...     acc.add(d)
    >>> stat, p = dm_test(acc, 1)
    >>> round(stat, 4), p < 0.01  # mean 1.333 / sqrt(0.3056 / 6) x sqrt(5/6)
    (5.3936, True)
    """
    n = acc.n
    if n <= 2 * horizon:
        return None, None
    v = acc.long_run_variance()
    if not v > 0.0:
        return None, None
    stat = acc.mean / math.sqrt(v / n) * math.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)
    return stat, float(stdtr(n - 1, -stat))


def pt_test(n: int, hits: int, up_real: int, up_pred: int) -> tuple[Optional[float], Optional[float]]:
    """The Pesaran-Timmermann (1992) statistic of ``hits`` correct signs in
    ``n`` calls, ``up_real`` realized and ``up_pred`` forecast ups, and its
    one-sided p-value; ``(None, None)`` while undefined.

    >>> stat, p = pt_test(100, 70, 50, 50)  # P* = 0.5: 0.2 / sqrt(0.25/100 - 0.25/100^2)
    >>> round(stat, 4), round(p, 6)
    (4.0202, 2.9e-05)
    """
    if n < 2:
        return None, None
    p, py, px = hits / n, up_real / n, up_pred / n
    ps = py * px + (1 - py) * (1 - px)
    var_p = ps * (1 - ps) / n
    var_ps = ((2 * py - 1) ** 2 * px * (1 - px) / n + (2 * px - 1) ** 2 * py * (1 - py) / n
              + 4 * py * px * (1 - py) * (1 - px) / (n * n))
    var = var_p - var_ps
    if not var > 0.0:
        return None, None
    stat = (p - ps) / math.sqrt(var)
    return stat, float(ndtr(-stat))


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
        hit_se = math.sqrt(max(a.hit_seq.long_run_variance(), 0.0) / a.n_dir)
    coverage = a.covered / a.n_interval if a.n_interval else None
    dm, dm_p = dm_test(a.loss_diff, a.horizon)
    pt, pt_p = pt_test(a.pt_n, a.pt_hits, a.pt_up_real, a.pt_up_pred)
    return state, [MetricsRecord(rec.instrument, rec.model, rec.horizon, rec.ts_target, a.n,
                                 a.abs_err / a.n, math.sqrt(a.sq_err / a.n), skill, hit_rate,
                                 a.n_dir, a.hits, coverage, a.n_interval, hit_se, dm, dm_p, pt, pt_p, a.pt_n)]

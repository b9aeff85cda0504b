"""The statistics of ticklet: one home for each.

The metrics (:mod:`operators.metrics`), the signals
(:mod:`operators.signals`), the books (:mod:`operators.pnl`), the end-of-run
summary (:mod:`sinks.summary`) and the HTML report (:mod:`ticklet.report`)
take their distributions, intervals, tests and Sharpe-ratio statistics from
here, so that the same number is computed one way wherever it is shown;
they only call them. Pure functions (and one accumulator,
:class:`HacMean`) of the standard library and scipy.

- the standard normal: :func:`normal_cdf`;
- a proportion (the hit rate): :func:`wilson_interval`,
  :func:`effective_n`, :func:`binomial_p_value`;
- a forecast against the zero-return forecast: :class:`HacMean`
  (Newey-West), :func:`dm_test` (Diebold-Mariano), :func:`pt_test`
  (Pesaran-Timmermann), and :func:`holm` over the tests of a run;
- the Sharpe ratio: :func:`sharpe_standard_error`,
  :func:`probabilistic_sharpe`, :func:`expected_max_sharpe` (the benchmark
  of the deflated Sharpe ratio).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["EULER_GAMMA", "Z95", "HacMean", "binomial_p_value", "dm_test", "effective_n", "expected_max_sharpe",
           "holm", "normal_cdf", "probabilistic_sharpe", "pt_test", "sharpe_standard_error", "wilson_interval"]

#: The standard normal's 97.5% quantile ``Phi^-1(0.975)``: two-sided 95% intervals.
Z95 = 1.959963984540054
#: The Euler-Mascheroni constant.
EULER_GAMMA = 0.5772156649015329


# --- the standard normal -------------------------------------------------------------------------


def normal_cdf(x: float) -> float:
    """``Phi(x)``, the standard normal's distribution function (scipy's ``ndtr``), accurate in both tails.

    In the lower tail it is ``erfc(|x| / sqrt 2) / 2`` (the form
    ``(1 + erf(x / sqrt 2)) / 2`` keeps only an absolute precision of about
    1e-16 in the lower tail, and is 0 below ``x = -8.38``).

    >>> normal_cdf(0.0), round(normal_cdf(Z95), 12), normal_cdf(-10.0)
    (0.5, 0.975, 7.61985302416047e-24)
    """
    from scipy.special import ndtr  # at the first call: ticklet's help and config load no SciPy

    return float(ndtr(x))


# --- a proportion --------------------------------------------------------------------------------


def wilson_interval(p: Any, n: Any, z: float = Z95) -> tuple[Any, Any]:
    """The Wilson score interval of a proportion ``p`` observed over ``n`` trials; 95% by default.

    ``n`` may be an effective, non-integer count (:func:`effective_n`).
    ``p`` and ``n`` are floats or numpy arrays (an interval per element).

    The bounds are the formula's, unclamped: at ``p = 0`` or ``1`` rounding
    can put one a hair outside [0, 1] (``-1e-17``); a caller that shows
    them clamps them (:func:`sinks.summary.metrics_entry`).

    >>> lo, hi = wilson_interval(236 / 323, 323)  # 236 hits in 323 moves
    >>> round(lo, 4), round(hi, 4)
    (0.6798, 0.7761)
    >>> import numpy as np
    >>> [b.round(4).tolist() for b in wilson_interval(np.array([0.7, 0.5]), np.array([100.0, 10.0]))]
    [[0.6042, 0.2366], [0.7811, 0.7634]]
    """
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    v = p * (1 - p) / n + z2n / (4 * n)
    root = math.sqrt(v) if isinstance(v, float) else v ** 0.5  # an array's ** 0.5 is numpy's sqrt
    half = z * root / (1 + z2n)
    return centre - half, centre + half


def effective_n(p: float, se: Optional[float], n: int) -> float:
    """How many independent trials give a proportion ``p`` the standard error ``se`` it has: ``p (1 - p) / se^2``.

    Fewer than ``n`` where ``se`` is HAC over overlapping outcomes (the hit
    rate at ``h > 1``); ``n`` itself without an ``se`` (None or 0).

    >>> effective_n(0.6, 0.04, 300), effective_n(0.6, None, 300)
    (150.0, 300.0)
    """
    return p * (1 - p) / (se * se) if se else float(n)


def binomial_p_value(k: int, n: int, p0: float = 0.5) -> float:
    """The one-sided p-value of ``k`` successes in ``n`` independent trials against a success rate of ``p0``.

    H1: greater; ``P[X >= k]`` with X binomial (scipy's exact test). Valid
    for independent trials only: the hit rate at a horizon of one bar
    (beyond, use :func:`pt_test`).

    >>> round(binomial_p_value(60, 100), 6)  # P[X >= 60], X ~ B(100, 1/2)
    0.028444
    """
    from scipy.stats import binomtest  # loaded at the first call: scipy.stats takes a while to import

    return float(binomtest(k, n, p0, alternative="greater").pvalue)


# --- a forecast against the zero-return forecast -------------------------------------------------

@dataclass(slots=True)
class HacMean:
    """Running mean of a series and its Newey-West long-run variance at a fixed ``lag``, exact, in O(lag) memory.

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

    def standard_error(self) -> float:
        """The HAC standard error of the mean, ``sqrt(max(V, 0) / n)``, ``V`` the :meth:`long_run_variance`.

        A rounding error can make ``V`` a hair negative.

        >>> acc = HacMean(lag=0)
        >>> for x in [1.0, 0.0, 1.0, 1.0]:
        ...     acc.add(x)
        >>> acc.standard_error()  # sqrt(0.1875 / 4): a hit rate of 3/4 over 4 independent moves
        0.21650635094610965
        """
        return math.sqrt(max(self.long_run_variance(), 0.0) / self.n)


def dm_test(acc: HacMean, horizon: int) -> tuple[Optional[float], Optional[float]]:
    """The HLN-corrected Diebold-Mariano statistic of the loss differentials in ``acc``, and its p-value.

    The p-value is one-sided; ``(None, None)`` while undefined.

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
    from scipy.special import stdtr

    return stat, float(stdtr(n - 1, -stat))


def pt_test(n: int, hits: int, up_real: int, up_pred: int) -> tuple[Optional[float], Optional[float]]:
    """The Pesaran-Timmermann (1992) statistic of ``hits`` correct signs in ``n`` calls, and its p-value.

    ``up_real`` ups were realized and ``up_pred`` forecast; the p-value is
    one-sided; ``(None, None)`` while undefined.

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
    return stat, normal_cdf(-stat)


def holm(pvalues: list[Optional[float]], alpha: float = 0.05) -> list[Optional[bool]]:
    """Which p-values are rejected by Holm's step-down procedure at family-wise error ``alpha``.

    None where the p-value is None; the family is the p-values that exist.

    >>> holm([0.01, 0.04, 0.03, None, 0.005])  # thresholds 0.05/4, 0.05/3, 0.05/2, 0.05
    [True, False, False, None, True]
    """
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[Optional[bool]] = [None if p is None else False for p in pvalues]
    m = len(tested)
    for rank, (p, i) in enumerate(tested):
        if p > alpha / (m - rank):
            break
        out[i] = True
    return out


# --- the Sharpe ratio ----------------------------------------------------------------------------


def sharpe_standard_error(sr: float, n: int, periods: float) -> float:
    """The standard error of an annualized Sharpe ratio: ``sqrt(periods (1 + sr^2 / 2) / n)``.

    From the per-bar Sharpe ratio ``sr`` over ``n`` returns and ``periods``
    bars a year (Lo, 2002, "The Statistics of Sharpe Ratios", IID returns).

    >>> round(sharpe_standard_error(1.0, 3, 1.0), 6)  # sqrt(1.5 / 3)
    0.707107
    """
    return math.sqrt(periods * (1.0 + sr * sr / 2.0) / n)


def probabilistic_sharpe(sr: float, sr0: float, n: int, skew: float, kurt: float) -> Optional[float]:
    """``P[true SR > sr0]``: Bailey & López de Prado's probabilistic Sharpe ratio of a per-bar Sharpe ratio ``sr``.

    ``sr`` is estimated over ``n`` returns of skewness ``skew`` and
    (non-excess) kurtosis ``kurt``; None with fewer than two returns or a
    degenerate variance.

    ``Phi((sr - sr0) x sqrt(n - 1) / sqrt(1 - skew x sr + (kurt - 1) / 4 x sr^2))``.

    Bailey & López de Prado's (2014) numerical example of the deflated Sharpe
    ratio: annualized SR 2.5 over 5 years of daily returns (T = 1,250,
    ``sr = 2.5 / sqrt(250)``), skewness -3, kurtosis 10, against the expected
    maximum of 100 trials with an annualized variance of 1/2, ``sr0 = 0.1132``
    (:func:`expected_max_sharpe`), a deflated Sharpe ratio of 0.9004:

    >>> round(probabilistic_sharpe(2.5 / math.sqrt(250), 0.113172, 1250, -3.0, 10.0), 4)
    0.9004
    >>> round(probabilistic_sharpe(0.1, 0.0, 101, 0.0, 3.0), 6)  # normal returns: Phi(0.1 x 10 / sqrt(1.005))
    0.840741
    """
    v = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if n < 2 or not v > 0:
        return None
    z = (sr - sr0) * math.sqrt(n - 1) / math.sqrt(v)
    return normal_cdf(z)


def expected_max_sharpe(variance: float, n: int) -> float:
    """``SR0``: the expected maximum of ``n`` independent Sharpe ratio estimates of true Sharpe zero.

    The estimates have variance ``variance`` (Bailey & López de Prado,
    2014, "The Deflated Sharpe Ratio: Correcting for Selection Bias,
    Backtest Overfitting, and Non-Normality", *Journal of Portfolio
    Management* 40(5), from the extreme value theory of the maximum of
    normals): ``sqrt(variance) x ((1 - gamma) x Phi^-1(1 - 1/n) + gamma x
    Phi^-1(1 - 1/(n e)))``, gamma the Euler-Mascheroni constant. The
    deflated Sharpe ratio is :func:`probabilistic_sharpe` against it.

    Their numerical example: 100 trials, an annualized variance of 1/2 over
    daily returns (250 a year):

    >>> round(expected_max_sharpe(0.5 / 250, 100), 4)
    0.1132
    """
    inv = statistics.NormalDist().inv_cdf
    return math.sqrt(variance) * ((1 - EULER_GAMMA) * inv(1 - 1 / n) + EULER_GAMMA * inv(1 - 1 / (n * math.e)))

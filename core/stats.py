"""The statistics more than one layer uses: one home for each.

The end-of-run summary (:mod:`sinks.summary`), the HTML report
(:mod:`ticklet.report`) and the metrics (:mod:`operators.metrics`) take
their intervals and tests from here, so that the same number is computed
one way wherever it is shown. Pure functions of the standard library.
"""

from __future__ import annotations

import math
from typing import Optional

__all__ = ["holm", "wilson_interval"]


def wilson_interval(p: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` over ``n`` trials (``n``
    may be an effective, non-integer count); 95% by default.

    >>> [round(v, 4) for v in wilson_interval(0.7, 100)]
    [0.6042, 0.7811]
    """
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def holm(pvalues: list[Optional[float]], alpha: float = 0.05) -> list[Optional[bool]]:
    """Which p-values are rejected by Holm's step-down procedure at
    family-wise error ``alpha`` (None where the p-value is None; the family is
    the p-values that exist).

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

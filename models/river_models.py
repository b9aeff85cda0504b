"""River learners adapted to the online-learner protocol.

Targets are raw realized log returns. Regressors standardize their target
online (:class:`river.preprocessing.TargetStandardScaler`: statistics of past
targets only) and answer in raw return units.

Learners that can say how sure they are also implement
``predict_with_interval(x) -> (pred, lo, hi)``, a central interval at the
configured level in log-return units:

- :class:`BayesianRegressor`: the Gaussian predictive distribution of
  :class:`river.linear_model.BayesianLinearRegression`;
- :class:`JackknifeRegressor`: online jackknife+ intervals
  (:class:`river.conf.RegressionJackknife`) around any River regressor.

Examples
--------
>>> import random
>>> rng = random.Random(1)
>>> lin, clf, bayes = linear_regressor(), DirectionClassifier(), BayesianRegressor()
>>> for _ in range(2000):
...     x = {"a": rng.gauss(0, 1)}
...     y = 1e-4 * x["a"] + rng.gauss(0, 2e-5)
...     lin.learn_one(x, y); clf.learn_one(x, y); bayes.learn_one(x, y)
>>> lin.predict_one({"a": 1.0}) > 5e-5, clf.predict_one({"a": 1.0}) > 0
(True, True)
>>> clf.predict_one({"a": -1.0}) < 0
True
>>> pred, lo, hi = bayes.predict_with_interval({"a": 1.0})
>>> bool(lo < 1e-4 < hi and abs(pred - 1e-4) < 2e-5)
True
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import cast

from river import conf, forest, linear_model, optim, preprocessing, stats, time_series, tree
from scipy.stats import norm

__all__ = [
    "BayesianRegressor",
    "DirectionClassifier",
    "JackknifeRegressor",
    "SnarimaxForecaster",
    "adaptive_random_forest",
    "hoeffding_adaptive_tree",
    "linear_regressor",
    "passive_aggressive",
]


def _scaled(regressor):
    return preprocessing.TargetStandardScaler(regressor=regressor)


def linear_regressor(lr: float = 0.01, l2: float = 0.0):
    """Linear regression by SGD on the standardized target."""
    return _scaled(linear_model.LinearRegression(optimizer=optim.SGD(lr), l2=l2))


def passive_aggressive(c: float = 0.01, eps: float = 0.1):
    """Passive-aggressive regression (PA-I) on the standardized target."""
    return _scaled(linear_model.PARegressor(C=c, mode=1, eps=eps))


def hoeffding_adaptive_tree(seed: int = 0, grace_period: int = 100):
    """Hoeffding adaptive tree (drift-aware) on the standardized target."""
    return _scaled(tree.HoeffdingAdaptiveTreeRegressor(grace_period=grace_period, seed=seed))


def adaptive_random_forest(seed: int = 0, n_models: int = 5):
    """Adaptive random forest of Hoeffding trees on the standardized target."""
    return _scaled(forest.ARFRegressor(n_models=n_models, seed=seed))


class JackknifeRegressor:
    """Any River regressor with online jackknife+ predictive intervals."""

    def __init__(self, regressor, level: float = 0.9):
        self.model = conf.RegressionJackknife(regressor, confidence_level=level)

    # River types features as dict[Hashable, object]; dicts are invariant, hence the casts

    def predict_one(self, x: dict[str, float]) -> float:
        """Forecast the log return from features ``x`` (the jackknife's point forecast)."""
        return float(self.model.predict_one(cast(dict[Hashable, object], x), with_interval=False))

    def predict_with_interval(self, x: dict[str, float]) -> tuple[float, float, float]:
        """The regressor's forecast from features ``x``, and the jackknife+ interval around it.

        >>> m = JackknifeRegressor(linear_regressor())
        >>> for i in range(200):
        ...     m.learn_one({"a": i % 7 - 3.0}, 1e-4 * (i % 7 - 3.0))
        >>> pred, lo, hi = m.predict_with_interval({"a": 1.0})
        >>> bool(lo <= pred <= hi)
        True
        """
        iv = self.model.predict_one(cast(dict[Hashable, object], x), with_interval=True)
        return float(self.model.regressor.predict_one(x)), float(iv.lower), float(iv.upper)

    def learn_one(self, x: dict[str, float], y: float) -> None:
        """Learn that features ``x`` were followed by log return ``y``."""
        self.model.learn_one(cast(dict[Hashable, object], x), y)


class BayesianRegressor:
    """Bayesian linear regression with its Gaussian predictive distribution.

    The target is standardized with the running mean and variance of past
    targets; the predictive mean and standard deviation are mapped back.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, level: float = 0.9):
        self.model = linear_model.BayesianLinearRegression(alpha=alpha, beta=beta)
        self.y = stats.Var()
        self.z = float(norm.ppf(0.5 + level / 2.0))

    def _scale(self) -> tuple[float, float]:
        sd = math.sqrt(self.y.get()) if self.y.mean.n > 1 else 0.0
        return self.y.mean.get(), sd if sd > 0.0 else 1.0

    def predict_with_interval(self, x: dict[str, float]) -> tuple[float, float, float]:
        """The predictive mean from features ``x`` and its central interval, in log-return units.

        ``(0.0, 0.0, 0.0)`` until two returns were learnt.

        >>> BayesianRegressor().predict_with_interval({"a": 1.0})
        (0.0, 0.0, 0.0)
        """
        if self.y.mean.n < 2:
            return 0.0, 0.0, 0.0
        mean, sd = self._scale()
        dist = self.model.predict_one(x, with_dist=True)
        mu, sigma = float(mean + dist.mu * sd), float(dist.sigma * sd)
        return mu, mu - self.z * sigma, mu + self.z * sigma

    def predict_one(self, x: dict[str, float]) -> float:
        """The predictive mean of the log return from features ``x``."""
        return self.predict_with_interval(x)[0]

    def learn_one(self, x: dict[str, float], y: float) -> None:
        """Learn that features ``x`` were followed by log return ``y`` (standardized with past targets)."""
        self.y.update(y)
        mean, sd = self._scale()
        self.model.learn_one(x, (y - mean) / sd)


class SnarimaxForecaster:
    """SNARIMAX (:mod:`river.time_series`) on the series of realized returns.

    It ignores the features: each ``learn_one`` appends the newly realized
    ``h``-bar return (in basis points) to the series, and the forecast for the
    next target, ``h`` steps ahead in that series, is ``forecast(h)[-1]``.
    """

    def __init__(self, horizon: int, p: int = 3, d: int = 0, q: int = 1, lr: float = 0.001):
        # River's default inner regressor (SGD at 0.01) diverges on return series.
        regressor = preprocessing.StandardScaler() | linear_model.LinearRegression(
            optimizer=optim.SGD(lr), intercept_lr=lr)
        self.model = time_series.SNARIMAX(p=p, d=d, q=q, regressor=regressor)
        self.h = horizon
        self.n = 0

    def predict_one(self, x: dict[str, float]) -> float:
        """The series' forecast ``h`` steps ahead, as a log return; 0.0 until more than ``h`` were learnt.

        The features ``x`` are ignored.

        >>> SnarimaxForecaster(horizon=2).predict_one({})
        0.0
        """
        if self.n <= self.h:
            return 0.0
        return float(self.model.forecast(horizon=self.h)[-1]) / 1e4

    def learn_one(self, x: dict[str, float], y: float) -> None:
        """Append the realized return ``y`` to the series (the features ``x`` are ignored)."""
        self.model.learn_one(y * 1e4)
        self.n += 1


class DirectionClassifier:
    """Logistic regression on the sign of the future return.

    The forecast return is the expected value implied by the classifier,
    ``(2 P(up) - 1) * E|r|``, where ``E|r|`` is the running mean absolute
    realized return. Zero realized returns carry no direction: they update
    ``E|r|`` but not the classifier.
    """

    def __init__(self, lr: float = 0.01, l2: float = 0.0):
        self.clf = linear_model.LogisticRegression(optimizer=optim.SGD(lr), l2=l2)
        self.abs_sum = 0.0
        self.n = 0

    def proba_up(self, x: dict[str, float]) -> float:
        """The classifier's probability that the return following features ``x`` is positive.

        >>> DirectionClassifier().proba_up({"a": 1.0})
        0.5
        """
        return self.clf.predict_proba_one(x).get(True, 0.5)

    def predict_one(self, x: dict[str, float]) -> float:
        """The expected log return from features ``x``: ``(2 P(up) - 1) * E|r|`` (0.0 before any return)."""
        if self.n == 0:
            return 0.0
        return (2.0 * self.proba_up(x) - 1.0) * (self.abs_sum / self.n)

    def learn_one(self, x: dict[str, float], y: float) -> None:
        """Learn the sign of log return ``y`` after features ``x``; a zero return only updates ``E|r|``."""
        self.abs_sum += abs(y)
        self.n += 1
        if y != 0.0:
            self.clf.learn_one(x, y > 0.0)

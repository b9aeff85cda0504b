"""River learners adapted to the online-learner protocol.

Targets are raw realized log returns. Internally the regressor standardizes
its target online (:class:`river.preprocessing.TargetStandardScaler`, using
only past targets) and answers in raw return units.

Examples
--------
>>> import random
>>> rng = random.Random(1)
>>> lin, clf = linear_regressor(), DirectionClassifier()
>>> for _ in range(2000):
...     x = {"a": rng.gauss(0, 1)}
...     y = 1e-4 * x["a"] + rng.gauss(0, 2e-5)
...     lin.learn_one(x, y); clf.learn_one(x, y)
>>> lin.predict_one({"a": 1.0}) > 5e-5, clf.predict_one({"a": 1.0}) > 0
(True, True)
>>> clf.predict_one({"a": -1.0}) < 0
True
"""

from __future__ import annotations

from river import linear_model, optim, preprocessing

__all__ = ["DirectionClassifier", "linear_regressor"]


def linear_regressor(lr: float = 0.01, l2: float = 0.0):
    """Linear regression by SGD on the standardized target."""
    return preprocessing.TargetStandardScaler(
        regressor=linear_model.LinearRegression(optimizer=optim.SGD(lr), l2=l2)
    )


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
        return self.clf.predict_proba_one(x).get(True, 0.5)

    def predict_one(self, x: dict[str, float]) -> float:
        if self.n == 0:
            return 0.0
        return (2.0 * self.proba_up(x) - 1.0) * (self.abs_sum / self.n)

    def learn_one(self, x: dict[str, float], y: float) -> None:
        self.abs_sum += abs(y)
        self.n += 1
        if y != 0.0:
            self.clf.learn_one(x, y > 0.0)

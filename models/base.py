"""The online-learner protocol and the naive baseline.

A learner is any picklable object with ``predict_one(x) -> float`` (the
forecast log return) and ``learn_one(x, y)`` (``y`` the realized log return).
River regressors satisfy it as they are.

>>> m = NaiveModel()
>>> m.predict_one({"a": 1.0})
0.0
>>> m.learn_one({"a": 1.0}, 0.5); m.predict_one({"a": 1.0})
0.0
>>> isinstance(m, OnlineModel)
True
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["NaiveModel", "OnlineModel"]


@runtime_checkable
class OnlineModel(Protocol):
    """What the time-travel join needs from a learner."""

    def predict_one(self, x: dict[str, float]) -> float:
        """Forecast the log return from features ``x``."""
        ...

    def learn_one(self, x: dict[str, float], y: float) -> None:
        """Learn that features ``x`` were followed by log return ``y``."""
        ...


class NaiveModel:
    """Persistence of the price: always forecasts a zero return."""

    def predict_one(self, x: dict[str, float]) -> float:
        """Forecast a zero log return, whatever the features ``x``."""
        return 0.0

    def learn_one(self, x: dict[str, float], y: float) -> None:
        """Learn nothing: the price's persistence needs no training."""
        return None

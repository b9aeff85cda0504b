"""An online ensemble over the other models' forecasts.

The ensemble's input is the dict of the member models' forecasts for one
target, and its forecast is their weighted sum, the weights on the simplex
updated online from realized losses once the target is known:

- ``eg``, exponentiated gradient (Kivinen & Warmuth): ``w_m <- w_m exp(-eta g_m)``
  with ``g_m = 2 (yhat - y) p_m / var(y)``, the gradient of the normalized
  squared loss of the combination;
- ``hedge``: ``w_m`` proportional to ``exp(-eta L_m)`` with ``L_m`` the
  discounted sum of each member's own normalized squared loss;
- ``direction`` (the default): Hedge on each member's logistic loss of the *direction*,
  ``log(1 + exp(-sign(y) p_m / |p|_m))`` (forecasts put on one scale by their
  running mean magnitude); the forecast is the weighted sum of the members'
  forecasts. It follows the members that call the sign best;
- ``stack``: an online logistic regression (River) on the members' forecasts,
  each put on one scale by its running mean magnitude, learning the direction
  of the realized return from its log loss; the forecast is
  ``(2 P(up) - 1)`` times the running mean absolute return.

``var(y)`` is the running variance of past realized returns, so ``eta`` does
not depend on the price scale.

>>> ens = EnsembleModel(("a", "b"), rule="hedge", eta=1.0)
>>> ens.predict_one({"a": 1e-4, "b": -1e-4})
0.0
>>> for i in range(50):  # "a" is always right, "b" always wrong
...     y = 1e-4 * (1 + i % 2)
...     ens.learn_one({"a": y, "b": -y}, y)
>>> ens.weights["a"] > 0.99
True
"""

from __future__ import annotations

import math
from typing import Optional

from river import linear_model, optim, stats

__all__ = ["EnsembleModel"]


class EnsembleModel:
    """Weighted combination of member forecasts, weights learned online."""

    def __init__(self, members: tuple[str, ...], rule: str = "direction", eta: float = 0.5, decay: float = 0.995):
        if not members:
            raise ValueError("an ensemble needs members")
        if rule not in ("eg", "hedge", "direction", "stack"):
            raise ValueError(f"unknown ensemble rule {rule!r}")
        self.members = tuple(members)
        self.rule, self.eta, self.decay = rule, eta, decay
        self.weights = {m: 1.0 / len(members) for m in members}
        self.losses = {m: 0.0 for m in members}
        self.y = stats.Var()
        self.mag = {m: stats.Mean() for m in members}
        self.abs_y = stats.Mean()
        self.stacker = linear_model.LogisticRegression(optimizer=optim.SGD(eta)) if rule == "stack" else None

    def _unit(self, m: str, p: float) -> float:
        scale = self.mag[m].get()
        return p / scale if scale > 0.0 else 0.0

    def _units(self, preds: dict[str, float]) -> dict[str, float]:
        return {m: self._unit(m, preds.get(m, 0.0)) for m in self.members}

    def predict_one(self, preds: dict[str, float]) -> float:
        """The combined forecast of the members' forecasts ``preds`` (a member missing counts as 0).

        The weighted sum of the forecasts, or for ``stack`` ``(2 P(up) - 1)``
        times the running mean absolute return.

        >>> EnsembleModel(("a", "b"), rule="eg").predict_one({"a": 2e-4, "b": 0.0})
        0.0001
        """
        if self.stacker is not None:
            p_up = self.stacker.predict_proba_one(self._units(preds)).get(True, 0.5)
            return (2.0 * p_up - 1.0) * self.abs_y.get()
        return sum(w * preds.get(m, 0.0) for m, w in self.weights.items())

    def proba_up(self, preds: dict[str, float]) -> Optional[float]:
        """P(up) where the rule has one: the stacker's, or the Hedge-weighted mixture for ``direction``.

        For ``direction``, the mixture is of the members' ``sigmoid(unit
        forecast)`` (the probabilities whose log loss the weights follow);
        None for ``eg`` and ``hedge``.
        """
        if self.stacker is not None:
            return float(self.stacker.predict_proba_one(self._units(preds)).get(True, 0.5))
        if self.rule != "direction":
            return None
        units = self._units(preds)
        return sum(w / (1.0 + math.exp(-max(min(units[m], 30.0), -30.0))) for m, w in self.weights.items())

    def learn_one(self, preds: dict[str, float], y: float) -> None:
        """Update the weights (or the stacker) from the members' forecasts ``preds`` and the realized return ``y``."""
        self.y.update(y)
        if self.stacker is not None:
            units = self._units(preds)  # scaled with the magnitudes known at forecast time
            self.abs_y.update(abs(y))
            for m in self.members:
                self.mag[m].update(abs(preds.get(m, 0.0)))
            if y != 0.0:
                self.stacker.learn_one(units, y > 0.0)
            return
        if self.rule == "direction":
            self.abs_y.update(abs(y))
            for m in self.members:
                self.mag[m].update(abs(preds.get(m, 0.0)))
            if y == 0.0:
                return
            sign = 1.0 if y > 0.0 else -1.0
            for m in self.members:
                margin = sign * self._unit(m, preds.get(m, 0.0))
                loss = math.log1p(math.exp(-margin)) if margin > -30 else -margin
                self.losses[m] = self.decay * self.losses[m] + loss
            logw = {m: -self.eta * self.losses[m] for m in self.members}
            self._normalize(logw)
            return
        var = self.y.get() if self.y.mean.n > 1 else 0.0
        if var <= 0.0:
            return
        if self.rule == "eg":
            err = self.predict_one(preds) - y
            logw = {m: math.log(w) - self.eta * 2.0 * err * preds.get(m, 0.0) / var
                    for m, w in self.weights.items()}
        else:
            for m in self.members:
                e = preds.get(m, 0.0) - y
                self.losses[m] = self.decay * self.losses[m] + e * e / var
            logw = {m: -self.eta * self.losses[m] for m in self.members}
        self._normalize(logw)

    def _normalize(self, logw: dict[str, float]) -> None:
        top = max(logw.values())
        z = {m: math.exp(v - top) for m, v in logw.items()}
        s = sum(z.values())
        self.weights = {m: max(v / s, 1e-12) for m, v in z.items()}

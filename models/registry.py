"""Named learners, so that choosing models is one setting.

Add a model by writing a class with ``predict_one(x)`` and ``learn_one(x, y)``
(see :mod:`models.base`; optionally ``predict_with_interval(x)``) and one
entry in :data:`MODELS`: a function of the :class:`LearnerConfig` and the
horizon in bars. ``ensemble`` is not in the table: the time-travel join
builds it over the other models it runs (:mod:`models.ensemble`).

>>> sorted(MODELS)  # doctest: +NORMALIZE_WHITESPACE
['arf', 'bayes_linear', 'cnn_gru', 'deeplob', 'hat', 'linear', 'linear_conformal', 'logistic', 'naive',
 'pa', 'snarimax']
>>> type(build("linear", LearnerConfig(), 1)).__name__
'TargetStandardScaler'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType, ModuleType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.base import NaiveModel, OnlineModel
from models.cnn_gru_config import CNNGRUConfig
from models.deeplob_config import DeepLOBConfig

__all__ = ["BOOK_LEARNERS", "ENSEMBLE", "LearnerConfig", "MODELS", "build"]

#: The name of the ensemble over the other models.
ENSEMBLE = "ensemble"
#: The learners that read the book itself (``reads_book``): with one of them, feature rows carry the book.
BOOK_LEARNERS = frozenset({"deeplob"})


class LearnerConfig(BaseModel):
    """Hyper-parameters of the built-in learners."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(0, description="Seed of the randomized learners (trees, forests, CNN-GRU).")
    linear_lr: float = Field(0.001, gt=0, description="SGD learning rate of the linear regressor.")
    linear_l2: float = Field(0.001, ge=0, description="L2 penalty of the linear regressor.")
    logistic_lr: float = Field(0.005, gt=0, description="SGD learning rate of the direction classifier.")
    logistic_l2: float = Field(0.001, ge=0, description="L2 penalty of the direction classifier.")
    pa_c: float = Field(0.01, gt=0, description="Aggressiveness C of the passive-aggressive regressor.")
    pa_eps: float = Field(0.1, ge=0,
        description="Insensitivity (in target standard deviations) of the passive-aggressive regressor.")
    hat_grace_period: int = Field(100, ge=1,
        description="Observations between split attempts of the Hoeffding adaptive tree.")
    arf_models: int = Field(5, ge=1, description="Trees in the adaptive random forest.")
    bayes_alpha: float = Field(1.0, gt=0, description="Prior precision of the Bayesian linear regression.")
    bayes_beta: float = Field(1.0, gt=0,
        description="Noise precision (standardized target) of the Bayesian linear regression.")
    snarimax_order: tuple[int, int, int] = Field((3, 0, 1),
        description="(p, d, q) of SNARIMAX on the realized-return series.")
    interval_level: float = Field(0.9, gt=0, lt=1, description="Coverage aimed at by predictive intervals.")

    @field_validator("snarimax_order")
    @classmethod
    def _order(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 0:
            raise ValueError("(p, d, q) must be non-negative")
        return v
    ensemble_rule: Literal["eg", "hedge", "direction", "stack"] = Field(
        "direction", description="Ensemble combination: Hedge on each member's directional log loss (default), "
        "exponentiated gradient or Hedge on squared loss, or an online logistic stacker (see models.ensemble).")
    ensemble_eta: float = Field(0.05, gt=0, description="Learning rate of the ensemble weights.")
    ensemble_decay: float = Field(0.995, gt=0, le=1, description="Discount of past losses (Hedge).")
    cnn_gru: CNNGRUConfig = Field(default_factory=CNNGRUConfig, description="Hyper-parameters of the CNN-GRU learner.")
    deeplob: DeepLOBConfig = Field(default_factory=DeepLOBConfig,
                                   description="Hyper-parameters of the DeepLOB-style book learner (it reads the "
                                   "book's top levels, lob_*, and forecasts 0 while the row has none).")


def _river() -> ModuleType:
    """:mod:`models.river_models`, imported on first use: River and SciPy load only when a River learner is built."""
    from models import river_models

    return river_models


def _cnn_gru(cfg: CNNGRUConfig) -> OnlineModel:
    from models.cnn_gru import CNNGRUModel  # torch loads only when a CNN-GRU is built

    return CNNGRUModel(cfg)


def _deeplob(cfg: DeepLOBConfig) -> OnlineModel:
    from models.deeplob import DeepLOBModel  # torch loads only when a book learner is built

    return DeepLOBModel(cfg)


MODELS: Mapping[str, Callable[[LearnerConfig, int], OnlineModel]] = MappingProxyType({
    "naive": lambda c, h: NaiveModel(),
    "linear": lambda c, h: _river().linear_regressor(c.linear_lr, c.linear_l2),
    "linear_conformal": lambda c, h: _river().JackknifeRegressor(
        _river().linear_regressor(c.linear_lr, c.linear_l2), c.interval_level),
    "logistic": lambda c, h: _river().DirectionClassifier(c.logistic_lr, c.logistic_l2),
    "pa": lambda c, h: _river().passive_aggressive(c.pa_c, c.pa_eps),
    "hat": lambda c, h: _river().hoeffding_adaptive_tree(c.seed, c.hat_grace_period),
    "arf": lambda c, h: _river().adaptive_random_forest(c.seed, c.arf_models),
    "bayes_linear": lambda c, h: _river().BayesianRegressor(c.bayes_alpha, c.bayes_beta, c.interval_level),
    "snarimax": lambda c, h: _river().SnarimaxForecaster(h, *c.snarimax_order),
    "cnn_gru": lambda c, h: _cnn_gru(c.cnn_gru),
    "deeplob": lambda c, h: _deeplob(c.deeplob),
})


def build(name: str, cfg: LearnerConfig, horizon: int) -> OnlineModel:
    """A fresh learner by name, for a horizon in bars."""
    try:
        return MODELS[name](cfg, horizon)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)} and {ENSEMBLE!r}") from None

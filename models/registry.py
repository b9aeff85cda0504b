"""Named learners, so that choosing models is one setting.

Add a model by writing a class with ``predict_one``/``learn_one`` (see
:mod:`models.base`) and one entry in :data:`MODELS`.

>>> sorted(MODELS)
['linear', 'logistic', 'naive']
>>> type(build("linear", LearnerConfig())).__name__
'TargetStandardScaler'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, Field

from models.base import NaiveModel, OnlineModel
from models.river_models import DirectionClassifier, linear_regressor

__all__ = ["LearnerConfig", "MODELS", "build"]


class LearnerConfig(BaseModel):
    """Hyper-parameters of the built-in learners."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    linear_lr: float = Field(0.001, gt=0, description="SGD learning rate of the linear regressor.")
    linear_l2: float = Field(0.001, ge=0, description="L2 penalty of the linear regressor.")
    logistic_lr: float = Field(0.005, gt=0, description="SGD learning rate of the direction classifier.")
    logistic_l2: float = Field(0.001, ge=0, description="L2 penalty of the direction classifier.")


MODELS: Mapping[str, Callable[[LearnerConfig], OnlineModel]] = MappingProxyType({
    "naive": lambda c: NaiveModel(),
    "linear": lambda c: linear_regressor(c.linear_lr, c.linear_l2),
    "logistic": lambda c: DirectionClassifier(c.logistic_lr, c.logistic_l2),
})


def build(name: str, cfg: LearnerConfig) -> OnlineModel:
    """A fresh learner by name."""
    try:
        return MODELS[name](cfg)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None

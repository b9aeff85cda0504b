"""The time-travel join: forecast now, score and learn when the target arrives.

For every feature row (one per bar) each model forecasts the log return of the
bar price over each horizon, and the forecast is emitted at once as a
:class:`Forecast` (for live use). It also waits in the state until event time
reaches its target time ``ts_forecast + h * interval``; it is then paired
with the realized return, emitted as a :class:`ForecastRecord` (its
prediction and error are fixed at that moment), and only then does the model
learn from ``(features at forecast time, realized return)``. The target is
always the raw realized log return of the bar price, never a denoised or
scaled value. The book itself in a row (``lob_*``, :mod:`operators.depth`)
goes only to the learners that read it (``reads_book``).

A forecast whose target bar never comes (the series restarted after a long
gap) expires and is counted; so is one whose price ratio has no finite log
(``forecasts_unscorable``: a price near 1e308 or subnormal, which
:mod:`operators.sanity` keeps out of the dataflow). Pending forecasts are bounded by
``max_pending``; the oldest beyond it are dropped and counted.

Examples
--------
>>> from core.events import FeatureRow
>>> cfg = ForecastConfig(horizons=(1, 2), models=("naive", "linear"))
>>> st = JoinState(cfg)
>>> out = []
>>> for t, p in enumerate([100.0, 101.0, 100.5, 102.0]):
...     st, o = step(st, FeatureRow("X", t, 1, p, {"a": float(t)}, True))
...     out += o
>>> scored = [r for r in out if isinstance(r, ForecastRecord)]
>>> [(r.model, r.horizon, r.ts_forecast, r.ts_target) for r in scored][:4]
[('naive', 1, 0, 1), ('linear', 1, 0, 1), ('naive', 1, 1, 2), ('linear', 1, 1, 2)]
>>> import math
>>> r = scored[0]; math.isclose(r.realized_return, math.log(101.0 / 100.0)), r.pred_return
(True, 0.0)
>>> issued = [r for r in out if isinstance(r, Forecast)]
>>> len(issued), issued[0].ts_target  # 4 bars x 2 models x 2 horizons
(16, 1)
>>> sum(len(d) for d in st.pending.values())  # waiting for bars 4 and 5
6
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.events import Count, FeatureRow, Forecast, ForecastRecord
from models.base import OnlineModel
from models.registry import ENSEMBLE, MODELS, LearnerConfig, build

__all__ = ["COLD", "ForecastConfig", "JoinState", "Pending", "export", "predict", "step", "warm"]

#: The origin of a learner that started from nothing (not from a model bundle).
COLD = "cold"


class ForecastConfig(BaseModel):
    """Which models forecast which horizons, and how much may wait."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizons: tuple[int, ...] = Field((1, 10), description="Forecast horizons in bars.")
    models: tuple[str, ...] = Field(
        ("naive", "linear", "logistic"),
        description="Learners by name (see models.registry.MODELS); 'naive' is the zero-return "
        "baseline that skill is measured against; 'ensemble' combines all the others. "
        "E.g. [\"naive\",\"linear\",\"logistic\",\"bayes_linear\",\"hat\",\"ensemble\"].")
    learners: LearnerConfig = Field(default_factory=LearnerConfig, description="Learner hyper-parameters.")
    max_pending: int = Field(100_000, ge=1,
        description="Upper bound on forecasts waiting for their target, per instrument.")
    max_abs_return: float = Field(
        1.0, gt=0,
        description="A forecast log return beyond this (or not finite) is a diverged model: it is replaced "
        "by 0, without interval, and counted as forecasts_invalid.")
    warm_start: Optional[Path] = Field(
        None,
        description="Model bundle (a directory made by ticklet backtest --save-models) that the learners and "
        "the feature scaler start from; they then keep learning online. It is verified first (its id; its signature "
        "with TICKLET_BUNDLE__KEY), and reading its states builds only the classes ticklet's learners are made of. "
        "Bytewax recovery state, where there is some, takes precedence. Unset: every learner starts cold.")
    warm_start_map: dict[str, str] = Field(
        default_factory=dict,
        description="Which bundle instrument starts which instrument of the run: {\"BTCUSDT-PERP\": \"BTCUSDT\"}, "
        "or {\"*\": \"BTCUSDT\"} for every instrument. Unlisted instruments start from their own state in the "
        "bundle, or cold when it has none.")

    @field_validator("horizons")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(h < 1 for h in v):
            raise ValueError("horizons must be positive bar counts")
        return tuple(sorted(set(v)))

    @field_validator("models")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError(f"at least one model is needed; known: {sorted(MODELS)} and {ENSEMBLE!r}")
        unknown = [m for m in v if m not in MODELS and m != ENSEMBLE]
        if unknown:
            raise ValueError(f"unknown models {unknown}; known: {sorted(MODELS)} and {ENSEMBLE!r}")
        if len(set(v)) != len(v):
            raise ValueError("a model is listed twice")
        if ENSEMBLE in v and len(v) < 2:
            raise ValueError("the ensemble needs other models to combine")
        return v

    @field_validator("warm_start_map")
    @classmethod
    def _map(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k, src in v.items() if not k or not src or src == "*"]
        if bad:
            raise ValueError(f"instrument -> bundle instrument, or \"*\" -> one bundle instrument (got {bad[0]!r})")
        return v

    @property
    def members(self) -> tuple[str, ...]:
        """The models the ensemble combines: every other model."""
        return tuple(m for m in self.models if m != ENSEMBLE)


class Pending(msgspec.Struct, frozen=True, gc=False):
    """A forecast waiting for its target time.

    ``x`` is what its model will learn from: the features, or the members'
    forecasts for the ensemble.
    """

    model: str
    ts_forecast: int
    ts_target: int
    pred: float
    price: float
    x: dict[str, float]
    lo: Optional[float] = None
    hi: Optional[float] = None
    n_learnt: int = 0  # labels its learner had learnt when it forecast


@dataclass(slots=True)
class JoinState:
    """Per-instrument learners (one per model and horizon) and pending forecasts.

    ``n_learnt`` counts the labels each learner has learnt (those of a model
    bundle included) and ``origin`` says where it started: :data:`COLD` or
    the id of the bundle it was warm-started from (:func:`warm`). ``n_rows``,
    ``ts_first``, ``ts_last`` and ``interval`` describe the feature rows seen
    (a bundle's manifest reports them). With ``record``, learners that can train offline
    (``record_offline``) keep what they need until :func:`export`.
    """

    config: ForecastConfig
    models: dict[tuple[str, int], OnlineModel] = field(default_factory=dict)
    pending: dict[int, deque] = field(default_factory=dict)
    n_pending: int = 0
    n_learnt: dict[tuple[str, int], int] = field(default_factory=dict)
    origin: dict[tuple[str, int], str] = field(default_factory=dict)
    n_rows: int = 0
    ts_first: Optional[int] = None
    ts_last: Optional[int] = None
    interval: Optional[int] = None  # of the bars, ns
    record: bool = False

    def __post_init__(self) -> None:
        c = self.config
        lc = c.learners
        for h in c.horizons:
            self.pending.setdefault(h, deque())
            for m in c.models:
                if (m, h) not in self.models:
                    self.models[(m, h)] = _ensemble(c) if m == ENSEMBLE else build(m, lc, h)
        if self.record:
            self.record_offline()

    def record_offline(self) -> None:
        """From now on, learners that can train offline (``record_offline``) record what they need.

        They record until :func:`export`.
        """
        self.record = True
        for model in self.models.values():
            rec = getattr(model, "record_offline", None)
            if rec is not None:
                rec()


def _ensemble(c: ForecastConfig) -> OnlineModel:
    from models.ensemble import EnsembleModel  # River loads only when an ensemble is built

    lc = c.learners
    return EnsembleModel(c.members, lc.ensemble_rule, lc.ensemble_eta, lc.ensemble_decay)


Out = Union[Forecast, ForecastRecord, Count]


def export(state: JoinState) -> JoinState:
    """``state`` made ready to be saved in a model bundle at the end of a run.

    Learners that train offline (``fit_offline``) do so on what they
    recorded and forget it, and no forecast is pending any more. Updated in
    place and returned.

    >>> st = JoinState(ForecastConfig(horizons=(1,), models=("naive",)))
    >>> st.pending[1].append("a forecast"); st.n_pending = 1
    >>> export(st).n_pending, len(st.pending[1])
    (0, 0)
    """
    for model in state.models.values():
        fit = getattr(model, "fit_offline", None)
        if fit is not None:
            fit()
    for dq in state.pending.values():
        dq.clear()
    state.n_pending = 0
    return state


def warm(bundle: JoinState, config: ForecastConfig, origin: str) -> JoinState:
    """A fresh state for ``config`` whose learners start from a copy of those of ``bundle``.

    ``bundle`` is a saved state (see :func:`export`); the learners keep
    their label counts, and take ``origin`` (the bundle's id) as their
    origin. A model or horizon the bundle lacks starts cold; so does the
    ensemble when its members differ from the bundle's. Learners with a
    ``reset_stream`` forget the bars they last saw (another time, or another
    instrument).

    >>> cfg = ForecastConfig(horizons=(1,), models=("naive", "linear"))
    >>> old = JoinState(ForecastConfig(horizons=(1,), models=("linear",)))
    >>> old.n_learnt[("linear", 1)] = 500
    >>> st = warm(old, cfg, "abc123")
    >>> st.origin, st.n_learnt
    ({('linear', 1): 'abc123'}, {('linear', 1): 500})
    >>> st.models[("linear", 1)] is old.models[("linear", 1)]
    False
    """
    st = JoinState(config)
    src = copy.deepcopy(bundle)
    same_members = src.config.members == config.members
    for key in list(st.models):
        model = src.models.get(key)
        if model is None or (key[0] == ENSEMBLE and not same_members):
            continue
        reset = getattr(model, "reset_stream", None)
        if reset is not None:
            reset()
        st.models[key] = model
        st.n_learnt[key] = src.n_learnt.get(key, 0)
        st.origin[key] = origin
    return st


def predict(model: OnlineModel, x: dict[str, float],
            lim: float) -> tuple[Optional[float], Optional[float], Optional[float]]:
    """A learner's forecast of ``x`` and its interval, if it gives one (``lo`` and ``hi`` None otherwise).

    ``(None, None, None)`` when the forecast or a bound is beyond ``lim`` or
    not finite (a diverged model).

    >>> from models.base import NaiveModel
    >>> predict(NaiveModel(), {}, 1.0)
    (0.0, None, None)
    """
    with_interval = getattr(model, "predict_with_interval", None)
    lo = hi = None
    if with_interval is not None:
        pred, lo, hi = with_interval(x)
    else:
        pred = model.predict_one(x)
    if not (abs(pred) <= lim and (lo is None or hi is None or (abs(lo) <= lim and abs(hi) <= lim))):
        return None, None, None  # NaN fails the comparison too
    return float(pred), lo, hi


def step(state: JoinState, row: FeatureRow) -> tuple[JoinState, list[Out]]:
    """Resolve forecasts whose target is ``row.ts_end``, learn, then forecast.

    ``state`` is updated in place and returned.
    """
    st = state
    out: list[Out] = []
    t = row.ts_end
    if st.ts_first is None:
        st.ts_first = t
    st.ts_last = t
    st.interval = row.interval
    st.n_rows += 1
    n_learnt = st.n_learnt
    origin = st.origin
    expired = unscorable = 0
    for h, dq in st.pending.items():
        while dq and dq[0].ts_target <= t:
            p = dq.popleft()
            st.n_pending -= 1
            if p.ts_target != t:
                expired += 1
                continue
            # a price ratio that overflows or underflows (a price near 1e308 or subnormal, or not a
            # positive number) has no log return: the forecast is not scored and not learnt from
            ratio = row.price / p.price if p.price > 0.0 else math.nan
            if not 0.0 < ratio < math.inf:
                unscorable += 1
                continue
            realized = math.log(ratio)
            key = (p.model, h)
            out.append(ForecastRecord(row.instrument, p.model, h, p.ts_forecast, t, p.pred,
                                      p.price * math.exp(p.pred), realized, row.price,
                                      realized - p.pred, p.lo, p.hi, origin.get(key, COLD), p.n_learnt))
            st.models[key].learn_one(p.x, realized)
            n_learnt[key] = n_learnt.get(key, 0) + 1
    if expired:
        out.append(Count("forecasts_expired", expired))
    if unscorable:
        out.append(Count("forecasts_unscorable", unscorable))
    if row.ready:
        x = row.x
        plain = {k: v for k, v in x.items() if not k.startswith("lob_")} if "lob_ap1" in x else x
        bad = 0
        ensemble = ENSEMBLE in st.config.models
        lim = st.config.max_abs_return
        for h, dq in st.pending.items():
            target = t + h * row.interval
            preds: dict[str, float] = {}
            for m in st.config.members:
                model = st.models[(m, h)]
                xm = x if getattr(model, "reads_book", False) else plain  # the book itself: for book learners
                pred, lo, hi = predict(model, xm, lim)
                if pred is None:
                    pred, lo, hi = 0.0, None, None
                    bad += 1
                preds[m] = pred
                n = n_learnt.get((m, h), 0)
                dq.append(Pending(m, t, target, pred, row.price, xm, lo, hi, n))
                proba = getattr(model, "proba_up", None)
                out.append(Forecast(row.instrument, m, h, t, target, pred, row.price,
                                    row.price * math.exp(pred), lo, hi, None if proba is None else proba(xm),
                                    origin.get((m, h), COLD), n))
            if ensemble:
                pred = float(st.models[(ENSEMBLE, h)].predict_one(preds))
                if not abs(pred) <= lim:
                    pred = 0.0
                    bad += 1
                n = n_learnt.get((ENSEMBLE, h), 0)
                dq.append(Pending(ENSEMBLE, t, target, pred, row.price, preds, n_learnt=n))
                ens = st.models[(ENSEMBLE, h)]
                out.append(Forecast(row.instrument, ENSEMBLE, h, t, target, pred, row.price,
                                    row.price * math.exp(pred), p_up=ens.proba_up(preds),  # type: ignore[attr-defined]
                                    bundle=origin.get((ENSEMBLE, h), COLD), n_learnt=n))
            st.n_pending += len(st.config.models)
        if bad:
            out.append(Count("forecasts_invalid", bad))
        dropped = 0
        while st.n_pending > st.config.max_pending:
            longest = max(st.pending.values(), key=len)
            longest.popleft()
            st.n_pending -= 1
            dropped += 1
        if dropped:
            out.append(Count("forecasts_dropped", dropped))
    return st, out

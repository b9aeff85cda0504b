"""Signals: from each forecast to a decision and a position size.

Fed with the time-travel join's output of one instrument, in order
(:class:`~core.events.ForecastRecord` s, the forecasts scored at a bar,
come before the :class:`~core.events.Forecast` s issued at it), this
operator emits a :class:`~core.events.Signal` for every issued forecast of
the chosen models and horizons, using only what is known at its
``ts_forecast``.

**P(up).** The model's own where it has one (``logistic``, and the ensemble
with the ``direction`` or ``stack`` rule: ``Forecast.p_up``). For a
regressor, ``Phi(pred / s)`` (:func:`core.stats.normal_cdf`) with ``s`` the
root mean square of the model's past errors at that horizon (scored
forecasts only), 0.5 until it has one.

**Side.** ``rule="probability"``: LONG when ``p_up >= p_long`` (0.55), SHORT
when ``p_up <= p_short`` (0.45), else NEUTRAL. ``rule="edge"``: the side of the
forecast when ``|expected return|`` exceeds the round-trip cost plus a
margin (``edge_cost_bps + edge_margin_bps``), else NEUTRAL.

**Size** (``target_position``, a signed fraction of the book's equity).
``sizing="fixed"``: ``fixed_size``. ``sizing="kelly"``: ``kelly_fraction x
(p - (1 - p) / b)``, ``p`` the probability of the chosen side and ``b`` the
payoff ratio (mean win / mean loss of this model's past non-neutral signals
whose outcome is known; 1 until ``min_outcomes`` of each), never below 0;
either is capped by ``max_position`` and by the risk budget
``risk_per_trade / mean loss`` (the position whose typical loss is
``risk_per_trade`` of equity).

**Baselines.** At every bar two more books decide: ``buy_and_hold`` (always
fully long) and ``flat`` (never a position), with horizon 0.

Examples
--------
>>> from core.events import Forecast
>>> st = SignalState(SignalConfig(sizing="fixed", fixed_size=0.5))
>>> st, out = step(st, Forecast("X", "logistic", 1, 1_000, 2_000, 2e-4, 100.0, 100.02, p_up=0.62))
>>> [(s.model, s.side, s.target_position) for s in out]
[('buy_and_hold', 1, 1.0), ('flat', 0, 0.0), ('logistic', 1, 0.5)]
>>> st, out = step(st, Forecast("X", "linear", 1, 1_000, 2_000, 1e-5, 100.0, 100.001))
>>> out[0].p_up, out[0].side  # no past errors yet: no edge known
(0.5, 0)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.events import Forecast, ForecastRecord, Signal
from core.stats import normal_cdf

__all__ = ["BASELINES", "SignalConfig", "SignalState", "step"]

#: The baseline books decided at every bar beside the models.
BASELINES = ("buy_and_hold", "flat")


class SignalConfig(BaseModel):
    """How forecasts become decisions and sizes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: Optional[tuple[str, ...]] = Field(None, description="Models that trade; None: every model.")
    horizons: Optional[tuple[int, ...]] = Field(None, description="Horizons (bars) that trade; None: every one.")
    rule: Literal["probability", "edge"] = Field(
        "probability", description="'probability': LONG at p_up >= p_long, SHORT at p_up <= p_short; 'edge': the "
        "forecast's side when its expected return beats edge_cost_bps + edge_margin_bps.")
    p_long: float = Field(0.55, gt=0, lt=1, description="P(up) at or above which the signal is LONG.")
    p_short: float = Field(0.45, gt=0, lt=1, description="P(up) at or below which the signal is SHORT.")
    edge_cost_bps: float = Field(22.0, ge=0, description="Round-trip cost for the edge rule, bps (2 x (10 bps "
                                 "Binance spot taker fee + 1 bp slippage)).")
    edge_margin_bps: float = Field(0.0, ge=0, description="Extra expected return the edge rule asks for, bps.")
    sizing: Literal["kelly", "fixed"] = Field("kelly", description="'kelly': fractional Kelly from p_up and the "
                                              "payoff ratio; 'fixed': fixed_size.")
    kelly_fraction: float = Field(0.5, gt=0, le=1, description="Share of the Kelly fraction taken.")
    fixed_size: float = Field(1.0, gt=0, description="Position, as a fraction of equity, with sizing='fixed'.")
    max_position: float = Field(1.0, gt=0, description="Largest position, as a fraction of equity.")
    risk_per_trade: float = Field(0.02, gt=0, description="Risk budget: the position is capped where the mean "
                                  "loss of past signals would cost this fraction of equity.")
    min_outcomes: int = Field(20, ge=1, description="Known wins and losses needed before the payoff ratio and "
                              "the risk budget are estimated.")
    baselines: bool = Field(True, description="Also decide the buy_and_hold and flat books at every bar.")

    @model_validator(mode="after")
    def _thresholds(self) -> SignalConfig:
        if self.p_short >= self.p_long:
            raise ValueError(f"p_short ({self.p_short}) must be below p_long ({self.p_long})")
        return self


@dataclass(slots=True)
class _Stats:
    n_err: int = 0
    sq_err: float = 0.0
    sides: deque = field(default_factory=deque)  # (ts_forecast, side) waiting for their outcome
    wins: int = 0
    won: float = 0.0
    losses: int = 0
    lost: float = 0.0


@dataclass
class SignalState:
    """Per instrument: error and outcome statistics per (model, horizon).

    Bounded by the horizons (sides wait at most one horizon).
    """

    config: SignalConfig
    stats: dict[tuple[str, int], _Stats] = field(default_factory=dict)
    last_ts: int = -1  # the last bar the baselines were decided at


def step(state: SignalState, item: object) -> tuple[SignalState, list[Signal]]:
    """Learn from a scored forecast, or decide on an issued one."""
    t = type(item)
    if t is ForecastRecord:
        _learn(state, item)  # type: ignore[arg-type]
        return state, []
    if t is not Forecast:
        return state, []
    f: Forecast = item  # type: ignore[assignment]
    c = state.config
    out: list[Signal] = []
    if c.baselines and f.ts_forecast > state.last_ts:
        state.last_ts = f.ts_forecast
        out.append(Signal(f.instrument, "buy_and_hold", 0, f.ts_forecast, 1, None, 0.0, 1.0))
        out.append(Signal(f.instrument, "flat", 0, f.ts_forecast, 0, None, 0.0, 0.0))
    if (c.models is not None and f.model not in c.models) or (c.horizons is not None and f.horizon not in c.horizons):
        return state, out
    s = state.stats.setdefault((f.model, f.horizon), _Stats())
    p_up = f.p_up
    if p_up is None:
        p_up = normal_cdf(f.pred_return / math.sqrt(s.sq_err / s.n_err)) if s.n_err and s.sq_err > 0 else 0.5
    if c.rule == "probability":
        side = 1 if p_up >= c.p_long else -1 if p_up <= c.p_short else 0
    else:
        edge = abs(f.pred_return) * 1e4 > c.edge_cost_bps + c.edge_margin_bps
        side = ((f.pred_return > 0) - (f.pred_return < 0)) if edge else 0
    size = _size(c, s, p_up, side)
    s.sides.append((f.ts_forecast, side))
    out.append(Signal(f.instrument, f.model, f.horizon, f.ts_forecast, side, p_up, f.pred_return, side * size))
    return state, out


def _size(c: SignalConfig, s: _Stats, p_up: float, side: int) -> float:
    if side == 0:
        return 0.0
    known = s.wins >= c.min_outcomes and s.losses >= c.min_outcomes
    mean_loss = s.lost / s.losses if known else 0.0
    if c.sizing == "fixed":
        size = c.fixed_size
    else:
        p = p_up if side > 0 else 1.0 - p_up
        b = (s.won / s.wins) / mean_loss if known and mean_loss > 0 else 1.0
        size = max(c.kelly_fraction * (p - (1.0 - p) / b), 0.0)
    cap = min(c.max_position, c.risk_per_trade / mean_loss) if mean_loss > 0 else c.max_position
    return min(size, cap)


def _learn(state: SignalState, r: ForecastRecord) -> None:
    s = state.stats.get((r.model, r.horizon))
    if s is None:
        return
    s.n_err += 1
    s.sq_err += r.error * r.error
    while s.sides and s.sides[0][0] < r.ts_forecast:  # forecasts that expired without an outcome
        s.sides.popleft()
    if s.sides and s.sides[0][0] == r.ts_forecast:
        _, side = s.sides.popleft()
        gain = side * r.realized_return
        if side and gain > 0:
            s.wins += 1
            s.won += gain
        elif side and gain < 0:
            s.losses += 1
            s.lost -= gain

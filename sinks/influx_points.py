"""Records as InfluxDB points (pure, no I/O).

Measurements, tags and fields (the Grafana dashboards query exactly these;
``tests/test_dashboards.py`` checks it):

=================  ============================  ================================================
measurement        tags                          fields
=================  ============================  ================================================
``forecast``       instrument, model, horizon    pred_return, pred_price, price, ts_forecast,
                                                 pred_lo, pred_hi, n_learnt (at the **target**
                                                 time: the forecast is drawn where it will be
                                                 checked)
``scored``         instrument, model, horizon    pred_return, realized_return, pred_price,
                                                 realized_price, error, abs_error, pred_lo,
                                                 pred_hi, n_learnt (at target time)
``metrics``        instrument, model, horizon    n, mae, rmse, skill, hit_rate, n_directional,
                                                 coverage, hit_rate_se, dm_stat, dm_p_value,
                                                 pt_stat, pt_p_value
``bar``            instrument                    open, high, low, close, price, volume, vwap,
                                                 trades, buy_volume, sell_volume, bid, ask
``features``       instrument                    the configured features (scaled, as models see them)
``signal``         instrument, model, horizon    side, p_up, expected_return, target_position
                                                 (at the decision time)
``position``       instrument, model, horizon    position, qty, price, mid, fee, cash (a fill,
                                                 at its quote's time)
``equity``         instrument, model, horizon    equity, gross_equity, costs, drawdown, position, mid
``health``         worker                        ticks_total, ticks_per_s, dead_letters_total,
                                                 lag_s, points_dropped, points_failed
=================  ============================  ================================================

Timestamps are event time in ns (receive clock), so a replay after recovery
rewrites identical points (same measurement, tags and time) instead of adding
new ones. ``health`` is the exception: it describes the running process and is
stamped with the wall clock by the sink.

>>> from ticklet.events import MetricsRecord
>>> p = to_point(MetricsRecord("BTCUSDT", "linear", 1, 1_000, 5, 0.1, 0.2, 0.05, 0.6, 4, 2))
>>> p.to_line_protocol()
'metrics,horizon=1,instrument=BTCUSDT,model=linear hit_rate=0.6,mae=0.1,n=5i,n_directional=4i,rmse=0.2,skill=0.05 1000'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from influxdb_client import Point, WritePrecision

from ticklet.events import Bar, EquityPoint, FeatureRow, Fill, Forecast, ForecastRecord, MetricsRecord, Signal

__all__ = ["MEASUREMENTS", "to_point"]

#: measurement -> (tags, fields) written; ``features`` fields depend on settings.
MEASUREMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "forecast": (("instrument", "model", "horizon"),
                 ("pred_return", "pred_price", "price", "ts_forecast", "pred_lo", "pred_hi", "n_learnt")),
    "scored": (("instrument", "model", "horizon"),
               ("pred_return", "realized_return", "pred_price", "realized_price", "error", "abs_error",
                "pred_lo", "pred_hi", "n_learnt")),
    "metrics": (("instrument", "model", "horizon"),
                ("n", "mae", "rmse", "skill", "hit_rate", "n_directional", "coverage", "hit_rate_se",
                 "dm_stat", "dm_p_value", "pt_stat", "pt_p_value")),
    "bar": (("instrument",), ("open", "high", "low", "close", "price", "volume", "vwap", "trades",
                          "buy_volume", "sell_volume", "bid", "ask")),
    "features": (("instrument",), ()),
    "signal": (("instrument", "model", "horizon"), ("side", "p_up", "expected_return", "target_position")),
    "position": (("instrument", "model", "horizon"), ("position", "qty", "price", "mid", "fee", "cash")),
    "equity": (("instrument", "model", "horizon"), ("equity", "gross_equity", "costs", "drawdown", "position", "mid")),
    "health": (("worker",), ("ticks_total", "ticks_per_s", "dead_letters_total", "lag_s",
                             "points_dropped", "points_failed")),
}


def _point(measurement: str, tags: dict[str, Any], fields: dict[str, Any], time_ns: int) -> Point:
    p = Point(measurement)
    for k, v in tags.items():
        p.tag(k, str(v))
    for k, v in fields.items():
        if v is not None:
            p.field(k, v)
    return p.time(time_ns, WritePrecision.NS)


def to_point(rec: Any, features: Sequence[str] = ()) -> Optional[Point]:
    """The point for one record, or None for records that have none."""
    t = type(rec)
    if t is ForecastRecord:
        return _point("scored", {"instrument": rec.instrument, "model": rec.model, "horizon": rec.horizon},
                      {"pred_return": rec.pred_return, "realized_return": rec.realized_return,
                       "pred_price": rec.pred_price, "realized_price": rec.realized_price,
                       "error": rec.error, "abs_error": abs(rec.error),
                       "pred_lo": rec.pred_lo, "pred_hi": rec.pred_hi, "n_learnt": rec.n_learnt}, rec.ts_target)
    if t is Forecast:
        return _point("forecast", {"instrument": rec.instrument, "model": rec.model, "horizon": rec.horizon},
                      {"pred_return": rec.pred_return, "pred_price": rec.pred_price, "price": rec.price,
                       "ts_forecast": rec.ts_forecast, "pred_lo": rec.pred_lo, "pred_hi": rec.pred_hi,
                       "n_learnt": rec.n_learnt}, rec.ts_target)
    if t is MetricsRecord:
        return _point("metrics", {"instrument": rec.instrument, "model": rec.model, "horizon": rec.horizon},
                      {"n": rec.n, "mae": rec.mae, "rmse": rec.rmse, "skill": rec.skill,
                       "hit_rate": rec.hit_rate, "n_directional": rec.n_directional,
                       "coverage": rec.coverage, "hit_rate_se": rec.hit_rate_se, "dm_stat": rec.dm_stat,
                       "dm_p_value": rec.dm_p_value, "pt_stat": rec.pt_stat, "pt_p_value": rec.pt_p_value},
                      rec.ts_target)
    if t is Bar:
        return _point("bar", {"instrument": rec.instrument},
                      {"open": rec.open, "high": rec.high, "low": rec.low, "close": rec.close,
                       "price": rec.price, "volume": rec.volume, "vwap": rec.vwap, "trades": rec.trades,
                       "buy_volume": rec.buy_volume, "sell_volume": rec.sell_volume,
                       "bid": rec.bid or None, "ask": rec.ask or None}, rec.ts_end)
    if t is Signal:
        return _point("signal", {"instrument": rec.instrument, "model": rec.model, "horizon": rec.horizon},
                      {"side": rec.side, "p_up": rec.p_up, "expected_return": rec.expected_return,
                       "target_position": rec.target_position}, rec.ts_forecast)
    if t is Fill:
        return _point("position", {"instrument": rec.instrument, "model": rec.model, "horizon": rec.horizon},
                      {"position": rec.position, "qty": rec.qty, "price": rec.price, "mid": rec.mid, "fee": rec.fee,
                       "cash": rec.cash}, rec.ts_recv)
    if t is EquityPoint:
        return _point("equity", {"instrument": rec.instrument, "model": rec.model, "horizon": rec.horizon},
                      {"equity": rec.equity, "gross_equity": rec.gross_equity, "costs": rec.costs,
                       "drawdown": rec.drawdown, "position": rec.position, "mid": rec.mid}, rec.ts_recv)
    if t is FeatureRow:
        if not features or not rec.ready:
            return None
        return _point("features", {"instrument": rec.instrument}, {f: rec.x[f] for f in features if f in rec.x},
                      rec.ts_end)
    return None

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
                                                 that the row has: a missing one (a depth feature
                                                 while the book is not ready) is no field
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

InfluxDB keeps one point per measurement, tags and time: a second row of the
same series at the same time would overwrite the first. Some series have such
rows: several decisions filled by the same quote (``position``, ``equity``
at that quote's time). :func:`stamp` gives each record its point's time,
distinct within its series: its own time, or, for a record whose time is at or
before the last stamp of its series (and not before the last time), that stamp
plus 1 ns. The dataflow runs it per instrument as a stateful step, so a
resumed run stamps the records it replays as the first life did.

>>> from core.events import MetricsRecord
>>> p = to_point(MetricsRecord("BTCUSDT", "linear", 1, 1_000, 5, 0.1, 0.2, 0.05, 0.6, 4, 2))
>>> p.to_line_protocol()
'metrics,horizon=1,instrument=BTCUSDT,model=linear hit_rate=0.6,mae=0.1,n=5i,n_directional=4i,rmse=0.2,skill=0.05 1000'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

from influxdb_client import Point, WritePrecision

from core.events import (
    Bar,
    EquityPoint,
    FeatureRow,
    Fill,
    Forecast,
    ForecastRecord,
    MakerEconomicsRecord,
    MakerFillRecord,
    MetricsRecord,
    Signal,
)

__all__ = ["MEASUREMENTS", "WHEN", "StampState", "Stamped", "stamp", "to_point"]

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
    "maker_fill": (("instrument", "model", "horizon"),
                   ("side", "price", "qty", "queue", "fee", "position", "mid", "mid_1s", "mid_10s")),
    "maker_economics": (("instrument", "model", "horizon"),
                        ("orders", "fill_rate", "fills", "traded", "position", "gross_pnl", "fees", "net_pnl",
                         "break_even_bps", "net_bps", "adverse_1s_bps", "adverse_10s_bps")),
    "health": (("worker",), ("ticks_total", "ticks_per_s", "dead_letters_total", "lag_s",
                             "points_dropped", "points_failed")),
}

#: record type -> (measurement, the field holding the point's time)
WHEN: dict[type, tuple[str, str]] = {
    ForecastRecord: ("scored", "ts_target"), Forecast: ("forecast", "ts_target"),
    MetricsRecord: ("metrics", "ts_target"), Bar: ("bar", "ts_end"), FeatureRow: ("features", "ts_end"),
    Signal: ("signal", "ts_forecast"), Fill: ("position", "ts_recv"), EquityPoint: ("equity", "ts_recv"),
    MakerFillRecord: ("maker_fill", "ts_exch"), MakerEconomicsRecord: ("maker_economics", "ts_exch"),
}

_FIELDS: dict[type, Callable[[Any, Sequence[str]], dict[str, Any]]] = {
    ForecastRecord: lambda r, _: {
        "pred_return": r.pred_return, "realized_return": r.realized_return, "pred_price": r.pred_price,
        "realized_price": r.realized_price, "error": r.error, "abs_error": abs(r.error), "pred_lo": r.pred_lo,
        "pred_hi": r.pred_hi, "n_learnt": r.n_learnt},
    Forecast: lambda r, _: {
        "pred_return": r.pred_return, "pred_price": r.pred_price, "price": r.price, "ts_forecast": r.ts_forecast,
        "pred_lo": r.pred_lo, "pred_hi": r.pred_hi, "n_learnt": r.n_learnt},
    MetricsRecord: lambda r, _: {
        "n": r.n, "mae": r.mae, "rmse": r.rmse, "skill": r.skill, "hit_rate": r.hit_rate,
        "n_directional": r.n_directional, "coverage": r.coverage, "hit_rate_se": r.hit_rate_se,
        "dm_stat": r.dm_stat, "dm_p_value": r.dm_p_value, "pt_stat": r.pt_stat, "pt_p_value": r.pt_p_value},
    Bar: lambda r, _: {
        "open": r.open, "high": r.high, "low": r.low, "close": r.close, "price": r.price, "volume": r.volume,
        "vwap": r.vwap, "trades": r.trades, "buy_volume": r.buy_volume, "sell_volume": r.sell_volume,
        "bid": r.bid or None, "ask": r.ask or None},
    FeatureRow: lambda r, features: {f: r.x[f] for f in features if f in r.x},
    Signal: lambda r, _: {
        "side": r.side, "p_up": r.p_up, "expected_return": r.expected_return, "target_position": r.target_position},
    Fill: lambda r, _: {
        "position": r.position, "qty": r.qty, "price": r.price, "mid": r.mid, "fee": r.fee, "cash": r.cash},
    EquityPoint: lambda r, _: {
        "equity": r.equity, "gross_equity": r.gross_equity, "costs": r.costs, "drawdown": r.drawdown,
        "position": r.position, "mid": r.mid},
    MakerFillRecord: lambda r, _: {
        "side": r.side, "price": r.price, "qty": r.qty, "queue": r.queue, "fee": r.fee, "position": r.position,
        "mid": r.mid, "mid_1s": r.mid_1s, "mid_10s": r.mid_10s},
    MakerEconomicsRecord: lambda r, _: {
        "orders": r.orders, "fill_rate": r.fill_rate, "fills": r.fills, "traded": r.traded, "position": r.position,
        "gross_pnl": r.gross_pnl, "fees": r.fees, "net_pnl": r.net_pnl, "break_even_bps": r.break_even_bps,
        "net_bps": r.net_bps, "adverse_1s_bps": r.adverse_1s_bps, "adverse_10s_bps": r.adverse_10s_bps},
}


def to_point(rec: Any, features: Sequence[str] = (), time_ns: Optional[int] = None) -> Optional[Point]:
    """The point for one record, or None for records that have none.

    The point is at ``time_ns``, by default the record's own time (see
    :data:`WHEN`). A feature row has a point only once it is ready, with
    those of ``features`` that it has: a feature missing from the row (a
    depth feature while the instrument's book is not ready) is no field of
    the point, never a zero. A record left with no field at all has no point
    (InfluxDB stores no point without a field).

    Parameters
    ----------
    rec
        A record of a type in :data:`WHEN`; any other has no point.
    features
        The features of a :class:`~core.events.FeatureRow` to write
        (:attr:`sinks.influx_config.InfluxConfig.features`).
    time_ns
        The point's time (ns), instead of the record's own
        (:class:`Stamped`).

    Returns
    -------
    Point or None
        The point, or None where the record has none.

    Examples
    --------
    A ready row without its depth features (a book not ready yet), then one
    with none of those asked for:

    >>> row = FeatureRow("BTCUSDT", 1_000, 1_000, 100.0, {"ofi": 0.5, "book_imb": -0.25}, True)
    >>> to_point(row, ("ofi", "depth_imb_5", "ofi_int")).to_line_protocol()
    'features,instrument=BTCUSDT ofi=0.5 1000'
    >>> print(to_point(row, ("depth_imb_5", "ofi_int")))
    None
    """
    t = type(rec)
    when = WHEN.get(t)
    if when is None or (t is FeatureRow and (not features or not rec.ready)):
        return None
    measurement, time_field = when
    p = Point(measurement)
    for k in MEASUREMENTS[measurement][0]:
        p.tag(k, str(getattr(rec, k)))
    n = 0
    for k, v in _FIELDS[t](rec, features).items():
        if v is not None:
            p.field(k, v)
            n += 1
    if not n:
        return None
    return p.time(getattr(rec, time_field) if time_ns is None else time_ns, WritePrecision.NS)


class Stamped(NamedTuple):
    """A record whose point goes at ``time_ns`` instead of its own time."""

    record: Any
    time_ns: int


@dataclass
class StampState:
    """The last time and stamp of every series of one instrument.

    (measurement, model, horizon) -> (time, stamp). Bounded by the
    measurements, models and horizons.
    """

    last: dict[tuple[str, str, int], tuple[int, int]] = field(default_factory=dict)


def stamp(state: StampState, rec: Any) -> tuple[StampState, list[Any]]:
    """Pass ``rec`` on, as a :class:`Stamped` record when its point must go later than its own time.

    It goes at 1 ns after the last stamp of its series, when its time is at
    or before that stamp (and not before the last time). Stamps strictly
    increase within a series whose times do not go back, so no point
    overwrites another; records that have no point pass unchanged.

    Examples
    --------
    Four decisions of one book filled by the same quote, then the next quote:

    >>> from core.events import EquityPoint
    >>> st, out = StampState(), []
    >>> for t in (100, 200, 200, 200, 200, 300):
    ...     st, o = stamp(st, EquityPoint("BTCUSDT", "naive", 1, t, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0))
    ...     out += o
    >>> [x.time_ns if type(x) is Stamped else x.ts_recv for x in out]
    [100, 200, 201, 202, 203, 300]
    >>> st.last
    {('equity', 'naive', 1): (300, 300)}
    """
    when = WHEN.get(type(rec))
    if when is None:
        return state, [rec]
    t = getattr(rec, when[1])
    key = (when[0], getattr(rec, "model", ""), getattr(rec, "horizon", 0))
    prev = state.last.get(key)
    s = prev[1] + 1 if prev is not None and prev[0] <= t <= prev[1] else t
    state.last[key] = (t, s)
    return state, [rec if s == t else Stamped(rec, s)]

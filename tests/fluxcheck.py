"""Helpers for the tests that read InfluxDB back: the points a run should
have written (from its CSV outputs), Grafana's substitution of a Flux query's
variables, and what a dashboard query must return computed in Python.

Grafana (11.x) runs a panel's Flux query in two substitutions:

- the browser replaces the dashboard's template variables (``${bucket}``,
  ``${instrument}``, ``${horizon}``: their current value, verbatim);
- the server-side Flux datasource (``pkg/tsdb/influxdb/flux/macros.go``)
  replaces ``v.timeRangeStart`` / ``v.timeRangeStop`` by the range in UTC
  RFC 3339 (Go's ``RFC3339Nano``: trailing zeros of the fraction dropped), and
  ``v.windowPeriod`` by the query interval as a Go duration string
  (``time.Duration.String()``: ``2m0s``, ``500ms``). The interval is the range
  divided by the panel's width in pixels, rounded by ``rangeutil.roundInterval``.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.realdata import csv_dicts
from sinks.influx_points import MEASUREMENTS

#: the run's CSV outputs that hold a measurement's points: (file, time column)
CSV_OF = {"scored": ("forecasts.csv", "ts_target"), "metrics": ("metrics.csv", "ts_target"),
          "signal": ("signals.csv", "ts_forecast"), "position": ("trades.csv", "ts_recv"),
          "equity": ("equity.csv", "ts_recv"), "maker_fill": ("maker_fills.csv", "ts_exch"),
          "maker_economics": ("maker_economics.csv", "ts_exch")}
_NOT_COLUMNS = {"result", "table", "_start", "_stop", "_time", "_measurement", "t"}
MS = 1_000_000
S = 1_000_000_000


def read_back(server, measurement: str) -> dict[tuple, dict[str, Any]]:
    """Every point of ``measurement`` through Flux: {(tag values..., time ns):
    {field: value}}; fails on a point twice or a tag the sink does not write."""
    tags, _ = MEASUREMENTS[measurement]
    flux = (f'from(bucket: "{server.bucket}") |> range(start: 0, stop: 2100-01-01T00:00:00Z) '
            f'|> filter(fn: (r) => r._measurement == "{measurement}") '
            '|> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value") '
            '|> map(fn: (r) => ({r with t: int(v: r._time)}))')
    out: dict[tuple, dict[str, Any]] = {}
    for rec in server.rows(flux):
        key = (*(rec[t] for t in tags), rec["t"])
        fields = {k: v for k, v in rec.items() if k not in _NOT_COLUMNS and k not in tags and v is not None}
        assert key not in out, key
        out[key] = fields
    return out


def _num(s: str) -> float | None:
    if s == "":
        return None
    x = float(s)
    return x if math.isfinite(x) else None


def from_csv(out: Path, measurement: str) -> dict[tuple, dict[str, float]]:
    """The points the sink should have written for ``measurement``, from the
    run's CSV output: {(instrument, model, horizon, time ns): {field: value}},
    one per row: the k-th row (from 0, in file order) of a series at a time
    that earlier rows of the series have is at that time plus k ns.
    ``forecast`` (issued forecasts) gives those that were scored."""
    src = "scored" if measurement == "forecast" else measurement
    name, tcol = CSV_OF[src]
    _, fields = MEASUREMENTS[measurement]
    want: dict[tuple, dict[str, float]] = {}
    seen: dict[tuple, int] = defaultdict(int)
    for r in csv_dicts(out / name):
        vals = {f: _num(r[f]) for f in fields if f in r and not (measurement == "forecast" and f == "price")}
        if measurement == "scored":
            vals["abs_error"] = abs(float(r["error"]))
        series_time = (r["instrument"], r["model"], r["horizon"], int(r[tcol]))
        key = (*series_time[:3], series_time[3] + seen[series_time])
        seen[series_time] += 1
        assert key not in want, key  # rows of a series 1 ns apart: not in these recordings
        want[key] = {f: v for f, v in vals.items() if v is not None}
    return want


# --- Grafana's substitution -------------------------------------------------------------------------------

def round_interval_ms(ms: float) -> int:
    """Grafana's ``rangeutil.roundInterval``."""
    steps = [(10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
             (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000),
             (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000),
             (1500000, 1200000), (2700000, 1800000), (5400000, 3600000), (9000000, 7200000),
             (16200000, 10800000), (32400000, 21600000), (86400000, 43200000), (604800000, 86400000),
             (1814400000, 604800000), (3628800000, 2592000000)]
    for below, value in steps:
        if ms < below:
            return value
    return 31536000000


def go_duration(ms: int) -> str:
    """Go's ``time.Duration.String()`` of a whole number of milliseconds."""
    if ms < 1000:
        return f"{ms}ms"
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s = f"{rem // 1000}" + (f".{rem % 1000:03d}".rstrip("0") if rem % 1000 else "") + "s"
    if h:
        return f"{h}h{m}m{s}"
    return f"{m}m{s}" if m else s


def rfc3339(ns: int) -> str:
    """Go's ``RFC3339Nano`` in UTC."""
    sec, frac = divmod(ns, S)
    base = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return base + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


def panel_width_px(panel: dict, screen_px: int = 1920) -> int:
    """A panel's width in pixels on a full-HD screen (24 grid columns): the
    resolution Grafana divides the time range by."""
    return max(1, round(panel["gridPos"]["w"] / 24 * screen_px))


def grafana_query(query: str, variables: dict[str, str], start_ns: int, stop_ns: int, interval_ms: int) -> str:
    """``query`` as Grafana sends it to InfluxDB."""
    for name, value in variables.items():
        query = query.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in query, query
    subs = {"timeRangeStart": rfc3339(start_ns), "timeRangeStop": rfc3339(stop_ns),
            "windowPeriod": go_duration(interval_ms)}
    return re.sub(r"([a-zA-Z]+)\.(timeRangeStart|timeRangeStop|windowPeriod)\b", lambda m: subs[m.group(2)], query)


# --- a dashboard query computed in Python ------------------------------------------------------------------

class _Row:
    """Attribute access to a point's columns, as Flux's ``r``."""

    def __init__(self, cols: dict[str, Any]):
        self.__dict__.update(cols)

    def __getattr__(self, name: str) -> Any:  # a column the point does not have: null
        return None


def flux_predicate(query: str):
    """The first ``filter(fn: (r) => ...)`` of ``query`` as a Python function
    of a point's columns (Flux's ``and``, ``or``, ``==`` and parentheses
    are Python's)."""
    m = re.search(r"filter\(fn: \(r\) => (.*?)\)\s*\|>", query)
    assert m, query
    expr = m.group(1)
    assert re.fullmatch(r'[\w\s."=()!-]*', expr), expr  # only comparisons of columns and string literals
    code = compile(expr, "<flux filter>", "eval")
    return lambda cols: bool(eval(code, {"__builtins__": {}}, {"r": _Row(cols)}))  # noqa: S307


def csv_points(out: Path, measurement: str) -> list[dict[str, Any]]:
    """The measurement's points from the run's CSVs, one row per field as
    InfluxDB stores them (``_measurement``, ``_field``, ``_value``, ``_time``
    in ns, the tags)."""
    tags, _ = MEASUREMENTS[measurement]
    rows = []
    for key, fields in from_csv(out, measurement).items():
        base = {"_measurement": measurement, "_time": key[-1], **dict(zip(tags, key[:-1], strict=True))}
        for f, v in fields.items():
            rows.append({**base, "_field": f, "_value": v})
    return rows


def _windows(points: list[tuple[int, float]], every_ns: int, start_ns: int, stop_ns: int,
             fn: str) -> dict[int, float]:
    """``aggregateWindow(every, fn, createEmpty: false)`` over points sorted by
    time: windows aligned on the epoch, clipped to the range; the result at
    each window's (clipped) stop."""
    acc: dict[int, list[float]] = defaultdict(list)
    for t, v in points:
        if start_ns <= t < stop_ns:
            acc[min((t // every_ns + 1) * every_ns, stop_ns)].append(v)
    if fn == "last":
        return {t: vs[-1] for t, vs in acc.items()}
    if fn == "mean":
        return {t: math.fsum(vs) / len(vs) for t, vs in acc.items()}
    raise AssertionError(fn)


def expected_aggregate(query: str, points: list[dict[str, Any]], start_ns: int, stop_ns: int,
                       interval_ns: int) -> dict[tuple, dict[int, float]] | None:
    """What a panel query of the form ``range |> filter |> [group(columns)]
    |> aggregateWindow(fn: last|mean)`` returns over ``points``: {group key:
    {time ns: value}}; None for other forms."""
    steps = [s.strip().split("(")[0] for s in query.split("|>")]
    if steps[1:] not in (["range", "filter", "aggregateWindow"], ["range", "filter", "group", "aggregateWindow"]):
        return None
    agg = re.search(r"aggregateWindow\(every: [^,]+, fn: (\w+)", query)
    assert agg is not None, query
    fn = agg.group(1)
    g = re.search(r"group\(columns: \[([^\]]*)\]\)", query)
    pred = flux_predicate(query)
    series: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for p in points:
        if pred(p):
            if g:
                key = tuple(p.get(c) for c in re.findall(r'"(\w+)"', g.group(1)))
            else:
                key = tuple(sorted((k, v) for k, v in p.items() if k not in ("_time", "_value")))
            series[key].append((p["_time"], p["_value"]))
    return {k: _windows(sorted(v), interval_ns, start_ns, stop_ns, fn) for k, v in series.items()}


def expected_rolling_hit_rate(rows: list[dict[str, str]], instrument: str, horizon: str, start_ns: int,
                              stop_ns: int, every_ns: int = 60 * S,
                              period_ns: int = 600 * S) -> dict[str, dict[int, float]]:
    """The rolling hit-rate panel from forecasts.csv: per model, a hit is a
    scored forecast whose predicted and realized returns have the same sign
    (realized 0 left out), averaged by ``timedMovingAverage(every, period)``:
    the mean over [stop - period, stop) for each stop on the ``every`` grid,
    at that stop. Windows are clipped to the range: those reaching past its
    stop all land on its stop, so the result there is left out."""
    by_model: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        t = int(r["ts_target"])
        if r["instrument"] == instrument and r["horizon"] == horizon and start_ns <= t < stop_ns:
            real = float(r["realized_return"])
            if real != 0.0:
                by_model[r["model"]].append((t, 1.0 if float(r["pred_return"]) * real > 0.0 else 0.0))
    out: dict[str, dict[int, float]] = {}
    for model, pts in by_model.items():
        pts.sort()
        res: dict[int, float] = {}
        first = (pts[0][0] // every_ns + 1) * every_ns
        stop = first
        while stop < stop_ns and stop - period_ns <= pts[-1][0]:
            vs = [v for t, v in pts if max(stop - period_ns, start_ns) <= t < stop]
            if vs:
                res[stop] = math.fsum(vs) / len(vs)
            stop += every_ns
        out[model] = res
    return out

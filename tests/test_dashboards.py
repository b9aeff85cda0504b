"""Every Flux query of every provisioned Grafana dashboard, executed.

After the dataflow replayed every recording into a real InfluxDB 2 (the
session's ``influx_replay``), each panel's queries run with Grafana's
variables substituted as Grafana substitutes them (:mod:`fluxcheck`), for
each instrument over its longest stretch of data and each horizon that the
dashboard's own variable queries list. Panels are read from the dashboard
JSON, so a panel added later is covered without a change here. The panels
over measurements that the run also writes to CSV (forecasts, scored
forecasts, metrics, signals, positions, equity) must return exactly the
numbers the CSVs give.
"""

from __future__ import annotations

import calendar
import json
import math
import re
import time
from collections import defaultdict
from datetime import datetime

import pytest
from fluxcheck import (
    S,
    csv_points,
    expected_aggregate,
    expected_rolling_hit_rate,
    from_csv,
    go_duration,
    grafana_query,
    panel_width_px,
    round_interval_ms,
)
from realdata import REPO, csv_dicts

DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
MEASUREMENT = re.compile(r'r\._measurement == "(\w+)"')
CSV_MEASUREMENTS = {"forecast", "scored", "metrics", "signal", "position", "equity"}
GAP_NS = 3600 * S  # a silence this long splits an instrument's data into stretches
WIDE_NS = 3 * 3600 * S  # the wide view: the stretch and three hours on either side


def _dashboards() -> list[tuple[str, dict]]:
    return [(p.name, json.loads(p.read_text())) for p in DASHBOARDS]


def _targets() -> list[tuple[str, dict, dict]]:
    out = []
    for name, d in _dashboards():
        for p in d["panels"]:
            for t in p.get("targets", []):
                out.append((name, p, t))
    return out


def _ns(dt: datetime) -> int:
    return calendar.timegm(dt.utctimetuple()) * S + dt.microsecond * 1000


def _relative(expr: str, now_ns: int) -> int:
    """A Grafana time like ``now`` or ``now-1h``."""
    m = re.fullmatch(r"now(?:-(\d+)([smhd]))?", expr)
    assert m, expr
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return now_ns - (int(m.group(1)) * unit[m.group(2)] * S if m.group(1) else 0)


@pytest.fixture(scope="module")
def stretches(influx_replay) -> dict[str, tuple[int, int]]:
    """Each instrument's longest stretch of bars, widened to whole minutes:
    the time range a user zooms the dashboard to."""
    _, _, _, points = influx_replay
    times: dict[str, list[int]] = defaultdict(list)
    for inst, t in points["bar"]:
        times[inst].append(t)
    out = {}
    for inst, ts in times.items():
        ts.sort()
        best, first = (0, 0), ts[0]
        for a, b in zip(ts, [*ts[1:], None], strict=True):
            if b is None or b - a > GAP_NS:
                if a - first > best[1] - best[0]:
                    best = (first, a)
                first = b
        out[inst] = (best[0] // (60 * S) * 60 * S, (best[1] // (60 * S) + 2) * 60 * S)
    return out


def _views(stretches: dict[str, tuple[int, int]]) -> list[tuple[str, str, int, int]]:
    """(view, instrument, start, stop): each instrument zoomed to its stretch
    (a window period of about a second: one bar per window), and wide (about
    20 s: many points per window, so ``last`` and ``mean`` matter)."""
    out = []
    for inst, (start, stop) in sorted(stretches.items()):
        out += [("zoomed", inst, start, stop), ("wide", inst, start - WIDE_NS, stop + WIDE_NS)]
    return out


def _variable(dash: dict, name: str) -> dict:
    return next(v for v in dash["templating"]["list"] if v["name"] == name)


def _variables(dash: dict, server) -> dict[str, str]:
    """The values of a dashboard's constant variables (``bucket``: the
    server's, as a user who changed it would set it)."""
    out = {}
    for v in dash["templating"]["list"]:
        if v["type"] == "constant":
            out[v["name"]] = server.bucket if v["name"] == "bucket" else v["query"]
    return out


def _variable_values(dash: dict, name: str, server, start: int, stop: int) -> list[str]:
    """Run a query variable's Flux over the time range as Grafana does."""
    q = grafana_query(_variable(dash, name)["query"], _variables(dash, server), start, stop, 1000)
    return [r["_value"] for r in server.rows(q)]


def test_the_variables_list_what_was_replayed(influx_replay, stretches):
    """The instrument and horizon drop-downs, over each instrument's stretch,
    list that instrument and exactly the horizons forecast there."""
    server, _, out, _ = influx_replay
    forecasts = csv_dicts(out / "forecasts.csv")
    for _, dash in _dashboards():
        for inst, (start, stop) in stretches.items():
            assert inst in _variable_values(dash, "instrument", server, start, stop), inst
            want = {r["horizon"] for r in forecasts if r["instrument"] == inst and start <= int(r["ts_target"]) < stop}
            got = _variable_values(dash, "horizon", server, start, stop)
            assert want and want <= set(got) and "0" not in got, (inst, got, want)


def _run_target(server, dash, panel, target, inst, horizon, start, stop):
    interval_ms = round_interval_ms((stop - start) / 1e6 / panel_width_px(panel))
    variables = {**_variables(dash, server), "instrument": inst, "horizon": horizon}
    q = grafana_query(target["query"], variables, start, stop, interval_ms)
    return q, interval_ms, server.query(q)


def _group_columns(query: str) -> list[str]:
    g = re.search(r"group\(columns: \[([^\]]*)\]\)", query)
    return re.findall(r'"(\w+)"', g.group(1)) if g else []


def test_every_panel_query_returns_what_the_panel_draws(influx_replay, stretches):
    """Every query of every panel, for every instrument and horizon, returns
    non-empty tables of numbers over time, split by the columns the panel's
    legend names (its group columns). Health is stamped with the wall clock:
    its panels run over the dashboard's default range (the last hour)."""
    server, _, _, _ = influx_replay
    now = time.time_ns()
    report = []
    for name, dash in _dashboards():
        default = (_relative(dash["time"]["from"], now), _relative(dash["time"]["to"], now))
        for view, inst, start, stop in _views(stretches):
            horizons = _variable_values(dash, "horizon", server, start, stop)
            assert horizons, inst
            for horizon in horizons:
                for panel in dash["panels"]:
                    for target in panel.get("targets", []):
                        live = "health" in MEASUREMENT.findall(target["query"])
                        rng = default if live else (start, stop)
                        q, interval_ms, tables = _run_target(server, dash, panel, target, inst, horizon, *rng)
                        where = (name, panel["title"], target["refId"], view, inst, horizon, q)
                        rows = [r for t in tables for r in t.records]
                        assert rows, where
                        for r in rows:
                            assert isinstance(r["_time"], datetime), where
                            v = r["_value"]
                            assert isinstance(v, (int, float)) and math.isfinite(v), (where, r.values)
                            for c in _group_columns(target["query"]):
                                assert r.values.get(c) not in (None, ""), (where, c)
                        if inst == "BTCUSDT" and horizon == horizons[0]:
                            report.append((panel["id"], panel["title"], target["refId"], view, len(tables),
                                           len(rows), go_duration(interval_ms), "last hour" if live else view))
    print("\npanel | title | ref | view | tables | rows | v.windowPeriod | range   (BTCUSDT, first horizon)")
    for row in report:
        print(" | ".join(map(str, row)))
    assert len(report) == 2 * len(_targets())


def _actual(tables, group_cols: list[str]) -> dict[tuple, dict[int, float]]:
    out: dict[tuple, dict[int, float]] = defaultdict(dict)
    for t in tables:
        for r in t.records:
            out[tuple(r.values.get(c) for c in group_cols)][_ns(r["_time"])] = r["_value"]
    return dict(out)


def _same(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300)


def test_the_panels_show_the_numbers_of_the_runs_csv_outputs(influx_replay, stretches):
    """The forecast-vs-actual, delta, hit-rate (rolling and prequential),
    skill, error, equity, drawdown, position and signal panels, for every
    instrument and horizon, zoomed and wide: each window's value is the one
    computed from the run's CSV files (last or mean of the window, as the
    query says; the rolling hit rate recomputed from forecasts.csv)."""
    server, _, out, points = influx_replay
    csv = {m: csv_points(out, m) for m in CSV_MEASUREMENTS}
    # issued forecasts that were never scored (expired in a gap, or beyond the data): not in any CSV
    scored_keys = from_csv(out, "forecast").keys()
    tags = ("instrument", "model", "horizon")
    unscored = [{"_measurement": "forecast", "_time": k[-1], **dict(zip(tags, k[:-1], strict=True)), "_field": f,
                 "_value": v} for k, fs in points["forecast"].items() if k not in scored_keys for f, v in fs.items()]
    forecasts = csv_dicts(out / "forecasts.csv")
    checked: set[str] = set()
    windows = 0
    wide: set[int] = set()  # the window periods of the wide views
    for _, dash in _dashboards():
        for view, inst, start, stop in _views(stretches):
            for horizon in _variable_values(dash, "horizon", server, start, stop):
                for panel in dash["panels"]:
                    for target in panel.get("targets", []):
                        query = target["query"]
                        ms = set(MEASUREMENT.findall(query))
                        if not ms <= CSV_MEASUREMENTS:
                            continue
                        (m,) = ms
                        q, interval_ms, tables = _run_target(server, dash, panel, target, inst, horizon, start, stop)
                        where = (panel["title"], target["refId"], view, inst, horizon)
                        if "timedMovingAverage" in query:
                            want = expected_rolling_hit_rate(forecasts, inst, horizon, start, stop)
                            got = _actual(tables, ["model"])
                            got = {k[0]: {t: v for t, v in pts.items() if t < stop} for k, pts in got.items()}
                        else:
                            want = expected_aggregate(q, csv[m], start, stop, interval_ms * 1_000_000)
                            assert want is not None, (where, "a query form that this test cannot compute")
                            got = _actual(tables, _group_columns(query))
                            if m == "forecast":  # leave out the windows holding unscored forecasts
                                skip = expected_aggregate(q, unscored, start, stop, interval_ms * 1_000_000)
                                for k, pts in skip.items():
                                    for t in pts:
                                        want.get(k, {}).pop(t, None)
                                        got.get(k, {}).pop(t, None)
                        want = {k: v for k, v in want.items() if v}
                        got = {k: v for k, v in got.items() if v}
                        assert want, where
                        assert got.keys() == want.keys(), (where, sorted(got), sorted(want))
                        for k in want:
                            assert got[k].keys() == want[k].keys(), (where, k, len(got[k]), len(want[k]))
                            bad = [t for t in want[k] if not _same(got[k][t], want[k][t])]
                            assert not bad, (where, k, bad[0], got[k][bad[0]], want[k][bad[0]])
                            windows += len(want[k])
                        checked.add(panel["title"])
                        if view == "wide":
                            wide.add(interval_ms)
    titles = " / ".join(sorted(checked)).lower()
    for need in ("forecast at its target time", "hit rate (10 min)", "prequential hit rate", "skill", "rmse",
                 "equity", "drawdown", "position", "signals", "delta", "absolute error"):
        assert need in titles, need
    print(f"\n{len(checked)} panels checked against the CSV outputs, {windows} windows")
    assert min(wide) >= 5000  # wide: several one-second bars (and their points) in each window

"""Every Flux query of every provisioned Grafana dashboard, executed.

After the dataflow replayed every recording into a real InfluxDB 2 (the
session's ``influx_replay``), each panel's queries run with Grafana's
variables substituted as Grafana substitutes them (:mod:`fluxcheck`), for
each instrument over its longest stretch of data and each horizon that the
dashboard's own variable queries list. Panels are read from the dashboard
JSON, so a panel added later is covered without a change here. The panels
over measurements that the run also writes to CSV (forecasts, scored
forecasts, metrics, signals, positions, equity, and the maker books'
economics: the replay runs them) must return exactly the numbers the CSVs
give; the panel of depth features, the numbers the operators compute on the
recordings (their order books: each recording but one has a REST snapshot),
and nothing where the book was never ready.

The dashboard opens on the last hour before now (live data); its links
*Latest data* and *All data* open the time ranges that its hidden variables
compute from the bars in the bucket, where replayed data (old event times)
is drawn. Its ``bucket`` is a query over the org's buckets, the
datasource's default bucket first.
"""

from __future__ import annotations

import calendar
import json
import math
import re
import time
from collections import defaultdict
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from fluxcheck import (
    MS,
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

from harness.realdata import REPO, csv_dicts, run_chain

#: Integration tests (tests/integration_mark.py): an InfluxDB server.
pytestmark = pytest.mark.integration

DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
MEASUREMENT = re.compile(r'r\._measurement == "(\w+)"')
CSV_MEASUREMENTS = {"forecast", "scored", "metrics", "signal", "position", "equity", "maker_economics"}
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
                if b is not None:  # None: past the last bar
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


def _datasource_macros(query: str, default_bucket: str, org: str) -> str:
    """Grafana's server-side substitution of the datasource's own settings
    (``pkg/tsdb/influxdb/flux/macros.go``): ``v.defaultBucket`` and
    ``v.organization`` become the configured values, quoted."""
    values = {"defaultBucket": default_bucket, "organization": org}
    return re.sub(r"\b[a-zA-Z]+\.(defaultBucket|organization)\b", lambda m: json.dumps(values[m.group(1)]), query)


_BUCKET: dict[tuple[str, str], str] = {}


def _variables(dash: dict, server) -> dict[str, str]:
    """The dashboard's ``bucket`` as Grafana selects it when the dashboard
    opens: the first its query lists, with the server's bucket as the
    datasource's default bucket (as docker-compose.yml provisions it)."""
    key = (dash["uid"], server.url)
    if key not in _BUCKET:
        _BUCKET[key] = _variable_values(dash, "bucket", server, 0, 0, {})[0]
    return {"bucket": _BUCKET[key]}


def _variable_values(dash: dict, name: str, server, start: int, stop: int, variables: dict[str, str] | None = None,
                     default_bucket: str | None = None) -> list[str]:
    """Run a query variable's Flux over the time range as Grafana does
    (``default_bucket``: the datasource's, by default the server's bucket)."""
    query = _datasource_macros(_variable(dash, name)["query"],
                               server.bucket if default_bucket is None else default_bucket, server.org)
    q = grafana_query(query, _variables(dash, server) if variables is None else variables, start, stop, 1000)
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
    skill, error, equity, drawdown, position and signal panels, and those of
    the maker books (break-even fee, adverse selection, fill rate, net PnL:
    maker_economics.csv), for every instrument and horizon, zoomed and
    wide: each window's value is the one computed from the run's CSV files
    (last or mean of the window, as the query says; the rolling hit rate
    recomputed from forecasts.csv)."""
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
                 "equity", "drawdown", "position", "signals", "delta", "absolute error", "break-even maker fee",
                 "adverse selection of maker fills", "fill rate of each maker book", "net pnl of each maker book"):
        assert need in titles, need
    print(f"\n{len(checked)} panels checked against the CSV outputs, {windows} windows")
    assert min(wide) >= 5000  # wide: several one-second bars (and their points) in each window


#: The recordings of each instrument, as the dataflow reads them.
_FILES = {"BTCUSDT": ("spot", "btcusdt_"), "ETHUSDT": ("spot", "ethusdt_"), "BTCUSDT-PERP": ("usdm", "btcusdt_")}
#: Recordings before this time (ns): 2023-04-04/05; after: 2024-08-08/09.
Y2024 = 1_700_000_000 * S


def _feature_points() -> list[dict]:
    """Every ``features`` point as InfluxDB stores it (a row per field), from the feature rows that the
    operators alone (no dataflow, no sink) compute on each instrument's recordings: a ready row's features,
    those it has."""
    ws = REPO / "tests" / "data" / "binance-ws"
    out = []
    for inst, (market, prefix) in _FILES.items():
        chain = run_chain(sorted((ws / market).glob(f"{prefix}*")))
        assert chain.instrument == inst
        for r in chain.rows:
            if r.ready:
                out += [{"_measurement": "features", "_time": r.ts_end, "instrument": inst, "_field": f,
                         "_value": v} for f, v in r.x.items()]
    return out


def test_the_depth_panel_draws_the_books_features_and_nothing_where_there_is_no_book(influx_replay, stretches):
    """The panel of depth imbalance and integrated OFI, for every instrument
    over its longest stretch (each has a REST snapshot there: spot BTCUSDT
    and ETHUSDT on 2024-08-08, the USD-M BTCUSDT-PERP on 2023-04-04), zoomed
    and wide: each window's value, per field, is the mean of the rows that
    the operators compute on the recordings, depth imbalance of the top 1
    and 5 levels and integrated OFI all there. Over the spot BTCUSDT
    recording of 2023-04-05, which has no snapshot (its book is never
    ready), it draws nothing, no zeros, while the panel of the top-of-book
    features draws every window."""
    server, _, _, _ = influx_replay
    (dash,) = [d for name, d in _dashboards() if name == "ticklet.json"]
    (panel,) = [p for p in dash["panels"] if p["title"].startswith("Depth imbalance")]
    (target,) = panel["targets"]
    fields = set(re.findall(r'r\._field == "(\w+)"', target["query"]))
    assert fields == {"depth_imb_1", "depth_imb_5", "ofi_int"}
    points = _feature_points()
    windows = 0
    for view, inst, start, stop in _views(stretches):
        q, interval_ms, tables = _run_target(server, dash, panel, target, inst, "1", start, stop)
        want = expected_aggregate(q, points, start, stop, interval_ms * 1_000_000)
        assert want is not None and want.keys() == {(f,) for f in fields}, (view, inst, want and want.keys())
        got = _actual(tables, ["_field"])
        assert got.keys() == want.keys(), (view, inst, sorted(got))
        for k in want:
            assert len(want[k]) > 10 and got[k].keys() == want[k].keys(), (view, inst, k, len(got[k]), len(want[k]))
            bad = [t for t in want[k] if not math.isclose(got[k][t], want[k][t], rel_tol=1e-12, abs_tol=1e-15)]
            assert not bad, (view, inst, k, bad[0], got[k][bad[0]], want[k][bad[0]])
            windows += len(want[k])
    old = sorted(p["_time"] for p in points if p["instrument"] == "BTCUSDT" and p["_time"] < Y2024)
    start, stop = old[0] // (60 * S) * 60 * S, (old[-1] // (60 * S) + 2) * 60 * S
    assert not any(p["_field"] in fields for p in points if p["instrument"] == "BTCUSDT" and start <= p["_time"] < stop)
    _, _, tables = _run_target(server, dash, panel, target, "BTCUSDT", "1", start, stop)
    assert [r for t in tables for r in t.records] == []
    (top,) = [p for p in dash["panels"] if p["title"].startswith("Order-flow and book features")]
    q, interval_ms, tables = _run_target(server, dash, top, top["targets"][0], "BTCUSDT", "1", start, stop)
    want = expected_aggregate(q, points, start, stop, interval_ms * 1_000_000)
    assert want is not None and len(want) == 3
    assert {k: len(v) for k, v in _actual(tables, ["_field"]).items()} == {k: len(v) for k, v in want.items()}
    print(f"\ndepth panel: {windows} windows checked against the operators' rows; none over the book-less recording")


def test_the_bucket_variable_lists_the_orgs_buckets_the_datasources_default_first(influxdb):
    """The bucket drop-down (a query, no longer the constant ``ticklet``):
    every bucket of the org but InfluxDB's own (``_monitoring``,
    ``_tasks``), the datasource's default bucket first (what Grafana selects
    when the dashboard opens; the compose file provisions INFLUXDB_BUCKET),
    the others by name; with no default bucket, all by name."""
    from influxdb_client import InfluxDBClient

    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org=influxdb.org) as client:
        for name in ("aaa", "zzz"):
            client.buckets_api().create_bucket(bucket_name=name, org=influxdb.org)
    for _, dash in _dashboards():
        bucket = _variable(dash, "bucket")
        assert bucket["type"] == "query" and not bucket["current"] and bucket["sort"] == 0, bucket

        def listed(default: str, dash: dict = dash) -> list[str]:
            return _variable_values(dash, "bucket", influxdb, 0, 0, {}, default_bucket=default)

        assert listed(influxdb.bucket) == [influxdb.bucket, "aaa", "zzz"]
        assert listed("zzz") == ["zzz", "aaa", influxdb.bucket]
        assert listed("") == sorted(["aaa", "zzz", influxdb.bucket])


def _link_range(dash: dict, title: str, variables: dict[str, str]) -> tuple[int, int]:
    """The time range (ns) that the dashboard link ``title`` opens, its URL's
    variables substituted as Grafana substitutes them."""
    link = next(lk for lk in dash["links"] if lk["title"] == title)
    assert link["includeVars"] and not link["keepTime"], link
    url = grafana_query(link["url"], variables, 0, 0, 1000)
    assert urlsplit(url).path == f"/d/{dash['uid']}", url
    q = parse_qs(urlsplit(url).query)
    return int(q["from"][0]) * MS, int(q["to"][0]) * MS


def test_the_dashboard_opens_live_and_its_links_open_the_replayed_data(influx_replay):
    """It opens on the last hour before now, refreshed every 5 s (live
    data), where the replayed recordings (event times of 2023 and 2024) show
    nothing: no instrument to choose. Its links, named in the note at the
    top, open ranges set by the data in the bucket: *Latest data*, the last
    hour of bars (to a minute after the last); *All data*, from a minute
    before the first bar. Over each, the instrument drop-down lists the
    instrument of the last bar, and every panel of what Grafana selects
    then (the first instrument and horizon) draws (the health panels aside:
    they are stamped with the wall clock)."""
    server, _, _, points = influx_replay
    bars = sorted((t, inst) for inst, t in points["bar"])
    (first, _), (last, last_inst) = bars[0], bars[-1]
    now = time.time_ns()
    for name, dash in _dashboards():
        assert dash["time"] == {"from": "now-1h", "to": "now"} and dash["refresh"] == "5s"
        assert _variable_values(dash, "instrument", server, now - 3600 * S, now) == []
        variables = _variables(dash, server)
        for v in ("data_first", "data_recent", "data_end"):
            (variables[v],) = _variable_values(dash, v, server, now - 3600 * S, now)
        note = next(p for p in dash["panels"] if p["type"] == "text")["options"]["content"]
        assert all(f"**{lk['title']}**" in note for lk in dash["links"]), note
        ranges = {title: _link_range(dash, title, variables) for title in ("Latest data", "All data")}
        end = last // MS * MS + 60 * S
        assert ranges == {"Latest data": (end - 3660 * S, end), "All data": (first // MS * MS - 60 * S, end)}
        for title, (start, stop) in ranges.items():
            instruments = _variable_values(dash, "instrument", server, start, stop)
            assert last_inst in instruments, (title, instruments)
            inst = sorted(instruments)[0]
            horizon = sorted(_variable_values(dash, "horizon", server, start, stop), key=int)[0]
            for panel in dash["panels"]:
                for target in panel.get("targets", []):
                    if "health" in MEASUREMENT.findall(target["query"]):
                        continue
                    q, _, tables = _run_target(server, dash, panel, target, inst, horizon, start, stop)
                    assert any(t.records for t in tables), (name, title, panel["title"], q)

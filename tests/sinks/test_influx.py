"""The InfluxDB sink against a real InfluxDB 2 (``influxd`` built from source
by ``scripts/influxdb.sh``), on the real recordings: every measurement read
back through Flux with its values, tags and event times, every CSV row its
own point (rows that share a series and a time included, across a recovery
too); a replay; an outage with the server stopped and restarted; a wrong
token; a field whose type changes; shutdown within ``max_close_wait_ms``
with the server down; the check at start (a server that cannot take the
points stops the run with one line, exit status 2); and whole runs whose
points are rejected or cannot reach the server: one line per kind of failure,
the count, exit status 74, never a summary listing InfluxDB as written."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from fluxcheck import CSV_OF, from_csv, read_back

from core.events import Bar, EquityPoint, FeatureRow
from dataflows import ops
from dataflows.settings import Settings
from harness.realdata import REPO, SCRATCH, csv_dicts, run_chain
from sinks.influx import InfluxConfig, InfluxWriter
from sinks.influx_points import MEASUREMENTS, Stamped, to_point
from sinks.output_config import OutputConfig
from sinks.summary import record_from_row
from ticklet.backtest import run_backtest


@pytest.mark.integration  # an InfluxDB server
def test_every_measurement_is_read_back_with_its_values_tags_and_event_times(influx_replay):
    server, summary, out, got = influx_replay
    for m in CSV_OF:  # scored, metrics, signal, position, equity: exactly the run's CSV rows
        want = from_csv(out, m)
        assert len(want) > 0, m
        assert got[m].keys() == want.keys(), (m, len(got[m]), len(want))
        bad = [k for k, v in want.items() if got[m][k] != v]
        assert not bad, (m, len(bad), bad[0], got[m][bad[0]], want[bad[0]])
    assert len(got["scored"]) == summary["forecasts"]
    assert {k[0] for k in got["scored"]} == {"BTCUSDT", "ETHUSDT", "BTCUSDT-PERP"}
    # issued forecasts, at their target time: every scored one, with the same prediction and issue time
    rows = {(r["instrument"], r["model"], r["horizon"], int(r["ts_target"])): r
            for r in csv_dicts(out / "forecasts.csv")}
    issued = got["forecast"]
    for k, r in rows.items():
        f = issued[k]
        assert f["pred_return"] == float(r["pred_return"]) and f["pred_price"] == float(r["pred_price"]), k
        assert f["ts_forecast"] == int(r["ts_forecast"]), k
    assert len(issued) >= len(rows)
    # bars: one point per bar, priced as the forecasts saw them (the realized price at each target time,
    # the issue price at each issue time)
    bars = got["bar"]
    assert len(bars) == summary["bars"]
    for k, r in list(rows.items())[::7]:
        assert bars[(r["instrument"], int(r["ts_target"]))]["price"] == float(r["realized_price"]), k
        assert bars[(r["instrument"], int(r["ts_forecast"]))]["price"] == issued[k]["price"], k
    assert all({"open", "high", "low", "close", "price", "volume", "trades"} <= v.keys() for v in bars.values())
    # features: at bar times, the configured ones that each row has, exactly as the operators compute them on
    # the recordings: a depth feature missing from a row (no book yet) is no field, never a zero
    feats = got["features"]
    assert 0 < len(feats) <= len(bars) and feats.keys() <= bars.keys()
    assert feats == _feature_points(InfluxConfig().features)
    depth = {"depth_imb_1", "depth_imb_5", "ofi_int", "ofi_l1", "walk_buy", "walk_sell"}
    assert depth <= set(InfluxConfig().features)
    with_depth = Counter(k[0] for k, v in feats.items() if {"depth_imb_5", "ofi_int"} <= v.keys())
    assert with_depth["BTCUSDT-PERP"] > 400 and with_depth["ETHUSDT"] > 500 and with_depth["BTCUSDT"] > 500
    without = [k for k, v in feats.items() if not v.keys() & depth]  # spot BTCUSDT of 2023-04-05: no snapshot
    assert {k[0] for k in without} == {"BTCUSDT"} and len(without) > 300
    assert all(v.keys() >= {"micro_dev", "ofi", "book_imb"} for v in feats.values())
    assert all(math.isfinite(x) for v in feats.values() for x in v.values())
    # health, on the wall clock: the final totals of the run
    health = server.rows(f'from(bucket: "{server.bucket}") |> range(start: 0, stop: 2100-01-01T00:00:00Z) '
                         '|> filter(fn: (r) => r._measurement == "health") |> last()')
    last = {r["_field"]: r["_value"] for r in health}
    assert last["ticks_total"] == summary["ticks"] and last["dead_letters_total"] == summary["errors"]
    assert last["points_dropped"] == 0 and last["points_failed"] == 0


@pytest.mark.integration  # an InfluxDB server
def test_a_replay_overwrites_identical_points(influx_replay, tmp_path, monkeypatch):
    """Replaying an instrument (as after a recovery) rewrites its points: the
    server holds exactly what it held, nothing added."""
    server, _, _, first = influx_replay
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    spot = REPO / "tests" / "data" / "binance-ws" / "spot"
    summary = run_backtest([str(spot / "ethusdt_20240808.gz"), str(spot / "ethusdt_20240809.gz")], tmp_path)
    assert summary["forecasts"] > 1000
    second = {m: read_back(server, m) for m in first}
    for m, pts in first.items():
        assert len(pts) > 0, m
        assert second[m] == pts, (m, len(pts), len(second[m]))


#: The recordings of each instrument, as the dataflow reads them.
_FILES = {"BTCUSDT": ("spot", "btcusdt_"), "ETHUSDT": ("spot", "ethusdt_"), "BTCUSDT-PERP": ("usdm", "btcusdt_")}


@functools.cache
def _feature_rows() -> dict[str, list[FeatureRow]]:
    """Each instrument's feature rows over all its recordings, from the operators alone (no dataflow)."""
    ws = REPO / "tests" / "data" / "binance-ws"
    out = {}
    for inst, (market, prefix) in _FILES.items():
        chain = run_chain(sorted((ws / market).glob(f"{prefix}*")))
        assert chain.instrument == inst
        out[inst] = chain.rows
    return out


def _feature_points(features: tuple[str, ...]) -> dict[tuple, dict[str, float]]:
    """The ``features`` points the sink should write: {(instrument, time): {feature: value}}, a point per
    ready row with those of ``features`` that it has, none for a row that has none of them."""
    out = {}
    for inst, rows in _feature_rows().items():
        for r in rows:
            fields = {f: r.x[f] for f in features if f in r.x}
            if r.ready and fields:
                out[(inst, r.ts_end)] = fields
    return out


@functools.cache
def _bars() -> list[Bar]:
    ws = REPO / "tests" / "data" / "binance-ws" / "spot"
    chain = run_chain([ws / "btcusdt_20240808.gz", ws / "btcusdt_20240809.gz"])
    return [b for b in chain.bar_out if type(b) is Bar]


def _bar_points(n: int):
    """The first ``n`` real bars and their points."""
    bars = _bars()[:n]
    assert len(bars) == n
    return bars, [to_point(b) for b in bars]


def _wait(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _bar_times(server) -> list[int]:
    return sorted(k[-1] for k in read_back(server, "bar"))


@pytest.mark.integration  # an InfluxDB server
def test_outage_keeps_points_within_the_bound_and_counts_the_rest(influxdb):
    bars, points = _bar_points(620)
    w = InfluxWriter(influxdb.config(batch_size=50, flush_interval_ms=50, retry_interval_ms=100,
                                     max_retry_delay_ms=400, max_retries=1000, max_retry_time_ms=120_000,
                                     max_buffered_points=200))
    w.write(points[:120])
    _wait(lambda: w.stats["written"] == 120)
    influxdb.stop()  # the server goes down mid-run
    for i in range(120, 620, 25):  # the dataflow keeps writing; nothing blocks
        w.write(points[i : i + 25])
    s = w.stats
    assert s["pending"] == 200 and s["dropped"] == 300 and s["written"] == 120
    influxdb.start()  # back up (same port, data and token): the pending points are retried in
    w.close()
    assert w.stats == {"written": 320, "dropped": 300, "failed": 0, "abandoned": 0, "pending": 0}
    assert _bar_times(influxdb) == [b.ts_end for b in bars[:320]]  # the first 320: nothing within the bound lost


@pytest.mark.integration  # an InfluxDB server
def test_a_wrong_token_is_a_clear_error_counted_never_logged_and_never_retried(influxdb, caplog):
    _, points = _bar_points(30)
    wrong = "wrong-" + influxdb.token[::-1]
    caplog.set_level(logging.DEBUG)
    w = InfluxWriter(influxdb.config(token=wrong, batch_size=10, flush_interval_ms=20, retry_interval_ms=2000,
                                     max_retries=20))
    t0 = time.monotonic()
    w.write(points)
    w.close()
    assert time.monotonic() - t0 < 5  # 401 is final: no retries (the first would wait 2 s)
    assert w.stats == {"written": 0, "dropped": 0, "failed": 30, "abandoned": 0, "pending": 0}
    # three batches rejected: ticklet's one line (the next within 5 s held back), none of influxdb-client's
    # own (an ERROR block with the response's headers for each batch)
    ours = [r.getMessage() for r in caplog.records
            if r.name.startswith("sinks.influx") and r.levelno >= logging.WARNING]
    assert len(ours) == 1 and "HTTP 401 unauthorized: TICKLET_INFLUX__TOKEN is wrong" in ours[0], ours
    theirs = [r.getMessage() for r in caplog.records if r.name.startswith("influxdb_client")
              and r.levelno >= logging.WARNING]
    assert not theirs, theirs
    assert wrong not in caplog.text and influxdb.token not in caplog.text
    assert _bar_times(influxdb) == []


@pytest.mark.integration  # an InfluxDB server
def test_a_field_whose_type_changes_is_rejected_counted_and_not_retried(influxdb, caplog):
    """InfluxDB fixes a field's type at its first write in a shard: a batch
    with a point of another type is a partial write (2.7 answers 422 and
    keeps the rest). The dropped point is counted and logged once, the
    others count as written, and nothing is retried."""
    from influxdb_client import Point

    caplog.set_level(logging.INFO)
    w = InfluxWriter(influxdb.config(batch_size=3, flush_interval_ms=20, retry_interval_ms=2000))
    t = 1_723_075_200_000_000_000

    def bar(i: int, trades: float) -> Point:
        return Point("bar").tag("instrument", "BTCUSDT").field("trades", trades).time(t + i * 10**9)

    w.write([bar(0, 12)])  # an integer field
    _wait(lambda: w.stats["written"] == 1)
    t0 = time.monotonic()
    w.write([bar(1, 13), bar(2, 14.5), bar(3, 15)])  # the second one a float
    _wait(lambda: w.stats["failed"] == 1)
    assert time.monotonic() - t0 < 2  # rejected at once, never retried (the first retry would wait 2 s)
    w.close()
    assert w.stats == {"written": 3, "dropped": 0, "failed": 1, "abandoned": 0, "pending": 0}
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("sinks.influx") and r.levelno == logging.ERROR]
    assert len(ours) == 1 and "1 points not written" in ours[0], ours
    assert "HTTP 422 partial write" in ours[0] and 'field type conflict: input field "trades"' in ours[0], ours
    got = read_back(influxdb, "bar")
    assert {k[-1]: v["trades"] for k, v in got.items()} == {t: 12, t + 10**9: 13, t + 3 * 10**9: 15}


@pytest.mark.integration  # an InfluxDB server
def test_close_honours_max_close_wait_with_the_server_stopped(influxdb, caplog):
    """Shutdown with the server down and default retries (20, up to 10 min):
    close() returns after max_close_wait_ms, counts the points not written,
    and nothing it started keeps the process alive."""
    import threading

    _, points = _bar_points(300)
    caplog.set_level(logging.INFO)
    before = set(threading.enumerate())
    w = InfluxWriter(influxdb.config(batch_size=50, flush_interval_ms=50, max_close_wait_ms=1500))
    w.write(points[:100])
    _wait(lambda: w.stats["written"] == 100)
    influxdb.stop()
    w.write(points[100:])
    time.sleep(0.3)  # the first retries are under way
    t0 = time.monotonic()
    w.close()
    took = time.monotonic() - t0
    assert 1.4 <= took < 2.5, took
    assert w.stats == {"written": 100, "dropped": 0, "failed": 0, "abandoned": 200, "pending": 0}
    assert "200 points not written" in caplog.text
    time.sleep(0.3)
    alive = [t.name for t in set(threading.enumerate()) - before if not t.daemon]
    assert not alive, alive  # a non-daemon thread would hold the process at exit


@pytest.mark.integration  # a socket: it connects to a closed local port
def test_the_token_is_never_logged(caplog, monkeypatch):
    secret = "s3cr3t-t0ken-value"
    monkeypatch.setenv("TICKLET_INFLUX__TOKEN", secret)
    from dataflows.settings import Settings

    s = Settings()
    assert secret not in repr(s) and secret not in str(s.influx) and secret not in s.model_dump_json()
    _, points = _bar_points(20)
    caplog.set_level(logging.DEBUG)
    # Nobody listens on port 9: every batch fails after its retries, and is counted.
    w = InfluxWriter(s.influx.model_copy(update={"url": "http://127.0.0.1:9", "retry_interval_ms": 10,
                                                 "max_retry_delay_ms": 20, "max_retry_time_ms": 300,
                                                 "flush_interval_ms": 10}))
    w.write(points)
    w.close()
    assert w.stats["failed"] == 20 and w.stats["written"] == 0
    assert "points not written" in caplog.text and "Connection refused" in caplog.text
    assert secret not in caplog.text


def test_measurements_table_matches_the_points(ws_dir):
    """MEASUREMENTS (what the dashboards may query) lists exactly the tags and
    fields that to_point writes."""
    chain = run_chain([ws_dir / "spot" / "btcusdt_20240808.gz"])
    seen: dict[str, tuple[set, set]] = {}
    for rec in [*chain.bar_out, *chain.join_out, *chain.metrics, *chain.rows]:
        p = to_point(rec, InfluxConfig().features)
        if p is None:
            continue
        line = p.to_line_protocol()
        head, fields, _ = line.rsplit(" ", 2)
        name, *tags = head.split(",")
        t, f = seen.setdefault(name, (set(), set()))
        t.update(x.split("=")[0] for x in tags)
        f.update(x.split("=")[0] for x in fields.split(","))
    for name, (tags, fields) in seen.items():
        want_tags, want_fields = MEASUREMENTS[name]
        assert tags == set(want_tags), name
        if name == "features":
            assert fields == set(InfluxConfig().features)
        else:
            assert fields <= set(want_fields) and len(fields) >= len(want_fields) - 2, (name, fields)
    assert set(seen) == {"bar", "features", "forecast", "scored", "metrics"}
    json.dumps(MEASUREMENTS)  # plain data, usable by tools


def test_a_row_without_the_features_asked_for_has_no_point():
    """A feature missing from a row is no field of its point; a row that has none of the features asked for
    (the depth features, on the spot recording of 2023-04-05, which has no REST snapshot: its book is never
    ready) has no point at all: a point without a field is no point to InfluxDB, and would be counted written
    while nothing was stored."""
    rows = [r for r in _feature_rows()["BTCUSDT"] if r.ready]
    old = [r for r in rows if r.ts_end < 1_700_000_000 * 10**9]  # 2023-04-05
    assert len(old) > 300 and not any("depth_imb_5" in r.x for r in old)
    assert all(to_point(r, ("depth_imb_5", "ofi_int")) is None for r in old)
    for r in old[::50]:
        line = to_point(r, ("depth_imb_5", "book_imb", "ofi_int")).to_line_protocol()
        assert line == f"features,instrument=BTCUSDT book_imb={r.x['book_imb']!r} {r.ts_end}", line
    new = [r for r in rows if r.ts_end >= 1_700_000_000 * 10**9 and "ofi_int" in r.x]
    assert len(new) > 500
    line = to_point(new[-1], ("depth_imb_5", "ofi_int")).to_line_protocol()
    assert line == (f"features,instrument=BTCUSDT depth_imb_5={new[-1].x['depth_imb_5']!r},"
                    f"ofi_int={new[-1].x['ofi_int']!r} {new[-1].ts_end}"), line


# --- every row its own point ---------------------------------------------------------------------------------

@pytest.mark.integration  # an InfluxDB server
def test_every_csv_row_is_its_own_point_even_where_rows_share_a_time(influx_replay):
    """InfluxDB keeps one point per measurement, tags and time. Decisions
    filled by the same quote give rows of equity.csv and trades.csv that
    share series and time, and the server kept only the last of them (15,792
    equity points for 15,818 rows, 5,108 positions for 5,111 trades). Now
    every row of every CSV is one point: those of a series at a time that
    earlier rows have go 1 ns later each, in file order (the first test
    compares every point's values with its row)."""
    _, summary, out, got = influx_replay
    shared = {}
    for m, (name, tcol) in CSV_OF.items():
        rows = csv_dicts(out / name)
        times = Counter((r["instrument"], r["model"], r["horizon"], int(r[tcol])) for r in rows)
        shared[m] = sum(n for n in times.values() if n > 1)
        assert len(got[m]) == len(rows), (m, len(got[m]), len(rows))
        for (*series, t), n in times.items():
            assert all((*series, t + k) in got[m] for k in range(n)), (m, series, t, n)
    assert shared["equity"] >= 20 and shared["position"] >= 3, shared  # the recordings have such rows
    assert len(got["bar"]) == summary["bars"]


def _equity_records(out: Path) -> list[EquityPoint]:
    return [record_from_row(r, EquityPoint) for r in csv_dicts(out / "equity.csv")]


def _stamp_flow(items: list, into: list) -> Dataflow:
    """Records -> the dataflow's stamping step (keyed by instrument) -> ``into``."""
    flow = Dataflow("stamps")
    recs = op.key_on("key", op.input("records", flow, TestingSource(items)), lambda r: r.instrument)
    op.output("out", ops.values("unkey", ops.stamp_points("stamp", recs)), TestingSink(into))
    return flow


def test_a_resumed_run_stamps_shared_times_as_the_first_life_did(tmp_path):
    """The stamps of rows that share a time depend on the rows before, so
    the stamping step keeps that per series in its state, which Bytewax
    snapshots. A run that stops in the middle of such a group (a real
    Bytewax recovery store, an epoch per record) and resumes gives the
    replayed records the stamps of an uninterrupted run: no shifted point,
    no second point for one row."""
    usdm = REPO / "tests" / "data" / "binance-ws" / "usdm"  # the day change: a quote fills 4 decisions
    run_backtest([str(usdm)], tmp_path / "run", base=Settings(output=OutputConfig(summary=False)))
    recs = _equity_records(tmp_path / "run")
    groups = Counter((r.model, r.horizon, r.ts_recv) for r in recs)
    first = next(i for i, r in enumerate(recs) if groups[(r.model, r.horizon, r.ts_recv)] == 4)
    recs = recs[first - 16 : first + 48]  # every book's group of 4, with the rows around them

    ref: list = []
    run_main(_stamp_flow(recs, ref))
    points = [(x.record.model, x.record.horizon, x.time_ns) if type(x) is Stamped else (x.model, x.horizon, x.ts_recv)
              for x in ref]
    assert len(set(points)) == len(ref) == len(recs)  # one point per record
    assert sum(type(x) is Stamped for x in ref) == 3 * 8  # 8 books, 3 rows moved each

    cut = 16 + 8 * 2 + 3  # in the middle of the groups: two rows of each book's group before it, and three more
    store = tmp_path / "recovery"
    store.mkdir()
    init_db_dir(store, 1)
    got: list = []
    flow = _stamp_flow([*recs[:cut], TestingSource.ABORT(), *recs[cut:]], got)
    run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(store)))
    life1 = list(got)
    run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(store)))
    life2 = got[len(life1):]
    resumed_at = len(ref) - len(life2)
    assert 0 < resumed_at <= cut and life1 == ref[:len(life1)], (len(life1), resumed_at)
    assert life2 == ref[resumed_at:]  # the replayed records, stamped as in one run
    # the resume point splits the groups: records after it are stamped 2 or 3 ns late, from the restored state
    assert any(type(x) is Stamped and x.time_ns - x.record.ts_recv >= 2 for x in life2)


# --- the check at start ----------------------------------------------------------------------------------------

def _cli_env(server, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKLET_", "BYTEWAX_"))}
    env.update(server.env(), TICKLET_OUTPUT__PROGRESS="false", PYTHONPATH=str(REPO),
               **{f"TICKLET_INFLUX__{k.upper()}": v for k, v in settings.items()})
    return env


def _backtest(env: dict[str, str], out: Path, *paths: Path) -> subprocess.CompletedProcess:
    """``ticklet backtest`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "ticklet.cli", "backtest", *map(str, paths), "--out", str(out)],
                          env=env, cwd=SCRATCH, capture_output=True, text=True, timeout=300)


def _read_only_token(server) -> str:
    from influxdb_client import InfluxDBClient, Permission, PermissionResource

    with InfluxDBClient(url=server.url, token=server.token, org=server.org) as client:
        org_id = client.organizations_api().find_organizations(org=server.org)[0].id
        bucket = client.buckets_api().find_bucket_by_name(server.bucket)
        read = Permission(action="read", resource=PermissionResource(type="buckets", id=bucket.id, org_id=org_id))
        return client.authorizations_api().create_authorization(org_id=org_id, permissions=[read]).token


@pytest.mark.integration  # an InfluxDB server
@pytest.mark.parametrize("bad", ["token", "read-only token", "org", "bucket"])
def test_a_server_that_would_refuse_the_points_stops_the_run_at_start(influx_replay, tmp_path, bad):
    """A token, org or bucket the server refuses, or a token that may only
    read, is one line naming the setting and exit status 2, before anything
    runs (it used to run to the end with every point rejected). The check
    writes no points: the server holds what it held."""
    server = influx_replay[0]
    wrong = {"token": {"token": "wrong-" + server.token[::-1]}, "read-only token": {"token": _read_only_token(server)},
             "org": {"org": "no-such-org"}, "bucket": {"bucket": "no-such-bucket"}}[bad]
    names = {"token": "TICKLET_INFLUX__TOKEN", "read-only token": "TICKLET_INFLUX__TOKEN",
             "org": "TICKLET_INFLUX__ORG", "bucket": "TICKLET_INFLUX__BUCKET"}[bad]
    before = read_back(server, "bar")
    proc = _backtest(_cli_env(server, **wrong), tmp_path / "out", REC)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ticklet: InfluxDB at ") and names in lines[0], lines
    assert "Traceback" not in proc.stderr and server.token not in proc.stderr
    assert "token" not in wrong or wrong["token"] not in proc.stderr
    assert not (tmp_path / "out" / "forecasts.csv").exists()
    assert read_back(server, "bar") == before


@pytest.mark.integration  # an InfluxDB server
def test_the_check_at_start_waits_for_a_server_that_is_starting(influxdb, tmp_path):
    """InfluxDB still starting (docker compose starts both at once): the
    check asks again until TICKLET_INFLUX__CONNECT_TIMEOUT_S, and the run
    then writes every point."""
    influxdb.stop()
    env = _cli_env(influxdb, connect_timeout_s="120", health_interval_s="3600")
    proc = subprocess.Popen([sys.executable, "-m", "ticklet.cli", "backtest", str(REC), "--out", str(tmp_path)],
                            env=env, cwd=SCRATCH, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        influxdb.start()  # while the process imports and checks
        _, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    written = int(re.search(r"ticklet: InfluxDB at \S+, bucket '[^']+': (\d+) points written", err).group(1))
    assert written == _points_held(influxdb) > 10_000


# --- whole runs whose points are not written -------------------------------------------------------------------

REC = REPO / "tests" / "data" / "binance-ws" / "spot" / "btcusdt_20230405.dat.gz"
_FINAL = re.compile(r"^ticklet: InfluxDB at \S+, bucket '[^']+': (\d+) of (\d+) points not written \(dropped over "
                    r"TICKLET_INFLUX__MAX_BUFFERED_POINTS: (\d+), failed or rejected: (\d+), abandoned after "
                    r"TICKLET_INFLUX__MAX_CLOSE_WAIT_MS \(\d+ ms\): (\d+); see the lines above\)\. The run ends with "
                    r"status 74\.$")


def _points_held(server, bucket: str | None = None) -> int:
    """Every point of a bucket (one per measurement, tags and time), health included."""
    tags = ("_measurement", "instrument", "model", "horizon", "worker", "_time")
    rows = server.rows(f'from(bucket: "{bucket or server.bucket}") |> range(start: 0, stop: 2100-01-01T00:00:00Z)')
    return len({tuple(r.get(t) for t in tags) for r in rows})


def _new_bucket(server, name: str, retention_s: int = 0) -> str:
    from influxdb_client import BucketRetentionRules, InfluxDBClient

    rules = [BucketRetentionRules(type="expire", every_seconds=retention_s)] if retention_s else None
    with InfluxDBClient(url=server.url, token=server.token, org=server.org) as client:
        client.buckets_api().create_bucket(bucket_name=name, retention_rules=rules, org=server.org)
    return name


@pytest.fixture(scope="module")
def one_run(influx_replay, tmp_path_factory) -> tuple[Any, int]:
    """A whole ``ticklet backtest`` of one recording into a bucket of its own,
    with one health point (the final one): (server, points written). Every
    point it reports written is in the bucket."""
    server = influx_replay[0]
    bucket = _new_bucket(server, "one-run")
    proc = _backtest(_cli_env(server, bucket=bucket, health_interval_s="3600"), tmp_path_factory.mktemp("one"), REC)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ticklet: InfluxDB")]
    assert len(lines) == 1, proc.stderr[-2000:]
    said = re.fullmatch(r"ticklet: InfluxDB at \S+, bucket 'one-run': (\d+) points written", lines[0])
    assert said is not None, lines[0]
    written = int(said.group(1))
    assert written == _points_held(server, bucket) > 10_000
    return server, written


@pytest.mark.integration  # an InfluxDB server
def test_a_run_writes_no_point_for_a_row_without_the_features_asked_for(influx_replay, tmp_path):
    """``ticklet backtest`` of the spot recording without a snapshot (no book: no depth feature in any row)
    and a USD-M one with its snapshot, writing only depth features: the spot rows give no ``features``
    point, the USD-M rows one each with the depth features they have, and every point the run says it
    wrote is in the bucket (a point without a field would be counted written and stored nowhere)."""
    server = influx_replay[0]
    bucket = _new_bucket(server, "depth-only")
    usdm = REPO / "tests" / "data" / "binance-ws" / "usdm" / "btcusdt_20230404.dat.gz"
    env = _cli_env(server, bucket=bucket, health_interval_s="3600", features='["depth_imb_5", "ofi_int"]')
    proc = _backtest(env, tmp_path, REC, usdm)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = re.search(r"^ticklet: InfluxDB at \S+, bucket 'depth-only': (\d+) points written$", proc.stderr, re.M)
    assert said is not None, proc.stderr[-2000:]
    assert int(said.group(1)) == _points_held(server, bucket)
    rows = server.rows(f'from(bucket: "{bucket}") |> range(start: 0, stop: 2100-01-01T00:00:00Z) '
                       '|> filter(fn: (r) => r._measurement == "features") '
                       '|> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value") '
                       '|> map(fn: (r) => ({r with t: int(v: r._time)}))')
    got = {(r["instrument"], r["t"]): {f: r[f] for f in ("depth_imb_5", "ofi_int") if r.get(f) is not None}
           for r in rows}
    assert {k[0] for k in got} == {"BTCUSDT-PERP"} and len(got) > 30
    want = _feature_points(("depth_imb_5", "ofi_int"))  # both USD-M days: the first one's rows are the same
    last = max(got)  # but for the bar the end of the input closed
    assert all(got[k] == want[k] for k in got if k != last)
    bars = server.rows(f'from(bucket: "{bucket}") |> range(start: 0, stop: 2100-01-01T00:00:00Z) '
                       '|> filter(fn: (r) => r._measurement == "bar" and r._field == "close") |> group() |> count()')
    assert bars[0]["_value"] > len(got)  # the spot bars are there, their feature rows wrote nothing


@pytest.mark.integration  # an InfluxDB server
def test_a_run_whose_points_are_rejected_says_so_once_and_ends_with_status_74(one_run, tmp_path):
    """The server takes the check but rejects the points (a bucket whose
    retention is an hour: every event-time point is older, a 422 partial
    write for each batch). One line for that kind of failure (the next ones
    within 5 s held back and counted), none of influxdb-client's blocks, and
    at the end one line with the count and exit status 74: every point of
    the run counted once, as rejected or (the health point, stamped now)
    written."""
    server, points = one_run
    bucket = _new_bucket(server, "an-hour", retention_s=3600)
    proc = _backtest(_cli_env(server, bucket=bucket, health_interval_s="3600"), tmp_path, REC)
    assert proc.returncode == 74, proc.stderr[-3000:]
    err = proc.stderr
    assert "Traceback" not in err and "influxdb_client" not in err and "HTTP response headers" not in err, err[-3000:]
    rejected = [ln for ln in err.splitlines() if "HTTP 422 partial write" in ln]
    assert rejected and "outside retention policy" in rejected[0], err[-3000:]
    assert all("more like it in the last 5 s" in ln for ln in rejected[1:]), rejected
    last = err.splitlines()[-1]
    m = _FINAL.match(last)
    assert m, last
    lost, handed, dropped, failed, abandoned = map(int, m.groups())
    assert (handed, lost, failed, dropped, abandoned) == (points, points - 1, points - 1, 0, 0), last
    assert _points_held(server, bucket) == 1  # the health point
    counters = json.loads((tmp_path / "counters.json").read_text())  # the other outputs are complete
    assert counters["forecasts"] == len(csv_dicts(tmp_path / "forecasts.csv")) > 1000 and counters["ticks"] > 10_000
    outputs = err[err.index("\noutputs:\n"):].splitlines()[2:-1]  # the summary came first here, then the line
    assert outputs and not any("influx" in ln.lower() or ln.startswith("ticklet") for ln in outputs), outputs


class _DeadAfterCheck:
    """A loopback port in front of the server: the first connection (the
    dataflow's check at start) reaches it; every later one is accepted and
    never answered, as by a server that hangs once the run is under way."""

    def __init__(self, url: str):
        host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
        self._target = (host, int(port))
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        first = True
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if not first:
                self._held.append(conn)
                continue
            first = False
            up = socket.create_connection(self._target)
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._sock.close()
        for c in self._held:
            c.close()


@pytest.mark.integration  # an InfluxDB server
def test_a_server_gone_after_the_check_ends_the_run_with_the_count_and_status_74(one_run, tmp_path):
    """The server answers the check, then hangs for the rest of the run:
    the writer retries, the close wait (2 s here) runs out, and the run ends
    with one line counting every point of the run as abandoned and exit
    status 74, a second or so after the close gave up (it used to exit 0
    and list InfluxDB among its outputs). Before that, the summary of the
    other outputs, which are complete."""
    server, points = one_run
    link = _DeadAfterCheck(server.url)
    env = _cli_env(server, url=link.url, bucket=_new_bucket(server, "dead-link"), health_interval_s="3600",
                   max_close_wait_ms="2000", timeout_ms="500")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "ticklet.cli", "backtest", str(REC), "--out", str(tmp_path)],
                                env=env, cwd=SCRATCH, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=240)
        exited = time.time()
    finally:
        proc.kill()
        link.close()
    assert proc.returncode == 74, err[-3000:]
    assert "Traceback" not in err and "influxdb_client" not in err, err[-3000:]
    m = _FINAL.match(err.splitlines()[-1])
    assert m, err[-3000:]
    lost, handed, dropped, failed, abandoned = map(int, m.groups())
    assert (handed, lost, abandoned, failed, dropped) == (points, points, points, 0, 0), m.group(0)
    closed = next(ln for ln in err.splitlines() if "influx: closed after" in ln)
    took = float(re.search(r"closed after ([\d.]+) s", closed).group(1))
    assert took < 3.0, closed
    stamp = datetime.strptime(closed[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    assert exited - stamp < 4.0, (exited - stamp, closed)  # no retry thread holds the exit
    counters = json.loads((tmp_path / "counters.json").read_text())  # the other outputs are complete
    assert counters["forecasts"] == len(csv_dicts(tmp_path / "forecasts.csv")) > 1000 and counters["ticks"] > 10_000

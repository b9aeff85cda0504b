"""The InfluxDB sink against a real InfluxDB 2 (``influxd`` built from source
by ``scripts/influxdb.sh``), on the real recordings: every measurement read
back through Flux with its values, tags and event times; a replay; an outage
with the server stopped and restarted; a wrong token; a field whose type
changes; and shutdown within ``max_close_wait_ms`` with the server down."""

from __future__ import annotations

import functools
import logging
import math
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from fluxcheck import CSV_OF, from_csv, read_back
from realdata import csv_dicts, run_chain

from sinks.influx import InfluxConfig, InfluxWriter
from sinks.influx_points import MEASUREMENTS, to_point
from ticklet.cli import run_backtest
from ticklet.events import Bar


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
    # features: the configured ones, at bar times, finite
    feats = got["features"]
    assert 0 < len(feats) <= len(bars) and feats.keys() <= bars.keys()
    for v in feats.values():
        assert v.keys() == set(InfluxConfig().features) and all(math.isfinite(x) for x in v.values())
    # health, on the wall clock: the final totals of the run
    health = server.rows(f'from(bucket: "{server.bucket}") |> range(start: 0, stop: 2100-01-01T00:00:00Z) '
                         '|> filter(fn: (r) => r._measurement == "health") |> last()')
    last = {r["_field"]: r["_value"] for r in health}
    assert last["ticks_total"] == summary["ticks"] and last["dead_letters_total"] == summary["errors"]
    assert last["points_dropped"] == 0 and last["points_failed"] == 0


def test_a_replay_overwrites_identical_points(influx_replay, tmp_path, monkeypatch):
    """Replaying an instrument (as after a recovery) rewrites its points: the
    server holds exactly what it held, nothing added."""
    server, _, _, first = influx_replay
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    spot = Path(__file__).parent / "data" / "binance-ws" / "spot"
    summary = run_backtest([str(spot / "ethusdt_20240808.gz"), str(spot / "ethusdt_20240809.gz")], tmp_path)
    assert summary["forecasts"] > 1000
    second = {m: read_back(server, m) for m in first}
    for m, pts in first.items():
        assert len(pts) > 0, m
        assert second[m] == pts, (m, len(pts), len(second[m]))


@functools.cache
def _bars() -> list[Bar]:
    ws = Path(__file__).parent / "data" / "binance-ws" / "spot"
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
    ours = [r.getMessage() for r in caplog.records if r.name == "sinks.influx" and r.levelno == logging.ERROR]
    assert ours and "HTTP 401 unauthorized: TICKLET_INFLUX__TOKEN is wrong" in ours[0], ours
    assert wrong not in caplog.text and influxdb.token not in caplog.text
    assert _bar_times(influxdb) == []


def test_the_dataflow_survives_a_wrong_token(influxdb, tmp_path, monkeypatch, caplog):
    """A whole backtest with a wrong token: it completes with its usual
    results, the sink logs the 401 and its count, never the token."""
    for k, v in influxdb.env().items():
        monkeypatch.setenv(k, v)
    wrong = "wrong-" + influxdb.token[::-1]
    monkeypatch.setenv("TICKLET_INFLUX__TOKEN", wrong)
    caplog.set_level(logging.INFO)
    rec = Path(__file__).parent / "data" / "binance-ws" / "spot" / "btcusdt_20230405.dat.gz"
    summary = run_backtest([str(rec)], tmp_path)
    assert summary["forecasts"] > 1000
    assert "HTTP 401 unauthorized" in caplog.text
    closed = [r.getMessage() for r in caplog.records if "influx: closed" in r.getMessage()]
    assert closed and re.search(r"'written': 0, 'dropped': 0, 'failed': [1-9]\d*", closed[0]), closed
    assert wrong not in caplog.text and influxdb.token not in caplog.text


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
    ours = [r.getMessage() for r in caplog.records if r.name == "sinks.influx" and r.levelno == logging.ERROR]
    assert len(ours) == 1 and "1 points not written" in ours[0], ours
    assert "HTTP 422 partial write" in ours[0] and 'field type conflict: input field "trades"' in ours[0], ours
    got = read_back(influxdb, "bar")
    assert {k[-1]: v["trades"] for k, v in got.items()} == {t: 12, t + 10**9: 13, t + 3 * 10**9: 15}


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


def test_a_backtest_exits_within_max_close_wait_with_the_server_stopped(influxdb, tmp_path):
    """The whole process: ``ticklet backtest`` writing to a stopped server,
    close-wait 2 s and default retries. It exits at most a second or so after
    the sink's close gave up (before: still running after 150 s)."""
    influxdb.stop()
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("TICKLET_")}
    env.update(influxdb.env(), TICKLET_INFLUX__MAX_CLOSE_WAIT_MS="2000")
    rec = Path(__file__).parent / "data" / "binance-ws" / "spot" / "btcusdt_20230405.dat.gz"
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from ticklet.cli import main; sys.exit(main())",
                             "backtest", str(rec), "--out", str(tmp_path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the backtest did not exit within 240 s")
    exited = time.time()
    assert proc.returncode == 0, err[-2000:]
    line = next((ln for ln in err.splitlines() if "influx: closed after" in ln), None)
    assert line, err[-2000:]
    took = float(re.search(r"closed after ([\d.]+) s", line).group(1))
    assert took < 3.0, line
    m = re.search(r"(\d+) points not written", line)
    assert m and int(m.group(1)) > 0, line
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    assert exited - stamp < 4.0, (exited - stamp, line)  # no retry thread holds the exit


def test_the_token_is_never_logged(caplog, monkeypatch):
    secret = "s3cr3t-t0ken-value"
    monkeypatch.setenv("TICKLET_INFLUX__TOKEN", secret)
    from ticklet.settings import Settings

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
    import json

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

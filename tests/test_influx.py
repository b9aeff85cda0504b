"""The InfluxDB sink against a real server that speaks the InfluxDB v2 write
API (VictoriaMetrics), on the real recordings."""

from __future__ import annotations

import json
import logging
import math
import time

import pytest
from realdata import csv_dicts, run_chain

from sinks.influx import InfluxConfig, InfluxWriter
from sinks.influx_points import MEASUREMENTS, to_point
from ticklet.cli import run_backtest
from ticklet.events import Bar

MS = 1_000_000


def close(a: float, b: float) -> bool:
    """VictoriaMetrics keeps about 12 significant digits."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


def _series(export: dict, name: str) -> dict[tuple, dict[int, float]]:
    return {labels: points for (n, labels), points in export.items() if n == name}


@pytest.fixture
def influx_run(victoria, ws_dir, tmp_path, monkeypatch):
    """The forecast dataflow on the spot BTCUSDT 2024 recordings, writing to
    the server."""
    monkeypatch.setenv("TICKLET_OUTPUT__INFLUX", "true")
    monkeypatch.setenv("TICKLET_INFLUX__URL", victoria.url)
    monkeypatch.setenv("TICKLET_INFLUX__TOKEN", "test-token")
    files = [str(ws_dir / "spot" / f) for f in ("btcusdt_20240808.gz", "btcusdt_20240809.gz")]

    def run(name: str):
        out = tmp_path / name
        summary = run_backtest(files, out)
        return summary, out

    return run


def test_every_record_is_written_with_event_time(victoria, influx_run):
    summary, out = influx_run("a")
    exp = victoria.export()
    rows = csv_dicts(out / "forecasts.csv")
    pred = _series(exp, "scored_pred_return")
    real = _series(exp, "scored_realized_return")
    assert sum(len(v) for v in pred.values()) == len(rows) == summary["forecasts"] > 0
    for r in rows:
        labels = (("horizon", r["horizon"]), ("instrument", r["instrument"]), ("model", r["model"]))  # sorted
        t = int(r["ts_target"]) // MS  # scored forecasts sit at their target time
        assert close(pred[labels][t], float(r["pred_return"]))
        assert close(real[labels][t], float(r["realized_return"]))
    # issued forecasts: at least every scored one, same prediction
    issued = _series(exp, "forecast_pred_return")
    for labels, pts in pred.items():
        assert all(close(issued[labels][t], v) for t, v in pts.items())
    # metrics: the last row of each model/horizon
    last = {}
    for r in csv_dicts(out / "metrics.csv"):
        last[(r["horizon"], r["model"], r["instrument"])] = r
    n = _series(exp, "metrics_n")
    for (h, m, s), r in last.items():
        assert n[(("horizon", h), ("instrument", s), ("model", m))][int(r["ts_target"]) // MS] == int(r["n"])
    # bars and the configured features
    bars = _series(exp, "bar_price")
    assert sum(len(v) for v in bars.values()) == summary["bars"]
    for f in InfluxConfig().features:
        assert sum(len(v) for v in _series(exp, f"features_{f}").values()) > 0, f
    # the decision layer: signals, positions (at each fill) and equity, as in the files
    rows = csv_dicts(out / "equity.csv")
    eq = _series(exp, "equity_equity")
    assert sum(len(v) for v in eq.values()) == len(rows) > 0
    for r in rows[::97]:
        labels = (("horizon", r["horizon"]), ("instrument", r["instrument"]), ("model", r["model"]))
        assert close(eq[labels][int(r["ts_recv"]) // MS], float(r["equity"]))
    assert sum(len(v) for v in _series(exp, "position_position").values()) == len(csv_dicts(out / "trades.csv"))
    n_signals = sum(len(v) for v in _series(exp, "signal_target_position").values())
    assert n_signals == len(csv_dicts(out / "signals.csv"))
    # health: final totals
    ticks = _series(exp, "health_ticks_total")
    assert max(v for pts in ticks.values() for v in pts.values()) == summary["ticks"]
    assert all(v == 0 for pts in _series(exp, "health_dead_letters_total").values() for v in pts.values())


def test_a_replay_overwrites_identical_points(victoria, influx_run):
    influx_run("a")
    first = {k: v for k, v in victoria.export().items() if not k[0].startswith("health_")}
    influx_run("b")
    second = {k: v for k, v in victoria.export().items() if not k[0].startswith("health_")}
    assert first.keys() == second.keys() and len(first) > 30
    for k, pts in first.items():  # the same points, no new ones (values to VictoriaMetrics' precision)
        assert pts.keys() == second[k].keys(), k
        assert all(close(v, second[k][t]) for t, v in pts.items()), k


def _bar_points(ws_dir, n: int):
    chain = run_chain([ws_dir / "spot" / "btcusdt_20240808.gz", ws_dir / "spot" / "btcusdt_20240809.gz"])
    bars = [b for b in chain.bar_out if type(b) is Bar][:n]
    assert len(bars) == n
    return bars, [to_point(b) for b in bars]


def _wait(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_outage_keeps_points_within_the_bound_and_counts_the_rest(victoria, ws_dir):
    bars, points = _bar_points(ws_dir, 620)
    w = InfluxWriter(InfluxConfig(url=victoria.url, batch_size=50, flush_interval_ms=50, retry_interval_ms=100,
                                  max_retry_delay_ms=400, max_retries=1000, max_retry_time_ms=120_000,
                                  max_buffered_points=200))
    w.write(points[:120])
    _wait(lambda: w.stats["written"] == 120)
    victoria.stop()  # the server goes down mid-run
    for i in range(120, 620, 25):  # the dataflow keeps writing; nothing blocks
        w.write(points[i : i + 25])
    s = w.stats
    assert s["pending"] == 200 and s["dropped"] == 300 and s["written"] == 120
    victoria.start()  # back up: the pending points are retried in
    w.close()
    s = w.stats
    assert s == {"written": 320, "dropped": 300, "failed": 0, "pending": 0}
    stored = _series(victoria.export(), "bar_price")
    times = sorted(t for pts in stored.values() for t in pts)
    assert times == [b.ts_end // MS for b in bars[:320]]  # the first 320: nothing within the bound lost


def test_the_token_is_never_logged(ws_dir, caplog, monkeypatch):
    secret = "s3cr3t-t0ken-value"
    monkeypatch.setenv("TICKLET_INFLUX__TOKEN", secret)
    from ticklet.settings import Settings

    s = Settings()
    assert secret not in repr(s) and secret not in str(s.influx) and secret not in s.model_dump_json()
    _, points = _bar_points(ws_dir, 20)
    caplog.set_level(logging.DEBUG)
    # Nobody listens on port 9: every batch fails after its retries, and is counted.
    w = InfluxWriter(s.influx.model_copy(update={"url": "http://127.0.0.1:9", "retry_interval_ms": 10,
                                                 "max_retry_delay_ms": 20, "max_retry_time_ms": 300,
                                                 "flush_interval_ms": 10}))
    w.write(points)
    w.close()
    assert w.stats["failed"] == 20 and w.stats["written"] == 0
    assert "failed after retries" in caplog.text
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

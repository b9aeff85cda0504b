"""The run manifest (``run.json``), the features file (``features.csv``) and
the HTML report (``ticklet report``) of a real backtest over every bundled
recording (their order books: every recording but the spot one of
2023-04-05 has a REST snapshot), opened in a real headless
Chromium (Debian's ``chromium``, driven over the DevTools protocol:
:mod:`cdp`): no console error, no request off the machine, every plot drawn
with its traces, and a full-page screenshot that is not blank."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from cdp import Browser, png_size
from pydantic import SecretStr

from core.config import ConfigError
from core.events import market_of
from sinks.output_config import FEATURE_COLUMNS
from ticklet.report import MAX_POINTS, NoRunError, build_report, cost_curve

#: bayes_linear gives predictive intervals (the coverage plot), logistic a p_up of its own
MODELS = ("naive", "linear", "logistic", "bayes_linear")
INSTRUMENTS = ("BTCUSDT", "BTCUSDT-PERP", "ETHUSDT")
KINDS = {"price", "hit_rate", "dm", "calibration", "coverage", "equity", "cost", "features"}
SECRET = "s3cret-influx-token"
SCREENSHOT_COPY = Path("/tmp/ticklet_report_screenshot.png")  # for the engineers to look at


@pytest.fixture(scope="module")
def run(ws_dir, tmp_path_factory):
    """A backtest over every recording with an interval model among the default ones, a secret set and
    features.csv on (TICKLET_OUTPUT__FEATURES=true): (summary, out_dir)."""
    from dataflows.settings import Settings
    from ticklet.backtest import run_backtest

    s = Settings()
    base = s.model_copy(update={"forecast": s.forecast.model_copy(update={"models": MODELS}),
                                "influx": s.influx.model_copy(update={"token": SecretStr(SECRET)}),
                                "output": s.output.model_copy(update={"features": FEATURE_COLUMNS})})
    out = tmp_path_factory.mktemp("report_run")
    return run_backtest([str(ws_dir)], out, base=base), out


@pytest.fixture(scope="module")
def report(run, tmp_path_factory) -> Path:
    _, out = run
    return build_report(out, tmp_path_factory.mktemp("report") / "report.html")


# What every plot drew, once Plotly has drawn them all: per plot its figure's kind and instrument, the traces
# in its data and, per trace in the plot area, whether a line, a fill or points were drawn.
_INSPECT = """(async () => {
  const plots = () => Array.from(document.querySelectorAll('.js-plotly-plot'));
  const drawn = d => d._fullLayout && d.querySelector('.main-svg')
    && d.querySelectorAll('.cartesianlayer .trace').length
    && Math.abs(d._fullLayout.width - d.getBoundingClientRect().width) <= 2;  // fitted to its box
  for (const t0 = Date.now(); Date.now() - t0 < 30000 && !(plots().length && plots().every(drawn));) {
    await new Promise(r => setTimeout(r, 100));
  }
  const long = el => (el.getAttribute('d') || '').length > 10;
  return plots().map(d => {
    const fig = d.closest('figure'), box = d.getBoundingClientRect();
    return {
      id: d.id, kind: fig.dataset.kind, instrument: fig.dataset.instrument,
      svgs: d.querySelectorAll('.main-svg').length, width: box.width, height: box.height,
      drawn_width: d._fullLayout.width, figure_width: fig.getBoundingClientRect().width,
      data: d.data.length, visible: d._fullData.filter(t => t.visible === true).length,
      longest: Math.max(...d._fullData.map(t => (t.x && t.x.length) || 0)),
      traces: Array.from(d.querySelectorAll('.cartesianlayer .trace')).map(g => ({
        line: Array.from(g.querySelectorAll('path.js-line')).some(long),
        fill: Array.from(g.querySelectorAll('path.js-fill')).some(long),
        points: g.querySelectorAll('.point').length})),
    };
  });
})()"""

# The screenshot, decoded by the browser and scaled down: the share of pixels that are not white and the
# number of distinct colours (4 bits a channel).
_PIXELS = """(async () => {
  const img = new Image(); img.src = 'data:image/png;base64,%s'; await img.decode();
  const w = 350, h = Math.round(img.height * w / img.width);
  const c = document.createElement('canvas'); c.width = w; c.height = h;
  const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0, w, h);
  const px = ctx.getImageData(0, 0, w, h).data;
  let other = 0; const colours = new Set();
  for (let i = 0; i < px.length; i += 4) {
    if (px[i] < 235 || px[i + 1] < 235 || px[i + 2] < 235) other++;
    colours.add((px[i] >> 4) << 8 | (px[i + 1] >> 4) << 4 | px[i + 2] >> 4);
  }
  return {width: img.width, height: img.height, not_white: other / (w * h), colours: colours.size};
})()"""


@pytest.fixture(scope="module")
def browsed(report, chromium, tmp_path_factory):
    """The report opened in headless Chromium: what the page logged and
    requested, what the plots drew, its table rows, and a full-page screenshot."""
    import base64

    shot = tmp_path_factory.mktemp("screenshot") / "report.png"
    with Browser(chromium, width=1400, height=1000) as b:
        page = b.open(report.as_uri())
        plots = page.evaluate(_INSPECT, timeout=60)
        rows = page.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('table.results')).map("
                             "t => [t.dataset.instrument, t.querySelectorAll('tbody tr').length]))")
        png = page.screenshot(shot)
        errors, requests = page.errors, page.requests
        pixels = page.evaluate(_PIXELS % base64.b64encode(png).decode(), timeout=60)
    shutil.copy(shot, SCREENSHOT_COPY)
    return {"plots": plots, "rows": rows, "png": png, "shot": shot, "errors": errors, "requests": requests,
            "pixels": pixels}


# ---------------------------------------------------------------------------
# run.json


def test_the_manifest_names_the_inputs_the_config_and_its_hash(run, ws_dir):
    _, out = run
    m = json.loads((out / "run.json").read_text())
    assert set(m) == {"ticklet_version", "inputs", "config", "config_hash"}
    assert m["inputs"] == [str(ws_dir)]
    assert m["config"]["input"]["paths"] == [str(ws_dir)]
    assert tuple(m["config"]["forecast"]["models"]) == MODELS
    canonical = json.dumps(m["config"], sort_keys=True, separators=(",", ":"))
    assert m["config_hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    from importlib.metadata import version

    assert m["ticklet_version"] == version("ticklet")


def test_the_manifest_redacts_secrets(run, report):
    _, out = run
    text = (out / "run.json").read_text()
    assert SECRET not in text
    assert json.loads(text)["config"]["influx"]["token"] == "**********"
    assert SECRET not in report.read_text()


def test_the_manifest_is_the_same_for_the_same_settings(run, tmp_path):
    """No wall-clock time in it: building the flow again rewrites the same bytes."""
    from dataflows.forecast import build_flow
    from dataflows.settings import Settings

    _, out = run
    m = json.loads((out / "run.json").read_text())
    s = Settings.model_validate(m["config"] | {"output": {**m["config"]["output"], "dir": str(tmp_path)}})
    s = s.model_copy(update={"influx": s.influx.model_copy(update={"token": SecretStr(SECRET)})})
    build_flow(s)
    first = (tmp_path / "run.json").read_bytes()
    build_flow(s)
    assert (tmp_path / "run.json").read_bytes() == first
    again = json.loads(first)
    assert again["config"] == {**m["config"], "output": {**m["config"]["output"], "dir": str(tmp_path)}}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind


# ---------------------------------------------------------------------------
# the HTML file


class _Refs(HTMLParser):
    """Every tag's URL attributes, and the scripts' sizes (a script's body is not parsed for tags)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.scripts: list[int] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [(tag, v or "") for k, v in attrs if k in ("src", "href", "data", "poster", "srcset")]
        if tag == "script":
            self._in_script = True
            self.scripts.append(0)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += len(data)


def test_the_html_is_self_contained(report):
    import plotly.offline

    text = report.read_text()
    refs = _Refs()
    refs.feed(text)
    external = [(tag, url) for tag, url in refs.urls if not url.startswith("#")]
    assert external == []  # no script, stylesheet, image or link to fetch; only in-page anchors
    assert "@import" not in text.split("<script", 1)[0]  # nor in the style sheet
    head = plotly.offline.get_plotlyjs()[:40]  # "/**\n* plotly.js v4.1.1 ..."
    assert text.count(head) == 1  # plotly.js embedded once
    assert sum(n > 1_000_000 for n in refs.scripts) == 1
    assert len(refs.scripts) == 2 + 3 * len(KINDS)  # the library, one short script per plot, one to fit them


def test_the_html_has_the_run_header_and_a_table_per_instrument(run, report):
    summary, out = run
    text = report.read_text()
    m = json.loads((out / "run.json").read_text())
    assert m["config_hash"] in text and m["ticklet_version"] in text
    assert "<details>" in text and "&quot;bayes_linear&quot;" in text  # the configuration (escaped), collapsed
    assert 'id="no-manifest"' not in text
    assert "2023-04-04" in text and "2024-08-09" in text  # the time range of the data
    for inst in INSTRUMENTS:
        assert f'<table class="results" data-instrument="{inst}">' in text
        for model in MODELS:
            n = summary["instruments"][inst]["models"][model]["1"]["n"]
            assert f"<td>{n:,}</td>" in text


def test_the_same_run_gives_the_same_html(run, report, tmp_path):
    _, out = run
    again = build_report(out, tmp_path / "again.html")
    assert again.read_bytes() == report.read_bytes()


def test_an_output_dir_without_a_manifest_says_so(run, tmp_path):
    _, out = run
    old = tmp_path / "old_run"
    shutil.copytree(out, old, ignore=shutil.ignore_patterns("run.json", "*.html"))
    text = build_report(old).read_text()
    assert (old / "report.html").exists()
    assert 'id="no-manifest"' in text and "unknown (no run.json)" in text
    assert text.count('class="plot"') == 3 * len(KINDS)


def test_a_directory_that_is_no_run_raises(tmp_path):
    with pytest.raises(NoRunError, match="no such directory"):
        build_report(tmp_path / "missing")
    with pytest.raises(NoRunError, match="no forecasts.csv"):
        build_report(tmp_path)


# ---------------------------------------------------------------------------
# the numbers behind the plots


def test_the_hit_rule_of_the_plot_is_that_of_the_metrics(run):
    """Over the whole run, the rolling plot's rule (sign right on a realized non-zero move; a zero forecast
    misses) gives exactly the reported hit rate."""
    summary, out = run
    hits, moves = Counter(), Counter()
    with open(out / "forecasts.csv", newline="") as f:
        for r in csv.DictReader(f):
            real, pred = float(r["realized_return"]), float(r["pred_return"])
            if real != 0.0:
                key = (r["instrument"], r["model"], r["horizon"])
                moves[key] += 1
                hits[key] += pred * real > 0.0
    for (inst, model, h), n in moves.items():
        m = summary["instruments"][inst]["models"][model][h]
        assert m["n_directional"] == n
        assert m["hits"] == hits[(inst, model, h)]


def test_the_cost_line_of_every_book_goes_through_its_actual_net_return(run):
    """net(c) = gross - c x turnover, at the cost each book paid per side, is its net return; its zero is the
    break-even cost of the economics; what it paid is at least the fee plus the slippage."""
    summary, out = run
    m = json.loads((out / "run.json").read_text())
    ex = m["config"]["execution"]
    traded = 0
    for inst, books in summary["economics"].items():
        fee = ex[f"{market_of(inst)}_fee_bps"] + ex["slippage_bps"]
        for hs in books.values():
            for e in hs.values():
                c = cost_curve(e, ex["initial_equity"])
                if c is None:
                    assert e["turnover"] == 0.0
                    continue
                traded += 1
                assert abs(c["deviation"]) < 1e-12
                assert c["break_even_bps"] == pytest.approx(e["break_even_bps"], rel=1e-9, abs=1e-12)
                assert fee - 1e-9 <= c["paid_bps"] < fee + 10.0  # plus half the spread
    assert traded >= 3 * 7  # 4 models x 2 horizons less naive, and buy_and_hold, per instrument


# --- the books of every market

#: Each market's fee set apart (bps), and the slippage.
MARKET_FEES = {"spot_fee_bps": 10.0, "usdm_fee_bps": 3.0, "coinm_fee_bps": 7.0, "slippage_bps": 1.0}


def _renamed(src: Path, dst: Path, old: str, new: str) -> Path:
    """The real lines of ``src``, of symbol ``old``, under the symbol ``new``."""
    from harness.realdata import lines, write_gz

    o, n = old.encode(), new.encode()
    return write_gz(dst, [ln.replace(o.lower() + b"@", n.lower() + b"@").replace(b'"s":"%s"' % o, b'"s":"%s"' % n)
                          for ln in lines(src)])


@pytest.fixture(scope="module")
def markets_run(ws_dir, tmp_path_factory):
    """A backtest of an instrument of every kind, the fees of each market set
    apart (MARKET_FEES): spot BTCUSDT, the USD-M perpetual BTCUSDT-PERP and
    delivery contract BTCUSDT_250328, the COIN-M perpetual BTCUSD_PERP and
    delivery contract BTCUSD_211231 (real recordings; a delivery contract's
    are its perpetual's lines under its symbol), and its report:
    (summary, out_dir, report)."""
    from dataflows.settings import Settings
    from harness.realdata import REPO
    from ticklet.backtest import run_backtest

    tmp = tmp_path_factory.mktemp("markets")
    usdm = ws_dir / "usdm" / "btcusdt_20230405.dat.gz"
    coinm = REPO / "tests" / "data" / "fixtures" / "hftbacktest" / "cm" / "btcusd_perp_20240808.gz"
    paths = [ws_dir / "spot" / "btcusdt_20230405.dat.gz", usdm,
             _renamed(usdm, tmp / "in" / "usdm" / "btcusdt_250328.gz", "BTCUSDT", "BTCUSDT_250328"), coinm,
             _renamed(coinm, tmp / "in" / "cm" / "btcusd_211231.gz", "BTCUSD_PERP", "BTCUSD_211231")]
    s = Settings()
    base = s.model_copy(update={"execution": s.execution.model_copy(update=MARKET_FEES)})
    summary = run_backtest([str(p) for p in paths], tmp / "out", base=base)
    return summary, tmp / "out", build_report(tmp / "out")


@pytest.mark.integration  # slow: a whole run of an instrument of every market, about 5 s
def test_each_book_is_drawn_against_the_fee_of_its_market(markets_run):
    """Issue 23: the report chose the fee by a ``-PERP`` ending, so USD-M
    delivery and COIN-M contracts got spot's (11 bps here, fee and
    slippage). Each instrument's cost plot now draws its market's
    (:func:`core.events.market_of`), which every book paid (plus at most
    half the spread). COIN-M books are kept in the coin: their cost line and
    equity curve are measured against their capital in the coin (it was the
    USD of the configuration: 0 bps paid, -100%), so that the line goes
    through the book's net return and the curve ends at it."""
    from ticklet.report import _load

    summary, out, report = markets_run
    run = _load(out)
    fees = {i: MARKET_FEES[f"{market_of(i)}_fee_bps"] + MARKET_FEES["slippage_bps"] for i in summary["economics"]}
    assert fees == {"BTCUSDT": 11.0, "BTCUSDT-PERP": 4.0, "BTCUSDT_250328": 4.0, "BTCUSD_PERP": 8.0,
                    "BTCUSD_211231": 8.0}
    traded = 0
    for inst, fee in fees.items():
        assert run.fee_bps(inst) == fee
        for model, hs in summary["economics"][inst].items():
            for h, e in hs.items():
                key = (inst, model, int(h))
                init = run.initial_equity(inst, key)
                assert run.equity.get(key, "equity")[-1] / init - 1.0 == pytest.approx(e["net_return"], abs=1e-12)
                c = cost_curve(e, init)
                if c is None:
                    continue
                traded += 1
                assert abs(c["deviation"]) < 1e-12
                assert fee - 1e-9 <= c["paid_bps"] < fee + 10.0
    assert traded >= 5 * 5
    html = report.read_text()
    for fee in set(fees.values()):
        assert html.count(f"fee + slippage {fee:g} bps (+ half spread)") == list(fees.values()).count(fee)


def test_the_report_reads_the_summary_of_the_backtest(run):
    """The report reads the last metrics and economics with pyarrow (a long run has a metrics row per
    forecast); it gets what :func:`sinks.report.summarize` gets."""
    from sinks.report import summarize
    from ticklet.report import _summary

    summary, out = run
    mine, theirs = _summary(out), summarize(out)
    assert mine["instruments"] == theirs["instruments"] == summary["instruments"]
    assert mine["economics"] == theirs["economics"] == summary["economics"]
    assert mine["counters"] == theirs["counters"]


def test_calibration_bins_hold_every_joined_forecast(run):
    from ticklet.report import _calibration, _load

    _, out = run
    r = _load(out)
    c = _calibration(r, ("BTCUSDT", "logistic", 1), 10)
    assert c is not None
    f = r.forecasts
    moves = int((f.get(("BTCUSDT", "logistic", 1), "realized_return") != 0.0).sum())
    assert c["n"].sum() == moves  # every decision has its forecast, every non-zero move is binned
    assert len(c["n"]) == 10 and c["n"].min() >= moves // 10 - 1  # equal counts
    assert ((c["freq"] >= 0) & (c["freq"] <= 1) & (c["lo"] <= c["freq"]) & (c["freq"] <= c["hi"])).all()
    assert _calibration(r, ("BTCUSDT", "naive", 1), 10) is None  # a constant p_up: nothing to calibrate


# --- the features: features.csv and its plot

#: The recordings of each instrument, as the dataflow reads them.
_FILES = {"BTCUSDT": ("spot", "btcusdt_"), "ETHUSDT": ("spot", "ethusdt_"), "BTCUSDT-PERP": ("usdm", "btcusdt_")}


def test_features_csv_holds_the_rows_the_operators_compute(run, ws_dir):
    """features.csv has a row per instrument and bar once its features are ready, and in it exactly the
    features that the operators alone (no dataflow) compute on the recordings: a depth feature missing from
    a row (the spot BTCUSDT recording of 2023-04-05 has no REST snapshot: no book) is an empty cell, never
    a zero."""
    from harness.realdata import run_chain

    _, out = run
    with open(out / "features.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["instrument", "ts_end", *FEATURE_COLUMNS]
    got = {(r[0], int(r[1])): [float(v) if v else None for v in r[2:]] for r in rows[1:]}  # floats read back exactly
    assert len(got) == len(rows) - 1
    want = {}
    for inst, (market, prefix) in _FILES.items():
        chain = run_chain(sorted((ws_dir / market).glob(f"{prefix}*")))
        for r in chain.rows:
            if r.ready:
                want[(inst, r.ts_end)] = [r.x.get(c) for c in FEATURE_COLUMNS]
    assert got == want
    empty = Counter(k[0] for k, v in got.items() if v[FEATURE_COLUMNS.index("depth_imb_5")] is None)
    assert empty["BTCUSDT"] > 300 and empty["ETHUSDT"] == empty["BTCUSDT-PERP"] == 0, empty
    assert all(v[FEATURE_COLUMNS.index("ofi")] != "" for v in got.values())  # a top-of-book feature: always


def test_the_features_plot_draws_features_csv_with_its_gaps(run):
    """Each trace of an instrument's features plot is its column of features.csv, thinned to at most
    MAX_POINTS points that keep each stretch's extremes; where the feature is missing (the 2023 spot
    BTCUSDT recording: no book) the line breaks (a NaN) instead of joining across, and the legend says how
    much is missing."""
    from ticklet.report import _features_plot, _load, _stretches

    _, out = run
    r = _load(out)
    assert r.features is not None and r.features_columns == list(FEATURE_COLUMNS)
    for inst in INSTRUMENTS:
        cols = r.features[inst]
        fig, why, absent = _features_plot(r, inst, _stretches(r, inst)[1], MAX_POINTS)
        assert fig is not None and why == "" and absent == [], (inst, why)
        assert [t.name.split(" ")[0] for t in fig.data] == list(FEATURE_COLUMNS)
        t_ms = cols["ts_end"] / 1e6
        for trace in fig.data:
            name = trace.name.split(" ")[0]
            y, x = np.asarray(trace.y, dtype=float), np.asarray(trace.x, dtype=float)
            full = cols[name]
            idx = np.searchsorted(t_ms, x)
            assert len(x) <= MAX_POINTS and (t_ms[idx] == x).all()
            assert np.array_equal(y, full[idx], equal_nan=True)  # the file's values at those bars
            assert np.nanmax(y) == np.nanmax(full) and np.nanmin(y) == np.nanmin(full)
            missing = np.isnan(full)
            assert np.isnan(y).any() == missing.any(), (inst, name)
            assert ("missing" in trace.name) == missing.any(), trace.name
            if inst == "BTCUSDT" and name.startswith("depth_imb"):
                assert 0.3 < missing.mean() < 0.5  # the 2023 recording's bars, out of both years'


def test_the_report_without_features_csv_says_how_to_get_it(run, tmp_path):
    """A run without TICKLET_OUTPUT__FEATURES (the default) writes no features.csv; its report has no
    features plot, and says, per instrument, how to get one."""
    _, out = run
    old = tmp_path / "no_features"
    shutil.copytree(out, old, ignore=shutil.ignore_patterns("features.csv", "*.html"))
    text = build_report(old).read_text()
    assert 'data-kind="features"' not in text
    assert text.count('<p class="note" data-missing="features">No features plot: the run wrote no features.csv '
                      "(TICKLET_OUTPUT__FEATURES=true") == len(INSTRUMENTS)
    assert text.count('class="plot"') == len(INSTRUMENTS) * (len(KINDS) - 1)


def test_an_instrument_whose_book_was_never_ready_has_no_depth_in_its_plot(ws_dir, tmp_path):
    """The spot recording without a REST snapshot: its depth features are all missing. With a top-of-book
    feature asked for too, the plot draws that one and its caption names the depth features that have no
    value; with only depth features (features.csv without the ofi column: what a run asking for those
    writes, the same rows), no plot, and a note saying why."""
    from dataflows.settings import Settings
    from ticklet.backtest import run_backtest

    s = Settings()
    out = tmp_path / "run"
    run_backtest([str(ws_dir / "spot" / "btcusdt_20230405.dat.gz")], out,
                 base=s.model_copy(update={"output": s.output.model_copy(
                     update={"features": ("depth_imb_5", "ofi_int", "ofi")})}))
    with open(out / "features.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["instrument", "ts_end", "depth_imb_5", "ofi_int", "ofi"] and len(rows) > 300
    assert all(r[2] == r[3] == "" and r[4] != "" for r in rows[1:])
    text = build_report(out).read_text()
    assert text.count('data-kind="features"') == 1 and 'data-missing="features"' not in text
    assert "No value at all of depth_imb_5, ofi_int here: the book was never ready." in text
    with open(out / "features.csv", "w", newline="") as f:
        csv.writer(f).writerows(r[:4] for r in rows)
    text = build_report(out).read_text()
    assert 'data-kind="features"' not in text
    assert ('data-missing="features">No features plot: features.csv holds no value of BTCUSDT&#x27;s '
            "depth_imb_5, ofi_int (its order book was never ready") in text


def test_features_csv_takes_true_or_names_and_refuses_a_name_that_is_no_feature(tmp_path):
    """TICKLET_OUTPUT__FEATURES=true is the default set; a name that is no feature of the rows is one line
    (ConfigError: exit status 2) before anything runs, naming the setting and the name."""
    from dataflows.forecast import build_flow
    from dataflows.settings import Settings
    from sinks.output_config import OutputConfig

    assert OutputConfig(features=True).features == FEATURE_COLUMNS and OutputConfig(features=False).features == ()
    assert {"depth_imb_5", "ofi_int"} <= set(FEATURE_COLUMNS) and OutputConfig().features == ()
    s = Settings()
    bad = s.model_copy(update={"output": s.output.model_copy(update={"dir": tmp_path,
                                                                     "features": ("depth_imb_5", "depth_imb_7")})})
    with pytest.raises(ConfigError, match=r"^TICKLET_OUTPUT__FEATURES: 'depth_imb_7' is no feature of the rows; "
                                          r"they have ret_1, .*depth_imb_5"):
        build_flow(bad)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# in the browser


@pytest.mark.integration  # a headless chromium
def test_the_browser_check_sees_errors_and_requests(chromium, tmp_path):
    """The checks below can fail: a page that logs an error, throws, and asks for a remote script is caught
    at all three."""
    page_file = tmp_path / "bad.html"
    page_file.write_text('<html><head><script src="http://127.0.0.1:9/x.js"></script></head><body><script>'
                         'console.error("boom"); setTimeout(() => { throw new Error("bang"); }, 0);</script>'
                         "</body></html>")
    with Browser(chromium) as b:
        page = b.open(page_file.as_uri())
        page.evaluate("new Promise(r => setTimeout(r, 200))")
        errors, requests = page.errors, page.requests
    assert any("boom" in e for e in errors) and any("bang" in e for e in errors)
    assert "http://127.0.0.1:9/x.js" in requests


@pytest.mark.integration  # a headless chromium
def test_the_page_logs_no_error_and_fetches_nothing(browsed, report):
    assert browsed["errors"] == []
    assert browsed["requests"] == [report.as_uri()]


@pytest.mark.integration  # a headless chromium
def test_every_plot_is_drawn_with_all_its_traces(browsed):
    plots = browsed["plots"]
    kinds = Counter((p["instrument"], p["kind"]) for p in plots)
    assert kinds == Counter({(inst, kind): 1 for inst in INSTRUMENTS for kind in KINDS})
    for p in plots:
        where = f"{p['id']}: {p}"
        assert p["svgs"] >= 1 and p["width"] > 300 and p["height"] > 300, where
        assert abs(p["drawn_width"] - p["width"]) <= 2 and p["width"] <= p["figure_width"], where  # fits its box
        assert p["data"] >= 1 and p["visible"] == p["data"], where
        assert len(p["traces"]) == p["data"], where  # every trace has its group in the plot area
        for t in p["traces"]:
            assert t["line"] or t["fill"] or t["points"] > 0, where  # and drew something
        assert 0 < p["longest"] <= MAX_POINTS, where
    by = {(p["instrument"], p["kind"]): p for p in plots}
    for inst in INSTRUMENTS:
        assert by[(inst, "price")]["data"] == 1 + len(MODELS) * 2  # realized, every model at both horizons
        assert by[(inst, "dm")]["data"] == (len(MODELS) - 1) * 2  # naive is the reference, not a line
        assert by[(inst, "hit_rate")]["data"] == 3 * (len(MODELS) - 1) * 2  # band (2) and rate
        assert by[(inst, "coverage")]["data"] == 2  # bayes_linear at both horizons
        assert by[(inst, "equity")]["data"] == 2 * (len(MODELS) * 2 + 2)  # equity and drawdown, baselines too
        assert by[(inst, "features")]["data"] == len(FEATURE_COLUMNS)  # every one has values for each
        points = sum(t["points"] for t in by[(inst, "price")]["traces"])
        assert points >= 8 * 100  # markers of the forecasts in the window


@pytest.mark.integration  # a headless chromium
def test_the_tables_have_a_row_per_model_horizon_and_baseline(browsed):
    assert browsed["rows"] == {inst: len(MODELS) * 2 + 2 for inst in INSTRUMENTS}


@pytest.mark.integration  # a headless chromium
def test_the_screenshot_is_not_blank(browsed):
    png, px = browsed["png"], browsed["pixels"]
    print(f"\nreport screenshot: {browsed['shot']} (copied to {SCREENSHOT_COPY})")
    w, h = png_size(png)
    assert w == 1400 and h > 3 * 2000  # three instruments, a grid of plots each
    assert (px["width"], px["height"]) == (w, h)
    assert len(png) > 300_000
    assert px["not_white"] > 0.05 and px["colours"] > 40
    assert SCREENSHOT_COPY.read_bytes() == png


# ---------------------------------------------------------------------------
# the command line


def _ticklet(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ticklet.cli", *args], capture_output=True, text=True, timeout=300,
                          **kw)


@pytest.mark.integration  # the CLI in a subprocess
@pytest.mark.parametrize("where", ["missing", "empty"])
def test_report_of_a_bad_directory_is_one_line_and_status_2(tmp_path, where):
    d = tmp_path / "nothing here" if where == "missing" else tmp_path
    proc = _ticklet("report", str(d))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"ticklet: {d}: ")
    assert "Traceback" not in proc.stderr


@pytest.mark.integration  # the CLI in a subprocess
def test_report_writes_the_file_and_prints_its_path(run, tmp_path):
    _, out = run
    dest = tmp_path / "sub" / "r.html"
    proc = _ticklet("report", str(out), "-o", str(dest), "--window", "50")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{dest}\n"
    assert dest.stat().st_size > 4_000_000
    assert "(last 50 bars)" in dest.read_text()


@pytest.mark.integration  # the CLI in a subprocess
def test_backtest_with_report(ws_dir, tmp_path):
    """``--report`` writes OUT/report.html; stdout stays one JSON object, which names the report."""
    out = tmp_path / "bt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    proc = _ticklet("backtest", str(ws_dir / "usdm" / "btcusdt_20230404.dat.gz"), "--out", str(out), "--json",
                    "--report", env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["report"] == str(out / "report.html")
    assert (out / "report.html").stat().st_size > 4_000_000
    assert (out / "run.json").exists()
    assert f"ticklet: report {out / 'report.html'}" in proc.stderr


def _results_table_cells(text: str) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """The first results table of a report: its header cells, and per row its cells as (text, class)."""
    import re

    table = text[text.index('<table class="results"'):]
    table = table[:table.index("</table>")]
    head = re.findall(r"<th[^>]*>(.*?)</th>", table)

    def cell(html: str) -> tuple[str, str]:
        m = re.fullmatch(r'<span class="(\w+)">(.*)</span>', html)
        return (m.group(2), m.group(1)) if m else (html, "")

    body = re.findall(r"<tr>(.*?)</tr>", table[table.index("<tbody>"):])
    return head, [[cell(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)] for row in body]


def test_the_results_table_says_what_its_figures_are(ws_dir, tmp_path):
    """The binomial p-value has the terminal summary's name, ``p(binom)``;
    the Sharpe ratio says it is annualized, and over how many bars a year;
    a break-even cost is green only above the cost the book paid (when it
    made money), never beside a book that lost: on this real recording with
    the default costs every book loses, some with a positive break-even."""
    from ticklet.backtest import run_backtest

    out = tmp_path / "run"
    run_backtest([str(ws_dir / "spot" / "btcusdt_20230405.dat.gz")], out)
    text = build_report(out).read_text()
    head, rows = _results_table_cells(text)
    assert "p(hit)" not in text and "p(binom)" in head
    assert "Sharpe (annualized) ± SE" in head
    assert "A = 31,536,000 bars of 1 s a year" in text  # 365 x 86,400 one-second bars (TICKLET_BARS__INTERVAL_MS)
    assert "p(binom): binomial test of the hit rate against a coin" in text
    net, be, paid = (head.index(h) for h in ("net return", "break-even bps", "paid bps"))
    positive_beside_a_loss = 0
    for r in rows:
        if r[be][0] == "–":
            continue
        made_money = float(r[be][0]) > float(r[paid][0])
        assert r[be][1] == ("good" if made_money else "bad"), r
        assert r[net][1] == ("good" if made_money else "bad"), r  # the net return says the same
        positive_beside_a_loss += not made_money and float(r[be][0]) > 0
    assert positive_beside_a_loss > 0  # green before: the case

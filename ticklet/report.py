"""One self-contained HTML report of a run (``ticklet report OUT_DIR``).

:func:`build_report` reads a run's output directory (``forecasts.csv``,
``metrics.csv``, ``signals.csv``, ``equity.csv``, ``economics.csv``,
``features.csv`` where the run wrote it, ``counters.json`` and the manifest
``run.json``) and writes one HTML file
that opens offline: plotly.js is embedded once, nothing is fetched. It holds

- the **run**: inputs, the time range of the data, ticklet's version, the
  configuration (collapsible JSON) and its hash, from ``run.json``; an older
  output directory without it is reported as such;
- per instrument, the **results table**: for every model and horizon the
  last prequential metrics (n, hit rate with its 95% interval, skill, and the
  significance tests where the run has them: binomial, Diebold-Mariano,
  Pesaran-Timmermann, Holm) and the economics of its book (net return,
  Sharpe with its standard error, PSR, DSR, drawdown, trades, break-even and
  paid cost per side);
- per instrument, Plotly **plots**: price and each model's forecast drawn at
  its target time (the last ``window`` bars, with a range slider); the
  rolling hit rate with its Wilson band; the cumulative squared-error gain
  over the zero-return forecast (the Diebold-Mariano picture); the
  calibration of ``p_up``; the rolling coverage of predictive intervals;
  equity and drawdown of every book; each book's net return as a
  function of the cost per side; and, where the run wrote ``features.csv``
  (``TICKLET_OUTPUT__FEATURES``), the **depth features** over time: depth
  imbalance, order-flow imbalance (multi-level and integrated) and the cost
  of walking the book, as the models saw them, with a gap where a feature
  was missing (the instrument's book was not ready).

Long series are thinned to at most ``max_points`` points per trace
(:func:`downsample`, :func:`minmax_indices`, :func:`gap_minmax_indices`), so the file stays small and
the build fast whatever the length of the run. The same output directory
gives the same HTML, byte for byte (no time of generation in it).

>>> from pathlib import Path
>>> try:
...     build_report(Path("no/such/run"))
... except NoRunError as ex:
...     print(ex)
no/such/run: no such directory
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from core.stats import wilson_interval
from core.version import ticklet_version

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_WINDOW", "NoRunError", "build_report", "cost_curve", "downsample", "gap_minmax_indices",
           "minmax_indices", "rolling_mean"]

#: Bars of the price plot by default (``--window``).
DEFAULT_WINDOW = 300
#: Forecasts in the rolling windows of the hit-rate and coverage plots.
ROLLING = 100
#: Most points of one trace.
MAX_POINTS = 2000
#: Equal-count bins of the calibration diagram.
CALIBRATION_BINS = 10

_Key = tuple[str, str, int]
_Gaps = list[list[float]]  # [start, end] in ms
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


class NoRunError(FileNotFoundError):
    """The directory is not a run's output directory (it does not exist, or holds no ``forecasts.csv``)."""


# ---------------------------------------------------------------------------
# numerics (pure)


def rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Means of the full windows of ``w`` consecutive values: element ``i`` covers ``x[i : i + w]``.

    ``len(x) - w + 1`` values; none when ``len(x) < w``.

    >>> rolling_mean(np.array([1.0, 0.0, 1.0, 1.0]), 2).tolist()
    [0.5, 0.5, 1.0]
    """
    if len(x) < w or w < 1:
        return np.empty(0)
    c = np.concatenate(([0.0], np.cumsum(x, dtype=float)))
    return (c[w:] - c[:-w]) / w


def downsample(n: int, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` evenly spaced points of ``n``, the first and the last included.

    >>> downsample(10, 4).tolist()
    [0, 3, 6, 9]
    >>> len(downsample(3, 4))
    3
    """
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max(max_points, 2)).round().astype(np.int64))


def minmax_indices(y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points of ``y`` that keep its shape.

    The minimum and the maximum of each of ``(max_points - 2) // 2`` equal
    buckets, and the first and last point (a drawdown's trough is never
    thinned away).

    >>> y = np.array([0.0, 5.0, 1.0, 2.0, -3.0, 0.0, 0.0, 1.0])
    >>> minmax_indices(y, 4).tolist()
    [0, 1, 4, 7]
    """
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    k = max((max_points - 2) // 2, 1)
    edges = np.linspace(0, n, k + 1).astype(np.int64)
    bucket = np.repeat(np.arange(k), np.diff(edges))
    order = np.lexsort((np.nan_to_num(y), bucket))  # by bucket, then by value
    picks = np.concatenate((order[edges[:-1]], order[edges[1:] - 1], [0, n - 1]))
    return np.unique(picks)


def gap_minmax_indices(y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points of ``y`` that keep its shape and its gaps (NaN).

    :func:`minmax_indices` of the values that are there, and the first NaN
    of each run of them, so that a line drawn through the points breaks
    where values are missing instead of joining across (at most a quarter
    of the points go to the gaps; beyond, gaps are thinned evenly).

    Parameters
    ----------
    y
        The series, NaN where a value is missing.
    max_points
        The most indices returned.

    Returns
    -------
    numpy.ndarray
        Sorted indices into ``y``.

    Examples
    --------
    >>> y = np.array([0.0, 5.0, np.nan, np.nan, 2.0, -3.0, 0.0, 1.0])
    >>> gap_minmax_indices(y, 8).tolist()
    [0, 1, 2, 3, 4, 5, 6, 7]
    >>> gap_minmax_indices(y, 5).tolist()
    [0, 1, 2, 5, 7]
    """
    ok = np.isfinite(y)
    if ok.all() or len(y) <= max_points:
        return minmax_indices(y, max_points) if ok.all() else np.arange(len(y))
    starts = np.flatnonzero(~ok & np.concatenate(([True], ok[:-1])))
    room = max(max_points // 4, 1)
    if len(starts) > room:
        starts = starts[downsample(len(starts), room)]
    there = np.flatnonzero(ok)
    kept = there[minmax_indices(y[there], max_points - len(starts))] if len(there) else np.empty(0, np.int64)
    return np.union1d(kept, starts)


def cost_curve(entry: dict[str, Any], initial_equity: float) -> Optional[dict[str, float]]:
    """A book's net return as a function of the cost per side.

    A book that traded ``turnover x initial_equity`` (value at the mid) and
    made ``gross_return`` before costs nets ``net(c) = gross_return - c /
    1e4 x turnover`` at a cost of ``c`` bps of the value traded per side.
    The cost it actually paid per side (spread, slippage and fees) is
    ``paid_bps = costs / (turnover x initial_equity) x 1e4``, and ``net(paid_bps)``
    must be its actual ``net_return`` (``deviation`` says by how much it is
    not); the line crosses zero at ``break_even_bps = gross_return /
    turnover x 1e4``. None for a book that never traded.

    >>> c = cost_curve({"gross_return": 0.002, "net_return": -0.05, "costs": 520.0, "turnover": 50.0}, 10_000.0)
    >>> round(c["paid_bps"], 6), round(c["break_even_bps"], 6), round(c["deviation"], 12)
    (10.4, 0.4, 0.0)
    >>> round(c["slope"], 6)  # net return lost per bps of cost
    -0.005
    """
    turnover = entry.get("turnover") or 0.0
    if turnover <= 0.0:
        return None
    gross, net, costs = entry["gross_return"], entry["net_return"], entry["costs"]
    paid = costs / (turnover * initial_equity) * 1e4
    slope = -turnover / 1e4
    return {"gross_return": gross, "net_return": net, "turnover": turnover, "slope": slope, "paid_bps": paid,
            "break_even_bps": gross / turnover * 1e4, "deviation": gross + slope * paid - net}


# ---------------------------------------------------------------------------
# reading the run


@dataclass
class _Csv:
    """A record CSV as numpy columns, its rows grouped by (instrument, model, horizon) and ordered in time.

    The rows are in time order within each group.
    """

    cols: dict[str, np.ndarray]
    groups: dict[_Key, np.ndarray] = field(default_factory=dict)

    def get(self, key: _Key, col: str) -> np.ndarray:
        return self.cols[col][self.groups[key]]


def _read_csv(path: Path, types: dict[str, str], order: str) -> Optional[_Csv]:
    """``path`` as numpy arrays grouped by instrument, model and horizon; None when it is missing or empty.

    Numeric columns become numpy arrays, empty cells NaN.
    """
    import pyarrow as pa
    from pyarrow import csv as pacsv

    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, newline="") as f:
        have = set(f.readline().strip().split(","))
    wanted = {c: t for c, t in types.items() if c in have}
    pa_types = {"s": pa.string(), "i": pa.int64(), "f": pa.float64()}
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={c: pa_types[t] for c, t in wanted.items()}, include_columns=list(wanted)))
    if table.num_rows == 0:
        return None
    cols: dict[str, np.ndarray] = {}
    names: dict[str, list[str]] = {}
    for c, t in wanted.items():
        col = table.column(c)
        if t == "s":
            enc = col.combine_chunks().dictionary_encode()
            cols[c] = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            names[c] = enc.dictionary.to_pylist()
        elif t == "f":
            cols[c] = col.to_numpy().astype(float)  # nulls become NaN
        else:
            cols[c] = col.to_numpy()
    inst, model, h = cols["instrument"], cols["model"], cols["horizon"]
    hs, h_code = np.unique(h, return_inverse=True)
    code = (inst * len(names["model"]) + model) * len(hs) + h_code
    idx = np.lexsort((cols[order], code))
    cuts = np.flatnonzero(np.diff(code[idx])) + 1
    groups = {}
    for part in np.split(idx, cuts):
        j = part[0]
        groups[(names["instrument"][inst[j]], names["model"][model[j]], int(h[j]))] = part
    return _Csv(cols, groups)


_FORECASTS = {"instrument": "s", "model": "s", "horizon": "i", "ts_forecast": "i", "ts_target": "i",
              "pred_return": "f", "pred_price": "f", "realized_return": "f", "realized_price": "f", "error": "f",
              "pred_lo": "f", "pred_hi": "f"}
_SIGNALS = {"instrument": "s", "model": "s", "horizon": "i", "ts_forecast": "i", "p_up": "f"}
_EQUITY = {"instrument": "s", "model": "s", "horizon": "i", "ts_recv": "i", "equity": "f", "gross_equity": "f",
           "drawdown": "f"}


#: Per instrument, ``features.csv``'s columns in time order: ``ts_end`` (ns) and each feature (NaN where missing).
_Features = dict[str, dict[str, np.ndarray]]


def _read_features(path: Path) -> tuple[Optional[_Features], list[str]]:
    """``features.csv`` (``TICKLET_OUTPUT__FEATURES``) per instrument, and its columns; None when the run wrote none."""
    import pyarrow as pa
    from pyarrow import csv as pacsv

    if not path.is_file() or path.stat().st_size == 0:
        return None, []
    with open(path, newline="") as f:
        names = f.readline().strip().split(",")
    types = {c: pa.float64() for c in names} | {"instrument": pa.string(), "ts_end": pa.int64()}
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    enc = table.column("instrument").combine_chunks().dictionary_encode()
    inst = enc.indices.to_numpy(zero_copy_only=False)
    cols = {c: table.column(c).to_numpy().astype(float) if c != "ts_end" else table.column(c).to_numpy()
            for c in names if c != "instrument"}
    out: _Features = {}
    for i, name in enumerate(enc.dictionary.to_pylist()):
        rows = np.flatnonzero(inst == i)
        rows = rows[np.argsort(cols["ts_end"][rows], kind="stable")]
        out[name] = {c: v[rows] for c, v in cols.items()}
    return out, names[2:]


@dataclass
class _Run:
    out_dir: Path
    manifest: Optional[dict[str, Any]]
    summary: dict[str, Any]
    forecasts: Optional[_Csv]
    signals: Optional[_Csv]
    equity: Optional[_Csv]
    features: Optional[_Features] = None
    features_columns: list[str] = field(default_factory=list)  # features.csv's, in its order

    @property
    def config(self) -> dict[str, Any]:
        return (self.manifest or {}).get("config") or {}

    def instruments(self) -> list[str]:
        names: set[str] = set(self.summary["instruments"]) | set(self.summary["economics"])
        for t in (self.forecasts, self.equity):
            if t is not None:
                names |= {k[0] for k in t.groups}
        return sorted(names)

    def initial_equity(self, instrument: str, book: Optional[_Key] = None) -> float:
        """The capital ``book`` started with, in its currency.

        ``book`` is an ``(instrument, model, horizon)``; by default the
        instrument's first. The configuration's ``initial_equity``, in the
        quote currency; a COIN-M book is kept in the coin, and started with
        that many USD worth of the coin at its first mid
        (:mod:`operators.pnl`): its first equity point's ``gross_equity``.
        """
        from core.events import market_of

        v = self.config.get("execution", {}).get("initial_equity")
        if v and market_of(instrument) != "coinm":
            return float(v)
        if self.equity is not None:  # a book is marked at the mid before its first trade costs anything
            groups = self.equity.groups
            for key in ([book] if book in groups else []) + [k for k in groups if k[0] == instrument]:
                return float(self.equity.get(key, "gross_equity")[0])
        from operators.pnl import ExecutionConfig

        return float(v) if v else ExecutionConfig().initial_equity

    def fee_bps(self, instrument: str) -> Optional[float]:
        """Fee plus slippage per side in the configuration, as the books paid it (the spread comes on top).

        The fee is that of the instrument's market (:func:`market_of`:
        ``spot_fee_bps``, ``usdm_fee_bps`` for USD-M perpetuals and delivery
        contracts, ``coinm_fee_bps`` for COIN-M ones).
        """
        from core.events import market_of

        ex = self.config.get("execution")
        if not ex:
            return None
        fee = ex.get(f"{market_of(instrument)}_fee_bps")
        return None if fee is None else float(fee) + float(ex.get("slippage_bps") or 0.0)


def _read_last(path: Path, cls: type) -> list[Any]:
    """The last row of every (instrument, model, horizon) of a record CSV, as its record.

    As :func:`sinks.report.read_last`, read with pyarrow (a long run's
    metrics.csv holds a row per forecast).
    """
    import pyarrow as pa
    from pyarrow import csv as pacsv

    from sinks.summary import record_from_row

    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, newline="") as f:
        names = f.readline().strip().split(",")
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())))
    if table.num_rows == 0:
        return []
    code = np.zeros(table.num_rows, dtype=np.int64)
    for c in ("instrument", "model", "horizon"):
        enc = table.column(c).combine_chunks().dictionary_encode()
        code = code * len(enc.dictionary) + enc.indices.to_numpy(zero_copy_only=False)
    _, first_from_end = np.unique(code[::-1], return_index=True)
    rows = table.take(pa.array(np.sort(table.num_rows - 1 - first_from_end))).to_pylist()
    return [record_from_row(row, cls) for row in rows]


def _summary(out_dir: Path) -> dict[str, Any]:
    """What the report uses of the backtest summary (:func:`sinks.report.summarize`).

    The counters and the last metrics and economics.
    """
    from core.events import EconomicsRecord, MakerEconomicsRecord, MetricsRecord
    from sinks.summary import economics_summary, instruments_summary, maker_summary

    cpath = out_dir / "counters.json"
    taker = _read_last(out_dir / "economics.csv", EconomicsRecord)
    return {"counters": json.loads(cpath.read_text()) if cpath.exists() else {},
            "instruments": instruments_summary(_read_last(out_dir / "metrics.csv", MetricsRecord)),
            "economics": economics_summary(taker),
            "maker": maker_summary(_read_last(out_dir / "maker_economics.csv", MakerEconomicsRecord), taker)}


def _load(out_dir: Path) -> _Run:
    if not out_dir.is_dir():
        raise NoRunError(f"{out_dir}: no such directory")
    if not (out_dir / "forecasts.csv").is_file():
        raise NoRunError(f"{out_dir}: no forecasts.csv (not a run's output directory?)")
    mpath = out_dir / "run.json"
    manifest = json.loads(mpath.read_text()) if mpath.is_file() else None
    return _Run(out_dir, manifest, _summary(out_dir),
                _read_csv(out_dir / "forecasts.csv", _FORECASTS, "ts_target"),
                _read_csv(out_dir / "signals.csv", _SIGNALS, "ts_forecast"),
                _read_csv(out_dir / "equity.csv", _EQUITY, "ts_recv"),
                *_read_features(out_dir / "features.csv"))


# ---------------------------------------------------------------------------
# plots


@dataclass
class _Style:
    """One colour per model and one dash per horizon, the same in every plot."""

    models: list[str]
    horizons: list[int]

    def color(self, model: str, alpha: Optional[float] = None) -> str:
        c = _PALETTE[self.models.index(model) % len(_PALETTE)] if model in self.models else "#444444"
        if alpha is None:
            return c
        r, g, b = (int(c[i:i + 2], 16) for i in (1, 3, 5))
        return f"rgba({r},{g},{b},{alpha})"

    def dash(self, h: int) -> str:
        return _DASHES[self.horizons.index(h) % len(_DASHES)] if h in self.horizons else "solid"


def _ms(ts_ns: np.ndarray) -> np.ndarray:
    """Nanoseconds since the epoch as milliseconds (what a Plotly date axis reads)."""
    return ts_ns / 1e6


def _label(model: str, h: int) -> str:
    return model if h == 0 else f"{model} h={h}"


def _layout(fig: Any, title: str, y_title: str, **kw: Any) -> Any:
    kw.setdefault("hovermode", "x unified")
    fig.update_layout(title={"text": title, "font": {"size": 14}, "x": 0.01, "xanchor": "left"},
                      template="plotly_white", height=430,
                      margin={"l": 60, "r": 20, "t": 50, "b": 40}, legend={"font": {"size": 11}}, **kw)
    fig.layout.yaxis.title.text = y_title  # the first (top) y axis, subplots or not
    return fig


#: Gaps in the data longer than this (ns), and than 30 typical steps, are cut out of the time axes.
GAP_NS = 10 * 60 * 10**9


def _stretches(run: _Run, instrument: str) -> tuple[list[tuple[int, int]], _Gaps]:
    """The stretches of data of ``instrument`` (first and last time, ns), and the gaps between them.

    Stretches are split where nothing came for over :data:`GAP_NS` (and 30
    times the typical step between two times: bars of klines); the gaps come
    as ``[start, end]`` in ms (at most 50, the longest). Time axes skip the
    gaps, so a run over recordings months apart stays readable.
    """
    ts = []
    if run.forecasts is not None:
        ts += [run.forecasts.get(k, "ts_target") for k in _forecast_keys(run, instrument)]
    if run.equity is not None:
        ts += [run.equity.get(k, "ts_recv") for k in _book_keys(run, instrument)]
    if not ts:
        return [], []
    t = np.unique(np.concatenate(ts))
    d = np.diff(t)
    step = float(np.median(d)) if len(d) else 0.0
    big = np.flatnonzero(d > max(GAP_NS, 30 * step))
    starts, ends = np.concatenate(([0], big + 1)), np.concatenate((big, [len(t) - 1]))
    stretches = [(int(t[a]), int(t[b])) for a, b in zip(starts, ends, strict=True)]
    big = np.sort(big[np.argsort(d[big])[::-1][:50]])
    return stretches, [[(t[i] + step / 2) / 1e6, (t[i + 1] - step / 2) / 1e6] for i in big]


def _time_axis(fig: Any, gaps: _Gaps, **kw: Any) -> None:
    """A date axis that skips ``gaps``, each marked by a dotted line (those within the data drawn)."""
    xs = [np.asarray(t.x, dtype=float) for t in fig.data if t.x is not None and len(t.x)]
    lo, hi = min(float(x.min()) for x in xs), max(float(x.max()) for x in xs)
    inside = [g for g in gaps if lo < g[0] and g[1] < hi]
    fig.update_xaxes(type="date", rangebreaks=[{"bounds": g} for g in inside], **kw)
    if inside:  # one update: add_vline per gap is quadratic in the shapes
        marks = [{"type": "line", "xref": "x", "yref": "paper", "x0": g[0], "x1": g[0], "y0": 0, "y1": 1,
                  "line": {"color": "#999", "dash": "dot", "width": 1}} for g in inside]
        fig.update_layout(shapes=[*fig.layout.shapes, *marks])


def _forecast_keys(run: _Run, instrument: str) -> list[_Key]:
    f = run.forecasts
    return sorted(k for k in f.groups if k[0] == instrument) if f is not None else []


def _moves(run: _Run, key: _Key) -> bool:
    """Whether the model ever forecast a non-zero return (the naive one never does)."""
    return bool(np.any(run.forecasts.get(key, "pred_return") != 0.0))  # type: ignore[union-attr]


def _price_plot(run: _Run, instrument: str, style: _Style, gaps: _Gaps, window: int, max_points: int) -> Optional[Any]:
    import plotly.graph_objects as go

    keys = _forecast_keys(run, instrument)
    if not keys:
        return None
    f = run.forecasts
    assert f is not None
    ts = np.concatenate([f.get(k, "ts_target") for k in keys])
    px = np.concatenate([f.get(k, "realized_price") for k in keys])
    bars, first = np.unique(ts, return_index=True)
    prices = px[first]
    t0 = bars[-window] if 0 < window < len(bars) else bars[0]
    keep = bars >= t0
    sel = downsample(int(keep.sum()), max_points)
    fig = go.Figure()
    for k in keys:
        t, p = f.get(k, "ts_target"), f.get(k, "pred_price")
        m = t >= t0
        s = downsample(int(m.sum()), max_points)
        fig.add_trace(go.Scatter(x=_ms(t[m][s]), y=p[m][s], name=_label(k[1], k[2]), mode="lines+markers",
                                 line={"color": style.color(k[1]), "dash": style.dash(k[2]), "width": 1},
                                 marker={"size": 3}))
    fig.add_trace(go.Scatter(x=_ms(bars[keep][sel]), y=prices[keep][sel], name="realized", mode="lines",
                             line={"color": "#111111", "width": 2}, legendrank=1))  # drawn last: on top
    n = int(keep.sum())
    _layout(fig, f"{instrument}: price and forecasts (last {n} bars)", "price")
    _time_axis(fig, gaps, rangeslider={"visible": True, "thickness": 0.08})
    return fig


def _hit_rate_plot(run: _Run, instrument: str, style: _Style, gaps: _Gaps, window: int,
                   max_points: int) -> Optional[Any]:
    import plotly.graph_objects as go

    f = run.forecasts
    models = run.summary["instruments"].get(instrument, {}).get("models", {})
    fig = go.Figure()
    for k in _forecast_keys(run, instrument):
        if not _moves(run, k):
            continue
        r, p, t = f.get(k, "realized_return"), f.get(k, "pred_return"), f.get(k, "ts_target")  # type: ignore[union-attr]
        d = r != 0.0
        hits = (p[d] * r[d] > 0.0).astype(float)
        w = min(window, len(hits))
        rate = rolling_mean(hits, w)
        if len(rate) == 0 or w < 10:
            continue
        x = _ms(t[d][w - 1:])
        entry = models.get(k[1], {}).get(str(k[2]), {})
        n_eff = entry.get("hit_rate_n_eff")  # overlapping targets (h > 1) carry less information
        ratio = min(n_eff / entry["n_directional"], 1.0) if n_eff and entry.get("n_directional") else 1.0
        lo, hi = wilson_interval(rate, w * ratio)
        s = downsample(len(rate), max_points)
        name, grp = _label(k[1], k[2]), f"{k[1]}-{k[2]}"
        fig.add_trace(go.Scatter(x=x[s], y=lo[s], mode="lines", line={"width": 0}, legendgroup=grp, showlegend=False,
                                 name=f"{name} lo", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x[s], y=hi[s], mode="lines", line={"width": 0}, fill="tonexty",
                                 fillcolor=style.color(k[1], 0.15), legendgroup=grp, showlegend=False,
                                 name=f"{name} hi", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x[s], y=rate[s], mode="lines", name=name, legendgroup=grp,
                                 line={"color": style.color(k[1]), "dash": style.dash(k[2])}))
    if not fig.data:
        return None
    fig.add_hline(y=0.5, line={"color": "#888", "dash": "dot"})
    _layout(fig, f"{instrument}: rolling hit rate ({window} moves)", "hit rate")
    _time_axis(fig, gaps)
    return fig


def _dm_plot(run: _Run, instrument: str, style: _Style, gaps: _Gaps, max_points: int) -> Optional[Any]:
    import plotly.graph_objects as go

    f = run.forecasts
    models = run.summary["instruments"].get(instrument, {}).get("models", {})
    fig = go.Figure()
    for k in _forecast_keys(run, instrument):
        if not _moves(run, k):
            continue
        r, e, t = f.get(k, "realized_return"), f.get(k, "error"), f.get(k, "ts_target")  # type: ignore[union-attr]
        gain = np.cumsum(r * r - e * e) * 1e8  # in bp^2
        s = minmax_indices(gain, max_points)
        p = models.get(k[1], {}).get(str(k[2]), {}).get("dm_p_value")
        name = _label(k[1], k[2]) + ("" if p is None else f" (DM p={p:.2g})")
        fig.add_trace(go.Scatter(x=_ms(t[s]), y=gain[s], mode="lines", name=name,
                                 line={"color": style.color(k[1]), "dash": style.dash(k[2])}))
    if not fig.data:
        return None
    fig.add_hline(y=0.0, line={"color": "#888", "dash": "dot"})
    _layout(fig, f"{instrument}: squared-error gain over naive", "Σ (realized² − error²), bp²")
    _time_axis(fig, gaps)
    return fig


def _calibration(run: _Run, key: _Key, bins: int) -> Optional[dict[str, np.ndarray]]:
    """``p_up`` of the signals against the realized direction of the same forecasts, in equal-count bins.

    Only the forecasts of non-zero moves count.
    """
    f, sg = run.forecasts, run.signals
    if f is None or sg is None or key not in sg.groups:
        return None
    st, pu = sg.get(key, "ts_forecast"), sg.get(key, "p_up")
    ft, r = f.get(key, "ts_forecast"), f.get(key, "realized_return")
    if len(st) == 0:
        return None
    j = np.minimum(np.searchsorted(st, ft), len(st) - 1)
    ok = (st[j] == ft) & (r != 0.0)
    p, up = pu[j][ok], (r[ok] > 0.0).astype(float)
    ok = ~np.isnan(p)
    p, up = p[ok], up[ok]
    if len(p) < bins or len(np.unique(p)) < 2:  # no probability to speak of (a constant 0.5)
        return None
    edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, bins + 1)))
    b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    n = np.bincount(b, minlength=len(edges) - 1).astype(float)
    used = n > 0
    mean_p = np.bincount(b, weights=p, minlength=len(n))[used] / n[used]
    freq = np.bincount(b, weights=up, minlength=len(n))[used] / n[used]
    lo, hi = wilson_interval(freq, n[used])
    return {"p": mean_p, "freq": freq, "lo": lo, "hi": hi, "n": n[used]}


def _calibration_plot(run: _Run, instrument: str, style: _Style, bins: int) -> Optional[Any]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cals = [(k, c) for k in _forecast_keys(run, instrument) if (c := _calibration(run, k, bins)) is not None]
    if not cals:
        return None
    lo_p, hi_p = min(float(c["p"].min()) for _, c in cals), max(float(c["p"].max()) for _, c in cals)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.05)
    for k, c in cals:
        name, grp = _label(k[1], k[2]), f"{k[1]}-{k[2]}"
        fig.add_trace(go.Scatter(
            x=c["p"], y=c["freq"], mode="lines+markers", name=name, legendgroup=grp,
            error_y={"type": "data", "symmetric": False, "array": c["hi"] - c["freq"],
                     "arrayminus": c["freq"] - c["lo"], "thickness": 1},
            line={"color": style.color(k[1]), "dash": style.dash(k[2])},
            customdata=c["n"], hovertemplate="p_up %{x:.3f}: up %{y:.3f} (n=%{customdata:.0f})"), row=1, col=1)
        fig.add_trace(go.Bar(x=c["p"], y=c["n"], name=f"{name} n", legendgroup=grp, showlegend=False,
                             marker={"color": style.color(k[1], 0.6)}, width=max((hi_p - lo_p) / 80, 0.001)),
                      row=2, col=1)
    pad = max((hi_p - lo_p) * 0.05, 0.01)
    fig.add_trace(go.Scatter(x=[lo_p - pad, hi_p + pad], y=[lo_p - pad, hi_p + pad], mode="lines",
                             name="perfect calibration", line={"color": "#888", "dash": "dot"}), row=1, col=1)
    _layout(fig, f"{instrument}: calibration of p_up", "observed frequency of up", barmode="group",
            hovermode="closest")
    fig.update_yaxes(title_text="forecasts", row=2, col=1)
    fig.update_xaxes(title_text="p_up (bin mean)", row=2, col=1)
    return fig


def _coverage_plot(run: _Run, instrument: str, style: _Style, gaps: _Gaps, window: int,
                   max_points: int) -> Optional[Any]:
    import plotly.graph_objects as go

    f = run.forecasts
    models = run.summary["instruments"].get(instrument, {}).get("models", {})
    fig = go.Figure()
    for k in _forecast_keys(run, instrument):
        lo, hi = f.get(k, "pred_lo"), f.get(k, "pred_hi")  # type: ignore[union-attr]
        m = ~np.isnan(lo) & ~np.isnan(hi)
        if not m.any():
            continue
        r, t = f.get(k, "realized_return")[m], f.get(k, "ts_target")[m]  # type: ignore[union-attr]
        inside = ((lo[m] <= r) & (r <= hi[m])).astype(float)
        w = min(window, len(inside))
        share = rolling_mean(inside, w)
        if len(share) == 0:
            continue
        s = downsample(len(share), max_points)
        cov = models.get(k[1], {}).get(str(k[2]), {}).get("coverage")
        name = _label(k[1], k[2]) + ("" if cov is None else f" (overall {cov:.3f})")
        fig.add_trace(go.Scatter(x=_ms(t[w - 1:][s]), y=share[s], mode="lines", name=name,
                                 line={"color": style.color(k[1]), "dash": style.dash(k[2])}))
    if not fig.data:
        return None
    level = run.config.get("forecast", {}).get("learners", {}).get("interval_level")
    if level is not None:
        fig.add_hline(y=level, line={"color": "#888", "dash": "dot"}, annotation_text=f"nominal {level:g}")
    _layout(fig, f"{instrument}: interval coverage ({window} forecasts)", "share inside")
    _time_axis(fig, gaps)
    return fig


def _book_keys(run: _Run, instrument: str) -> list[_Key]:
    """The books: the models' first, then the baselines (horizon 0)."""
    e = run.equity
    keys = [k for k in e.groups if k[0] == instrument] if e is not None else []
    return sorted(keys, key=lambda k: (k[2] == 0, k[1], k[2]))


def _equity_plot(run: _Run, instrument: str, style: _Style, gaps: _Gaps, max_points: int) -> Optional[Any]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    keys = _book_keys(run, instrument)
    if not keys:
        return None
    e = run.equity
    assert e is not None
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.05)
    for k in keys:
        ret = (e.get(k, "equity") / run.initial_equity(instrument, k) - 1.0) * 100.0
        dd = -e.get(k, "drawdown") * 100.0
        s = np.union1d(minmax_indices(ret, max_points // 2), minmax_indices(dd, max_points // 2))
        x = _ms(e.get(k, "ts_recv")[s])
        name, grp = _label(k[1], k[2]), f"{k[1]}-{k[2]}"
        line = {"color": style.color(k[1]), "dash": style.dash(k[2]), "width": 1.5}
        fig.add_trace(go.Scatter(x=x, y=ret[s], mode="lines", name=name, legendgroup=grp, line=line), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=dd[s], mode="lines", name=f"{name} drawdown", legendgroup=grp,
                                 showlegend=False, line=line), row=2, col=1)
    _layout(fig, f"{instrument}: equity and drawdown", "net return, %")
    fig.update_yaxes(title_text="drawdown, %", row=2, col=1)
    _time_axis(fig, gaps)
    return fig


#: The rows of the features plot: its title and the features of features.csv it draws (by name or prefix).
_FEATURE_ROWS = (("depth imbalance", lambda c: c.startswith("depth_imb_")),
                 ("order-flow imbalance", lambda c: c == "ofi" or c.startswith("ofi_")),
                 ("other features", lambda c: True))


def _features_plot(run: _Run, instrument: str, gaps: _Gaps,
                   max_points: int) -> tuple[Optional[Any], str, list[str]]:
    """The features of ``features.csv`` over time, a row of subplots per family.

    Depth imbalance (``depth_imb_<k>``), order flow (``ofi``, ``ofi_l<m>``,
    ``ofi_int``), and the other features asked for (the walk costs...)
    below. A missing value (a depth feature while the book is not ready)
    is a gap in its line. Returns the figure (None: why not, in words) and
    the features that have no value at all for ``instrument``.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if run.features is None:
        return None, ("No features plot: the run wrote no features.csv (TICKLET_OUTPUT__FEATURES=true writes "
                      "depth imbalance, order-flow imbalance and walk costs there, for this plot)."), []
    cols = run.features.get(instrument, {})
    asked = [c for c in run.features_columns if c != "ts_end"]
    names = [c for c in asked if c in cols and np.isfinite(cols[c]).any()]
    absent = [c for c in asked if c not in names]
    if not names:
        return None, (f"No features plot: features.csv holds no value of {instrument}'s "
                      f"{', '.join(absent)} (its order book was never ready: no REST snapshot in its input, "
                      "or no depth at all)."), absent
    rows: list[tuple[str, list[str]]] = []
    left = list(names)
    for title, wanted in _FEATURE_ROWS:
        mine = [c for c in left if wanted(c)]
        left = [c for c in left if c not in mine]
        if mine:
            rows.append((title, mine))
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.06)
    t = _ms(cols["ts_end"])
    for i, (_, group) in enumerate(rows):
        for c in group:
            y = cols[c]
            s = gap_minmax_indices(y, max_points)
            missing = float(np.isnan(y).mean())
            name = c if missing == 0.0 else f"{c} ({missing:.0%} of bars missing)"
            fig.add_trace(go.Scatter(x=t[s], y=y[s], mode="lines", name=name, connectgaps=False,
                                     line={"color": _PALETTE[asked.index(c) % len(_PALETTE)], "width": 1}),
                          row=i + 1, col=1)
    n = len(cols["ts_end"])
    _layout(fig, f"{instrument}: depth and order-flow features ({n:,} bars, scaled as the models see them)",
            rows[0][0])
    for i, (title, _) in enumerate(rows[1:], start=2):
        fig.update_yaxes(title_text=title, row=i, col=1)
    if len(rows) > 2:
        fig.update_layout(height=520)
    _time_axis(fig, gaps)
    return fig, "", absent


def _cost_plot(run: _Run, instrument: str, style: _Style) -> Optional[tuple[Any, float]]:
    """The plot and the largest deviation of a book's actual net return from its line."""
    import plotly.graph_objects as go

    books = run.summary["economics"].get(instrument, {})
    curves = [((model, int(h)), c) for model, hs in books.items() for h, entry in hs.items()
              if (c := cost_curve(entry, run.initial_equity(instrument, (instrument, model, int(h))))) is not None]
    if not curves:
        return None
    fee = run.fee_bps(instrument)
    top = max([c["paid_bps"] for _, c in curves] + [c["break_even_bps"] for _, c in curves] + [fee or 0.0])
    top = max(top * 1.25, 1.0)
    grid = np.linspace(0.0, top, 60)
    fig = go.Figure()
    worst = 0.0
    for (model, h), c in sorted(curves, key=lambda kc: (kc[0][1] == 0, kc[0])):
        name, grp = _label(model, h), f"{model}-{h}"
        line = {"color": style.color(model), "dash": style.dash(h)}
        fig.add_trace(go.Scatter(x=grid, y=(c["gross_return"] + c["slope"] * grid) * 100.0, mode="lines",
                                 name=f"{name} (break-even {c['break_even_bps']:.2f} bps)", legendgroup=grp,
                                 line=line))
        fig.add_trace(go.Scatter(x=[c["paid_bps"]], y=[c["net_return"] * 100.0], mode="markers",
                                 name=f"{name}: actual", legendgroup=grp, showlegend=False,
                                 marker={"color": style.color(model), "size": 9, "symbol": "diamond"},
                                 hovertemplate="paid %{x:.2f} bps/side: net %{y:.3f}%"))
        worst = max(worst, abs(c["deviation"]))
    fig.add_hline(y=0.0, line={"color": "#888", "dash": "dot"})
    if fee is not None:
        fig.add_vline(x=fee, line={"color": "#aa3333", "dash": "dot"}, annotation_position="bottom left",
                      annotation_text=f"fee + slippage {fee:g} bps (+ half spread)")
    _layout(fig, f"{instrument}: net return against cost", "net return, %", hovermode="closest")
    fig.update_xaxes(title_text="cost per side, bps of the value traded", range=[0.0, top])
    return fig, worst


# ---------------------------------------------------------------------------
# HTML


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1500px;padding:0 18px;
color:#222}
h1{font-size:1.5em;margin:18px 0 6px}h2{font-size:1.25em;margin:28px 0 8px;border-bottom:2px solid #ddd}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{padding:3px 8px;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}
th{background:#f4f4f4;white-space:normal;vertical-align:bottom}td.l,th.l{text-align:left}
.scroll{overflow-x:auto}
table.run td,table.run th{text-align:left;white-space:normal}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(640px,1fr));gap:14px}
figure.plot{margin:0;border:1px solid #e5e5e5;border-radius:4px;padding:4px;min-width:0}
figcaption,.note{font-size:12px;color:#555;margin:4px 6px}
.good{color:#17692a;font-weight:600}.bad{color:#a32020}.warn{background:#fff4d6;padding:6px 10px}
pre{font-size:12px;background:#f7f7f7;padding:8px;overflow:auto;max-height:480px}
nav a{margin-right:14px}
"""


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _num(v: Any, spec: str, scale: float = 1.0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v * scale, spec)


def _utc(ts_ns: int) -> str:
    import datetime as dt

    t = dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(ns: float) -> str:
    """A duration in ns as text, in the largest unit that keeps it above 2 (or a minute).

    >>> _duration(414e9), _duration(7200e9), _duration(3 * 86400e9)
    ('6.9 min', '2.0 h', '3.0 days')
    """
    s = ns / 1e9
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= 2 * size or unit == "min" and s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.1f} s"


def _time_range(run: _Run) -> str:
    f = run.forecasts
    if f is None:
        return "no forecast was scored"
    lo, hi = int(f.cols["ts_forecast"].min()), int(f.cols["ts_target"].max())
    return f"{_utc(lo)} to {_utc(hi)} (first forecast to last target)"


def _stretches_html(stretches: list[tuple[int, int]]) -> str:
    if not stretches:
        return ""
    total = sum(b - a for a, b in stretches)
    n = len(stretches)
    shown = stretches if n <= 6 else [*stretches[:3], None, *stretches[-2:]]
    parts = "; ".join("…" if st is None else f"{_utc(st[0])} to {_utc(st[1])[11:]}"
                      if _utc(st[0])[:10] == _utc(st[1])[:10] else f"{_utc(st[0])} to {_utc(st[1])}" for st in shown)
    return (f'<p class="note stretches">{n} stretch{"es" if n > 1 else ""} of data, {_duration(total)} in all'
            f"{' (the gaps between them are cut out of the time axes)' if n > 1 else ''}: {_esc(parts)}</p>")


def _run_header(run: _Run, generated_by: str) -> str:
    from sinks.summary import volume

    m = run.manifest
    c = run.summary.get("counters", {})
    rows = [("output directory", _esc(run.out_dir)), ("data", _esc(_time_range(run))),
            ("volume", _esc(volume(c)))]
    if m is None:
        warn = ('<p class="warn" id="no-manifest">This output directory has no <code>run.json</code> (it was '
                "written before runs recorded their manifest): its inputs, configuration and ticklet version are "
                "unknown.</p>")
        rows.append(("ticklet version", "unknown (no run.json)"))
        config = ""
    else:
        warn = ""
        cfg = m.get("config", {})
        canonical = json.dumps(cfg, sort_keys=True, separators=(",", ":"))
        ok = hashlib.sha256(canonical.encode()).hexdigest() == m.get("config_hash")
        rows += [("ticklet version", _esc(m.get("ticklet_version", "unknown"))),
                 ("inputs", "<br>".join(f"<code>{_esc(p)}</code>" for p in m.get("inputs", [])) or "–"),
                 ("config hash", f"<code>{_esc(m.get('config_hash'))}</code>"
                  + ("" if ok else ' <span class="bad">(does not match the configuration below)</span>'))]
        config = ("<details><summary>configuration (settings of the run, secrets redacted)</summary><pre>"
                  + _esc(json.dumps(cfg, indent=2, sort_keys=True)) + "</pre></details>")
    rows.append(("report", _esc(generated_by)))
    body = "".join(f'<tr><th class="l">{k}</th><td class="l">{v}</td></tr>' for k, v in rows)
    return f'<section id="run">{warn}<table class="run">{body}</table>{config}</section>'


def _p(v: Any) -> str:
    return _num(v, ".2g")


def _annualized(run: _Run) -> str:
    """How the Sharpe ratios of the run are annualized (:mod:`operators.pnl`), in words."""
    ms = run.config.get("bars", {}).get("interval_ms")
    bars = "A the bars in 365 days" if not ms else \
        f"A = {365 * 86_400_000 / ms:,.0f} bars of {f'{ms // 1000} s' if ms % 1000 == 0 else f'{ms} ms'} a year"
    return (f"the Sharpe ratio of one bar × √A, {bars} (crypto trades every day). Over a run of "
            "minutes it is a large number by construction: its sign says more than its size.")


def _results_table(run: _Run, instrument: str) -> str:
    metrics = run.summary["instruments"].get(instrument, {}).get("models", {})
    econ = run.summary["economics"].get(instrument, {})
    keys = sorted({(m, int(h)) for m, hs in metrics.items() for h in hs} | {(m, int(h)) for m, hs in econ.items()
                                                                              for h in hs},
                  key=lambda k: (k[1] == 0, k[0], k[1]))
    rows = [(m, h, metrics.get(m, {}).get(str(h)), econ.get(m, {}).get(str(h))) for m, h in keys]
    ms = [r[2] for r in rows if r[2]]
    es = [r[3] for r in rows if r[3]]
    init = {id(e): run.initial_equity(instrument, (instrument, m, h)) for m, h, _, e in rows if e}

    def has(entries: Iterable[dict[str, Any]], key: str) -> bool:
        return any(e.get(key) is not None for e in entries)

    def hit(e: dict[str, Any]) -> str:
        if e.get("hit_rate") is None:
            return "–"
        ci = e.get("hit_rate_ci95")
        if ci is None and e.get("n_directional"):
            ci = [float(x) for x in wilson_interval(e["hit_rate"], e["n_directional"])]
        return f"{e['hit_rate']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    def holm(e: dict[str, Any]) -> str:
        marks = []
        for test in ("dm", "pt"):
            v = e.get(f"{test}_holm")
            if v is not None:
                marks.append(f'<span class="{"good" if v else "bad"}">{test.upper()} {"✓" if v else "✗"}</span>')
        return " ".join(marks) or "–"

    def big(v: Any) -> str:
        return _num(v, ",.0f" if v is not None and abs(v) >= 1000 else ".3g")

    def sharpe(e: dict[str, Any]) -> str:
        return big(e.get("sharpe")) + (f" ± {big(e['sharpe_se'])}" if e.get("sharpe_se") is not None else "")

    def paid(e: dict[str, Any]) -> str:
        c = cost_curve(e, init[id(e)])
        return "–" if c is None else f"{c['paid_bps']:.2f}"

    def signed(v: Any, spec: str, scale: float) -> str:
        text = _num(v, spec, scale)
        return text if v is None or v == 0 else f'<span class="{"good" if v > 0 else "bad"}">{text}</span>'

    def break_even(e: dict[str, Any]) -> str:  # good news only above the cost the book paid: it made money
        v, c = e.get("break_even_bps"), cost_curve(e, init[id(e)])
        text = _num(v, ".2f")
        return text if v is None or c is None else \
            f'<span class="{"good" if v > c["paid_bps"] else "bad"}">{text}</span>'

    cols: list[tuple[str, str, str, Any]] = [  # header, tooltip, "m"etrics or "e"conomics, cell
        ("n", "forecasts scored", "m", lambda e: f"{e['n']:,}"),
        ("hit rate [95% CI]", "sign right on realized non-zero moves", "m", hit)]
    if has(ms, "hit_rate_p_value"):
        cols.append(("p(binom)", "binomial test of the hit rate: one-sided p-value against a coin (h = 1 only)", "m",
                     lambda e: _p(e.get("hit_rate_p_value"))))
    cols.append(("skill", "1 - MSE / MSE of the zero-return forecast", "m", lambda e: signed(e.get("skill"), ".4f", 1)))
    if has(ms, "dm_p_value"):
        cols.append(("DM p", "Diebold-Mariano against the zero-return forecast (HAC), one-sided", "m",
                     lambda e: _p(e.get("dm_p_value"))))
    if has(ms, "pt_p_value"):
        cols.append(("PT p", "Pesaran-Timmermann directional test, one-sided", "m", lambda e: _p(e.get("pt_p_value"))))
    if has(ms, "dm_holm") or has(ms, "pt_holm"):
        cols.append(("Holm", "survives a Holm correction over every test of the run", "m", holm))
    if has(ms, "coverage"):
        cols.append(("coverage", "share of realized returns inside the predictive interval", "m",
                     lambda e: _num(e.get("coverage"), ".3f")))
    if es:
        cols += [("net return", "net of every cost", "e", lambda e: signed(e.get("net_return"), ".3%", 1)),
                 ("Sharpe (annualized)" + (" ± SE" if has(es, "sharpe_se") else ""), f"annualized: {_annualized(run)}",
                  "e", sharpe)]
        for key, head, tip in (("psr", "PSR", "probabilistic Sharpe ratio"),
                               ("dsr", "DSR", "deflated Sharpe ratio (over the trials of the run)")):
            if has(es, key):
                cols.append((head, tip, "e", lambda e, key=key: _num(e.get(key), ".3f")))
        cols += [("max DD", "largest fall of equity from its peak", "e", lambda e: _num(e.get("max_drawdown"), ".2%")),
                 ("trades", "holding periods closed", "e", lambda e: f"{e.get('trades', 0):,}"),
                 ("break-even bps", "cost per side at which the net PnL is zero; green above the cost paid (the "
                  "book made money), red below it", "e", break_even),
                 ("paid bps", "cost paid per side: spread, slippage and fees / value traded", "e", paid)]
    head = '<th class="l">model</th><th>h</th>' + "".join(
        f'<th title="{_esc(tip)}">{_esc(h)}</th>' for h, tip, _, _ in cols)
    body = []
    for m, h, me, ee in rows:
        cells = [f'<td class="l">{_esc(m)}</td><td>{h if h else "–"}</td>']
        for _, _, src, fn in cols:
            e = me if src == "m" else ee
            cells.append(f"<td>{fn(e) if e else '–'}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    n_trials = next((e["n_trials"] for e in es if e.get("n_trials") is not None), None)
    legend = [f"DSR deflated over {n_trials} trials." if n_trials else ""]
    if any(h == "p(binom)" for h, _, _, _ in cols):
        legend.append("p(binom): binomial test of the hit rate against a coin, one-sided (h = 1 only), as in the "
                      "terminal summary.")
    if es:
        legend.append(f"Sharpe (annualized): {_annualized(run)} Break-even bps: the cost per side at which the "
                      "book's net return would be zero, green only above the cost it paid (paid bps), when it made "
                      "money.")
    note = f'<p class="note legend">{_esc(" ".join(x for x in legend if x))}</p>' if any(legend) else ""
    return (f'<div class="scroll"><table class="results" data-instrument="{_esc(instrument)}"><thead><tr>{head}'
            f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>{note}")


def _maker_table(run: _Run, instrument: str) -> str:
    """The maker books' economics (``maker_economics.csv``), or nothing when the run had none."""
    books = run.summary.get("maker", {}).get(instrument, {})
    rows = sorted(((m, int(h), e) for m, hs in books.items() for h, e in hs.items()),
                  key=lambda r: (r[0] != "touch", r[0], r[1]))
    if not rows:
        return ""
    fee = rows[0][2]["fee_bps"]
    touch = books.get("touch", {}).get("0", {}).get("break_even_bps")

    def be(e: dict[str, Any]) -> str:  # green above the baseline's: the forecast helped
        v = e.get("break_even_bps")
        text = _num(v, ".3f")
        return text if v is None or touch is None or e is books.get("touch", {}).get("0") else \
            f'<span class="{"good" if v > touch else "bad"}">{text}</span>'

    cols: list[tuple[str, str, Any]] = [
        ("orders", "post-only orders sent", lambda e: f"{e['orders']:,}"),
        ("fill rate", "share of the orders sent that filled at least in part",
         lambda e: _num(e.get("fill_rate"), ".3f")),
        ("refused", "post-only orders refused: they would have crossed", lambda e: f"{e['refused']:,}"),
        ("fills", "maker fills", lambda e: f"{e['fills']:,}"),
        ("maker share", "maker fills over this model and horizon's fills, taker book's included",
         lambda e: _num(e.get("maker_share"), ".3f")),
        ("adverse 1 s bps", "mean move of the mid against the fill 1 s after it, bps", lambda e: _num(
            e.get("adverse_1s_bps"), ".3f")),
        ("adverse 10 s bps", "mean move of the mid against the fill 10 s after it, bps", lambda e: _num(
            e.get("adverse_10s_bps"), ".3f")),
        ("position", "held at the end, marked to the last mid", lambda e: _num(e.get("position"), ".6g")),
        ("break-even fee bps", "the maker fee at which the net PnL is zero; green above the baseline's (touch)",
         be),
        (f"net bps at {fee:g}", "net PnL / value filled at the run's maker fee",
         lambda e: _num(e.get("net_bps"), ".3f")),
        ("net PnL", "in quote currency, after fees", lambda e: _num(e.get("net_pnl"), ".4g")),
    ]
    head = '<th class="l">maker book</th><th>h</th>' + "".join(
        f'<th title="{_esc(tip)}">{_esc(h)}</th>' for h, tip, _ in cols)
    body = "".join('<tr><td class="l">' + _esc(m) + f"</td><td>{h if h else '–'}</td>"
                   + "".join(f"<td>{fn(e)}</td>" for _, _, fn in cols) + "</tr>" for m, h, e in rows)
    note = ("Maker books: post-only quotes that rest in the book, filled from the recorded book and trades with a "
            "queue model and latency (operators/maker.py); touch is the unskewed baseline at the best bid and ask. "
            "Break-even fee: what the books' gross PnL per value filled covers.")
    return (f'<h3>Resting quotes (maker fee {fee:g} bps)</h3><div class="scroll"><table class="maker" '
            f'data-instrument="{_esc(instrument)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
            f'<p class="note">{_esc(note)}</p>')


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s).strip("-").lower()


def _figure_html(fig: Any, div_id: str, kind: str, instrument: str, caption: str) -> str:
    import plotly.io as pio

    div = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, default_height="430px",
                      config={"displaylogo": False, "responsive": True})
    return (f'<figure class="plot" data-kind="{kind}" data-instrument="{_esc(instrument)}">{div}'
            f"<figcaption>{caption}</figcaption></figure>")


_CAPTIONS = {
    "price": "Each forecast is drawn at its target time: pred_price against the realized price there. "
             "Drag the range slider to zoom.",
    "hit_rate": "Share of realized non-zero moves whose sign was right, over a rolling window; the band is the "
                "Wilson 95% interval of the window (with the effective sample size of overlapping targets, h > 1); "
                "dotted: a coin.",
    "dm": "Running sum of realized² − error²: the squared-error gain over the zero-return (naive) forecast. A line "
          "that rises beats it; the Diebold-Mariano test weighs its slope. Models that forecast nothing but zero "
          "are left out.",
    "calibration": "p_up of each decision (signals.csv) against the realized direction of the same forecast; "
                   "bins of equal counts, 95% Wilson bars, counts below. Models with a constant p_up are left out.",
    "coverage": "Rolling share of realized returns inside the forecast's predictive interval; dotted: the "
                "coverage aimed at.",
    "equity": "Equity of every simulated book, net of spread, slippage and fees, as a return on the initial "
              "capital; its drawdown below. buy_and_hold and flat are the baselines.",
    "cost": "net(c) = gross return − c × turnover: the net return each book would have made paying c bps of the "
            "value traded per side. The diamond is its actual net return at the cost it paid.",
    "features": "The features of features.csv at each bar's end, scaled online as the models see them (z-scores, "
             "clipped): depth imbalance (bid − ask) / (bid + ask) of the top k levels; order-flow imbalance of "
             "the top of the book (ofi), of level m (ofi_l<m>) and integrated over the levels (ofi_int, the "
             "first principal component's projection); the cost of walking the book. A gap: the feature was "
             "missing at those bars (the book not ready, ofi_int in its warm-up).",
}


#: Plots are drawn while the page is parsed; once it is laid out, each is fitted to its box.
_FIT = ('<script type="text/javascript">window.addEventListener("load", () => document.querySelectorAll('
        '".js-plotly-plot").forEach(d => Plotly.Plots.resize(d)));</script>')


def build_report(out_dir: Path, html_path: Optional[Path] = None, window: int = DEFAULT_WINDOW,
                 rolling: int = ROLLING, max_points: int = MAX_POINTS) -> Path:
    """Write the HTML report of the run in ``out_dir``.

    Parameters
    ----------
    out_dir
        A run's output directory (``ticklet backtest --out``,
        ``TICKLET_OUTPUT__DIR``).
    html_path
        The file to write; default ``out_dir/report.html``.
    window
        Bars of the price plot (the last ones; 0: all).
    rolling
        Forecasts in the rolling windows of the hit-rate and coverage plots.
    max_points
        Most points of one trace (longer series are thinned).

    Returns
    -------
    Path
        ``html_path``.

    Raises
    ------
    NoRunError
        ``out_dir`` does not exist or holds no ``forecasts.csv``.
    """
    import plotly.offline

    out_dir = Path(out_dir)
    html_path = Path(html_path) if html_path is not None else out_dir / "report.html"
    run = _load(out_dir)
    f = run.forecasts
    all_keys = list(f.groups) if f is not None else []
    all_keys += list(run.equity.groups) if run.equity is not None else []
    style = _Style(sorted({k[1] for k in all_keys}, key=lambda m: (m in ("buy_and_hold", "flat"), m)),
                   sorted({k[2] for k in all_keys}))
    mine = ticklet_version()
    sections, nav, n_plots = [], [], 0
    for inst in run.instruments():
        sid = f"inst-{_slug(inst)}"
        nav.append(f'<a href="#{sid}">{_esc(inst)}</a>')
        stretches, gaps = _stretches(run, inst)
        plots = [
            ("price", _price_plot(run, inst, style, gaps, window, max_points), ""),
            ("hit_rate", _hit_rate_plot(run, inst, style, gaps, rolling, max_points),
             "No hit-rate plot: no model forecast a non-zero return often enough."),
            ("dm", _dm_plot(run, inst, style, gaps, max_points), ""),
            ("calibration", _calibration_plot(run, inst, style, CALIBRATION_BINS),
             "No calibration diagram: no model gave a p_up that varies (or no signals.csv)."),
            ("coverage", _coverage_plot(run, inst, style, gaps, rolling, max_points),
             "No coverage plot: no model gave predictive intervals (linear_conformal and bayes_linear do)."),
            ("equity", _equity_plot(run, inst, style, gaps, max_points), ""),
        ]
        figs = [(kind, fig, _CAPTIONS[kind]) for kind, fig, _ in plots if fig is not None]
        notes = [f'<p class="note" data-missing="{kind}">{_esc(why)}</p>' for kind, fig, why in plots
                 if fig is None and why]
        cost = _cost_plot(run, inst, style)
        if cost is not None:
            fig, worst = cost
            verdict = ("every diamond lies on its line" if worst < 1e-9 else
                       f'<span class="bad">a book\'s actual net return is off its line by {worst:.3g}</span>')
            figs.append(("cost", fig, f"{_CAPTIONS['cost']} Check: {verdict} (largest deviation {worst:.1e})."))
        feats, why, absent = _features_plot(run, inst, gaps, max_points)
        if feats is not None:
            none = (f" No value at all of {', '.join(absent)} here: the book was never ready." if absent else "")
            figs.append(("features", feats, _esc(_CAPTIONS["features"] + none)))
        else:
            notes.append(f'<p class="note" data-missing="features">{_esc(why)}</p>')
        parts = [f'<section class="instrument" id="{sid}"><h2>{_esc(inst)}</h2>', _stretches_html(stretches),
                 _results_table(run, inst), _maker_table(run, inst),
                 *notes, '<div class="grid">']
        for kind, fig, caption in figs:
            parts.append(_figure_html(fig, f"plot-{_slug(inst)}-{kind}", kind, inst, caption))
            n_plots += 1
        parts.append("</div></section>")
        sections.append("".join(parts))
    title = f"ticklet report: {out_dir.name or out_dir}"
    doc = "".join([
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style>",
        '<script type="text/javascript">', plotly.offline.get_plotlyjs(), "</script></head><body>",
        f"<h1>{_esc(title)}</h1>", _run_header(run, f"ticklet {mine}, ticklet report"),
        f"<nav>{''.join(nav)}</nav>", *sections,
        "" if sections else '<p class="warn">No forecast was scored in this run (too few bars?).</p>',
        _FIT, "</body></html>\n"])
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(doc, encoding="utf-8")
    log.info("report of %s: %s (%d plots, %d bytes)", out_dir, html_path, n_plots, len(doc))
    return html_path

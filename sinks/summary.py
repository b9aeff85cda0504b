"""The end-of-run summary, as data and as text (pure: no I/O).

Used by the run report on stderr (:mod:`sinks.report`) and by
``ticklet backtest --json``.

>>> from core.events import EconomicsRecord, MetricsRecord
>>> m = MetricsRecord("BTCUSDT", "logistic", 1, 0, 938, 5e-5, 9.6e-5, 0.028, 0.73, 323, 236, hit_rate_se=0.0247,
...                   dm_stat=2.9, dm_p_value=0.0019, pt_stat=6.1, pt_p_value=5.3e-10, n_pt=320)
>>> entry = metrics_entry(m)
>>> entry["hits"], round(entry["hit_rate_p_value"], 12) < 1e-12
(236, True)
>>> print(format_summary({"ticks": 10, "bars": 2, "forecasts": 938, "dead_letters": 0},
...                      instruments_summary([m]), {"metrics": "out/metrics.csv"}))
ticklet: 10 ticks, 2 bars, 938 forecasts scored, 0 dead letters
instrument  model     h    n  hit rate       95% CI  p(binom)      DM p      PT p   skill
BTCUSDT     logistic  1  938    0.7300  0.679-0.775   2.5e-17  1.9e-03*  5.3e-10*  0.0280
p(binom): binomial test of the hit rate (h = 1 only); DM: Diebold-Mariano vs the zero-return forecast;
PT: Pesaran-Timmermann; *: significant after a Holm correction over the run (5%)
outputs:
  metrics  out/metrics.csv
>>> record_from_row({"instrument": "X", "model": "naive", "horizon": "1", "ts_target": "5", "n": "1",
...                  "mae": "0.1", "rmse": "0.1", "skill": "0.0", "hit_rate": "", "n_directional": "0",
...                  "hits": "0", "coverage": "", "n_interval": "0"}, MetricsRecord).hit_rate is None
True
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any, Optional, TypeVar

import msgspec

from core.events import EconomicsRecord, MakerEconomicsRecord, MetricsRecord
from core.stats import (
    binomial_p_value,
    effective_n,
    expected_max_sharpe,
    holm,
    probabilistic_sharpe,
    wilson_interval,
)

__all__ = ["economics_summary", "format_summary", "instruments_summary", "maker_summary", "metrics_entry",
           "record_from_row"]

R = TypeVar("R", bound=msgspec.Struct)


def metrics_entry(m: MetricsRecord) -> dict[str, Any]:
    """One model's last metrics at one horizon, as reported.

    - ``hit_rate_ci95``: the Wilson interval (:func:`core.stats.wilson_interval`,
      clamped to [0, 1]) over the *effective* number of moves ``n_eff = hit
      (1 - hit) / hit_rate_se**2`` (:func:`core.stats.effective_n`;
      ``hit_rate_se`` is HAC at lag h - 1, so overlapping moves count for
      less; at h = 1, ``n_eff = n_directional``);
    - ``hit_rate_p_value``: the one-sided binomial p-value of the hit rate
      against a coin (:func:`core.stats.binomial_p_value`), at h = 1 only (beyond, overlapping outcomes are not
      independent: see ``pt_p_value``);
    - the Diebold-Mariano and Pesaran-Timmermann tests of
      :mod:`operators.metrics`; the Holm flags are set by
      :func:`instruments_summary`.
    """
    p = ci = n_eff = None
    if m.hit_rate is not None and m.n_directional:
        n_eff = effective_n(m.hit_rate, m.hit_rate_se, m.n_directional)
        lo, hi = wilson_interval(m.hit_rate, n_eff)
        ci = [round(max(0.0, lo), 6), round(min(1.0, hi), 6)]  # shown: clamped to [0, 1]
        if m.horizon == 1:
            p = binomial_p_value(m.hits, m.n_directional)
    return {
        "n": m.n, "mae": m.mae, "rmse": m.rmse, "skill": m.skill, "hit_rate": m.hit_rate,
        "n_directional": m.n_directional, "hits": m.hits, "hit_rate_se": m.hit_rate_se,
        "hit_rate_n_eff": n_eff, "hit_rate_ci95": ci, "hit_rate_p_value": p,
        "dm_stat": m.dm_stat, "dm_p_value": m.dm_p_value, "dm_holm": None,
        "pt_stat": m.pt_stat, "pt_p_value": m.pt_p_value, "n_pt": m.n_pt, "pt_holm": None,
        "coverage": m.coverage, "n_interval": m.n_interval,
    }


def instruments_summary(last: Iterable[MetricsRecord], alpha: float = 0.05) -> dict[str, Any]:
    """``{instrument: {"models": {model: {horizon: entry}}}}``, sorted.

    ``dm_holm``/``pt_holm``: whether the DM/PT test of the entry is
    significant at ``alpha`` after a Holm correction over every instrument x
    model x horizon of the run that has one (each test its own family).
    """
    out: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    for m in sorted(last, key=lambda r: (r.instrument, r.model, r.horizon)):
        models = out.setdefault(m.instrument, {"models": {}})["models"]
        e = models.setdefault(m.model, {})[str(m.horizon)] = metrics_entry(m)
        entries.append(e)
    for test in ("dm", "pt"):
        for e, flag in zip(entries, holm([e[f"{test}_p_value"] for e in entries], alpha), strict=True):
            e[f"{test}_holm"] = flag
    return out


def _fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None or math.isnan(v) else format(v, spec)


def volume(counters: dict[str, int]) -> str:
    """A run's totals in words: ticks, bars, forecasts scored, dead letters.

    >>> volume({"ticks": 13283, "bars": 1, "forecasts": 183, "dead_letters": 1})
    '13,283 ticks, 1 bar, 183 forecasts scored, 1 dead letter'
    """
    parts = []
    for key, one, many in (("ticks", "tick", "ticks"), ("bars", "bar", "bars"),
                           ("forecasts", "forecast scored", "forecasts scored"),
                           ("dead_letters", "dead letter", "dead letters")):
        n = counters.get(key, 0)
        parts.append(f"{n:,} {one if n == 1 else many}")
    return ", ".join(parts)


def format_summary(counters: dict[str, int], instruments: dict[str, Any], outputs: dict[str, str],
                   wall_s: Optional[float] = None) -> str:
    """The end-of-run summary as text: totals, a table of the last metrics, and where the outputs are."""
    c = counters
    head = f"ticklet: {volume(c)}"
    if wall_s is not None:
        head += f" in {wall_s:.1f} s"
    rows = [("instrument", "model", "h", "n", "hit rate", "95% CI", "p(binom)", "DM p", "PT p", "skill")]
    for sym, s in instruments.items():
        for model, hs in s["models"].items():
            for h, m in hs.items():
                ci = m.get("hit_rate_ci95")
                rows.append((sym, model, h, str(m["n"]), _fmt(m["hit_rate"], ".4f"),
                             f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-", _fmt(m["hit_rate_p_value"], ".1e"),
                             _fmt(m.get("dm_p_value"), ".1e") + ("*" if m.get("dm_holm") else ""),
                             _fmt(m.get("pt_p_value"), ".1e") + ("*" if m.get("pt_holm") else ""),
                             _fmt(m["skill"], ".4f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head]
    if len(rows) > 1:
        for r in rows:
            cells = (v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
            lines.append("  ".join(cells).rstrip())
        lines.append("p(binom): binomial test of the hit rate (h = 1 only); DM: Diebold-Mariano vs the zero-return "
                     "forecast;")
        lines.append("PT: Pesaran-Timmermann; *: significant after a Holm correction over the run (5%)")
    else:
        lines.append("no forecast was scored (too few bars for the horizons?)")
    if outputs:
        lines.append("outputs:")
        w = max(len(k) for k in outputs)
        lines.extend(f"  {k.ljust(w)}  {v}" for k, v in outputs.items())
    return "\n".join(lines)


def record_from_row(row: dict[str, str], cls: type[R]) -> R:
    """A CSV row (strings; empty cells are None) as its record."""
    return msgspec.convert({k: (v if v != "" else None) for k, v in row.items()}, cls, strict=False)


def economics_summary(last: Iterable[EconomicsRecord]) -> dict[str, Any]:
    """``{instrument: {model: {horizon: economics}}}`` of the books' last records, with their deflated Sharpe ratios.

    The baselines have horizon 0. Each book's economics carry its deflated
    Sharpe ratio ``dsr`` and the number of trials ``n_trials`` it is
    deflated for.

    The **deflated Sharpe ratio** (Bailey & López de Prado, 2014) is the
    probabilistic Sharpe ratio (:func:`core.stats.probabilistic_sharpe`) of
    a book against the Sharpe ratio the best of ``N`` unskilled trials would
    show by chance, ``SR0`` (:func:`core.stats.expected_max_sharpe` of the
    variance ``V`` of the trials' Sharpe ratios), all per bar:

    - the **trials** of an instrument are its model x horizon books, times
      the number of signal rules of the run (one: ``TICKLET_SIGNALS__RULE``).
      The baselines (``buy_and_hold``, ``flat``: horizon 0) are benchmarks,
      not strategies tried: they are not trials and get no ``dsr`` nor
      ``n_trials`` (None);
    - ``N`` counts every trial, those with no Sharpe ratio too (a book that
      never traded was tried all the same); ``V`` is the sample variance
      (n - 1) of the per-bar Sharpe ratios of the trials that have one;
    - with ``N < 2`` (no selection to correct for: read ``psr``) or fewer
      than two Sharpe ratios to take a variance of, ``dsr`` is None.

    Two strategies and a baseline; the trials' per-bar Sharpe ratios 0.05
    and 0.01 have a variance of 0.0008, so ``SR0 = 0.02828 x (0.4228 x
    Phi^-1(1/2) + 0.5772 x Phi^-1(1 - 1/(2e))) = 0.02828 x 0.5772 x 0.9005 =
    0.01470``; normal returns (skewness 0, kurtosis 3) over 1,000 bars:

    >>> from core.events import EconomicsRecord
    >>> def book(model, horizon, sr):
    ...     return EconomicsRecord("X", model, horizon, 0, 1000, 0.0, 0.0, 0.0, None, None, 0.0, None, 0, None,
    ...                            None, 0.0, 0.0, None, 0, None, sharpe_per_bar=sr, skew=0.0, kurt=3.0)
    >>> econ = economics_summary([book("a", 1, 0.05), book("b", 1, 0.01), book("buy_and_hold", 0, 0.02)])["X"]
    >>> econ["a"]["1"]["n_trials"], round(econ["a"]["1"]["dsr"], 4)  # Phi((0.05 - 0.0147) x sqrt(999) / 1.000625)
    (2, 0.8676)
    >>> econ["buy_and_hold"]["0"]["n_trials"], econ["buy_and_hold"]["0"]["dsr"]
    (None, None)
    """
    out: dict[str, Any] = {}
    records = sorted(last, key=lambda r: (r.instrument, r.model, r.horizon))
    benchmarks = {}
    for inst in {e.instrument for e in records}:
        trials = [e for e in records if e.instrument == inst and e.horizon > 0]
        srs = [e.sharpe_per_bar for e in trials if e.sharpe_per_bar is not None]
        n = len(trials) * _SIGNAL_RULES
        benchmarks[inst] = n, (expected_max_sharpe(statistics.variance(srs), n) if n >= 2 and len(srs) >= 2
                               else None)
    for e in records:
        entry = {k: v for k, v in msgspec.structs.asdict(e).items()
                 if k not in ("instrument", "model", "horizon", "ts_recv")}
        n, sr0 = benchmarks[e.instrument]
        sr, skew, kurt, dsr = e.sharpe_per_bar, e.skew, e.kurt, None
        if e.horizon > 0 and sr0 is not None and sr is not None and skew is not None and kurt is not None:
            dsr = probabilistic_sharpe(sr, sr0, e.n_bars, skew, kurt)
        entry["dsr"], entry["n_trials"] = dsr, (n if e.horizon > 0 else None)
        out.setdefault(e.instrument, {}).setdefault(e.model, {})[str(e.horizon)] = entry
    return out


def maker_summary(last: Iterable[MakerEconomicsRecord], taker: Iterable[EconomicsRecord] = ()) -> dict[str, Any]:
    """``{instrument: {model: {horizon: economics}}}`` of the maker books' last records (:mod:`operators.maker`).

    Each carries the ``maker_share`` of its model and horizon's fills: its
    maker fills over those and the taker book's (``economics.csv``) fills of
    the same model and horizon (1.0 without a taker book of it: the maker
    books only rest post-only orders). With the baseline (``touch``) in the
    run, each forecast book also carries ``vs_touch_bps``: its break-even
    maker fee less the baseline's, what the forecast adds to passive
    quoting.

    >>> def maker(model, h, be):
    ...     return MakerEconomicsRecord("X", model, h, 0, 100, 10, 0.1, 0, 10, 0.01, 300.0, 0.0, be * 0.03, 0.06,
    ...                                 be * 0.03 - 0.06, 2.0, be, be - 2.0, 0.5, 0.7)
    >>> taker = EconomicsRecord("X", "linear", 1, 0, 9, 0.0, 0.0, 0.0, None, None, 0.0, None, 0, None, None, 0.0,
    ...                         0.0, None, 30, None)
    >>> out = maker_summary([maker("touch", 0, -0.3), maker("linear", 1, 0.2)], [taker])["X"]
    >>> out["linear"]["1"]["maker_share"], round(out["linear"]["1"]["vs_touch_bps"], 6)
    (0.25, 0.5)
    >>> out["touch"]["0"]["maker_share"], out["touch"]["0"]["vs_touch_bps"]
    (1.0, None)
    """
    fills = {(e.instrument, e.model, e.horizon): e.fills for e in taker}
    records = sorted(last, key=lambda r: (r.instrument, r.model, r.horizon))
    touch = {e.instrument: e.break_even_bps for e in records if e.model == "touch" and e.horizon == 0}
    out: dict[str, Any] = {}
    for e in records:
        entry = {k: v for k, v in msgspec.structs.asdict(e).items() if k not in ("instrument", "model", "horizon")}
        n = e.fills + fills.get((e.instrument, e.model, e.horizon), 0)
        entry["maker_share"] = e.fills / n if n else None
        base = touch.get(e.instrument)
        entry["vs_touch_bps"] = (e.break_even_bps - base if e.model != "touch" and base is not None
                                 and e.break_even_bps is not None else None)
        out.setdefault(e.instrument, {}).setdefault(e.model, {})[str(e.horizon)] = entry
    return out


#: Signal rules a run tries (``TICKLET_SIGNALS__RULE``: one per run).
_SIGNAL_RULES = 1

"""The evaluation's statistics, checked against independent references on
real forecast series: the HAC variance and the Diebold-Mariano statistic
against statsmodels, the Pesaran-Timmermann test against a direct
computation and Pearson's chi-square, Holm against statsmodels, the Wilson
interval against SciPy, and the prequential error metrics against River's
``evaluate.progressive_val_score`` with the same delay."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from core.events import Count
from core.stats import HacMean, dm_test, pt_test
from harness.realdata import run_chain
from operators.forecast import ForecastConfig, predict

MODELS = ("naive", "linear", "linear_conformal", "logistic", "pa", "hat", "arf", "bayes_linear", "snarimax",
          "cnn_gru")


@pytest.fixture(scope="module")
def full_chain(ws_dir):
    """Spot BTCUSDT 2024-08-08 -> 09 with every learner at horizons 1 and 10."""
    from dataflows.settings import Settings

    base = Settings()
    s = base.model_copy(update={"forecast": ForecastConfig(horizons=(1, 10), models=MODELS)})
    return run_chain([ws_dir / "spot" / "btcusdt_20240808.gz", ws_dir / "spot" / "btcusdt_20240809.gz"], s)


def _last(chain) -> dict:
    return {(m.model, m.horizon): m for m in chain.metrics}


def _series(chain, model: str, h: int) -> list:
    return [f for f in chain.forecasts if f.model == model and f.horizon == h]


def test_hac_mean_matches_a_direct_computation_at_every_lag() -> None:
    rng = random.Random(3)
    xs = [rng.gauss(0.2, 1.0) + (0.5 * i % 3) for i in range(57)]
    for lag in range(0, 9):
        acc = HacMean(lag)
        for n, x in enumerate(xs, 1):
            acc.add(x)
            if n < 3:
                continue
            a = np.array(xs[:n]) - np.mean(xs[:n])
            v = a @ a / n + sum(2 * (1 - k / (lag + 1)) * (a[k:] @ a[:-k]) / n for k in range(1, min(lag, n - 1) + 1))
            assert math.isclose(acc.long_run_variance(), v, rel_tol=1e-10, abs_tol=1e-12), (lag, n)


@pytest.mark.integration  # slow: the operator chain over every recording
def test_diebold_mariano_matches_statsmodels_hac_on_real_forecasts(full_chain) -> None:
    """DM / HLN factor = mean(d) / HAC standard error of statsmodels' OLS of
    d on a constant (Newey-West, Bartlett, maxlags h - 1), to 1e-9."""
    import statsmodels.api as sm
    from scipy.stats import t as student_t

    checked = 0
    for (model, h), m in _last(full_chain).items():
        fc = _series(full_chain, model, h)
        d = np.array([f.realized_return ** 2 - f.error ** 2 for f in fc])
        assert len(d) == m.n
        if model == "naive":
            assert not d.any() and m.dm_stat is None and m.dm_p_value is None
            continue
        res = sm.OLS(d, np.ones(len(d))).fit(cov_type="HAC", cov_kwds={"maxlags": h - 1, "use_correction": False})
        n = len(d)
        hln = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
        assert math.isclose(m.dm_stat / hln, res.params[0] / res.bse[0], rel_tol=1e-9), (model, h)
        assert math.isclose(m.dm_p_value, student_t.sf(m.dm_stat, n - 1), rel_tol=1e-9), (model, h)
        checked += 1
    assert checked == 2 * (len(MODELS) - 1)


@pytest.mark.integration  # slow: the operator chain over every recording
def test_hit_rate_standard_error_is_hac_and_wider_under_overlap(full_chain) -> None:
    """The hit indicator's HAC standard error equals statsmodels'; at h = 10
    overlapping moves carry less information than independent ones, on every
    model that calls directions (the design effect on these recordings)."""
    import statsmodels.api as sm

    for (model, h), m in _last(full_chain).items():
        if m.hit_rate is None:
            continue
        z = np.array([float(f.pred_return * f.realized_return > 0) for f in _series(full_chain, model, h)
                      if f.realized_return != 0.0])
        res = sm.OLS(z, np.ones(len(z))).fit(cov_type="HAC", cov_kwds={"maxlags": h - 1, "use_correction": False})
        assert math.isclose(m.hit_rate_se, res.bse[0], rel_tol=1e-9), (model, h)
        iid = math.sqrt(m.hit_rate * (1 - m.hit_rate) / m.n_directional)
        if h == 1:
            assert math.isclose(m.hit_rate_se, iid, rel_tol=1e-9)
        else:
            assert m.hit_rate_se > 1.5 * iid, (model, m.hit_rate_se, iid)


@pytest.mark.integration  # slow: the operator chain over every recording
def test_pesaran_timmermann_on_non_overlapping_real_forecasts(full_chain) -> None:
    """PT uses the 1st, (h+1)-th, ... scored forecast; its statistic equals a
    direct computation from those pairs, and its square is close to Pearson's
    chi-square of the 2x2 table (the two are asymptotically equal)."""
    from scipy.stats import chi2_contingency

    compared = 0
    for (model, h), m in _last(full_chain).items():
        fc = _series(full_chain, model, h)[::h]
        pairs = [(f.pred_return > 0, f.realized_return > 0) for f in fc
                 if f.pred_return != 0.0 and f.realized_return != 0.0]
        assert m.n_pt == len(pairs), (model, h)
        if model == "naive":
            assert m.pt_stat is None
            continue
        x = np.array([p for p, _ in pairs], float)
        y = np.array([r for _, r in pairs], float)
        n = len(pairs)
        p_hat, px, py = float(np.mean(x == y)), x.mean(), y.mean()
        ps = py * px + (1 - py) * (1 - px)
        v = ps * (1 - ps) / n - ((2 * py - 1) ** 2 * px * (1 - px) / n + (2 * px - 1) ** 2 * py * (1 - py) / n
                                 + 4 * py * px * (1 - py) * (1 - px) / n ** 2)
        assert math.isclose(m.pt_stat, (p_hat - ps) / math.sqrt(v), rel_tol=1e-9), (model, h)
        table = np.array([[np.sum((x == a) & (y == b)) for b in (0, 1)] for a in (0, 1)])
        if table.min() >= 5:
            chi2 = chi2_contingency(table, correction=False)[0]
            assert math.isclose(m.pt_stat ** 2, chi2, rel_tol=0.05), (model, h, m.pt_stat ** 2, chi2)
            compared += 1
    assert compared >= 5


@pytest.mark.integration  # slow: the operator chain over every recording
def test_a_significant_overlapping_hit_rate_is_not_significant_for_pt(full_chain) -> None:
    """At h = 10 the plain binomial test on overlapping moves calls some
    model's hit rate significant that the non-overlapping PT test does not:
    the overstatement the tests replace, on real data."""
    from scipy.stats import binomtest

    flipped = []
    for (model, h), m in _last(full_chain).items():
        if h == 10 and m.hit_rate is not None:
            p_binom = binomtest(m.hits, m.n_directional, 0.5, alternative="greater").pvalue
            if p_binom < 0.05 and m.pt_p_value is not None and m.pt_p_value > 0.05:
                flipped.append(model)
    assert flipped


def test_tests_are_undefined_until_they_can_be_computed() -> None:
    acc = HacMean(9)
    for d in (1.0, 2.0, 3.0):
        acc.add(d)
    assert dm_test(acc, 10) == (None, None)  # n <= 2h
    assert pt_test(10, 10, 10, 10) == (None, None)  # always up, always right: no variance
    assert pt_test(1, 1, 1, 0) == (None, None)


@pytest.mark.integration  # slow: the operator chain over every recording
def test_holm_matches_statsmodels_on_the_run_p_values(full_chain) -> None:
    from statsmodels.stats.multitest import multipletests

    from core.stats import holm
    from sinks.summary import instruments_summary

    summary = instruments_summary(_last(full_chain).values())
    entries = [e for s in summary.values() for hs in s["models"].values() for e in hs.values()]
    for test in ("dm", "pt"):
        ps = [e[f"{test}_p_value"] for e in entries if e[f"{test}_p_value"] is not None]
        assert len(ps) >= 15
        expected = list(multipletests(ps, alpha=0.05, method="holm")[0])
        assert holm(ps) == expected
        assert [e[f"{test}_holm"] for e in entries if e[f"{test}_p_value"] is not None] == expected
        assert all(e[f"{test}_holm"] is None for e in entries if e[f"{test}_p_value"] is None)
    # the binomial p-value is reported at h = 1 only
    assert all((e["hit_rate_p_value"] is not None) == (h == "1" and e["hit_rate"] is not None)
               for s in summary.values() for hs in s["models"].values() for h, e in hs.items())


def test_wilson_interval_matches_scipy() -> None:
    from scipy.stats import binomtest

    from core.stats import wilson_interval

    for k, n in ((236, 323), (0, 10), (10, 10), (51, 100)):
        ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
        lo, hi = wilson_interval(k / n, n)
        assert math.isclose(lo, ci.low, abs_tol=1e-12) and math.isclose(hi, ci.high, abs_tol=1e-12)


@pytest.mark.integration  # slow: the operator chain over every recording
def test_prequential_errors_match_river_progressive_validation(full_chain) -> None:
    """Every learner, fed the chain's real feature rows through River's
    ``evaluate.progressive_val_score(..., moment="ts", delay=h bars)``, gets
    the same MAE and RMSE as the dataflow's metrics, to floating-point
    precision. River schedules the predictions and the delayed learning and
    computes the metrics; the learner's forecast is taken as the forecast
    operator takes it (:func:`operators.forecast.predict`, with its guard
    against diverged forecasts)."""
    from river import base, compose, evaluate
    from river import metrics as rm

    from models.registry import build

    class Forecaster(base.Regressor):
        def __init__(self, model, lim: float):
            self.model, self.lim = model, lim

        def learn_one(self, x, y):
            self.model.learn_one(x, y)

        def predict_one(self, x):
            pred = predict(self.model, x, self.lim)[0]
            return 0.0 if pred is None else pred

    rows = full_chain.rows
    by_ts = {r.ts_end: r for r in rows}
    interval = rows[0].interval
    last = _last(full_chain)
    lim = full_chain.settings.forecast.max_abs_return
    learners = full_chain.settings.forecast.learners
    assert any(type(c) is Count and c.name == "forecasts_invalid" for c in full_chain.join_out)
    for h in (1, 10):
        data = [({**r.x, "ts": r.ts_end}, math.log(by_ts[r.ts_end + h * interval].price / r.price))
                for r in rows if r.ready and r.ts_end + h * interval in by_ts]
        for name in MODELS:
            metric = rm.MAE() + rm.RMSE()
            model = compose.Discard("ts") | Forecaster(build(name, learners, h), lim)
            evaluate.progressive_val_score(data, model, metric, moment="ts", delay=h * interval)
            m = last[(name, h)]
            assert m.n == len(data)
            assert math.isclose(metric[0].get(), m.mae, rel_tol=1e-12), (name, h)
            assert math.isclose(metric[1].get(), m.rmse, rel_tol=1e-12), (name, h)


def test_one_wilson_interval_for_scalars_and_arrays() -> None:
    """Issue 24: the report's bands and the summary's interval are one
    function: on numpy arrays (the report's rolling hit rate, its
    calibration bins) it gives, element by element, exactly what it gives on
    floats (the summary), and scipy's Wilson interval."""
    from scipy.stats import binomtest

    from core.stats import wilson_interval

    k, n = np.array([236, 0, 10, 51, 7]), np.array([323, 10, 10, 100, 9])
    lo, hi = wilson_interval(k / n, n.astype(float))
    for i in range(len(k)):
        ci = binomtest(int(k[i]), int(n[i])).proportion_ci(0.95, method="wilson")
        assert (lo[i], hi[i]) == wilson_interval(float(k[i] / n[i]), float(n[i]))
        assert math.isclose(lo[i], ci.low, abs_tol=1e-12) and math.isclose(hi[i], ci.high, abs_tol=1e-12)



def test_normal_cdf_is_accurate_in_the_tails_and_the_signals_use_it() -> None:
    """Issue 24: one normal CDF. It keeps its relative precision far in the
    lower tail (scipy's log-CDF as the reference), where ``(1 + erf) / 2``
    rounds to 0; a regressor's P(up) 10 standard errors below zero is that
    value, not 0 (operators/signals.py had the erf form)."""
    from scipy.stats import norm

    from core.events import Forecast, ForecastRecord
    from core.stats import normal_cdf
    from operators.signals import SignalConfig, SignalState, step

    for x in np.linspace(-37.0, 8.0, 451):
        assert math.isclose(normal_cdf(float(x)), math.exp(norm.logcdf(x)), rel_tol=1e-11)
    st = SignalState(SignalConfig())
    st, _ = step(st, Forecast("X", "linear", 1, 1_000, 2_000, 0.0, 100.0, 100.0))
    st, _ = step(st, ForecastRecord("X", "linear", 1, 1_000, 2_000, 0.0, 100.0, 1e-4, 100.01, 1e-4))
    st, out = step(st, Forecast("X", "linear", 1, 2_000, 3_000, -1e-3, 100.0, 99.9))
    p_up = out[-1].p_up
    assert p_up == normal_cdf(-1e-3 / math.sqrt(1e-4 * 1e-4)) and 7.6e-24 < p_up < 7.7e-24

"""The statistics of each book's Sharpe ratio (operators/pnl.py,
sinks/summary.py::economics_summary): the streaming skewness and kurtosis,
Lo's standard error, the probabilistic and the deflated Sharpe ratios, each
recomputed here from the per-bar returns with numpy and scipy."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from scipy import stats

from core.events import EconomicsRecord, EquityPoint
from core.stats import probabilistic_sharpe
from dataflows.settings import Settings
from harness.realdata import csv_dicts, drive, pnl_inputs
from operators import pnl
from sinks.report import read_last
from sinks.summary import economics_summary

EULER_GAMMA = 0.5772156649


def lo_se(r: np.ndarray, a: float) -> float:
    """Lo (2002), IID returns: SE of the annualized Sharpe ratio."""
    sr = r.mean() / r.std(ddof=1)
    return math.sqrt(a) * math.sqrt((1 + sr**2 / 2) / len(r))


def psr(r: np.ndarray, sr0: float = 0.0) -> float:
    """Bailey & López de Prado (2012), from the returns themselves."""
    sr = r.mean() / r.std(ddof=1)
    g3, g4 = stats.skew(r), stats.kurtosis(r, fisher=False)
    return float(stats.norm.cdf((sr - sr0) * math.sqrt(len(r) - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)))


def sr0(srs: list[float], n: int) -> float:
    """Bailey & López de Prado (2014): the expected maximum Sharpe ratio of n
    unskilled trials whose Sharpe ratios have the variance of ``srs``."""
    v = np.var(srs, ddof=1)
    return math.sqrt(v) * ((1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n)
                           + EULER_GAMMA * stats.norm.ppf(1 - 1 / (n * math.e)))


@pytest.fixture(scope="module", params=["btc_spot_chain", "perp_chain"])
def books(request) -> tuple[float, dict]:
    """(bars a year, {(model, horizon): (per-bar returns, last economics)}) of
    the plain sign rule on a real chain."""
    chain = request.getfixturevalue(request.param)
    cfg, iv = pnl.ExecutionConfig(), chain.settings.bars.interval_ms
    _, res = drive(pnl.step, pnl.PnlState(cfg, iv), pnl_inputs(chain))
    equity: dict = defaultdict(lambda: [cfg.initial_equity])
    last = {}
    for r in res:
        if type(r) is EquityPoint:
            equity[(r.model, r.horizon)].append(r.equity)
        elif type(r) is EconomicsRecord:
            last[(r.model, r.horizon)] = r
    out = {}
    for key, eq in equity.items():
        e = np.array(eq)
        out[key] = (e[1:] / e[:-1] - 1, last[key])
    return 365 * 86400 / (iv / 1000), out


def test_streaming_moments_agree_with_scipy_on_real_equity(books):
    """Skewness and kurtosis from the running central sums, and the per-bar
    Sharpe ratio, against scipy's two-pass ones over the whole series."""
    _, bk = books
    checked = 0
    for r, e in bk.values():
        assert e.n_bars == len(r)
        if r.std() == 0:
            assert (e.sharpe_per_bar, e.sharpe_se, e.skew, e.kurt, e.psr) == (None,) * 5
            continue
        assert math.isclose(e.skew, stats.skew(r), rel_tol=1e-9)
        assert math.isclose(e.kurt, stats.kurtosis(r, fisher=False), rel_tol=1e-9)
        assert math.isclose(e.sharpe_per_bar, r.mean() / r.std(ddof=1), rel_tol=1e-9)
        checked += 1
    assert checked >= 4


def test_moments_stay_accurate_when_the_mean_dwarfs_the_spread():
    """Returns of 1% +- 1e-7: raw power sums would lose every digit of the
    third and fourth central moments; the running central sums keep them."""
    rng = np.random.default_rng(7)
    r = 0.01 + 1e-7 * rng.standard_exponential(5000)
    b = pnl._Book(0.0, 0.0, 0.0)
    for x in r:
        pnl._moments(b, float(x))
    n = len(r)
    assert math.isclose(b.mean, r.mean(), rel_tol=1e-12)
    assert math.isclose(math.sqrt(n) * b.m3 / b.m2**1.5, stats.skew(r), rel_tol=1e-6)
    assert math.isclose(n * b.m4 / b.m2**2, stats.kurtosis(r, fisher=False), rel_tol=1e-6)


def test_lo_standard_error_and_psr_from_the_returns(books):
    a, bk = books
    checked = 0
    for r, e in bk.values():
        if r.std() == 0:
            continue
        assert math.isclose(e.sharpe_se, lo_se(r, a), rel_tol=1e-9)
        assert math.isclose(e.sharpe, e.sharpe_per_bar * math.sqrt(a), rel_tol=1e-12)
        want = psr(r)
        assert math.isclose(e.psr, want, rel_tol=1e-6, abs_tol=1e-300), (e.psr, want)
        checked += 1
    assert checked >= 4


def test_psr_and_se_by_hand():
    """Three returns 0.2%, 0%, 0.1%: mean 0.001, sample std 0.001, so SR = 1
    per bar; symmetric, skewness 0; m2 = 2/3 e-6, m4 = 2/3 e-12, kurtosis
    (2/3) / (2/3)^2 = 1.5. Lo: SE = sqrt((1 + 1/2) / 3) = 0.7071; PSR =
    Phi(1 x sqrt(2) / sqrt(1 - 0 + 0.5 / 4)) = Phi(4/3) = 0.908789."""
    r = np.array([0.002, 0.0, 0.001])
    b = pnl._Book(0.0, 0.0, 0.0)
    for x in r:
        pnl._moments(b, float(x))
    sr = b.mean / math.sqrt(b.m2 / 2)
    skew, kurt = math.sqrt(3) * b.m3 / b.m2**1.5, 3 * b.m4 / b.m2**2
    assert math.isclose(sr, 1.0, rel_tol=1e-12) and abs(skew) < 1e-9 and math.isclose(kurt, 1.5, rel_tol=1e-12)
    assert math.isclose(lo_se(r, 1.0), math.sqrt(0.5), rel_tol=1e-12)
    got = probabilistic_sharpe(sr, 0.0, 3, skew, kurt)
    assert round(got, 6) == 0.908789 and math.isclose(got, stats.norm.cdf(4 / 3), rel_tol=1e-9)
    assert math.isclose(got, psr(r), rel_tol=1e-9)


def test_bailey_lopez_de_prado_numerical_example():
    """Bailey & López de Prado (2014), section "A numerical example": 100
    trials, annualized V[SR] = 1/2, the best trial SR 2.5 a year over 1,250
    daily returns with skewness -3 and kurtosis 10: SR0 = 0.1132 a day,
    DSR = 0.9004. Built as 100 books (the other 99 chosen so the 100 per-bar
    Sharpe ratios have a variance of exactly 0.5 / 250) and two baselines."""
    best = 2.5 / math.sqrt(250)
    rng = np.random.default_rng(0)
    v = np.concatenate([[0.0], rng.standard_normal(99)])
    srs = best + (v - v[0]) * math.sqrt(0.5 / 250 / np.var(v, ddof=1))
    assert math.isclose(srs[0], best) and math.isclose(np.var(srs, ddof=1), 0.002, rel_tol=1e-12)

    def book(model: str, horizon: int, sr: float) -> EconomicsRecord:
        return EconomicsRecord("X", model, horizon, 0, 1250, 0.0, 0.0, 0.0, sr * math.sqrt(250), None, 0.0, None, 0,
                               None, None, 0.0, 0.0, None, 0, None, sharpe_per_bar=sr, skew=-3.0, kurt=10.0)

    recs = [book(f"m{i:03d}", 1, float(s)) for i, s in enumerate(srs)]
    recs += [book("buy_and_hold", 0, 5.0), book("flat", 0, -5.0)]  # benchmarks: no trials, no effect on SR0
    econ = economics_summary(recs)["X"]
    assert round(sr0(list(srs), 100), 4) == 0.1132
    assert econ["m000"]["1"]["n_trials"] == 100
    assert round(econ["m000"]["1"]["dsr"], 4) == 0.9004
    assert econ["buy_and_hold"]["0"]["dsr"] is None and econ["buy_and_hold"]["0"]["n_trials"] is None
    for m, hs in econ.items():  # every trial: PSR at SR0, recomputed
        if m.startswith("m"):
            e = hs["1"]
            z = (e["sharpe_per_bar"] - sr0(list(srs), 100)) * math.sqrt(1249) / math.sqrt(
                1 + 3 * e["sharpe_per_bar"] + 9 / 4 * e["sharpe_per_bar"] ** 2)
            assert math.isclose(e["dsr"], stats.norm.cdf(z), rel_tol=1e-7, abs_tol=1e-300)


def test_one_trial_has_no_dsr():
    rec = EconomicsRecord("X", "m", 1, 0, 100, 0.0, 0.0, 0.0, 1.0, None, 0.0, None, 0, None, None, 0.0, 0.0, None, 0,
                          None, sharpe_per_bar=0.1, sharpe_se=0.1, skew=0.0, kurt=3.0, psr=0.8)
    econ = economics_summary([rec])["X"]["m"]["1"]
    assert econ["dsr"] is None and econ["n_trials"] == 1 and econ["psr"] == 0.8


# --- end to end: economics.csv and the backtest JSON ----------------------------------------------

def test_fields_in_economics_csv_and_the_backtest_json(full_run):
    """Every new field is a column of economics.csv and a key of the JSON's
    economics entries; the CSV's values are those recomputed from equity.csv
    (the per-bar returns); dsr and n_trials follow from the CSV's last rows."""
    summary, out = full_run
    rows = csv_dicts(out / "economics.csv")
    assert {"sharpe_per_bar", "sharpe_se", "skew", "kurt", "psr"} <= set(rows[0])
    s = Settings()
    a = 365 * 86400 / (s.bars.interval_ms / 1000)
    eq: dict = defaultdict(lambda: [s.execution.initial_equity])
    for row in csv_dicts(out / "equity.csv"):
        eq[(row["instrument"], row["model"], row["horizon"])].append(float(row["equity"]))
    last = {(r["instrument"], r["model"], r["horizon"]): r for r in rows}
    econ = summary["economics"]
    n_books = len(s.forecast.models) * len(s.forecast.horizons)
    checked = 0
    for inst, books in econ.items():
        trials = {m: hs for m, hs in books.items() if m not in ("buy_and_hold", "flat")}
        srs = [e["sharpe_per_bar"] for hs in trials.values() for e in hs.values() if e["sharpe_per_bar"] is not None]
        bench = sr0(srs, n_books)
        assert bench > 0
        for m, hs in books.items():
            for h, e in hs.items():
                assert {"sharpe_per_bar", "sharpe_se", "skew", "kurt", "psr", "dsr", "n_trials"} <= set(e)
                row = last[(inst, m, h)]
                for k in ("sharpe_per_bar", "sharpe_se", "skew", "kurt", "psr"):
                    assert e[k] == (float(row[k]) if row[k] else None)
                series = np.array(eq[(inst, m, h)])
                r = series[1:] / series[:-1] - 1
                assert e["n_bars"] == len(r)
                if h == "0":
                    assert e["dsr"] is None and e["n_trials"] is None
                else:
                    assert e["n_trials"] == n_books
                if r.std() == 0:
                    assert e["psr"] is None and e["dsr"] is None
                    continue
                assert math.isclose(e["skew"], stats.skew(r), rel_tol=1e-9)
                assert math.isclose(e["kurt"], stats.kurtosis(r, fisher=False), rel_tol=1e-9)
                assert math.isclose(e["sharpe_se"], lo_se(r, a), rel_tol=1e-9)
                assert math.isclose(e["psr"], psr(r), rel_tol=1e-6, abs_tol=1e-300)
                if h != "0":
                    assert math.isclose(e["dsr"], psr(r, bench), rel_tol=1e-6, abs_tol=1e-300)
                    assert e["dsr"] <= e["psr"]  # N > 1 and SR0 > 0: deflating never helps
                    checked += 1
    assert checked >= 8


@pytest.fixture(scope="module")
def free_run(ws_dir, tmp_path_factory):
    """The backtest of every recording without fees nor slippage (the spread
    is still paid): books that make money."""
    from ticklet.backtest import run_backtest

    s = Settings()
    base = s.model_copy(update={"execution": s.execution.model_copy(
        update={"spot_fee_bps": 0.0, "usdm_fee_bps": 0.0, "slippage_bps": 0.0})})
    out = tmp_path_factory.mktemp("free_run")
    return run_backtest([str(ws_dir)], out, base=base), out


def test_dsr_deflates_the_books_that_make_money(free_run):
    """Without fees most books have a positive Sharpe ratio: their PSR is well
    above 0, and the DSR, PSR at SR0 > 0, is strictly below it; both as
    recomputed from equity.csv."""
    summary, out = free_run
    eq: dict = defaultdict(lambda: [Settings().execution.initial_equity])
    for row in csv_dicts(out / "equity.csv"):
        eq[(row["instrument"], row["model"], int(row["horizon"]))].append(float(row["equity"]))
    deflated = 0
    for inst, books in summary["economics"].items():
        trials = [e for m, hs in books.items() for h, e in hs.items() if h != "0"]
        bench = sr0([e["sharpe_per_bar"] for e in trials if e["sharpe_per_bar"] is not None], len(trials))
        for m, hs in books.items():
            for h, e in hs.items():
                if h == "0" or e["sharpe_per_bar"] is None:
                    continue
                series = np.array(eq[(inst, m, int(h))])
                r = series[1:] / series[:-1] - 1
                assert math.isclose(e["psr"], psr(r), rel_tol=1e-6, abs_tol=1e-300)
                assert math.isclose(e["dsr"], psr(r, bench), rel_tol=1e-6, abs_tol=1e-300)
                assert e["dsr"] <= e["psr"]
                if 0.01 < e["psr"] < 0.999999:
                    assert e["dsr"] < e["psr"]
                    deflated += 1
    assert deflated >= 3


def test_old_csvs_still_load(full_run, tmp_path):
    """An economics.csv written before these fields existed loads, with None."""
    _, out = full_run
    import csv

    with open(out / "economics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    old = [k for k in rows[0] if k not in ("sharpe_per_bar", "sharpe_se", "skew", "kurt", "psr")]
    path = tmp_path / "economics.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, old, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    recs = read_last(path, EconomicsRecord)
    assert recs and all(e.psr is None and e.skew is None for e in recs)
    econ = economics_summary(recs)
    assert all(e["dsr"] is None for books in econ.values() for hs in books.values() for e in hs.values())

"""Causality on the real recordings: later data never changes earlier output.

(a) end to end: the dataflow on a prefix of a recording and on the whole;
(b) per operator: prefix invariance of bars, features, forecast join, metrics;
(c) SWT: the denoised value at t only depends on the trailing window, and the
    forecast target is the raw log return of the bar price.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from core.events import Bar, ForecastRecord
from harness.realdata import drive, lines, operator_case, read_csv, recv_ns, write_gz
from operators import features
from operators.features import FeatureConfig
from operators.swt import denoise_last
from ticklet.backtest import run_backtest

# --- (a) end to end ------------------------------------------------------------

#: A recording without a REST snapshot (no book: top-of-book features), and one that starts with one (depth features).
SOURCES = ["spot/btcusdt_20240809.gz", "spot/ethusdt_20240808.gz"]


@pytest.fixture(scope="module", params=SOURCES)
def prefix_and_full(ws_dir, tmp_path_factory, request):
    src = request.param
    base = tmp_path_factory.mktemp("causality")
    real = lines(ws_dir / src)
    cut = int(len(real) * 0.4)
    prefix = write_gz(base / "prefix" / src, real[:cut])
    run_backtest([str(prefix)], base / "prefix_out")
    run_backtest([str(ws_dir / src)], base / "full_out")
    return recv_ns(real[cut - 1]), base / "prefix_out", base / "full_out"


def _rows(path, time_col: str) -> tuple[list[bytes], list[int]]:
    raw = path.read_bytes().split(b"\r\n")
    assert raw[-1] == b""
    header, body = raw[0].decode().split(","), raw[1:-1]
    col = header.index(time_col)
    return body, [int(r.split(b",")[col]) for r in body]


@pytest.mark.parametrize("name,time_col", [("forecasts.csv", "ts_target"), ("metrics.csv", "ts_target")])
def test_prefix_run_equals_the_start_of_the_full_run(prefix_and_full, name, time_col):
    t_last, p_out, f_out = prefix_and_full
    p_rows, p_times = _rows(p_out / name, time_col)
    f_rows, f_times = _rows(f_out / name, time_col)
    assert len(p_rows) > 100 and len(f_rows) > 2 * len(p_rows)
    # the prefix run resolves nothing beyond what it has received ...
    assert max(p_times) <= t_last
    # ... and everything the full run resolves up to then, byte for byte, in order
    assert p_rows == [r for r, t in zip(f_rows, f_times, strict=True) if t <= t_last]
    assert (p_out / name).read_bytes().split(b"\r\n")[0] == (f_out / name).read_bytes().split(b"\r\n")[0]


def test_prefix_forecasts_were_made_inside_the_prefix(prefix_and_full):
    t_last, p_out, _ = prefix_and_full
    header, rows = read_csv(p_out / "forecasts.csv")
    ft, tt = header.index("ts_forecast"), header.index("ts_target")
    assert all(int(r[ft]) < int(r[tt]) <= t_last for r in rows)


# --- (b) per operator ------------------------------------------------------------

@pytest.mark.parametrize("frac", [0.23, 0.61])
@pytest.mark.parametrize("name", ["bars", "depth", "features", "forecast", "metrics"])
def test_operator_prefix_invariance(chain, name, frac):
    step, init, items, full_out = operator_case(name, chain)
    cut = int(len(items) * frac)
    _, out = drive(step, init(), items[:cut])
    assert out, name
    assert out == full_out[: len(out)]
    last = items[cut - 1]
    if name in ("bars", "depth"):
        # exactly the bars that ended by the last event seen (with the book over each, from "depth")
        ref = chain.bars if name == "depth" else [msgspec.structs.replace(b, depth=None) for b in chain.bars]
        assert [b for b in out if type(b) is Bar] == [b for b in ref if b.ts_end <= last.ts_recv]
    elif name in ("features", "metrics"):
        assert len(out) == cut  # one output per input
    else:
        fc = [r for r in out if type(r) is ForecastRecord]
        assert fc == [r for r in chain.forecasts if r.ts_target <= last.ts_end]


# --- (c) SWT and the target ------------------------------------------------------

def test_swt_feature_is_the_denoised_trailing_window(btc_spot_chain):
    """With scaling off, swt_dev at bar t is the SWT-denoised log price minus
    the raw log price, from the 64 bar prices up to t and nothing later."""
    cfg = FeatureConfig(scaler="none", clip=1e12)
    w = cfg.swt.window
    bars_ = btc_spot_chain.bars
    lp = np.log(np.array([b.price for b in bars_]))
    _, rows = drive(features.step, features.FeatureState(cfg), bars_)
    assert not any(b.reset for b in bars_)
    prev_level = None
    checked = 0
    for t in range(w - 1, len(bars_)):
        window = lp[t - w + 1 : t + 1]
        den, energies = denoise_last(window * 1e4, cfg.swt)  # scale-equivariant (soft threshold)
        level = den / 1e4
        x = rows[t].x
        assert math.isclose(x["swt_dev"], (level - lp[t]) * 1e4, abs_tol=1e-6), t
        if prev_level is not None:
            assert math.isclose(x["swt_slope"], (level - prev_level) * 1e4, abs_tol=1e-6), t
        prev_level = level
        checked += 1
    assert checked > 500
    # the denoised value at t is a function of that window: appending later
    # bars to the series changes nothing at t
    t = len(bars_) // 2
    _, early = drive(features.step, features.FeatureState(cfg), bars_[: t + 1])
    assert early[t] == rows[t]


def test_swt_fast_path_equals_pywavelets_on_real_windows(btc_spot_chain):
    from operators.swt import SWTConfig, denoise_last_reference

    lp = np.log(np.array([b.price for b in btc_spot_chain.bars]))
    for cfg in (SWTConfig(), SWTConfig(window=32, level=2, wavelet="sym8", threshold="bayes", mode="hard"),
                SWTConfig(window=16, level=1, wavelet="haar", threshold="minimax", boundary="periodic")):
        for t in range(cfg.window, len(lp), 7):
            win = (lp[t - cfg.window : t] - lp[t - 1]) * 1e4
            fast, ef = denoise_last(win, cfg)
            ref, er = denoise_last_reference(win, cfg)
            assert abs(fast - ref) < 1e-9 and np.allclose(ef, er, rtol=1e-9, atol=1e-12), (cfg, t)


def test_forecast_target_is_the_raw_log_return_of_bar_prices(chain):
    price_at = {b.ts_end: b.price for b in chain.bars}
    interval = chain.settings.bars.interval_ms * 1_000_000
    assert len(chain.forecasts) > 1000
    for r in chain.forecasts:
        p0, p1 = price_at[r.ts_forecast], price_at[r.ts_target]
        assert r.ts_target == r.ts_forecast + r.horizon * interval
        assert r.realized_price == p1
        assert math.isclose(r.realized_return, math.log(p1 / p0), rel_tol=1e-12, abs_tol=1e-18)
        assert math.isclose(r.error, r.realized_return - r.pred_return, rel_tol=1e-12, abs_tol=1e-18)
        assert math.isclose(r.pred_price, p0 * math.exp(r.pred_return), rel_tol=1e-12)
    # the bar price is the mid-quote at the bar's end (default price="mid")
    assert all(b.price == (b.bid + b.ask) / 2 for b in chain.bars)

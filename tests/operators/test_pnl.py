"""Execution and accounting (operators/fills.py, operators/pnl.py) on the real
recordings: decisions from the chain's own forecasts (a plain sign rule,
``realdata.signals_of``) filled against the real best bid/ask."""

from __future__ import annotations

import bisect
import math
from collections import defaultdict

import numpy as np
import pytest

from core.events import EconomicsRecord, EquityPoint, Fill, FillQuote, Quote
from harness.realdata import drive, pnl_inputs, signals_of
from operators import pnl


@pytest.fixture(scope="module")
def runs(request) -> dict:
    """(chain, inputs, outputs) for both real chains, once."""
    out = {}
    for name in ("btc_spot_chain", "perp_chain"):
        chain = request.getfixturevalue(name)
        items = pnl_inputs(chain)
        _, res = drive(pnl.step, pnl.PnlState(pnl.ExecutionConfig(), chain.settings.bars.interval_ms), items)
        out[name] = (chain, items, res)
    return out


@pytest.fixture(params=["btc_spot_chain", "perp_chain"])
def run(runs, request):
    return runs[request.param]


def test_every_fill_is_at_the_first_quote_received_after_decision_plus_latency(run):
    """No fill uses a quote known before its decision time plus the latency:
    each one is at the first bookTicker received at or after it."""
    chain, _, res = run
    lat = pnl.ExecutionConfig().latency_ms * 1_000_000
    quotes = [e for e in chain.events if type(e) is Quote]
    times = [q.ts_recv for q in quotes]
    fl = [r for r in res if type(r) is Fill]
    assert len(fl) > 100
    for f in fl:
        i = bisect.bisect_left(times, f.ts_forecast + lat)
        q = quotes[i]
        assert f.ts_recv == q.ts_recv >= f.ts_forecast + lat
        assert f.mid == (q.bid + q.ask) / 2
        assert f.price == (q.ask * (1 + 1e-4) if f.qty > 0 else q.bid * (1 - 1e-4))  # the touch, 1 bp slippage


def test_accounting_identity(run):
    """initial equity + PnL at the mids - costs = equity, for every book at
    every bar; the costs are exactly those of the fills; equity = cash +
    position x mid."""
    chain, _, res = run
    cfg = pnl.ExecutionConfig()
    costs: dict = defaultdict(float)
    cash: dict = {}
    pos: dict = defaultdict(float)
    n_eq = 0
    for r in res:
        key = (r.model, r.horizon) if hasattr(r, "model") else None
        if type(r) is Fill:
            costs[key] += r.spread_cost + r.slippage_cost + r.fee
            cash[key], pos[key] = r.cash, r.position
        elif type(r) is EquityPoint:
            n_eq += 1
            assert math.isclose(r.equity, r.gross_equity - r.costs, rel_tol=1e-12, abs_tol=1e-6)
            assert math.isclose(r.costs, costs[key], rel_tol=1e-12, abs_tol=1e-9)
            assert math.isclose(r.equity, cash.get(key, cfg.initial_equity) + pos[key] * r.mid, rel_tol=1e-12)
            assert r.position == pos[key]
    assert n_eq > 1000


def test_economics_recomputed_from_the_equity_series(run):
    """Sharpe, Sortino, drawdown, exposure and break-even from the equity
    points alone agree with the running figures."""
    chain, _, res = run
    cfg = pnl.ExecutionConfig()
    a = 365 * 86400 / (chain.settings.bars.interval_ms / 1000)
    series: dict = defaultdict(list)
    last: dict = {}
    traded: dict = defaultdict(float)
    for r in res:
        if type(r) is EquityPoint:
            series[(r.model, r.horizon)].append(r)
        elif type(r) is EconomicsRecord:
            last[(r.model, r.horizon)] = r
        elif type(r) is Fill:
            traded[(r.model, r.horizon)] += abs(r.qty) * r.mid
    checked = 0
    for key, pts in series.items():
        e = last[key]
        eq = np.array([cfg.initial_equity] + [p.equity for p in pts])
        r = eq[1:] / eq[:-1] - 1
        assert e.n_bars == len(pts)
        assert math.isclose(e.net_return, eq[-1] / cfg.initial_equity - 1, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(e.max_drawdown, float(np.max(1 - eq / np.maximum.accumulate(eq))), abs_tol=1e-12)
        assert math.isclose(e.exposure, np.mean([p.position != 0 for p in pts]), rel_tol=1e-12)
        if r.std(ddof=1) > 0:
            assert math.isclose(e.sharpe, r.mean() / r.std(ddof=1) * math.sqrt(a), rel_tol=1e-6)
            assert math.isclose(e.sortino, r.mean() / math.sqrt(np.mean(np.minimum(r, 0) ** 2)) * math.sqrt(a),
                                rel_tol=1e-6)
            checked += 1
        if traded[key]:
            gross = pts[-1].gross_equity - cfg.initial_equity
            assert math.isclose(e.break_even_bps, gross / traded[key] * 1e4, rel_tol=1e-9, abs_tol=1e-12)
    assert checked >= 2


def test_the_join_does_not_depend_on_arrival_order(run):
    """Decisions and fill quotes may arrive in any interleaving (they come by
    different paths of the dataflow): all decisions first, all quotes first,
    or mixed, the books come out the same."""
    chain, items, res = run
    cfg, iv = pnl.ExecutionConfig(), chain.settings.bars.interval_ms
    sigs = [x for x in items if type(x) is not FillQuote]
    quotes = [x for x in items if type(x) is FillQuote]
    for order in (sigs + quotes, quotes + sigs):
        _, other = drive(pnl.step, pnl.PnlState(cfg.model_copy(update={"max_pending": 10**6}), iv), order)
        assert sorted(map(repr, other)) == sorted(map(repr, res))


def test_zero_fees_leave_the_spread(run):
    """Without fee and slippage the only cost is half the spread per side."""
    chain, items, _ = run
    cfg = pnl.ExecutionConfig(spot_fee_bps=0, usdm_fee_bps=0, slippage_bps=0)
    _, res = drive(pnl.step, pnl.PnlState(cfg, chain.settings.bars.interval_ms), items)
    fl = [r for r in res if type(r) is Fill]
    assert all(r.fee == 0 and r.slippage_cost == 0 and r.spread_cost >= 0 for r in fl)
    assert any(r.spread_cost > 0 for r in fl)


def test_signals_of_follow_the_forecasts(btc_spot_chain):
    sigs = signals_of(btc_spot_chain)
    assert sigs and all(s.target_position == 0.5 * s.side for s in sigs)
    assert {s.model for s in sigs} == set(btc_spot_chain.settings.forecast.models)


# --- signals (operators/signals.py) ---------------------------------------------------------------

def _signals(chain, **cfg):
    from operators import signals

    _, out = drive(signals.step, signals.SignalState(signals.SignalConfig(**cfg)), chain.join_out)
    return out


def test_p_up_is_the_models_own_or_from_past_errors_only(chain):
    """logistic gives its own P(up); for a regressor it is Phi(pred / RMS of the
    errors scored by the decision time), recomputed here from the records."""
    from core.events import Forecast, ForecastRecord

    issued = {(f.model, f.horizon, f.ts_forecast): f for f in chain.join_out if type(f) is Forecast}
    scored = [r for r in chain.join_out if type(r) is ForecastRecord]
    sigs = [s for s in _signals(chain) if s.model not in ("buy_and_hold", "flat")]
    assert {s.model for s in sigs} == set(chain.settings.forecast.models)
    checked = 0
    for s in sigs[::50]:
        f = issued[(s.model, s.horizon, s.ts_forecast)]
        if s.model == "logistic":
            assert f.p_up is not None and s.p_up == f.p_up
            continue
        assert f.p_up is None
        errs = [r.error for r in scored if r.model == s.model and r.horizon == s.horizon
                and r.ts_target <= s.ts_forecast]
        rms = math.sqrt(sum(e * e for e in errs) / len(errs)) if errs else 0.0
        want = 0.5 * (1 + math.erf(f.pred_return / rms / math.sqrt(2))) if rms > 0 else 0.5
        assert math.isclose(s.p_up, want, rel_tol=1e-9, abs_tol=1e-15)
        checked += 1
    assert checked > 10


def test_sides_follow_the_rule_and_sizes_stay_within_the_caps(chain):
    for s in _signals(chain):
        if s.model == "buy_and_hold":
            assert (s.side, s.target_position) == (1, 1.0)
        elif s.model == "flat":
            assert (s.side, s.target_position) == (0, 0.0)
        else:
            assert s.side == (1 if s.p_up >= 0.55 else -1 if s.p_up <= 0.45 else 0)
            assert 0 <= s.side * s.target_position <= 1.0 and (s.side != 0 or s.target_position == 0)
    edge = [s for s in _signals(chain, rule="edge", edge_cost_bps=0.5) if s.model == "linear"]
    assert all(s.side == 0 or abs(s.expected_return) * 1e4 > 0.5 for s in edge)
    assert any(s.side != 0 for s in edge)


def test_a_gap_close_does_not_depend_on_arrival_order():
    """A book holding a position when the data stops closes it at its last
    quote before taking the first decision after the gap, in every arrival
    order (the quote after the gap may come before the last decision before
    it: decisions travel a longer path through the dataflow)."""
    from core.events import Signal

    S = 10**9
    s1, s2 = (Signal("X", "m", 1, t, 1, 0.6, 1e-4, 1.0) for t in (5 * S, 5 * S + 400 * S))
    q1 = FillQuote("X", 5 * S, 5 * S + 60_000_000, 99.9, 1.0, 100.1, 1.0)
    q2 = FillQuote("X", 405 * S, 405 * S + 60_000_000, 119.9, 1.0, 120.1, 1.0)
    runs = []
    for order in ([s1, q1, q2, s2], [q1, q2, s1, s2], [q1, s1, s2, q2], [s1, s2, q1, q2]):
        _, out = drive(pnl.step, pnl.PnlState(pnl.ExecutionConfig(), 1000, max_gap_bars=300), order)
        runs.append(out)
    assert all(r == runs[0] for r in runs)
    fl = [r for r in runs[0] if type(r) is Fill]
    assert [(f.ts_forecast, f.qty > 0, f.position == 0) for f in fl] == [
        (5 * S, True, False), (5 * S, False, True), (405 * S, True, False)]  # in, out at the old quote, in again
    assert fl[1].price == 99.9 * (1 - 1e-4)


@pytest.fixture(scope="module")
def coinm_run() -> tuple:
    """The COIN-M BTCUSD_PERP recording (hftbacktest's, tests/data/NOTICE.md)
    through the pure operators and the books."""
    from harness.realdata import REPO, run_chain

    chain = run_chain([REPO / "tests" / "data" / "fixtures" / "hftbacktest" / "cm" / "btcusd_perp_20240808.gz"])
    assert chain.instrument == "BTCUSD_PERP"
    items = pnl_inputs(chain)
    _, res = drive(pnl.step, pnl.PnlState(pnl.ExecutionConfig(), chain.settings.bars.interval_ms), items)
    return chain, items, res


def test_coinm_books_are_inverse_and_kept_in_the_coin(coinm_run):
    """A COIN-M book holds USD of contracts and counts in the coin: each
    fill buys at the ask (sells at the bid) moved by the slippage and pays
    the COIN-M fee on its worth in coins (qty / price); equity = cash -
    position / mid; equity = gross - costs; a book starts with the initial
    equity's worth of the coin at its first mid."""
    chain, _, res = coinm_run
    cfg = pnl.ExecutionConfig()
    quotes = {q.ts_recv: q for q in chain.events if type(q) is Quote}
    cash: dict = {}
    pos: dict = defaultdict(float)
    costs: dict = defaultdict(float)
    first_mid: dict = {}
    n_fill = n_eq = 0
    for r in res:
        key = (r.model, r.horizon) if hasattr(r, "model") else None
        if type(r) is Fill:
            n_fill += 1
            q = quotes[r.ts_recv]
            assert r.price == (q.ask * (1 + 1e-4) if r.qty > 0 else q.bid * (1 - 1e-4))
            assert math.isclose(r.fee, abs(r.qty) / r.price * cfg.coinm_fee_bps * 1e-4, rel_tol=1e-12)
            costs[key] += r.spread_cost + r.slippage_cost + r.fee
            cash[key], pos[key] = r.cash, r.position
        elif type(r) is EquityPoint:
            n_eq += 1
            first_mid.setdefault(key, r.mid)
            if key not in cash:  # no fill yet: the initial equity in coins at the book's first mid
                assert math.isclose(r.equity, cfg.initial_equity / first_mid[key], rel_tol=1e-12)
            else:
                assert math.isclose(r.equity, cash[key] - pos[key] / r.mid, rel_tol=1e-12)
            assert math.isclose(r.equity, r.gross_equity - r.costs, rel_tol=1e-12)
            assert math.isclose(r.costs, costs[key], rel_tol=1e-12, abs_tol=1e-15)
            assert r.position == pos[key]
    assert n_fill > 100 and n_eq > 1000


@pytest.mark.parametrize("size", [1, 13, 4096])
def test_fill_quotes_over_batches_are_the_fill_quotes_event_by_event(run, size):
    """``fills.step_batch`` (what the dataflow runs: only the quotes due go
    through ``step``) over the real events in batches of ``size`` gives what
    ``step`` gives event by event, and leaves the same state."""
    from operators import fills

    chain, _, _ = run
    evs = chain.events
    one, ref = drive(fills.step, fills.FillState(50, 1000, 300), evs)
    st, got = fills.FillState(50, 1000, 300), []
    for i in range(0, len(evs), size):
        st, out = fills.step_batch(st, [evs[i : i + size]])
        got.extend(out)
    assert got == ref and len(ref) > 100
    assert st == one

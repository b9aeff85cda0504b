"""Execution and accounting: decisions filled against real quotes, after costs.

Per instrument, each (model, horizon) keeps its own **book** (cash, a
position in units of the instrument). A :class:`~core.events.Signal`
taken at ``ts_forecast`` is executed against the
:class:`~core.events.FillQuote` of the same ``ts_forecast``
(:mod:`operators.fills`: the first best bid/ask received at or after the
decision plus the order latency). The two are joined on ``ts_forecast``
whatever order they arrive in: whichever comes first waits in the state.

**Fill.** The book trades from its position to ``target_position x equity /
mid`` units with one market order: a buy pays the ask, a sell gets the bid,
each moved by ``slippage_bps`` against the book, plus a taker fee of
``fee_bps`` of the traded value. The costs are split into ``spread_cost``
(the touch against the mid), ``slippage_cost`` and ``fee``.

**Gaps.** When a book's next decision comes more than ``max_gap_bars`` bars
after its last one (the data stopped; the bar builder restarts its series
there), a book with a position first closes it against the quote of its
last decision: nothing is held through a stretch of unknown prices. This is
a backtest convention, not a causal decision: the close is booked when the
data resumes, at the last quote the book traded on before the gap. Books
execute their decisions in time order whatever order decisions and quotes
arrive in, so this close comes out the same in every run.

**Marking.** At every decision the book is marked to the mid of the fill
quote: ``equity = cash + position x mid``. ``gross_equity`` is what the book
would have had trading at the mid without fees; by construction
``equity = gross_equity - costs`` (the accounting identity, tested on the
recordings).

**Economics** (an :class:`~core.events.EconomicsRecord` per decision),
with ``r_t = equity_t / equity_{t-1} - 1`` the net return of one bar and
``A = 365 x 86400 s / bar interval`` bars a year (crypto trades every day):

- ``sharpe = mean(r) / std(r) x sqrt(A)`` (sample std); ``sortino = mean(r) /
  sqrt(mean(min(r, 0)^2)) x sqrt(A)``; None while undefined;
- ``max_drawdown``: the largest fall of equity from its running peak, as a
  fraction; ``calmar = mean(r) x A / max_drawdown``;
- a **trade** is a holding period, from a flat book to flat again (a flip
  closes one and opens the next): ``trades`` closed, ``win_rate`` (net PnL
  > 0, costs included), ``profit_factor`` (gross wins / gross losses),
  ``avg_holding_s``;
- ``turnover``: value traded (at the mid) / initial equity; ``exposure``:
  share of bars with a position; ``fills``;
- ``break_even_bps = (gross_equity - initial) / value traded x 1e4``: the
  cost per side, in bps of the traded value, at which the net PnL would be
  zero. It is the one figure that says whether a signal is tradeable at all.

**Statistics of the Sharpe ratio.** With ``T = n_bars`` returns, ``SR =
mean(r) / std(r)`` the Sharpe ratio of one bar (``sharpe_per_bar``, not
annualized), ``skew = m3 / m2^1.5`` and ``kurt = m4 / m2^2`` the skewness and
the (non-excess: 3 for a normal) kurtosis of the returns, ``m_k`` their
central moments (divided by ``T``: ``scipy.stats.skew`` and
``scipy.stats.kurtosis(fisher=False)`` with their defaults), kept as running
central sums (Welford's update, extended to the third and fourth moments by
Terriberry: O(1) per book, no cancellation):

- ``sharpe_se = sqrt(A) x sqrt((1 + SR^2 / 2) / T)``: the standard error of
  the annualized Sharpe ratio for IID returns (Lo, 2002, "The Statistics of
  Sharpe Ratios", *Financial Analysts Journal* 58(4)). It assumes normal
  returns; one-second returns are far from normal (they are mostly zeros
  and jumps), which ``psr`` takes into account;
- ``psr = Phi(SR x sqrt(T - 1) / sqrt(1 - skew x SR + (kurt - 1) / 4 x
  SR^2))``: the probabilistic Sharpe ratio, the probability that the true
  Sharpe ratio is above zero (Bailey & López de Prado, 2012, "The Sharpe
  Ratio Efficient Frontier", *Journal of Risk* 15(2)); the denominator is
  the non-normal variance of the estimate (Mertens, 2002), never negative
  since ``kurt >= 1 + skew^2``.

``sharpe_per_bar``, ``sharpe_se``, ``skew``, ``kurt`` and ``psr`` are None
while ``sharpe`` is (the returns have no variance yet).

The deflated Sharpe ratio (``dsr``), which needs every book of a run, is
computed at the end of the run by :func:`sinks.summary.economics_summary`
from these fields and :func:`core.stats.probabilistic_sharpe`.

Defaults are Binance's regular (VIP 0) taker fees: 0.10% on spot, 0.05% on
USD-M and COIN-M futures (the market of an instrument is that of its name,
:func:`core.events.market_of`).

**COIN-M (inverse) contracts** (``BTCUSD_PERP``, ``BTCUSD_211231``): a
contract is worth a fixed number of USD and settles in the coin, so such a
book is kept **in the coin**. It starts with ``initial_equity`` (USD) worth
of the coin at its first quote's mid; its position is in USD of contracts
(contracts x contract size, long positive: ``Fill.qty``, ``Fill.position``,
``EquityPoint.position``), sized to ``target_position x equity x mid``;
``price`` and ``mid`` stay in USD, and cash, equity, costs, fees and every
economic figure are in the coin (``cash`` is the equity plus what the
contracts are worth at the mid, ``position / mid`` coins). A position of N USD bought at p1 and sold
at p2 makes ``N x (1 / p1 - 1 / p2)`` coins. Inside, the book holds ``-N``
units worth ``1 / mid`` coins each, so the accounting above applies as it
is with the price ``1 / P``: buying contracts at the ask ``a`` is selling
those units at ``1 / a``.

Worked example
--------------
One book, 10,000 of equity, a decision to go 50% long; the fill quote is
99.9 / 100.1, so mid 100, spread 0.2:

>>> from core.events import Fill, FillQuote, Signal
>>> cfg = ExecutionConfig(spot_fee_bps=10.0, slippage_bps=0.0)
>>> st = PnlState(cfg, interval_ms=1000)
>>> st, out = step(st, Signal("X", "m", 1, 1_000, 1, 0.6, 0.001, 0.5))
>>> out  # waits for its quote
[]
>>> st, out = step(st, FillQuote("X", 1_000, 1_050, 99.9, 5.0, 100.1, 5.0))
>>> fill = out[0]
>>> fill.qty, fill.price  # 0.5 x 10,000 / 100 = 50 units bought at the ask
(50.0, 100.1)
>>> round(fill.spread_cost, 6), round(fill.fee, 6)  # 50 x 0.1; 10 bps of 50 x 100.1 = 5.005
(5.0, 5.005)
>>> eq = out[1]
>>> round(eq.equity, 6), round(eq.gross_equity, 6), round(eq.costs, 6)  # 10,000 - 5 - 5.005
(9989.995, 10000.0, 10.005)

The mid rises to 101 at the next decision, where the signal is to go flat:

>>> st, out = step(st, FillQuote("X", 2_000, 2_050, 100.9, 5.0, 101.1, 5.0))
>>> st, out = step(st, Signal("X", "m", 1, 2_000, 0, 0.5, 0.0, 0.0))
>>> fill, eq, econ = out
>>> fill.qty, fill.price  # 50 units sold at the bid
(-50.0, 100.9)
>>> round(eq.equity, 6)  # 10,000 + 50 x (100.9 - 100.1) - 5.005 - 5.045 in fees
10029.95
>>> round(eq.gross_equity - cfg.initial_equity, 6), round(eq.costs, 6)  # 50 x (101 - 100) at the mids; 2 x 5 + fees
(50.0, 20.05)
>>> round(econ.break_even_bps, 4)  # 50 / (5,000 + 5,050) traded x 1e4
49.7512
>>> econ.trades, econ.win_rate, econ.fills
(1, 1.0, 2)

Two returns, 9,989.995 / 10,000 - 1 = -0.10005% then 10,029.95 / 9,989.995
- 1 = +0.39995%: per bar ``SR = 0.0014995 / 0.0035355 = 0.4241`` (the sample
std), over 1-second bars ``A = 31,536,000``:

>>> round(econ.sharpe_per_bar, 4), round(econ.sharpe / math.sqrt(st.bars_a_year), 4)
(0.4241, 0.4241)
>>> round(econ.sharpe_se / math.sqrt(st.bars_a_year), 4)  # sqrt((1 + 0.4241^2 / 2) / 2)
0.7382
>>> round(econ.skew, 12), round(econ.kurt, 12)  # two points: no skew, kurtosis 1
(0.0, 1.0)
>>> round(econ.psr, 4)  # Phi(0.4241 x sqrt(2 - 1) / sqrt(1 - 0 x 0.4241 + (1 - 1) / 4 x 0.4241^2))
0.6643

The same decisions on a COIN-M perpetual, without fees: 10,000 USD at a mid
of 50,000 is 0.2 BTC; going 50% long buys 5,000 USD of contracts (50 BTCUSD
contracts of 100 USD) at the ask, then sells them at the bid of 55,000:

>>> cm = PnlState(ExecutionConfig(coinm_fee_bps=0.0, slippage_bps=0.0), interval_ms=1000)
>>> cm, out = step(cm, Signal("BTCUSD_PERP", "m", 1, 1_000, 1, 0.6, 0.001, 0.5))
>>> cm, out = step(cm, FillQuote("BTCUSD_PERP", 1_000, 1_050, 49_999.0, 1.0, 50_001.0, 1.0))
>>> out[0].qty, out[0].price, out[0].position, round(out[1].equity, 9)  # 0.2 - 5,000 x (1/50,000 - 1/50,001)
(5000.0, 50001.0, 5000.0, 0.199998)
>>> cm, out = step(cm, FillQuote("BTCUSD_PERP", 2_000, 2_050, 54_999.0, 1.0, 55_001.0, 1.0))
>>> cm, out = step(cm, Signal("BTCUSD_PERP", "m", 1, 2_000, 0, 0.5, 0.0, 0.0))
>>> fill, eq, econ = out
>>> fill.qty, fill.price, fill.position
(-5000.0, 54999.0, 0.0)
>>> round(eq.equity - 0.2, 12) == round(5_000 * (1 / 50_001 - 1 / 54_999), 12)  # N x (1/p1 - 1/p2) BTC
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from core.events import EconomicsRecord, EquityPoint, Fill, FillQuote, Signal, market_of
from core.stats import probabilistic_sharpe, sharpe_standard_error

__all__ = ["ExecutionConfig", "PnlState", "step"]

_YEAR_NS = 365 * 86_400 * 10**9


class ExecutionConfig(BaseModel):
    """Costs and capital of the simulated books."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_equity: float = Field(10_000.0, gt=0, description="Capital of every book, in quote currency.")
    latency_ms: int = Field(50, ge=0, description="Order latency: a decision at t is filled against the first best "
                            "bid/ask received at or after t + latency.")
    spot_fee_bps: float = Field(10.0, ge=0, description="Taker fee on spot, bps of the traded value "
                                "(Binance VIP 0: 0.10%).")
    usdm_fee_bps: float = Field(5.0, ge=0, description="Taker fee on USD-M futures (BTCUSDT-PERP, BTCUSDT_250328), "
                                "bps of the traded value (Binance VIP 0: 0.05%).")
    coinm_fee_bps: float = Field(5.0, ge=0, description="Taker fee on COIN-M futures (BTCUSD_PERP, BTCUSD_211231), "
                                 "bps of the traded value (Binance VIP 0: 0.05%).")
    slippage_bps: float = Field(1.0, ge=0, description="Price moved against the order beyond the best quote, bps.")
    min_trade: float = Field(0.01, ge=0, description="Position changes smaller than this fraction of equity are "
                             "not traded (a rebalancing band: a constant target is not re-traded as prices move).")
    max_pending: int = Field(10_000, ge=1, description="Most decisions or fill quotes waiting for their "
                             "counterpart, per instrument (the oldest are dropped and counted).")


@dataclass(slots=True)
class _Book:
    initial: float  # its initial equity, in its currency
    cash: float
    gross_cash: float
    units: float = 0.0
    costs: float = 0.0
    prev_equity: float = 0.0
    peak: float = 0.0
    max_dd: float = 0.0
    n: int = 0  # bars with a return
    mean: float = 0.0  # of the returns
    m2: float = 0.0  # sums of the returns' powers 2, 3, 4 about their mean (Welford, Terriberry)
    m3: float = 0.0
    m4: float = 0.0
    sum_down2: float = 0.0
    bars: int = 0
    exposed: int = 0
    fills: int = 0
    traded: float = 0.0  # value traded at the mid
    open_ts: int = -1  # when the current holding period began
    open_equity: float = 0.0
    trades: int = 0
    wins: int = 0
    won: float = 0.0
    lost: float = 0.0
    held_ns: int = 0
    last_quote: Optional[FillQuote] = None  # the quote of the book's last decision


@dataclass
class PnlState:
    """Per instrument: the books and the decisions and quotes waiting for each other (bounded by ``max_pending``)."""

    config: ExecutionConfig
    interval_ms: int
    max_gap_bars: int = 300
    market: str = ""  # of the instrument (spot, usdm, coinm): known at its first decision
    books: dict[tuple[str, int], _Book] = field(default_factory=dict)
    signals: dict[int, list[Signal]] = field(default_factory=dict)
    quotes: dict[int, FillQuote] = field(default_factory=dict)
    bars_a_year: float = field(init=False)

    def __post_init__(self) -> None:
        self.bars_a_year = _YEAR_NS / (self.interval_ms * 1_000_000)


Out = Union[Fill, EquityPoint, EconomicsRecord]


def step(state: PnlState, item: Union[Signal, FillQuote]) -> tuple[PnlState, list[Out]]:
    """Feed a decision or a fill quote; execute the decisions that can be."""
    out: list[Out] = []
    ts = item.ts_forecast
    if type(item) is FillQuote:
        for t in [t for t in state.signals if t < ts]:  # their quotes passed: never filled
            del state.signals[t]
        for sig in state.signals.pop(ts, ()):
            _execute(state, sig, item, out)
        state.quotes[ts] = item
        _bound(state.quotes, state.config.max_pending)
    elif type(item) is Signal:
        for t in [t for t in state.quotes if t < ts]:  # decisions come in time order: never needed
            del state.quotes[t]
        q = state.quotes.get(ts)
        if q is not None:
            _execute(state, item, q, out)
        else:
            state.signals.setdefault(ts, []).append(item)
            _bound(state.signals, state.config.max_pending)
    else:
        raise TypeError(f"not a signal or a fill quote: {item!r}")
    return state, out


def _bound(d: dict, limit: int) -> None:
    while len(d) > limit:
        del d[next(iter(d))]


def _execute(state: PnlState, sig: Signal, q: FillQuote, out: list[Out]) -> None:
    cfg = state.config
    if not state.market:
        state.market = market_of(sig.instrument)
    market = state.market
    inverse = market == "coinm"
    mid = (q.bid + q.ask) / 2
    # The book's units and their value ("mark") in its currency: coins at the
    # mid; of an inverse contract, -1 per USD of contracts at 1 / mid coins.
    mark = 1.0 / mid if inverse else mid
    key = (sig.model, sig.horizon)
    b = state.books.get(key)
    if b is None:
        e0 = cfg.initial_equity / mid if inverse else cfg.initial_equity
        b = state.books[key] = _Book(e0, e0, e0, prev_equity=e0, peak=e0)
    last = b.last_quote
    gap = state.max_gap_bars * state.interval_ms * 1_000_000
    if last is not None and b.units != 0.0 and sig.ts_forecast - last.ts_forecast > gap:
        # the data stopped after the book's last decision: it leaves at that decision's quote first
        _execute(state, Signal(sig.instrument, sig.model, sig.horizon, last.ts_forecast, 0, None, 0.0, 0.0), last, out)
    b.last_quote = q
    equity = b.cash + b.units * mark
    target = sig.target_position * equity / mark
    if inverse:
        target = -target
    dq = target - b.units
    if abs(dq) * mark > cfg.min_trade * equity:
        fee_bps = cfg.spot_fee_bps if market == "spot" else cfg.usdm_fee_bps if market == "usdm" else cfg.coinm_fee_bps
        buy = (dq > 0) != inverse  # buys the instrument (its units, or contracts): pays the ask
        touch = q.ask if buy else q.bid
        price = touch * (1 + cfg.slippage_bps * 1e-4) if buy else touch * (1 - cfg.slippage_bps * 1e-4)
        unit_touch, unit_price = (1.0 / touch, 1.0 / price) if inverse else (touch, price)
        fee = abs(dq) * unit_price * fee_bps * 1e-4
        spread_cost, slip_cost = abs(dq) * abs(unit_touch - mark), abs(dq) * abs(unit_price - unit_touch)
        was = b.units
        b.cash -= dq * unit_price + fee
        b.gross_cash -= dq * mark
        b.units = target
        b.costs += spread_cost + slip_cost + fee
        b.traded += abs(dq) * mark
        b.fills += 1
        _holding(b, was, target, b.cash + target * mark, q.ts_recv)
        out.append(Fill(sig.instrument, sig.model, sig.horizon, sig.ts_forecast, q.ts_recv, 0.0 - dq if inverse else dq,
                        price, mid, spread_cost, slip_cost, fee, 0.0 - b.units if inverse else b.units, b.cash))
    equity = b.cash + b.units * mark
    gross = b.gross_cash + b.units * mark
    r = equity / b.prev_equity - 1.0
    b.prev_equity = equity
    _moments(b, r)
    b.sum_down2 += min(r, 0.0) ** 2
    b.bars += 1
    b.exposed += b.units != 0.0
    b.peak = max(b.peak, equity)
    dd = 1.0 - equity / b.peak
    b.max_dd = max(b.max_dd, dd)
    out.append(EquityPoint(sig.instrument, sig.model, sig.horizon, q.ts_recv, 0.0 - b.units if inverse else b.units,
                           mid, equity, gross, b.costs, dd))
    out.append(_economics(state, sig, q.ts_recv, b, equity, gross))


def _moments(b: _Book, x: float) -> None:
    """Add one return to the running mean and central sums ``m_k = sum((r - mean)^k)``, k = 2, 3, 4.

    Welford's update extended by Terriberry, as in Pébay, 2008, "Formulas
    for robust, one-pass parallel computation of covariances and
    arbitrary-order statistical moments", eq. 2.1.
    """
    n1 = b.n
    n = b.n = n1 + 1
    d = x - b.mean
    dn = d / n
    dn2 = dn * dn
    t = d * dn * n1
    b.mean += dn
    b.m4 += t * dn2 * (n * n - 3 * n + 3) + 6 * dn2 * b.m2 - 4 * dn * b.m3
    b.m3 += t * dn * (n - 2) - 3 * dn * b.m2
    b.m2 += t


def _holding(b: _Book, was: float, now: float, equity: float, ts: int) -> None:
    """Close the holding period that a fill from ``was`` to ``now`` units ends, and open the one it starts.

    A holding period ends when the book goes flat, or flips.
    """
    if was != 0.0 and (now == 0.0 or (now > 0) != (was > 0)):
        pnl = equity - b.open_equity
        b.trades += 1
        b.wins += pnl > 0
        if pnl > 0:
            b.won += pnl
        else:
            b.lost -= pnl
        b.held_ns += ts - b.open_ts
        b.open_ts = -1
    if now != 0.0 and b.open_ts < 0:
        b.open_ts, b.open_equity = ts, equity


def _economics(state: PnlState, sig: Signal, ts: int, b: _Book, equity: float, gross: float) -> EconomicsRecord:
    a = state.bars_a_year
    init = b.initial
    n, mean = b.n, b.mean
    var = b.m2 / (n - 1) if n > 1 else 0.0
    sr = sharpe = se = skew = kurt = psr = None
    if var > 0:
        sr = mean / math.sqrt(var)
        sharpe = sr * math.sqrt(a)
        se = sharpe_standard_error(sr, n, a)
        m2 = b.m2
        skew = math.sqrt(n) * b.m3 / (m2 * math.sqrt(m2))
        kurt = n * b.m4 / (m2 * m2)
        psr = probabilistic_sharpe(sr, 0.0, n, skew, kurt)
    down = math.sqrt(b.sum_down2 / b.n)
    sortino = mean / down * math.sqrt(a) if down > 0 else None
    calmar = mean * a / b.max_dd if b.max_dd > 0 else None
    return EconomicsRecord(
        sig.instrument, sig.model, sig.horizon, ts, b.bars, equity / init - 1.0, gross / init - 1.0, b.costs,
        sharpe, sortino, b.max_dd, calmar, b.trades, b.wins / b.trades if b.trades else None,
        b.won / b.lost if b.lost > 0 else None, b.traded / init, b.exposed / b.bars,
        b.held_ns / b.trades / 1e9 if b.trades else None, b.fills,
        (gross - init) / b.traded * 1e4 if b.traded > 0 else None, sr, se, skew, kurt, psr)

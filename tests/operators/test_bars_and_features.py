"""Operator outputs recomputed independently from the real inputs: bars from
the raw ticks, kline bars from the Feather klines, raw features from bars."""

from __future__ import annotations

import math
from itertools import pairwise

import msgspec
import numpy as np
import pytest

from core.events import Bar, Count, Quote, Trade
from harness.realdata import drive, parse_paths
from operators import bars, features
from operators.bars import BarConfig
from operators.depth import DepthConfig
from operators.features import FeatureConfig


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def rebuild_bars(events: list, iv: int) -> list[dict]:
    """Bars of [start, start + iv) on the receive clock, from the raw events."""
    groups: dict[int, list] = {}
    for e in events:
        groups.setdefault(e.ts_recv - e.ts_recv % iv, []).append(e)
    first, last = min(groups), max(groups)  # the last interval is still open
    out = []
    quote = None
    last_trade = None
    for w in range(first, last, iv):
        evs = groups.get(w, [])
        trades = [e for e in evs if type(e) is Trade]
        quotes = [e for e in evs if type(e) is Quote]
        ofi = 0.0
        for q in quotes:
            if quote is not None:
                ofi += (q.bid_qty * (q.bid >= quote.bid) - quote.bid_qty * (q.bid <= quote.bid)
                        - q.ask_qty * (q.ask <= quote.ask) + quote.ask_qty * (q.ask >= quote.ask))
            quote = q
        if trades:
            last_trade = trades[-1].price
        if last_trade is None or quote is None:
            continue  # no price yet
        px = [t.price for t in trades] or [last_trade]
        vol = sum(t.qty for t in trades)
        qv = sum(t.price * t.qty for t in trades)
        out.append({
            "ts_start": w, "ts_end": w + iv,
            "open": px[0], "high": max(px), "low": min(px), "close": px[-1],
            "volume": vol, "quote_volume": qv, "vwap": qv / vol if trades else last_trade,
            "trades": len(trades),
            "buy_volume": sum(t.qty for t in trades if not t.buyer_maker),
            "sell_volume": sum(t.qty for t in trades if t.buyer_maker),
            "bid": quote.bid, "bid_qty": quote.bid_qty, "ask": quote.ask, "ask_qty": quote.ask_qty,
            "ofi": ofi,
            "mean_depth": (sum((q.bid_qty + q.ask_qty) / 2 for q in quotes) / len(quotes) if quotes
                           else (quote.bid_qty + quote.ask_qty) / 2),
            "price": (quote.bid + quote.ask) / 2,
            "n_events": len(evs),
        })
    return out


def test_bars_rebuilt_from_the_raw_ticks(chain):
    iv = chain.settings.bars.interval_ms * 1_000_000
    want = rebuild_bars(chain.events, iv)
    got = chain.bars
    assert [b.ts_start for b in got] == [w["ts_start"] for w in want]
    assert not any(b.reset for b in got)
    exact = ("ts_start", "ts_end", "open", "high", "low", "close", "trades", "bid", "bid_qty", "ask", "ask_qty",
             "price", "n_events")
    for b, w in zip(got, want, strict=True):
        for f, v in w.items():
            ok = getattr(b, f) == v if f in exact else close(getattr(b, f), v)
            assert ok, (b.ts_start, f, getattr(b, f), v)
    # empty intervals are carried forward: bars are contiguous
    assert all(a.ts_end == b.ts_start for a, b in pairwise(got))
    assert sum(b.ofi != 0.0 for b in got) > len(got) // 2  # the OFI check above is not vacuous


def test_last_trade_bars(btc_spot_chain):
    """With price="last" the bar price is the last trade, carried forward."""
    cfg = BarConfig(price="last", interval_ms=5000)
    _, out = drive(bars.step, bars.BarState(cfg), btc_spot_chain.events)
    got = [b for b in out if type(b) is Bar]
    want = rebuild_bars(btc_spot_chain.events, 5_000_000_000)
    assert [(b.ts_start, b.price, b.close, b.trades) for b in got] == \
        [(w["ts_start"], w["close"], w["close"], w["trades"]) for w in want]


@pytest.fixture(scope="module")
def klines_1m(klines_dir):
    by_key, errors, _ = parse_paths([klines_dir / "BTC_USDT-1m.feather"])
    assert not errors
    return by_key["BTCUSDT"][:3000]


def test_kline_bars(klines_1m):
    _, out = drive(bars.step, bars.BarState(BarConfig()), klines_1m)
    got = [b for b in out if type(b) is Bar]
    assert len(got) == len(klines_1m)  # README: no gaps in the 1m klines
    for b, k in zip(got, klines_1m, strict=True):
        assert (b.ts_start, b.ts_end) == (k.ts_open, k.ts_close)
        assert (b.open, b.high, b.low, b.close, b.volume, b.price) == (k.open, k.high, k.low, k.close, k.volume,
                                                                       k.close)


def test_kline_gaps_are_carried_forward_or_reset(klines_1m):
    short = klines_1m[:100] + klines_1m[105:1000]  # 5 minutes missing
    _, out = drive(bars.step, bars.BarState(BarConfig()), short)
    got = [b for b in out if type(b) is Bar]
    assert len(got) == 1000 and all(a.ts_end == b.ts_start for a, b in pairwise(got))
    filled = got[100:105]
    assert all(b.volume == 0.0 and b.price == klines_1m[99].close for b in filled)
    long = klines_1m[:100] + klines_1m[500:]  # 400 minutes > max_gap_bars = 300
    _, out = drive(bars.step, bars.BarState(BarConfig()), long)
    got = [b for b in out if type(b) is Bar]
    assert len(got) == len(long)
    assert [b.reset for b in got].count(True) == 1 and got[100].reset and got[100].ts_start == klines_1m[500].ts_open
    assert Count("bar_gap_resets", 1) in out
    # a duplicated kline is dead-lettered, not double counted
    _, out = drive(bars.step, bars.BarState(BarConfig()), klines_1m[:10] + [klines_1m[9]])
    assert [type(o).__name__ for o in out][-1] == "ErrorRecord"
    assert msgspec.json.decode(out[-1].raw)["ts_open"] == klines_1m[9].ts_open


def test_raw_features_from_bars(chain):
    cfg = FeatureConfig(scaler="none", clip=1e12)
    bars_ = chain.bars
    _, rows = drive(features.step, features.FeatureState(cfg), bars_)
    assert len(rows) == len(bars_)
    lp = np.log([b.price for b in bars_])
    r1 = np.diff(lp) * 1e4
    for t, (b, row) in enumerate(zip(bars_, rows, strict=True)):
        x = row.x
        assert row.ts_end == b.ts_end and row.price == b.price and row.interval == b.ts_end - b.ts_start
        assert row.ready == (t + 1 >= cfg.warmup)
        for k in cfg.return_lags:
            assert close(x[f"ret_{k}"], (lp[t] - lp[t - k]) * 1e4 if t >= k else 0.0), (t, k)
        rets = r1[max(0, t - cfg.vol_window) : t]
        assert close(x["rv"], math.sqrt(float(np.sum(rets**2))))
        tv = b.buy_volume + b.sell_volume
        assert close(x["flow_imb"], (b.buy_volume - b.sell_volume) / tv if tv else 0.0)
        mid = (b.bid + b.ask) / 2
        depth = b.bid_qty + b.ask_qty
        assert close(x["spread"], (b.ask - b.bid) / mid * 1e4)
        assert close(x["book_imb"], (b.bid_qty - b.ask_qty) / depth)
        assert close(x["micro_dev"], ((b.bid * b.ask_qty + b.ask * b.bid_qty) / depth - mid) / mid * 1e4)
        assert close(x["last_vs_mid"], (b.close - mid) / mid * 1e4)
        assert close(x["vwap_dev"], (b.vwap - b.price) / b.price * 1e4)
        assert close(x["log_volume"], math.log1p(b.volume))
        assert -1.0 <= x["rsi"] <= 1.0


def test_scaled_features_are_clipped_and_finite(chain):
    lim = chain.settings.features.clip
    assert all(all(math.isfinite(v) and -lim <= v <= lim for v in r.x.values()) for r in chain.rows)
    names = features.feature_names(chain.settings.features)
    assert all(tuple(r.x) == tuple(n for n in names if n in r.x) for r in chain.rows)  # in the order named
    top = set(features.feature_names(chain.settings.features.model_copy(update={"depth": DepthConfig(enabled=False)})))
    assert all(top <= set(r.x) for r in chain.rows)  # the top-of-book features on every row
    # the depth features on every row once the book and the integrated OFI's PCA are warm (a snapshot is at the start)
    warm = chain.settings.features.depth.pca_warmup
    assert all(set(r.x) == set(names) for r in chain.rows[warm:])
    assert "ofi_int" not in chain.rows[0].x  # missing, not zero, before

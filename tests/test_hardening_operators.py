"""Degenerate and hostile market data neither crashes nor disturbs the
dataflow (issue 15): each hostile line of a tester's probe, injected into a
real recording, is dead-lettered with its reason and its event, and the
forecasts and metrics are those of the same recording without it.

The dataflow tests run ``ticklet backtest`` on spot/btcusdt_20230405.dat.gz
(15,112 lines, 414 one-second bars, 2,073 scored forecasts) with and without
the injected line(s); "the same results" means forecasts.csv and metrics.csv
equal byte for byte, and the same number of bars. Every injected line is
derived from a real neighbouring line. The operator tests drive the pure
operators on the real events.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from itertools import pairwise

import msgspec
import pytest

from core.events import Bar, Count, ErrorRecord, FeatureRow, ForecastRecord, Kline, Quote, Trade
from dataflows.settings import Settings
from harness.realdata import (
    aggregate_trades,
    bar_step,
    drive,
    lines,
    minute_klines,
    parse_paths,
    payload,
    recv_ns,
    stream_kind,
    trade_dicts,
    write_gz,
)
from operators import bars, features, forecast, sanity
from ticklet.backtest import run_backtest

SRC = "spot/btcusdt_20230405.dat.gz"
S = 10**9


def _compact(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _at(line: bytes, ts_ns: int) -> bytes:
    """``line``'s payload received at ``ts_ns`` (in the recording's µs)."""
    return b"%d %s" % (ts_ns // 1000, payload(line))


def _edited(line: bytes, **data) -> bytes:
    """``line`` with fields of its ``data`` replaced, same receive time."""
    msg = json.loads(payload(line))
    msg["data"].update(data)
    return line.split(b" ", 1)[0] + b" " + _compact(msg)


@pytest.fixture(scope="module")
def real(ws_dir) -> list[bytes]:
    return list(lines(ws_dir / SRC))


@pytest.fixture(scope="module")
def kinds(real) -> list[str]:
    return [stream_kind(json.loads(payload(ln))) for ln in real]


@pytest.fixture(scope="module")
def bar_end_quote(real, kinds) -> int:
    """The index of a quote in the middle of the recording that is the last
    quote of its one-second bar: its mid is the bar's price."""
    quotes = [i for i, k in enumerate(kinds) if k == "bookTicker"]
    ends = [i for i, j in pairwise(quotes) if recv_ns(real[i]) // S != recv_ns(real[j]) // S]
    return ends[len(ends) // 2]


class Runs:
    """Backtests of variants of the recording, each in its own directory."""

    def __init__(self, tmp_path_factory):
        self.base = tmp_path_factory.mktemp("hardening")
        self.n = 0

    def __call__(self, rows: list[bytes], settings: Settings | None = None):
        self.n += 1
        d = self.base / str(self.n)
        src = write_gz(d / "in" / "spot" / "btcusdt_20230405.gz", rows)
        summary = run_backtest([str(src)], d / "out", base=settings)
        dl = d / "out" / "dead_letters.jsonl"
        dead = [json.loads(ln) for ln in dl.read_text().splitlines()] if dl.exists() else []
        return summary, d / "out", dead


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory)


@pytest.fixture(scope="module")
def clean(runs, real):
    summary, out, dead = runs(real)
    assert dead == [] and summary["bars"] == 414 and summary["forecasts"] == 2073
    return summary, out


def _same_results(a, b) -> None:
    """Same bars, forecasts and metrics (files equal byte for byte)."""
    (sa, oa), (sb, ob) = a, b
    assert sa["bars"] == sb["bars"] and sa["forecasts"] == sb["forecasts"] > 0
    for name in ("forecasts.csv", "metrics.csv"):
        assert (oa / name).read_bytes() == (ob / name).read_bytes(), name


def _mae(summary) -> dict:
    return {(m, h): v["mae"] for m, hs in summary["instruments"]["BTCUSDT"]["models"].items() for h, v in hs.items()}


def _one_dead_letter(dead: list[dict], reason: str, line: bytes) -> dict | None:
    """The one dead letter of the injected ``line``; returns the event it
    carries as its raw, or None when the raw is the line's message as
    received (where the parser keeps each event's input record)."""
    assert len(dead) == 1, dead
    (d,) = dead
    assert d["stage"] == sanity.STAGE and d["instrument"] == "BTCUSDT" and d["ts_recv"] == recv_ns(line)
    assert re.search(reason, d["reason"]), d["reason"]
    if d["raw"] in (payload(line).decode(), line.decode()):
        return None
    ev = json.loads(d["raw"])  # else the event itself
    assert ev["ts_recv"] == recv_ns(line) and ev["instrument"] == "BTCUSDT"
    return ev


# --- 1. a kline that ends where it starts ------------------------------------------

def _kline_line(k: dict, ts_recv: int, **edit) -> bytes:
    body = {"t": k["t"], "T": k["T"], "s": "BTCUSDT", "i": "1m", "f": k["f"], "L": k["L"], "o": k["o"],
            "c": k["c"], "h": k["h"], "l": k["l"], "v": k["v"], "n": k["n"], "x": True, "q": k["q"],
            "V": k["V"], "Q": k["Q"], "B": "0"}
    body.update(edit)
    msg = {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": k["E_last"], "s": "BTCUSDT", "k": body}}
    return b"%d %s" % (ts_recv // 1000, _compact(msg))


def _insert_at_time(rows: list[bytes], line: bytes) -> list[bytes]:
    """``line`` inserted before the first row received after it."""
    ts = recv_ns(line)
    i = next(i for i, r in enumerate(rows) if recv_ns(r) > ts)
    return rows[:i] + [line] + rows[i:]


@pytest.fixture(scope="module")
def klines(ws_dir, real):
    """Two real consecutive 1-minute klines (from the recording's trades) as
    kline lines received 50 ms after their close; the second with ``t = T + 1``:
    it opens where it closes."""
    k = minute_klines(trade_dicts(ws_dir / SRC))
    normal = _kline_line(k[2], (k[2]["T"] + 51) * 10**6)
    zero = _kline_line(k[3], (k[3]["T"] + 51) * 10**6, t=k[3]["T"] + 1)
    return normal, zero


def test_zero_length_kline_after_a_kline_is_dead_lettered_and_changes_nothing(runs, real, klines):
    normal, zero = klines
    with_kline = _insert_at_time(real, normal)
    before = runs(with_kline)
    assert before[2] == []
    summary, out, dead = runs(_insert_at_time(with_kline, zero))  # raised ZeroDivisionError in make_bars
    ev = _one_dead_letter(dead, r"^inconsistent kline: open time (\d+) not before close time \1$", zero)
    if ev is not None:
        assert ev["ts_open"] == ev["ts_close"] == (json.loads(payload(zero))["data"]["k"]["T"] + 1) * 10**6
    _same_results(before[:2], (summary, out))


def test_bars_dead_letter_a_zero_length_kline_instead_of_dividing_by_zero(btc_spot_chain):
    """make_bars on its own (no check before it): the same kline is a dead
    letter there too, and the bars are those without it."""
    evs = btc_spot_chain.events
    t = evs[len(evs) // 2].ts_recv // (60 * S) * 60 * S
    normal = Kline("BTCUSDT", t, t - 60 * S, t, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 3, 1.0, True)
    zero = msgspec.structs.replace(normal, ts_recv=t + 60 * S, ts_open=t + 60 * S, ts_close=t + 60 * S)
    cfg = btc_spot_chain.settings.bars
    _, ref = drive(bars.step, bars.BarState(cfg), [normal, zero])
    (err,) = [o for o in ref if type(o) is ErrorRecord]
    assert err.stage == "make_bars" and err.reason == f"kline without duration: open time {t + 60 * S} not before " \
                                                       f"close time {t + 60 * S}"
    assert msgspec.json.decode(err.raw, type=Kline) == zero
    assert [o for o in ref if type(o) is Bar] == drive(bars.step, bars.BarState(cfg), [normal])[1]


# --- 2. a mid that overflows, a subnormal quote ------------------------------------

@pytest.mark.parametrize("bid,ask,reason", [
    ("1e308", "1.5e308", r"^notional above 1e\+12: bid 1e\+308 x "),  # the mid (bid + ask) / 2 overflows
    ("1e-320", "2e-320", r"^not a normal float: bid 1e-320 x "),     # log(mid / previous) underflows
])
def test_overflowing_or_subnormal_quote_at_a_bar_end_is_dead_lettered(runs, real, bar_end_quote, clean, bid, ask,
                                                                      reason):
    i = bar_end_quote
    bad = _edited(real[i], b=bid, a=ask)
    summary, out, dead = runs(real[: i + 1] + [bad] + real[i + 1:])  # raised ValueError in the join
    ev = _one_dead_letter(dead, reason, bad)
    assert ev is None or (ev["bid"], ev["ask"]) == (float(bid), float(ask))
    _same_results(clean, (summary, out))
    assert "forecasts_invalid" not in summary["counters"] and "forecasts_unscorable" not in summary["counters"]


@pytest.mark.parametrize("price", [1.5e-320, math.inf, math.nan, 0.0])
def test_join_does_not_score_a_return_without_a_finite_log(btc_spot_chain, price):
    """The join on its own: a bar price whose ratio to another underflows
    (subnormal), overflows (inf) or is not a number. The forecasts that target
    that bar and those made at it are counted as unscorable, neither scored
    nor learnt from; every other forecast is scored as usual."""
    rows = btc_spot_chain.rows
    k = len(rows) // 2
    assert all(r.ready for r in rows[k - 20 : k + 20])
    bad = msgspec.structs.replace(rows[k], price=price)
    cfg = btc_spot_chain.settings.forecast
    _, out = drive(forecast.step, forecast.JoinState(cfg), rows[:k] + [bad] + rows[k + 1:])
    _, ref = drive(forecast.step, forecast.JoinState(cfg), rows[: k + 1])
    scored = [r for r in out if type(r) is ForecastRecord]
    n_ref = sum(1 for r in ref if type(r) is ForecastRecord and r.ts_target < rows[k].ts_end)
    assert scored[:n_ref] == [r for r in ref if type(r) is ForecastRecord][:n_ref]  # before the bad bar: as ever
    t = rows[k].ts_end
    assert not [r for r in scored if t in (r.ts_forecast, r.ts_target)]
    n_models = len(cfg.models) * len(cfg.horizons)
    assert sum(c.n for c in out if type(c) is Count and c.name == "forecasts_unscorable") == 2 * n_models
    assert all(math.isfinite(r.realized_return) and math.isfinite(r.error) for r in scored)


def test_bars_price_a_quote_near_the_largest_float_without_overflow():
    st = bars.BarState(bars.BarConfig())
    st, _ = bars.step(st, Trade("X", 0, 0, 1.2e308, 1.0, False, 1))
    st, _ = bars.step(st, Quote("X", 1, None, 1e308, 1.0, 1.5e308, 1.0, 1))
    st, (bar,) = bars.step(st, Quote("X", S, None, 1e308, 1.0, 1.5e308, 1.0, 2))
    assert bar.price == 1.25e308


# --- 3. implausible values ---------------------------------------------------------

@pytest.mark.parametrize("scale,reason", [
    (None, r"^notional above 1e\+12: bid 1e\+300 x "),  # the tester's 1e300 / 1.1e300
    (1.5, r"^outside the price band: \[\d+\.\d+, \d+\.\d+\] > \d+\.\d+ \(reference \d+\.\d+ \+-20%\)$"),
    (0.6, r"^outside the price band: \[\d+\.\d+, \d+\.\d+\] < \d+\.\d+ \(reference \d+\.\d+ \+-20%\)$"),
])
def test_implausible_quote_keeps_the_clean_mae(runs, real, bar_end_quote, clean, scale, reason):
    i = bar_end_quote
    d = json.loads(payload(real[i]))["data"]
    if scale is None:
        bad = _edited(real[i], b="1e300", a="1.1e300")
    else:
        bad = _edited(real[i], b=f"{float(d['b']) * scale:.8f}", a=f"{float(d['a']) * scale:.8f}")
    summary, out, dead = runs(real[: i + 1] + [bad] + real[i + 1:])
    _one_dead_letter(dead, reason, bad)
    _same_results(clean, (summary, out))
    assert _mae(summary) == _mae(clean[0])
    assert _mae(summary)[("linear", "1")] == pytest.approx(7.808e-6, rel=1e-3)
    assert "forecasts_invalid" not in summary["counters"]


def test_without_the_checks_the_tester_quote_ruins_the_mae(runs, real, bar_end_quote, clean):
    """What the checks prevent (item 3 as reported): with the band and the
    notional cap opened wide, the 1e300 quote passes and the linear model's
    1-bar MAE goes from 7.8e-6 to about 4."""
    i = bar_end_quote
    bad = _edited(real[i], b="1e300", a="1.1e300")
    off = Settings(sanity=sanity.SanityConfig(price_band=1e300, max_notional=1e308))
    summary, _, dead = runs(real[: i + 1] + [bad] + real[i + 1:], off)
    assert dead == []
    assert _mae(summary)[("linear", "1")] > 1.0 > 1e5 * _mae(clean[0])[("linear", "1")]
    assert summary["counters"]["forecasts_invalid"] > 100


@pytest.fixture(scope="module")
def spot_events(btc_spot_chain) -> list:
    return btc_spot_chain.events


def _scaled(e, f: float):
    if type(e) is Quote:
        return msgspec.structs.replace(e, bid=e.bid * f, ask=e.ask * f)
    if type(e) is Trade:
        return msgspec.structs.replace(e, price=e.price * f)
    return e


def _sanity(events: list, **cfg) -> tuple[list, list, list]:
    """(accepted events, dead letters, counts) of the check over ``events``."""
    _, out = drive(sanity.step, sanity.SanityState(sanity.SanityConfig(**cfg)), events)
    return ([o for o in out if type(o) not in (ErrorRecord, Count)], [o for o in out if type(o) is ErrorRecord],
            [o for o in out if type(o) is Count])


@pytest.mark.integration  # slow: every recording and kline file through the checks
def test_every_real_recording_and_kline_file_passes_the_checks_unchanged(ws_dir, klines_dir):
    groups = [["spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz"],
              ["spot/ethusdt_20240808.gz", "spot/ethusdt_20240809.gz"], ["spot/btcusdt_20230405.dat.gz"],
              ["usdm/btcusdt_20230404.dat.gz", "usdm/btcusdt_20230405.dat.gz"]]
    paths = [[ws_dir / p for p in g] for g in groups] + [[klines_dir / "BTC_USDT-1m.feather"],
                                                         [klines_dir / "BTC_USDT-15m.feather"]]
    for ps in paths:
        (evs,) = parse_paths(ps)[0].values()
        assert _sanity(evs)[:2] == (evs, []), ps


def test_a_long_silence_restarts_the_band_instead_of_rejecting_real_prices(ws_dir):
    """Spot BTCUSDT 2023-04-05 then 2024-08-08/09 as one stream: 16 months of
    silence and a price from 28k to 62k. The stale reference is dropped and
    the instrument starts afresh (one restart counted): every real event goes
    through. With the restart off, the first 9 prices after the silence are
    dead-lettered before the band re-anchors."""
    files = ["spot/btcusdt_20230405.dat.gz", "spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz"]
    (evs,) = parse_paths([ws_dir / f for f in files])[0].values()
    acc, dead, counts = _sanity(evs)
    assert acc == evs and dead == []
    assert [c.name for c in counts] == ["price_band_restarts"]
    acc, dead, counts = _sanity(evs, stale_after_ms=0)
    assert len(dead) == 9 and all(d.reason.startswith("outside the price band") for d in dead)
    assert [c.name for c in counts if c.name == "price_band_reanchors"] == ["price_band_reanchors"]


def test_a_bad_first_price_is_outvoted_by_the_warmup(spot_events):
    """The first price has no reference: the first 5 events are held and
    checked against the median of their prices, so a bad one among them is
    dead-lettered like any other."""
    q = next(i for i, e in enumerate(spot_events) if type(e) is Quote)
    for at in (q, q + 2):
        evs = list(spot_events[:2000])
        evs[at] = _scaled(evs[at], 1.5)
        acc, dead, _ = _sanity(evs)
        assert acc == evs[:at] + evs[at + 1:]
        assert [d.ts_recv for d in dead] == [evs[at].ts_recv] and dead[0].reason.startswith("outside the price band")


def test_a_real_regime_jump_reanchors_after_k_agreeing_prices(spot_events):
    """A genuine 25% fall at once (the feed resumes after a crash): the first
    K - 1 = 9 prices after it are dead-lettered, the 10th re-anchors the band
    and everything after it goes through; the instrument is not frozen."""
    n = len(spot_events) // 2
    evs = spot_events[:n] + [_scaled(e, 0.75) for e in spot_events[n:]]
    acc, dead, counts = _sanity(evs)
    priced = [i for i in range(n, len(evs)) if type(evs[i]) in (Quote, Trade)]
    rejected = set(priced[:9])
    assert [d.ts_recv for d in dead] == [evs[i].ts_recv for i in sorted(rejected)]
    assert acc == [e for i, e in enumerate(evs) if i not in rejected]
    assert [c for c in counts if c.name == "price_band_reanchors"] == [Count("price_band_reanchors", 1)]


def test_outliers_between_real_prices_never_reanchor(spot_events):
    """Up to K - 1 agreeing outliers in a row, then a real price, again and
    again: the real prices reset the count, every outlier is dead-lettered."""
    evs, bad = [], []
    for i, e in enumerate(spot_events[:20_000]):
        evs.append(e)
        if i > 100 and i % 50 == 0 and type(e) is Quote:
            for j in range(9):
                bad.append(_scaled(msgspec.structs.replace(e, update_id=-j), 1.3))
                evs.append(bad[-1])
    acc, dead, counts = _sanity(evs)
    assert acc == spot_events[:20_000] and len(dead) == len(bad) > 1000
    assert not [c for c in counts if c.name == "price_band_reanchors"]


# --- 4. a line stamped in the future -------------------------------------------------

@pytest.mark.parametrize("kind,ahead_s,forge_exchange_time", [
    ("bookTicker", 3600, False), ("bookTicker", 60, False), ("bookTicker", 6, False),
    ("trade", 3600, False), ("trade", 3600, True),  # with the exchange's own times moved along
])
def test_line_stamped_in_the_future_is_dead_lettered_and_bars_are_unchanged(runs, real, kinds, clean, kind,
                                                                            ahead_s, forge_exchange_time):
    at = [i for i, k in enumerate(kinds) if k == kind][len(real) // 10]
    line = real[at]
    if kind == "trade":  # an id of its own: a copy of the real trade, passed on just before, is its duplicate
        line = _edited(line, t=json.loads(payload(line))["data"]["t"] + 10**9)
    if forge_exchange_time:
        d = json.loads(payload(line))["data"]
        line = _edited(line, E=d["E"] + ahead_s * 1000, T=d["T"] + ahead_s * 1000)
    fut = _at(line, recv_ns(real[at]) + ahead_s * S)
    summary, out, dead = runs(real[: at + 1] + [fut] + real[at + 1:])
    _one_dead_letter(dead, rf"^from the future: {ahead_s}\.\d{{3}} s ahead of the instrument's clock "
                           r"\(more than 5000 ms\), and the next event was not$", fut)
    _same_results(clean, (summary, out))
    assert summary["bars"] == clean[0]["bars"] == 414


def test_a_future_line_does_not_move_the_clock(spot_events):
    k = len(spot_events) // 3
    fut = msgspec.structs.replace(spot_events[k], ts_recv=spot_events[k].ts_recv + 3600 * S)
    st = sanity.SanityState(sanity.SanityConfig())
    st, _ = drive(sanity.step, st, spot_events[: k + 1] + [fut, spot_events[k + 1]])
    assert st.clock == spot_events[k + 1].ts_recv and st.ahead == []


def test_a_silence_in_the_feed_is_not_the_future(spot_events):
    """30 s of the recording cut out: every event goes through, in order; the
    first after the hole waits for the next two (they confirm time moved on)."""
    t0 = spot_events[len(spot_events) // 2].ts_recv
    evs = [e for e in spot_events if not t0 <= e.ts_recv < t0 + 30 * S]
    first = next(i for i, e in enumerate(evs) if e.ts_recv >= t0 + 30 * S)
    st = sanity.SanityState(sanity.SanityConfig())
    st, before = drive(sanity.step, st, evs[:first])
    outs = []
    for e in evs[first : first + 3]:
        st, o = sanity.step(st, e)
        outs.append(list(o))
    assert outs == [[], [], evs[first : first + 3]]
    assert _sanity(evs)[:2] == (evs, [])


def test_klines_are_never_held(klines_dir):
    """Klines arrive one interval apart, far beyond the skew: each one that
    continues the last goes through at once."""
    (evs,) = parse_paths([klines_dir / "BTC_USDT-1m.feather"])[0].values()
    st = sanity.SanityState(sanity.SanityConfig())
    st, _ = drive(sanity.step, st, evs[:5])  # the warm-up
    for e in evs[5:2000]:
        st, o = sanity.step(st, e)
        assert list(o) == [e]


def test_future_lines_together_need_more_than_the_confirmations(spot_events):
    """The limit, as documented: up to ``future_confirmations`` consecutive
    lines forged in the same future are dead-lettered; one more moves the clock
    (an hour ahead is also a silence longer than ``stale_after_ms``, so the
    three forged lines and the next two real ones make a new warm-up, which
    the forged ones outvote)."""
    k = len(spot_events) // 3
    fut = [msgspec.structs.replace(e, ts_recv=e.ts_recv + 3600 * S) for e in spot_events[k : k + 3]]
    real = spot_events[k + 1 : k + 3]
    for n, moved in ((1, False), (2, False), (3, True)):
        st = sanity.SanityState(sanity.SanityConfig())
        st, out = drive(sanity.step, st, spot_events[: k + 1] + fut[:n] + real)
        assert (st.clock > real[-1].ts_recv) == moved
        assert sum(type(o) is ErrorRecord for o in out) == (0 if moved else n)


def test_features_and_join_stay_finite_on_the_checked_stream(btc_spot_chain):
    """The chain after the check, on the real events with the sanity
    contract case's implausible events injected: the same feature rows and
    forecasts as on the clean events."""
    from harness.realdata import operator_case

    step, init, items, ref = operator_case("sanity", btc_spot_chain)
    assert len(items) > len(btc_spot_chain.events)
    accepted = [o for o in ref if type(o) not in (ErrorRecord, Count)]
    assert accepted == btc_spot_chain.events
    s = btc_spot_chain.settings
    step, state = bar_step(s)
    _, b = drive(step, state, accepted)
    _, rows = drive(features.step, features.FeatureState(s.features), [x for x in b if type(x) is Bar])
    assert rows == btc_spot_chain.rows and all(type(r) is FeatureRow for r in rows)


# --- 5. the same trade twice ----------------------------------------------------------

RECORD_FILES = ("forecasts.csv", "metrics.csv", "signals.csv", "trades.csv", "equity.csv", "economics.csv")


def _same_outputs(clean, run, copies: list[bytes], skipped: int = 0) -> None:
    """Every record file of ``run`` equal to the clean run's byte for byte;
    its dead letters are the duplicate ``copies`` (their messages as
    received), each once, and its counters the clean ones plus the copies
    (read, parsed, dead-lettered, counted as duplicates) and ``skipped``
    more aggTrades (read, parsed, skipped by check_ticks) than the clean
    run's."""
    (sa, oa), (sb, ob, dead) = clean, run
    for name in RECORD_FILES:
        assert (oa / name).read_bytes() == (ob / name).read_bytes(), name
    assert sa["bars"] == sb["bars"] and sa["forecasts"] == sb["forecasts"] > 0
    assert sorted(d["raw"].encode() for d in dead) == sorted(payload(c) for c in copies)
    assert all(d["stage"] == sanity.STAGE and d["reason"].startswith("duplicate trade: id ") for d in dead)
    got, want = (json.loads((o / "counters.json").read_text()) for o in (ob, oa))
    got.pop("input_bytes"), want.pop("input_bytes")  # of the gzip files
    n = len(copies)
    more = {"input_records": n + skipped, "ticks": n + skipped, "duplicate_trades": n, "dead_letters": n,
            "aggtrades_skipped": skipped}
    assert got == want | {k: want.get(k, 0) + v for k, v in more.items() if v}


@pytest.mark.integration  # slow: a whole run with 50,000 copies of a trade
def test_a_trade_arriving_50000_times_is_passed_on_once_and_changes_nothing(runs, real, kinds, clean):
    """Issue 23, item 7: the same trade line 50,000 times in a row changed
    1,198 of 3,489 forecasts of the quick-start sample, unseen. Now the
    copies are dead letters (duplicate, with the id), counted in
    ``duplicate_trades``, and every output file is the clean run's."""
    at = [i for i, k in enumerate(kinds) if k == "trade"][len(real) // 8]
    copies = [real[at]] * 50_000
    summary, out, dead = runs(real[: at + 1] + copies + real[at + 1 :])
    _same_outputs(clean, (summary, out, dead), copies)
    tid = json.loads(payload(real[at]))["data"]["t"]
    assert {d["reason"] for d in dead} == {f"duplicate trade: id {tid} was passed on already (the latest id of its "
                                           f"sequence is {tid})"}
    assert {(d["instrument"], d["ts_recv"]) for d in dead} == {("BTCUSDT", recv_ns(real[at]))}


def test_trades_delivered_twice_are_passed_on_once_and_change_nothing(runs, real, kinds, clean):
    """The ways the same trade arrives twice: a second collector on the same
    topic (each trade of a slice again, received 2 ms later, in receive
    order), and a slice delivered again after itself (a producer's retry, a
    replay restarted: the same lines, the original receive times, behind the
    clock). Every copy is a duplicate dead letter; the outputs are the clean
    run's."""
    trades = [i for i, k in enumerate(kinds) if k == "trade"]
    n = len(real)
    second = [i for i in trades if n // 4 <= i < n // 4 + 3000]
    rows = [(recv_ns(ln), 0, ln) for ln in real] + [(recv_ns(real[i]) + 2_000_000, 1, _at(real[i], recv_ns(real[i])
                                                    + 2_000_000)) for i in second]
    rows.sort(key=lambda r: (r[0], r[1]))  # each copy after every line received before it
    lines_ = [ln for _, _, ln in rows]
    again = [real[i] for i in trades if 2 * n // 3 <= i < 2 * n // 3 + 2000]
    end = lines_.index(real[2 * n // 3 + 2000])
    lines_[end:end] = again
    copies = [_at(real[i], recv_ns(real[i]) + 2_000_000) for i in second] + again
    assert len(second) > 500 and len(again) > 300
    _same_outputs(clean, runs(lines_), copies)


def _agg_lines(real: list[bytes], first_id: int, before: bool = False) -> list[bytes]:
    """The recording with the aggTrade messages of its real trades (as
    Binance groups them: consecutive trades filled at the same time and price
    with the same taker side), each received 1 µs after the last trade of its
    group (``before``: 1 µs before the first): ``ticklet collect``'s default
    streams carry both, with ids of their own, from ``first_id`` on."""
    trades = [json.loads(payload(ln))["data"] for ln in real if b'@trade"' in ln[:60]]
    recv = {json.loads(payload(ln))["data"]["t"]: recv_ns(ln) for ln in real if b'@trade"' in ln[:60]}
    at: dict[int, bytes] = {}
    for a, g in enumerate(aggregate_trades(trades), start=first_id):
        last = g[-1]
        qty = sum(Decimal(d["q"]) for d in g)
        data = {"e": "aggTrade", "E": last["E"], "s": "BTCUSDT", "a": a, "p": last["p"], "q": str(qty),
                "f": g[0]["t"], "l": last["t"], "T": last["T"], "m": last["m"], "M": True}
        msg = {"stream": "btcusdt@aggTrade", "data": data}
        t = g[0]["t"] if before else last["t"]
        at[t] = b"%d %s" % (recv[t] // 1000 + (-1 if before else 1), _compact(msg))
    out = []
    for ln in real:
        agg = at.get(json.loads(payload(ln))["data"]["t"]) if b'@trade"' in ln[:60] else None
        if agg is not None and before:
            out.append(agg)
        out.append(ln)
        if agg is not None and not before:
            out.append(agg)
    return out


def _is_agg(line: bytes) -> bool:
    return b"@aggTrade" in line[:60]


def _with_copies(rows: list[bytes]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """``rows`` with every 50th trade and every 50th aggTrade again, received
    1 ms later: (the rows, the trade copies, the aggTrade copies)."""
    out: list[bytes] = []
    trades: list[bytes] = []
    aggs: list[bytes] = []
    n = {True: 0, False: 0}
    for ln in rows:
        out.append(ln)
        agg = _is_agg(ln)
        if agg or b'@trade"' in ln[:60]:
            if n[agg] % 50 == 25:
                out.append(_at(ln, recv_ns(ln) + 1_000_000))
                (aggs if agg else trades).append(out[-1])
            n[agg] += 1
    return out, trades, aggs


def test_a_recording_with_the_aggtrades_of_its_trades_gives_the_recordings_results(runs, real, clean):
    """Issue 23: ``ticklet collect`` records ``trade`` and ``aggTrade``, and
    both were passed on as trades: every fill counted twice in the bars. The
    recording with the aggTrade messages of its own trades (received just
    after them) now gives the recording's results, every record file byte for
    byte: each aggTrade is skipped and counted (``aggtrades_skipped``).
    Then every 50th trade and every 50th aggTrade arrives twice, received
    1 ms later: the trade copies are duplicate dead letters, the aggTrade
    copies are skipped like the rest."""
    mixed = _agg_lines(real, 2_200_000_000)
    n_agg = sum(map(_is_agg, mixed))
    assert n_agg > 1000
    mixed_run = runs(mixed)
    assert mixed_run[2] == []
    _same_outputs(clean, mixed_run, [], skipped=n_agg)
    rows, trade_copies, agg_copies = _with_copies(mixed)
    assert len(trade_copies) > 20 and len(agg_copies) > 20
    _same_outputs(clean, runs(rows), trade_copies, skipped=n_agg + len(agg_copies))


def test_aggtrades_received_before_their_trades_are_skipped_too(real):
    """The aggTrade of each group received just before its trades: once the
    instrument has passed on a plain trade, every aggTrade is skipped, in
    whatever order the two streams arrive. The first aggTrade, received
    before any plain trade, is the one passed on (the rule's cost, as
    documented)."""
    (clean_events,) = _parse_lines(real).values()
    (evs,) = _parse_lines(_agg_lines(real, 2_200_000_000, before=True)).values()
    acc, dead, counts = _sanity(evs)
    aggs = [e for e in evs if type(e) is Trade and e.agg]
    first = evs.index(aggs[0])
    assert acc == clean_events[:first] + [aggs[0]] + clean_events[first:] and dead == []
    assert sum(c.n for c in counts if c.name == "aggtrades_skipped") == len(aggs) - 1 > 1000


def test_aggtrades_alone_are_the_trades_and_give_bars(runs, real, clean):
    """An instrument without plain trades keeps its aggTrades: the
    recording's quotes and depth with the aggTrades of its trades instead
    of the trades give its bars and forecasts, and the aggTrade lines alone
    (no quote: bars priced by the last trade) as many bars as its trade
    lines alone; no aggTrade is skipped."""
    agg_only = [ln for ln in _agg_lines(real, 2_200_000_000) if b'@trade"' not in ln[:60]]
    n_agg = sum(map(_is_agg, agg_only))
    summary, _, dead = runs(agg_only)
    assert dead == [] and summary["bars"] == clean[0]["bars"] and summary["forecasts"] > 0
    assert "aggtrades_skipped" not in summary["counters"]
    assert summary["counters"]["ticks"] == clean[0]["counters"]["ticks"] - sum(b'@trade"' in ln[:60] for ln in real) \
        + n_agg
    trades_alone, _, _ = runs([ln for ln in real if b'@trade"' in ln[:60]])
    aggs_alone, _, dead = runs([ln for ln in agg_only if _is_agg(ln)])
    assert dead == [] and "aggtrades_skipped" not in aggs_alone["counters"]
    assert aggs_alone["bars"] == trades_alone["bars"] > 300 and aggs_alone["forecasts"] > 0


def test_skipped_aggtrades_keep_the_records_of_the_events_held(real):
    """check_ticks in the dataflow (its step logic, as the dataflow drives
    it, on the parser's batches): the input records follow the events, so
    that a dead letter carries the message as received. Skipped aggTrades
    leave no record behind, and the records of the events the check holds
    are kept: a quote stamped an hour ahead, held at the end of a batch of
    2,000 skipped aggTrades (more than the records the logic keeps at
    most), is dead-lettered with its message in the next batch; every
    event passed on comes with its own record."""
    from core.events import RawChunk
    from dataflows.ops import Side, StepLogic
    from sources.binance import _parse_line, parse_chunk

    mixed = _agg_lines(real, 2_200_000_000)
    k = [i for i, ln in enumerate(mixed) if _is_agg(ln)][2000]
    quote = next(ln for ln in mixed[k:] if b"@bookTicker" in ln[:60])
    forged = _at(quote, recv_ns(mixed[k]) + 3600 * S)
    logic = StepLogic(sanity.step_batch, sanity.SanityState(sanity.SanityConfig()), False, None, "sanity")
    passed, dead, skipped = [], [], 0
    for rows in (mixed[: k + 1] + [forged], mixed[k + 1 :]):
        (batch,) = parse_chunk(RawChunk("ws", "spot", "BTCUSDT", rows))[0].values()
        out, _ = logic.on_batch([batch])
        for o in out:
            if type(o) is Side:
                dead += o.errors
                skipped += sum(c.n for c in o.counts if c.name == "aggtrades_skipped")
            else:
                assert [_parse_line(r, "spot") for r in o.records] == list(o)
                passed += o
    assert [(d.reason.startswith("from the future"), d.raw) for d in dead] == [(True, payload(forged).decode())]
    assert passed == [e for e in _parse_lines(real)["BTCUSDT"]] and skipped == sum(map(_is_agg, mixed))
    assert len(logic.held) <= 1024


def test_a_snapshot_of_the_check_from_before_aggtrades_were_told_apart_resumes(real):
    """A recovery snapshot holds the check's state as pickled by the
    previous version, without ``agg_ids`` and ``traded``: it loads, with
    their defaults, and the run goes on as the uninterrupted run does; the
    aggTrades are skipped again from the next plain trade on."""
    import copyreg
    import io
    import pickle

    (evs,) = _parse_lines(_agg_lines(real, 2_200_000_000)).values()
    k = next(i for i in range(len(evs) // 2, len(evs)) if type(evs[i]) is Trade and not evs[i].agg)
    cfg = sanity.SanityConfig()
    st, head = drive(sanity.step, sanity.SanityState(cfg), evs[:k])  # the next event is a plain trade

    class Before(pickle.Pickler):  # pickles the state as the previous version did: its slots, without the new ones
        def reducer_override(self, obj):
            if type(obj) is not sanity.SanityState:
                return NotImplemented
            _, slots = obj.__reduce_ex__(2)[2]
            return copyreg.__newobj__, (sanity.SanityState,), (None, {n: v for n, v in slots.items()
                                                                      if n not in ("agg_ids", "traded")})

    buf = io.BytesIO()
    Before(buf).dump(st)
    assert b"agg_ids" not in buf.getvalue() and b"traded" not in buf.getvalue()
    old = pickle.loads(buf.getvalue())
    assert type(old) is sanity.SanityState and old.agg_ids == [] and old.traded is False
    assert old.ids == st.ids and old.clock == st.clock
    _, tail = drive(sanity.step, old, evs[k:])
    _, whole = drive(sanity.step, sanity.SanityState(cfg), evs)
    assert head + tail == whole and Count("aggtrades_skipped", 1) in tail
    assert old.traded is True


def _in_batches(evs: list, size: int) -> tuple:
    """``sanity.step_batch`` over ``evs`` in batches of ``size``: its state, the events passed on, the rest."""
    st = sanity.SanityState(sanity.SanityConfig())
    passed: list = []
    side: list = []
    for i in range(0, len(evs), size):
        st, out = sanity.step_batch(st, evs[i : i + size])
        for o in out:
            (passed.extend if type(o) is list else side.append)(o)
    return st, passed, side


@pytest.mark.parametrize("size", [1, 7, 500, 100_000])
def test_the_check_over_batches_is_the_check_event_by_event_with_aggtrades(real, size):
    """``step_batch`` (the dataflow's, with its fast paths for trades and
    aggTrades of their own sequences, and for skipped aggTrades) over the
    first third's aggTrades then both streams, every 50th of each twice,
    in batches of ``size``: the events passed on, the dead letters and the
    state of :func:`step`, and as many aggTrades skipped (counted once a
    batch)."""
    first_trade = next(json.loads(payload(ln))["data"]["t"] for ln in real if b'@trade"' in ln[:60])
    mixed = _agg_lines(real, first_trade)
    cut = len(mixed) // 3
    rows, _, _ = _with_copies([ln for i, ln in enumerate(mixed) if i >= cut or b'@trade"' not in ln[:60]])
    (evs,) = _parse_lines(rows).values()
    one, ref = drive(sanity.step, sanity.SanityState(sanity.SanityConfig()), evs)
    st, passed, side = _in_batches(evs, size)
    assert passed == [o for o in ref if type(o) not in (ErrorRecord, Count)]
    assert [o for o in side if type(o) is ErrorRecord] == [o for o in ref if type(o) is ErrorRecord] != []
    n_skipped = sum(o.n for o in ref if type(o) is Count and o.name == "aggtrades_skipped")
    assert sum(o.n for o in side if type(o) is Count and o.name == "aggtrades_skipped") == n_skipped > 1000
    assert st == one and st.traded and st.agg_ids and st.ids


def _parse_lines(rows: list[bytes]) -> dict:
    from core.events import RawChunk
    from sources.binance import parse_chunk

    by_key, errors, _ = parse_chunk(RawChunk("ws", "spot", "BTCUSDT", list(rows)))
    assert errors == []
    return {k: list(v) for k, v in by_key.items()}


def test_trade_and_aggtrade_ids_close_together_are_never_taken_for_each_other(runs, real):
    """A newly listed symbol numbers its trades and its aggTrades from about
    the same id, and the aggTrade stream can start before the trade stream.
    Here the recording's first third has the aggTrades of its trades, not
    the trades, then both streams, the aggTrade ids starting at the first
    trade id. The duplicate check told the two sequences apart by how close
    the ids were: it took real trades and aggTrades for duplicates of the
    other stream's (dead letters). Now they are told apart by their kind:
    no duplicate; the run is the one of the first third's aggTrades then the
    trades alone, the aggTrades after the first trade skipped. Then every
    50th of each again, 1 ms later: the copies of what was passed on (the
    first third's aggTrades, the trades) are duplicates, the others skipped."""
    first_trade = next(json.loads(payload(ln))["data"]["t"] for ln in real if b'@trade"' in ln[:60])
    mixed = _agg_lines(real, first_trade)
    cut = next(i for i in range(len(mixed) // 3, len(mixed)) if b'@trade"' in mixed[i][:60])
    both = [ln for i, ln in enumerate(mixed) if i >= cut or b'@trade"' not in ln[:60]]
    alone = [ln for i, ln in enumerate(mixed) if (i < cut and b'@trade"' not in ln[:60])
             or (i >= cut and not _is_agg(ln))]
    ref = runs(alone)
    assert ref[2] == [] and "duplicate_trades" not in ref[0]["counters"]
    later = sum(_is_agg(ln) for ln in mixed[cut:])
    assert later > 1000
    both_run = runs(both)
    assert both_run[2] == []  # before: 1,452 real aggTrades dead-lettered as duplicates of trades
    _same_outputs(ref[:2], both_run, [], skipped=later)
    rows, trade_copies, agg_copies = _with_copies(both)
    passed = {recv_ns(c) for c in trade_copies} | {recv_ns(c) for c in agg_copies if recv_ns(c) < recv_ns(mixed[cut])}
    dups = [c for c in trade_copies + agg_copies if recv_ns(c) in passed]
    assert len(dups) > len(trade_copies) > 20
    _same_outputs(ref[:2], runs(rows), dups, skipped=later + len(trade_copies) + len(agg_copies) - len(dups))


def test_a_copy_dead_lettered_for_another_reason_leaves_the_real_trade_alone(spot_events):
    """The id counts once a trade is passed on: a line forged an hour ahead
    with the id of the next trade (held, then dead-lettered as from the
    future) does not make the real trade a duplicate; a copy of a trade held
    by the warm-up is a duplicate once the trade is passed on."""
    trades = [i for i, e in enumerate(spot_events) if type(e) is Trade]
    k = trades[len(trades) // 2]
    forged = msgspec.structs.replace(spot_events[k], ts_recv=spot_events[k].ts_recv + 3600 * S)
    evs = spot_events[:k] + [forged] + spot_events[k:]
    acc, dead, counts = _sanity(evs)
    assert acc == spot_events and [d.reason.startswith("from the future") for d in dead] == [True]
    assert not [c for c in counts if c.name == "duplicate_trades"]
    first = trades[0]
    assert first + 1 < sanity.SanityConfig().warmup  # the trade and its copy are both held by the warm-up
    evs = spot_events[: first + 1] + [spot_events[first]] + spot_events[first + 1 :]
    acc, dead, counts = _sanity(evs)
    assert acc == spot_events and [d.reason for d in dead] == [
        f"duplicate trade: id {spot_events[first].trade_id} was passed on already (the latest id of its sequence "
        f"is {spot_events[first].trade_id})"]
    assert [c.name for c in counts] == ["duplicate_trades"]


def test_late_trades_fill_gaps_copies_do_not_and_the_state_stays_bounded(spot_events):
    """Every 40th real trade arrives 300 events late: each fills its gap and
    goes through, none is a duplicate; copies of them (and of trades older
    than the first one seen) are. A reconnect that skips more ids than the
    window starts a new sequence. Hostile ids (100,000 of them, all over)
    keep each instrument to 4 sequences of at most 256 gaps."""
    cut = [i for i, e in enumerate(spot_events) if type(e) is Trade][8000]  # 8,000 trades: within the window
    events = spot_events[:cut]
    trades = [e for e in events if type(e) is Trade]
    late = trades[100:-400:40]
    held = {id(e) for e in late}
    evs, pending = [], []
    for e in events:
        if id(e) in held:
            pending.append((len(evs) + 300, e))
            continue
        evs.append(e)
        while pending and pending[0][0] <= len(evs):
            evs.append(pending.pop(0)[1])
    evs += [e for _, e in pending]
    acc, dead, _ = _sanity(evs)
    assert acc == evs and dead == []  # the check has no lateness: late trades go through
    st, out = drive(sanity.step, sanity.SanityState(sanity.SanityConfig()), evs + late[:50] + trades[:3])
    dups = [o for o in out if type(o) is ErrorRecord]
    assert [d.raw for d in dups] == [msgspec.json.encode(e).decode() for e in late[:50] + trades[:3]]
    assert len(st.ids) == 1 and st.ids[0][2] == []  # every gap filled
    skip = msgspec.structs.replace(trades[-1], trade_id=trades[-1].trade_id + 50_000, ts_recv=trades[-1].ts_recv + 1)
    st, out = sanity.step(st, skip)
    assert list(out) == [skip] and [s[:2] for s in st.ids] == [[skip.trade_id] * 2, [st.ids[1][0], trades[-1].trade_id]]
    import random

    rng = random.Random(23)
    base = trades[-1]
    for n in range(100_000):
        t = msgspec.structs.replace(base, trade_id=rng.randrange(10**10), ts_recv=base.ts_recv + n)
        st, _ = sanity.step(st, t)
    assert len(st.ids) <= 4 and all(len(s[2]) <= 256 and s[1] - s[0] < 10_000 for s in st.ids)


@pytest.mark.parametrize("size", [1, 64, 100_000])
def test_the_check_over_batches_is_the_check_event_by_event_with_depth(ws_dir, size):
    """``step_batch``'s fast path for depth diffs (their levels checked inline)
    over the USD-M recording, with implausible levels forged into every 97th
    diff (a subnormal quantity, a notional beyond the cap, a subnormal price,
    in turn): in batches of ``size``, the events passed on, the dead letters
    (their reasons those of :func:`step`) and the state of :func:`step`."""
    from core.events import DepthUpdate, Level

    by_key, _, _ = parse_paths([ws_dir / "usdm" / "btcusdt_20230404.dat.gz"])
    (evs,) = by_key.values()
    forged = [Level(100.0, 5e-324), Level(1e9, 1e6), Level(5e-324, 1.0)]  # 1e15 > the cap, 1e12
    n_depth = 0
    for i, e in enumerate(evs):
        if type(e) is DepthUpdate:
            n_depth += 1
            if n_depth % 97 == 0:
                bad = forged[n_depth // 97 % 3]
                evs[i] = msgspec.structs.replace(e, bids=(*e.bids, bad)) if n_depth % 2 else \
                    msgspec.structs.replace(e, asks=(bad, *e.asks))
    one, ref = drive(sanity.step, sanity.SanityState(sanity.SanityConfig()), evs)
    dead = [o for o in ref if type(o) is ErrorRecord]
    assert {d.reason.split(":")[0] for d in dead} == {"not a normal float", "notional above 1e+12"}
    assert len(dead) == n_depth // 97
    st, passed, side = _in_batches(evs, size)
    assert passed == [o for o in ref if type(o) not in (ErrorRecord, Count)]
    assert [o for o in side if type(o) is ErrorRecord] == dead
    assert st == one

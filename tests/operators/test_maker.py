"""Resting orders (operators/maker.py): the exchange side's rules on hand-made
books, the fills of a fixed quoting strategy on the real USD-M recordings
checked against the raw lines, and against hftbacktest itself."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
from pathlib import Path

import pytest

from harness.maker_replay import quote_every_second
from operators import maker
from operators.maker import Book, MakerConfig, MakerState, cancel, on_depth, on_time, on_trade, submit

MS = 1_000_000
S = 1_000_000_000
#: the fixed strategy's settings: one lot, 10 ms, no inventory limit (hftbacktest's side has none)
FIXED = {"latency_ms": 10.0, "lot": 0.001, "max_inventory_lots": 10**6}
BOOK = Book(best_bid=100.0, best_ask=101.0, bid_qty={100.0: 5.0, 99.0: 2.0}, ask_qty={101.0: 3.0})


def _state(**cfg) -> MakerState:
    return MakerState(MakerConfig(**{"latency_ms": 10.0, "lot": 1.0, **cfg}))


def test_a_post_only_order_that_would_take_is_refused_and_counted():
    """On arrival a buy at or above the best ask (a sell at or below the best
    bid) is refused, as GTX refuses it; one inside the spread rests."""
    st = _state()
    submit(st, 1, 1, 101.0, 1.0, 0)   # at the ask
    submit(st, 2, -1, 99.5, 1.0, 0)   # below the bid
    submit(st, 3, 1, 100.5, 1.0, 0)   # inside the spread: a new best bid
    on_time(st, BOOK, 11 * MS)
    assert st.refused == 2 and list(st.orders) == [3]
    assert st.orders[3].live and st.orders[3].queue == 0.0  # nobody ahead at a new price


def test_an_order_is_not_there_before_its_latency_and_the_market_goes_first_at_a_tie():
    """Sent at 0 with 10 ms latency: a trade stamped at 10 ms (the arrival
    time: the market's event goes first) does not touch it, one at 11 ms does."""
    st = _state(queue="risk_averse")
    submit(st, 1, 1, 100.0, 1.0, 0)
    on_time(st, BOOK, 10 * MS)
    assert not st.orders[1].live
    assert on_trade(st, BOOK, 100.0, 9.0, True, 10 * MS) == []
    on_time(st, BOOK, 11 * MS)
    assert st.orders[1].live and st.orders[1].front == 5.0
    assert on_trade(st, BOOK, 100.0, 4.0, True, 11 * MS) == [] and st.orders[1].front == 1.0


def test_risk_averse_queue_fills_in_lots_and_partially():
    """Only trades at its price advance it; a level's decrease caps it; it fills
    as many whole lots as the queue ahead went negative, the rest stays."""
    st = _state(lot=1.0)
    submit(st, 1, 1, 100.0, 3.0, 0)
    on_time(st, BOOK, 11 * MS)
    assert on_depth(st, BOOK, 1, 100.0, 5.0, 2.0, 12 * MS) == [] and st.orders[1].front == 2.0  # cancels ahead
    assert on_depth(st, BOOK, 1, 100.0, 2.0, 8.0, 13 * MS) == [] and st.orders[1].front == 2.0  # joins behind
    fills = on_trade(st, BOOK, 100.0, 4.0, True, 14 * MS)  # 2 ahead, 4 sold: 2 lots of it
    assert [(f.qty, f.price, f.queue) for f in fills] == [(2.0, 100.0, 5.0)] and st.orders[1].qty == 1.0
    assert on_trade(st, BOOK, 100.0, 1.0, False, 15 * MS) == []  # a buy at 100 does not hit bids
    assert [f.qty for f in on_trade(st, BOOK, 100.0, 1.0, True, 16 * MS)] == [1.0] and st.orders == {}


def test_probabilistic_queue_is_hftbacktests_formula():
    """A decrease of the level is split with the probability ``f(back) /
    (f(back) + f(front))`` (hftbacktest's ``ProbQueueModel``), the trades
    already counted taken out of it first."""
    st = _state(queue="power", power_n=2.0)
    submit(st, 1, 1, 100.0, 1.0, 0)
    on_time(st, BOOK, 11 * MS)          # 5 ahead, nobody behind yet
    on_depth(st, BOOK, 1, 100.0, 5.0, 9.0, 12 * MS)   # 4 join behind: front 5, back 4
    on_trade(st, BOOK, 100.0, 1.0, True, 13 * MS)     # front 4, 1 traded
    on_depth(st, BOOK, 1, 100.0, 9.0, 5.0, 14 * MS)   # -4, of which 1 the trade: 3 cancelled
    front, back, chg = 4.0, 9.0 - 4.0, 3.0
    p = back**2 / (back**2 + front**2)
    assert st.orders[1].front == pytest.approx(min(front - (1 - p) * chg + min(back - p * chg, 0.0), 5.0))
    st = _state(queue="log")
    submit(st, 1, 1, 100.0, 1.0, 0)
    on_time(st, BOOK, 11 * MS)
    on_depth(st, BOOK, 1, 100.0, 5.0, 7.0, 12 * MS)
    on_depth(st, BOOK, 1, 100.0, 7.0, 4.0, 13 * MS)
    p = maker.math.log1p(2.0) / (maker.math.log1p(2.0) + maker.math.log1p(5.0))
    assert st.orders[1].front == pytest.approx(min(5.0 - (1 - p) * 3.0 + min(2.0 - p * 3.0, 0.0), 4.0))


def test_a_fill_lands_while_the_cancel_is_in_flight_and_late_events_are_matched_on_the_exchange_clock():
    """A cancel sent at 20 ms reaches the exchange at 30 ms: a trade stamped
    before that fills the order, even when it is received after a later
    event (a lagging trade stream); one stamped after does not, and the
    order goes ``late_ms`` after its cancel arrived."""
    st = _state(late_ms=100.0)
    submit(st, 1, -1, 101.0, 2.0, 0)
    on_time(st, BOOK, 11 * MS)
    cancel(st, 1, 20 * MS)
    on_time(st, BOOK, 40 * MS)          # a depth diff stamped 40 ms, received first
    assert on_trade(st, BOOK, 102.0, 1.0, False, 35 * MS) == []  # stamped after the cancel: not matched
    fills = on_trade(st, BOOK, 101.5, 1.0, False, 25 * MS)      # stamped before it: bought through the ask
    assert [(f.qty, f.ts_exch) for f in fills] == [(2.0, 25 * MS)]
    st = _state(late_ms=100.0)
    submit(st, 1, -1, 101.0, 2.0, 0)
    on_time(st, BOOK, 11 * MS)
    cancel(st, 1, 20 * MS)
    on_time(st, BOOK, 131 * MS)
    assert st.orders == {} and st.cancelled == 1


def test_the_other_side_coming_to_its_price_fills_it():
    """An ask falling to a resting bid's price fills the bid (hftbacktest's
    ``on_best_ask_update``)."""
    st = _state()
    submit(st, 1, 1, 100.0, 1.0, 0)
    on_time(st, BOOK, 11 * MS)
    crossed = Book(99.0, 100.0, {99.0: 2.0}, {100.0: 1.0, 101.0: 3.0})
    assert [(f.oid, f.price) for f in on_depth(st, crossed, -1, 100.0, 0.0, 1.0, 12 * MS)] == [(1, 100.0)]


def _ready_state(**cfg) -> maker.QuoterState:
    """A quoting state whose book holds 100.0 x 3 / 100.2 x 2 (grid 0.1) from 0.5 s."""
    from core.events import BookSnapshot, Level, Trade

    st = maker.QuoterState(MakerConfig(**{"latency_ms": 10.0, "lot": 1.0, **cfg}))
    st, _ = maker.step(st, BookSnapshot("X", S // 2, 5, (Level(100.0, 3.0), Level(99.9, 1.0)),
                                        (Level(100.2, 2.0), Level(100.3, 1.0)), S // 2))
    st, _ = maker.step(st, Trade("X", S // 2 + 1, S // 2, 100.1, 1.0, True, 0))
    return st


def test_a_models_decision_quotes_its_book_around_its_forecast_and_a_late_one_is_not_taken():
    """A signal at 0.8 s quotes its model's book around its forecast (+20 bps:
    one tick up and rounded out); one at 0.5 s, after an event received at
    0.5 s, would need the book as it was then: it is not taken, and counted."""
    from core.events import Signal

    st = _ready_state(baseline=False)
    st, _ = maker.step(st, Signal("X", "linear", 1, int(0.8 * S), 1, None, 0.002, 0.5))
    orders = st.books[("linear", 1)].orders
    assert [(o.side, o.price) for o in orders.values()] == [(1, 100.2), (-1, 100.5)]
    st, _ = maker.step(st, Signal("X", "linear", 1, S // 2, 1, None, 0.0, 0.5))
    assert st.late_signals == 1 and len(orders) == 2 and all(o.cancel_at is None for o in orders.values())


def test_quotes_skew_with_inventory_and_stop_at_its_limit():
    c = MakerConfig(lot=1.0, skew_ticks=2.0, max_inventory_lots=2, distance_ticks=1)
    assert maker.quote_prices(c, 0.1, 1, 100.0, 100.2, 0.0, 0.0) == (99.9, 100.3)
    assert maker.quote_prices(c, 0.1, 1, 100.0, 100.2, 0.0, 1.0) == (99.7, 100.1)   # long: both lower
    assert maker.quote_prices(c, 0.1, 1, 100.0, 100.2, 0.0, 2.0) == (None, 99.9)    # at the limit: no bid
    assert maker.quote_prices(c, 0.1, 1, 100.0, 100.2, 0.0, -2.0) == (100.3, None)  # short: no ask
    one = c.model_copy(update={"sides": "ask"})
    assert maker.quote_prices(one, 0.1, 1, 100.0, 100.2, 0.0, 0.0) == (None, 100.3)


def test_a_book_with_a_zero_forecast_is_the_baseline_on_real_signals(perp_chain):
    """On the USD-M recordings with the chain's real signals put in time order
    (:func:`operators.maker.interleave`), no decision comes late, every model's
    book fills, and ``naive`` (whose forecast is always 0) fills exactly as the
    baseline does once it decides (no inventory limit: the books start at
    different times, and so hold different positions)."""
    from core.events import Signal
    from harness.realdata import drive, signals_of

    sigs = [s for s in signals_of(perp_chain) if type(s) is Signal]
    items = maker.interleave(perp_chain.events, sigs)
    st, fills = drive(maker.step, maker.QuoterState(MakerConfig(**FIXED)), items)
    assert st.late_signals == 0
    books = {(f.model, f.horizon) for f in fills}
    assert books == {("touch", 0)} | {(s.model, s.horizon) for s in sigs}
    first = min(s.ts_forecast for s in sigs if s.model == "naive") + 2 * S  # its orders are live
    touch = [f[3:-1] for f in fills if f.model == "touch" and f.ts_exch > first]  # not the positions
    naive = [f[3:-1] for f in fills if (f.model, f.horizon) == ("naive", 1) and f.ts_exch > first]
    assert len(touch) > 100 and naive == touch


# --- the fixed strategy on the real USD-M recordings (no inventory limit, as hftbacktest's side has none)


USDM = ("usdm/btcusdt_20230404.dat.gz", "usdm/btcusdt_20230405.dat.gz")


@pytest.fixture(scope="module")
def usdm(ws_dir) -> list[Path]:
    return [ws_dir / f for f in USDM]


def _raw(paths: list[Path]) -> tuple[list, list]:
    """The market trades (exchange ns, price, buyer-maker) and depth diffs (by exchange ns) of the raw lines."""
    trades, diffs = [], []
    for p in paths:
        with gzip.open(p, "rb") as f:
            for ln in f.read().split(b"\n"):
                if not ln:
                    continue
                msg = json.loads(ln.split(b" ", 1)[1])
                d = msg.get("data", {})
                if d.get("e") == "trade" and d.get("X", "MARKET") == "MARKET":
                    trades.append((d["T"] * MS, float(d["p"]), d["m"]))
                elif d.get("e") == "depthUpdate":
                    diffs.append((d["T"] * MS, d))
    return trades, diffs


def _quoting(paths, cfg: MakerConfig, sent: list) -> dict:
    """:func:`quote_every_second`, with the orders each decision sent: ``(oid, local time, arrival)`` to ``sent``."""
    real = maker._requote

    def spy(st, m, t, *args):
        first = m.next_oid
        real(st, m, t, *args)
        sent.extend((oid, t, m.orders[oid].arrival) for oid in range(first, m.next_oid) if oid in m.orders)

    maker._requote = spy
    try:
        return quote_every_second(paths, cfg)
    finally:
        maker._requote = real


def test_every_fill_is_on_a_raw_trade_at_or_through_its_price_or_a_book_at_it(usdm):
    """On the USD-M recordings, every fill of the fixed strategy (quote one
    lot at the best bid and ask every second, 10 ms latency) has, in the raw
    lines, a trade at or through its price stamped after the order went
    live and by the fill, or else (the book came to it) a diff stamped at
    the fill that put the other side at its price; and a trade at or
    through its price follows it."""
    sent: list[tuple[int, int, int]] = []
    res = _quoting(usdm, MakerConfig(**FIXED), sent)
    arrivals = {oid: arrival for oid, _, arrival in sent}
    trades, diffs = _raw(usdm)
    at_diff = {}
    for t, d in diffs:
        at_diff.setdefault(t, []).append(d)
    on_trade_fills = on_book_fills = 0
    assert len(res["fills"]) > 100 and res["decisions"] > 500
    for f in res["fills"]:
        hits = [t for t, p, m in trades if t > arrivals[f.oid] and (
            (f.side > 0 and m and p <= f.price) or (f.side < 0 and not m and p >= f.price))]
        assert hits, f
        if hits[0] <= f.ts_exch:
            on_trade_fills += 1
            continue
        other = "a" if f.side > 0 else "b"
        assert any(float(q) > 0 and (float(p) <= f.price if f.side > 0 else float(p) >= f.price)
                   for d in at_diff.get(f.ts_exch, ()) for p, q in d[other]), f
        on_book_fills += 1
    assert on_trade_fills > 100 and on_book_fills <= 5


def test_fills_are_prefix_invariant(usdm):
    """The fills made by the first N events are those of the whole run (N at a third and two thirds)."""
    whole = quote_every_second(usdm, MakerConfig(**FIXED))["fills"]
    n = len(whole)
    for frac in (3, 2):
        part = quote_every_second(usdm, MakerConfig(**FIXED), upto=70_000 // frac)["fills"]
        assert 0 < len(part) < n and part == whole[: len(part)]


# --- against hftbacktest

def _hftbacktest(python: Path, paths: list[Path], queue: str, tmp: Path) -> dict:
    out = tmp / f"hbt-{queue}.json"
    proc = subprocess.run([str(python), str(Path(__file__).resolve().parents[2] / "harness" / "hftbacktest_ref.py"),
                           str(out), *map(str, paths), "--latency-ms", "10", "--lot", "0.001", "--tick", "0.1",
                           "--queue", queue], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


_QUEUES = {"risk_averse": {"queue": "risk_averse"}, "power2": {"queue": "power", "power_n": 2.0},
           "power3": {"queue": "power", "power_n": 3.0}, "log": {"queue": "log"}}


@pytest.mark.integration  # hftbacktest runs in its own virtualenv
@pytest.mark.parametrize("queue", list(_QUEUES))
def test_the_fills_are_hftbacktests(hftbacktest_python, usdm, queue, tmp_path):
    """The fixed strategy in hftbacktest 2.4.4 and in ticklet's quoting step,
    on the same USD-M recordings (the queue model, 10 ms entry and response
    latency, one lot, no fees, no forecast): the same orders fill, at the
    same prices, quantities and exchange times, to the same final position.

    The one setting that has to agree is the clock: hftbacktest's conversion
    moves every receive time by the most the recording received an event
    before the exchange stamped it (26.9 ms here: the capture's clock was
    behind), so an order sent at a whole second of the recording reaches
    its exchange 26.9 ms + 10 ms later; ticklet says so with
    ``clock_offset_ms``, and by default (None) measures it as the messages
    come: the same fills. Without an offset (0) the orders reach the
    exchange 26.9 ms earlier: a few of them fill or not (checked below).
    """
    ref = _hftbacktest(hftbacktest_python, usdm, queue, tmp_path)
    offset = ref["local_shift_ns"] / MS
    assert offset == 26.932 and len(ref["fills"]) > 100
    cfg = MakerConfig(latency_ms=10.0, lot=0.001, clock_offset_ms=offset, max_inventory_lots=10**6, **_QUEUES[queue])
    ours = quote_every_second(usdm, cfg)
    theirs = {(f["order_id"], 1 if f["side"] == 1 else -1): f for f in ref["fills"]}
    mine = {(f.oid, f.side): f for f in ours["fills"]}
    assert mine.keys() == theirs.keys()
    for k, f in mine.items():
        assert f.price == pytest.approx(theirs[k]["price"], abs=1e-6)  # hftbacktest's prices: ticks x 0.1
        assert f.qty == pytest.approx(theirs[k]["qty"], abs=1e-12)
        assert abs(f.ts_exch - theirs[k]["exch_ts"]) <= 1_000  # its times went through a float64
    assert ours["position"] == pytest.approx(ref["position"], abs=1e-12)
    if queue == "risk_averse":  # ticklet's default (measured as it goes): the same fills; no offset: but a few
        measured = {(f.oid, f.side) for f in quote_every_second(usdm, cfg.model_copy(
            update={"clock_offset_ms": None}))["fills"]}
        assert measured == theirs.keys()
        own = {(f.oid, f.side) for f in quote_every_second(usdm, cfg.model_copy(
            update={"clock_offset_ms": 0.0}))["fills"]}
        assert len(own & theirs.keys()) >= 0.95 * len(theirs) and len(own ^ theirs.keys()) <= 20
    # the same through `ticklet backtest` (the baseline book of maker_fills.csv), the models' books beside it
    import csv

    from dataflows.settings import Settings
    from ticklet.backtest import run_backtest

    base = Settings().model_copy(update={"maker": cfg.model_copy(update={"enabled": True})})
    run_backtest([str(p) for p in usdm], tmp_path / "out", base=base)
    with open(tmp_path / "out" / "maker_fills.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["model"] == "touch"]
    assert {(int(r["order_id"]), int(r["side"])) for r in rows} == theirs.keys()
    assert all(float(r["price"]) == mine[(int(r["order_id"]), int(r["side"]))].price for r in rows)


# --- in the dataflow

@pytest.mark.integration  # runs the dataflow
def test_the_dataflows_maker_fills_are_the_steps_over_the_whole_recording(usdm, perp_chain, tmp_path):
    """``ticklet backtest`` with the maker books on (TICKLET_MAKER__ENABLED),
    on the USD-M recordings: ``maker_fills.csv`` is, row for row, what the
    quoting step gives over the whole recording in one batch with the
    run's own decisions (the dataflow's chunks and their order change
    nothing), with what goes out when the input ends (:func:`operators.maker.finish`), for the
    baseline and every model's book; ``maker_economics.csv`` likewise; the counters agree; the
    backtest summary and the HTML report show each book's last economics."""
    import csv

    from core.events import Count, MakerEconomicsRecord, MakerFillRecord, Signal
    from dataflows.settings import Settings
    from harness.realdata import drive
    from operators import signals
    from ticklet.backtest import run_backtest

    base = Settings().model_copy(update={"maker": MakerConfig(enabled=True)})
    run_backtest([str(p) for p in usdm], tmp_path / "out", base=base)
    with open(tmp_path / "out" / "maker_fills.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(MakerFillRecord.__struct_fields__)
    _, decided = drive(signals.step, signals.SignalState(base.signals), perp_chain.join_out)
    sigs = [s for s in decided if type(s) is Signal]
    st, want = maker.step_batch(maker.QuoterState(base.maker, perp_chain.instrument), [perp_chain.events, *sigs])
    _, last = maker.finish(st)
    want += last
    fills = [r for r in want if type(r) is MakerFillRecord]
    assert len(fills) > 300 and {(r.model, r.horizon) for r in fills} >= {("touch", 0), ("linear", 1)}
    assert sum(r.mid_10s is None for r in fills) < 20 and all(r.mid is not None for r in fills)
    assert [tuple(r) for r in rows[1:]] == [_cells(r) for r in fills]
    with open(tmp_path / "out" / "maker_economics.csv", newline="") as f:
        econ = list(csv.reader(f))
    assert econ[0] == list(MakerEconomicsRecord.__struct_fields__)
    assert [tuple(r) for r in econ[1:]] == [_cells(r) for r in want if type(r) is MakerEconomicsRecord]
    counters = json.loads((tmp_path / "out" / "counters.json").read_text())
    assert counters["maker_fills"] == len(fills)
    # the backtest summary (--json) and the HTML report carry each book's last economics
    from core.events import EconomicsRecord
    from sinks.report import read_last, summarize
    from ticklet.report import build_report

    last = {(r.model, r.horizon): r for r in want if type(r) is MakerEconomicsRecord}
    taker = {(e.model, e.horizon): e.fills for e in read_last(tmp_path / "out" / "economics.csv", EconomicsRecord)}
    books = summarize(tmp_path / "out")["maker"][perp_chain.instrument]
    assert {(m, int(h)) for m, hs in books.items() for h in hs} == set(last)
    for (m, h), r in last.items():
        entry = books[m][str(h)]
        assert entry["break_even_bps"] == r.break_even_bps and entry["fills"] == r.fills
        assert entry["maker_share"] == r.fills / (r.fills + taker.get((m, h), 0))
    assert books["linear"]["1"]["vs_touch_bps"] == last[("linear", 1)].break_even_bps - last[
        ("touch", 0)].break_even_bps
    html = build_report(tmp_path / "out").read_text()
    table = html[html.index('<table class="maker"'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == len(last) + 1 and f"{last[('touch', 0)].break_even_bps:.3f}" in table
    assert counters.get("maker_orders_refused", 0) == sum(r.n for r in want if type(r) is Count
                                                          and r.name == "maker_orders_refused")


def _cells(rec) -> tuple:
    """A record's cells as the CSV file holds them (sinks.records)."""
    from sinks.records import csv_line

    return tuple(next(csv.reader([csv_line(rec)])))


def test_a_decision_without_a_book_is_not_taken_and_counted():
    """Before the instrument's first snapshot there is no book to quote on: the
    decision is counted (``maker_decisions_without_book``), no book is made."""
    from core.events import Count, Signal, Trade

    st = maker.QuoterState(MakerConfig(**FIXED), "X")
    st, out = maker.step_batch(st, [[Trade("X", S + 1, S, 100.0, 1.0, True, 1)],
                                    Signal("X", "linear", 1, S, 1, None, 0.0, 0.5)])
    assert out == [Count("maker_decisions_without_book", 1)] and ("linear", 1) not in st.books


def test_the_feed_latency_model_sends_orders_with_the_recordings_own_feed_latency(usdm):
    """With ``latency_model="feed"``, on the USD-M recordings, every order
    reaches the exchange ``latency_ms + feed_latency_mul x`` the feed latency
    of the latest depth message received before it was sent (its receive time
    minus its exchange time, read from the raw lines, on clocks aligned by
    the clock offset), after the clock offset: its arrival follows the
    recording's own latency, not a constant."""
    from harness.realdata import parse_paths

    sent: list[tuple[int, int, int]] = []  # (oid, t_local, arrival)
    cfg = MakerConfig(**{**FIXED, "latency_ms": 2.0, "latency_model": "feed", "feed_latency_mul": 1.5,
                         "clock_offset_ms": 26.932})
    res = _quoting(usdm, cfg, sent)
    (events,) = parse_paths(usdm)[0].values()
    from core.events import DepthUpdate

    depth = [(e.ts_recv, e.ts_recv - e.ts_event) for e in events if type(e) is DepthUpdate]
    import bisect

    times = [t for t, _ in depth]
    lags = set()
    for _, t_local, arrival in sent:
        i = bisect.bisect_left(times, t_local) - 1  # the latest depth message received before the decision
        feed = depth[i][1]
        assert arrival == t_local + round(26.932 * MS + max(0.0, 2.0 * MS + 1.5 * (feed + 26.932 * MS))), (
            t_local, feed)
        lags.add(feed)
    assert len(sent) > 1000 and len(lags) > 100  # the latency varies with the feed's
    const = quote_every_second(usdm, MakerConfig(**{**FIXED, "latency_ms": 2.0, "clock_offset_ms": 26.932}))
    assert len(res["fills"]) > 100 and {(f.oid, f.side) for f in res["fills"]} != {
        (f.oid, f.side) for f in const["fills"]}


def test_signal_sizing_quotes_the_decisions_size_cut_to_the_inventory_limit():
    """With ``sizing="signal"`` a model book quotes its decision's size,
    ``|target_position| x equity / mid`` in whole lots; each side is cut to
    what the inventory limit leaves; the baseline keeps ``quote_lots``."""
    from core.events import BookSnapshot, Level, Signal, Trade

    cfg = MakerConfig(latency_ms=10.0, lot=1.0, sizing="signal", equity=10_000.0, max_inventory_lots=30)
    st = maker.QuoterState(cfg, "X")
    snap = BookSnapshot("X", S // 2, 5, (Level(99.9, 1.0),), (Level(100.1, 1.0),), S // 2)
    st, _ = maker.step_batch(st, [[snap, Trade("X", S // 2 + 1, S // 2, 100.0, 1.0, True, 1)],
                                  Signal("X", "linear", 1, S // 2 + 10, 1, None, 0.0, -0.25)])
    orders = sorted((o.side, o.qty) for o in st.books[("linear", 1)].orders.values())
    assert orders == [(-1, 25.0), (1, 25.0)]  # 0.25 x 10,000 / 100 = 25 lots a side
    st.books[("linear", 1)].position = 20.0  # 20 long: 10 lots of room to buy, 50 to sell
    st, _ = maker.step_batch(st, [[Trade("X", S // 2 + 20, S // 2, 100.0, 1.0, True, 2)],
                                  Signal("X", "linear", 1, S // 2 + 30, 1, None, 0.0, 0.25)])
    live = sorted((o.side, o.qty) for o in st.books[("linear", 1)].orders.values() if o.cancel_at is None)
    assert live == [(-1, 25.0), (1, 10.0)]

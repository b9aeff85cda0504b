"""The chunk path's book in compiled code (:mod:`operators.flatbook`) against the Python book, the reference.

On the recordings: the order book, the bars with their book and the maker's
quotes and fills, each fed the compiled scanner's events with its book in
arrays, give the reference's outputs (per-message events, the book in dicts
and lists), record for record. On synthetic diffs that the recordings do not
have: levels far from the top, books deeper than ``max_depth``, a diff with
more levels than the rows hold, crossed books and resyncs, a pickle in the
middle.
"""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.events import BookSnapshot, DepthUpdate, Level, Levels, Quote, Trade
from harness.realdata import drive, operator_case
from operators import flatbook, orderbook
from operators.depth import DepthConfig, DepthState
from operators.depth import step as depth_step
from operators.orderbook import OrderBookConfig, OrderBookState


@pytest.mark.parametrize("name", ["orderbook", "depth", "maker", "sanity"])
def test_the_chunk_path_gives_the_reference_outputs_on_the_recordings(chain, name):
    step, init, items, ref = operator_case(name, chain)
    _, _, fast_items, fast = operator_case(name + "[chunk]", chain)
    assert fast_items == items if name != "orderbook" else len(fast_items) == len(items)
    assert any(type(e) is DepthUpdate and type(e.bids) is Levels for e in fast_items)  # the arrays' events
    assert fast == ref and len(ref) > 0
    # and the Python book fed the scanner's events (a run resumed from a snapshot of the other path keeps its books)
    assert drive(step, init(), fast_items)[1] == ref


def _levels(rng: random.Random, mid: float, n: int, far: bool) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
    """A diff's levels around ``mid`` on a 0.5 grid: near the top mostly, far away some, removals among them."""
    def side(sign: int) -> tuple[Level, ...]:
        out = []
        for _ in range(rng.randrange(n)):
            dist = rng.choice((rng.randrange(1, 6), rng.randrange(1, 60), rng.randrange(200, 400) if far else 3))
            qty = 0.0 if rng.random() < 0.3 else round(rng.uniform(0.001, 5.0), 3)
            out.append(Level(mid + sign * 0.5 * dist, qty))
        return tuple(out)

    return side(-1), side(1)


def _stream(seed: int, n: int, max_levels: int = 12, rare: float = 0.01) -> list:
    """Snapshots and diffs of one instrument: the book's every path (gaps, repeats, crossings: ``rare`` each)."""
    rng = random.Random(seed)
    mid, uid, t = 1000.0, 100, 10**9
    bids, asks = _levels(rng, mid, 40, True)
    out: list = [BookSnapshot("X", t, uid, tuple(lv for lv in bids if lv.qty), tuple(lv for lv in asks if lv.qty))]
    for i in range(n):
        t += 10**7
        mid += 0.5 * rng.choice((-1, *(0,) * 18, 1))
        b, a = _levels(rng, mid, max_levels if i % 97 else 1500, True)  # now and then more than the rows hold
        first = uid + 1 if rng.random() > rare else uid + 3  # a gap now and then
        if rng.random() < rare:
            first = uid  # a repeat
        if rng.random() < rare / 2:
            b = (Level(mid + 100.0, 1.0),)  # a bid above the asks: crossed
        uid = max(uid, first) + rng.randrange(1, 4)
        out.append(DepthUpdate("X", t, t, first, uid, -1, b, a))
        if rng.random() < 0.02:  # a snapshot, after a resync's request
            b, a = _levels(rng, mid, 40, True)
            out.append(BookSnapshot("X", t, uid, tuple(lv for lv in b if lv.qty), tuple(lv for lv in a if lv.qty)))
    return out


def _as_arrays(ev):
    """``ev`` with its levels in one pair of arrays, as the chunk path's decoder gives them."""
    if type(ev) is not DepthUpdate:
        return ev
    px = np.array([lv.price for lv in (*ev.bids, *ev.asks)], dtype=np.float64)
    qty = np.array([lv.qty for lv in (*ev.bids, *ev.asks)], dtype=np.float64)
    nb = len(ev.bids)
    return DepthUpdate(ev.instrument, ev.ts_recv, ev.ts_event, ev.first_id, ev.last_id, ev.prev_last_id,
                       Levels(px, qty, 0, nb), Levels(px, qty, nb, len(px)))


@pytest.mark.parametrize("max_depth", [5, 50, 1000])
def test_the_compiled_book_is_the_python_book_after_every_event(max_depth):
    events = _stream(max_depth, 3000)
    ref = OrderBookState(OrderBookConfig(max_depth=max_depth, levels=min(5, max_depth)))
    fast = OrderBookState(OrderBookConfig(max_depth=max_depth, levels=min(5, max_depth), compiled=True))
    seen = set()
    longest = 0
    for i, ev in enumerate(events):
        ref, want = orderbook.step(ref, ev)
        fast, got = orderbook.step(fast, _as_arrays(ev) if i % 2 else ev)  # both kinds of levels
        assert got == want, (i, ev)
        assert (fast.status, fast.last_id, fast.best_bid, fast.best_ask) == (ref.status, ref.last_id, ref.best_bid,
                                                                           ref.best_ask)
        assert fast.top(10**6) == ref.top(10**6), i
        seen.update(type(r).__name__ for r in want)
        seen.add(ref.status)
        assert fast.flat is not None
        longest = max(longest, fast.flat.keys.shape[1])
        if i == len(events) // 2:
            fast = pickle.loads(pickle.dumps(fast))
    assert longest > flatbook.new(max_depth).keys.shape[1]  # the rows grew for a diff they could not hold
    assert {"BookQuote", "BookGap", "SnapshotRequest", "ErrorRecord", "synced", "waiting"} <= seen


def test_the_compiled_book_keeps_the_bars_book_features():
    """The bars with their book (level OFIs, depths, events, within, walk) on the synthetic stream, with quotes
    and trades between the diffs: the reference's, to the bit."""
    events = _stream(7, 4000, rare=0.001)
    rng = random.Random(8)
    mixed: list = []
    for ev in events:
        mixed.append(ev)
        if rng.random() < 0.5:  # a quote and a trade between diffs: bars close on them too
            t = ev.ts_recv + 1
            mixed.append(Quote("X", t, None, 999.0, 1.0, 1001.0, 1.0, 0))
            mixed.append(Trade("X", t + 1, t, 1000.0, 0.1, rng.random() < 0.5, t))
    cfg = DepthConfig(levels=5, imbalance_levels=(1, 5), within_bps=(2.0, 30.0), walk_notional=50_000.0, max_depth=40)
    from operators.bars import BarConfig

    ref, fast = DepthState(BarConfig(), cfg), DepthState(BarConfig(), cfg, True)
    want, got = [], []
    for i, ev in enumerate(mixed):
        ref, a = depth_step(ref, ev)
        fast, b = depth_step(fast, _as_arrays(ev) if i % 3 else ev)
        want.extend(a)
        got.extend(b)
    bars = [b for b in want if type(b).__name__ == "Bar"]
    assert got == want and len(bars) > 30
    ready = [b.depth for b in bars if b.depth is not None and b.depth.ready]
    assert len(ready) > 10 and any(d.walk_buy is None for d in ready) and any(d.walk_buy is not None for d in ready)
    assert any(d.adds_bid and d.cancels_ask and d.changes_bid for d in ready)


def test_levels_read_as_the_tuple_they_hold():
    px, qty = np.array([5.0, 100.0, 99.5, 101.0]), np.array([1.0, 2.0, 0.0, 3.0])
    bids, asks = Levels(px, qty, 1, 3), Levels(px, qty, 3, 4)
    tup = (Level(100.0, 2.0), Level(99.5, 0.0))
    assert bids == tup and tup == bids and hash(bids) == hash(tup) and repr(bids) == repr(tup)
    assert list(bids) == list(tup) and bids[-1] == tup[-1] and bids[:1] == tup[:1] and len(bids) == 2
    assert not Levels(px, qty, 2, 2) and bids != asks and bids != [tup[0], tup[1]]
    copy = pickle.loads(pickle.dumps(bids))
    assert copy == tup and copy.px.tolist() == [100.0, 99.5] and copy.px is not px


@pytest.mark.integration
def test_the_per_message_path_never_loads_numba():
    """The reference's books, bars and maker, and its sanity checks, run without numba (and its 0.3 s load)."""
    code = """
import sys
from harness.realdata import parse_paths
from operators import depth, maker, orderbook, sanity
from dataflows.settings import Settings
import glob
s = Settings()
(events,) = parse_paths(sorted(glob.glob("tests/data/binance-ws/usdm/*.gz")))[0].values()
st, mk, sn = depth.DepthState(s.bars, s.features.depth), maker.QuoterState(maker.MakerConfig()), sanity.SanityState(
    sanity.SanityConfig())
for e in events:
    st, _ = depth.step(st, e)
    mk, _ = maker.step(mk, e)
    sn, _ = sanity.step(sn, e)
assert st.book.status == "synced" and mk.book.status == "synced"
print("numba" in sys.modules)
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_depth_level_over_the_notional_cap_is_the_same_dead_letter_on_both_paths(ws_dir):
    """The scanner vouches for its levels' floats and gives each side's largest notional: the sanity checks of a
    diff then read that alone, with the same outcome as the reference's level by level."""
    from harness.realdata import lines
    from operators import sanity
    from sources.binance import _parse_line
    from sources.columns import DEPTH, event, scan

    rows = [ln for ln in lines(ws_dir / "usdm/btcusdt_20230404.dat.gz") if b"@depth" in ln[:60]][:50]
    big = [rows[i].replace(b'"b":[["', b'"b":[["99999999999.9","99999"],["', 1) for i in range(0, 50, 2)]
    big += [rows[i].replace(b'"a":[["', b'"a":[["1.5","0"],["99999999.9","99999"],["', 1) for i in range(1, 50, 2)]
    c = scan(rows + big, "BTCUSDT")
    assert (c.kind == DEPTH).all()
    fast = [event(c, i, "BTCUSDT-PERP") for i in range(len(rows) + len(big))]
    ref = [_parse_line(ln, "usdm") for ln in rows + big]
    assert all(type(e.bids) is Levels and e.bids.notional is not None for e in fast)
    for cap in (1e12, 1e9, 1e5):
        cfg = sanity.SanityConfig(max_notional=cap)
        _, want = drive(sanity.step, sanity.SanityState(cfg), ref)
        _, got = drive(sanity.step, sanity.SanityState(cfg), fast)
        assert got == want
        assert sum(type(r).__name__ == "ErrorRecord" for r in want) >= 25  # the edited lines: dead letters


def test_a_book_pickled_with_its_notes_in_one_map_resumes():
    """A snapshot taken when a compiled book noted the maker's levels in one map, ``(side, price) -> (before,
    after)`` (its ``seen``), resumes with them as the bids' and the asks' maps (``noted``)."""
    f = flatbook.new(10)
    f.load([100.0, 99.0], [1.0, 2.0], [101.0], [3.0])
    f.watch = np.array([[100.0], [101.0]])
    f.apply(np.array([100.0, 101.0]), np.array([4.0, 0.0]), 0, 1, 2)
    assert f.noted == ({100.0: (1.0, 4.0)}, {101.0: (3.0, 0.0)})
    back = pickle.loads(pickle.dumps(f))
    assert back.noted == f.noted and back.levels(0) == f.levels(0) and back.levels(1) == f.levels(1)
    _, slots = f.__getstate__()
    del slots["noted"]
    slots["seen"] = {(0, 100.0): (1.0, 4.0), (1, 101.0): (3.0, 0.0)}  # the state as it was pickled before
    resumed = flatbook.FlatSides.__new__(flatbook.FlatSides)
    resumed.__setstate__((None, slots))
    assert resumed.noted == f.noted and resumed.levels(0) == f.levels(0)

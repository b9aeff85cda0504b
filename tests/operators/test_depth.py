"""The bars' order book (operators/depth.py) on the real recordings, against
an independent reference: a plain full book (no trimming) rebuilt here from
the same diffs and snapshot, its top levels read after every diff, and the
multi-level order-flow imbalance of Xu, Gould & Howison computed with NumPy
from those tops; the features made of each bar's book (operators/features.py);
missing, never zero, without a snapshot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core.events import Bar, BookSnapshot, Count, DepthUpdate
from dataflows.settings import Settings
from harness.realdata import drive, parse_paths
from operators import depth, features
from operators.depth import DepthConfig

USDM = ("usdm/btcusdt_20230404.dat.gz", "usdm/btcusdt_20230405.dat.gz")
SPOT = ("spot/ethusdt_20240808.gz", "spot/ethusdt_20240809.gz")
L = 10


def _events(ws_dir, files):
    by_key, _, _ = parse_paths([ws_dir / f for f in files])
    (events,) = by_key.values()
    return events


class _Book:
    """The reference: every level of every diff and the snapshot, nothing trimmed (sorted on reading)."""

    def __init__(self, snap: BookSnapshot):
        self.bid = {lv.price: lv.qty for lv in snap.bids if lv.qty}
        self.ask = {lv.price: lv.qty for lv in snap.asks if lv.qty}
        self.last = snap.last_update_id

    def apply(self, d: DepthUpdate) -> None:
        for side, levels in ((self.bid, d.bids), (self.ask, d.asks)):
            for lv in levels:
                if lv.qty:
                    side[lv.price] = lv.qty
                else:
                    side.pop(lv.price, None)
        self.last = d.last_id

    def top(self) -> np.ndarray:
        """(L, 4): bid price, bid qty, ask price, ask qty, best first."""
        b = sorted(self.bid, reverse=True)[:L]
        a = sorted(self.ask)[:L]
        return np.array([[pb, self.bid[pb], pa, self.ask[pa]] for pb, pa in zip(b, a, strict=True)])


def _reference(events, interval_ns: int) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Per bar start: (summed level OFIs, mean level depths, top at the bar's end, diffs applied), by bar start."""
    book = None
    out: dict[int, list] = {}
    prev = None
    for e in events:
        if type(e) is BookSnapshot:
            book = _Book(e)
            prev = book.top()
            continue
        if type(e) is not DepthUpdate or book is None:
            continue
        if e.last_id < book.last:  # USD-M: diffs the snapshot holds (u < lastUpdateId)
            continue
        if e.first_id > book.last and e.prev_last_id != book.last and e.prev_last_id >= 0:
            raise AssertionError("the recordings have no gap")
        if e.last_id == book.last:
            continue
        book.apply(e)
        now = book.top()
        assert prev is not None  # a book has a top once loaded
        bp0, bq0, ap0, aq0 = prev.T
        bp1, bq1, ap1, aq1 = now.T
        ofi = (np.where(bp1 >= bp0, bq1, 0) - np.where(bp1 <= bp0, bq0, 0)
               - np.where(ap1 <= ap0, aq1, 0) + np.where(ap1 >= ap0, aq0, 0))
        start = e.ts_recv - e.ts_recv % interval_ns
        acc = out.setdefault(start, [np.zeros(L), np.zeros(L), None, 0])
        acc[0] += ofi
        acc[1] += (bq1 + aq1) / 2
        acc[2] = now
        acc[3] += 1
        prev = now
    return {s: (a[0], a[1] / a[3], a[2], a[3]) for s, a in out.items()}


@pytest.mark.parametrize("files", [USDM, SPOT], ids=["usdm", "spot"])
def test_each_bar_carries_the_book_of_an_independent_full_book(ws_dir, files):
    events = _events(ws_dir, files)
    s = Settings()
    _, out = drive(depth.step, depth.DepthState(s.bars, s.features.depth), events)
    bars = [b for b in out if type(b) is Bar]
    ref = _reference(events, s.bars.interval_ms * 1_000_000)
    checked = 0
    for b in bars:
        d = b.depth
        assert d is not None and d.ready  # the snapshot is the first line
        r = ref.get(b.ts_start)
        if r is None:
            assert d.updates == 0 and not any(d.ofi)
            continue
        ofi, mean_depth, top, n = r
        assert d.updates == n
        assert np.allclose(d.ofi, ofi, rtol=1e-9, atol=1e-9)
        assert np.allclose(d.level_depth, mean_depth, rtol=1e-9)
        assert np.array_equal(np.column_stack([d.bid_px, d.bid_qty, d.ask_px, d.ask_qty]), top)
        checked += 1
    assert checked > 300
    assert sum(1 for b in bars if any(b.depth.ofi)) > 300


def test_depth_within_and_walk_cost_read_the_whole_book(ws_dir):
    """Depth within bps and the walk cost at a bar's end, from the reference full book at that time."""
    events = _events(ws_dir, USDM)
    s = Settings()
    cfg = s.features.depth
    st = depth.DepthState(s.bars, cfg)
    book = None
    checked = 0
    for e in events:
        st, out = depth.step(st, e)
        for b in (o for o in out if type(o) is Bar):
            mid = (b.depth.bid_px[0] + b.depth.ask_px[0]) / 2
            for dist, wb, wa in zip(cfg.within_bps, b.depth.within_bid, b.depth.within_ask, strict=True):
                lo, hi = mid * (1 - dist / 1e4), mid * (1 + dist / 1e4)
                assert math.isclose(wb, sum(q for p, q in book.bid.items() if p >= lo), rel_tol=1e-9)
                assert math.isclose(wa, sum(q for p, q in book.ask.items() if p <= hi), rel_tol=1e-9)
            left, base = cfg.walk_notional, 0.0
            for p in sorted(book.ask):
                take = min(left, p * book.ask[p])
                base += take / p
                left -= take
                if left <= 0:
                    break
            assert math.isclose(b.depth.walk_buy, (cfg.walk_notional / base / mid - 1) * 1e4, rel_tol=1e-6)
            checked += 1
        if type(e) is BookSnapshot:
            book = _Book(e)
        elif type(e) is DepthUpdate and book is not None and e.last_id > book.last:
            book.apply(e)
    assert checked > 400


def test_without_a_snapshot_the_depth_features_are_missing_and_counted(ws_dir):
    """The spot BTCUSDT recording of 2023-04-05 has no REST snapshot: every bar's book is not ready, counted,
    and no row has a depth feature (missing, not zero); the top-of-book features are all there."""
    events = _events(ws_dir, ("spot/btcusdt_20230405.dat.gz",))
    assert not any(type(e) is BookSnapshot for e in events) and any(type(e) is DepthUpdate for e in events)
    s = Settings()
    _, out = drive(depth.step, depth.DepthState(s.bars, s.features.depth), events)
    bars = [b for b in out if type(b) is Bar]
    assert bars and all(b.depth is not None and not b.depth.ready for b in bars)
    missing = sum(o.n for o in out if type(o) is Count and o.name == "depth_features_missing")
    assert missing == len(bars)
    _, rows = drive(features.step, features.FeatureState(s.features), bars)
    names = set(features.depth_names(s.features.depth))
    top = set(features.feature_names(s.features.model_copy(update={"depth": DepthConfig(enabled=False)})))
    assert all(not names & set(r.x) and top <= set(r.x) for r in rows)


def test_integrated_ofi_uses_only_the_bars_so_far(ws_dir):
    """ofi_int at bar t is the level OFIs of t projected on the first principal component of the EW
    covariance of bars up to t (recomputed here with NumPy); rows before its warm-up lack it."""
    events = _events(ws_dir, USDM)
    s = Settings()
    c = s.features.depth.model_copy(update={"pca_halflife": 50})
    fc = s.features.model_copy(update={"depth": c, "scaler": "none", "clip": 1e12})
    _, out = drive(depth.step, depth.DepthState(s.bars, c), events)
    bars = [b for b in out if type(b) is Bar]
    _, rows = drive(features.step, features.FeatureState(fc), bars)
    a = 1 - 0.5 ** (1 / c.pca_halflife)
    mean = cov = None
    checked = 0
    for i, (b, r) in enumerate(zip(bars, rows, strict=True)):
        v = np.array([o / d if d > 0 else 0.0 for o, d in zip(b.depth.ofi, b.depth.level_depth, strict=True)])
        if mean is None:
            mean, cov = v.copy(), np.zeros((L, L))
        else:
            dlt = v - mean
            mean = mean + a * dlt
            cov = (1 - a) * (cov + a * np.outer(dlt, dlt))
        if i + 1 < c.pca_warmup:
            assert "ofi_int" not in r.x
            continue
        w = np.linalg.eigh(cov)[1][:, -1]
        w = w / np.abs(w).sum()
        w = -w if w.sum() < 0 else w
        assert math.isclose(r.x["ofi_int"], float(w @ v), rel_tol=1e-6, abs_tol=1e-9)
        checked += 1
    assert checked > 400


def test_a_repeated_depth_diff_is_one_dead_letter_with_its_line_and_changes_nothing(ws_dir, tmp_path):
    """A depth message received twice (a replay) cannot apply to the book: the dataflow dead-letters the
    repeat with its exact bytes and counts it, and every output is that of the clean recording."""
    from harness.realdata import RECORD_FILES, lines, payload, write_gz
    from ticklet.backtest import run_backtest

    real = list(lines(ws_dir / USDM[0]))
    k = next(i for i in range(len(real) // 2, len(real)) if b"@depth" in real[i][:80])
    dup = real[: k + 3] + [real[k]] + real[k + 3 :]
    run_backtest([str(write_gz(tmp_path / "clean" / USDM[0], real))], tmp_path / "clean_out")
    summary = run_backtest([str(write_gz(tmp_path / "dup" / USDM[0], dup))], tmp_path / "dup_out")
    dead = [json.loads(ln) for ln in (tmp_path / "dup_out" / "dead_letters.jsonl").read_text().splitlines()]
    assert [(d["stage"], d["raw"]) for d in dead] == [("orderbook", payload(real[k]).decode())]
    assert "not newer than the book" in dead[0]["reason"]
    assert summary["counters"]["depth_stale_updates"] == 1 == summary["counters"]["dead_letters"]
    for name in RECORD_FILES:
        assert (tmp_path / "dup_out" / name).read_bytes() == (tmp_path / "clean_out" / name).read_bytes(), name

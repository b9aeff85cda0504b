"""The DeepLOB-style book learner on the real USD-M BTCUSDT book (2023-04-04 -> 05).

The book is the project's own (:mod:`operators.orderbook`), fed the
recordings' REST snapshot and depth diffs; once synced it is sampled at the
end of every second into a feature row holding its top levels with the
input contract of :mod:`models.deeplob` (``lob_ap<i>`` bps above the mid,
``lob_aq<i>`` log1p size, ``lob_bp<i>``, ``lob_bq<i>``), each standardized
online with the values seen so far and clipped to [-5, 5]; a second without
a diff carries the book forward. The bar price is the mid.
"""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from models.base import OnlineModel
from models.deeplob import DeepLOBConfig, DeepLOBModel
from models.registry import LearnerConfig, build

#: Integration tests (tests/integration_mark.py): torch networks trained in the process.
pytestmark = pytest.mark.integration

NS = 1_000_000_000
SMALL = {"levels": 5, "window": 10, "filters": 4, "hidden": 8, "retrain_every": 10}


@pytest.fixture(scope="module")
def book_rows(ws_dir) -> list:
    """One FeatureRow a second of the synced book (see the module docstring)."""
    from core.events import FeatureRow
    from harness.realdata import book_stream
    from operators import orderbook

    paths = (str(ws_dir / "usdm" / "btcusdt_20230404.dat.gz"), str(ws_dir / "usdm" / "btcusdt_20230405.dat.gz"))
    items, _ = book_stream(paths, "usdm")
    st = orderbook.OrderBookState(orderbook.OrderBookConfig())
    stats: dict[str, list[float]] = {}  # name -> [n, mean, m2]
    rows: list = []
    sec = None
    for it in items:
        s = it.ts_recv // NS
        if sec is not None and s > sec and st.status == orderbook.SYNCED:
            bids, asks = st.top(10)
            mid = (bids[0].price + asks[0].price) / 2
            raw: dict[str, float] = {}
            for i, (b, a) in enumerate(zip(bids, asks, strict=False), start=1):
                raw |= {f"lob_ap{i}": (a.price - mid) / mid * 1e4, f"lob_aq{i}": math.log1p(a.qty),
                        f"lob_bp{i}": (mid - b.price) / mid * 1e4, f"lob_bq{i}": math.log1p(b.qty)}
            for k, v in raw.items():  # Welford, then standardized and clipped
                n, mean, m2 = stats.setdefault(k, [0, 0.0, 0.0])
                n += 1
                d = v - mean
                mean += d / n
                m2 += d * (v - mean)
                stats[k] = [n, mean, m2]
                sd = math.sqrt(m2 / (n - 1)) if n > 1 else 0.0
                raw[k] = max(-5.0, min(5.0, (v - mean) / sd)) if sd > 0 else 0.0
            for t in range(sec + 1, s + 1):  # a second without a diff carries the book forward
                rows.append(FeatureRow("BTCUSDT-PERP", t * NS, NS, mid, dict(raw), True))
        st, _ = orderbook.step(st, it)
        sec = s
    assert len(rows) > 500 and all(len(r.x) == 40 for r in rows)
    return rows


def stream(rows) -> list[tuple[dict, float]]:
    """(x at bar t, log return of the mid from t to t+1): horizon 1, every bar labelled."""
    return [(a.x, math.log(b.price / a.price)) for a, b in zip(rows, rows[1:], strict=False)]


def prequential(m, pairs) -> list[float]:
    out = []
    for x, y in pairs:
        out.append(m.predict_one(x))
        m.learn_one(x, y)
    return out


def test_protocol_and_config():
    m = build("deeplob", LearnerConfig(), 1)
    assert isinstance(m, DeepLOBModel) and isinstance(m, OnlineModel) and DeepLOBModel.reads_book is True
    c = DeepLOBConfig()
    assert (c.levels, c.window, c.filters, c.kernel, c.hidden, c.inception) == (10, 20, 8, 4, 16, True)
    for name, f in DeepLOBConfig.model_fields.items():
        assert f.description, name
    with pytest.raises(ValidationError):
        DeepLOBConfig(window=3, kernel=4)
    assert DeepLOBModel(DeepLOBConfig(levels=2)).book_names() == (
        "lob_ap1", "lob_aq1", "lob_bp1", "lob_bq1", "lob_ap2", "lob_aq2", "lob_bp2", "lob_bq2")


def test_each_label_trains_on_its_window_through_the_join(book_rows, join_checked):
    """The join gives it the book (reads_book), and every label goes with the window of its own forecast,
    at horizons 1 and 5, the carried-forward seconds (equal books) included."""
    lc = LearnerConfig(deeplob=DeepLOBConfig(**SMALL))
    names = DeepLOBModel(DeepLOBConfig(**SMALL)).book_names()
    for h in (1, 5):
        m, checked, _ = join_checked(book_rows, "deeplob", lc, h, lambda x: [x.get(n, math.nan) for n in names])
        assert checked == len(book_rows) - h - (m.config.window - 1) and m.n_unmatched == 0
        assert m.n_retrains > 40 and m.names == names


def test_forecasts_in_return_units_and_deterministic(book_rows):
    pairs = stream(book_rows)
    m = DeepLOBModel()
    p1 = prequential(m, pairs)
    first_live = m.config.window - 1 + m.config.retrain_every
    assert all(p == 0.0 for p in p1[:first_live])
    live = p1[first_live:]
    assert all(math.isfinite(p) and p != 0.0 for p in live) and len(set(live)) > len(live) // 2
    assert 1e-8 < float(np.std(live)) < 1e-3 and all(abs(p) < 1e-2 for p in live)  # 1-second mid returns
    assert prequential(DeepLOBModel(), pairs) == p1  # bitwise, a fresh instance
    assert prequential(DeepLOBModel(DeepLOBConfig(seed=1)), pairs) != p1
    assert m.net is not None and sum(p.numel() for p in m.net.parameters()) < 5000  # small for the CPU


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "bundle"])
def test_snapshot_mid_training_continues_identically(book_rows, how):
    from models import bundle

    pairs = stream(book_rows)
    cut = len(pairs) * 2 // 3
    m = DeepLOBModel(DeepLOBConfig(**SMALL))
    head = prequential(m, pairs[:cut])
    assert m.n_retrains > 20
    r = {"pickle": lambda: pickle.loads(pickle.dumps(m)), "deepcopy": lambda: copy.deepcopy(m),
         "bundle": lambda: bundle.loads(bundle.dumps(m))}[how]()
    assert type(r) is DeepLOBModel and r.config == m.config
    tail = prequential(r, pairs[cut:])
    assert tail == prequential(m, pairs[cut:])
    assert head + tail == prequential(DeepLOBModel(DeepLOBConfig(**SMALL)), pairs)


def test_without_the_book_it_forecasts_zero_and_learns_nothing(book_rows):
    """A stretch of rows without lob_* keys (the book resyncing): zero forecasts, their labels skipped,
    the window skipping those bars; levels the book lacks read as 0."""
    pairs = stream(book_rows)
    gap = range(200, 230)
    fed = [({"ret_1": 0.1} if i in gap else x, y) for i, (x, y) in enumerate(pairs)]
    m = DeepLOBModel(DeepLOBConfig(**SMALL))
    preds = prequential(m, fed[:gap.stop])
    assert all(preds[i] == 0.0 for i in gap) and preds[gap.start - 1] != 0.0
    assert m.n_skipped == m.config.window - 1 + len(gap) and m.n_seen == gap.start
    assert np.array_equal(m.history[-1], m._vector(fed[gap.start - 1][0])[1])  # the last bar with a book
    prequential(m, fed[gap.stop:])
    assert m.n_labelled == len(fed) - len(gap) - (m.config.window - 1)
    thin = {k: v for k, v in pairs[100][0].items() if not k.endswith(("4", "5"))}  # three levels only
    _, row = m._vector(thin)
    assert row is not None and not row[12:].any() and row[:12].any()


def test_offline_epochs_and_a_warm_start(book_rows):
    pairs = stream(book_rows)
    m = DeepLOBModel(DeepLOBConfig(**{**SMALL, "offline_epochs": 3, "offline_batch": 32}))
    m.record_offline()
    prequential(m, pairs)
    assert m.recording and len(m.trace) == len(pairs)
    m.fit_offline()
    rep = m.offline_report
    assert rep is not None and rep["epochs"] >= 1 and rep["train_span"][1] < rep["val_span"][0]
    w = pickle.loads(pickle.dumps(m))
    w.reset_stream()
    preds = prequential(w, pairs[:5])
    assert all(p != 0.0 and math.isfinite(p) for p in preds)  # trained: forecasts from the first bar
    assert isinstance(w.net, torch.nn.Module)


def test_the_book_reaches_the_output_and_the_network_learns_from_it(book_rows):
    """The forecast depends on the book, and the network can fit the real book's labels.

    Under torch's default initialization (weights of variance 1/(3 fan_in), and biases) every one of
    the eight stacked convolutions shrank the book's variation about threefold while its biases added a
    constant: on the real windows the untrained network's output varied by 4e-3 of its value, the
    forecast was the running mean of the returns plus a constant, blind to the book, and no amount of
    training moved it (still constant after 2000 Adam steps). He initialization keeps it.
    """
    pairs = stream(book_rows)
    m = DeepLOBModel(DeepLOBConfig(buffer=len(pairs), retrain_every=10**6, steps=250))
    prequential(m, pairs)  # fills the memory with every (window, label) of the recording; no retraining
    assert m.n_retrains == 0 and len(m.memory) == len(pairs) - (m.config.window - 1)
    wins = torch.from_numpy(np.stack([w for w, _ in m.memory]))
    ys = np.array([y for _, y in m.memory])
    net, _ = m._network()
    with torch.no_grad():
        out = net(wins).numpy()
    assert np.std(out) > 0.1 * abs(np.mean(out))  # untrained, yet a function of the book
    m._retrain()  # 250 Adam steps of 32 on the standardized labels
    with torch.no_grad():
        fit = net(wins).numpy()
    moved = ys != 0.0
    assert np.std(fit) > 0.0 and np.corrcoef(fit, ys)[0, 1] > 0.3
    assert np.mean(np.sign(fit - np.mean(fit))[moved] == np.sign(ys[moved])) > 0.7  # in-sample direction

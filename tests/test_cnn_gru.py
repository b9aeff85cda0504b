"""The CNN-GRU learner on real feature rows (spot BTCUSDT 2024-08-08 -> 09).

The rows drive one horizon-1 learner the way the time-travel join does: at
each bar, ``learn_one`` for the forecast made one bar earlier (with the
realized log return of the bar price), then ``predict_one`` on the bar's
features when the row is ready.
"""

from __future__ import annotations

import copy
import math
import pickle
import random

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from models.base import OnlineModel
from models.cnn_gru import CNNGRUConfig, CNNGRUModel


def horizon1_ops(rows) -> list[tuple]:
    """('learn', x, y, forecast op index) and ('predict', x) in join order."""
    ops: list[tuple] = []
    prev, prev_op = None, None
    for r in rows:
        if prev is not None and r.ts_end == prev.ts_end + prev.interval:
            ops.append(("learn", prev.x, math.log(r.price / prev.price), prev_op))
        prev, prev_op = None, None
        if r.ready:
            prev, prev_op = r, len(ops)
            ops.append(("predict", r.x))
    return ops


def feed(model: CNNGRUModel, ops, skip=frozenset()) -> list[float]:
    """Apply ops (learn ops whose index is in ``skip`` never happen, as for
    expired forecasts); the forecasts made."""
    out = []
    for i, op in enumerate(ops):
        if op[0] == "predict":
            out.append(model.predict_one(op[1]))
        elif i not in skip:
            model.learn_one(op[1], op[2])
    return out


@pytest.fixture(scope="module")
def ops(btc_spot_chain):
    o = horizon1_ops(btc_spot_chain.rows)
    assert sum(op[0] == "predict" for op in o) > 500 and sum(op[0] == "learn" for op in o) > 500
    return o


@pytest.fixture(scope="module")
def reference(ops):
    """One full run with the defaults: (model, forecasts)."""
    m = CNNGRUModel()
    return m, feed(m, ops)


def test_protocol_and_config():
    m = CNNGRUModel()
    assert isinstance(m, OnlineModel)
    c = CNNGRUConfig()
    assert (c.window, c.channels, c.kernel, c.hidden, c.buffer, c.retrain_every, c.steps, c.batch) == \
        (60, 16, 3, 32, 300, 20, 4, 32)
    assert (c.lr, c.weight_decay, c.seed, c.device, c.threads, c.clip_grad) == (1e-3, 1e-4, 0, "cpu", 1, 1.0)
    assert c.pending_limit == 240
    for name, f in CNNGRUConfig.model_fields.items():
        assert f.description, name
    with pytest.raises(ValidationError):
        CNNGRUConfig(unknown=1)
    with pytest.raises(ValidationError):
        CNNGRUConfig(window=4, kernel=5)
    with pytest.raises(ValidationError):
        c.window = 3  # frozen
    assert torch.get_num_threads() == 1


def test_forecasts_zero_until_trained_then_real(reference):
    m, preds = reference
    w = m.config.window
    assert m.n_retrains == m.n_labelled // 20 > 20
    assert m.n_unmatched == w - 1  # labels of the forecasts made while the window filled
    # one forecast per ready row; zero while the window fills and before the first retrain
    # forecast w-1 is the first with a full window; its label comes before forecast w, so the
    # retrain_every-th label (first retrain) comes just before forecast w-1+retrain_every
    first_live = w - 1 + m.config.retrain_every
    assert all(p == 0.0 for p in preds[:first_live])
    live = preds[first_live:]
    assert all(math.isfinite(p) and p != 0.0 for p in live)
    assert len(set(live)) > len(live) // 2
    # raw log-return units: the scale of 1-second BTC returns, not of standardized values
    assert 1e-7 < float(np.std(live)) < 1e-3
    assert all(abs(p) < 1e-2 for p in live)


def test_deterministic_across_fresh_instances(ops, reference):
    m1, p1 = reference
    m2 = CNNGRUModel()
    p2 = feed(m2, ops)
    assert p1 == p2  # bitwise
    s1, s2 = m1.net.state_dict(), m2.net.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    # another seed is another model
    p3 = feed(CNNGRUModel(CNNGRUConfig(seed=1)), ops)
    assert p3 != p1


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_snapshot_mid_stream_continues_identically(ops, reference, how):
    _, ref = reference
    cut = next(i for i in range(len(ops) * 2 // 3, len(ops)) if ops[i][0] == "predict") + 1
    m = CNNGRUModel()
    head = feed(m, ops[:cut])
    assert m.n_retrains > 5 and len(m.pending) > 0
    restored = pickle.loads(pickle.dumps(m)) if how == "pickle" else copy.deepcopy(m)
    assert restored is not m and restored.net is not m.net
    assert (restored.n_labelled, restored.n_retrains, restored.y_mean) == (m.n_labelled, m.n_retrains, m.y_mean)
    tail_restored = feed(restored, ops[cut:])
    tail_original = feed(m, ops[cut:])
    assert tail_restored == tail_original
    assert head + tail_restored == ref
    assert restored.rng.bit_generator.state == m.rng.bit_generator.state


def test_expired_forecasts_do_not_desync(ops):
    """Skip some learn_one calls (their targets never came): every later
    example is learned with the very window its forecast was made from."""
    rnd = random.Random(7)
    learn_idx = [i for i, op in enumerate(ops) if op[0] == "learn"]
    skip = frozenset(i for i in learn_idx if rnd.random() < 0.15)
    assert len(skip) > 50

    m = CNNGRUModel()
    c = m.config
    names = sorted(ops[0][1])
    history: list[list[float]] = []
    windows: dict[int, np.ndarray] = {}  # forecast op index -> expected window
    checked = 0
    for i, op in enumerate(ops):
        if op[0] == "predict":
            m.predict_one(op[1])
            history.append([op[1].get(n, 0.0) for n in names])
            if len(history) >= c.window:
                windows[i] = np.clip(np.array(history[-c.window:]), -c.clip_x, c.clip_x).astype(np.float32)
        elif i not in skip:
            before = m.n_labelled
            m.learn_one(op[1], op[2])
            if op[3] in windows:
                assert m.n_labelled == before + 1
                win, y = m.memory[-1]
                assert np.array_equal(win, windows[op[3]]), i
                assert y == op[2]
                checked += 1
            else:
                assert m.n_labelled == before  # forecast made before the window was full
    assert checked > 400
    # only the labels of forecasts made while the window filled matched nothing
    assert m.n_unmatched == sum(1 for i in learn_idx if i not in skip and ops[i][3] not in windows)
    # every skipped forecast with a full window was dropped from the FIFO by a later learn_one
    dropped = sum(1 for i in skip if ops[i][3] in windows and i < max(learn_idx) - 2)
    assert m.n_dropped >= dropped > 40
    assert len(m.pending) <= 2


def test_sizes_are_bounded(ops, reference):
    m, _ = reference
    assert len(m.memory) == m.config.buffer == 300  # 500+ labelled examples, 300 kept
    assert len(m.history) == m.config.window
    assert len(m.pending) <= 1
    # forecasts that are never learned: the pending FIFO stays at its bound
    m2 = CNNGRUModel()
    xs = [op[1] for op in ops if op[0] == "predict"]
    for x in xs:
        m2.predict_one(x)
    assert len(m2.pending) == m2.config.pending_limit == 240
    assert m2.n_dropped == len(xs) - (m2.config.window - 1) - 240
    # a learn_one for features never forecast is ignored, not a desync
    m2.learn_one({"nope": 1.0}, 0.001)
    assert (m2.n_unmatched, m2.n_labelled, len(m2.pending)) == (1, 0, 240)
    # pickled size stays bounded too (buffer + pending windows of 60 x 24 float32)
    assert len(pickle.dumps(m)) < 4_000_000


def test_learns_a_lagged_signal():
    """Synthetic: the next-bar return is 1e-4 times feature "a" three bars
    earlier (inside the window) plus noise; "b" is noise."""
    rng = random.Random(1)
    n, lag = 1500, 3
    xs = [{"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)} for _ in range(n + 1)]
    r = [1e-4 * xs[t - lag]["a"] + rng.gauss(0, 2e-5) if t >= lag else 0.0 for t in range(n + 1)]
    m = CNNGRUModel(CNNGRUConfig(window=20))
    preds, targets = [], []
    for t in range(n):
        if t >= 1:
            m.learn_one(xs[t - 1], r[t])  # the forecast made at t-1 is resolved at t
        preds.append(m.predict_one(xs[t]))
        targets.append(r[t + 1])
    p, y = np.array(preds[-300:]), np.array(targets[-300:])
    assert np.corrcoef(p, y)[0, 1] > 0.5
    assert 3e-5 < p.std() < 3e-4  # answered in raw return units

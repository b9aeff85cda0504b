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

#: Integration tests (tests/integration_mark.py): the CNN-GRU trains torch networks, in the process, about 45 s in
#: all: too slow for the unit run.
pytestmark = pytest.mark.integration


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
    assert m.n_skipped == w - 1 and m.n_unmatched == 0  # labels of the forecasts made while the window filled
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


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "bundle"])
def test_snapshot_mid_stream_continues_identically(ops, reference, how):
    """A pickle (Bytewax snapshots), a deep copy, and the state file of a
    model bundle (read with the bundle loader, which builds no torch object:
    the network and the optimizer are NumPy arrays in the pickle)."""
    from models import bundle

    _, ref = reference
    cut = next(i for i in range(len(ops) * 2 // 3, len(ops)) if ops[i][0] == "predict") + 1
    m = CNNGRUModel()
    head = feed(m, ops[:cut])
    assert m.n_retrains > 5 and len(m.pending) > 0
    restored = {"pickle": lambda: pickle.loads(pickle.dumps(m)), "deepcopy": lambda: copy.deepcopy(m),
                "bundle": lambda: bundle.loads(bundle.dumps(m))}[how]()
    assert restored is not m and restored.net is not m.net
    assert (restored.n_labelled, restored.n_retrains, restored.y_mean) == (m.n_labelled, m.n_retrains, m.y_mean)
    tail_restored = feed(restored, ops[cut:])
    tail_original = feed(m, ops[cut:])
    assert tail_restored == tail_original
    assert head + tail_restored == ref
    assert restored.rng.bit_generator.state == m.rng.bit_generator.state


def test_a_snapshot_holding_tensors_still_restores(ops):
    """Bytewax recovery stores written before the network was pickled as NumPy
    arrays hold torch tensors: such a state restores to the same model."""
    m = CNNGRUModel(CNNGRUConfig(**SMALL))
    feed(m, ops[: len(ops) // 2])
    state = m.__getstate__()
    assert all(isinstance(v, np.ndarray) for v in state["net"].values())
    old = {**state, "net": {k: torch.from_numpy(v) for k, v in state["net"].items()},
           "opt": {**state["opt"], "state": {i: {k: torch.from_numpy(np.array(v)) for k, v in s.items()}
                                             for i, s in state["opt"]["state"].items()}}}
    restored = CNNGRUModel.__new__(CNNGRUModel)
    restored.__setstate__(old)
    tail = ops[len(ops) // 2:]
    assert sum(op[0] == "predict" for op in tail) > 100
    assert feed(restored, tail) == feed(m, tail)


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
    # only the labels of forecasts made while the window filled were not learnt from
    assert m.n_unmatched == 0
    assert m.n_skipped == sum(1 for i in learn_idx if i not in skip and ops[i][3] not in windows)
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
    assert m2.n_dropped == len(xs) - 240  # those made while the window filled wait too
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


# --- the direction head, the SWT features, offline epochs (issue 17) ------------------------------------------

SMALL = {"window": 16, "channels": 4, "hidden": 8, "retrain_every": 10}


def test_the_direction_head_forecasts_from_p_up(ops):
    m = CNNGRUModel(CNNGRUConfig(objective="direction", **SMALL))
    abs_sum, n = 0.0, 0
    checked = 0
    for op in ops:
        if op[0] == "learn":
            m.learn_one(op[1], op[2])
            if m.n_labelled > n:
                abs_sum, n = abs_sum + abs(op[2]), m.n_labelled
            continue
        pred = m.predict_one(op[1])
        p = m.proba_up(op[1])
        assert p is not None and 0.0 < p < 1.0
        if m.n_retrains and len(m.history) == m.config.window:
            assert math.isclose(pred, (2 * p - 1) * abs_sum / n, rel_tol=1e-9, abs_tol=1e-15)
            checked += 1
        else:
            assert pred == 0.0 and p == 0.5
    assert checked > 400
    # zero returns carry no direction: they are not trained on
    assert all(y != 0.0 for _, y in m.memory) and m.n_labelled > len(m.memory)
    assert CNNGRUModel(CNNGRUConfig(**SMALL)).proba_up({"a": 1.0}) is None  # the return objective gives none


def test_p_up_reaches_the_forecasts_and_the_signals(btc_spot_chain):
    from harness.realdata import drive
    from models.registry import LearnerConfig
    from operators import forecast, signals

    cfg = forecast.ForecastConfig(horizons=(1,), models=("naive", "cnn_gru"), learners=LearnerConfig(
        cnn_gru=CNNGRUConfig(objective="direction", **SMALL)))
    _, out = drive(forecast.step, forecast.JoinState(cfg), btc_spot_chain.rows)
    issued = [f for f in out if type(f).__name__ == "Forecast" and f.model == "cnn_gru"]
    assert len(issued) > 500 and all(f.p_up is not None for f in issued)
    assert len({f.p_up for f in issued}) > 100
    _, sigs = drive(signals.step, signals.SignalState(signals.SignalConfig()), out)
    by_t = {(s.ts_forecast, s.horizon): s.p_up for s in sigs if s.model == "cnn_gru"}
    assert all(by_t[(f.ts_forecast, 1)] == f.p_up for f in issued)


def test_the_swt_features_reach_it_unless_excluded(ops):
    names = sorted(ops[0][1])
    swt = [n for n in names if n.startswith("swt_")]
    assert swt == ["swt_dev", "swt_e1", "swt_e2", "swt_e3", "swt_slope"]
    m = CNNGRUModel(CNNGRUConfig(**SMALL))
    m.predict_one(ops[0][1])
    assert m._columns() == tuple(names) and m.net.conv.in_channels == len(names)  # every feature, SWT included
    x = ops[0][1]
    _, vec = m._vector(x)
    assert [float(vec[names.index(n)]) for n in swt] == [np.float32(np.clip(x[n], -10, 10)) for n in swt]
    ab = CNNGRUModel(CNNGRUConfig(exclude=("swt_",), **SMALL))
    ab.predict_one(x)
    assert ab._columns() == tuple(n for n in names if n not in swt) and ab.net.conv.in_channels == len(names) - 5
    ab = CNNGRUModel(CNNGRUConfig(exclude=("swt_",), **SMALL))
    feed(ab, ops)  # and it learns, matching its forecasts by every feature
    assert ab.n_skipped == ab.config.window - 1 and ab.n_unmatched == 0 and ab.n_retrains > 20


def _recorded(ops, **cfg) -> CNNGRUModel:
    m = CNNGRUModel(CNNGRUConfig(**{**SMALL, "offline_epochs": 6, "offline_batch": 32, "offline_patience": 10, **cfg}))
    m.record_offline()
    feed(m, ops)
    return m


@pytest.mark.parametrize("objective", ["return", "direction"])
def test_offline_epochs_never_train_on_the_validation_split(ops, objective):
    """Every epoch's network is the same whatever the validation targets
    are: they only choose the epoch kept."""
    m = _recorded(ops, objective=objective)
    assert m.recording and len(m.trace) == sum(op[0] == "predict" for op in ops)
    other = copy.deepcopy(m)
    n_val = int(round(len([e for e in m.examples if objective == "return" or e[1] != 0.0]) * 0.2))
    moved = [i for i, e in enumerate(other.examples) if objective == "return" or e[1] != 0.0]
    for i in moved[-n_val:]:  # the validation split: targets turned around
        idx, y = other.examples[i]
        other.examples[i] = (idx, -2.0 * y)
    states: dict[str, list] = {"a": [], "b": []}
    m.fit_offline(lambda e, sd: states["a"].append({k: v.clone() for k, v in sd.items()}))
    other.fit_offline(lambda e, sd: states["b"].append({k: v.clone() for k, v in sd.items()}))
    assert len(states["a"]) == len(states["b"]) == 6
    for a, b in zip(states["a"], states["b"], strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = m.offline_report, other.offline_report
    assert ra["val_loss_before"] != rb["val_loss_before"]  # the validation data did differ
    assert ra["train"] == rb["train"] > 200 and ra["train_span"][1] < ra["val_span"][0]  # in time order
    assert ra["validation"] == n_val and ra["epochs"] == 6 and 0 <= ra["best_epoch"] <= 6
    kept = states["a"][ra["best_epoch"] - 1] if ra["best_epoch"] else None
    if kept is not None:
        assert all(torch.equal(m.net.state_dict()[k], kept[k]) for k in kept)  # the best epoch's network
    assert not m.recording and m.trace == [] and m.examples == []  # the recording is dropped


def test_offline_epochs_stop_early_and_are_deterministic(ops):
    a = _recorded(ops, objective="direction", offline_epochs=30, offline_patience=2, lr=0.01)
    b = copy.deepcopy(a)
    a.fit_offline()
    b.fit_offline()
    assert a.offline_report == b.offline_report and a.offline_report["epochs"] < 30  # stopped early
    assert a.offline_report["epochs"] - a.offline_report["best_epoch"] == 2
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # a fresh network, then online learning as before: forecasts at once, at the online cost
    assert a.n_retrains >= 1 or a.offline_report["best_epoch"] == 0


def test_a_model_recording_for_offline_epochs_pickles_mid_training(ops):
    cut = len(ops) // 2
    m = CNNGRUModel(CNNGRUConfig(**{**SMALL, "offline_epochs": 3, "offline_batch": 32}))
    m.record_offline()
    head = feed(m, ops[:cut])
    restored = pickle.loads(pickle.dumps(m))
    assert restored.recording and len(restored.trace) == len(m.trace) and restored.examples == m.examples
    assert feed(restored, ops[cut:]) == feed(m, ops[cut:])
    assert head
    m.fit_offline()
    restored.fit_offline()
    assert m.offline_report == restored.offline_report
    assert all(torch.equal(v, restored.net.state_dict()[k]) for k, v in m.net.state_dict().items())
    # and the fitted model pickles too, and goes on forecasting identically
    again = pickle.loads(pickle.dumps(m))
    xs = [op[1] for op in ops[-200:] if op[0] == "predict"]
    assert [again.predict_one(x) for x in xs] == [m.predict_one(x) for x in xs]


def test_the_recording_is_bounded(ops):
    m = _recorded(ops, offline_max=200)
    assert len(m.trace) <= 200 and m.trace_start > 0
    first = m.trace_start + m.config.window - 1
    assert m.examples and all(e[0] >= first for e in m.examples)
    n = len(m.examples)
    m.fit_offline()
    assert m.offline_report["examples"] == n


def test_without_a_bundle_nothing_is_recorded(ops, reference):
    m, _ = reference
    assert not m.recording and m.trace == [] and m.offline_report is None
    m2 = CNNGRUModel(CNNGRUConfig(**SMALL, offline_epochs=0))
    m2.record_offline()
    assert not m2.recording


def test_a_warm_model_forgets_the_stream_not_what_it_learnt(ops, reference):
    m, _ = reference
    w = copy.deepcopy(m)
    w.reset_stream()
    assert len(w.history) == 0 and len(w.pending) == 0 and len(w.memory) == len(m.memory)
    assert w.n_labelled == m.n_labelled and w.n_retrains == m.n_retrains
    ops1 = [op for op in ops if op[0] == "predict"][:10]
    preds = feed(w, ops1)
    # trained: it forecasts from the first bar, its window's missing past zeros
    assert all(p != 0.0 and math.isfinite(p) for p in preds) and len(w.pending) == 10
    win = w.pending[0].win
    assert not win[:-1].any() and win[-1].any()
    fresh = CNNGRUModel()
    assert feed(fresh, ops1) == [0.0] * 10  # untrained: zero, as before
    assert len(fresh.pending) == 10 and all(p.win is None for p in fresh.pending)  # labels of no window


def test_skip_term_and_online_rate(ops):
    m = CNNGRUModel(CNNGRUConfig(skip=True, online_lr=1e-4, **SMALL))
    feed(m, ops)
    assert m.net.skip is not None and m.net.skip.in_features == len(ops[0][1])
    assert m.opt.param_groups[0]["lr"] == 1e-4 and m.n_retrains > 20
    # the skip term is the linear part of the output: without it, the output changes by exactly that
    win = torch.from_numpy(m.pending[-1].win if m.pending else np.stack(m.history)).unsqueeze(0)
    with torch.no_grad():
        full = m.net(win)
        lin = m.net.skip(win[:, -1, :]).squeeze(-1)
        m.net.skip = None
        assert torch.allclose(full - lin, m.net(win))
    plain = CNNGRUModel(CNNGRUConfig(**SMALL))
    plain.predict_one(ops[0][1])
    assert plain.net.skip is None and plain.opt.param_groups[0]["lr"] == 1e-3


# --- each label with the window of its own forecast, through the time-travel join -------------------------------


def checked_cnn_gru(join_checked, rows, cfg: CNNGRUConfig, h: int) -> tuple[CNNGRUModel, int, int]:
    """The CNN-GRU through the join, every example checked (``join_checked`` in conftest.py)."""
    from models.registry import LearnerConfig

    return join_checked(rows, "cnn_gru", LearnerConfig(cnn_gru=cfg), h, lambda x: [x.get(n, 0.0) for n in sorted(x)])


def quiet_copies(rows, drop: float, seed: int) -> list:
    """The real rows, each followed by two quiet bars that carry it forward (same price, equal features,
    dicts of their own), on a fresh 1-second grid; a share ``drop`` of the bars then missing (a gap: the
    forecasts whose target it was expire)."""
    from core.events import FeatureRow

    rnd = random.Random(seed)
    out = []
    t = rows[0].ts_end
    for r in rows:
        for x in (r.x, dict(r.x), dict(r.x)):
            if rnd.random() >= drop:
                out.append(FeatureRow(r.instrument, t, r.interval, r.price, x, r.ready))
            t += r.interval
    return out


def test_equal_feature_vectors_keep_each_label_with_its_window(join_checked):
    """Synthetic: one feature of two values, so most forecasts share their feature vector with others.
    Labels of forecasts made while the window filled, and of forecasts whose target bar is missing, used
    to take the first pending window of equal values: a later forecast's window (holding part of the
    target's own path) or an expired one's."""
    from core.events import FeatureRow

    rnd = random.Random(3)
    rows, price, t = [], 100.0, 0
    for _ in range(600):
        price *= math.exp(rnd.gauss(0.0, 1e-4))
        t += 1
        if rnd.random() < 0.1:
            continue  # a missing bar
        rows.append(FeatureRow("X", t, 1, price, {"a": float(rnd.random() < 0.5)}, True))
    cfg = CNNGRUConfig(window=6, kernel=2, channels=2, hidden=4, retrain_every=10, steps=1, batch=4)
    m, checked, expired = checked_cnn_gru(join_checked, rows, cfg, h=3)
    assert checked > 400 and expired > 50
    assert m.n_unmatched == 0 and m.n_skipped == cfg.window - 1


def test_quiet_real_bars_keep_each_label_with_its_window(perp_chain, join_checked):
    """Real USD-M rows with carried-forward quiet bars (equal feature vectors, as a bar with no event
    gives when the features carry forward) and missing bars, at horizons 1 and 5."""
    rows = quiet_copies(perp_chain.rows, drop=0.08, seed=5)
    cfg = CNNGRUConfig(**SMALL)
    for h in (1, 5):
        m, checked, expired = checked_cnn_gru(join_checked, rows, cfg, h)
        assert checked > 1000 and expired > 50, (h, checked, expired)
        assert m.n_unmatched == 0, h


def test_a_learner_restored_alone_matches_by_values(ops):
    """Pickled on its own, its pending forecasts hold copies of the caller's dicts: labels then go to the
    oldest pending forecast of equal values, and the stream continues as in the original."""
    cut = next(i for i in range(len(ops) // 2, len(ops)) if ops[i][0] == "predict") + 1
    m = CNNGRUModel(CNNGRUConfig(**SMALL))
    feed(m, ops[:cut])
    r = pickle.loads(pickle.dumps(m))
    assert r.pending and all(p.x is not q.x and p.x == q.x for p, q in zip(r.pending, m.pending, strict=True))
    assert feed(r, ops[cut:]) == feed(m, ops[cut:])
    assert r.n_unmatched == m.n_unmatched == 0

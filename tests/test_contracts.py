"""Contract tests in the spirit of River's ``river/checks``, for every operator
and every registered learner, fed with real data from the recordings.

Operators (discovered: every module of operators/ with a ``step``) and learners
(every entry of ``models.registry.MODELS``) must:
survive a pickle (and deep-copy, as Bytewax snapshots do) of their state
mid-stream with identical outputs afterwards; not mutate their inputs or
their earlier outputs; give identical outputs on two fresh runs; be prefix
invariant.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
import pickle
import pkgutil
from itertools import pairwise

import pytest

from harness.realdata import drive, operator_case
from models.base import OnlineModel
from models.registry import MODELS, LearnerConfig, build


def _discover_operators() -> list[str]:
    """Every module of ``operators/`` that defines a pure ``step``: a new
    operator is under these contracts as soon as it exists (and fails them
    until ``realdata.operator_case`` feeds it real data). Each one that
    reads the chunk path's arrays (its code uses :mod:`operators.flatbook`)
    is also there as ``<name>[chunk]``: fed the compiled scanner's events,
    with its book in compiled code where it keeps one."""
    import operators

    names = (m.name for m in pkgutil.iter_modules(operators.__path__))
    mods = {n: importlib.import_module(f"operators.{n}") for n in names}
    ops = sorted(n for n, m in mods.items() if callable(getattr(m, "step", None)))
    return ops + [f"{n}[chunk]" for n in ops if "flatbook" in inspect.getsource(mods[n])]


OPERATORS = _discover_operators()


def test_every_operator_is_discovered():
    assert {"bars", "features", "forecast", "metrics", "orderbook", "sequence"} <= set(OPERATORS)
    assert {"depth[chunk]", "maker[chunk]", "orderbook[chunk]", "sanity[chunk]"} <= set(OPERATORS)


def _clone(obj):
    """A deep copy (records are msgspec structs; pickle copies them fast)."""
    return pickle.loads(pickle.dumps(obj))


def _cut(name: str, items: list) -> int:
    """A mid-stream point where the state holds work in progress."""
    k = int(len(items) * 0.45)
    if name == "bars":  # inside an open bar, not at its first event
        while items[k].ts_recv // 10**9 == items[k - 1].ts_recv // 10**9 and k < len(items) - 1:
            k += 1
        k -= 1
    return k


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("name", OPERATORS)
def test_operator_state_round_trip_mid_stream(chain, name, how):
    step, init, items, ref = operator_case(name, chain)
    k = _cut(name, items)
    st, head = drive(step, init(), items[:k])
    if name == "forecast":
        assert st.n_pending > 0  # forecasts are waiting in the state
    if name == "bars":
        assert st.n_events > 0  # an open bar is being accumulated
    if name.startswith("orderbook"):
        assert st.status == "synced" and all(st.sizes())  # a live book
    restored = pickle.loads(pickle.dumps(st)) if how == "pickle" else copy.deepcopy(st)
    assert type(restored) is type(st)
    _, tail_restored = drive(step, restored, items[k:])
    _, tail_original = drive(step, st, items[k:])
    assert tail_restored == tail_original
    assert head + tail_restored == ref
    assert len(tail_restored) > 0


#: The operators that pass every event on, whose copies at each step take 2 to 3 s on each chain:
#: that check of theirs is an integration test, too slow for the unit run (tests/integration_mark.py).
_EVERY_EVENT = ("bars", "fills", "sanity", "sanity[chunk]")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.integration) if n in _EVERY_EVENT else n
                                  for n in OPERATORS])
def test_operator_does_not_mutate_inputs_or_earlier_outputs(chain, name):
    step, init, items, ref = operator_case(name, chain)
    fed = _clone(items)
    before = _clone(fed)
    st = init()
    emitted, frozen = [], []
    for it in fed:
        st, out = step(st, it)
        if out:
            emitted.extend(out)
            frozen.extend(_clone(list(out)))  # the outputs as they were when emitted
    assert fed == before
    assert emitted == frozen
    assert emitted == ref


@pytest.mark.parametrize("name", OPERATORS)
def test_operator_fresh_runs_are_identical(chain, name):
    step, init, items, ref = operator_case(name, chain)
    _, a = drive(step, init(), items)
    _, b = drive(step, init(), items)
    assert a == b == ref
    assert a


@pytest.mark.parametrize("name", OPERATORS)
def test_operator_prefix_invariance(chain, name):
    step, init, items, ref = operator_case(name, chain)
    for frac in (0.1, 0.5, 0.9):
        _, out = drive(step, init(), items[: int(len(items) * frac)])
        assert out == ref[: len(out)]


# --- learners --------------------------------------------------------------------

@pytest.fixture(scope="module")
def learning_stream(btc_spot_chain):
    """(features at bar t, log return of the bar price from t to t+1) for every
    ready real feature row."""
    rows = btc_spot_chain.rows
    out = []
    for r, nxt in pairwise(rows):
        if r.ready:
            out.append((r.x, math.log(nxt.price / r.price)))
    assert len(out) > 500
    return out


def _prequential(model, stream) -> list[float]:
    preds = []
    for x, y in stream:
        preds.append(model.predict_one(x))
        assert model.learn_one(x, y) is None
    return preds


#: Every learner. The contracts of two are integration tests, too slow for the unit run
#: (tests/integration_mark.py): the CNN-GRU trains torch networks (about 20 s in all), the adaptive
#: random forest grows trees (about 10 s).
LEARNERS = [pytest.param(n, marks=pytest.mark.integration) if n in ("cnn_gru", "arf") else n for n in sorted(MODELS)]


@pytest.fixture(params=LEARNERS)
def learner_name(request) -> str:
    return request.param


def test_learner_protocol_and_finite_predictions(learner_name, learning_stream):
    m = build(learner_name, LearnerConfig(), 1)
    assert isinstance(m, OnlineModel)
    preds = _prequential(m, learning_stream)
    assert all(isinstance(p, float) and math.isfinite(p) for p in preds)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_learner_round_trip_mid_stream(learner_name, learning_stream, how):
    k = len(learning_stream) // 2
    m = build(learner_name, LearnerConfig(), 1)
    head = _prequential(m, learning_stream[:k])
    r = pickle.loads(pickle.dumps(m)) if how == "pickle" else copy.deepcopy(m)
    tail_restored = _prequential(r, learning_stream[k:])
    assert tail_restored == _prequential(m, learning_stream[k:])
    assert head + tail_restored == _prequential(build(learner_name, LearnerConfig(), 1), learning_stream)


def test_learner_does_not_mutate_features(learner_name, learning_stream):
    fed = copy.deepcopy(learning_stream)
    m = build(learner_name, LearnerConfig(), 1)
    _prequential(m, fed)
    assert fed == learning_stream


def test_learner_fresh_runs_are_identical_and_prefix_invariant(learner_name, learning_stream):
    a = _prequential(build(learner_name, LearnerConfig(), 1), learning_stream)
    b = _prequential(build(learner_name, LearnerConfig(), 1), learning_stream)
    assert a == b
    k = len(learning_stream) // 3
    assert _prequential(build(learner_name, LearnerConfig(), 1), learning_stream[:k]) == a[:k]


def test_learner_feature_order_has_no_impact(learner_name, learning_stream):
    """River's check_shuffle_features_no_impact."""
    rev = [(dict(reversed(list(x.items()))), y) for x, y in learning_stream]
    a = _prequential(build(learner_name, LearnerConfig(), 1), learning_stream)
    b = _prequential(build(learner_name, LearnerConfig(), 1), rev)
    assert all(math.isclose(p, q, rel_tol=1e-6, abs_tol=1e-12) for p, q in zip(a, b, strict=True))


def test_learner_tolerates_emerging_and_disappearing_features(learner_name, learning_stream):
    """River's check_emerging_features / check_disappearing_features."""
    m = build(learner_name, LearnerConfig(), 1)
    keys = sorted(learning_stream[0][0])
    half = len(learning_stream) // 2
    for i, (x, y) in enumerate(learning_stream):
        drop = keys[i % len(keys)] if i < half else keys[(i * 7) % len(keys)]
        xi = {k: v for k, v in x.items() if k != drop}
        if i >= half:
            xi["late_feature"] = x[keys[0]]
        p = m.predict_one(xi)
        assert math.isfinite(p)
        m.learn_one(xi, y)

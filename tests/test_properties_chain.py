"""Properties of the operator chain check -> bars -> features -> join ->
metrics -> signals under hostile market data, with hypothesis.

Every example starts from the real events of spot/btcusdt_20230405.dat.gz
and injects a few hostile copies of real events (prices scaled far out,
subnormal or near the largest float, absurd quantities, receive times in the
future or the past, klines without duration or with an impossible high).
The number of examples per property is ``$HYPOTHESIS_MAX_EXAMPLES``
(default 20: the whole file runs in about 10 s on 2 cores; raise it
for a deeper search). The examples are derandomized: a run is reproducible.

What is asserted:

1. after the check, the chain's outputs are exactly those of the clean
   events, and every injected event is dead-lettered exactly once (injected
   events are separated by real ones and come after the warm-up);
2. without the check, the chain never raises, and every scored forecast and
   metric it emits is finite, and so is every signal's size (its ``p_up``
   may be NaN: a 1e300 trade makes features non-finite); injections other
   than ``future``, which without the check makes the rest of the run late;
3. the check accounts for every event: each is passed on once, in order, or
   dead-lettered once, or still held at the end (a warm-up or a jump of the
   clock waiting for confirmation); its clock never goes back and is always
   the latest receive time it passed on; whatever the injections (here
   consecutive forged lines and regime jumps too);
4. the check over batches of any size (the dataflow's ``step_batch``) is the
   check event by event.
"""

from __future__ import annotations

import math
import os
from functools import cache

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from core.events import Count, ErrorRecord, FeatureRow, ForecastRecord, Kline, MetricsRecord, Quote, Signal, Trade
from dataflows.settings import Settings
from harness.realdata import REPO, SCRATCH, drive, parse_paths
from operators import bars, features, forecast, metrics, sanity, signals

set_hypothesis_home_dir(SCRATCH / "hypothesis")  # not .hypothesis/ in the checkout: tests write nothing there
EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "20"))  # not TICKLET_*: the tests clear those
N_EVENTS = 6000  # about 165 s of the recording: 165 bars, forecasts at both horizons
S = 10**9

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
PROFILE = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@cache
def real_events() -> list:
    (evs,) = parse_paths([REPO / "tests" / "data" / "binance-ws" / "spot" / "btcusdt_20230405.dat.gz"])[0].values()
    return list(evs[:N_EVENTS])


def chain(evs: list, s: Settings) -> dict[str, list]:
    """Every operator's outputs, from bars to signals."""
    _, b = drive(bars.step, bars.BarState(s.bars), evs)
    _, rows = drive(features.step, features.FeatureState(s.features), [x for x in b if type(x).__name__ == "Bar"])
    _, join = drive(forecast.step, forecast.JoinState(s.forecast), rows)
    _, mets = drive(metrics.step, metrics.MetricsState(), [r for r in join if type(r) is ForecastRecord])
    _, sig = drive(signals.step, signals.SignalState(s.signals), join)
    return {"bars": b, "features": rows, "join": join, "metrics": mets, "signals": sig}


@cache
def clean_chain() -> dict[str, list]:
    out = chain(real_events(), Settings())
    assert sum(type(r) is ForecastRecord for r in out["join"]) > 300 and out["signals"]
    return out


# --- hostile copies of real events ---------------------------------------------

def _scale(e, f: float):
    if type(e) is Quote:
        return msgspec.structs.replace(e, bid=e.bid * f, ask=e.ask * f)
    if type(e) is Trade:
        return msgspec.structs.replace(e, price=e.price * f)
    return None


def _prices(e, lo: float, hi: float):
    if type(e) is Quote:
        return msgspec.structs.replace(e, bid=lo, ask=hi)
    if type(e) is Trade:
        return msgspec.structs.replace(e, price=hi)
    return None


def _kline(e, how: str):
    t = e.ts_recv // (60 * S) * 60 * S
    if how == "zero":  # opens where it closes
        return Kline(e.instrument, e.ts_recv, t, t, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1, 0.5, True)
    return Kline(e.instrument, e.ts_recv, t - 60 * S, t, 1.0, 0.9, 0.8, 1.0, 1.0, 1.0, 1, 0.5, True)  # high < open


def hostile(e, kind: str, x: float):
    """A hostile copy of the real event ``e`` (None where ``kind`` does not apply)."""
    if kind == "far":  # a price far outside any sane band: x is log10 of the factor, |x| >= 0.1
        return _scale(e, 10.0**x)
    if kind == "subnormal":
        return _prices(e, 1e-320, 2e-320)
    if kind == "overflow":
        return _prices(e, 1e308, 1.5e308)
    if kind == "huge_qty":
        return msgspec.structs.replace(e, qty=1e20) if type(e) is Trade else None
    if kind == "future":  # x seconds ahead, beyond the 5 s skew
        return msgspec.structs.replace(e, ts_recv=e.ts_recv + int(x * S))
    if kind in ("zero", "high"):
        return _kline(e, kind)
    if kind == "past":  # x seconds behind (late, for the bars; the check lets it through)
        return msgspec.structs.replace(e, ts_recv=e.ts_recv - int(x * S))
    raise AssertionError(kind)


IMPLAUSIBLE = ["far", "subnormal", "overflow", "huge_qty", "future", "zero", "high"]


def injection(kinds: list[str]):
    """(position, kind, u) of one injection; ``u`` in [-1, 1] sets its size (see :func:`inject`)."""
    return st.tuples(st.integers(10, N_EVENTS - 2), st.sampled_from(kinds), st.floats(-1.0, 1.0))


def _size(kind: str, u: float) -> float:
    """``far``: log10 of the factor, x1.26 .. x1e300 up, x0.74 .. x1e-300 down;
    ``future``, ``past``: seconds, 5.01 s .. about 4 months, log-uniform."""
    if kind == "far":
        return 0.1 + u * 299.9 if u >= 0 else -0.13 + u * 299.87
    return 5.01 * 10 ** (abs(u) * 6.3)


def inject(events: list, plan: list[tuple[int, str, float]]) -> tuple[list, list]:
    """The events with the hostile copies inserted after their originals (at
    distinct positions); returns (events, the injected copies)."""
    at: dict[int, tuple[str, float]] = {}
    for pos, kind, x in plan:
        at.setdefault(pos, (kind, x))
    out, injected = [], []
    for i, e in enumerate(events):
        out.append(e)
        if i in at:
            kind, u = at[i]
            h = hostile(e, kind, _size(kind, u))
            if h is not None:
                out.append(h)
                injected.append(h)
    return out, injected


def check(evs: list, cfg: sanity.SanityConfig | None = None) -> tuple[list, list, sanity.SanityState]:
    st_, out = drive(sanity.step, sanity.SanityState(cfg or sanity.SanityConfig()), evs)
    return [o for o in out if type(o) not in (ErrorRecord, Count)], [o for o in out if type(o) is ErrorRecord], st_


# --- 1. the checked chain equals the clean chain ------------------------------------

@PROFILE
@given(plan=st.lists(injection(IMPLAUSIBLE), min_size=1, max_size=9))
def test_checked_chain_equals_the_clean_chain(plan):
    events = real_events()
    evs, injected = inject(events, plan)
    accepted, dead, _ = check(evs)
    assert accepted == events
    assert sorted(msgspec.json.encode(h) for h in injected) == sorted(d.raw.encode() for d in dead)
    assert chain(accepted, Settings()) == clean_chain()


# --- 2. the unchecked chain does not raise and stays finite --------------------------

def _finite(*xs) -> bool:
    return all(x is None or math.isfinite(x) for x in xs)


@PROFILE
@given(plan=st.lists(injection([k for k in IMPLAUSIBLE if k != "future"] + ["past"]), min_size=1, max_size=5))
def test_unchecked_chain_never_raises_and_emits_finite_numbers(plan):
    evs, _ = inject(real_events(), plan)
    out = chain(evs, Settings())
    for r in out["features"]:
        assert type(r) is FeatureRow
    for r in out["join"]:
        if type(r) is ForecastRecord:
            assert _finite(r.pred_return, r.realized_return, r.error), r
    for m in out["metrics"]:
        assert type(m) is MetricsRecord and _finite(m.mae, m.rmse), m
    for s in out["signals"]:  # p_up may be NaN here: features gone non-finite (the check keeps them out)
        assert type(s) is Signal and s.side in (-1, 0, 1) and _finite(s.expected_return, s.target_position), s


# --- 3. the check's accounting -------------------------------------------------------

def hostile_stream(plan: list, burst: tuple[int, int, float], jump: tuple[int, float] | None) -> list:
    """The real events with ``plan`` injected, ``n`` consecutive lines forged in
    the same future (``burst``) and a regime change from ``jump`` on."""
    evs, _ = inject(real_events(), plan)
    at, n, u = burst
    ahead = int(_size("future", u) * S)
    evs = evs[:at] + [msgspec.structs.replace(e, ts_recv=e.ts_recv + ahead) for e in evs[at : at + n]] + evs[at:]
    if jump is not None:  # every price from there on scaled
        k, f = jump
        evs = evs[:k] + [_scale(e, f) or e for e in evs[k:]]
    return evs


BURST = st.tuples(st.integers(10, N_EVENTS - 10), st.integers(0, 6), st.floats(-1.0, 1.0))
JUMP = st.one_of(st.none(), st.tuples(st.integers(10, N_EVENTS - 1), st.floats(0.5, 2.0)))


@PROFILE
@given(plan=st.lists(injection(IMPLAUSIBLE + ["past"]), min_size=0, max_size=30),
       burst=BURST, jump=JUMP, warmup=st.integers(1, 7), confirmations=st.integers(0, 3))
def test_check_accounts_for_every_event_and_its_clock_only_moves_forward(plan, burst, jump, warmup, confirmations):
    evs = hostile_stream(plan, burst, jump)
    cfg = sanity.SanityConfig(warmup=warmup, future_confirmations=confirmations)
    state = sanity.SanityState(cfg)
    passed, dead, clock = [], [], -1
    for e in evs:
        state, out = sanity.step(state, e)
        for o in out:
            if type(o) is ErrorRecord:
                dead.append(o)
            elif type(o) is not Count:
                passed.append(o)
                clock = max(clock, o.ts_recv)
        assert state.clock >= 0 or not passed
        if passed:
            assert state.clock == clock  # the latest receive time passed on, never a dead letter's
    held = len(state.held or []) + len(state.ahead)
    assert len(passed) + len(dead) + held == len(evs)
    ids = {id(e): i for i, e in enumerate(evs)}
    order = [ids[id(o)] for o in passed]
    assert order == sorted(order) and len(set(order)) == len(order)
    assert all(d.stage == sanity.STAGE and d.reason for d in dead)


@PROFILE
@given(plan=st.lists(injection(IMPLAUSIBLE + ["past"]), min_size=0, max_size=30), burst=BURST, jump=JUMP,
       cuts=st.lists(st.integers(0, N_EVENTS + 40), max_size=40), warmup=st.integers(1, 7))
@example(plan=[], burst=(10, 3, 1.0), jump=None, cuts=[], warmup=7)  # a warm-up restarted by the burst (found once)
def test_check_over_batches_equals_the_check_event_by_event(plan, burst, jump, cuts, warmup):
    """``step_batch`` (what the dataflow runs, with its own fast path) over
    the stream cut into any batches gives what ``step`` gives event by event,
    and leaves the same state."""
    evs = hostile_stream(plan, burst, jump)
    cfg = sanity.SanityConfig(warmup=warmup)
    one, ref = drive(sanity.step, sanity.SanityState(cfg), evs)
    bounds = [0, *sorted(c for c in cuts if c < len(evs)), len(evs)]
    state, accepted, side = sanity.SanityState(cfg), [], []
    for i, j in zip(bounds, bounds[1:], strict=False):
        state, out = sanity.step_batch(state, evs[i:j])
        for o in out:
            if type(o) is list:
                assert o and o is out[0]
                accepted.extend(o)
            else:
                side.append(o)
    assert accepted == [o for o in ref if type(o) not in (ErrorRecord, Count)]
    assert side == [o for o in ref if type(o) in (ErrorRecord, Count)]
    assert state == one

"""Cross-asset features (operators/cross.py) on the real recordings: BTCUSDT spot leads ETHUSDT spot over
the same two days, both rows made by the project's own parser, bars and features. The follower's rows
must not depend on how the two streams interleave, use only leader bars that closed by their time, and
hold at most ``max_wait`` rows."""

from __future__ import annotations

import copy
import heapq
import pickle
import random
from collections import Counter

import msgspec
import pytest
from pydantic import ValidationError

from core.events import Bar, Count, ErrorRecord, FeatureRow
from harness.realdata import drive, parse_paths
from operators import bars, cross, features
from operators.cross import CrossConfig, CrossState, LeaderRow

LEADER, FOLLOWER = "BTCUSDT", "ETHUSDT"


def _rows(paths: list) -> tuple[str, list[FeatureRow]]:
    """(instrument, feature rows) of recordings read as one stream, with the default settings."""
    from dataflows.settings import Settings

    s = Settings()
    (key, events), = parse_paths(paths)[0].items()
    _, out = drive(bars.step, bars.BarState(s.bars), events)
    _, rows = drive(features.step, features.FeatureState(s.features), [b for b in out if type(b) is Bar])
    return key, rows


@pytest.fixture(scope="module")
def streams(ws_dir) -> tuple[list[LeaderRow], list[FeatureRow]]:
    """(BTCUSDT's rows routed to ETHUSDT, ETHUSDT's own rows) of 2024-08-08/09."""
    days = ("20240808", "20240809")
    lead, lrows = _rows([ws_dir / "spot" / f"btcusdt_{d}.gz" for d in days])
    fol, frows = _rows([ws_dir / "spot" / f"ethusdt_{d}.gz" for d in days])
    assert (lead, fol) == (LEADER, FOLLOWER)
    assert len(lrows) > 500 and len(frows) > 500
    return [LeaderRow(FOLLOWER, r) for r in lrows], frows


CFG = CrossConfig(pairs=(f"{LEADER}->{FOLLOWER}",), max_wait=1000)  # every drift of these streams in bound
IV = 1_000_000_000


def run(items, cfg: CrossConfig = CFG) -> list:
    return drive(cross.step, CrossState(cfg), items)[1]


def _ts(it) -> int:
    return it.row.ts_end if type(it) is LeaderRow else it.ts_end


def merged(lead: list, fol: list, shift=lambda k: 0, leader_first: bool = True) -> list:
    """Both streams merged by bar end, the leader's shifted by ``shift(bar)`` bars (> 0: it comes later);
    each stream keeps its own order."""
    def key(it) -> tuple:
        is_lead = type(it) is LeaderRow
        k = _ts(it) // IV
        return (k + shift(k), leader_first != is_lead) if is_lead else (k, not leader_first)
    return list(heapq.merge(lead, fol, key=key))


def shuffled(lead: list, fol: list, seed: int) -> list:
    """A random interleaving that keeps each stream's order."""
    picks = [True] * len(lead) + [False] * len(fol)
    random.Random(seed).shuffle(picks)
    li, fi = iter(lead), iter(fol)
    return [next(li) if p else next(fi) for p in picks]


def only_rows(out: list) -> list[FeatureRow]:
    return [o for o in out if type(o) is FeatureRow]


def counts(out: list) -> Counter:
    c: Counter = Counter()
    for o in out:
        if type(o) is Count:
            c[o.name] += o.n
    return c


@pytest.fixture(scope="module")
def reference(streams) -> list:
    lead, fol = streams
    return run(merged(lead, fol))


def test_reference_run(streams, reference):
    """Every follower row comes out once, in order, its own fields and features kept, with the leader's."""
    lead, fol = streams
    rows = only_rows(reference)
    assert [(r.ts_end, r.ready, r.reset, r.price, r.interval) for r in rows] == \
        [(r.ts_end, r.ready, r.reset, r.price, r.interval) for r in fol]
    assert all({k: v for k, v in r.x.items() if not k.startswith("lead_")} == f.x
               for r, f in zip(rows, fol, strict=True))
    assert all(set(CFG.lead_names(FOLLOWER)) & set(r.x) for r in rows)
    # a feature name the leader's rows lack is absent, never zero
    have = {f for f in CFG.features if f in lead[-1].row.x}
    assert {"ret_1", "ret_5", "ofi", "ofi_w"} <= have
    assert {k for k in rows[-1].x if k.startswith("lead_")} == {
        f"lead_{LEADER}_{f}_l{k}" for f in have for k in (0, 1, 2)}
    # the streams start at the same bar: the first follower row lacks lags 1 and 2, the second lag 2
    assert counts(reference) == {"cross_missing": 3}
    assert not [o for o in reference if type(o) is ErrorRecord]


def test_outputs_do_not_depend_on_the_interleaving(streams, reference):
    lead, fol = streams
    orders = {
        "leader first at each bar": merged(lead, fol),
        "follower first at each bar": merged(lead, fol, leader_first=False),
        "all the leader's rows first": list(lead) + list(fol),
        "all the follower's rows first": list(fol) + list(lead),
        "leader 50 bars behind": merged(lead, fol, lambda k: 50),
        "leader 50 bars ahead": merged(lead, fol, lambda k: -50),
        "leader from 20 ahead to 20 behind and back": merged(lead, fol, lambda k: abs(k % 80 - 40) - 20),
        **{f"random {seed}": shuffled(lead, fol, seed) for seed in range(8)},
    }
    for name, items in orders.items():
        assert sorted(map(id, items)) == sorted(map(id, [*lead, *fol])), name
        assert run(items) == reference, name
    # the default bound (600 bars) covers every order but the two that hold one whole stream back
    dflt = CrossConfig(pairs=CFG.pairs)
    for name in ("leader first at each bar", "follower first at each bar", "leader 50 bars behind",
                 "leader 50 bars ahead", "random 0", "random 1"):
        assert run(orders[name], dflt) == reference, name


def test_cutting_both_streams_at_any_time_gives_a_prefix(streams, reference):
    lead, fol = streams
    times = sorted(r.ts_end for r in fol)
    rng = random.Random(7)
    for q in (0.0, 0.01, 0.1, 0.33, 0.5, 0.77, 0.99, 1.0):
        t = times[min(int(q * len(times)), len(times) - 1)]
        lh = [r for r in lead if r.row.ts_end <= t]
        fh = [r for r in fol if r.ts_end <= t]
        for items in (merged(lh, fh), list(fh) + list(lh), list(lh) + list(fh), shuffled(lh, fh, rng.randrange(99))):
            out = run(items)
            assert out == reference[: len(out)], t
            # the leader has reached t: every follower row up to t is out
            assert [r.ts_end for r in only_rows(out)] == [r.ts_end for r in fh]


def test_lead_values_are_the_leader_rows_at_the_lags(streams, reference):
    lead, fol = streams
    by_ts = {r.row.ts_end: r.row.x for r in lead}
    n = 0
    for r in only_rows(reference):
        want = {}
        for k in CFG.lags:
            x = by_ts.get(r.ts_end - k * r.interval)
            for f in CFG.features:
                if x is not None and f in x:
                    want[f"lead_{LEADER}_{f}_l{k}"] = x[f]
        got = {k: v for k, v in r.x.items() if k.startswith("lead_")}
        assert got == want, r.ts_end
        n += len(got)
    assert n > 4 * 3 * 600


def test_leader_rows_after_a_bar_never_change_it(streams, reference):
    """Leader rows ending after T, corrupted and fed as early as possible, leave every row up to T as it was."""
    lead, fol = streams
    for q in (0.05, 0.4, 0.8):
        t = fol[int(q * len(fol))].ts_end
        bad = [r if r.row.ts_end <= t else
               LeaderRow(FOLLOWER, msgspec.structs.replace(r.row, x={f: 1e9 for f in r.row.x})) for r in lead]
        for items in (bad + list(fol), merged(bad, fol, lambda k: -30), shuffled(bad, fol, 3)):
            out = only_rows(run(items))
            keep = [r for r in out if r.ts_end <= t]
            assert keep == [r for r in only_rows(reference) if r.ts_end <= t]
            assert all(v != 1e9 for r in keep for v in r.x.values())
            assert any(v == 1e9 for r in out[len(keep):] for v in r.x.values())  # later rows do see them


def test_a_leader_gap_leaves_its_keys_absent_and_counts_them(streams, reference):
    lead, fol = streams
    gap = {r.row.ts_end for r in lead[200:210]}  # ten leader bars lost
    items = merged([r for r in lead if r.row.ts_end not in gap], fol)
    out = run(items)
    rows, ref_rows = only_rows(out), only_rows(reference)
    for r, f in zip(rows, ref_rows, strict=True):
        lost = {k for k in CFG.lags if r.ts_end - k * r.interval in gap}
        want = {key: v for key, v in f.x.items() if not any(key.endswith(f"_l{k}") for k in lost)
                or not key.startswith("lead_")}
        assert r.x == want
    assert counts(out)["cross_missing"] == 3 + 10 * len(CFG.lags)
    # a leader restarting after the gap (a reset row) is just a row
    reset = [LeaderRow(FOLLOWER, msgspec.structs.replace(r.row, reset=True)) if r is lead[210] else r
             for r in lead if r.row.ts_end not in gap]
    assert run(merged(reset, fol)) == out


def test_max_wait_bounds_the_rows_held_for_a_late_leader(streams, reference):
    lead, fol = streams
    cfg = CrossConfig(pairs=CFG.pairs, max_wait=10)
    st = CrossState(cfg)
    st, out = drive(cross.step, st, fol[:100])  # the leader has sent nothing yet
    rows = only_rows(out)
    assert [r.ts_end for r in rows] == [r.ts_end for r in fol[:90]] and len(st.held) == 10
    assert rows == fol[:90]  # nothing known of the leader: the rows as they are
    assert counts(out) == {"cross_leader_late": 90, "cross_missing": 90 * 3}
    st, out2 = drive(cross.step, st, lead[:105])  # the leader catches up: the held rows are complete
    assert only_rows(out2) == only_rows(reference)[90:100]
    assert not counts(out2)
    # a row forced out keeps the leader keys already in hand: those of the reference run
    st, out3 = drive(cross.step, CrossState(cfg), merged(lead[:300], fol[:320]))
    rows3 = only_rows(out3)
    assert len(rows3) == 310 and counts(out3)["cross_leader_late"] == 10
    ref_rows = only_rows(reference)
    assert rows3[:300] == ref_rows[:300]
    assert all(r.x.items() <= f.x.items() for r, f in zip(rows3[300:], ref_rows[300:310], strict=True))
    assert sum(k.startswith("lead_") for k in rows3[300].x) == 8  # lags 1 and 2 in hand, lag 0 not


def test_max_wait_bounds_the_rows_kept_of_a_leader_ahead(streams, reference):
    lead, fol = streams
    cfg = CrossConfig(pairs=CFG.pairs, max_wait=10)
    out = run(list(lead) + list(fol), cfg)
    assert counts(out)["cross_follower_late"] == len(lead) - (10 + 2 + 1)
    assert len(only_rows(out)) == len(fol)
    # within the bound either way, the outputs are those of the reference run
    for drift in (-8, 8):
        assert run(merged(lead, fol, lambda k, d=drift: d), cfg) == reference


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_state_round_trip_mid_stream(streams, reference, how):
    lead, fol = streams
    for items in (merged(lead, fol, lambda k: 12), merged(lead, fol, lambda k: -12), shuffled(lead, fol, 11)):
        for q in (0.2, 0.45, 0.8):
            k = int(q * len(items))
            st, head = drive(cross.step, CrossState(CFG), items[:k])
            assert st.held or any(tr.ts for tr in st.leaders.values())
            back = pickle.loads(pickle.dumps(st)) if how == "pickle" else copy.deepcopy(st)
            _, tail = drive(cross.step, back, items[k:])
            assert head + tail == reference
            assert drive(cross.step, st, items[k:])[1] == tail


def test_dead_letters_and_stale_leader_rows(streams):
    lead, fol = streams
    st, out = drive(cross.step, CrossState(CFG), fol[:3])
    stranger = LeaderRow(FOLLOWER, msgspec.structs.replace(lead[0].row, instrument="SOLUSDT"))
    st, (e,) = cross.step(st, stranger)
    assert type(e) is ErrorRecord and e.stage == "cross" and "SOLUSDT is not a leader of ETHUSDT" in e.reason
    assert msgspec.json.decode(e.raw, type=LeaderRow) == stranger
    st, (e,) = cross.step(st, LeaderRow("XRPUSDT", lead[0].row))
    assert "XRPUSDT" in e.reason and "ETHUSDT" in e.reason
    st, (e,) = cross.step(st, fol[1])
    assert "not after its previous one" in e.reason
    st, out = drive(cross.step, st, lead[:4])
    assert only_rows(out) and not [o for o in out if type(o) is ErrorRecord]
    st, out = cross.step(st, lead[2])
    assert out == [Count("cross_leader_stale", 1)]
    st, (e,) = cross.step(st, ("not", "a", "row"))
    assert "not a feature row or a leader row: tuple" in e.reason and e.raw == '["not","a","row"]'
    # a follower without leaders passes its rows on as they are
    _, out = drive(cross.step, CrossState(CFG), [r.row for r in lead[:5]])
    assert out == [r.row for r in lead[:5]]


def test_config():
    both = CrossConfig(pairs=("BTCUSDT->BTCUSDT-PERP", " BTCUSDT-PERP -> BTCUSDT", "BTCUSDT-PERP->ETHUSDT-PERP"))
    assert both.pairs[1] == "BTCUSDT-PERP->BTCUSDT"
    assert both.leaders_of("BTCUSDT") == ("BTCUSDT-PERP",)
    assert both.followers_of("BTCUSDT-PERP") == ("BTCUSDT", "ETHUSDT-PERP")
    assert both.followers == ("BTCUSDT-PERP", "BTCUSDT", "ETHUSDT-PERP")
    assert both.leaders_of("SOLUSDT") == () and both.lead_names("SOLUSDT") == ()
    assert both.lead_names("BTCUSDT")[:2] == ("lead_BTCUSDT-PERP_ret_1_l0", "lead_BTCUSDT-PERP_ret_5_l0")
    for bad in ({"pairs": ("BTCUSDT",)}, {"pairs": ("->ETH",)}, {"pairs": ("A->B->C",)}, {"pairs": ("A->A",)},
                {"pairs": ("A->B", "A -> B")}, {"lags": ()}, {"lags": (-1,)}, {"lags": (1, 1)},
                {"features": ()}, {"features": ("a", "a")}, {"max_wait": -1}, {"pair": ("A->B",)}):
        with pytest.raises(ValidationError):
            CrossConfig(**bad)
    with pytest.raises(ValidationError):
        both.max_wait = 3
    assert all(f.description for f in CrossConfig.model_fields.values())

"""Each instrument's steps run in the input partition that reads it
(dataflows/local.py), on the real recordings: the same outputs as the pure
operators chained by hand, the same outputs after a resume from any
snapshot, and steps that must name the steps before them."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from core.events import Bar, ForecastRecord, MetricsRecord
from dataflows import local
from dataflows.settings import Settings
from sources.binance import ParseLimits
from sources.replay import ReplaySource


def _steps(s: Settings) -> list[local.TickStep]:
    """Bars straight from the parsed events (no checks: as :func:`harness.realdata.run_chain` chains them)."""
    return [
        dataclasses.replace(local.make_bars(s.bars, after="parsed", emit=True, book=s.features.depth), after=()),
        local.compute_features(s.features, after="make_bars"),
        local.join_forecasts(s.forecast, after="compute_features"),
        local.score_forecasts(after="join_forecasts"),
    ]


def _drain(part, until: int | None = None) -> tuple[list, list]:
    """(items of every batch, snapshot after each batch) of a partition, up to ``until`` batches."""
    items: list = []
    snaps: list = []
    while until is None or len(snaps) < until:
        try:
            items.extend(part.next_batch())
        except StopIteration:
            break
        snaps.append(part.snapshot())
    return items, snaps


def _outputs(items: list, step: str, cls: type) -> list:
    return [v for x in items if type(x) is local.Emitted and x.step == step for v in x.values if type(v) is cls]


@pytest.fixture(scope="module")
def source(chain):
    return ReplaySource(list(chain.paths), batch_size=1000)


def test_the_steps_in_a_partition_give_what_the_operators_give(chain, source):
    (part,) = source.list_parts()
    tick = local.TickSource(source, ParseLimits(), _steps(chain.settings))
    items, _ = _drain(tick.build_part("read_ticks", part, None))
    assert _outputs(items, "make_bars", Bar) == chain.bars
    assert _outputs(items, "join_forecasts", ForecastRecord) == chain.forecasts
    assert _outputs(items, "score_forecasts", MetricsRecord) == chain.metrics
    claims = [x for x in items if type(x) is local.Emitted and x.step == local.CLAIMS]
    assert [(c.source, c.instrument) for c in claims] == [(part, chain.instrument)]


def test_a_partition_resumed_from_a_snapshot_goes_on_as_if_never_stopped(chain, source):
    """Snapshots taken mid-stream, pickled as a recovery store keeps them:
    resumed from each, the partition emits exactly what the uninterrupted one
    emitted after it."""
    (part,) = source.list_parts()
    tick = local.TickSource(source, ParseLimits(), _steps(chain.settings))
    batches: list[list] = []
    whole = tick.build_part("read_ticks", part, None)
    snaps = []
    while True:
        try:
            batches.append(list(whole.next_batch()))
        except StopIteration:
            break
        snaps.append(pickle.dumps(whole.snapshot()))
    assert len(batches) > 10
    for k in (1, len(batches) // 3, len(batches) - 2):
        resumed = tick.build_part("read_ticks", part, pickle.loads(snaps[k - 1]))
        rest, _ = _drain(resumed)
        after = [x for b in batches[k:] for x in b]
        assert [x for x in rest if type(x) is local.Emitted and x.step != local.CLAIMS] == \
            [x for x in after if type(x) is local.Emitted and x.step != local.CLAIMS]


def test_exports_go_out_once_when_the_input_ends(chain, source):
    s = chain.settings
    steps = [*_steps(s)[:1], local.compute_features(s.features, after="make_bars", export=True)]
    (part,) = source.list_parts()
    items, _ = _drain(local.TickSource(source, ParseLimits(), steps).build_part("read_ticks", part, None))
    exports = [x for x in items if type(x) is local.Emitted and x.step == local.EXPORTS]
    assert len(exports) == 1 and exports[-1] is items[-1]
    ((inst, kind, state),) = exports[0].values
    assert (inst, kind, type(state).__name__) == (chain.instrument, "features", "FeatureState")


def test_a_step_names_steps_before_it():
    s = Settings()
    with pytest.raises(ValueError, match="tick step 'make_bars' takes the outputs of 'check_ticks', not a step "
                                         "before it"):
        local.TickSource(ReplaySource(["data/sample"]), ParseLimits(), [local.make_bars(s.bars, after="check_ticks")])
    with pytest.raises(ValueError, match="a tick step cannot be named 'check_ticks': another step"):
        local.TickSource(ReplaySource(["data/sample"]), ParseLimits(),
                         [local.check_ticks(s.sanity), local.check_ticks(s.sanity)])
    with pytest.raises(ValueError, match="the first tick step takes the parsed events"):
        local.TickSource(ReplaySource(["data/sample"]), ParseLimits(), [])

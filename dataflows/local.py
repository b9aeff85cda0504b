"""Per-tick work where the ticks are read: a tick never leaves the worker that reads it.

::

    a partition of the input (an instrument's files, or a Kafka partition)
        -> parse -> check_ticks -> make_bars (the book) -> bars      (keyed by instrument)
                                -> find_fill_quotes   -> fill quotes (keyed by instrument)
        dead letters and counts of every step          -> their streams

Bytewax routes every item of a keyed step to the worker that owns its key.
Per tick, that is a copy (across processes: a pickle sent over the network)
of every tick from the worker that read it to the worker that owns its
instrument. Here the per-tick steps run inside the input's partition
instead (:class:`TickSource`), on the worker that reads it: only what their
last steps emit (one bar, or a few fill quotes, per instrument and bar
interval), the dead letters and the counts go on into the dataflow, where
bars are keyed by instrument as before.

The steps are the same pure operators as everywhere (:class:`TickStep`:
a ``step(state, item)``, its initial state), run per instrument by the same
:class:`~dataflows.ops.StepLogic` as a keyed Bytewax step, so a dead letter
carries its input as received. Their states are the partition's recovery
state, beside the reader's position, and are restored with it.

An instrument must be read by one partition: the files of an instrument are
one partition (:class:`sources.replay.ReplaySource`), and ticklet's
collector and publisher key Kafka records by instrument, so that Kafka puts
an instrument in one topic partition. A partition may hold several
instruments. Where an instrument comes from two partitions (a topic written
by a producer that does not key by instrument), the bars and fill quotes of
the second are dead letters that say so (:mod:`operators.owner`).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, NamedTuple, Optional

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators import KeyedStream

from core.events import Bar, Count, ErrorRecord, ForecastRecord, MakerFillRecord, RawChunk
from core.telemetry import STAGE_SECONDS
from dataflows.ops import Side, StepLogic, run_step
from operators import bars, depth, features, fills, forecast, maker, metrics, owner, pnl, sanity, signals
from sources.binance import ParseLimits, ParseState, parse_chunk

__all__ = [
    "CLAIMS",
    "EXPORTS",
    "Emitted",
    "SideOut",
    "TickSource",
    "TickState",
    "TickStep",
    "check_ticks",
    "compute_features",
    "exports_of",
    "find_fill_quotes",
    "join_forecasts",
    "make_bars",
    "make_signals",
    "one_reader",
    "outputs_of",
    "score_forecasts",
    "side_of",
    "trade",
]

_PARSE_SECONDS = STAGE_SECONDS.labels("parse")


@dataclass(frozen=True)
class TickStep:
    """A per-instrument step run where the ticks are read.

    Parameters
    ----------
    name
        Its name, unique among the steps (the outputs of an emitting step
        go out under it: :func:`outputs_of`).
    step
        The pure ``step(state, item) -> (state, outputs)``.
    init
        The initial state of an instrument, from its name.
    after
        The steps whose outputs it takes, in this order (none: the parsed
        events, as an :class:`~sources.binance.EventBatch` per instrument
        and chunk).
    accept
        Only the outputs of this type, if given.
    stage
        Its label in ``ticklet_stage_seconds``.
    flatten
        Whether each input is a list of items fed one by one.
    whole
        Whether the step takes all its inputs of a chunk at once, as one list
        (a step that passes no event on: events and decisions to be put in
        time order, or events it only reads).
    count_as
        ``(name, type)``: outputs of that type counted under that name.
    emit
        Whether its outputs go on into the dataflow.
    export
        ``(kind, fn)``: when the input ends, each instrument's ``fn(state)``
        goes out (for a model bundle: :func:`exports_of`).
    finish
        ``fn(state) -> (state, outputs)``: when the input ends, each
        instrument's last outputs (what was waiting for later events), as
        the step's own (with ``emit``).
    run
        With ``flatten``: ``run(state, events, cols, i) -> (state, j,
        outputs)``, the step over a batch's events from ``i`` on in compiled
        code, where the batch has its fields in arrays (``cols``); the
        events up to ``j`` stepped, the outputs those of the last (as
        :func:`operators.depth.run`).
    """

    name: str
    step: Callable[[Any, Any], tuple[Any, Sequence[Any]]]
    init: Callable[[str], Any]
    after: tuple[str, ...] = ()
    accept: Optional[type] = None
    stage: str = ""
    flatten: bool = False
    whole: bool = False
    count_as: Optional[tuple[str, type]] = None
    emit: bool = False
    export: Optional[tuple[str, Callable[[Any], Any]]] = None
    finish: Optional[Callable[[Any], tuple[Any, Sequence[Any]]]] = None
    run: Optional[Callable[[Any, Any, Any, int], tuple[Any, int, Sequence[Any]]]] = None


def _fresh(make: Callable[[], Any]) -> Callable[[str], Any]:
    """An ``init`` that makes the same fresh state whatever the instrument."""
    return lambda instrument: make()


def check_ticks(config: sanity.SanityConfig) -> TickStep:
    """Plausibility checks: lists of the plausible events on, the others dead letters."""
    return TickStep("check_ticks", sanity.step_batch, _fresh(functools.partial(sanity.SanityState, config)),
                    stage="sanity")


def make_bars(config: bars.BarConfig, after: str, emit: bool = False,
              book: Optional[depth.DepthConfig] = None, compiled: bool = False) -> TickStep:
    """Event-time bars from the events of step ``after``; with ``book`` enabled, each with its order book over the bar.

    The book is kept from the depth diffs and snapshots (:mod:`operators.depth`); ``compiled``: in
    :mod:`operators.flatbook`'s arrays (the chunk path's).
    """
    if book is not None and book.enabled:
        make = functools.partial(depth.DepthState, config, book, compiled)
        return TickStep("make_bars", depth.step, _fresh(make), (after,), stage="bars", flatten=True,
                        count_as=("bars", Bar), emit=emit, run=depth.run if compiled else None)
    return TickStep("make_bars", bars.step, _fresh(functools.partial(bars.BarState, config)), (after,),
                    stage="bars", flatten=True, count_as=("bars", Bar), emit=emit)


def compute_features(config: features.FeatureConfig, after: str,
                     warm: Optional[Callable[[str], Optional[features.FeatureState]]] = None,
                     export: bool = False, emit: bool = False) -> TickStep:
    """Feature rows from the bars of step ``after``.

    ``warm(instrument)``: the state an instrument starts from (None: a fresh
    one), unless recovery has one. With ``export``, each instrument's final
    state goes out when the input ends (kind ``"features"``), for a model
    bundle.
    """
    def start(instrument: str) -> features.FeatureState:
        st = None if warm is None else warm(instrument)
        return features.FeatureState(config) if st is None else st

    return TickStep("compute_features", features.step, start, (after,), stage="features", emit=emit,
                    export=("features", _same) if export else None)


def _same(state: Any) -> Any:
    return state


def join_forecasts(config: forecast.ForecastConfig, after: str,
                   warm: Optional[Callable[[str], Optional[forecast.JoinState]]] = None,
                   export: bool = False) -> TickStep:
    """Forecast from the feature rows of ``after``, hold until the target time, pair with the realized value, learn.

    It emits forecasts as issued (:class:`~core.events.Forecast`) and paired
    with their realized value (:class:`~core.events.ForecastRecord`), in
    order. ``warm(instrument)``: the state an instrument starts from (None:
    a cold one), unless recovery has one. With ``export``, learners record
    what they need to train offline, and when the input ends each
    instrument's final state (:func:`operators.forecast.export`) goes out
    (kind ``"join"``), for a model bundle.
    """
    def start(instrument: str) -> forecast.JoinState:
        st = None if warm is None else warm(instrument)
        if st is None:
            return forecast.JoinState(config, record=export)
        if export:
            st.record_offline()
        return st

    return TickStep("join_forecasts", forecast.step, start, (after,), stage="join",
                    count_as=("forecasts", ForecastRecord), emit=True,
                    export=("join", forecast.export) if export else None)


def score_forecasts(after: str) -> TickStep:
    """Prequential metrics per model and horizon, from the scored forecasts of ``after``."""
    return TickStep("score_forecasts", metrics.step, _fresh(metrics.MetricsState), (after,),
                    accept=ForecastRecord, stage="metrics", emit=True)


def make_signals(config: signals.SignalConfig, after: str) -> TickStep:
    """Decisions and sizes from the forecasts of ``after`` (scored, then issued)."""
    return TickStep("make_signals", signals.step, _fresh(functools.partial(signals.SignalState, config)), (after,),
                    stage="signals", emit=True)


def find_fill_quotes(latency_ms: int, bar_config: bars.BarConfig, after: str, emit: bool = False) -> TickStep:
    """The first best bid/ask after every bar end plus the order latency, from the events of ``after``."""
    iv, gap = bar_config.interval_ms, bar_config.max_gap_bars
    return TickStep("find_fill_quotes", fills.step_batch,
                    _fresh(functools.partial(fills.FillState, latency_ms, iv, gap)), (after,), stage="fills", emit=emit,
                    whole=True)


def rest_quotes(config: maker.MakerConfig, after: tuple[str, str], compiled: bool = False) -> TickStep:
    """Resting quotes: the baseline's and each model's, filled from the book and trades (:mod:`operators.maker`).

    It takes the events of ``after[0]`` and the decisions of ``after[1]`` of
    a chunk at once, and puts each decision before the events received at
    its time. ``compiled``: its book in :mod:`operators.flatbook`'s arrays (the chunk path's).
    """
    return TickStep("rest_quotes", maker.step_batch,
                    lambda instrument: maker.QuoterState(config, instrument, compiled=compiled), after,
                    stage="maker", emit=True, whole=True, count_as=("maker_fills", MakerFillRecord),
                    finish=maker.finish)


def trade(config: pnl.ExecutionConfig, bar_config: bars.BarConfig, after: tuple[str, str]) -> TickStep:
    """Fill the decisions against their quotes (the outputs of ``after``); mark and account the books.

    It emits fills, equity points and running economics.
    """
    iv, gap = bar_config.interval_ms, bar_config.max_gap_bars
    return TickStep("trade", pnl.step, _fresh(functools.partial(pnl.PnlState, config, iv, gap)), after,
                    stage="pnl", emit=True)


class Emitted(NamedTuple):
    """Outputs of an emitting step as they leave the source: the step, the partition read, the instrument, the outputs.

    The outputs of one instrument's events in one chunk go out together.
    """

    step: str
    source: str
    instrument: str
    values: list


@dataclass
class TickState:
    """The recovery state of a partition's steps: the parser's, and each step's per instrument.

    ``parse`` is None before the first chunk.
    """

    parse: Optional[ParseState] = None
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)


def _parse(limits: ParseLimits, state: Optional[ParseState], chunk: RawChunk) -> tuple[ParseState, list]:
    """Parse a chunk: ``(instrument, EventBatch)`` pairs, dead letters, counts (the bytes read among them)."""
    t0 = perf_counter()
    if state is None:
        state = ParseState(limits)
    elif state.limits != limits:  # resumed with other settings: the new limits, the instruments admitted
        state.limits = limits
    by_key, errors, counts = parse_chunk(chunk, state)
    _PARSE_SECONDS.observe(perf_counter() - t0)
    items: list = list(by_key.items())
    items.extend(errors)
    items.extend(Count(k, v) for k, v in counts.items() if v)
    if chunk.nbytes:
        items.append(Count("input_bytes", chunk.nbytes))
    return state, items


class _TickPartition(StatefulSourcePartition[Any, tuple[Any, TickState]]):
    def __init__(self, name: str, inner: StatefulSourcePartition[Any, Any], limits: ParseLimits,
                 steps: Sequence[TickStep], resume: Optional[TickState]):
        self._name = name
        self._inner = inner
        self._limits = limits
        self._steps = steps
        self._parse = None if resume is None else resume.parse
        self._logic: dict[str, dict[str, StepLogic]] = {s.name: {} for s in steps}
        for s in steps:
            for inst, st in ({} if resume is None else resume.steps.get(s.name, {})).items():
                self._logic[s.name][inst] = self._logic_of(s, st)
        self._ended = False

    @staticmethod
    def _logic_of(s: TickStep, state: Any) -> StepLogic:
        return StepLogic(s.step, state, s.flatten, s.count_as, s.stage, run=s.run)

    def next_batch(self) -> list[Any]:
        if self._ended:
            raise StopIteration()
        try:
            items = self._inner.next_batch()
        except StopIteration:  # the end of the input: the exported states go out first, then the last outputs
            self._ended = True
            return self._exports() + self._finish()
        out: list[Any] = []
        for item in items:
            if type(item) is not RawChunk:  # a dead letter of reading
                out.append(item)
                continue
            self._parse, parsed = _parse(self._limits, self._parse, item)
            for x in parsed:
                if type(x) is tuple:
                    self._run(x[0], x[1], out)
                else:
                    out.append(x)
        return out

    def _run(self, inst: str, batch: Any, out: list) -> None:
        """Run the steps over one instrument's events of one chunk, appending what leaves the source to ``out``."""
        main: dict[str, list] = {"": [batch]}
        src = self._name
        for s in self._steps:
            if s.after:
                values = [v for a in s.after for v in main.get(a, ())]
                if s.accept is not None:
                    values = [v for v in values if type(v) is s.accept]
            else:
                values = main[""]
            if not values:
                continue
            if s.whole:
                values = [values]
            logic = self._logic[s.name].get(inst)
            if logic is None:
                logic = self._logic[s.name][inst] = self._logic_of(s, s.init(inst))
                if s is self._steps[0]:  # the instrument's first events in this partition
                    out.append(Emitted(CLAIMS, src, inst, [src]))
            res, _ = logic.on_batch(values)
            kept = []
            for r in res:
                if type(r) is Side:
                    out.extend(r.errors)
                    out.extend(r.counts)
                else:
                    kept.append(r)
            main[s.name] = kept
            if s.emit and kept:
                out.append(Emitted(s.name, src, inst, kept))

    def _exports(self) -> list[Any]:
        """The exported states of the steps that export them, one per instrument (see :attr:`TickStep.export`)."""
        out: list[Any] = []
        for s in self._steps:
            if s.export is None:
                continue
            kind, fn = s.export
            for inst, logic in self._logic[s.name].items():
                out.append(Emitted(EXPORTS, self._name, inst, [(inst, kind, fn(logic.state))]))
        return out

    def _finish(self) -> list[Any]:
        """The last outputs of the steps that have some once the input ends (see :attr:`TickStep.finish`)."""
        out: list[Any] = []
        for s in self._steps:
            if s.finish is None:
                continue
            for inst, logic in self._logic[s.name].items():
                logic.state, res = s.finish(logic.state)
                kept = [r for r in res if type(r) is not Count and type(r) is not ErrorRecord]
                out.extend(r for r in res if type(r) is Count or type(r) is ErrorRecord)
                if s.count_as is not None:
                    name, cls = s.count_as
                    n = sum(1 for r in kept if type(r) is cls)
                    if n:
                        out.append(Count(name, n))
                if s.emit and kept:
                    out.append(Emitted(s.name, self._name, inst, kept))
        return out

    def next_awake(self) -> Any:
        return self._inner.next_awake()

    def snapshot(self) -> tuple[Any, TickState]:
        steps = {name: {inst: lg.state for inst, lg in by.items()} for name, by in self._logic.items()}
        return self._inner.snapshot(), copy.deepcopy(TickState(self._parse, steps))

    def close(self) -> None:
        self._inner.close()


#: The name under which a partition says it reads an instrument, the first time it does (:func:`one_reader`).
CLAIMS = "claims"
#: The name under which the exported states go out (:func:`exports_of`).
EXPORTS = "exports"


class TickSource(FixedPartitionedSource[Any, tuple[Any, TickState]]):
    """``source``, with the per-instrument steps run in each of its partitions (see the module docstring).

    It emits :class:`Emitted` outputs of the emitting steps, dead letters
    (of reading, parsing and the steps), :class:`~core.events.Count`
    increments, a claim the first time a partition reads an instrument
    (:func:`one_reader`), and, when the input ends, the exported states
    (:func:`exports_of`); :func:`outputs_of` and :func:`side_of` separate
    them. Its partitions are those of ``source``; a partition's recovery
    state is ``source``'s with the states of the steps (:class:`TickState`).

    Parameters
    ----------
    source
        What is read: chunks of raw ticks (:class:`~core.events.RawChunk`)
        and dead letters.
    limits
        What the parser admits.
    steps
        The steps, each after those it takes its inputs from.
    """

    def __init__(self, source: FixedPartitionedSource[Any, Any], limits: ParseLimits, steps: Sequence[TickStep]):
        names: list[str] = []
        for s in steps:
            if s.name in (*names, CLAIMS, EXPORTS):
                raise ValueError(f"a tick step cannot be named {s.name!r}: another step or a stream of the source is")
            for a in s.after:
                if a not in names:
                    raise ValueError(f"tick step {s.name!r} takes the outputs of {a!r}, not a step before it")
            names.append(s.name)
        if not steps or steps[0].after:
            raise ValueError("the first tick step takes the parsed events")
        self.source = source
        self._limits = limits
        self._steps = tuple(steps)

    def list_parts(self) -> list[str]:
        """The partitions of ``source``, unchanged."""
        return self.source.list_parts()

    def build_part(self, step_id: str, for_part: str,
                   resume_state: Optional[tuple[Any, TickState]]) -> _TickPartition:
        """The partition of ``source``, its steps resumed from ``resume_state``."""
        inner, steps = (None, None) if resume_state is None else resume_state
        return _TickPartition(for_part, self.source.build_part(step_id, for_part, inner), self._limits, self._steps,
                              steps)


def _is(name: str, x: Any) -> bool:
    return type(x) is Emitted and x.step == name


def _keyed(cls: Optional[type], x: Emitted) -> list[tuple[str, Any]]:
    inst = x.instrument
    if cls is None:
        return [(inst, v) for v in x.values]
    return [(inst, v) for v in x.values if type(v) is cls]


@operator
def outputs_of(step_id: str, up: Stream[Any], step: str, cls: Optional[type] = None) -> KeyedStream[Any]:
    """The outputs of the tick step named ``step`` (those of type ``cls``, if given), keyed by instrument.

    They stay on the worker that made them.
    """
    return op.flat_map("key", op.filter("select", up, functools.partial(_is, step)), functools.partial(_keyed, cls))


@operator
def exports_of(step_id: str, up: Stream[Any]) -> KeyedStream[tuple[str, str, Any]]:
    """The exported states (``(instrument, kind, state)``), keyed by instrument, once the input ends."""
    return outputs_of("exports", up, EXPORTS)


@operator
def one_reader(step_id: str, up: Stream[Any]) -> Stream[ErrorRecord]:
    """Dead letters of the instruments that more than one input partition reads (:mod:`operators.owner`)."""
    claims = op.map("key", op.filter("select", up, functools.partial(_is, CLAIMS)),
                    lambda x: (x.instrument, (x.source, x)))
    return run_step("check", claims, owner.step, owner.OwnerState).errors


@dataclass(frozen=True)
class SideOut:
    """Dead letters and counter increments."""

    errors: Stream[ErrorRecord]
    counts: Stream[Count]


@operator
def side_of(step_id: str, up: Stream[Any]) -> SideOut:
    """The dead letters (of reading, parsing and the tick steps) and counts in what a :class:`TickSource` emits."""
    return SideOut(op.filter("select_errors", up, lambda x: type(x) is ErrorRecord),
                   op.filter("select_counts", up, lambda x: type(x) is Count))

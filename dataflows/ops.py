"""Thin Bytewax wrappers around the pure operators and the sinks.

:class:`StepLogic` drives a pure ``step(state, item) -> (state, outputs)``
function from :mod:`operators` over the items of one key: in the input's
partitions for each instrument's steps (:mod:`dataflows.local`), and per key
with :func:`bytewax.operators.stateful_batch` for a keyed step
(:func:`run_step`), whose state is snapshotted for recovery and restored on
resume. Outputs that are :class:`ErrorRecord` or :class:`Count` are split off
into the dead-letter and counter streams.

Events come from the parser in :class:`~sources.binance.EventBatch` lists
that carry each event's input record. A step that dead-letters an event puts
the event's JSON in the dead letter's ``raw``; the wrapper swaps it for the
input as received (:func:`sources.binance.message_of`), and lists of events
a step passes on keep their records (see :class:`StepLogic`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import is_
from pathlib import Path
from time import perf_counter
from typing import Any, Generic, Optional, TypeVar

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Stream, operator
from bytewax.operators import KeyedStream, StatefulBatchLogic

from core.events import Count, ErrorRecord, MetricsRecord, event_json
from core.telemetry import STAGE_SECONDS
from sinks.files import CsvSink
from sinks.records import csv_bytes, kafka_record
from sources.binance import EventBatch, message_of

__all__ = [
    "Exported",
    "Side",
    "StepLogic",
    "StepOut",
    "encode_for_kafka",
    "key_records",
    "latest_metrics",
    "run_step",
    "stamp_points",
    "sum_counts",
    "values",
    "write_csv",
]

S = TypeVar("S")
V = TypeVar("V")
W = TypeVar("W")


@dataclass(frozen=True)
class StepOut(Generic[W]):
    """A step's main keyed output, its dead letters and its counter increments.

    ``exports``: with an ``export`` (:func:`run_step`), each key's exported
    state once the input ends, as ``(key, (key, kind, state))``.
    """

    out: KeyedStream[W]
    errors: Stream[ErrorRecord]
    counts: Stream[Count]
    exports: Optional[KeyedStream[tuple[str, str, Any]]] = None


class Exported:
    """A key's exported state (``kind``, ``value``), from :meth:`StepLogic.on_eof`."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value: Any):
        self.kind = kind
        self.value = value


class Side:
    """Dead letters and counter increments of one batch, carried as one item.

    As one item, the main output needs a single branch.
    """

    __slots__ = ("counts", "errors")

    def __init__(self, errors: list[ErrorRecord], counts: list[Count]):
        self.errors = errors
        self.counts = counts


#: Most events a step may hold across batches whose input records are kept
#: (beyond it they are forgotten, and such an event's dead letter keeps its JSON).
_HELD_MAX = 1024


def _about(err: ErrorRecord, ev: Any) -> bool:
    """Whether a dead letter is the dead letter of event ``ev`` (its raw is the event's JSON)."""
    return (err.ts_recv == ev.ts_recv and err.instrument == ev.instrument and not err.raw_base64
            and err.raw == event_json(ev))


def _with_raw(err: ErrorRecord, rec: Any, fmt: str) -> ErrorRecord:
    """``err`` with the input record's message as its raw."""
    return ErrorRecord.of(err.stage, err.reason, message_of(rec, fmt), err.instrument, err.ts_recv)


class StepLogic(StatefulBatchLogic[Any, Any, Any]):
    """Drive a pure step function over a batch of values for one key.

    When the values are :class:`EventBatch` lists, the input records follow
    the events: a dead letter of an event gets the event's input as its raw,
    and a list of events the step returns (a filter's accepted events) is
    passed on as an :class:`EventBatch` with their records. Records of events
    the step holds across batches are kept (at most ``_HELD_MAX``; not in
    snapshots: after a resume such an event's dead letter keeps its JSON).
    A step whose state says which events it holds (``holding()``, as
    :class:`operators.sanity.SanityState`) may also drop events (skip them):
    their records are dropped too, and those of the events it holds kept.
    A batch that every event passed goes on with its columns
    (:class:`~core.events.EventColumns`), which a flattening step with a
    ``run`` (as :func:`operators.depth.run`) reads to take its events in
    runs of compiled code, the others stepped one by one.
    """

    def __init__(self, step: Callable, state: Any, flatten: bool, count_as: Optional[tuple[str, type]], stage: str,
                 export: Optional[tuple[str, Callable[[Any], Any]]] = None, run: Optional[Callable] = None):
        self.step = step
        self.run = run
        self.export = export
        self.state = state
        self.flatten = flatten
        self.count_as = count_as
        self.timer = STAGE_SECONDS.labels(stage)
        self.held: dict[int, tuple[Any, Any, str]] = {}  # id(event) -> (event, record, fmt)

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        """Feed the values of one key; the outputs, with a :class:`Side` of dead letters and counts if any."""
        t0 = perf_counter()
        step = self.step
        st = self.state
        out: list = []
        if self.flatten:
            for chunk in values:
                if type(chunk) is EventBatch and len(chunk.records) == len(chunk):
                    fmt = chunk.fmt
                    if self.run is not None and chunk.cols is not None:
                        st = self._run(st, chunk, out)
                        continue
                    for v, rec in zip(chunk, chunk.records, strict=True):
                        st, o = step(st, v)
                        if o:
                            out.extend(_raw_in(o, v, rec, fmt))
                    continue
                for v in chunk:
                    st, o = step(st, v)
                    if o:
                        out.extend(o)
        else:
            for v in values:
                st, o = step(st, v)
                if type(v) is EventBatch:
                    o = self._carry(v, o, st)
                if o:
                    out.extend(o)
        self.state = st
        self.timer.observe(perf_counter() - t0)
        if not out:
            return out, StatefulBatchLogic.RETAIN
        main = [o for o in out if type(o) is not Count and type(o) is not ErrorRecord]
        errors = [o for o in out if type(o) is ErrorRecord]
        counts = [o for o in out if type(o) is Count]
        if self.count_as:
            name, cls = self.count_as
            n = sum(1 for o in main if type(o) is cls)
            if n:
                counts.append(Count(name, n))
        if errors or counts:
            main.append(Side(errors, counts))
        return main, StatefulBatchLogic.RETAIN

    def _run(self, state: Any, batch: EventBatch, out: list) -> Any:
        """The step over ``batch``, its runs of events by the step's compiled ``run``, the others one by one."""
        run, step, cols, recs, fmt = self.run, self.step, batch.cols, batch.records, batch.fmt
        assert run is not None
        st = state
        i, n = 0, len(batch)
        while i < n:
            st, j, o = run(st, batch, cols, i)
            if o:
                out.extend(_raw_in(o, batch[j - 1], recs[j - 1], fmt))
            if j < n:
                v = batch[j]
                st, o = step(st, v)
                if o:
                    out.extend(_raw_in(o, v, recs[j], fmt))
            i = j + 1
        return st

    def _carry(self, batch: EventBatch, out: Any, state: Any) -> list:
        """The outputs of a step fed ``batch``, with the input records carried over (see the class docstring).

        ``state`` is the step's state after it.
        """
        held = self.held
        fmt = batch.fmt
        if (not held and len(out) == 1 and type(out[0]) is list and len(out[0]) == len(batch)
                and all(map(is_, out[0], batch))):  # the common case: every event passed on
            return [EventBatch(fmt, out[0], batch.records, batch.cols)]
        holding = getattr(state, "holding", None)
        if (not held and out and type(out[0]) is list and holding is not None and not holding()
                and not any(type(x) is ErrorRecord for x in out)):  # some skipped, none held nor dead-lettered
            acc = out[0]
            recs: list[Any] = []
            n = len(acc)
            for e, rec in zip(batch, batch.records, strict=True):
                if len(recs) < n and acc[len(recs)] is e:
                    recs.append(rec)
            if len(recs) == n:
                return [EventBatch(fmt, acc, recs), *out[1:]]
        for e, rec in zip(batch, batch.records, strict=False):
            held[id(e)] = (e, rec, fmt)
        res = []
        for x in out:
            cls = type(x)
            if cls is list or cls is EventBatch:
                recs = []
                for e in x:
                    h = held.pop(id(e), None)
                    recs.append(None if h is None else h[1])
                res.append(EventBatch(fmt, x, recs))
            elif cls is ErrorRecord:
                for key, (e, rec, f) in held.items():
                    if _about(x, e):
                        del held[key]
                        x = _with_raw(x, rec, f)
                        break
                res.append(x)
            else:
                res.append(x)
        if len(held) > _HELD_MAX:
            keep = {id(e) for e in holding()} if holding is not None else set()
            for key in [k for k in held if k not in keep]:
                del held[key]
        return res

    def on_eof(self) -> tuple[Iterable, bool]:
        """With an ``export = (kind, fn)``, ``fn(state)`` once the input ends (:class:`Exported`); else nothing."""
        if self.export is None or self.state is None:
            return (), StatefulBatchLogic.RETAIN
        kind, fn = self.export
        return [Exported(kind, fn(self.state))], StatefulBatchLogic.RETAIN

    def snapshot(self) -> Any:
        """A copy of the state, for the recovery store."""
        return copy.deepcopy(self.state)


def _raw_in(out: Sequence[Any], ev: Any, rec: Any, fmt: str) -> Sequence[Any]:
    """The outputs of stepping ``ev``, its dead letters about it with the raw input ``rec`` (see :class:`StepLogic`)."""
    if rec is None or not any(type(x) is ErrorRecord for x in out):
        return out
    return [_with_raw(x, rec, fmt) if type(x) is ErrorRecord and _about(x, ev) else x for x in out]


def _is_main(kv: tuple[str, Any]) -> bool:
    return type(kv[1]) is not Side


def _side_errors(kv: tuple[str, Side]) -> list[ErrorRecord]:
    return kv[1].errors


def _side_counts(kv: tuple[str, Side]) -> list[Count]:
    return kv[1].counts


@operator
def run_step(
    step_id: str,
    up: KeyedStream[V],
    step: Callable[[S, Any], tuple[S, Sequence[Any]]],  # Any: a value of ``up``, or an item of one (``flatten``)
    init: Callable[[], S],
    flatten: bool = False,
    count_as: Optional[tuple[str, type]] = None,
    export: Optional[tuple[str, Callable[[Any], Any]]] = None,
) -> StepOut:
    """Run ``step`` per key, starting each key from ``init()`` (or its recovered state: recovery always wins).

    With ``flatten``, each upstream value is a list of items fed one by one.
    ``count_as = (name, type)`` counts main outputs of that type under that
    counter name. With ``export = (kind, fn)``, each key's ``fn(state)``
    goes out once the input ends (:attr:`StepOut.exports`, for a model bundle).
    """

    def builder(resume: Optional[S]) -> StepLogic:
        return StepLogic(step, init() if resume is None else resume, flatten, count_as, step_id.rsplit(".", 1)[-1],
                         export)

    s = op.stateful_batch("stateful_step", up, builder)
    b = op.branch("split_side", s, _is_main)
    main, exports = b.trues, None
    if export is not None:
        e = op.branch("split_exports", main, _not_exported)
        main, exports = e.trues, op.map("exports", e.falses, _export_record)
    return StepOut(
        main,
        op.flat_map("side_errors", b.falses, _side_errors),
        op.flat_map("side_counts", b.falses, _side_counts),
        exports,
    )


def _not_exported(kv: tuple[str, Any]) -> bool:
    return type(kv[1]) is not Exported


def _export_record(kv: tuple[str, Exported]) -> tuple[str, tuple[str, str, Any]]:
    key, x = kv
    return key, (key, x.kind, x.value)


@operator
def encode_for_kafka(step_id: str, up: KeyedStream[Any]) -> KeyedStream[tuple[bytes, bytes]]:
    """Keyed records to keyed Kafka ``(key, value)`` bytes (sinks.records): :class:`~sinks.kafka.KafkaRecordSink`."""
    return op.map("encode", up, _kafka_pair)


def _kafka_pair(kv: tuple[str, Any]) -> tuple[str, tuple[bytes, bytes]]:
    return kv[0], kafka_record(*kv)


def _csv_blob(batch: list[tuple[str, Any]]) -> list[tuple[str, bytes]]:
    return [("all", csv_bytes([kv[1] for kv in batch]))]


@operator
def write_csv(step_id: str, up: KeyedStream[Any], path: Path, cls: type[msgspec.Struct]) -> None:
    """Write records of type ``cls`` to the CSV file ``path`` (:class:`~sinks.files.CsvSink`).

    They are encoded on the worker that made them (a ``bytes`` per batch):
    encoding is most of what writing a record file costs, and so it is
    spread over the workers, and the one that holds the file only writes.
    """
    blobs: KeyedStream[bytes] = op.flat_map_batch("encode", up, _csv_blob)
    op.output("write", blobs, CsvSink(path, cls))


@operator
def stamp_points(step_id: str, up: KeyedStream[Any]) -> KeyedStream[Any]:
    """Records with the time of their InfluxDB point, distinct within each series.

    See :func:`sinks.influx_points.stamp`. Its state is snapshotted, so a
    resumed run stamps the records it replays as the first life did.
    """
    from sinks.influx_points import StampState, stamp  # influxdb-client loads only when the InfluxDB output is on

    return run_step("stamp", up, stamp, StampState).out


def _last_of_batch(batch: list[tuple[str, MetricsRecord]]) -> list[MetricsRecord]:
    last: dict[tuple[str, str, int], MetricsRecord] = {}
    for _, m in batch:
        last[(m.instrument, m.model, m.horizon)] = m
    return list(last.values())


@operator
def latest_metrics(step_id: str, up: KeyedStream[MetricsRecord]) -> Stream[MetricsRecord]:
    """Of each batch of metrics, the last per instrument, model and horizon (for the summary, which keeps the last).

    It runs on the worker that made them: the others do not cross to the
    worker that holds the summary.
    """
    return op.flat_map_batch("last", up, _last_of_batch)


def _sum_batch(batch: list[Count]) -> list[Count]:
    total: dict[str, int] = {}
    for c in batch:
        total[c.name] = total.get(c.name, 0) + c.n
    return [Count(k, n) for k, n in total.items()]


@operator
def sum_counts(step_id: str, up: Stream[Count]) -> Stream[Count]:
    """Counter increments summed by name over each batch, on the worker that made them (fewer cross workers)."""
    return op.flat_map_batch("sum", up, _sum_batch)


@operator
def values(step_id: str, up: KeyedStream[Any]) -> Stream[Any]:
    """Drop the keys of a keyed stream."""
    return op.map("value", up, lambda kv: kv[1])


@operator
def key_records(step_id: str, up: Stream[Any], key: str = "all") -> KeyedStream[Any]:
    """Key a stream of records for a partitioned sink."""
    return op.map("key", up, lambda x: (getattr(x, "instrument", None) or key, x))

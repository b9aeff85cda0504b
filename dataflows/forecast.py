"""The forecasting dataflow.

    read_ticks (files or Kafka), and where each partition is read, per instrument:
        parse -> check_ticks -> make_bars (its order book) -> compute_features -> join_forecasts -> score_forecasts
                                                                                                -> make_signals -> trade
                 check_ticks -> find_fill_quotes                                                                -> trade
    with TICKLET_CROSS__PAIRS, the steps after compute_features run keyed by instrument (dataflows.cross):
        compute_features -> follow_leaders (each follower's rows with its leaders') -> join_forecasts -> ...
    forecasts, metrics, dead letters -> files in settings.output.dir and/or Kafka
    chosen features (TICKLET_OUTPUT__FEATURES) -> settings.output.dir/features.csv (optional)
    bars, features, forecasts, metrics, health -> InfluxDB (optional)
    counters -> settings.output.dir/counters.json
    the run's manifest (inputs, settings, their hash) -> settings.output.dir/run.json

Run the embedded default (the bundled real sample, no servers)::

    python -m bytewax.run dataflows.forecast

It shows a progress bar on stderr (when stderr is a terminal) and ends with a
summary there: totals, the last metrics and where the outputs are. ``flow``
is built from the environment's settings when Bytewax asks for it, so
importing this module builds nothing.

Swap an operator by editing one line below, or a model by one setting
(``TICKLET_FORECAST__MODELS``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource

from core.config import ConfigError, check_dir, remove_empty_dirs
from core.events import (
    Count,
    EconomicsRecord,
    EquityPoint,
    Fill,
    Forecast,
    ForecastRecord,
    MakerEconomicsRecord,
    MakerFillRecord,
    MetricsRecord,
    Signal,
)
from dataflows import cross, local, ops
from dataflows.api import serve_api
from dataflows.bundle import WarmStartCheck, load_warm_start
from dataflows.run_manifest import MANIFEST, write_manifest
from dataflows.settings import Settings, read_settings
from dataflows.stop import StoppableSource, StopRequest
from sinks.bundle import BundleSink
from sinks.fatal import os_error
from sinks.files import COUNTERS_FILE, FEATURES_FILE, CounterSink, FeatureCsvSink, JsonLinesSink, feature_csv_blobs
from sinks.kafka import KafkaRecordSink, Outage, check_reachable, producer_config, rdkafka_logger
from sinks.records import fit_dead_letter
from sinks.report import ReportSink
from sources.files import InputFormatError, unquoted
from sources.kafka import KafkaTickSource
from sources.replay import ReplaySource

log = logging.getLogger(__name__)

#: The maker books' fills and running economics (TICKLET_MAKER__ENABLED).
MAKER_FILLS_FILE = "maker_fills.csv"
MAKER_ECONOMICS_FILE = "maker_economics.csv"
MAKER_FILES = (MAKER_FILLS_FILE, MAKER_ECONOMICS_FILE)
#: Files the dataflow writes in ``settings.output.dir``.
OUTPUT_FILES = ("forecasts.csv", "metrics.csv", "signals.csv", "trades.csv", "equity.csv", "economics.csv",
                "dead_letters.jsonl", COUNTERS_FILE, FEATURES_FILE, *MAKER_FILES)
def check_output_files(out: Path, name: str, remove: bool = False, manifest: bool = True) -> None:
    """At start, check that each file the run writes in ``out`` is a file or does not exist yet.

    With ``remove``, the previous run's are removed (a fresh run never
    reports a previous run's files); the run manifest too unless
    ``manifest`` is false (the run's own, once :func:`build_flow` wrote it).
    A :class:`ConfigError` naming ``name`` (the option or setting) and the
    file otherwise (exit status 2).
    """
    for f in (*OUTPUT_FILES, *((MANIFEST,) if manifest else ())):
        path = out / f
        try:
            if remove:
                path.unlink(missing_ok=True)
            elif path.exists() and not path.is_file():
                raise ConfigError(f"{name} {out}: {path} is {'a directory' if path.is_dir() else 'not a file'}, "
                                  "where the run writes a file; remove it or choose another directory")
        except OSError as ex:
            raise ConfigError(f"{name} {out}: cannot remove {path}, left by an earlier run ({os_error(ex)}); "
                              "remove it or choose another directory") from None


def priced_for_quotes(settings: Settings) -> Settings:
    """``settings``, with bars priced by the last trade where a mid-quote price would leave them all without one.

    That is a replay of inputs that hold trades but no quotes
    (``bookTicker``) at all (:func:`sources.files.unquoted`), which a
    warning says. Where only some instruments have no quotes, a warning
    names them and nothing changes (with the mid they get no bars).
    """
    if settings.input.source != "replay" or settings.bars.price != "mid":
        return settings
    bare, quoted = unquoted(list(settings.input.paths), settings.input.market)
    if bare and not quoted:
        log.warning("no quotes (bookTicker) in the inputs, only trades (%s): bars are priced by the last trade "
                    "(TICKLET_BARS__PRICE=last)", ", ".join(bare))
        return settings.model_copy(update={"bars": settings.bars.model_copy(update={"price": "last"})})
    if bare:
        log.warning("trades but no quotes (bookTicker) for %s: priced by the mid-quote, they get no bars "
                    "(TICKLET_BARS__PRICE=last prices every bar by the last trade)", ", ".join(bare))
    return settings


def build_flow(settings: Settings, save_models: Optional[Path] = None,
               summary: Optional[list[str]] = None, stop: Optional[StopRequest] = None) -> Dataflow:
    """Wire the dataflow for ``settings`` (and write the run's manifest, ``run.json``, in the output directory).

    With ``save_models``, the final states of the learners and features are
    pickled into that directory when the input ends (a model bundle:
    :mod:`dataflows.bundle`, whose :func:`~dataflows.bundle.save_bundle`
    writes its manifest after the run). With
    ``TICKLET_FORECAST__WARM_START``, they start from a bundle. With
    ``summary``, the end-of-run summary is appended to that list instead of
    written on stderr (:class:`sinks.report.ReportSink`). With ``stop``, the
    input ends when it is requested
    (:class:`dataflows.stop.StoppableSource`).
    """
    out, kafka = settings.output.dir, settings.kafka
    warm = load_warm_start(settings)  # before anything is wired or written: a bad bundle is one line
    if settings.output.influx:  # a server that cannot take the points: one line now, not points lost at the end
        from sinks.influx import unwritable  # influxdb-client loads only when it is used

        why = unwritable(settings.influx)
        if why is not None:
            raise ConfigError(why)
    flow = Dataflow("ticklet_forecast")
    if settings.input.source == "kafka":  # live: what the first bars need is loaded now, not while ticks wait
        _warm_up(settings)

    total_bytes = None  # of the input files, for the progress bar
    source: FixedPartitionedSource
    if settings.input.source == "kafka":
        # A broker outage is waited out up to kafka.outage_timeout_s, then the process exits (status 75).
        reading = Outage(f"reading {kafka.ticks_topic!r}", kafka.outage_timeout_s, exit_process=True)
        source = KafkaTickSource(kafka.brokers, kafka.ticks_topic, tail=kafka.tail, batch_size=kafka.batch_size,
                                 config={"logger": rdkafka_logger(), **kafka.client_config()}, outage=reading)
    else:
        source = ReplaySource(settings.input.paths, settings.input.batch_size, settings.input.market,
                              settings.input.max_line_bytes)
        total_bytes = source.total_bytes
    save, influx, economics = save_models is not None, settings.output.influx, settings.output.economics
    features_csv = _feature_columns(settings)  # features.csv: its columns, none without it
    follow = bool(settings.cross.pairs)  # cross-asset features: the steps after them run keyed (dataflows.cross)
    forecast_steps = [
        local.join_forecasts(settings.forecast, after="compute_features", warm=None if warm is None else warm.join,
                             export=save),
        local.score_forecasts(after="join_forecasts"),
        *([local.make_signals(settings.signals, after="join_forecasts")] if economics else []),
    ]
    fill_quotes = local.find_fill_quotes(settings.execution.latency_ms, settings.bars, after="check_ticks", emit=follow)
    trading = local.trade(settings.execution, settings.bars, after=("make_signals", "find_fill_quotes"))
    quoting = settings.maker.enabled and economics  # resting quotes beside the taker books (operators.maker)
    chunk = settings.input.parse_path() == "chunk"  # the chunk path: the books in compiled code too
    steps = [  # each instrument's steps, where its ticks are read: only their outputs cross workers (dataflows.local)
        local.check_ticks(settings.sanity),  # implausible ticks: dead letters
        local.make_bars(settings.bars, after="check_ticks", emit=influx, book=settings.features.depth, compiled=chunk),
        local.compute_features(settings.features, after="make_bars", warm=None if warm is None else warm.features,
                               export=save, emit=influx or follow or bool(features_csv)),
        *([] if follow else forecast_steps),
        *([fill_quotes] if economics else []),
        *([trading] if economics and not follow else []),
        *([local.rest_quotes(settings.maker, after=("check_ticks", "make_signals"), compiled=chunk)]
          if quoting else []),
    ]
    read = local.TickSource(source if stop is None else StoppableSource(source, stop), settings.input.limits(), steps)
    ticks = op.input("read_ticks", flow, read)
    side = local.side_of("side", ticks)
    errors, side_counts = [side.errors], [side.counts]
    rows = local.outputs_of("features", ticks, "compute_features")
    own_rows = rows  # each instrument's own features (features.csv), without its leaders'
    if not follow:
        issued = local.outputs_of("issued", ticks, "join_forecasts", Forecast)
        scored = local.outputs_of("scored", ticks, "join_forecasts", ForecastRecord)
        metrics = local.outputs_of("metrics", ticks, "score_forecasts")
        if economics:
            decisions = local.outputs_of("decisions", ticks, "make_signals")
            traded = local.outputs_of("traded", ticks, "trade")
    else:  # each follower's rows with its leaders', then the same steps keyed by instrument
        crossed = cross.follow_leaders("follow_leaders", rows, settings.cross)
        rows = crossed.out
        joined = cross.keyed_step("join_forecasts", rows, forecast_steps[0])  # exports its states with a bundle
        issued = op.filter("issued", joined.out, lambda kv: type(kv[1]) is Forecast)
        scored = op.filter("scored", joined.out, lambda kv: type(kv[1]) is ForecastRecord)
        scoring = cross.keyed_step("score_forecasts", scored, forecast_steps[1])
        metrics = scoring.out
        done = [crossed, joined, scoring]
        if economics:
            deciding = cross.keyed_step("make_signals", joined.out, forecast_steps[2])
            decisions = deciding.out
            quotes = local.outputs_of("fill_quotes", ticks, "find_fill_quotes")
            trades = cross.keyed_step("trade", op.merge("merge_trade", decisions, quotes), trading)
            traded = trades.out
            done += [deciding, trades]
        errors += [s.errors for s in done]
        side_counts += [s.counts for s in done]
    if economics:
        fills = op.filter("fills", traded, lambda kv: type(kv[1]) is Fill)
        equity = op.filter("equity", traded, lambda kv: type(kv[1]) is EquityPoint)
        economy = op.filter("economics", traded, lambda kv: type(kv[1]) is EconomicsRecord)
    if quoting:
        maker_fills = local.outputs_of("maker_fills", ticks, "rest_quotes", MakerFillRecord)
        maker_economy = local.outputs_of("maker_economics", ticks, "rest_quotes", MakerEconomicsRecord)
    if save_models is not None:
        exports = local.exports_of("exports", ticks)
        if follow:  # the features' states from where the ticks are read, the learners' from the keyed join
            assert joined.exports is not None
            exports = op.merge("merge_exports", exports, joined.exports)
        op.output("save_models", exports, BundleSink(save_models, withdraw=(out / COUNTERS_FILE,)))
    if warm is not None:  # at the end: a warning if no instrument started from the bundle
        op.output("check_warm_start", scored, WarmStartCheck(warm))
    dead = op.merge("merge_dead_letters", *errors, local.one_reader("one_reader", ticks))
    keyed_dead = ops.key_records("key_dead_letters", dead)

    if settings.output.files:
        ops.write_csv("write_forecasts", scored, out / "forecasts.csv", ForecastRecord)
        ops.write_csv("write_metrics", metrics, out / "metrics.csv", MetricsRecord)
        op.output("write_dead_letters", keyed_dead, JsonLinesSink(out / "dead_letters.jsonl"))
        if features_csv:
            op.output("write_features", op.flat_map_batch("encode_features", own_rows, feature_csv_blobs(features_csv)),
                      FeatureCsvSink(out / FEATURES_FILE, features_csv))
        if economics:
            ops.write_csv("write_signals", decisions, out / "signals.csv", Signal)
            ops.write_csv("write_trades", fills, out / "trades.csv", Fill)
            ops.write_csv("write_equity", equity, out / "equity.csv", EquityPoint)
            ops.write_csv("write_economics", economy, out / "economics.csv", EconomicsRecord)
        if quoting:
            ops.write_csv("write_maker_fills", maker_fills, out / MAKER_FILLS_FILE, MakerFillRecord)
            ops.write_csv("write_maker_economics", maker_economy, out / MAKER_ECONOMICS_FILE, MakerEconomicsRecord)
    if settings.output.kafka:
        producer = producer_config(kafka.brokers, kafka.client_config(), kafka.linger_ms)
        decided = [decisions, fills] if economics else []
        made = [maker_fills, maker_economy] if quoting else []
        published = op.merge("merge_published", issued, scored, metrics, *decided, *made)
        wait_s = kafka.outage_timeout_s
        op.output("publish_forecasts", ops.encode_for_kafka("encode_forecasts", published),
                  KafkaRecordSink(kafka.output_topic, producer, outage_timeout_s=wait_s, exit_process=True))
        op.output("publish_dead_letters", ops.encode_for_kafka("encode_dead_letters", keyed_dead),
                  KafkaRecordSink(kafka.dead_letter_topic, producer, shrink=fit_dead_letter, outage_timeout_s=wait_s,
                                  exit_process=True))

    dead_counts = op.map("count_dead_letters", dead, lambda e: Count("dead_letters", 1))
    counts = ops.sum_counts("sum_counts", op.merge("merge_counts", *side_counts, dead_counts))
    if influx:
        from sinks.influx import InfluxSink  # influxdb-client loads only when it is used

        decided = [decisions, fills, equity] if economics else []
        made = [maker_fills, maker_economy] if quoting else []
        bars = local.outputs_of("bars", ticks, "make_bars")
        records = op.merge("merge_influx", bars, rows, issued, scored, metrics, *decided, *made)
        stamped = ops.values("unkey_influx", ops.stamp_points("stamp_influx", records))
        op.output("write_influx", op.merge("merge_influx_health", stamped, counts, dead),
                  InfluxSink(settings.influx, report=settings.output.summary))  # its result: a line of its own
    op.output("write_counters", ops.key_records("key_counters", counts), CounterSink(out / COUNTERS_FILE))
    if settings.output.summary:
        report = op.merge("merge_report", counts, ops.latest_metrics("latest_metrics", metrics))
        op.output("report", ops.key_records("key_report", report),
                  ReportSink(total_bytes, _destinations(settings), progress=settings.output.progress,
                             hold=summary))
    write_manifest(settings)  # once the flow is wired: a bad input file writes nothing
    return flow


def _warm_up(settings: Settings) -> None:
    """Build an instrument's feature and learner states once and drop them.

    The libraries they load on first use (River and SciPy, torch for the
    CNN-GRU) then load before the first tick is read: on a live run they
    would hold up the first bars by a second or more, and the ticks queued
    behind them. So do the SWT's matrices (built at the first full
    window: the first forecast's bar) and the chunk path's compiled code
    (``TICKLET_INPUT__PATH``: 0.35 to 0.9 s).
    """
    from operators import features, forecast, swt

    features.FeatureState(settings.features)
    forecast.JoinState(settings.forecast)
    cfg = settings.features.swt  # the SWT's matrices, built at its first window (3 to 6 ms), and its thresholding
    swt.denoise_last(np.arange(cfg.window, dtype=float) % 2.0, cfg)
    if settings.input.parse_path() == "chunk":
        from operators import depth, flatbook, maker, sanity
        from sources.columns import scan_ticks

        scan_ticks([b"{}"])  # the compiled code loaded from numba's cache (compiled the first time)
        flatbook.warm()
        sanity.warm()
        depth.warm()
        if settings.maker.enabled:
            maker.warm()


def _feature_columns(settings: Settings) -> tuple[str, ...]:
    """The features of ``features.csv`` (``TICKLET_OUTPUT__FEATURES``), none when the run writes no files.

    A name that is no feature of the rows (:func:`operators.features.feature_names`) is a
    :class:`ConfigError`: its column would never hold a value.
    """
    from operators.features import feature_names

    if not settings.output.files:
        return ()
    known = feature_names(settings.features)
    unknown = [n for n in settings.output.features if n not in known]
    if unknown:
        raise ConfigError(f"TICKLET_OUTPUT__FEATURES: {', '.join(map(repr, unknown))} "
                          f"{'is no feature' if len(unknown) == 1 else 'are no features'} of the rows; "
                          f"they have {', '.join(known)}")
    return settings.output.features


def _destinations(settings: Settings) -> dict[str, str]:
    """Where the run's outputs go, for the end-of-run summary.

    InfluxDB reports on its own line once its last points are confirmed
    (:class:`sinks.influx.InfluxSink`).
    """
    o, k = settings.output, settings.kafka
    economics = ("signals.csv", "trades.csv", "equity.csv", "economics.csv")
    maker = o.economics and settings.maker.enabled
    out = {name.split(".")[0]: str((o.dir / name).resolve()) for name in OUTPUT_FILES
           if (o.files and (o.economics or name not in economics) and (o.features or name != FEATURES_FILE)
               and (maker or name not in MAKER_FILES))
           or name == COUNTERS_FILE}
    out["run"] = str((o.dir / MANIFEST).resolve())  # the manifest: every run writes it (build_flow)
    if o.kafka:
        out["kafka"] = f"{k.output_topic}, {k.dead_letter_topic} on {k.bootstrap_servers}"
    return out


def _under_bytewax_run() -> bool:
    """Whether this process runs ``python -m bytewax.run``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name == "bytewax.run"


def _recovery_args() -> Optional[tuple[Path, bool]]:
    """``(-r directory, whether it holds every partition)`` of this process's ``bytewax.run`` command.

    Only if it runs ``python -m bytewax.run`` with recovery (a cluster,
    ``-a``, spreads the partitions over its processes).
    """
    if not _under_bytewax_run():
        return None
    from bytewax.run import _parse_args  # what bytewax.run itself parsed

    args = _parse_args()
    return None if args.recovery_directory is None else (Path(args.recovery_directory), args.addresses is None)


#: The step (its id's end) whose state keys are the input partitions whose instruments' learners a store resumes.
_LEARNERS = ".read_ticks"  # each instrument's learners are in the state of the input partition that reads it


def check_recovery(settings: Settings, flow: Dataflow, recovery: Optional[tuple[Path, bool]] = None) -> None:
    """Check, before Bytewax resumes from its recovery store (``-r``), that it can use it.

    ``recovery``: the directory and whether it holds every partition, by
    default from the command line. A store it cannot use is a
    :class:`ConfigError` naming the file and what to do
    (:func:`dataflows.recovery.check_store`); a store with no snapshot yet
    is logged as a fresh start, with, when the run publishes to Kafka, how
    many records the output topic already holds. With a model bundle
    (``TICKLET_FORECAST__WARM_START``), a store that holds learners' state
    says that it wins over the bundle for those instruments.
    """
    from dataflows.recovery import check_store, fresh_start_line, topic_records

    recovery = recovery or _recovery_args()
    if recovery is None:
        return
    db_dir, all_parts = recovery
    state = check_store(db_dir, flow, all_parts)
    if settings.forecast.warm_start is not None and not state.fresh:
        resumed = sorted(set().union(*(keys for step, keys in state.keys.items() if step.endswith(_LEARNERS))))
        if resumed:
            shown = ", ".join(resumed[:5]) + (f" and {len(resumed) - 5} more" if len(resumed) > 5 else "")
            log.warning("recovery store %s holds the learners of the instruments of %s: they resume from its "
                        "snapshot, not from the bundle %s (TICKLET_FORECAST__WARM_START), which starts only the "
                        "instruments the store has no state of", db_dir, shown, settings.forecast.warm_start)
    if state.fresh:
        k = settings.kafka
        published = None
        if settings.output.kafka:
            published = (k.output_topic, topic_records({"bootstrap.servers": k.bootstrap_servers,
                                                        **k.client_config()}, k.output_topic, k.connect_timeout_s))
        log.warning("%s", fresh_start_line(db_dir, published))


def stopped_line(settings: Settings, recovery: Optional[tuple[Path, bool]]) -> str:
    """The last line of a run stopped on request (Ctrl-C): where its outputs and its recovery store stand.

    See :mod:`dataflows.stop`.

    >>> print(stopped_line(Settings(), None))  # doctest: +NORMALIZE_WHITESPACE
    stopped on request (SIGINT): the ticks read until then are processed and their outputs written (the files
    in out); with no recovery store (-r), the same command starts again from the beginning of the input
    """
    o, k = settings.output, settings.kafka
    where = [f"the files in {o.dir}" if o.files else f"{COUNTERS_FILE} in {o.dir}"]
    if o.kafka:
        where.append(f"the topic {k.output_topic!r}")
    if o.influx:
        where.append(f"InfluxDB's bucket {settings.influx.bucket!r}")
    line = (f"stopped on request (SIGINT): the ticks read until then are processed and their outputs written "
            f"({', '.join(where)})")
    if recovery is None:
        return line + "; with no recovery store (-r), the same command starts again from the beginning of the input"
    return line + (f"; the recovery store {recovery[0]} holds its last snapshot, and the same command goes on from "
                   "there")


def __getattr__(name: str) -> Dataflow:
    """``flow``: the dataflow of the environment's settings, for ``python -m bytewax.run dataflows.forecast``.

    A bad setting, input file or output directory, Kafka brokers that do not
    answer at start (with a Kafka input or output), an API port that is
    taken or a recovery store (``-r``) that cannot be used
    (:func:`check_recovery`) print one plain line on stderr (naming the
    setting or file) and exit with status 2. Under ``bytewax.run``, Ctrl-C
    ends the input and the run, with :func:`stopped_line` and exit status
    130 (:mod:`dataflows.stop`).
    """
    if name != "flow":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    made: list[Path] = []
    try:
        settings = read_settings()
        made = check_dir(settings.output.dir, "TICKLET_OUTPUT__DIR")
        check_output_files(settings.output.dir, "TICKLET_OUTPUT__DIR")
        if settings.input.source == "kafka" or settings.output.kafka:
            check_reachable(settings.kafka)
        settings = priced_for_quotes(settings)
        stop = StopRequest() if _under_bytewax_run() else None
        flow = build_flow(settings, stop=stop)
        check_recovery(settings, flow)
        serve_api(settings.api, flow)
        if stop is not None:
            recovery = _recovery_args()
            stop.on_sigint(lambda: stopped_line(settings, recovery))
        return flow
    except (ConfigError, InputFormatError) as ex:
        if made:  # the output directory is this run's: the manifest written in it goes too, then the directories
            (made[0] / MANIFEST).unlink(missing_ok=True)
        remove_empty_dirs(made)  # a refused run leaves no directory it made behind
        sys.stderr.write(f"ticklet: {ex}\n")
        raise SystemExit(2) from None
    except AttributeError as ex:  # not "no attribute 'flow'", which is what Bytewax would make of it
        raise RuntimeError(f"building the dataflow failed: {ex}") from ex

"""The forecasting dataflow.

    read_ticks -> parse_ticks -> make_bars -> compute_features
        -> join_forecasts -> score_forecasts
    forecasts, metrics, dead letters and counters -> files in settings.output.dir

Run the embedded default (the bundled real sample, no servers)::

    python -m bytewax.run dataflows.forecast

Swap an operator by editing one line below, or a model by one setting
(``TICKLET_FORECAST__MODELS``).
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from sinks.files import CounterSink, CsvSink, JsonLinesSink
from sources.replay import ReplaySource
from ticklet import ops
from ticklet.events import Count, ForecastRecord, MetricsRecord
from ticklet.settings import Settings


#: Files the dataflow writes in ``settings.output.dir``.
OUTPUT_FILES = ("forecasts.csv", "metrics.csv", "dead_letters.jsonl", "counters.json")


def build_flow(settings: Settings) -> Dataflow:
    """Wire the dataflow for ``settings``."""
    out = settings.output.dir
    flow = Dataflow("ticklet_forecast")

    raw = op.input("read_ticks", flow, ReplaySource(
        settings.input.paths, settings.input.batch_size, settings.input.market))
    ticks = ops.parse_ticks("parse_ticks", raw)
    bars = ops.make_bars("make_bars", ticks.out, settings.bars)
    features = ops.compute_features("compute_features", bars.out, settings.features)
    forecasts = ops.join_forecasts("join_forecasts", features, settings.forecast)
    metrics = ops.score_forecasts("score_forecasts", forecasts.scored)

    op.output("write_forecasts", forecasts.scored, CsvSink(out / "forecasts.csv", ForecastRecord))
    op.output("write_metrics", metrics, CsvSink(out / "metrics.csv", MetricsRecord))

    dead = op.merge("merge_dead_letters", ticks.errors, bars.errors, forecasts.errors)
    op.output("write_dead_letters", ops.key_records("key_dead_letters", dead),
              JsonLinesSink(out / "dead_letters.jsonl"))
    dead_counts = op.map("count_dead_letters", dead, lambda e: Count("dead_letters", 1))
    counts = op.merge("merge_counts", ticks.counts, bars.counts, forecasts.counts, dead_counts)
    op.output("write_counters", ops.key_records("key_counters", counts), CounterSink(out / "counters.json"))
    return flow


flow = build_flow(Settings())

"""ticklet's Prometheus metrics (served with Bytewax's own).

Run a dataflow with ``BYTEWAX_DATAFLOW_API_ENABLED=true`` and Bytewax serves
``http://<host>:3030/metrics``: its per-step metrics (``bytewax_*``) and the
Python registry, which holds these:

- ``ticklet_events_total{name}``: every pipeline counter (``ticks``, ``bars``,
  ``forecasts``, ``dead_letters``, ``skipped_<reason>``, ...), the same totals
  as ``counters.json``;
- ``ticklet_stage_seconds{stage}``: compute time of one batch in each stage
  (parse, bars, features, join, metrics), a histogram.

``ticklet collect`` serves ``ticklet_collector_events_total{name}`` (messages,
gaps, reconnects, resyncs...) on ``TICKLET_COLLECT__METRICS_PORT``.

These are process-wide, as Prometheus metrics are; they are only touched by
the Bytewax wrappers and sinks, never by the pure operators.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["COLLECTOR", "EVENTS", "STAGE_SECONDS"]

EVENTS = Counter("ticklet_events", "Pipeline counters (ticks, bars, forecasts, dead letters, skips...)", ["name"])

COLLECTOR = Counter("ticklet_collector_events", "Collector counters (messages, gaps, reconnects, resyncs...)", ["name"])

STAGE_SECONDS = Histogram(
    "ticklet_stage_seconds", "Compute time of one batch in a pipeline stage", ["stage"],
    buckets=(1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0),
)

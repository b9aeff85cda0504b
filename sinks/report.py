"""The run report on stderr: a progress bar while the dataflow runs, a short
summary when it ends.

:class:`ReportSink` is a single-partition sink fed with the pipeline's
:class:`~ticklet.events.Count` increments and its
:class:`~ticklet.events.MetricsRecord` s. While the run goes on it draws a
tqdm bar over the input bytes read (``input_bytes`` counts; over ticks when
the total is unknown, as with Kafka), only when stderr is a terminal. When
the run ends it prints the totals, the last metrics per instrument, model and
horizon, and where every output went. Its recovery state is the totals and
the last metrics (bounded by instruments x models x horizons), so a resumed
run reports the whole run.

The pure parts, shared with ``ticklet backtest --json``:

>>> from ticklet.events import MetricsRecord
>>> m = MetricsRecord("BTCUSDT", "logistic", 1, 0, 938, 5e-5, 9.6e-5, 0.028, 0.73, 323, 236)
>>> entry = metrics_entry(m)
>>> entry["hits"], round(entry["hit_rate_p_value"], 12) < 1e-12
(236, True)
>>> syms = instruments_summary([m])
>>> print(format_summary({"ticks": 10, "bars": 2, "forecasts": 938, "dead_letters": 0}, syms,
...                      {"metrics": "out/metrics.csv"}))  # doctest: +NORMALIZE_WHITESPACE
ticklet: 10 ticks, 2 bars, 938 forecasts scored, 0 dead letters
instrument  model     h    n  hit rate  p(hit>0.5)   skill
BTCUSDT     logistic  1  938    0.7300     2.5e-17  0.0280
outputs:
  metrics  out/metrics.csv
"""

from __future__ import annotations

import csv
import logging
import math
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import msgspec
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from ticklet.events import Count, MetricsRecord

__all__ = ["ReportSink", "format_summary", "instruments_summary", "metrics_entry", "read_last_metrics"]

log = logging.getLogger(__name__)

_Key = tuple[str, str, int]


def metrics_entry(m: MetricsRecord) -> dict[str, Any]:
    """One model's last metrics at one horizon, as reported (the one-sided
    binomial p-value of the hit rate against a coin included)."""
    p = None
    if m.hit_rate is not None and m.n_directional:
        from scipy.stats import binomtest  # loaded once, at the end of a run

        p = float(binomtest(m.hits, m.n_directional, 0.5, alternative="greater").pvalue)
    return {
        "n": m.n, "mae": m.mae, "rmse": m.rmse, "skill": m.skill, "hit_rate": m.hit_rate,
        "n_directional": m.n_directional, "hits": m.hits, "hit_rate_p_value": p,
        "coverage": m.coverage, "n_interval": m.n_interval,
    }


def instruments_summary(last: Iterable[MetricsRecord]) -> dict[str, Any]:
    """``{instrument: {"models": {model: {horizon: entry}}}}``, sorted."""
    out: dict[str, Any] = {}
    for m in sorted(last, key=lambda r: (r.instrument, r.model, r.horizon)):
        models = out.setdefault(m.instrument, {"models": {}})["models"]
        models.setdefault(m.model, {})[str(m.horizon)] = metrics_entry(m)
    return out


def read_last_metrics(path: Path) -> list[MetricsRecord]:
    """The last row of every (instrument, model, horizon) of a metrics CSV
    (none when the file does not exist: a sink's file appears with its first
    record)."""
    last: dict[_Key, dict[str, Any]] = {}
    if path.exists():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                last[(row["instrument"], row["model"], int(row["horizon"]))] = row
    return [msgspec.convert({k: (v if v != "" else None) for k, v in row.items()}, MetricsRecord, strict=False)
            for row in last.values()]


def _fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None or math.isnan(v) else format(v, spec)


def format_summary(counters: dict[str, int], instruments: dict[str, Any], outputs: dict[str, str],
                   wall_s: Optional[float] = None) -> str:
    """The end-of-run summary as text: totals, a table of the last metrics,
    and where the outputs are."""
    c = counters
    head = (f"ticklet: {c.get('ticks', 0):,} ticks, {c.get('bars', 0):,} bars, "
            f"{c.get('forecasts', 0):,} forecasts scored, {c.get('dead_letters', 0):,} dead letters")
    if wall_s is not None:
        head += f" in {wall_s:.1f} s"
    rows = [("instrument", "model", "h", "n", "hit rate", "p(hit>0.5)", "skill")]
    for sym, s in instruments.items():
        for model, hs in s["models"].items():
            for h, m in hs.items():
                rows.append((sym, model, h, str(m["n"]), _fmt(m["hit_rate"], ".4f"),
                             _fmt(m["hit_rate_p_value"], ".1e"), _fmt(m["skill"], ".4f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head]
    if len(rows) > 1:
        for r in rows:
            cells = (v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
            lines.append("  ".join(cells).rstrip())
    else:
        lines.append("no forecast was scored (too few bars for the horizons?)")
    if outputs:
        lines.append("outputs:")
        w = max(len(k) for k in outputs)
        lines.extend(f"  {k.ljust(w)}  {v}" for k, v in outputs.items())
    return "\n".join(lines)


_State = tuple[dict[str, int], dict[_Key, MetricsRecord]]

#: output name -> the counter that says whether anything was written there
_WRITTEN_IF = {"forecasts": "forecasts", "metrics": "forecasts", "dead_letters": "dead_letters"}


class _ReportPartition(StatefulSinkPartition[Any, _State]):
    def __init__(self, resume: Optional[_State], total_bytes: Optional[int], outputs: dict[str, str],
                 progress: bool):
        self._totals, self._last = (dict(resume[0]), dict(resume[1])) if resume else ({}, {})
        self._outputs = outputs
        self._t0 = time.perf_counter()  # display only: the run's wall time in the summary
        self._bar = None
        if progress and sys.stderr.isatty():
            from tqdm import tqdm

            self._by_bytes = bool(total_bytes)
            self._bar = tqdm(total=total_bytes or None, unit="B" if self._by_bytes else " ticks",
                             unit_scale=True, file=sys.stderr, desc="ticklet", dynamic_ncols=True)

    def write_batch(self, values: list[Any]) -> None:
        t, last = self._totals, self._last
        for v in values:
            if type(v) is Count:
                t[v.name] = t.get(v.name, 0) + v.n
            else:
                last[(v.instrument, v.model, v.horizon)] = v
        bar = self._bar
        if bar is not None:
            bar.set_postfix(ticks=f"{t.get('ticks', 0):,}", forecasts=f"{t.get('forecasts', 0):,}", refresh=False)
            done = t.get("input_bytes" if self._by_bytes else "ticks", 0)
            if done > bar.n:
                bar.update(done - bar.n)

    def snapshot(self) -> _State:
        return dict(self._totals), dict(self._last)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        t = self._totals
        outputs = {k: f"{v} (nothing to write)" if k in _WRITTEN_IF and not t.get(_WRITTEN_IF[k]) else v
                   for k, v in self._outputs.items()}
        text = format_summary(t, instruments_summary(self._last.values()), outputs, time.perf_counter() - self._t0)
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class ReportSink(FixedPartitionedSink[Any, _State]):
    """Progress on stderr while the run goes on, the summary when it ends.

    Parameters
    ----------
    total_bytes
        Size of the input files, for the progress bar; None (Kafka) counts ticks.
    outputs
        What went where, e.g. ``{"forecasts": "/abs/out/forecasts.csv"}``,
        listed at the end.
    progress
        Draw the bar (only ever when stderr is a terminal).
    """

    def __init__(self, total_bytes: Optional[int], outputs: dict[str, str], progress: bool = True):
        self._total = total_bytes
        self._outputs = dict(outputs)
        self._progress = progress

    def list_parts(self) -> list[str]:
        return ["report"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[_State]) -> _ReportPartition:
        return _ReportPartition(resume_state, self._total, self._outputs, self._progress)

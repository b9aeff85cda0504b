"""The run report on stderr: a progress bar while the dataflow runs, the summary (:mod:`sinks.summary`) when it ends.

:class:`ReportSink` is a single-partition sink fed with the pipeline's
:class:`~core.events.Count` increments and its
:class:`~core.events.MetricsRecord` s. While the run goes on it draws a
tqdm bar over the input bytes read (``input_bytes`` counts; over ticks when
the total is unknown, as with Kafka), only when stderr is a terminal. When
the run ends it prints the totals, the last metrics per instrument, model and
horizon, and where every output went (or hands the text over, for a
backtest that prints it only once its model bundle is saved). Its recovery
state is the totals and
the last metrics (bounded by instruments x models x horizons), so a resumed
run reports the whole run.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from core.events import Count, EconomicsRecord, MakerEconomicsRecord, MetricsRecord
from sinks.summary import R, economics_summary, format_summary, instruments_summary, maker_summary, record_from_row

__all__ = ["ReportSink", "read_last", "summarize"]

_Key = tuple[str, str, int]


def read_last(path: Path, cls: type[R]) -> list[R]:
    """The last row of every (instrument, model, horizon) of a record CSV.

    Empty when the file does not exist: a sink's file appears with its first
    record. A row with fewer or more cells than the header (the torn last
    line of a killed run) is not a record. The records' files, whose first
    three columns are the key and which have no quoted cell (the writer
    quotes a cell with a comma, a quote or a line break only), are split at
    their line breaks and each line keyed by its first three cells, in C
    loops; only each key's last row is then read by :mod:`csv`. Others are
    read by :mod:`csv` whole.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    if b'"' in data or not lines[0].startswith(b"instrument,model,horizon,"):
        return _read_last_csv(data, cls)
    head = lines[0].rstrip(b"\r").decode().split(",")
    del lines[0]
    if lines and not lines[-1]:
        lines.pop()
    third = [ln.find(b",", ln.find(b",", ln.find(b",") + 1) + 1) for ln in lines]
    last = dict(zip([ln[:c] for ln, c in zip(lines, third, strict=True)], lines, strict=True))
    if min(third, default=0) < 0 or any(ln.count(b",") != len(head) - 1 for ln in last.values()):
        return _read_last_csv(data, cls)  # a torn or odd line: csv's rows, and their lengths, decide
    rows = csv.reader(ln.rstrip(b"\r").decode() for ln in last.values())
    return [record_from_row(dict(zip(head, row, strict=True)), cls) for row in rows]


def _read_last_csv(data: bytes, cls: type[R]) -> list[R]:
    """:func:`read_last` of a file with quoted cells, read by :mod:`csv`."""
    last: dict[_Key, list[str]] = {}
    rows = csv.reader(io.StringIO(data.decode(), newline=""))
    head = next(rows, [])
    if head:
        i, m, h = head.index("instrument"), head.index("model"), head.index("horizon")
        for row in rows:
            if len(row) == len(head):  # (a torn last line of a killed run is not a record)
                last[(row[i], row[m], int(row[h]))] = row
    return [record_from_row(dict(zip(head, row, strict=True)), cls) for row in last.values()]


_State = tuple[dict[str, int], dict[_Key, MetricsRecord]]

#: output name -> the counter that says whether anything was written there
_WRITTEN_IF = {"forecasts": "forecasts", "metrics": "forecasts", "dead_letters": "dead_letters"}


class _ReportPartition(StatefulSinkPartition[Any, _State]):
    def __init__(self, resume: Optional[_State], total_bytes: Optional[int], outputs: dict[str, str],
                 progress: bool, hold: Optional[list[str]]):
        self._totals, self._last = (dict(resume[0]), dict(resume[1])) if resume else ({}, {})
        self._outputs = outputs
        self._hold = hold
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
        if self._hold is not None:
            self._hold.append(text + "\n")
            return
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
    hold
        Append the summary's text to this list instead of writing it on
        stderr: ``ticklet backtest --save-models`` writes it once the bundle
        is saved, so that a bundle that cannot be saved stops the command
        with one line and no summary (:func:`dataflows.bundle.save_bundle`).
    """

    def __init__(self, total_bytes: Optional[int], outputs: dict[str, str], progress: bool = True,
                 hold: Optional[list[str]] = None):
        self._total = total_bytes
        self._outputs = dict(outputs)
        self._progress = progress
        self._hold = hold

    def list_parts(self) -> list[str]:
        """The one partition, ``report``.

        >>> ReportSink(None, {}).list_parts()
        ['report']
        """
        return ["report"]

    def part_fn(self, item_key: str) -> int:
        """Route every item to the one partition."""
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[_State]) -> _ReportPartition:
        """The partition that counts the items and draws the bar, resumed from ``resume_state``."""
        return _ReportPartition(resume_state, self._total, self._outputs, self._progress, self._hold)


def summarize(out_dir: Path, wall_s: Optional[float] = None) -> dict[str, Any]:
    """Build the backtest summary from a finished run's output files."""
    cpath = out_dir / "counters.json"
    counters = json.loads(cpath.read_text()) if cpath.exists() else {}
    ticks = counters.get("ticks", 0)
    taker = read_last(out_dir / "economics.csv", EconomicsRecord)
    return {
        "ticks": ticks,
        "bars": counters.get("bars", 0),
        "forecasts": counters.get("forecasts", 0),
        "errors": counters.get("dead_letters", 0),
        "wall_s": None if wall_s is None else round(wall_s, 4),
        "ticks_per_s": round(ticks / wall_s, 1) if wall_s else None,
        "counters": counters,
        "instruments": instruments_summary(read_last(out_dir / "metrics.csv", MetricsRecord)),
        "economics": economics_summary(taker),
        "maker": maker_summary(read_last(out_dir / "maker_economics.csv", MakerEconomicsRecord), taker),
    }

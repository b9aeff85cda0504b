"""Settings of the dataflow's outputs (``TICKLET_OUTPUT__*``): the sinks a run wires and its directory.

Which of the sinks a run wires (files, Kafka, InfluxDB, the summary, the
simulated books) and the directory of its files, apart from the sinks' code
so that reading the settings imports none of their clients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["FEATURE_COLUMNS", "OutputConfig"]

#: The features of ``features.csv`` with ``TICKLET_OUTPUT__FEATURES=true``: depth imbalance, order flow and the
#: cost of walking the book.
FEATURE_COLUMNS = ("depth_imb_1", "depth_imb_5", "ofi", "ofi_l1", "ofi_int", "walk_buy", "walk_sell")


class OutputConfig(BaseModel):
    """Where results go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dir: Path = Field(Path("out"),
        description="Directory of forecasts.csv, metrics.csv, dead_letters.jsonl and counters.json.")
    files: bool = Field(True,
        description="Write forecasts, metrics and dead letters to files in dir (counters.json is always written).")
    kafka: bool = Field(False,
        description="Publish forecasts and metrics to the output topic and dead letters to the dead-letter topic.")
    influx: bool = Field(False,
        description="Write forecasts, scored forecasts, metrics, bars, features and health to InfluxDB.")
    summary: bool = Field(True, description="Print a summary on stderr when the run ends: totals, the last metrics "
                          "per instrument, model and horizon, and where the outputs are.")
    economics: bool = Field(True, description="Decide on every forecast and trade the decisions in simulated "
                            "books: signals.csv, trades.csv, equity.csv, economics.csv.")
    progress: bool = Field(True, description="Show a progress bar on stderr while the run goes on (only ever when "
                           "stderr is a terminal, and with summary on).")
    features: tuple[str, ...] = Field((), description="Features written to features.csv in dir, a row per "
        "instrument and bar once its features are ready (scaled, as models see them; an empty cell where the row "
        "lacks one, as a depth feature while the book is not ready): a list of names, or true for "
        f"{', '.join(FEATURE_COLUMNS)}; empty (false): no features.csv.")

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, v: Any) -> Any:
        """``true``: :data:`FEATURE_COLUMNS`; ``false``: none."""
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            v = v.strip().lower() == "true"
        if isinstance(v, bool):
            return FEATURE_COLUMNS if v else ()
        return v

    @field_validator("features")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v) or not all(v):
            raise ValueError("features must be distinct, non-empty names")
        return v

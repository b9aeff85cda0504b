"""Settings of the dataflow's outputs (``TICKLET_OUTPUT__*``): the sinks a run wires and its directory.

Which of the sinks a run wires (files, Kafka, InfluxDB, the summary, the
simulated books) and the directory of its files, apart from the sinks' code
so that reading the settings imports none of their clients.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["OutputConfig"]


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

"""Settings of the input connector (``TICKLET_INPUT__*``): files or the ticks topic, and the parser's limits.

Recordings and archives replayed from files (:mod:`sources.replay`) or the
ticks topic (:mod:`sources.kafka`), and what the parser admits
(:class:`sources.binance.ParseLimits`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sources.binance import ParseLimits

__all__ = ["SAMPLE_DIR", "InputConfig"]

#: The bundled real sample (see data/sample/NOTICE.md).
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample"


class InputConfig(BaseModel):
    """Where ticks come from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["replay", "kafka"] = Field(
        "replay", description="Input connector: 'replay' reads recordings and archives from files; "
        "'kafka' consumes the ticks topic (TICKLET_KAFKA__TICKS_TOPIC).")
    paths: list[str] = Field(default_factory=lambda: [str(SAMPLE_DIR)],
                             description="Files or directories to replay; defaults to the bundled real sample.")

    @field_validator("paths")
    @classmethod
    def _some_paths(cls, v: list[str]) -> list[str]:
        if not v or not all(p.strip() for p in v):
            raise ValueError("a JSON list of one or more files or directories is needed")
        return v
    market: Optional[Literal["spot", "usdm", "coinm"]] = Field(
        None,
            description="Force the market of every input (spot, usdm: USD-M futures, coinm: COIN-M futures); by "
            "default it is read from the messages (fields only futures messages carry; a COIN-M contract's symbol), "
            "else from the path (usdm/um/futures).")
    batch_size: int = Field(2048, ge=1, description="Records per chunk read from a file.")
    instruments: Optional[list[str]] = Field(
        None, description="Allow-list of instruments (e.g. [\"BTCUSDT\", \"BTCUSDT-PERP\"]): ticks of any other "
        "are dead-lettered. Unset: every instrument with a valid symbol, up to max_instruments.")
    max_instruments: int = Field(
        1000, ge=1, description="Most instruments admitted per input partition (a replay stream or a Kafka "
        "partition), in order of first appearance; ticks of any further one are dead-lettered and counted "
        "(instruments_refused).")
    max_line_bytes: int = Field(
        1 << 20, ge=64, description="Longest input line (recording) or message (Kafka) in bytes; a longer one is "
        "dead-lettered with its first 1 KiB and its size, and is never held whole in memory.")

    path: Literal["chunk", "message"] = Field(
        "message", description="How recording lines and Kafka ticks are parsed: 'message', one by one (the reference, "
        "and today as fast); 'chunk', each chunk or Kafka batch by a compiled scanner first (numba; about 0.45 s to "
        "load), which decodes the spot and USD-M best bid/ask and trade messages into columns and leaves the rest to "
        "the per-line parser. The outputs are the same.")

    def limits(self) -> ParseLimits:
        """What the parser admits, and how it parses, for :func:`dataflows.ops.parse_ticks`."""
        allowed = None if self.instruments is None else frozenset(self.instruments)
        return ParseLimits(allowed, self.max_instruments, self.max_line_bytes, self.path)

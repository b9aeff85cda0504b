"""Settings of the input connector (``TICKLET_INPUT__*``): files or the ticks topic, and the parser's limits.

Recordings and archives replayed from files (:mod:`sources.replay`) or the
ticks topic (:mod:`sources.kafka`), and what the parser admits
(:class:`sources.binance.ParseLimits`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sources.binance import ParseLimits
from sources.files import discover

__all__ = ["AUTO_CHUNK_LINES", "SAMPLE_DIR", "InputConfig", "estimated_lines"]

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

    path: Literal["auto", "chunk", "message"] = Field(
        "auto", description="How recording lines and Kafka ticks are parsed and books kept: 'message', one by one "
        "in Python (the reference); 'chunk', each chunk or Kafka batch by a compiled scanner first, which decodes "
        "the spot and USD-M best bid/ask, trade and depth messages into arrays, with the sanity checks, the order "
        "books and the bars in compiled code (numba: 0.35 to 0.9 s to load, then 55 to 70% faster); 'auto', the "
        "chunk path for Kafka and for replays of about 150,000 lines or more (estimated from the files' sizes), "
        "the per-message path for less. The outputs are the same.")

    def parse_path(self) -> Literal["chunk", "message"]:
        """The path ``path`` takes for these inputs (``auto`` resolved); the same for the same files.

        >>> InputConfig(paths=["data/sample"]).parse_path()     # the bundled sample: 99,574 lines
        'message'
        >>> InputConfig(source="kafka").parse_path(), InputConfig(path="chunk").parse_path()
        ('chunk', 'chunk')
        """
        if self.path != "auto":
            return self.path
        if self.source == "kafka":
            return "chunk"
        return "chunk" if estimated_lines(self.paths) >= AUTO_CHUNK_LINES else "message"

    def limits(self) -> ParseLimits:
        """What the parser admits, and how it parses, for :func:`dataflows.ops.parse_ticks`."""
        allowed = None if self.instruments is None else frozenset(self.instruments)
        return ParseLimits(allowed, self.max_instruments, self.max_line_bytes, self.parse_path())


#: ``auto`` takes the chunk path from about this many input lines: where its faster parsing, books and bars
#: (about 5 µs a line, ``benchmarks/throughput.py``) outweigh loading its compiled code (0.35 to 0.9 s as the
#: machine runs; ``ticklet backtest`` of 73,765 lines took as long on either path, 2026-12-07).
AUTO_CHUNK_LINES = 150_000


def estimated_lines(paths: Sequence[str]) -> int:
    """About how many lines the files under ``paths`` hold, from their sizes.

    About 35 bytes a line compressed (``.gz``, ``.zip``), 250 plain
    (Binance's messages as recorded; the recordings here take 27 to 43).

    >>> 50_000 < estimated_lines(["data/sample"]) < 150_000      # 99,574 lines
    True
    """
    total = 0.0
    for p in discover(paths):
        try:
            size = os.path.getsize(p)
        except OSError:  # gone or unreadable: the reader says so
            continue
        total += size / (35 if p.endswith((".gz", ".zip")) else 250)
    return int(total)

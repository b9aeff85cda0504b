"""Helpers for the tests that run the dataflow as a user does, in a
subprocess, on files: the commands, their environment, and the check that a
failed run said one line and nothing else."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
#: ``python -m bytewax.run dataflows.forecast`` (add ``-r DIR -s 1 -b 0`` for recovery).
FLOW = [sys.executable, "-m", "bytewax.run", "dataflows.forecast"]


def ticklet() -> list[str]:
    """The ``ticklet`` command of this environment."""
    local = BIN / "ticklet"
    return [str(local)] if local.exists() else [sys.executable, "-m", "ticklet.cli"]


def file_env(out: Path, *inputs: Path, **extra: str) -> dict[str, str]:
    """The environment of a run writing to ``out`` (reading ``inputs``, by
    default the bundled sample), with this environment's binaries first on
    PATH and no stray ``TICKLET_*`` variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env.update({"TICKLET_OUTPUT__DIR": str(out), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra})
    if inputs:
        env["TICKLET_INPUT__PATHS"] = json.dumps([str(p) for p in inputs])
    return env


def one_line(stderr: str) -> str:
    """The run's own line (``ticklet: ...``), checked to be the only one on
    stderr, with no panic, traceback or summary around it."""
    assert "panicked" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert "outputs:" not in stderr and "forecasts scored" not in stderr, stderr[-3000:]  # no summary
    lines = [ln for ln in stderr.splitlines() if ln.startswith("ticklet: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]

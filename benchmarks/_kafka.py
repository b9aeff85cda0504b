"""A real Kafka broker for the benchmarks: ``$KAFKA_BOOTSTRAP_SERVERS`` or a
single-node KRaft broker started with ``scripts/kafka.sh`` for the run."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def broker() -> Iterator[str]:
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    with tempfile.TemporaryDirectory() as run_dir:
        env = {**os.environ, "KAFKA_RUN_DIR": run_dir}
        script = str(ROOT / "scripts" / "kafka.sh")
        out = subprocess.run(["bash", script, "start"], env=env, check=True, capture_output=True, text=True)
        try:
            yield out.stdout.strip().splitlines()[-1]
        finally:
            subprocess.run(["bash", script, "stop"], env=env, capture_output=True)

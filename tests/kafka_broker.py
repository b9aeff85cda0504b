"""A real Apache Kafka broker for the tests and the benchmarks.

The one place that starts and stops ``scripts/kafka.sh`` from Python: the
``kafka_bootstrap`` fixture (``tests/conftest.py``) and the Kafka benchmarks
(which put ``tests/`` on ``sys.path``, as they do for the other test helpers)
both use :func:`kafka_broker`. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

__all__ = ["BrokerStartError", "kafka_broker"]

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "kafka.sh"


class BrokerStartError(RuntimeError):
    """``scripts/kafka.sh start`` failed; the message ends with its output."""


@contextlib.contextmanager
def kafka_broker(run_dir: Optional[Path] = None, start_timeout_s: float = 600.0,
                 given: Optional[str] = None) -> Iterator[str]:
    """Yield the bootstrap address of a running broker.

    ``$KAFKA_BOOTSTRAP_SERVERS`` when it is set (nothing is started), else a
    single-node KRaft broker started with ``scripts/kafka.sh start`` and
    stopped on exit.

    Parameters
    ----------
    run_dir
        The broker's ``KAFKA_RUN_DIR`` (configuration, data, log); a
        temporary directory, removed on exit, when None.
    start_timeout_s
        Longest wait for the broker to start.
    given
        The address of a broker already running (default
        ``$KAFKA_BOOTSTRAP_SERVERS``): yielded as it is, nothing is started.

    Raises
    ------
    BrokerStartError
        The broker did not start.

    Examples
    --------
    >>> with kafka_broker(given="127.0.0.1:19092") as bootstrap:  # a broker already running: nothing started
    ...     print(bootstrap)
    127.0.0.1:19092
    """
    given = given or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    with contextlib.ExitStack() as stack:
        if run_dir is None:
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        env = {**os.environ, "KAFKA_RUN_DIR": str(run_dir)}
        proc = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True,
                              timeout=start_timeout_s)
        if proc.returncode != 0:
            raise BrokerStartError(f"the Kafka broker did not start (CI={os.environ.get('CI')!r}):\n"
                                   f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        try:
            yield proc.stdout.strip().splitlines()[-1]
        finally:
            subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)

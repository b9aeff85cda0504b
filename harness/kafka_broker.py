"""A real Apache Kafka broker for the tests and the benchmarks.

The one place that starts and stops ``scripts/kafka.sh`` from Python: the
``kafka_bootstrap`` fixture (``tests/conftest.py``) and the Kafka benchmarks
(which put ``tests/`` on ``sys.path``, as they do for the other test helpers)
both use :func:`kafka_broker`. :func:`kill_broker` and :func:`restart_broker`
crash a broker and bring it back (same ports, same data), for the fault tests.
Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

__all__ = ["BrokerStartError", "kafka_broker", "kill_broker", "restart_broker"]

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "kafka.sh"


class BrokerStartError(RuntimeError):
    """``scripts/kafka.sh start`` failed; the message ends with its output."""


@contextlib.contextmanager
def kafka_broker(run_dir: Optional[Path] = None, start_timeout_s: float = 600.0,
                 given: Optional[str] = None, own: bool = False) -> Iterator[str]:
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
    own
        Start a broker even when ``$KAFKA_BOOTSTRAP_SERVERS`` is set (a test
        that kills it must not kill a shared one).

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
    given = given or (None if own else os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
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
            yield _address(proc.stdout)
        finally:
            subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


def _address(stdout: str) -> str:
    """The bootstrap address in what ``scripts/kafka.sh start`` printed
    (``export TICKLET_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:PORT``)."""
    return stdout.strip().splitlines()[-1].rsplit("=", 1)[-1]


def _script(command: str, run_dir: Path, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], env={**os.environ, "KAFKA_RUN_DIR": str(run_dir)},
                          capture_output=True, text=True, timeout=timeout_s)


def kill_broker(run_dir: Path) -> None:
    """``kill -9`` the broker started in ``run_dir`` (``scripts/kafka.sh
    kill``): it dies as in a crash; its configuration and data stay."""
    proc = _script("kill", run_dir, 60)
    if proc.returncode != 0:
        raise RuntimeError(f"kafka.sh kill failed: {proc.stderr[-2000:]}")


def restart_broker(run_dir: Path, timeout_s: float = 300.0) -> str:
    """Start the broker of ``run_dir`` again, on the same ports with the same
    data (``scripts/kafka.sh restart``); its bootstrap address once it serves.

    Raises
    ------
    BrokerStartError
        It did not come back.
    """
    proc = _script("restart", run_dir, timeout_s)
    if proc.returncode != 0:
        raise BrokerStartError(f"the Kafka broker did not restart:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return _address(proc.stdout)

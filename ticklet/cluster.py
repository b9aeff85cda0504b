"""The other processes of a backtest's cluster, started before this one has imported the dataflow.

``ticklet backtest --workers N`` runs N processes on this machine, one Bytewax
worker each (:func:`ticklet.backtest.run_backtest`). Processes 1 to N-1
(``python -m ticklet.backtest INDEX``) are started here first thing, so that
their imports (Bytewax, River, SciPy...) run while this process imports and
builds its own dataflow; each then waits on its stdin for the run (its
settings, secrets included: never on the command line) and, given none,
exits quietly: the run was refused. This module imports nothing heavy.
"""

from __future__ import annotations

import socket
import subprocess
import sys

__all__ = ["Helpers", "loopback_addresses", "start"]


def loopback_addresses(n: int) -> list[str]:
    """``n`` addresses ``127.0.0.1:PORT`` of ports free now (the system's choice), for the processes of a cluster."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


class Helpers:
    """Processes 1 to N-1 of a cluster, waiting for their run on stdin."""

    def __init__(self, procs: list[subprocess.Popen[bytes]]):
        self.procs = procs

    def __len__(self) -> int:
        return len(self.procs)

    def give(self, job: bytes) -> None:
        """Hand every process its run (a pickle), and close its stdin."""
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(job)
            p.stdin.close()

    def wait(self) -> list[int]:
        """Wait for every process to end; their exit statuses."""
        return [p.wait() for p in self.procs]

    def stop(self) -> None:
        """End the processes still running: those not given a run exit on their own, the others are killed."""
        for p in self.procs:
            if p.stdin is not None and not p.stdin.closed:
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start(processes: int) -> Helpers:
    """Start processes 1 to ``processes - 1`` of a cluster (none for 1)."""
    return Helpers([subprocess.Popen([sys.executable, "-m", "ticklet.backtest", str(i)], stdin=subprocess.PIPE)
                    for i in range(1, processes)])

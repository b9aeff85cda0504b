"""Processes a test starts: stopped as a user stops them, and never left running."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator

__all__ = ["interrupt", "reaped"]


@contextlib.contextmanager
def reaped(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """``proc``, killed and waited for on the way out if it still runs, so a failing test leaves no process."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def interrupt(proc: subprocess.Popen, timeout: float) -> int:
    """Ctrl-C: SIGINT to ``proc``, then its exit status once it ended (within ``timeout`` seconds)."""
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=timeout)

"""Stopping a run on a failure it cannot go on from: one line, a documented exit status, nothing else.

An exception raised in a Bytewax sink or source becomes a Rust panic: dozens
of lines of backtraces, exit status 1 or 134 (a second panic while the first
unwinds), the OS error lost among them, and on the way out the other sinks
close as if the run had ended: the summary and the list of outputs print as
if it had worked. A sink that meets such a failure calls :func:`stop_run`
instead: it writes ``ticklet: <message>`` on stderr and ends the process at
once with ``status`` (``os._exit``: no sink closes, so nothing claims the run
worked). Every file written so far was flushed batch by batch; with recovery,
the same command resumes from the last snapshot once the cause is fixed.

The statuses (sysexits.h), documented in the README:

- :data:`EXIT_BAD_SETUP` (2): a bad setting or input found at start, a
  damaged or mismatched recovery store: fix it, restarting will not help;
- :data:`EXIT_WRITE_FAILED` (74, EX_IOERR): an output could not be written
  (disk full, file too large, file removed during the run), the collector's
  capture included;
- :data:`EXIT_KAFKA_OUTAGE` (75, EX_TEMPFAIL): Kafka stayed unreachable past
  the outage timeout (:class:`sinks.kafka.Outage`);
- :data:`EXIT_SOFTWARE` (70, EX_SOFTWARE): a bug in ticklet, not in the
  data or settings, such as learners whose state a model bundle may not hold
  (:func:`dataflows.bundle.save_bundle`): the line says what to report.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import NoReturn, Optional

__all__ = ["EXIT_BAD_SETUP", "EXIT_KAFKA_OUTAGE", "EXIT_SOFTWARE", "EXIT_WRITE_FAILED", "os_error", "stop_run",
           "write_failed"]

#: A bad setting, input or recovery store: the same command fails the same way until it is fixed.
EXIT_BAD_SETUP = 2
#: An output could not be written (EX_IOERR).
EXIT_WRITE_FAILED = 74
#: Kafka unreachable for longer than the outage timeout (EX_TEMPFAIL: try again later).
EXIT_KAFKA_OUTAGE = 75
#: A bug in ticklet (EX_SOFTWARE): the same command fails the same way; the line says what to report.
EXIT_SOFTWARE = 70


def os_error(ex: OSError) -> str:
    """The OS error of ``ex`` without the file name (the caller names the file).

    >>> os_error(OSError(28, "No space left on device", "out/forecasts.csv"))
    '[Errno 28] No space left on device'
    >>> os_error(OSError("no errno"))
    'no errno'
    """
    return f"[Errno {ex.errno}] {ex.strerror}" if ex.errno is not None and ex.strerror else str(ex)


def stop_run(message: str, status: int) -> NoReturn:
    """Write ``ticklet: <message>`` as one line on stderr and end the process now with ``status``.

    No traceback, no sink closed, no summary.
    """
    sys.stderr.write("ticklet: " + " ".join(message.split()) + "\n")
    sys.stderr.flush()
    os._exit(status)


def write_failed(path: Path, ex: OSError, withdraw: tuple[Path, ...] = (), then: Optional[str] = None) -> NoReturn:
    """Stop the run because ``path`` could not be written (``ex``), with :data:`EXIT_WRITE_FAILED`.

    The files of ``withdraw`` (totals that would claim a complete run, such
    as ``counters.json``) are removed first; a resumed run writes them again
    from its snapshot. ``then`` replaces what the line says after the OS
    error (by default, for the dataflow: the run stopped, its outputs are
    incomplete, how to resume).
    """
    for p in withdraw:
        with contextlib.suppress(OSError):  # the line below says the outputs are incomplete either way
            p.unlink(missing_ok=True)
    then = then or (f"The run stopped with status {EXIT_WRITE_FAILED} and its outputs are incomplete; fix the cause, "
                    "then run again (with recovery, the same command resumes from the last snapshot).")
    stop_run(f"cannot write {path}: {os_error(ex)}. {then}", EXIT_WRITE_FAILED)

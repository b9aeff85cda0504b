"""Stopping a run of ``python -m bytewax.run dataflows.forecast`` on request.

Bytewax 0.21 turns a ``KeyboardInterrupt`` raised in a step into a Rust
panic and a traceback (exit status 1). Under ``bytewax.run`` the dataflow
(:func:`dataflows.forecast.build_flow` with a :class:`StopRequest`) instead
reads its input through :class:`StoppableSource`, and Ctrl-C (SIGINT) ends
that input where it is: the steps go on with what was read, the sinks close
(the files complete, Kafka flushed, the summary), Bytewax commits the last
snapshot to its recovery store, and the process ends with one line saying
where the outputs and the recovery store stand, and exit status 130 (the
shell's convention for SIGINT), never a traceback. A second Ctrl-C stops at
once (status 130): what was not yet snapshotted is read again by the next
run from the store.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, Generic, Optional, TypeVar

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

__all__ = ["EXIT_INTERRUPTED", "StopRequest", "StoppableSource"]

#: The exit status of a run stopped on request (SIGINT): 128 + 2, as a shell reports it.
EXIT_INTERRUPTED = 130

X = TypeVar("X")
S = TypeVar("S")


class StopRequest:
    """A request to end the input, shared by the partitions of a run.

    >>> stop = StopRequest()
    >>> stop.requested
    False
    >>> stop.request()
    >>> stop.requested
    True
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    @property
    def requested(self) -> bool:
        """Whether the input is to end."""
        return self._event.is_set()

    def request(self) -> None:
        """End the input at the next batch of every partition."""
        self._event.set()

    def on_sigint(self, line: Callable[[], str]) -> None:
        """Make Ctrl-C (SIGINT) a request, and at the end of the process write ``ticklet: LINE`` and exit.

        The line goes to stderr and the exit status is
        :data:`EXIT_INTERRUPTED`; a second Ctrl-C writes the line and exits
        at once. For the main thread of ``bytewax.run`` only (Python runs
        signal handlers there). A SIGINT that the process inherited ignored
        (a background job of a script, ``scripts/run-forecast.sh``, which
        passes SIGTERM on instead) stays ignored.
        """
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return

        def say_and_exit(at_once: bool) -> None:
            text = line()
            if at_once:
                text += "; stopped at once on a second Ctrl-C: what the run did since its last snapshot is lost"
            logging.shutdown()  # flush what was logged before the last line
            sys.stdout.flush()
            sys.stderr.write(f"ticklet: {text}\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)  # the only way past bytewax.run, which ends with status 0

        def handler(signum: int, frame: Optional[FrameType]) -> None:
            if self.requested:
                say_and_exit(True)
            self.request()

        def at_exit() -> None:
            if self.requested:
                say_and_exit(False)

        signal.signal(signal.SIGINT, handler)
        atexit.register(at_exit)


class _StoppablePartition(StatefulSourcePartition[X, S]):
    def __init__(self, inner: StatefulSourcePartition[X, S], stop: StopRequest):
        self._inner = inner
        self._stop = stop

    def next_batch(self) -> Iterable[X]:
        if self._stop.requested:
            raise StopIteration()
        return self._inner.next_batch()

    def next_awake(self) -> Any:
        return self._inner.next_awake()

    def snapshot(self) -> S:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class StoppableSource(FixedPartitionedSource[X, S], Generic[X, S]):
    """``source``, whose every partition ends (as at the end of its input) once ``stop`` is requested.

    Its state is that of the last batch read, so a run resumed from the
    recovery store goes on from there.

    Parameters
    ----------
    source
        The source read (its partitions, their names and states unchanged).
    stop
        The request that ends them.
    """

    def __init__(self, source: FixedPartitionedSource[X, S], stop: StopRequest):
        self.source = source
        self._stop = stop

    def list_parts(self) -> list[str]:
        """The partitions of ``source``, unchanged."""
        return self.source.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[S]) -> _StoppablePartition[X, S]:
        """The partition of ``source``, made to end once the stop is requested."""
        return _StoppablePartition(self.source.build_part(step_id, for_part, resume_state), self._stop)

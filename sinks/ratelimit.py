"""Rate-limited log lines, for the connectors whose failures repeat.

A broker or server that is down makes every attempt fail the same way.

A record's *kind* is its level and its first two arguments (librdkafka's
facility and client name; for ticklet's own lines, what failed and how):
the first record of a kind passes, then at most one every ``every_s``
seconds, and the one that passes says how many were held back.

>>> import logging
>>> t = [0.0]
>>> f = RateLimit(5.0, clock=lambda: t[0])
>>> def rec(status):
...     return logging.LogRecord("x", logging.ERROR, __file__, 1, "%s %s failed", ("HTTP", status), None)
>>> [f.filter(rec(401)), f.filter(rec(401)), f.filter(rec(404))]
[True, False, True]
>>> t[0] = 6.0
>>> r = rec(401)
>>> f.filter(r), r.getMessage()
(True, 'HTTP 401 failed (and 1 more like it in the last 5 s)')
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimit", "rate_limited"]


class RateLimit(logging.Filter):
    """Pass the first of a kind of log record, then at most one every ``every_s`` seconds.

    The one that passes notes how many were held back.
    """

    def __init__(self, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._every, self._clock = every_s, clock
        self._last: dict[tuple, float] = {}
        self._held: dict[tuple, int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` passes; one that passes after others were held back says how many."""
        args = record.args if isinstance(record.args, tuple) else ()
        kind = (record.levelno, *args[:2])
        now = self._clock()
        with self._lock:
            if now - self._last.get(kind, -1e18) < self._every:
                self._held[kind] = self._held.get(kind, 0) + 1
                return False
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {self._every:.0f} s)"
        return True


def rate_limited(name: str, every_s: float) -> logging.Logger:
    """The logger ``name`` with a :class:`RateLimit` of ``every_s`` seconds.

    The filter is added once; it applies to the records logged on that
    logger.
    """
    logger = logging.getLogger(name)
    if not any(isinstance(f, RateLimit) for f in logger.filters):
        logger.addFilter(RateLimit(every_s))
    return logger

"""The ``integration`` mark, kept true (a pytest plugin that ``tests/conftest.py``
registers).

A test is marked ``integration`` when it starts a server (Kafka, InfluxDB,
``ticklet serve``, the test exchange, any socket it listens or connects on), a
browser, or a subprocess (the dataflow or the CLI run as a user runs them,
``scripts/*.sh``, docker compose, ruff, mypy, mkdocs ...). What is left is the
fast unit run, ``python -m pytest -m "not integration"``: it needs no server
and installs nothing (:func:`provision.provision` is only given the fixtures
of the tests selected).

Two checks keep the mark true, in every run:

- a test not marked ``integration`` that requests one of
  :data:`INTEGRATION_FIXTURES` (a server, a browser, the CLI in a subprocess)
  stops the run at collection, before anything is installed, naming it;
- a test not marked ``integration`` that starts a subprocess or binds or
  connects a socket while it is set up or runs fails, saying what it started
  (an audit hook: :func:`sys.addaudithook`). What the threads of earlier tests
  do, and the teardown of fixtures that integration tests share, is not held
  against it. The hook sees what Python starts, not the sockets of native
  code (librdkafka's, Bytewax's): the Kafka broker is in the fixtures checked.

Slow tests that run in the process (whole runs over every recording, torch
training) are marked ``integration`` too where the unit run's time needs it,
each saying so.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Generator
from typing import Any

import pytest
from provision import PROVISIONED

#: The fixtures that start a server or a browser (those :mod:`provision`
#: installs for), or run the command line in a subprocess.
INTEGRATION_FIXTURES = frozenset({*PROVISIONED, "cli_run"})

_SPAWN = frozenset({"subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.fork", "os.forkpty",
                    "os.spawn"})
_NET = frozenset({"socket.bind", "socket.connect"})


class _Watch:
    """The unit test being set up or run, and what it started."""

    item: pytest.Item | None = None
    threads: frozenset[int] = frozenset()  # the threads alive when it began
    seen: list[str] = []


def _started(event: str, args: tuple) -> str:
    if event in _NET:
        return f"a socket ({event.split('.')[1]} {args[1]!r})"
    argv = args[1] if event != "os.system" and len(args) > 1 and isinstance(args[1], (list, tuple)) else args[:1]
    return f"a subprocess ({' '.join(map(str, argv))[:200]})"


#: What Python's own library runs to look something up (``ctypes.util.find_library`` runs
#: ``ldconfig -p``): no server, no dataflow.
_LOOKUPS = frozenset({"/sbin/ldconfig", "ldconfig"})


_EVENTS = _SPAWN | _NET


def _audit(event: str, args: tuple) -> None:
    if event not in _EVENTS or _Watch.item is None:
        return
    if event == "subprocess.Popen":
        argv = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        if str(args[0] or (argv[0] if argv else "")) in _LOOKUPS:
            return
    ident = threading.get_ident()
    if ident != threading.main_thread().ident and ident in _Watch.threads:
        return  # a thread of an earlier test's, still winding down
    _Watch.seen.append(_started(event, args))


sys.addaudithook(_audit)


def marked(item: pytest.Item) -> bool:
    """Whether ``item`` is marked ``integration``."""
    return item.get_closest_marker("integration") is not None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test not marked integration that requests a server, a browser or
    the CLI in a subprocess stops the run, before anything is installed."""
    asked = {item: INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())) for item in items if not marked(item)}
    wrong = [f"{item.nodeid} ({', '.join(sorted(names))})" for item, names in asked.items() if names]
    if wrong:
        raise pytest.UsageError(f"ticklet tests: {len(wrong)} tests start a server, a browser or a subprocess but are "
                                f"not marked integration (@pytest.mark.integration): {'; '.join(wrong)}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, Any, Any]:
    _Watch.item, _Watch.seen = (None if marked(item) else item), []
    _Watch.threads = frozenset(t.ident for t in threading.enumerate() if t.ident is not None)
    try:
        return (yield)
    finally:
        _Watch.item = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, Any]:
    """Fail a unit test's setup or call that started something outside the process."""
    report = yield
    if call.when != "teardown" and _Watch.item is item and _Watch.seen:
        seen, _Watch.seen = _Watch.seen, []
        more = f" (and {len(seen) - 1} more)" if len(seen) > 1 else ""
        msg = (f"ticklet tests: {item.nodeid} is not marked integration but its {call.when} started {seen[0]}{more}: "
               "mark it @pytest.mark.integration (tests/integration_mark.py)")
        if report.passed:
            report.outcome, report.longrepr = "failed", msg
        else:
            report.sections.append(("integration mark", msg))
    if call.when != "setup":
        _Watch.item = None  # the teardown of fixtures shared with integration tests may stop their servers
    return report

"""The test suite's own rules: the ``integration`` mark is kept true
(``tests/integration_mark.py``), the test files mirror the packages, and the
benchmarks share the harness (``harness/``) with the tests, never a test
helper."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from integration_mark import INTEGRATION_FIXTURES
from provision import PROVISIONED

from harness.realdata import REPO

TESTS = REPO / "tests"
#: The test helpers: every module of tests/ that is not a test file.
HELPERS = {p.stem for p in TESTS.glob("*.py") if not p.name.startswith("test_")}


def test_a_unit_test_that_requests_a_server_stops_the_run_before_anything_is_installed(pytester):
    pytester.makepyfile(test_one="""
        import pytest

        def test_reads(kafka_bootstrap):
            pass

        @pytest.mark.integration
        def test_marked(kafka_bootstrap):
            pass
    """)
    result = pytester.runpytest_inprocess("-p", "integration_mark")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "1 tests start a server, a browser or a subprocess but are not marked integration" in err, err
    assert "test_one.py::test_reads (kafka_bootstrap)" in err and "test_marked" not in err, err


@pytest.mark.integration  # it starts a subprocess and binds a socket, as the unit tests it fails do
def test_a_unit_test_that_starts_a_subprocess_or_a_server_fails(pytester):
    pytester.makepyfile(test_two="""
        import socket
        import subprocess
        import sys

        import pytest

        def test_spawns():
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        @pytest.fixture
        def listening():
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                yield s

        def test_listens(listening):
            pass

        @pytest.mark.integration
        def test_marked(listening):
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        def test_in_the_process():
            assert sum([1, 2]) == 3
    """)
    result = pytester.runpytest_inprocess("-p", "integration_mark", "-W", "ignore::pytest.PytestUnknownMarkWarning")
    result.assert_outcomes(passed=2, failed=1, errors=1)
    out = result.stdout.str()
    assert re.search(r"test_two.py::test_spawns is not marked integration but its call started a subprocess "
                     r"\(\S*python\S* -c pass\)", out), out
    assert "test_two.py::test_listens is not marked integration but its setup started a socket (bind " in out, out


def test_the_servers_that_are_installed_are_integration_fixtures():
    """What :mod:`provision` installs (for the fixtures it knows) is only
    for integration tests, so the unit run installs nothing."""
    assert {"kafka_bootstrap", "influxd", "chromium", "compose_cmd", "hftbacktest_python"} == PROVISIONED
    assert PROVISIONED <= INTEGRATION_FIXTURES


def test_the_test_folders_mirror_the_packages():
    """A module's own tests live in ``tests/<package>/`` (``tests/sources/`` for
    ``sources/``); the tests across packages stay at the top. Basenames are
    unique: pytest imports each test file by its name."""
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name not in {"data", "__pycache__"}}
    assert folders <= {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}, folders
    files = [p.name for p in TESTS.rglob("test_*.py") if "data" not in p.relative_to(TESTS).parts]
    assert len(files) == len(set(files)), sorted(f for f in files if files.count(f) > 1)
    assert not list(TESTS.rglob("__init__.py"))


def _imports(path: Path) -> set[str]:
    """The top-level names of the modules a Python file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("bench", sorted((REPO / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_a_benchmark_imports_no_test_helper(bench):
    """Benchmarks import the shared harness (``harness/``), never a module of
    ``tests/``, and do not put ``tests/`` on the import path."""
    assert {"conftest", "provision", "integration_mark"} <= HELPERS
    assert not _imports(bench) & HELPERS, f"{bench.name} imports {sorted(_imports(bench) & HELPERS)} from tests/"
    on_path = re.search(r"sys\.path\.\w+\([^)]*[\"']tests[\"']", bench.read_text())
    assert not on_path, f"{bench.name} puts tests/ on sys.path: {on_path.group(0)}"

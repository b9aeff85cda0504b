"""The house rules that tools check: the floors (import-linter contracts in
pyproject.toml), no import cycle (grimp), ruff, and mypy over the whole tree.

The floors, top to bottom (an upper floor may import a lower one, never the
reverse; "|": siblings that import neither; ":": one floor)::

    ticklet                   the apps: ticklet.cli on top of
                              ticklet.backtest | .collector | .publish | .report | .serve | .settings_tables
    dataflows                 the Bytewax wrappers, the wiring and the root settings
    sources | sinks           connectors, and the configs of their components
    operators : models        pure logic: no engine, no I/O clients, no metrics
    core                      the foundation: record types, telemetry, statistics, config base types
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.realdata import REPO

PACKAGES = ("core", "operators", "models", "sources", "sinks", "dataflows", "ticklet")
BIN = Path(sys.executable).parent


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter over the packages under ``root`` (its pyproject.toml)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


#: Prints, as JSON, the import cycles among the modules of the packages named in argv: each cycle the
#: sorted modules of one strongly connected component of grimp's import graph (the graph import-linter
#: checks its contracts on; imports inside functions count, as they did in dataflows.bundle).
_CYCLES = """
import json, sys
import grimp

graph = grimp.build_graph(*sys.argv[1:], cache_dir=None)
index, low, stack, on, cycles = {}, {}, [], set(), []

def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in sorted(graph.find_modules_directly_imported_by(v)):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        component = []
        while not component or component[-1] != v:
            component.append(stack.pop())
            on.discard(component[-1])
        if len(component) > 1 or v in graph.find_modules_directly_imported_by(v):
            cycles.append(sorted(component))

sys.setrecursionlimit(10_000)
for module in sorted(graph.modules):
    if module not in index:
        visit(module)
print(json.dumps(sorted(cycles)))
"""


def _import_cycles(root: Path) -> list[list[str]]:
    """The import cycles among the modules of every package of the project under ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", _CYCLES, *PACKAGES], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.mark.integration  # Python (grimp) in a subprocess
def test_no_import_cycle():
    """No module imports, even inside a function, a module that imports it back
    through any chain (dataflows.bundle and dataflows.forecast did)."""
    assert _import_cycles(REPO) == []


@pytest.mark.integration  # Python (grimp) in a subprocess
def test_an_import_cycle_is_found(tmp_path):
    """The check works: in a copy of the tree, the cycle that was removed
    (dataflows.bundle importing dataflows.forecast in a function) and one
    through three modules of the foundation are both found, each whole."""
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "dataflows" / "bundle.py", "a") as f:
        f.write("\n\ndef _later() -> None:\n    from dataflows.forecast import build_flow  # noqa: F401\n")
    for module, imported in (("events", "stats"), ("stats", "version"), ("version", "events")):
        with open(tmp_path / "core" / f"{module}.py", "a") as f:
            f.write(f"\nimport core.{imported}  # noqa: E402\n")
    assert _import_cycles(tmp_path) == [["core.events", "core.stats", "core.version"],
                                        ["dataflows.bundle", "dataflows.forecast"]]


@pytest.mark.integration  # lint-imports in a subprocess
def test_the_layers_are_kept():
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "4 kept, 0 broken" in proc.stdout


#: A wrong import on each floor: (the module it goes in, the import, the contract it breaks, what
#: import-linter reports).
WRONG = [
    ("core/events.py", "from operators import bars", "floors", "core.events -> operators.bars"),
    ("operators/bars.py", "from sources import binance", "floors", "operators.bars -> sources.binance"),
    ("models/base.py", "from sinks import records", "floors", "models.base -> sinks.records"),
    ("operators/bars.py", "import bytewax.operators", "pure", "operators.bars -> bytewax"),
    ("models/registry.py", "from core import telemetry", "pure", "models.registry -> core.telemetry"),
    ("sources/replay.py", "from sinks import records", "floors", "sources.replay -> sinks.records"),
    ("sinks/records.py", "from dataflows import ops", "floors", "sinks.records -> dataflows.ops"),
    ("sinks/kafka.py", "from sources import kafka", "floors", "sinks.kafka -> sources.kafka"),
    ("dataflows/ops.py", "from ticklet import backtest", "floors", "dataflows.ops -> ticklet.backtest"),
    ("dataflows/settings.py", "from ticklet.serve import app", "floors", "dataflows.settings -> ticklet.serve.app"),
    ("ticklet/report.py", "from ticklet import cli", "apps", "ticklet.report -> ticklet.cli"),
    ("ticklet/collector.py", "from ticklet.serve import app", "apps", "ticklet.collector -> ticklet.serve.app"),
    ("sinks/kafka.py", "from harness import kafkautil", "harness", "sinks.kafka -> harness"),
]
def _contracts() -> dict[str, str]:
    """The import-linter contracts of pyproject.toml: ``{id: name}``."""
    import tomllib

    return {c["id"]: c["name"] for c in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
            ["contracts"]}


@pytest.mark.integration  # lint-imports in a subprocess
@pytest.mark.parametrize(("module", "line", "contract", "reported"), WRONG, ids=[w[3] for w in WRONG])
def test_a_wrong_import_breaks_its_floor(tmp_path, module, line, contract, reported):
    """The check works: in a copy of the tree, one import against the floors
    (upward, between siblings, or out of the pure logic) breaks its contract,
    named with the import. (An import from dataflows/ up into an app breaks the
    apps' contract too where another app imports that module of dataflows.)"""
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / module, "a") as f:
        f.write(f"\n{line}  # noqa: E402, F401\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode == 1, proc.stdout[-4000:]
    out = " ".join(proc.stdout.split())  # import-linter wraps long lines
    assert f"{_contracts()[contract]} BROKEN" in out and reported in out, proc.stdout[-4000:]


def test_every_app_is_on_a_floor():
    """Every module of ticklet/ is named in the apps contract, so that a new
    app is placed (import-linter checks only the modules a contract names)."""
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (apps,) = [c for c in contracts if c["id"] == "apps"]
    named = {m.strip() for layer in apps["layers"] for m in layer.split("|")}
    found = {f"ticklet.{p.stem}" for p in (REPO / "ticklet").glob("*.py") if p.stem != "__init__"}
    found |= {f"ticklet.{p.name}" for p in (REPO / "ticklet").iterdir() if (p / "__init__.py").exists()}
    assert found == named


def test_package_inits_import_nothing():
    """Importing ``core.events`` runs ``ticklet/__init__.py`` first: one
    import there (of the settings, say) would pull every layer in below the
    record types and break ``import operators.bars`` with a circular import."""
    for pkg in PACKAGES:
        tree = ast.parse((REPO / pkg / "__init__.py").read_text())
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not imports, f"{pkg}/__init__.py imports {ast.unparse(imports[0])}"


@pytest.mark.integration  # ruff in a subprocess
def test_ruff_is_clean():
    proc = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_ruff_checks_the_packages_docstrings():
    """ruff's docstring rules (pydocstyle, numpy convention) on every package: only
    the tests' and scripts' code is exempt, and each rule left out says why beside it."""
    import tomllib

    text = (REPO / "pyproject.toml").read_text()
    lint = tomllib.loads(text)["tool"]["ruff"]["lint"]
    assert "D" in lint["select"] and lint["pydocstyle"]["convention"] == "numpy"
    off = sorted(r for r in lint["ignore"] if r.startswith("D"))
    assert off == ["D105", "D401"]
    for rule in off:
        line = next(ln for ln in text.splitlines() if f'"{rule}"' in ln)
        assert "#" in line and line.split("#", 1)[1].strip(), line
    exempt = sorted(p for p, rules in lint["per-file-ignores"].items() if "D" in rules)
    assert exempt == ["benchmarks/*", "docs/_hooks/*", "harness/*", "tests/*"]


@pytest.mark.integration  # ruff in a subprocess
def test_a_docstring_of_the_wrong_shape_breaks_ruff():
    """A summary over two lines, as much of the code had before the rules: ruff
    fails it in a package, and lets it be in the tests."""
    bad = 'def f():\n    """Two lines\n    of summary."""\n'

    def ruff(path: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "--stdin-filename", path, "-"], cwd=REPO,
                              input=bad, capture_output=True, text=True, timeout=60)

    proc = ruff("core/new_module.py")
    assert proc.returncode == 1 and "D205" in proc.stdout and "D209" in proc.stdout, proc.stdout
    assert ruff("tests/core/test_new_module.py").returncode == 0


def test_mypy_covers_the_whole_tree():
    """``mypy`` with no argument checks every package strictly (every function
    body, annotated or not: a new package cannot be left out, nor checked
    leniently), and the tests' and scripts' code (harness/, tests/,
    benchmarks/, the docs' hooks) for what is annotated."""
    import tomllib

    lenient = ["harness", "tests", "benchmarks", "docs/_hooks"]
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    packages = sorted(p.name for p in REPO.iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted([*PACKAGES, "harness"])
    assert sorted(cfg["files"]) == sorted([*PACKAGES, *lenient])
    left_out = [p for p in REPO.glob("[!.]*/**/*.py") if "build" not in p.parts
                and not any(p.is_relative_to(REPO / f) for f in cfg["files"])]
    assert not left_out, left_out
    strict = [o for o in cfg["overrides"] if o.get("check_untyped_defs")]
    assert len(strict) == 1 and sorted(strict[0]["module"]) == sorted(m for p in PACKAGES for m in (p, f"{p}.*"))
    assert not cfg.get("check_untyped_defs")  # the lenient code: under the global settings


@pytest.mark.integration  # about 40 s: mypy over the whole tree, with no cache
def test_mypy_is_clean(tmp_path):
    """The whole tree, as ``mypy`` with no argument checks it (files and
    settings in pyproject.toml): no error."""
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert proc.stdout.startswith("Success: no issues found")

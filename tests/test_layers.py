"""The house rules that tools check: the import layers (import-linter,
contracts in pyproject.toml), ruff, and mypy on the pure packages.

The layers, top to bottom (an upper layer may import a lower one, never the
reverse)::

    ticklet.cli
    ticklet.collector | ticklet.publish
    dataflows                 (the Bytewax wrappers and the wiring)
    dataflows.settings
    sources | sinks           (connectors)
    operators : models        (pure logic)
    core.telemetry
    core.events            (record types)
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from realdata import REPO

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


def test_no_import_cycle():
    """No module imports, even inside a function, a module that imports it back
    through any chain (dataflows.bundle and dataflows.forecast did)."""
    assert _import_cycles(REPO) == []


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


def test_the_layers_are_kept():
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_a_forbidden_import_breaks_the_layers(tmp_path):
    """The check works: in a copy of the tree, an operator that imports Bytewax
    and a sink that imports the dataflow wiring break both contracts."""
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / "operators" / "bars.py", "a") as f:
        f.write("\nimport bytewax.operators  # noqa: E402\n")
    with open(tmp_path / "sinks" / "records.py", "a") as f:
        f.write("\nfrom dataflows import ops  # noqa: E402\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode == 1, proc.stdout[-4000:]
    assert "0 kept, 2 broken" in proc.stdout
    assert "operators.bars -> bytewax" in proc.stdout
    assert "sinks.records -> dataflows.ops" in proc.stdout


def test_package_inits_import_nothing():
    """Importing ``core.events`` runs ``ticklet/__init__.py`` first: one
    import there (of the settings, say) would pull every layer in below the
    record types and break ``import operators.bars`` with a circular import."""
    for pkg in PACKAGES:
        tree = ast.parse((REPO / pkg / "__init__.py").read_text())
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not imports, f"{pkg}/__init__.py imports {ast.unparse(imports[0])}"


def test_ruff_is_clean():
    proc = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_mypy_is_clean_on_the_pure_packages(tmp_path):
    """operators/, models/ and ticklet/events.py (files and settings in pyproject.toml)."""
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert proc.stdout.startswith("Success: no issues found")

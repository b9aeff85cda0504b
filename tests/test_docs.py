"""The documentation: the site builds without a warning, and the commands it shows run as shown.

Every fenced ``bash``/``console``/``sh`` block of ``README.md`` and ``docs/`` is preceded by
a marker, an HTML comment the reader does not see:

- ``<!-- run -->``: this test runs it, page by page in order, in a temporary directory that
  holds the repository's data (``data/sample``, ``tests/data``) and nothing else. A ``bash``
  block must exit 0. A ``console`` block is ``$ command`` lines, each followed by what it
  prints (stdout and stderr); the output must be the one shown, where ``...`` stands for
  anything (a time, an id) and ``/home/you/ticklet`` for the directory it ran in. A
  ``python`` block marked so runs too.
- ``<!-- not run: why -->``: the reason it cannot run here (it installs, needs a live
  exchange, reads the shared data...), and, where one does, which test runs it instead.

A block with neither fails :func:`test_every_command_block_is_run_or_says_why_not`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.realdata import REPO

DOCS = REPO / "docs"

# docs/_hooks/generated.py: the pages made from the code (API, settings, CLI).
_spec = importlib.util.spec_from_file_location("docs_hooks_generated", DOCS / "_hooks" / "generated.py")
assert _spec is not None and _spec.loader is not None
generated = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generated)
SHELLS = {"bash", "console", "sh", "shell"}
SHOWN_CWD = "/home/you/ticklet"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<lang>[\w-]*)")
_MARK = re.compile(r"^\s*<!--\s*(?P<mark>run|not run)\s*(?::\s*(?P<why>.*?))?\s*-->\s*$")


@dataclass
class Block:
    page: str
    line: int
    lang: str
    text: str
    mark: str | None  # "run", "not run" or None
    why: str


def pages() -> list[Path]:
    return [REPO / "README.md"] + sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the marker on the line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m["indent"], m["fence"], m["lang"].lower()
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        before = next((x for x in reversed(lines[:start]) if x.strip()), "") if start else ""
        mark = _MARK.match(before)
        found.append(Block(str(path.relative_to(REPO)), start + 1, lang, "\n".join(body),
                           mark["mark"] if mark else None, (mark["why"] or "") if mark else ""))
    return found


def test_every_command_block_is_run_or_says_why_not():
    unmarked = [f"{b.page}:{b.line}" for p in pages() for b in blocks(p) if b.lang in SHELLS and b.mark is None]
    assert not unmarked, f"command blocks with no <!-- run --> or <!-- not run: why --> before them: {unmarked}"
    vague = [f"{b.page}:{b.line}" for p in pages() for b in blocks(p) if b.mark == "not run" and len(b.why) < 20]
    assert not vague, f"<!-- not run --> needs its reason: {vague}"


def _workdir(tmp: Path) -> Path:
    """A directory like the clone's root as the docs' commands see it: the data, nothing else."""
    work = tmp / "ticklet"
    (work / "data").mkdir(parents=True)
    (work / "tests").mkdir()
    (work / "data" / "sample").symlink_to(REPO / "data" / "sample")
    (work / "tests" / "data").symlink_to(REPO / "tests" / "data")
    return work


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NO_MKDOCS_2_WARNING"] = "1"
    return env


def _matches(want: str, got: str) -> bool:
    """``got`` is ``want``, where ``...`` in ``want`` stands for anything."""
    pattern = ".*?".join(re.escape(part) for part in want.split("..."))
    return re.fullmatch(pattern, got, flags=re.DOTALL) is not None


def _console(text: str) -> list[tuple[str, str]]:
    """(command, output shown) pairs of a console block; a command line ending in a
    backslash goes on to the next line."""
    pairs: list[tuple[list[str], list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            pairs.append(([line[2:]], []))
        elif pairs and pairs[-1][0][-1].endswith("\\") and not pairs[-1][1]:
            pairs[-1][0].append(line)
        elif pairs:
            pairs[-1][1].append(line)
    return [("\n".join(command), "\n".join(out)) for command, out in pairs]


def _run(block: Block, work: Path) -> None:
    where = f"{block.page}:{block.line}"
    if block.lang == "python":
        proc = subprocess.run([sys.executable, "-c", block.text], cwd=work, env=_env(), capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, f"{where}: the Python block failed:\n{proc.stderr[-3000:]}"
        return
    if block.lang == "console":
        for command, want in _console(block.text):
            proc = subprocess.run(["bash", "-c", command], cwd=work, env=_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=300)
            got = "\n".join(line.rstrip() for line in proc.stdout.replace(str(work), SHOWN_CWD).splitlines())
            assert _matches(want.rstrip(), got.rstrip()), (
                f"{where}: `{command}` printed (status {proc.returncode}):\n{got}\n\nthe page shows:\n{want}")
        return
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.text], cwd=work, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{where}: exit status {proc.returncode}:\n{proc.stderr[-3000:]}"


def _tables(page: str) -> dict[str, list[list[str]]]:
    """The Markdown tables of a page, by their header row: their rows' cells."""
    out: dict[str, list[list[str]]] = {}
    lines = (REPO / page).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and lines[i + 1].startswith("|---") and (i == 0 or not lines[i - 1].startswith("|")):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split(" | ")])
            out[line] = rows
    return out


def _e(x: float | None) -> str:
    return "-" if x is None else f"{x:.1e}"


def _forecast_quality(work: Path) -> None:
    """Every cell of the forecast-quality table is the run's (``instruments`` of its JSON)."""
    runs = json.loads((work / "quality.json").read_text())["instruments"]
    (rows,) = [r for h, r in _tables("docs/benchmarks/forecast-quality.md").items() if "| RMSE |" in h]
    want = []
    for inst in sorted(runs):
        for model in sorted(runs[inst]["models"]):
            for h, v in sorted(runs[inst]["models"][model].items(), key=lambda kv: int(kv[0])):
                dm = "-" if v["dm_p_value"] is None else _e(v["dm_p_value"]) + (" ✓" if v["dm_holm"] else "")
                hit = "-" if v["hit_rate"] is None else \
                    f"{v['hit_rate']:.4f} [{v['hit_rate_ci95'][0]:.3f}, {v['hit_rate_ci95'][1]:.3f}]"
                pt = "-" if v["pt_p_value"] is None else \
                    _e(v["pt_p_value"]) + (" ✓" if v["pt_holm"] else "") + f" ({v['n_pt']})"
                want.append([inst, model, h, str(v["n"]), f"{v['rmse']:.3e}", f"{v['skill']:.4f}", dm, hit,
                             str(v["n_directional"]), _e(v["hit_rate_p_value"]), pt])
    assert rows == want


def _paper_trading(work: Path) -> None:
    """Every cell of the two tables of paper-trading results is the runs' (``economics``)."""
    costs = json.loads((work / "costs.json").read_text())["economics"]
    free = json.loads((work / "no-fees.json").read_text())["economics"]
    tables = _tables("docs/benchmarks/paper-trading.md")
    (books,) = [r for h, r in tables.items() if "| net Sharpe |" in h]
    (sure,) = [r for h, r in tables.items() if "| SE (Lo) |" in h]

    def n0(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f}"

    want = []
    for inst in sorted(costs):
        for book in sorted(b for b in costs[inst] if b != "naive"):  # naive never trades
            for h in sorted(costs[inst][book], key=int):
                c, f = costs[inst][book][h], free[inst][book][h]
                be = "-" if f["break_even_bps"] is None else f"{f['break_even_bps']:.2f}"
                want.append([inst, book, h, n0(c["sharpe"]), f"{c['net_return'] * 100:.2f}%", n0(f["sharpe"]),
                             f"{f['net_return'] * 100:.2f}%", be, str(c["trades"]), str(c["fills"])])
    assert books == want
    for inst, book, h, *cells in sure:
        f = free[inst][book][h]
        assert cells == [f"{f['sharpe']:.0f}", f"{f['sharpe_se']:.0f}", f"{f['skew']:.2f}", f"{f['kurt']:.1f}",
                         f"{f['psr']:.4f}", f"{f['dsr']:.4f}"], (inst, book, h)
    assert {(r[0], r[1], r[2]) for r in sure} == {(r[0], r[1], r[2]) for r in books if r[1] in ("linear", "logistic")}


#: What a page's figures are checked against, once its commands have run.
FIGURES = {"docs/benchmarks/forecast-quality.md": _forecast_quality,
           "docs/benchmarks/paper-trading.md": _paper_trading}

RUN = {str(p.relative_to(REPO)): [b for b in blocks(p) if b.mark == "run"] for p in pages()}


@pytest.mark.integration  # it runs the dataflow and the CLI in subprocesses
@pytest.mark.parametrize("page", [p for p, bs in RUN.items() if bs])
def test_the_commands_of_a_page_run_as_shown(page, tmp_path):
    """The page's runnable blocks, in order, in one directory: a later block may use what
    an earlier one made (a bundle, an output directory). Where the page quotes figures of
    those runs, they are checked against them."""
    work = _workdir(tmp_path)
    for block in RUN[page]:
        _run(block, work)
    if page in FIGURES:
        FIGURES[page](work)


def test_the_output_columns_are_the_files_columns(full_run):
    """The columns the outputs reference lists are those of a real run's files."""
    _, out = full_run
    (rows,) = [r for h, r in _tables("docs/reference/outputs.md").items() if h.startswith("| file |")]
    for name, columns, *_ in rows:
        name = name.strip("`")
        if name.endswith(".csv") and columns.startswith("`") and name != "economics.csv":
            listed = columns.split("`")[1]
            assert listed == ", ".join((out / name).read_text().splitlines()[0].split(",")), name


def test_the_tests_named_by_the_reliability_page_exist():
    """Each promise of the reliability page names tests (``test_x.py::test_y``, or
    ``::test_y`` of the file before): every one of them is a test of that file."""
    text = (DOCS / "reference" / "reliability.md").read_text(encoding="utf-8")
    named, current = [], None
    for token in re.findall(r"`([\w./]*test_\w+\.py(?:::\w+)?|::\w+)`", text):
        file, _, test = token.partition("::")
        current = file.removeprefix("tests/") or current
        if test:
            named.append((current, test))
        else:
            assert (REPO / "tests" / current).is_file(), current
    assert len(named) > 50
    missing = [f"{f}::{t}" for f, t in named if not re.search(rf"^(?:async )?def {t}\(",
                                                                (REPO / "tests" / f).read_text(), re.M)]
    assert not missing, missing


@pytest.mark.integration  # mkdocs in a subprocess
def test_the_site_builds_strictly_and_offline(tmp_path):
    """``mkdocs build --strict``: a broken link or anchor, a page missing from the nav, a
    docstring mkdocstrings cannot render fails it. Built into a temporary directory."""
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                           "-d", str(site)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    # The generated pages: the settings table from the config classes, every module's API page.
    settings = (site / "reference" / "settings.html").read_text()
    for name in re.findall(r"^\| `(TICKLET_\w+)`", generated.settings_table(), flags=re.M):
        assert name in settings, f"{name} is not on the settings page"
    api = site / "reference" / "api"
    for module in generated.modules():
        page = api / (f"{module}/index.html" if "." not in module else module.replace(".", "/") + ".html")
        assert page.is_file() and 'class="doc doc-' in page.read_text(), f"no API page for {module}"
    # Offline: search runs from the page, nothing is fetched from elsewhere.
    assert (site / "search" / "search_index.js").is_file()
    for html in site.rglob("*.html"):
        text = html.read_text()
        assert "fonts.googleapis.com" not in text and "fonts.gstatic.com" not in text, html
        assert not re.search(r'<(?:script|link)[^>]+(?:src|href)="https?://', text), html


MAIN = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && python -m bytewax.run dataflows.forecast"
TESTS = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]' && python -m pytest -q"


def test_the_readme_is_a_front_page_with_the_two_commands():
    """The README stays a front page (at most 250 lines) that holds the two commands, each
    a block of its own, and .ci/run runs the second as it is written there."""
    readme = REPO / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= 250
    assert {MAIN, TESTS} <= {b.text.strip() for b in blocks(readme) if b.lang == "bash"}
    assert TESTS in (REPO / ".ci" / "run").read_text().splitlines()


#: Kafka topics, whose names look like modules.
TOPICS = {"ticklet.ticks", "ticklet.forecasts", "ticklet.dead-letters", "ticklet.events", "ticklet.book"}


def _defines(path: Path, name: str) -> bool:
    """Whether a module's top level defines ``name`` (read, not imported)."""
    import ast

    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any((a.asname or a.name) == name for a in node.names):
            return True
    return False


def test_the_modules_and_files_the_docs_name_exist():
    """Every source file (`sinks/fatal.py`) and module or attribute (`models.bundle.ALLOWED`)
    a page names in code exists: a module moved without the docs following fails here
    (moves are listed old -> new as they are made)."""
    packages = set(generated.packages())
    missing = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for path in set(re.findall(r"`((?:[a-z_]+/)+[a-z_]+\.py)`", text)):
            if not (REPO / path).is_file():
                missing.append(f"{page.name}: {path}")
        for dotted in set(re.findall(r"`([a-z_]+(?:\.[A-Za-z_][\w-]*)+)`", text)):
            parts = dotted.split(".")
            if parts[0] not in packages or dotted in TOPICS:
                continue
            for i in range(len(parts), 0, -1):
                base = REPO.joinpath(*parts[:i])
                module = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
                if module.is_file():
                    if i < len(parts) and not _defines(module, parts[i]):
                        missing.append(f"{page.name}: {dotted}")
                    break
            else:
                missing.append(f"{page.name}: {dotted}")
    assert not missing, missing

"""MkDocs hook: the pages made from the code at build time, so that they are never stale.

- **API reference**: one page per module of every package of the checkout (a top-level
  folder with an ``__init__.py``, ``tests`` and ``benchmarks`` aside), found by walking the
  tree, rendered by mkdocstrings from the docstrings. Moving or adding a module needs no
  edit here or in ``mkdocs.yml``: the nav entry ``API: reference/api/index.md`` is replaced
  by the walk.
- **Settings**: the marker ``<!-- settings-table -->`` in a page becomes the table of every
  ``TICKLET_*`` setting, rendered from the config classes (``settings_table()``, the same
  table ``ticklet config --defaults`` prints); ``<!-- settings-groups -->`` the groups of the
  root ``Settings`` and the config class (and module) that defines each.
- **CLI**: the marker ``<!-- cli-help -->`` becomes the ``--help`` of ``ticklet`` and of each
  of its commands, taken from the installed ``ticklet`` console script.
- **Layers**: the marker ``<!-- layers -->`` becomes the import-linter contracts of
  ``pyproject.toml`` (the floors, top to bottom, each module with the first sentence of its
  docstring), the contracts ``tests/test_layers.py`` runs; ``<!-- packages -->`` every package
  with its modules, bottom floor first.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import posixpath
import re
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
API = "reference/api"
NOT_PACKAGES = {"tests", "benchmarks", "docs", "scripts", "build", "data"}


def packages() -> list[str]:
    """The checkout's top-level packages, in name order."""
    return sorted(p.name for p in ROOT.iterdir()
                  if p.is_dir() and (p / "__init__.py").is_file() and p.name not in NOT_PACKAGES
                  and not p.name.startswith("."))


def modules() -> list[str]:
    """Every module of every package: the package itself first, then its modules and
    subpackages depth-first, each folder's in name order."""
    found: list[str] = []

    def walk(folder: Path, dotted: str) -> None:
        found.append(dotted)
        for child in sorted(folder.iterdir()):
            if child.is_dir() and (child / "__init__.py").is_file():
                walk(child, f"{dotted}.{child.name}")
            elif child.suffix == ".py" and child.name != "__init__.py" and not child.name.startswith("_"):
                found.append(f"{dotted}.{child.stem}")

    for name in packages():
        walk(ROOT / name, name)
    return found


def _page(module: str) -> str:
    return f"{API}/{module.replace('.', '/')}.md" if module not in packages() else f"{API}/{module}/index.md"


def _summary(module: str) -> str:
    """The first sentence of a module's docstring (its first paragraph, up to a period), read
    without importing it."""
    parts = module.split(".")
    path = ROOT.joinpath(*parts)
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    if not path.is_file():
        return ""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    sentence = re.split(r"(?<=[^.]\.)\s+(?=[A-Z`(])", first, maxsplit=1)[0]
    sentence = re.sub(r":[\w:]+:`~?([^`]+)`", r"`\1`", sentence.replace("``", "`"))
    return sentence.replace("|", "/")


def layers() -> str:
    """The import contracts of pyproject.toml as Markdown: the floors, then the other rules."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    out: list[str] = []
    for contract in contracts:
        if contract["type"] == "layers":
            rows = ["| module | floor | what it is |", "|---|---|---|"]
            floors = contract["layers"]
            for container in contract.get("containers", [""]):
                for i, floor in enumerate(floors):
                    for module in re.split(r"\s*[|:]\s*", floor):
                        module = f"{container}.{module}" if container else module
                        rows.append(f"| `{module}` | {len(floors) - i} | {_summary(module)} |")
            out += [f"**{contract['name']}** (`{contract['id']}`): each floor imports only the floors below "
                    "it. Modules of one floor that the contract separates with `|` import none of each "
                    "other; `:` lets them.", "", *rows, ""]
        elif contract["type"] == "forbidden":
            forbidden = ", ".join(f"`{m}`" for m in contract["forbidden_modules"])
            sources = ", ".join(f"`{m}`" for m in contract["source_modules"])
            out += [f"**{contract['name']}** (`{contract['id']}`): {sources} import none of {forbidden}.", ""]
        else:
            out += [f"**{contract['name']}** (`{contract['id']}`, {contract['type']}).", ""]
    return "\n".join(out)


def _nav() -> list[Any]:
    """The API section of the nav: the index, then one section per package."""
    nav: list[Any] = [f"{API}/index.md"]
    sections: dict[str, list[Any]] = {}
    for module in modules():
        top = module.split(".")[0]
        sections.setdefault(top, []).append({module: _page(module)})
    nav.extend({top: items} for top, items in sections.items())
    return nav


def _replace_api(nav: list[Any]) -> bool:
    for i, item in enumerate(nav):
        if isinstance(item, dict):
            for title, value in item.items():
                if value == f"{API}/index.md":
                    nav[i] = {title: _nav()}
                    return True
                if isinstance(value, list) and _replace_api(value):
                    return True
    return False


def on_config(config: Any) -> Any:
    if not _replace_api(config["nav"] or []):
        raise ValueError(f"mkdocs.yml: no nav entry for {API}/index.md to put the API reference in")
    return config


def on_files(files: Files, config: Any) -> Files:
    rows = ["# API reference", "",
            "Generated from the docstrings of every module of every package (mkdocstrings, "
            "numpy style). The packages, from the bottom layer up, are described in "
            "[Design: layers](../../explanation/layers.md).", "",
            "| module | what it is |", "|---|---|"]
    for module in modules():
        page = _page(module)
        rows.append(f"| [`{module}`]({page[len(API) + 1:]}) | {_summary(module).replace('|', '/')} |")
        content = f"# `{module}`\n\n::: {module}\n"
        files.append(File.generated(config, page, content=content))
    files.append(File.generated(config, f"{API}/index.md", content="\n".join(rows) + "\n"))
    return files


def settings_table() -> str:
    """The table of every setting, rendered from the config classes by the renderer that
    ``ticklet config --defaults`` uses."""
    from ticklet.settings_tables import settings_table as render

    return render()


def package_modules(page_dir: str = "") -> str:
    """Every package with its modules, from the bottom floor up (the order of the layers
    contract), each module with the first sentence of its docstring."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    order: list[str] = []
    for contract in contracts:
        if contract["type"] == "layers":
            for floor in reversed(contract["layers"]):
                for module in re.split(r"\s*[|:]\s*", floor):
                    if module.split(".")[0] not in order:
                        order.append(module.split(".")[0])
    tops = order + [p for p in packages() if p not in order]
    out: list[str] = []
    for top in tops:
        mods = [m for m in modules() if m == top or m.startswith(top + ".")]
        out += [f"**`{top}/`** {_summary(top)}", "", "| module | what it is |", "|---|---|"]
        out += [f"| [`{m}`]({posixpath.relpath(_page(m), page_dir or '.')}) | {_summary(m)} |"
                for m in mods if m != top]
        out.append("")
    return "\n".join(out)


def root_settings() -> Any:
    """The root ``Settings`` class, which composes the config classes."""
    from dataflows.settings import Settings

    return Settings


def settings_groups() -> str:
    """Each group of settings (a field of the root ``Settings``), its prefix and the config
    class that defines it, where it lives beside its component."""
    settings = root_settings()
    rows = ["| variables | config class | defined in |", "|---|---|---|"]
    for name, field in settings.model_fields.items():
        cls = field.annotation
        path = cls.__module__.replace(".", "/") + ".py"
        rows.append(f"| `TICKLET_{name.upper()}__*` | `{cls.__module__}.{cls.__qualname__}` | `{path}` |")
    return "\n".join(rows) + "\n"


def cli_help() -> str:
    """``ticklet --help`` and every command's ``--help``, as the installed script prints them."""
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "ticklet"]
    main = script.load()

    def run(argv: list[str]) -> str:
        out = io.StringIO()
        columns = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width: the same page everywhere
        try:
            with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
                main(argv)
        finally:
            if columns is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = columns
        return out.getvalue().rstrip()

    top = run(["--help"])
    commands = []
    for line in top.splitlines():
        if line.strip().startswith("{"):
            commands = line.strip().strip("{}").split(",")
            break
    blocks = ["## `ticklet`", "", "```text", top, "```", ""]
    for command in commands:
        blocks += [f"## `ticklet {command}`", "", "```text", run([command, "--help"]), "```", ""]
    return "\n".join(blocks)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if "<!-- settings-table -->" in markdown:
        markdown = markdown.replace("<!-- settings-table -->", settings_table())
    if "<!-- settings-groups -->" in markdown:
        markdown = markdown.replace("<!-- settings-groups -->", settings_groups())
    if "<!-- packages -->" in markdown:
        markdown = markdown.replace("<!-- packages -->", package_modules(posixpath.dirname(page.file.src_uri)))
    if "<!-- layers -->" in markdown:
        markdown = markdown.replace("<!-- layers -->", layers())
    if "<!-- cli-help -->" in markdown:
        markdown = markdown.replace("<!-- cli-help -->", cli_help())
    return markdown

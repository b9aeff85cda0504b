"""Griffe extension: ticklet's docstrings, as written for pytest and for reading in the code,
rendered as Markdown by mkdocstrings. Docstrings are left alone in the code.

- Doctests (``>>>`` lines and their output, up to a blank line), which pytest runs, become
  fenced ``pycon`` blocks: Markdown would read them as text (``[a, b]`` as a link).
- Sphinx roles (``:class:`X```, ``:func:`~m.f```) become code spans.
- A paragraph that ends with ``::`` (a reStructuredText literal block follows, indented, which
  Markdown shows as code too) ends with ``:``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const|py:\w+):`~?([^`]+)`")


def fence(text: str) -> str:
    r"""Wrap every doctest of ``text`` in a fenced ``pycon`` block.

    >>> fence("Adds.\n\n>>> 1 + 1\n2\n\nDone.").splitlines()
    ['Adds.', '', '```pycon', '>>> 1 + 1', '2', '```', '', 'Done.']
    """
    out: list[str] = []
    lines = text.splitlines()
    i, fenced = 0, False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out.append(f"{indent}```")
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def markdown(text: str) -> str:
    """A docstring as Markdown: roles as code spans, ``::`` as ``:``, doctests fenced.

    >>> markdown("Each :class:`ForecastRecord` is scored (:func:`~operators.metrics.step`)::")
    'Each `ForecastRecord` is scored (`operators.metrics.step`):'
    """
    text = _ROLE.sub(r"`\1`", text)
    text = re.sub(r"\s*::$", ":", text, flags=re.M)
    return fence(text)


class Docstrings(griffe.Extension):
    """Rewrite every docstring of a package as Markdown once the package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg)

    def _walk(self, obj: Any) -> None:
        if obj.is_alias:
            return
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
        for member in obj.members.values():
            self._walk(member)

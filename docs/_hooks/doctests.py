"""Griffe extension: the doctests of a docstring are shown as Python console blocks.

ticklet's docstrings hold doctests in their prose (``>>>`` lines and their output, up to a
blank line), which pytest runs. Markdown would read them as text (``[a, b]`` as a link); this
wraps each run of them in a fenced ``pycon`` block before mkdocstrings renders the docstring.
Docstrings are left alone in the code.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence(text: str) -> str:
    """Wrap every doctest of ``text`` in a fenced ``pycon`` block.

    >>> print(fence("Adds.\\n\\n>>> 1 + 1\\n2\\n\\nDone."))
    Adds.
    <BLANKLINE>
    ```pycon
    >>> 1 + 1
    2
    ```
    <BLANKLINE>
    Done.
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


class Doctests(griffe.Extension):
    """Fence the doctests of every docstring of a package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg)

    def _walk(self, obj: Any) -> None:
        if obj.is_alias:
            return
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence(obj.docstring.value)
        for member in obj.members.values():
            self._walk(member)

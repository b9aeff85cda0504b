"""The version of the installed ticklet distribution.

It goes into the run's and the bundles' manifests, the report and the API.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["ticklet_version"]


def ticklet_version() -> str:
    """The version of the installed ``ticklet`` distribution (its ``pyproject.toml``).

    ``"unknown"`` in a checkout that was never installed.

    >>> import re
    >>> bool(re.fullmatch(r"[0-9]+[.][0-9]+.*|unknown", ticklet_version()))
    True
    """
    try:
        return version("ticklet")
    except PackageNotFoundError:  # a checkout that was never installed
        return "unknown"

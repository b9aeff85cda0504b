"""The compiled kernels' caches follow the code they compile in, from other files too.

numba caches a kernel (``cache=True``) under the digest of the file that
defines it, and only that file: a kernel that calls one of another module
compiles that one's code into its own, and a change there alone would leave
it running the old code from the cache (after a ``git pull``, say). So each
module whose kernels call another module's names those modules and their
digests in ``KERNEL_SOURCES``: a change there must change it, and with it
the module's own digest. This test finds every such call and checks the
digests.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from pathlib import Path

import numba.core.dispatcher
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "operators", "models", "sources", "sinks", "dataflows")


def _digest(module: str) -> str:
    path = importlib.import_module(module).__file__
    assert path is not None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _kernel_modules() -> list[str]:
    """The repository's modules that define compiled kernels (``numba`` in their text)."""
    found = []
    for pkg in PACKAGES:
        for info in pkgutil.iter_modules([str(ROOT / pkg)]):
            path = ROOT / pkg / f"{info.name}.py"
            if path.exists() and "numba." in path.read_text():
                found.append(f"{pkg}.{info.name}")
    return found


def _callees(module: str) -> set[str]:
    """The other modules whose functions ``module``'s namespace holds compiled (what its kernels can call)."""
    mod = importlib.import_module(module)
    return {v.py_func.__module__ for v in vars(mod).values()
            if isinstance(v, numba.core.dispatcher.Dispatcher) and v.py_func.__module__ != module}


def test_the_kernel_modules_are_found():
    mods = _kernel_modules()
    assert {"operators.flatbook", "operators.flatmaker", "operators.flatbars"} <= set(mods), mods
    assert _callees("operators.flatmaker") == {"operators.flatbook"}
    assert _callees("operators.flatbars") == {"operators.flatbook", "operators.bars"}


@pytest.mark.parametrize("module", _kernel_modules())
def test_each_kernel_module_names_the_code_it_compiles_in(module):
    want = {m: _digest(m) for m in sorted(_callees(module))}
    have = getattr(importlib.import_module(module), "KERNEL_SOURCES", {})
    assert have == want, (f"{module}: set KERNEL_SOURCES = {want!r} (the digests of the modules its kernels "
                          "compile in, so that numba's cache of its kernels follows a change there)")

"""Writing a model bundle (see :mod:`models.bundle` for what one is).

:class:`BundleSink` receives the states that the feature and join steps
hand over when their input ends (``(instrument, kind, state)``, ``kind``
``"features"`` or ``"join"``) and, when the run closes, pickles each
instrument's states to ``states/<instrument>.pkl``. :func:`write_manifest`
then hashes every file of the bundle and writes ``manifest.json`` with the
content the caller gives (:mod:`dataflows.bundle` says what a run learnt
from) and the bundle's id. :func:`clear_bundle` removes an earlier bundle's
files from a directory before a new one is made there.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> part = BundleSink(d).build_part("save_models", "bundle", None)
>>> part.write_batch([("BTCUSDT", "features", {"scaler": 1}), ("BTCUSDT", "join", {"models": 2})])
>>> part.close()
>>> m = write_manifest(d, {"horizons": [1]})
>>> sorted(m["files"]), m["bundle_id"] == bundle_id(m["files"])
(['states/BTCUSDT.pkl'], True)
>>> sorted(p.name for p in d.iterdir())
['manifest.json', 'states']
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any, Optional

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from models.bundle import FORMAT, MANIFEST, STATES, bundle_id, state_file

__all__ = ["BundleSink", "clear_bundle", "file_sha256", "write_manifest"]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def clear_bundle(directory: Path) -> None:
    """Remove the files of a bundle from ``directory`` (its manifest and its
    states; nothing else), so that a new bundle made there holds only its own."""
    (directory / MANIFEST).unlink(missing_ok=True)
    states = directory / STATES
    if states.is_dir():
        for p in states.glob("*.pkl"):
            p.unlink()


class _BundlePartition(StatefulSinkPartition[tuple[str, str, Any], None]):
    def __init__(self, directory: Path):
        self._dir = directory
        self._states: dict[str, dict[str, Any]] = {}

    def write_batch(self, values: list[tuple[str, str, Any]]) -> None:
        for instrument, kind, state in values:
            self._states.setdefault(instrument, {})[kind] = state

    def snapshot(self) -> None:
        return None  # a bundle is written once, when the run ends

    def close(self) -> None:
        if not self._states:
            return
        (self._dir / STATES).mkdir(parents=True, exist_ok=True)
        for instrument, states in sorted(self._states.items()):
            _atomic_write(self._dir / state_file(instrument),
                          pickle.dumps(dict(sorted(states.items())), protocol=pickle.HIGHEST_PROTOCOL))
        self._states.clear()


class BundleSink(FixedPartitionedSink[tuple[str, str, Any], None]):
    """The states of each instrument, pickled into ``directory/states`` when
    the run ends (one partition: every worker's states go to it)."""

    def __init__(self, directory: str | os.PathLike):
        self._dir = Path(directory)

    def list_parts(self) -> list[str]:
        return ["bundle"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[None]) -> _BundlePartition:
        return _BundlePartition(self._dir)


def write_manifest(directory: Path, content: dict[str, Any]) -> dict[str, Any]:
    """Write ``directory/manifest.json``: ``content`` with the bundle
    ``format``, the SHA-256 of every state file (``files``) and the
    ``bundle_id`` made from them; return it. The manifest is written last and
    atomically: a directory without one is no bundle."""
    states = directory / STATES
    files = {f"{STATES}/{p.name}": file_sha256(p) for p in sorted(states.glob("*.pkl"))} if states.is_dir() else {}
    manifest = {**content, "format": FORMAT, "files": files, "bundle_id": bundle_id(files)}
    _atomic_write(directory / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return manifest

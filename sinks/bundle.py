"""Writing a model bundle (see :mod:`models.bundle` for what one is).

:class:`BundleSink` receives the states that the feature and join steps
hand over when their input ends (``(instrument, kind, state)``, ``kind``
``"features"`` or ``"join"``) and, when the run closes, writes each
instrument's states to ``states/<instrument>.pkl``
(:func:`models.bundle.dumps`). :func:`write_manifest` then hashes every file
of the bundle and writes ``manifest.json`` with the content the caller gives
(:mod:`dataflows.bundle` says what a run learnt from), the bundle's id and,
with a key, its signature. :func:`clear_bundle` removes an earlier bundle's
files from a directory before a new one is made there.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> part = BundleSink(d).build_part("save_models", "bundle", None)
>>> part.write_batch([("BTCUSDT", "features", {"scaler": 1}), ("BTCUSDT", "join", {"models": 2})])
>>> part.close()
>>> m = write_manifest(d, {"horizons": [1]})
>>> sorted(m["files"]), m["bundle_id"] == bundle_id(m), "signature" in m
(['states/BTCUSDT.pkl'], True, False)
>>> from models.bundle import signed_by
>>> signed_by(write_manifest(d, {"horizons": [1]}, key=b"sixteen or more bytes"), b"sixteen or more bytes")
True
>>> sorted(p.name for p in d.iterdir())
['manifest.json', 'states']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from models.bundle import FORMAT, MANIFEST, STATES, bundle_id, dumps, signature, state_file
from sinks.fatal import EXIT_WRITE_FAILED, write_failed

__all__ = ["BundleSink", "clear_bundle", "file_sha256", "write_manifest"]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: an :class:`OSError` leaves neither it nor the temporary file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def clear_bundle(directory: Path) -> None:
    """Remove the files of a bundle from ``directory``, so that a new bundle made there holds only its own.

    Only its manifest and its states are removed, nothing else. A ``states``
    that is a symbolic link is removed itself (never what it points to), and
    the new states are written in a directory of their own.
    """
    (directory / MANIFEST).unlink(missing_ok=True)
    states = directory / STATES
    if states.is_symlink():
        states.unlink()
    elif states.is_dir():
        for p in states.glob("*.pkl"):
            p.unlink()


class _BundlePartition(StatefulSinkPartition[tuple[str, str, Any], None]):
    def __init__(self, directory: Path, withdraw: tuple[Path, ...]):
        self._dir = directory
        self._withdraw = withdraw
        self._states: dict[str, dict[str, Any]] = {}

    def write_batch(self, values: list[tuple[str, str, Any]]) -> None:
        for instrument, kind, state in values:
            self._states.setdefault(instrument, {})[kind] = state

    def snapshot(self) -> None:
        return None  # a bundle is written once, when the run ends

    def close(self) -> None:
        if not self._states:
            return
        path = self._dir / STATES
        try:
            path.mkdir(parents=True, exist_ok=True)
            for instrument, states in sorted(self._states.items()):
                path = self._dir / state_file(instrument)
                _atomic_write(path, dumps(dict(sorted(states.items()))))
        except OSError as ex:
            with contextlib.suppress(OSError):
                clear_bundle(self._dir)
            write_failed(path, ex, withdraw=self._withdraw, then=(
                f"No model bundle was saved in {self._dir}; the run stopped with status {EXIT_WRITE_FAILED} and its "
                "outputs are incomplete. Fix the cause, then run the command again."))
        self._states.clear()


class BundleSink(FixedPartitionedSink[tuple[str, str, Any], None]):
    """The states of each instrument, written into ``directory/states`` when the run ends.

    One partition: every worker's states go to it. A state file that cannot
    be written stops the run with one line and status 74
    (:func:`sinks.fatal.write_failed`; the files of ``withdraw``, the run's
    totals, are removed) and leaves no state file.
    """

    def __init__(self, directory: str | os.PathLike, withdraw: tuple[Path, ...] = ()):
        self._dir = Path(directory)
        self._withdraw = withdraw

    def list_parts(self) -> list[str]:
        """The one partition, ``bundle``.

        >>> BundleSink("bundles/x").list_parts()
        ['bundle']
        """
        return ["bundle"]

    def part_fn(self, item_key: str) -> int:
        """Route every instrument's states to the one partition."""
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[None]) -> _BundlePartition:
        """The partition that collects the states and writes them when the run ends."""
        return _BundlePartition(self._dir, self._withdraw)


def write_manifest(directory: Path, content: dict[str, Any], key: Optional[bytes] = None) -> dict[str, Any]:
    """Write ``directory/manifest.json`` and return it: ``content`` with what makes it a bundle.

    ``content`` with the bundle ``format``, the SHA-256 of every state file
    (``files``), the ``bundle_id`` made from all of it and, with ``key``,
    its ``signature`` (:func:`models.bundle.signature`). The manifest is
    written last and atomically: a directory without one is no bundle (an
    :class:`OSError` if it cannot be written, leaving none).
    """
    states = directory / STATES
    files = {f"{STATES}/{p.name}": file_sha256(p) for p in sorted(states.glob("*.pkl"))} if states.is_dir() else {}
    # as it reads back: the id is made of what a reader parses
    manifest: dict[str, Any] = json.loads(json.dumps({**content, "format": FORMAT, "files": files}))
    manifest["bundle_id"] = bundle_id(manifest)
    if key is not None:
        manifest["signature"] = signature(manifest, key)
    _atomic_write(directory / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return manifest

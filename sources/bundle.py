"""Reading a model bundle (see :mod:`models.bundle`), verified before use.

Pickled learners run code when they are loaded, so a bundle is read only
from the path the user gives, and in two steps:

1. :func:`read_manifest` reads ``manifest.json`` alone: its format, the
   list of state files and their SHA-256, each file checked against it
   (nothing outside ``states/``, nothing missing, nothing changed), and the
   bundle id recomputed from them. The caller then checks that the bundle
   fits the run (:func:`models.bundle.mismatch`) before anything is
   unpickled.
2. :func:`load_states` unpickles the verified files, checking each file's
   hash again on the bytes it unpickles.

The hashes prove that the files are those the manifest names, not who made
them: a bundle is as trustworthy as whoever could write its directory.
Every problem is a :class:`BundleError` with a one-line message naming the
bundle and what is wrong.

Examples
--------
>>> import pathlib, tempfile
>>> read_manifest(pathlib.Path(tempfile.mkdtemp()))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sources.bundle.BundleError: ...: not a model bundle (no manifest.json)
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

from models.bundle import FORMAT, MANIFEST, STATES, bundle_id

__all__ = ["BundleError", "load_states", "read_manifest"]


class BundleError(ValueError):
    """A bundle that cannot be used; the message is one line naming it."""


def read_manifest(path: Path) -> dict[str, Any]:
    """The verified manifest of the bundle at ``path`` (see the module
    docstring); a :class:`BundleError` if anything is wrong."""
    mpath = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"{path}: no such directory")
    if not mpath.is_file():
        raise BundleError(f"{path}: not a model bundle (no {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_bytes())
    except (OSError, ValueError) as ex:
        raise BundleError(f"{mpath}: unreadable manifest ({str(ex).splitlines()[0]})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: unreadable manifest (not a JSON object)")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: bundle format {manifest.get('format')!r}, this ticklet reads format {FORMAT}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{path}: the manifest lists no state files")
    for rel, digest in files.items():
        name = rel.removeprefix(f"{STATES}/")
        if name == rel or "/" in name or name.startswith(".") or not name.endswith(".pkl"):
            raise BundleError(f"{path}: the manifest names {rel!r}, not a file of {STATES}/")
        f = path / rel
        if not f.is_file():
            raise BundleError(f"{path}: {rel} is missing")
        if hashlib.sha256(f.read_bytes()).hexdigest() != digest:
            raise BundleError(f"{path}: {rel} does not match its SHA-256 in the manifest (changed or damaged)")
    if bundle_id(files) != manifest.get("bundle_id"):
        raise BundleError(f"{path}: the bundle id {manifest.get('bundle_id')!r} does not match its files")
    return manifest


def load_states(path: Path, manifest: dict[str, Any], rel: str) -> dict[str, Any]:
    """Unpickle one state file ``rel`` of a bundle whose manifest
    :func:`read_manifest` verified; its bytes are checked against the
    manifest again (the file may have changed since)."""
    digest = manifest["files"].get(rel)
    if digest is None:
        raise BundleError(f"{path}: {rel} is not in the manifest")
    data = (path / rel).read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"{path}: {rel} does not match its SHA-256 in the manifest (changed or damaged)")
    try:
        states = pickle.loads(data)  # noqa: S301 - verified against the manifest the user chose to trust
    except Exception as ex:  # a bundle of code this version cannot rebuild
        why = (str(ex).splitlines() or [""])[0]
        raise BundleError(f"{path}: {rel} cannot be loaded ({type(ex).__name__}: {why})") from None
    if not isinstance(states, dict):
        raise BundleError(f"{path}: {rel} holds no states")
    return states

"""Reading a model bundle (see :mod:`models.bundle`), verified before use.

A bundle is read only from the path the user gives, and in two steps:

1. :func:`read_manifest` reads ``manifest.json`` alone: its format (a bundle
   of an older format is refused, saying how to remake it), the bundle id
   recomputed from the whole manifest, the signature when a key is given
   (a bundle that is unsigned or signed with another key is refused), and
   the state files: only files of ``states/`` that the manifest lists, each
   checked against its SHA-256 (nothing missing, nothing changed). The
   caller then checks that the bundle fits the run
   (:func:`models.bundle.mismatch`) before any state is read.
2. :func:`load_states` reads one verified state file with
   :func:`models.bundle.loads`, which builds only the classes ticklet's
   learners are made of and calls nothing else, after checking the file's
   hash again on the bytes it reads.

Every file is opened below the bundle's directory without following a
symbolic link at any step (``states``, the state file, the manifest): a
link, even to a file whose bytes match, is refused. The directory the user
names may itself be a link. The id proves that the manifest and the files
are those it was made with; the signature, that whoever made it had the
key. Every problem is a :class:`BundleError` with a one-line message naming
the bundle and what is wrong.

Examples
--------
>>> import pathlib, tempfile
>>> read_manifest(pathlib.Path(tempfile.mkdtemp()))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sources.bundle.BundleError: ...: not a model bundle (no manifest.json)
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Optional

from models.bundle import MANIFEST, STATES, UnsafeState, bundle_id, format_problem, loads, signed_by

__all__ = ["BundleError", "load_states", "read_manifest"]


class BundleError(ValueError):
    """A bundle that cannot be used; the message is one line naming it."""


def _open_below(path: Path, rel: str, missing: str) -> int:
    """A file descriptor of the bundle file ``rel``, opened without following a symbolic link.

    ``rel`` is ``manifest.json`` or ``states/NAME``; every part of it is
    opened relative to the one before. The caller closes the descriptor.
    ``missing``: what the error says when a part does not exist.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        raise BundleError(f"{path}: no such directory") from None
    parts = rel.split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        here = "/".join(parts[:i + 1])
        flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_NONBLOCK if last else os.O_DIRECTORY)
        try:
            nxt = os.open(part, flags, dir_fd=fd)
        except OSError as ex:
            try:
                link = stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
            except OSError:
                link = False
            os.close(fd)
            if link:
                raise BundleError(f"{path}: {here} is a symbolic link (a bundle's files must be its own): "
                                  "refused") from None
            if ex.errno == errno.ENOENT:
                raise BundleError(f"{path}: {missing or f'{here} is missing'}") from None
            raise BundleError(f"{path}: {here}: {ex.strerror}") from None
        os.close(fd)
        fd = nxt
    return fd


def _read(path: Path, rel: str, missing: str = "") -> bytes:
    """The bytes of the regular file ``rel`` of the bundle at ``path`` (see :func:`_open_below`)."""
    fd = _open_below(path, rel, missing)
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BundleError(f"{path}: {rel} is not a regular file")
        return f.read()


def _check_hash(path: Path, rel: str, data: bytes, digest: Any) -> None:
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"{path}: {rel} does not match its SHA-256 in the manifest (changed or damaged)")


def read_manifest(path: Path, key: Optional[bytes] = None) -> dict[str, Any]:
    """The verified manifest of the bundle at ``path`` (see the module docstring).

    Signed with ``key`` if one is given; a :class:`BundleError` if anything
    is wrong.
    """
    raw = _read(path, MANIFEST, missing=f"not a model bundle (no {MANIFEST})")
    mpath = path / MANIFEST
    try:
        manifest = json.loads(raw)
    except ValueError as ex:
        raise BundleError(f"{mpath}: unreadable manifest ({str(ex).splitlines()[0]})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: unreadable manifest (not a JSON object)")
    problem = format_problem(manifest.get("format"))
    if problem is not None:
        raise BundleError(f"{path}: {problem}")
    if bundle_id(manifest) != manifest.get("bundle_id"):
        raise BundleError(f"{path}: the manifest does not match its bundle id {manifest.get('bundle_id')!r} "
                          "(changed or damaged)")
    if key is not None and "signature" not in manifest:
        raise BundleError(f"{path}: the bundle is not signed, and TICKLET_BUNDLE__KEY is set: remake it with the "
                          "key set, or unset the key")
    if key is not None and not signed_by(manifest, key):
        raise BundleError(f"{path}: the bundle's signature is not that of TICKLET_BUNDLE__KEY (made with another "
                          "key, or changed since)")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{path}: the manifest lists no state files")
    for rel, digest in files.items():
        name = rel.removeprefix(f"{STATES}/")
        if name == rel or "/" in name or name.startswith(".") or not name.endswith(".pkl"):
            raise BundleError(f"{path}: the manifest names {rel!r}, not a file of {STATES}/")
        _check_hash(path, rel, _read(path, rel), digest)
    return manifest


def load_states(path: Path, manifest: dict[str, Any], rel: str) -> dict[str, Any]:
    """The states of one state file ``rel`` of a bundle whose manifest :func:`read_manifest` verified.

    They are read with :func:`models.bundle.loads`; the file's bytes are
    checked against the manifest again (the file may have changed since).
    """
    digest = manifest["files"].get(rel)
    if digest is None:
        raise BundleError(f"{path}: {rel} is not in the manifest")
    data = _read(path, rel)
    _check_hash(path, rel, data, digest)
    try:
        states = loads(data)
    except UnsafeState as ex:
        raise BundleError(f"{path}: {rel} refers to {ex}, which no ticklet bundle holds: refused, without "
                          "calling it") from None
    except Exception as ex:  # a bundle of code this version cannot rebuild
        why = (str(ex).splitlines() or [""])[0]
        raise BundleError(f"{path}: {rel} cannot be loaded ({type(ex).__name__}: {why})") from None
    if not isinstance(states, dict):
        raise BundleError(f"{path}: {rel} holds no states")
    return states

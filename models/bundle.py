"""Model bundles: the pure part (no I/O).

A model bundle is a directory that a run on history leaves behind
(``ticklet backtest PATH... --save-models DIR``): the learners and feature
scaler of every instrument, pickled (``states/<instrument>.pkl``), and
``manifest.json``, which says what they learnt from and holds the SHA-256
of every file. Writing it is :mod:`sinks.bundle`, reading and verifying it
:mod:`sources.bundle`; this module has what both agree on: the format
version, the bundle's id, what makes a bundle unfit for a run, and which
bundle instrument starts which instrument of a run.

Examples
--------
>>> files = {"states/BTCUSDT.pkl": "ab" * 32}
>>> bundle_id(files) == bundle_id(dict(files)), len(bundle_id(files))
(True, 16)
>>> m = {"format": FORMAT, "features": ["a", "b"], "bar_interval_ms": 1000, "horizons": [1, 10]}
>>> mismatch(m, {"format": FORMAT, "features": ["a", "b"], "bar_interval_ms": 60000, "horizons": [1, 10]})
'bar interval 1000 ms in the bundle, 60000 ms in this run (TICKLET_BARS__INTERVAL_MS)'
>>> source_instrument("BTCUSDT-PERP", {"BTCUSDT-PERP": "BTCUSDT"}, {"BTCUSDT"})
'BTCUSDT'
>>> source_instrument("ETHUSDT", {}, {"BTCUSDT"}) is None
True
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
from typing import Any, Optional

__all__ = ["FORMAT", "MANIFEST", "STATES", "bundle_id", "mismatch", "source_instrument", "state_file"]

#: Version of the bundle layout and of the states in it; a bundle of another format is refused.
FORMAT = 1
#: The manifest's file name in a bundle.
MANIFEST = "manifest.json"
#: The directory of the pickled states in a bundle.
STATES = "states"

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def state_file(instrument: str) -> str:
    """The bundle-relative path of an instrument's states.

    >>> state_file("BTCUSDT-PERP")
    'states/BTCUSDT-PERP.pkl'
    """
    if not _SAFE.fullmatch(instrument):
        raise ValueError(f"instrument name {instrument!r} cannot name a file")
    return f"{STATES}/{instrument}.pkl"


def bundle_id(files: Mapping[str, str]) -> str:
    """The id of a bundle: 16 hex digits of the SHA-256 of its format and of
    its files' hashes, so that the same states give the same id, and any
    other states another one."""
    canonical = json.dumps({"format": FORMAT, "files": dict(files)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def mismatch(bundle: Mapping[str, Any], run: Mapping[str, Any]) -> Optional[str]:
    """The first difference that makes a bundle unfit for a run, in words
    (None if it fits): its format, its feature names, its bar interval, its
    feature scaler, its horizons. Both are dicts with the keys ``format``,
    ``features``, ``bar_interval_ms``, ``horizons`` and (optionally)
    ``scaler``, as in the manifest."""
    if bundle.get("format") != run["format"]:
        return f"bundle format {bundle.get('format')!r}, this ticklet reads format {run['format']}"
    fb, fr = list(bundle.get("features") or []), list(run["features"])
    if fb != fr:
        only_b = [f for f in fb if f not in fr]
        only_r = [f for f in fr if f not in fb]
        if only_b or only_r:
            what = "; ".join(x for x in (f"only in the bundle: {', '.join(only_b)}" if only_b else "",
                                         f"only in this run: {', '.join(only_r)}" if only_r else "") if x)
        else:
            what = "the same names in another order"
        return f"feature names differ ({what}; see TICKLET_FEATURES__*)"
    if bundle.get("bar_interval_ms") != run["bar_interval_ms"]:
        return (f"bar interval {bundle.get('bar_interval_ms')} ms in the bundle, {run['bar_interval_ms']} ms in this "
                "run (TICKLET_BARS__INTERVAL_MS)")
    if "scaler" in run and bundle.get("scaler") != run["scaler"]:
        return (f"feature scaler {bundle.get('scaler')!r} in the bundle, {run['scaler']!r} in this run "
                "(TICKLET_FEATURES__SCALER)")
    hb, hr = list(bundle.get("horizons") or []), list(run["horizons"])
    if hb != hr:
        return f"horizons {hb} in the bundle, {hr} in this run (TICKLET_FORECAST__HORIZONS)"
    return None


def source_instrument(instrument: str, mapping: Mapping[str, str], available: Collection[str]) -> Optional[str]:
    """The bundle instrument whose states start ``instrument``: its entry in
    ``mapping``, else the entry ``"*"``, else itself; None when that one is
    not in the bundle (``available``): it starts cold.

    >>> source_instrument("ETHUSDT", {"*": "BTCUSDT"}, {"BTCUSDT", "ETHUSDT"})
    'BTCUSDT'
    >>> source_instrument("ETHUSDT", {"ETHUSDT": "ETHUSDT", "*": "BTCUSDT"}, {"BTCUSDT", "ETHUSDT"})
    'ETHUSDT'
    """
    src = mapping.get(instrument, mapping.get("*", instrument))
    return src if src in available else None

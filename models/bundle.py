"""Model bundles: the pure part (no I/O).

A model bundle is a directory that a run on history leaves behind
(``ticklet backtest PATH... --save-models DIR``): the learners and feature
scaler of every instrument (``states/<instrument>.pkl``), and
``manifest.json``, which says what they learnt from and holds the SHA-256
of every file. Writing it is :mod:`sinks.bundle`, reading and verifying it
:mod:`sources.bundle`; this module has what both agree on: the format
version, the bundle's id and signature, how states are written and read,
what makes a bundle unfit for a run, and which bundle instrument starts
which instrument of a run.

**States without code execution.** The states are pickles, written with
:func:`dumps` and read only with :func:`loads`, an unpickler that builds
nothing but the classes ticklet's learners and feature scaler are made of
(:data:`ALLOWED`: ticklet's own state classes, the River estimators, optimizers,
statistics and tree nodes its learners use, NumPy's array and scalar
rebuilders, ``collections``' containers, ``random.Random``, ...), and rebuilds
a bound method only for the few River methods that a learner keeps as an
attribute (:data:`METHODS`). Anything else a pickle refers to, such as
``os.system``, ``builtins.eval`` or ``builtins.getattr`` on another object,
is refused (:class:`UnsafeState`) before it is called. The CNN-GRU keeps its
network as NumPy arrays, so no torch code is ever unpickled.

**Id and signature.** The bundle id is made from the whole manifest (every
field but the id and the signature, the SHA-256 of every state file
included) as canonical JSON: rewriting any field of the manifest, or any
state file, makes another id. With a key, :func:`signature` is an
HMAC-SHA256 of that same content: it says who made the bundle. The key is
a setting, ``TICKLET_BUNDLE__KEY`` (:class:`BundleConfig`).

Examples
--------
>>> m = {"format": FORMAT, "files": {"states/BTCUSDT.pkl": "ab" * 32}, "horizons": [1, 10]}
>>> bundle_id(m) == bundle_id({**m, "bundle_id": "x", "signature": "y"}), len(bundle_id(m))
(True, 16)
>>> bundle_id(m) == bundle_id({**m, "horizons": [1, 5]})
False
>>> key = b"sixteen or more bytes"
>>> signed = {**m, "signature": signature(m, key)}
>>> signed_by(signed, key), signed_by(signed, b"another key of 16+ bytes"), signed_by(m, key)
(True, False, False)
>>> loads(dumps({"a": [1.0, 2.0]}))
{'a': [1.0, 2.0]}
>>> import os, pickle
>>> loads(pickle.dumps(os.system))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
models.bundle.UnsafeState: ...system
>>> mismatch({**m, "features": ["a", "b"], "bar_interval_ms": 1000},
...          {"format": FORMAT, "features": ["a", "b"], "bar_interval_ms": 60000, "horizons": [1, 10]})
'bar interval 1000 ms in the bundle, 60000 ms in this run (TICKLET_BARS__INTERVAL_MS)'
>>> source_instrument("BTCUSDT-PERP", {"BTCUSDT-PERP": "BTCUSDT"}, {"BTCUSDT"})
'BTCUSDT'
>>> source_instrument("ETHUSDT", {}, {"BTCUSDT"}) is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import pickle
import re
import types
from collections.abc import Collection, Mapping
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["ALLOWED", "FORMAT", "MANIFEST", "METHODS", "STATES", "BundleConfig", "UnsafeState", "bundle_id", "digest",
           "dumps", "format_problem", "loads", "mismatch", "signature", "signed_by", "source_instrument", "state_file"]

#: Version of the bundle layout and of the states in it; a bundle of another format is refused.
#: Format 1 (states any pickle, the id made from the state files' hashes only) is no longer read.
FORMAT = 2
#: The manifest's file name in a bundle.
MANIFEST = "manifest.json"
#: The directory of the states in a bundle.
STATES = "states"
#: The pickle protocol of the states (fixed: the same states give the same bytes).
PROTOCOL = 5
#: The fields of a manifest that its id and signature do not cover: themselves.
UNSIGNED = ("bundle_id", "signature")

#: Every global a bundle's states may refer to, as (module, qualified name): what ticklet's learners
#: (every model of models.registry and the ensemble) and feature scalers are made of, no more
#: (tests/models/test_bundle.py::test_the_allow_list_is_what_ticklet_writes checks that saving every one
#: of them needs exactly these).
ALLOWED: frozenset[tuple[str, str]] = frozenset({
    ("builtins", "float"), ("builtins", "int"),
    ("collections", "Counter"), ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("collections", "deque"),
    ("functools", "partial"),  # River's adaptive scaler: defaultdict(partial(EWMean, fading_factor))
    ("pathlib", "PosixPath"),  # TICKLET_FORECAST__WARM_START in the config of a warm-started run
    ("random", "Random"),
    ("statistics", "NormalDist"),
    ("numpy", "dtype"),
    # the rebuilders of NumPy arrays and scalars, under NumPy 2's module names and NumPy 1's
    *((f"numpy.{core}.{mod}", name) for core in ("_core", "core")
      for mod, name in (("multiarray", "scalar"), ("numeric", "_frombuffer"))),
    ("models.base", "NaiveModel"),
    ("models.cnn_gru", "CNNGRUModel"),
    ("models.cnn_gru_config", "CNNGRUConfig"),
    ("models.deeplob", "DeepLOBModel"),
    ("models.deeplob_config", "DeepLOBConfig"),
    ("models.ensemble", "EnsembleModel"),
    ("models.registry", "LearnerConfig"),
    *(("models.river_models", c) for c in ("BayesianRegressor", "DirectionClassifier", "JackknifeRegressor",
                                            "SnarimaxForecaster")),
    ("operators.depth", "DepthConfig"),
    ("operators.features", "FeatureConfig"), ("operators.features", "FeatureState"), ("operators.features", "LevelPCA"),
    ("operators.forecast", "ForecastConfig"), ("operators.forecast", "JoinState"),
    ("operators.swt", "SWTConfig"),
    ("river._river_rust.drift", "AdaptiveWindowing"),
    *(("river._river_rust.stats", c) for c in ("RsEWMean", "RsEWVar", "RsQuantile")),
    ("river._river_rust.vectordict", "VectorDict"),
    ("river.compose.pipeline", "Pipeline"),
    ("river.conf.jackknife", "RegressionJackknife"),
    ("river.drift.adwin", "ADWIN"),
    ("river.forest.adaptive_random_forest", "ARFRegressor"),
    ("river.forest.adaptive_random_forest", "BaseTreeRegressor"),
    ("river.linear_model.bayesian_lin_reg", "BayesianLinearRegression"),
    ("river.linear_model.lin_reg", "LinearRegression"),
    ("river.linear_model.log_reg", "LogisticRegression"),
    ("river.linear_model.pa", "PARegressor"),
    ("river.metrics.mse", "MSE"),
    ("river.optim.initializers", "Zeros"),
    *(("river.optim.losses", c) for c in ("EpsilonInsensitiveHinge", "Log", "Squared")),
    ("river.optim.schedulers", "Constant"),
    ("river.optim.sgd", "SGD"),
    ("river.preprocessing.scale", "AdaptiveStandardScaler"), ("river.preprocessing.scale", "StandardScaler"),
    ("river.preprocessing.scale_target", "TargetStandardScaler"),
    ("river.stats.ewmean", "EWMean"), ("river.stats.ewvar", "EWVar"), ("river.stats.mean", "Mean"),
    ("river.stats.quantile", "Quantile"), ("river.stats.var", "Var"),
    ("river.time_series.snarimax", "Differencer"), ("river.time_series.snarimax", "SNARIMAX"),
    ("river.tree.hoeffding_adaptive_tree_regressor", "HoeffdingAdaptiveTreeRegressor"),
    ("river.tree.nodes.arf_htr_nodes", "RandomLeafAdaptive"),
    ("river.tree.nodes.branch", "NumericBinaryBranch"),
    ("river.tree.nodes.hatr_nodes", "AdaLeafRegAdaptive"), ("river.tree.nodes.hatr_nodes", "AdaNumBinaryBranchReg"),
    ("river.tree.splitter.ebst_splitter", "EBSTNode"),
    ("river.tree.splitter.ebst_splitter", "EBSTNode._update_estimator_univariate"),  # a static method it keeps
    ("river.tree.splitter.tebst_splitter", "TEBSTSplitter"),
})

#: The bound methods a state may hold, as (module, class, method): River keeps these as attributes
#: (pickled as ``getattr(obj, name)``). ``builtins.getattr`` itself is never called: a pickle's
#: getattr gives one of these, on an object of exactly that class, or is refused.
METHODS: frozenset[tuple[str, str, str]] = frozenset({
    ("river.preprocessing.scale_target", "TargetStandardScaler", "_scale"),
    ("river.preprocessing.scale_target", "TargetStandardScaler", "_unscale"),
    ("river.linear_model.pa", "PARegressor", "_calc_tau_1"),
})

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class UnsafeState(pickle.UnpicklingError):
    """A state that refers to something no ticklet bundle holds (the message names it).

    Nothing it refers to was called.
    """


def _method(obj: Any, name: Any) -> Any:
    """``getattr(obj, name)`` for the bound methods of :data:`METHODS` only.

    It gives the method of the class, bound to ``obj`` (never an attribute of
    ``obj``).
    """
    cls = type(obj)
    if not isinstance(name, str) or (cls.__module__, cls.__qualname__, name) not in METHODS:
        raise UnsafeState(f"builtins.getattr({cls.__module__}.{cls.__qualname__}, {name!r})")
    return types.MethodType(getattr(cls, name), obj)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "getattr"):
            return _method
        if (module, name) not in ALLOWED:
            raise UnsafeState(f"{module}.{name}")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeState("a persistent id")


class _Canonical(pickle._Pickler):
    """A pickler that writes equal strings once, whichever objects hold them.

    Pickle memoizes by identity: a state that went from one process to
    another (its learners ran where its ticks were read) holds as separate
    objects strings that the same state in one process shares, and would
    pickle to other bytes. With every string written once, the bytes depend
    on the values alone, and a bundle is the same whatever the number of
    processes.
    """

    def __init__(self, file: io.BytesIO, protocol: int):
        super().__init__(file, protocol)
        self._strings: dict[str, str] = {}

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if type(obj) is str:
            obj = self._strings.setdefault(obj, obj)
        super().save(obj, save_persistent_id)  # type: ignore[misc]  # pickle._Pickler.save: typeshed has it not


def dumps(states: Any) -> bytes:
    """The bytes of a state file: ``states`` pickled (protocol 5), each distinct string once (:class:`_Canonical`)."""
    out = io.BytesIO()
    _Canonical(out, PROTOCOL).dump(states)
    return out.getvalue()


def loads(data: bytes) -> Any:
    """The states that :func:`dumps` wrote, refusing any pickle that refers to what a bundle never holds.

    Raises :class:`UnsafeState` (a :class:`pickle.UnpicklingError`) for a
    pickle that refers to anything outside :data:`ALLOWED` and
    :data:`METHODS`, before it is called.
    """
    return _Unpickler(io.BytesIO(data), fix_imports=False).load()


def state_file(instrument: str) -> str:
    """The bundle-relative path of an instrument's states.

    >>> state_file("BTCUSDT-PERP")
    'states/BTCUSDT-PERP.pkl'
    """
    if not _SAFE.fullmatch(instrument):
        raise ValueError(f"instrument name {instrument!r} cannot name a file")
    return f"{STATES}/{instrument}.pkl"


def digest(manifest: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of a manifest's content.

    The content is every field but those of :data:`UNSIGNED`, as canonical
    JSON (sorted keys, no spaces).
    """
    content = {k: v for k, v in manifest.items() if k not in UNSIGNED}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def bundle_id(manifest: Mapping[str, Any]) -> str:
    """The id of a bundle: the first 16 hex digits of its manifest's :func:`digest`.

    The same run gives the same id, and any other manifest or state file
    another one.
    """
    return digest(manifest)[:16]


def signature(manifest: Mapping[str, Any], key: bytes) -> str:
    """The HMAC-SHA256 (hex), with ``key``, of a manifest's :func:`digest`."""
    return hmac.new(key, digest(manifest).encode(), hashlib.sha256).hexdigest()


def signed_by(manifest: Mapping[str, Any], key: bytes) -> bool:
    """Whether the manifest's ``signature`` is that of ``key`` (compared in constant time)."""
    sig = manifest.get("signature")
    return isinstance(sig, str) and hmac.compare_digest(sig.encode(), signature(manifest, key).encode())


def format_problem(fmt: Any) -> Optional[str]:
    """Why a bundle of format ``fmt`` cannot be read, in words (None if it can).

    >>> format_problem(FORMAT) is None
    True
    >>> format_problem(1)  # doctest: +ELLIPSIS
    'bundle format 1 is no longer read (its states could run code when loaded): remake it with ticklet train...'
    """
    if fmt == FORMAT and type(fmt) is int:
        return None
    if type(fmt) is int and 0 < fmt < FORMAT:
        return (f"bundle format {fmt} is no longer read (its states could run code when loaded): remake it with "
                "ticklet train PATH... --save-models DIR on the data its manifest lists (data.inputs)")
    return f"bundle format {fmt!r}, this ticklet reads format {FORMAT}"


def mismatch(bundle: Mapping[str, Any], run: Mapping[str, Any]) -> Optional[str]:
    """The first difference that makes a bundle unfit for a run, in words (None if it fits).

    Checked in turn: its format, its feature names, its bar interval, its
    feature scaler, its horizons. Both are dicts with the keys ``format``,
    ``features``, ``bar_interval_ms``, ``horizons`` and (optionally)
    ``scaler``, as in the manifest.
    """
    if bundle.get("format") != run["format"]:
        return format_problem(bundle.get("format"))
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
    """The bundle instrument whose states start ``instrument``, or None: it starts cold.

    That is its entry in ``mapping``, else the entry ``"*"``, else itself;
    None when that one is not in the bundle (``available``).

    >>> source_instrument("ETHUSDT", {"*": "BTCUSDT"}, {"BTCUSDT", "ETHUSDT"})
    'BTCUSDT'
    >>> source_instrument("ETHUSDT", {"ETHUSDT": "ETHUSDT", "*": "BTCUSDT"}, {"BTCUSDT", "ETHUSDT"})
    'ETHUSDT'
    """
    src = mapping.get(instrument, mapping.get("*", instrument))
    return src if src in available else None


class BundleConfig(BaseModel):
    """Model bundles: who made them (see README, "Warm start: model bundles")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: Optional[SecretStr] = Field(None, description="HMAC key of model bundles: a bundle made with it set is "
                                     "signed, and a warm start with it set loads only bundles signed with it. At "
                                     "least 16 characters (e.g. openssl rand -hex 32). A secret: never logged.")

    @field_validator("key")
    @classmethod
    def _key(cls, v: Optional[SecretStr]) -> Optional[SecretStr]:
        if v is not None and len(v.get_secret_value().encode()) < 16:
            raise ValueError("too short: at least 16 characters (e.g. the output of openssl rand -hex 32)")
        return v

    def key_bytes(self) -> Optional[bytes]:
        """The key as bytes (UTF-8), or None when unset."""
        return None if self.key is None else self.key.get_secret_value().encode()

"""Model bundles in the dataflow: what a run on history saves, and what a run starts from (see :mod:`models.bundle`).

**Saving** (``ticklet backtest PATH... --save-models DIR``): the dataflow is
built with ``save_models`` (:func:`dataflows.forecast.build_flow`): when the
input ends, the feature and join steps hand each instrument's final state
(the learners having trained offline, where they do) to
:class:`sinks.bundle.BundleSink`, which writes them into ``DIR/states``.
:func:`save_bundle` then writes ``DIR/manifest.json``: the ticklet version
and bundle format, the run's config (without the settings that say only
where outputs went and which servers were used: :data:`WHERE`, so that the
same data, settings and seed give the same id wherever the run wrote) and
its hash, the feature names, bar
interval, horizons and models, the data learnt from (the input files with
their size and SHA-256; per instrument the first and last bar end, the
bars, the labels each learner learnt), the prequential metrics at the end
of the run, what offline training did, and the SHA-256 of every state file;
then the bundle id, made from all of it, and with ``TICKLET_BUNDLE__KEY``
its signature. Each state file is read back as a warm start would read it
(:func:`models.bundle.loads`) before the manifest is written: states that
refer to a class the loader does not allow (a ticklet bug) stop the command
with one line and status 70, and no bundle.

**Starting from one** (``TICKLET_FORECAST__WARM_START=DIR``):
:func:`load_warm_start` verifies the bundle (:mod:`sources.bundle`: its id,
its signature when ``TICKLET_BUNDLE__KEY`` is set, every file), refuses one
whose format, feature names, scaler, bar interval or horizons differ from
the run's (a :class:`~core.config.ConfigError` naming the difference:
one line, exit status 2), and only then reads its states, building nothing
but the classes ticklet's learners are made of (:func:`models.bundle.loads`).
Each instrument of the run starts from the states of its bundle instrument
(``TICKLET_FORECAST__WARM_START_MAP``): the learners
(:func:`operators.forecast.warm`) and the feature scaler
(:func:`operators.features.warm`); Bytewax recovery state, where a recovery
store has some, is used instead (:func:`dataflows.ops.run_step`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from pickle import UnpicklingError
from typing import Any, NoReturn, Optional

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.config import ConfigError
from dataflows.run_manifest import config_hash
from dataflows.run_manifest import manifest as run_manifest
from dataflows.settings import Settings
from models.bundle import FORMAT, MANIFEST, loads, mismatch, source_instrument, state_file
from operators import features as features_op
from operators import forecast as forecast_op
from sinks.bundle import clear_bundle, file_sha256, write_manifest
from sinks.fatal import EXIT_SOFTWARE, stop_run, write_failed
from sources.bundle import BundleError, load_states, read_manifest

__all__ = ["WHERE", "WarmStart", "WarmStartCheck", "bar_interval_ms", "expected", "learning_config", "load_warm_start",
           "save_bundle"]

log = logging.getLogger("ticklet")


def bar_interval_ms(settings: Settings) -> int:
    """The bars' interval of a run: that of its klines when every input is klines of one interval.

    Kline bars keep their own interval; any other run has
    ``TICKLET_BARS__INTERVAL_MS``.

    >>> bar_interval_ms(Settings())  # the bundled sample: recordings
    1000
    """
    if settings.input.source == "replay":
        from sources.files import group_streams

        ivs = {s.interval_ns for s in group_streams(list(settings.input.paths), settings.input.market)}
        if len(ivs) == 1 and 0 not in ivs:
            return ivs.pop() // 1_000_000
    return settings.bars.interval_ms


def expected(settings: Settings) -> dict[str, Any]:
    """What a bundle must agree on with a run of ``settings`` (:func:`models.bundle.mismatch`).

    >>> e = expected(Settings())
    >>> e["format"] == FORMAT, e["bar_interval_ms"], e["horizons"], e["scaler"], len(e["features"])
    (True, 1000, [1, 10], 'standard', 53)
    """
    return {"format": FORMAT, "features": list(features_op.feature_names(settings.features)),
            "bar_interval_ms": bar_interval_ms(settings), "horizons": list(settings.forecast.horizons),
            "scaler": settings.features.scaler}


def _inputs(settings: Settings) -> list[dict[str, Any]]:
    if settings.input.source != "replay":  # the topic read, not the brokers that served it (see WHERE)
        return [{"kafka": settings.kafka.ticks_topic}]
    from sources.files import discover

    out = []
    for p in discover(list(settings.input.paths)):
        path = Path(p)
        out.append({"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)})
    return out


#: The settings a bundle's recorded config leaves out: they say only where the run's outputs went and which
#: servers it used or names, never what the learners learnt (section -> its fields; None: the whole section).
#: The output directory, InfluxDB and the output topics, the Kafka connection, and the settings of the other
#: commands (the collector, the API server, the downloader): the same data, model settings and seed give the
#: same bundle, id included, wherever the run wrote.
WHERE: Mapping[str, Optional[tuple[str, ...]]] = {
    "output": None, "influx": None, "collect": None, "serve": None, "api": None, "download": None,
    "kafka": ("bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
              "output_topic", "dead_letter_topic", "linger_ms", "outage_timeout_s", "delivery_timeout_s",
              "connect_timeout_s"),
}


def learning_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's config (:func:`dataflows.run_manifest.manifest`) without the settings of :data:`WHERE`.

    It is what a bundle records, and what its id covers.

    >>> c = learning_config(Settings().model_dump(mode="json"))
    >>> "output" in c, "bootstrap_servers" in c["kafka"], c["kafka"]["ticks_topic"], c["forecast"]["horizons"]
    (False, False, 'ticklet.ticks', [1, 10])
    """
    out = {}
    for section, values in config.items():
        if section not in WHERE:
            out[section] = values
        elif (fields := WHERE[section]) is not None:
            out[section] = {k: v for k, v in values.items() if k not in fields}
    return out


def _keys(d: Mapping[tuple[str, int], Any]) -> dict[str, dict[str, Any]]:
    """``{(model, horizon): v}`` as JSON: ``{model: {"horizon": v}}``."""
    out: dict[str, dict[str, Any]] = {}
    for (m, h), v in sorted(d.items()):
        out.setdefault(m, {})[str(h)] = v
    return out


def save_bundle(settings: Settings, directory: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Write and return the manifest of the bundle whose states a run of ``settings`` left in ``directory``.

    ``summary``: the run's, :func:`sinks.report.summarize`. States that
    refer to a class the bundle loader does not allow (a ticklet bug) stop
    the command with one line and status 70
    (:data:`sinks.fatal.EXIT_SOFTWARE`), a manifest that cannot be written
    with one line and status 74; either leaves no bundle.
    """
    run = run_manifest(settings)
    data: dict[str, Any] = {}
    offline: dict[str, Any] = {}
    for pkl in sorted((directory / "states").glob("*.pkl")):
        try:
            states = loads(pkl.read_bytes())  # as a warm start will read it
        except UnpicklingError as ex:  # a learner holding a class the loader does not allow: a ticklet bug
            _unsaveable(settings, directory, pkl.stem, run["ticklet_version"], ex)
        join: forecast_op.JoinState = states["join"]
        inst = pkl.stem
        data[inst] = {"ts_first": join.ts_first, "ts_last": join.ts_last, "bars": join.n_rows,
                      "labels": _keys(join.n_learnt)}
        reports = {k: r for k, m in join.models.items() if (r := getattr(m, "offline_report", None))}
        if reports:
            offline[inst] = _keys(reports)
    config = learning_config(run["config"])
    content = {
        **expected(settings),
        "ticklet_version": run["ticklet_version"],
        "config": config,
        "config_hash": config_hash(config),
        "models": list(settings.forecast.models),
        "data": {"inputs": _inputs(settings), "instruments": data},
        "metrics": summary.get("instruments", {}),
        "offline": offline,
    }
    try:
        return write_manifest(directory, content, key=settings.bundle.key_bytes())
    except OSError as ex:
        with contextlib.suppress(OSError):
            clear_bundle(directory)
        write_failed(directory / MANIFEST, ex, then=(
            f"No model bundle was saved in {directory} (its states are removed); the run itself finished and its "
            f"outputs in {settings.output.dir} are complete. Fix the cause, then run the command again."))


def _unsaveable(settings: Settings, directory: Path, instrument: str, version: str, ex: Exception) -> NoReturn:
    """Stop the command: the states of ``instrument`` refer to something the bundle loader does not allow.

    ``ex`` names it, and no warm start could read them. A bug in ticklet (or
    a learner of one's own that :data:`models.bundle.ALLOWED` lacks), not in
    the data or settings: one line saying what to report,
    :data:`~sinks.fatal.EXIT_SOFTWARE`, and no half-made bundle left (its
    states are removed; it never had a manifest).
    """
    clear_bundle(directory)
    stop_run(f"cannot save the model bundle {directory}: the states of {instrument} refer to {ex}, which the bundle "
             "loader does not allow (models.bundle.ALLOWED), so no warm start could read them. This is a bug in "
             f"ticklet, not in your data or settings: please report it with this line, the ticklet version "
             f"({version}) and TICKLET_FORECAST__MODELS={json.dumps(list(settings.forecast.models))} (a learner "
             "class of your own must be added to models.bundle.ALLOWED). The run itself finished and its outputs in "
             f"{settings.output.dir} are complete; no bundle was saved (status {EXIT_SOFTWARE}).", EXIT_SOFTWARE)


@dataclass
class WarmStart:
    """A verified bundle and the states a run starts from.

    :meth:`features` and :meth:`join` give an instrument's starting state
    (None: it starts cold), a fresh copy each time.
    """

    path: Path
    manifest: dict[str, Any]
    settings: Settings
    states: dict[str, dict[str, Any]]  # bundle instrument -> {"features": ..., "join": ...}
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: set[str] = field(default_factory=set)  # the run's instruments that started afresh (not resumed)
    used: set[str] = field(default_factory=set)  # ... and of those, the ones that started from the bundle
    said: bool = False  # whether unused() has said it

    @property
    def id(self) -> str:
        """The bundle's id (its manifest's ``bundle_id``), the origin of the learners it starts."""
        return str(self.manifest["bundle_id"])

    def _source(self, instrument: str) -> Optional[dict[str, Any]]:
        src = source_instrument(instrument, self.settings.forecast.warm_start_map, self.states)
        with self.lock:
            self.started.add(instrument)
            if src is not None:
                self.used.add(instrument)
        return None if src is None else self.states[src]

    def unused(self) -> Optional[str]:
        """The warning line, once, at the end of a run in which no instrument started from the bundle.

        It says so and why; None otherwise, and after the first time.
        """
        with self.lock:
            if self.used or self.said:
                return None
            self.said = True
            started = sorted(self.started)
        held = ", ".join(sorted(self.states))
        if not started:
            why = ("no instrument of this run started afresh: a recovery store (-r) resumed every one from its "
                   "snapshot, or the input held no ticks (a finished store resumes at the end of its input; a warm "
                   "start with recovery needs a store of its own)")
        else:
            why = (f"none of this run's instruments ({', '.join(started)}) is in it, and "
                   "TICKLET_FORECAST__WARM_START_MAP maps none of them to one of its instruments: they started cold")
        return f"bundle {self.id} ({self.path}, holding {held}) went unused: {why}"

    def features(self, instrument: str) -> Optional[features_op.FeatureState]:
        """The feature state ``instrument`` starts from (:func:`operators.features.warm`), or None: cold."""
        src = self._source(instrument)
        if src is None or "features" not in src:
            return None
        with self.lock:
            return features_op.warm(src["features"], self.settings.features)

    def join(self, instrument: str) -> Optional[forecast_op.JoinState]:
        """The learners' state ``instrument`` starts from (:func:`operators.forecast.warm`), or None: cold."""
        src = self._source(instrument)
        if src is None or "join" not in src:
            return None
        with self.lock:
            return forecast_op.warm(src["join"], self.settings.forecast, self.id)


class _Check(StatelessSinkPartition[Any]):
    def __init__(self, warm: WarmStart):
        self._warm = warm

    def write_batch(self, items: list[Any]) -> None:
        pass

    def close(self) -> None:
        line = self._warm.unused()
        if line is not None:
            log.warning("%s", line)


class WarmStartCheck(DynamicSink[Any]):
    """A sink that takes nothing and, when the run ends, warns in one line if no instrument started from the bundle.

    See :meth:`WarmStart.unused`: every instrument resumed from a recovery
    store, or none is in the bundle. Its input is any stream downstream of
    the join, so that it closes after it.
    """

    def __init__(self, warm: WarmStart):
        self._warm = warm

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Check:
        """The partition of one worker, which warns when it closes."""
        return _Check(self._warm)


def load_warm_start(settings: Settings) -> Optional[WarmStart]:
    """The bundle of ``TICKLET_FORECAST__WARM_START``, verified and checked against ``settings``.

    None when unset. A bundle that is missing, damaged, of another format or
    unfit for the run is a :class:`~core.config.ConfigError` naming it and
    the difference.
    """
    path = settings.forecast.warm_start
    if path is None:
        return None
    name = "TICKLET_FORECAST__WARM_START"
    try:
        manifest = read_manifest(Path(path), key=settings.bundle.key_bytes())
        why = mismatch(manifest, expected(settings))
        if why is not None:
            raise ConfigError(f"{name}: bundle {path} does not fit this run: {why}")
        instruments = {Path(rel).stem: rel for rel in manifest["files"]}
        wanted = settings.forecast.warm_start_map
        missing = sorted({src for src in wanted.values() if src not in instruments})
        if missing:
            raise ConfigError(f"TICKLET_FORECAST__WARM_START_MAP: {', '.join(missing)} not in bundle {path} "
                              f"(it holds {', '.join(sorted(instruments))})")
        states = {}
        for inst, rel in instruments.items():
            if rel != state_file(inst):
                raise BundleError(f"{path}: {rel} is not named as a state file")
            states[inst] = load_states(Path(path), manifest, rel)
    except BundleError as ex:
        raise ConfigError(f"{name}: {ex}") from None
    if settings.bundle.key is None and "signature" in manifest:
        log.warning("bundle %s is signed, but TICKLET_BUNDLE__KEY is not set: who made it is not checked",
                    manifest["bundle_id"])
    cold = [m for m in settings.forecast.models if m not in manifest.get("models", [])]
    if cold:
        log.warning("bundle %s has no %s: they start cold", manifest["bundle_id"], ", ".join(cold))
    return WarmStart(Path(path), manifest, settings, states)

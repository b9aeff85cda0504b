"""The root of the configuration: one :class:`Settings`, read from the environment, that composes every config.

Every component's config is a group of it. Variables use the prefix
``TICKLET_`` and ``__`` between nested names, and may also come from a
``.env`` file in the working directory::

    TICKLET_BARS__INTERVAL_MS=500
    TICKLET_FORECAST__HORIZONS='[1, 5, 30]'
    TICKLET_INPUT__PATHS='["../shared/data/binance-ws/spot"]'

Each group's config lives beside its component (``TICKLET_BARS__*``:
:class:`operators.bars.BarConfig`, ``TICKLET_KAFKA__*``:
:class:`core.config.KafkaConfig`, ...: the field types below say where);
this module only composes them, reads the environment
(:func:`read_settings`) and renders a bad setting as one line. Only
``dataflows/`` and the apps read settings; operators receive the nested
config objects. Reading them opens no connection. The tables of
``ticklet config`` are :mod:`ticklet.settings_tables`.
"""

from __future__ import annotations

import difflib
import os
import sys
import typing
from typing import Any, Optional

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import SettingsConfigDict, SettingsError

from core.config import ConfigError, EnvSettings, KafkaConfig
from dataflows.api import ApiConfig
from models.bundle import BundleConfig
from models.registry import BOOK_LEARNERS
from operators.bars import BarConfig
from operators.cross import CrossConfig
from operators.features import FeatureConfig
from operators.forecast import ForecastConfig
from operators.maker import MakerConfig
from operators.pnl import ExecutionConfig
from operators.sanity import SanityConfig
from operators.signals import SignalConfig
from sinks.influx_config import InfluxConfig
from sinks.output_config import OutputConfig
from sinks.serve_config import ServeConfig
from sources.binance_live import CollectConfig
from sources.download import DownloadConfig
from sources.input_config import InputConfig

__all__ = ["Settings", "load_settings", "nearest_setting", "read_settings"]


class Settings(EnvSettings):
    """ticklet's settings."""

    model_config = SettingsConfigDict(
        env_prefix="TICKLET_", env_nested_delimiter="__", env_file=".env", extra="ignore", frozen=True
    )

    input: InputConfig = Field(default_factory=InputConfig, description="Input connector.")
    kafka: KafkaConfig = Field(default_factory=KafkaConfig, description="Kafka cluster and topics.")
    influx: InfluxConfig = Field(default_factory=InfluxConfig, description="InfluxDB v2 server and write policy.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Output files.")
    download: DownloadConfig = Field(default_factory=DownloadConfig,
        description="Historical archives (ticklet download).")
    sanity: SanityConfig = Field(default_factory=SanityConfig,
        description="Plausibility checks on the ticks (price band, clock skew, kline consistency).")
    bars: BarConfig = Field(default_factory=BarConfig, description="Event-time bars.")
    features: FeatureConfig = Field(default_factory=FeatureConfig, description="Features, SWT and scaling.")
    cross: CrossConfig = Field(default_factory=CrossConfig,
        description="Cross-asset features: leader -> follower pairs whose follower rows gain the leader's lagged "
        "features (operators.cross).")
    forecast: ForecastConfig = Field(default_factory=ForecastConfig,
        description="Models, horizons and the time-travel join.")
    bundle: BundleConfig = Field(default_factory=BundleConfig,
        description="Model bundles (TICKLET_FORECAST__WARM_START, ticklet train --save-models).")
    signals: SignalConfig = Field(default_factory=SignalConfig, description="Decisions and sizes from the forecasts.")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig,
                                       description="Simulated fills, costs and books (paper trading).")
    maker: MakerConfig = Field(default_factory=MakerConfig,
                               description="Maker books: resting post-only quotes with queue position and latency.")
    collect: CollectConfig = Field(default_factory=CollectConfig, description="The live Binance collector.")
    api: ApiConfig = Field(default_factory=ApiConfig, description="The dataflow's metrics API.")
    serve: ServeConfig = Field(default_factory=ServeConfig,
                               description="ticklet serve: the HTTP/WebSocket API and the live page.")

    @model_validator(mode="after")
    def _book_for_book_learners(self) -> Settings:
        """With a learner that reads the book itself among the models, feature rows carry the book."""
        d = self.features.depth
        if d.enabled and not d.book_in_row and BOOK_LEARNERS.intersection(self.forecast.models):
            depth = d.model_copy(update={"book_in_row": True})  # frozen: set while validating, as pydantic does
            object.__setattr__(self, "features", self.features.model_copy(update={"depth": depth}))
        return self

    @model_validator(mode="after")
    def _maker_without_cross(self) -> Settings:
        if self.maker.enabled and self.cross.pairs:
            raise ValueError("maker books (TICKLET_MAKER__ENABLED) do not run with cross-asset pairs "
                             "(TICKLET_CROSS__PAIRS) yet: the decisions are made where the ticks are not read")
        return self

    @model_validator(mode="after")
    def _signals_trade_forecasts(self) -> Settings:
        f, s = self.forecast, self.signals
        if s.models is not None:
            unknown = [m for m in s.models if m not in f.models]
            if not s.models or unknown:
                why = f"models that are not forecast: {unknown}" if unknown else "an empty list trades nothing"
                raise ValueError(f"TICKLET_SIGNALS__MODELS: {why} (forecast: {list(f.models)}; unset: every model)")
        if s.horizons is not None:
            unknown_h = [h for h in s.horizons if h not in f.horizons]
            if not s.horizons or unknown_h:
                why = f"horizons that are not forecast: {unknown_h}" if unknown_h else "an empty list trades nothing"
                raise ValueError(f"TICKLET_SIGNALS__HORIZONS: {why} (forecast: {list(f.horizons)}; "
                                 "unset: every horizon)")
        return self


_SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "KEY")  # TICKLET_BUNDLE__KEY, TICKLET_SERVE__API_KEY
#: What a list or group variable must hold when its value is not that JSON.
_JSON_NEEDED = {"list_type": "a JSON list, e.g. [1, 10] or [\"a\", \"b\"]",
                "tuple_type": "a JSON list, e.g. [1, 10] or [\"a\", \"b\"]",
                "set_type": "a JSON list, e.g. [1, 10] or [\"a\", \"b\"]",
                "dict_type": "a JSON object", "model_type": "a JSON object", "model_attributes_type": "a JSON object"}


def _dotenv() -> dict[str, str]:
    """The ``TICKLET_*`` lines of the ``.env`` file that pydantic-settings reads, upper-cased.

    The file is the one in the working directory; a ``.env`` that cannot be
    read raises :class:`ConfigError`.
    """
    env_file = Settings.model_config.get("env_file")
    if not isinstance(env_file, (str, os.PathLike)) or not os.path.isfile(env_file):
        return {}
    from dotenv import dotenv_values

    try:
        values = dotenv_values(env_file)
    except OSError as ex:
        raise ConfigError(f"{os.fspath(env_file)}: cannot be read ({ex.strerror or ex})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{os.fspath(env_file)}: not a text file of NAME=value lines") from None
    return {k.upper(): v for k, v in values.items() if v is not None and k.upper().startswith("TICKLET_")}


def _environ() -> dict[str, str]:
    return {k.upper(): v for k, v in os.environ.items() if k.upper().startswith("TICKLET_")}


def _setting_errors(ex: ValidationError, dotenv: Optional[dict[str, str]] = None) -> list[str]:
    """Plain lines naming each bad variable (and ``.env`` when it comes from there).

    The values of secrets are never shown.
    """
    out = []
    environ = _environ()
    for e in ex.errors():
        names = [str(p) for p in e["loc"] if not isinstance(p, int)]
        items = [p for p in e["loc"] if isinstance(p, int)]
        msg = e["msg"].removeprefix("Value error, ")
        if not names:  # a check across settings: its message names the variables
            out.append(f"bad setting {msg}")
            continue
        env = "TICKLET_" + "__".join(names).upper()
        where = " (in .env)" if env not in environ and env in (dotenv or {}) else ""
        if e["type"] == "extra_forbidden":  # a misspelt setting in a known group; its value is not shown
            out.append(f"unknown setting {env}{where}: {_no_such_setting(names)}")
            continue
        secret = any(w in env for w in _SECRET_WORDS)
        value = e.get("input")
        if e["type"] in _JSON_NEEDED and isinstance(value, str):
            msg = f"should be {_JSON_NEEDED[e['type']]}"
        elif items:
            msg = f"item {items[0]}: {msg}"
        got = "" if secret or e["type"] == "missing" or isinstance(value, dict) else f" (got {value!r:.80})"
        out.append(f"bad setting {env}{where}: {msg}{got}")
    return out


def _group(annotation: Any) -> Optional[type[BaseModel]]:
    """The config group a field's annotation holds (``Optional[Group]`` too), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        group = _group(arg)
        if group is not None:
            return group
    return None


def nearest_setting(names: list[str]) -> Optional[str]:
    """The setting nearest to the misspelt one ``names`` (its nested names, lower case).

    Each name that is no field of its group is replaced by the closest of
    that group's fields (:func:`difflib.get_close_matches`); None when one
    is close to none, or the names go deeper than the settings do.

    >>> nearest_setting(["forecast", "horizon"])
    'TICKLET_FORECAST__HORIZONS'
    >>> nearest_setting(["bar", "interval_ms"]), nearest_setting(["features", "swt", "windw"])
    ('TICKLET_BARS__INTERVAL_MS', 'TICKLET_FEATURES__SWT__WINDOW')
    >>> print(nearest_setting(["bars", "nope"]))
    None
    """
    group: Optional[type[BaseModel]] = Settings
    found = []
    for name in names:
        if group is None:
            return None
        fields = group.model_fields
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
            if not close:
                return None
            name = close[0]
        found.append(name)
        group = _group(fields[name].annotation)
    return "TICKLET_" + "__".join(found).upper()


def _no_such_setting(names: list[str]) -> str:
    """Why ``TICKLET_<names>`` (a field its group does not have) is no setting, and the nearest one."""
    near = nearest_setting(names)
    if near is not None:
        return f"did you mean {near}? (`ticklet config` lists them all)"
    return f"TICKLET_{'__'.join(names[:-1]).upper()} has no such setting (`ticklet config` lists them all)"


def _unknown_variables(names: set[str]) -> list[str]:
    """``TICKLET_<GROUP>__...`` variables whose group is not a setting (a typo, such as ``TICKLET_BAR__INTERVAL_MS``).

    Unknown keys inside a group are validation errors; variables without
    ``__`` (``TICKLET_DATA``) are not settings and left alone.
    """
    groups = {n.upper() for n in Settings.model_fields}
    return sorted(n for n in names if "__" in n[8:] and n[8:].split("__", 1)[0] not in groups)


def read_settings() -> Settings:
    """The settings of the environment and ``.env``.

    Raises
    ------
    ConfigError
        One line naming the first bad variable (a second line counts the
        others): a value of the wrong type or out of range, a list that is
        not JSON, an unknown model, an unknown variable (with the nearest
        setting's name, :func:`nearest_setting`), an unreadable ``.env``.
    """
    dotenv = _dotenv()
    unknown = _unknown_variables(set(_environ()) | set(dotenv))
    if unknown:
        where = " (in .env)" if unknown[0] not in _environ() else ""
        near = nearest_setting(unknown[0][8:].lower().split("__"))
        hint = f"; did you mean {near}?" if near else ""
        raise ConfigError(f"unknown setting {unknown[0]}{where}: no such group of settings{hint} (`ticklet config` "
                          f"lists them all)" + (f"\n(and {len(unknown) - 1} more: {', '.join(unknown[1:4])})"
                                                if len(unknown) > 1 else ""))
    try:
        return Settings()
    except ValidationError as ex:
        lines = _setting_errors(ex, dotenv)
    except SettingsError as ex:  # what the lenient sources let through: still one line
        lines = [f"bad setting: {ex}"]
    except OSError as ex:  # .env vanished or became unreadable after the check
        lines = [f"{ex.filename or '.env'}: cannot be read ({ex.strerror or ex})"]
    more = f"\n(and {len(lines) - 1} more bad setting(s))" if len(lines) > 1 else ""
    raise ConfigError(lines[0] + more)


def load_settings() -> Settings:
    """:func:`read_settings`, for the entry points: a bad setting is one or two plain lines and exit status 2.

    The lines, ``ticklet: bad setting TICKLET_...: why``, go to stderr.
    """
    try:
        return read_settings()
    except ConfigError as ex:
        sys.stderr.write(f"ticklet: {ex}\n")
        raise SystemExit(2) from None

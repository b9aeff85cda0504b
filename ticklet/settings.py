"""All configuration, in one :class:`Settings` read from the environment.

Variables use the prefix ``TICKLET_`` and ``__`` between nested names, and
may also come from a ``.env`` file in the working directory::

    TICKLET_BARS__INTERVAL_MS=500
    TICKLET_FORECAST__HORIZONS='[1, 5, 30]'
    TICKLET_INPUT__PATHS='["../shared/data/binance-ws/spot"]'

Only ``dataflows/`` and the CLI read settings; operators receive the nested
config objects.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from operators.bars import BarConfig
from operators.features import FeatureConfig
from operators.forecast import ForecastConfig
from operators.pnl import ExecutionConfig
from operators.sanity import SanityConfig
from operators.signals import SignalConfig
from sinks.influx_config import InfluxConfig
from sources.binance import ParseLimits

__all__ = ["CollectConfig", "DownloadConfig", "InputConfig", "KafkaConfig", "OutputConfig", "SAMPLE_DIR", "Settings",
           "load_settings", "settings_table"]

#: The bundled real sample (see data/sample/NOTICE.md).
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample"


class KafkaConfig(BaseModel):
    """The Kafka cluster and ticklet's topics (layout in the README)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers.")
    ticks_topic: str = Field("ticklet.ticks",
        description="Raw ticks in: exchange messages with their receive time, keyed by instrument.")
    output_topic: str = Field("ticklet.forecasts",
        description="Forecasts (issued and scored) and metrics out, JSON, keyed by instrument.")
    dead_letter_topic: str = Field("ticklet.dead-letters",
        description="Dead letters out: reason and raw payload, JSON.")
    tail: bool = Field(True,
        description="Keep waiting for ticks at the end of the topic (live); false stops there (backtests).")
    batch_size: int = Field(5000, ge=1, description="Most messages read from a partition per poll.")
    linger_ms: int = Field(1, ge=0, description="Producer batching delay in ms (latency against throughput).")
    outage_timeout_s: float = Field(300.0, gt=0,
        description="Longest broker outage the dataflow waits out (writes wait, reads pause, nothing is dropped; "
        "a log line at most every 30 s); past it the run stops with one error line and exit status 75, and the "
        "same command resumes from the last snapshot.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="librdkafka security.protocol.")
    sasl_mechanism: Optional[str] = Field(None, description="librdkafka sasl.mechanism, e.g. PLAIN or SCRAM-SHA-512.")
    sasl_username: Optional[str] = Field(None, description="SASL user name.")
    sasl_password: Optional[SecretStr] = Field(None, description="SASL password (a secret: never logged or printed).")

    @property
    def brokers(self) -> list[str]:
        return [b.strip() for b in self.bootstrap_servers.split(",") if b.strip()]

    def client_config(self) -> dict[str, str]:
        """librdkafka settings for security; holds the secret, pass it only to clients."""
        cfg = {"security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            cfg["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            cfg["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            cfg["sasl.password"] = self.sasl_password.get_secret_value()
        return cfg


class InputConfig(BaseModel):
    """Where ticks come from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["replay", "kafka"] = Field(
        "replay", description="Input connector: 'replay' reads recordings and archives from files; "
        "'kafka' consumes the ticks topic (TICKLET_KAFKA__TICKS_TOPIC).")
    paths: list[str] = Field(default_factory=lambda: [str(SAMPLE_DIR)],
                             description="Files or directories to replay; defaults to the bundled real sample.")
    market: Optional[Literal["spot", "usdm"]] = Field(
        None,
            description="Force the market of every input; by default it is read from the messages (fields only "
            "futures messages carry), else from the path (usdm/um/futures).")
    batch_size: int = Field(2048, ge=1, description="Records per chunk read from a file.")
    instruments: Optional[list[str]] = Field(
        None, description="Allow-list of instruments (e.g. [\"BTCUSDT\", \"BTCUSDT-PERP\"]): ticks of any other "
        "are dead-lettered. Unset: every instrument with a valid symbol, up to max_instruments.")
    max_instruments: int = Field(
        1000, ge=1, description="Most instruments admitted per input partition (a replay stream or a Kafka "
        "partition), in order of first appearance; ticks of any further one are dead-lettered and counted "
        "(instruments_refused).")
    max_line_bytes: int = Field(
        1 << 20, ge=64, description="Longest input line (recording) or message (Kafka) in bytes; a longer one is "
        "dead-lettered with its first 1 KiB and its size, and is never held whole in memory.")

    def limits(self) -> ParseLimits:
        """What the parser admits, for :func:`dataflows.ops.parse_ticks`."""
        allowed = None if self.instruments is None else frozenset(self.instruments)
        return ParseLimits(allowed, self.max_instruments, self.max_line_bytes)


class DownloadConfig(BaseModel):
    """Binance's public-data archives (``ticklet download``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field("https://data.binance.vision",
        description="Server of the archives (``--base-url`` overrides).")
    dir: Path = Field(Path("data/binance"),
        description="Directory the archives are stored under, in Binance's layout (``--out`` overrides).")
    retries: int = Field(5, ge=0,
        description="Retries of a transient failure (connection error, timeout, HTTP 5xx or 429), per request.")
    backoff_s: float = Field(1.0, ge=0,
        description="First retry delay in seconds; doubles with every retry, at most 60 s.")
    timeout_s: float = Field(30.0, gt=0, description="Connect and read timeout of each HTTP request, in seconds.")


class OutputConfig(BaseModel):
    """Where results go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dir: Path = Field(Path("out"),
        description="Directory of forecasts.csv, metrics.csv, dead_letters.jsonl and counters.json.")
    files: bool = Field(True,
        description="Write forecasts, metrics and dead letters to files in dir (counters.json is always written).")
    kafka: bool = Field(False,
        description="Publish forecasts and metrics to the output topic and dead letters to the dead-letter topic.")
    influx: bool = Field(False,
        description="Write forecasts, scored forecasts, metrics, bars, features and health to InfluxDB.")
    summary: bool = Field(True, description="Print a summary on stderr when the run ends: totals, the last metrics "
                          "per instrument, model and horizon, and where the outputs are.")
    economics: bool = Field(True, description="Decide on every forecast and trade the decisions in simulated "
                            "books: signals.csv, trades.csv, equity.csv, economics.csv.")
    progress: bool = Field(True, description="Show a progress bar on stderr while the run goes on (only ever when "
                           "stderr is a terminal, and with summary on).")


class CollectConfig(BaseModel):
    """The live Binance collector (``ticklet collect``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbols: list[str] = Field(default_factory=lambda: ["BTCUSDT"],
        description="Symbols to collect (``--symbols`` overrides).")
    market: Literal["spot", "usdm"] = Field("spot",
        description="Binance market: spot or USD-M futures (``--market`` overrides).")
    network: Literal["production", "testnet"] = Field(
        "production", description="Binance endpoints: production or testnet (see sources/binance_live.py).")
    ws_url: Optional[str] = Field(None,
        description="Websocket base URL, overriding the network's (e.g. ws://127.0.0.1:9443).")
    depth_url: Optional[str] = Field(None, description="REST depth-snapshot URL, overriding the network's.")
    streams: tuple[str, ...] = Field(("trade", "aggTrade", "bookTicker", "depth@100ms", "kline_1m"),
                                     description="Streams per symbol, as named by Binance.")
    max_streams_per_connection: Optional[int] = Field(
        None, ge=1, description="Streams per websocket connection; unset: Binance's limit (spot 1024, USD-M 200).")
    reconnect_after_s: float = Field(
        23.5 * 3600, gt=0,
            description="Reconnect every connection after this long, before Binance's 24-hour disconnect.")
    handover_timeout_s: float = Field(
        10.0, gt=0, description="Scheduled reconnects are make-before-break: the old connection is read until it "
        "delivers the new one's first message, at most this long.")
    backoff_initial_s: float = Field(0.5, gt=0,
        description="Reconnect backoff unit: the n-th failed attempt waits a random time in [0, min(max, unit * "
        "2^n)] (full jitter).")
    backoff_max_s: float = Field(60.0, gt=0, description="Longest reconnect delay.")
    ping_interval_s: float = Field(20.0, gt=0,
        description="Client keepalive ping period (Binance's own pings are answered automatically).")
    ping_timeout_s: float = Field(20.0, gt=0,
        description="Reconnect when a keepalive ping has no pong after this long.")
    snapshot_limit: int = Field(1000, ge=5, le=5000,
        description="Levels of the REST depth snapshot (spot max 5000, USD-M 1000).")
    capture_dir: Optional[Path] = Field(Path("capture"),
        description="Raw capture directory (recording format); unset: no capture.")
    events_topic: Optional[str] = Field(
        "ticklet.events", description="Normalized events out (trade, quote, depth, kline records as JSON, keyed by "
        "instrument); unset: not published.")
    book_topic: str = Field("ticklet.book",
        description="Book quotes, depth features, gaps and resyncs out, JSON, keyed by instrument.")
    metrics_port: Optional[int] = Field(None, description="Serve Prometheus metrics on this port; unset: off.")


class Settings(BaseSettings):
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
    forecast: ForecastConfig = Field(default_factory=ForecastConfig,
        description="Models, horizons and the time-travel join.")
    signals: SignalConfig = Field(default_factory=SignalConfig, description="Decisions and sizes from the forecasts.")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig,
                                       description="Simulated fills, costs and books (paper trading).")
    collect: CollectConfig = Field(default_factory=CollectConfig, description="The live Binance collector.")


def _setting_errors(ex: ValidationError) -> list[str]:
    """Plain lines naming each bad variable; the values of secrets are never shown."""
    out = []
    for e in ex.errors():
        loc = [str(p) for p in e["loc"]]
        env = "TICKLET_" + "__".join(loc).upper()
        secret = any(w in env for w in ("PASSWORD", "TOKEN", "SECRET"))
        got = "" if secret or e["type"] == "missing" else f" (got {e['input']!r:.80})"
        out.append(f"ticklet: bad setting {env}: {e['msg']}{got}")
    return out


def load_settings() -> Settings:
    """The settings of the environment (and ``.env``); a bad value prints one
    plain line per bad variable on stderr and exits with status 2.
    """
    try:
        return Settings()
    except ValidationError as ex:
        lines = _setting_errors(ex)
        sys.stderr.write("\n".join(lines[:3]) + ("\n" if len(lines) <= 3 else f"\n(and {len(lines) - 3} more)\n"))
        raise SystemExit(2) from None


def _leaves(model: type[BaseModel], prefix: str):
    for name, f in model.model_fields.items():
        ann = f.annotation
        env = f"{prefix}{name.upper()}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaves(ann, env + "__")
        else:
            default = f.get_default(call_default_factory=True)
            yield env, default, f.description or ""


def settings_table() -> str:
    """The configuration reference as a Markdown table (kept in the README).

    >>> print(settings_table().splitlines()[4][:61])
    | `TICKLET_INPUT__MARKET` | `(unset)` | Force the market of e
    """
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for env, default, desc in _leaves(Settings, "TICKLET_"):
        if isinstance(default, (list, tuple)):
            shown = json.dumps([str(x) if isinstance(x, Path) else x for x in default])
        elif isinstance(default, Path):
            shown = str(default)
        elif default is None:
            shown = "(unset)"
        else:
            shown = str(default)
        if str(SAMPLE_DIR) in shown:
            shown = shown.replace(str(SAMPLE_DIR), "data/sample")
        rows.append(f"| `{env}` | `{shown}` | {desc} |")
    return "\n".join(rows) + "\n"

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

import os
import re
import sys
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from core.config import ConfigError, check_dir, ip_address, topic_name, url
from operators.bars import BarConfig
from operators.features import FeatureConfig
from operators.forecast import ForecastConfig
from operators.pnl import ExecutionConfig
from operators.sanity import SanityConfig
from operators.signals import SignalConfig
from sinks.influx_config import InfluxConfig
from sources.binance import ParseLimits

__all__ = ["ApiConfig", "CollectConfig", "ConfigError", "DownloadConfig", "InputConfig", "KafkaConfig", "OutputConfig",
           "SAMPLE_DIR", "ServeConfig", "Settings", "check_dir", "kafka_unreachable", "load_settings",
           "read_settings"]

#: The bundled real sample (see data/sample/NOTICE.md).
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample"


def kafka_unreachable(brokers: list[str], client_config: dict[str, Any], timeout_s: float) -> Optional[str]:
    """Why the Kafka ``brokers`` did not answer a metadata request within
    ``timeout_s`` seconds, or None when they did. librdkafka's own lines
    about each failed attempt are kept off stderr."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from sinks.kafka import error_text

    cfg = {k: v for k, v in client_config.items() if k == "security.protocol" or k.startswith(("sasl.", "ssl."))}
    admin = AdminClient({**cfg, "bootstrap.servers": ",".join(brokers), "log_level": 0})
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as ex:
        return error_text(ex)
    return None


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
    delivery_timeout_s: float = Field(30.0, gt=0, le=3600,
        description="ticklet replay: how long a message may wait for the brokers' acknowledgement (librdkafka "
        "message.timeout.ms) before it counts as undelivered. Brokers that are gone stop the replay after about "
        "this long, with the undelivered count in its summary (exit status 1).")
    connect_timeout_s: float = Field(15.0, gt=0, le=3600,
        description="How long the dataflow (Kafka input or output) and the collector wait at start for the "
        "brokers before they stop with one line (exit status 2); ticklet replay then produces anyway.")

    @field_validator("bootstrap_servers")
    @classmethod
    def _hosts(cls, v: str) -> str:
        hosts = [b.strip() for b in v.split(",") if b.strip()]
        if not hosts:
            raise ValueError("no broker given: a comma-separated list of host:port")
        for h in hosts:
            host, sep, port = h.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"not host:port with a port in 1-65535: {h!r}")
        return v

    @field_validator("ticks_topic", "output_topic", "dead_letter_topic")
    @classmethod
    def _topics(cls, v: str) -> Optional[str]:
        return topic_name(v)

    @property
    def brokers(self) -> list[str]:
        return [b.strip() for b in self.bootstrap_servers.split(",") if b.strip()]

    def check_reachable(self) -> None:
        """:class:`ConfigError` (one line) when the brokers do not answer
        within ``connect_timeout_s``."""
        why = kafka_unreachable(self.brokers, self.client_config(), self.connect_timeout_s)
        if why is not None:
            raise ConfigError(f"cannot reach Kafka at {self.bootstrap_servers} (TICKLET_KAFKA__BOOTSTRAP_SERVERS) "
                              f"within {self.connect_timeout_s:g} s (TICKLET_KAFKA__CONNECT_TIMEOUT_S): {why}")

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

    @field_validator("paths")
    @classmethod
    def _some_paths(cls, v: list[str]) -> list[str]:
        if not v or not all(p.strip() for p in v):
            raise ValueError("a JSON list of one or more files or directories is needed")
        return v
    market: Optional[Literal["spot", "usdm", "coinm"]] = Field(
        None,
            description="Force the market of every input (spot, usdm: USD-M futures, coinm: COIN-M futures); by "
            "default it is read from the messages (fields only futures messages carry; a COIN-M contract's symbol), "
            "else from the path (usdm/um/futures).")
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

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> Optional[str]:
        return url(v, ("http", "https"))


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
    metrics_port: Optional[int] = Field(None, ge=1, le=65535,
        description="Serve Prometheus metrics on this port; unset: off.")
    metrics_address: str = Field("127.0.0.1",
        description="Address the metrics server listens on: 127.0.0.1 (this machine only) by default; 0.0.0.0 "
        "for every interface (e.g. in a container whose port is published).")

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        v = [s.strip().upper() for s in v]
        bad = [s for s in v if not re.fullmatch(r"[A-Z0-9]{2,30}", s)]
        if not v or bad:
            raise ValueError("a JSON list of one or more Binance symbols such as [\"BTCUSDT\"] is needed"
                             + (f"; not symbols: {bad}" if bad else ""))
        if len(set(v)) != len(v):
            raise ValueError("a symbol is listed twice")
        return v

    @field_validator("streams")
    @classmethod
    def _streams(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if not re.fullmatch(r"[A-Za-z0-9_@]+", s)]
        if not v or bad:
            raise ValueError("a JSON list of one or more Binance stream names such as [\"trade\"] is needed"
                             + (f"; not stream names: {bad}" if bad else ""))
        return v

    @field_validator("ws_url")
    @classmethod
    def _ws(cls, v: Optional[str]) -> Optional[str]:
        return url(v, ("ws", "wss"))

    @field_validator("depth_url")
    @classmethod
    def _rest(cls, v: Optional[str]) -> Optional[str]:
        return url(v, ("http", "https"))

    @field_validator("events_topic", "book_topic")
    @classmethod
    def _topics(cls, v: Optional[str]) -> Optional[str]:
        return topic_name(v)

    @field_validator("metrics_address")
    @classmethod
    def _address(cls, v: str) -> str:
        return ip_address(v)

    @model_validator(mode="after")
    def _backoff(self) -> CollectConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) is below backoff_initial_s "
                             f"({self.backoff_initial_s})")
        return self


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

class ApiConfig(BaseModel):
    """The dataflow's HTTP API: Prometheus metrics and the dataflow's graph."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(False, description="Serve /metrics (Prometheus) and /dataflow (the graph, JSON) while "
                          "the dataflow runs; Bytewax's switch BYTEWAX_DATAFLOW_API_ENABLED turns it on too.")
    address: str = Field("127.0.0.1", description="Address the API listens on: 127.0.0.1 (this machine only) by "
                         "default. 0.0.0.0 (every interface, e.g. in a container whose port is published) hands "
                         "it to Bytewax's own server, which adds Bytewax's bytewax_* metrics and can only listen "
                         "on every interface.")
    port: int = Field(3030, ge=1, le=65535, description="Port of the API (also set as BYTEWAX_DATAFLOW_API_PORT "
                      "for Bytewax's server).")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return ip_address(v)


class ServeConfig(BaseModel):
    """``ticklet serve``: the HTTP/WebSocket API and live page over the output topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str = Field("127.0.0.1", description="Address the server listens on: 127.0.0.1 (this machine only) by "
                         "default; 0.0.0.0 for every interface (e.g. in a container whose port is published).")
    port: int = Field(8000, ge=0, le=65535, description="Port of the server (0: any free port, named in the log).")
    api_key: Optional[SecretStr] = Field(None, description="If set (visible ASCII characters), every route but "
                                         "/healthz and /readyz needs this key: header X-API-Key, Authorization: "
                                         "Bearer, or ?api_key= (which also sets a same-site cookie, for the live "
                                         "page); a wrong key in any of them is refused. A secret: never logged.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins (e.g. [\"https://app.example\"], or "
                                    "[\"*\"]) whose pages may call the API from a browser, and open the stream; "
                                    "empty: the server's own pages only.")
    group_id: str = Field("ticklet-serve", description="Kafka consumer group of the server (partitions are "
                          "assigned, not balanced: every server reads every partition; no offset is committed).")
    backfill: int = Field(100_000, ge=0, description="Records read again from the end of each partition at start, "
                          "to rebuild the latest state; /readyz is ready once they are read.")
    buffer: int = Field(50_000, ge=0, description="Last records kept in memory for stream clients that resume "
                        "after an offset (older ones are read again from Kafka).")
    max_instruments: int = Field(1000, ge=1, description="Most instruments kept in the latest state; records of "
                                 "further ones are refused and counted.")
    max_pending: int = Field(10_000, ge=1, description="Records queued for one WebSocket client that does not read "
                             "them fast enough; past this it is dropped (close code 4008, counted) and may resume "
                             "with after=.")
    max_clients: int = Field(1000, ge=1, description="Most WebSocket clients at once; further ones get HTTP 503.")
    max_resuming: int = Field(8, ge=1, le=1000, description="Most stream clients at once that resume further back "
                              "than the buffer (after=), each read from Kafka by a consumer of its own; further ones "
                              "get HTTP 503 in the handshake (close code 1013 if the buffer moved on during it) and "
                              "may try again.")
    resume_prefetch_kb: int = Field(1024, ge=64, le=65536, description="What each of those consumers fetches ahead "
                                    "of the client, in KiB (librdkafka queued.max.messages.kbytes and fetch.max.bytes"
                                    "; its default is 64 MiB a consumer).")
    resume_stall_s: float = Field(30.0, gt=0, le=3600, description="A client read from Kafka that takes nothing for "
                                  "this long is dropped (close code 4008), freeing its place.")
    max_header_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024, description="Most bytes of a request's "
                                  "request line and headers (the WebSocket handshake's too); past it: HTTP 431 and "
                                  "the connection closed, before the rest is read.")
    max_headers: int = Field(100, ge=8, le=10_000, description="Most header fields in a request; past it: HTTP 431 "
                             "and the connection closed.")
    header_timeout_s: float = Field(10.0, gt=0, le=3600, description="Seconds a connection has to send a complete "
                                    "request head (the WebSocket handshake's too), from its accept or from the end "
                                    "of its previous answer; past it: HTTP 408 and the connection closed (one idle "
                                    "since an answer is closed without one; uvicorn closes those after 5 s). An "
                                    "answer, a body the API reads and an open WebSocket are not timed.")
    max_connections: int = Field(2048, ge=16, le=1_000_000, description="Most connections open at once, HTTP and "
                                 "WebSocket (more than TICKLET_SERVE__MAX_CLIENTS); past it the connection that has "
                                 "waited longest for its first request is closed (HTTP 503), else the one idle "
                                 "longest since an answer, else the new one (503). "
                                 "The open-file limit (ulimit -n) is raised to it and 256 more if need be.")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return ip_address(v)

    @field_validator("api_key")
    @classmethod
    def _key(cls, v: Optional[SecretStr]) -> Optional[SecretStr]:
        if v is not None and not v.get_secret_value().strip():
            raise ValueError("empty: unset it to serve without a key")
        if v is not None and not re.fullmatch(r"[\x21-\x7e]+", v.get_secret_value()):
            raise ValueError("not a key of visible ASCII characters (no spaces: it travels in HTTP headers)")
        return v

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        bad = [o for o in v if o != "*" and not re.fullmatch(r"https?://[^/\s]+", o)]
        if bad:
            raise ValueError(f"not origins such as https://app.example:8443 (scheme and host, no path): {bad}")
        return v

    @field_validator("group_id")
    @classmethod
    def _group(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", v):
            raise ValueError("not a consumer group name: 1 to 249 of the characters A-Z a-z 0-9 . _ -")
        return v

    @model_validator(mode="after")
    def _connections(self) -> ServeConfig:
        if self.max_connections <= self.max_clients:
            raise ValueError(f"TICKLET_SERVE__MAX_CONNECTIONS ({self.max_connections}) must be above "
                             f"TICKLET_SERVE__MAX_CLIENTS ({self.max_clients}): stream clients are connections, "
                             "and others must get in")
        return self


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
    bundle: BundleConfig = Field(default_factory=BundleConfig,
        description="Model bundles (TICKLET_FORECAST__WARM_START, ticklet train --save-models).")
    signals: SignalConfig = Field(default_factory=SignalConfig, description="Decisions and sizes from the forecasts.")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig,
                                       description="Simulated fills, costs and books (paper trading).")
    collect: CollectConfig = Field(default_factory=CollectConfig, description="The live Binance collector.")
    api: ApiConfig = Field(default_factory=ApiConfig, description="The dataflow's metrics API.")
    serve: ServeConfig = Field(default_factory=ServeConfig,
                               description="ticklet serve: the HTTP/WebSocket API and the live page.")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment and ``.env`` sources, except that a value that is
        not the JSON a list or group needs is passed on as it is: validation
        then names the variable (instead of pydantic-settings' error about
        the whole group)."""
        for source in (env_settings, dotenv_settings):
            decode = source.decode_complex_value

            def lenient(field_name: str, field: Any, value: Any, decode: Any = decode) -> Any:
                try:
                    return decode(field_name, field, value)
                except ValueError:
                    return value
            source.decode_complex_value = lenient  # type: ignore[method-assign]
        return init_settings, env_settings, dotenv_settings, file_secret_settings

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
    """The ``TICKLET_*`` lines of the ``.env`` file that pydantic-settings reads
    (in the working directory), upper-cased; a ``.env`` that cannot be read
    raises :class:`ConfigError`."""
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
    """Plain lines naming each bad variable (and ``.env`` when it comes from
    there); the values of secrets are never shown."""
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
        secret = any(w in env for w in _SECRET_WORDS)
        value = e.get("input")
        if e["type"] in _JSON_NEEDED and isinstance(value, str):
            msg = f"should be {_JSON_NEEDED[e['type']]}"
        elif items:
            msg = f"item {items[0]}: {msg}"
        where = " (in .env)" if env not in environ and env in (dotenv or {}) else ""
        got = "" if secret or e["type"] == "missing" or isinstance(value, dict) else f" (got {value!r:.80})"
        out.append(f"bad setting {env}{where}: {msg}{got}")
    return out


def _unknown_variables(names: set[str]) -> list[str]:
    """``TICKLET_<GROUP>__...`` variables whose group is not a setting (a
    typo, such as ``TICKLET_BAR__INTERVAL_MS``). Unknown keys inside a
    group are validation errors; variables without ``__`` (``TICKLET_DATA``)
    are not settings and left alone."""
    groups = {n.upper() for n in Settings.model_fields}
    return sorted(n for n in names if "__" in n[8:] and n[8:].split("__", 1)[0] not in groups)


def read_settings() -> Settings:
    """The settings of the environment and ``.env``.

    Raises
    ------
    ConfigError
        One line naming the first bad variable (a second line counts the
        others): a value of the wrong type or out of range, a list that is
        not JSON, an unknown model, an unknown variable, an unreadable
        ``.env``.
    """
    dotenv = _dotenv()
    unknown = _unknown_variables(set(_environ()) | set(dotenv))
    if unknown:
        where = " (in .env)" if unknown[0] not in _environ() else ""
        raise ConfigError(f"unknown setting {unknown[0]}{where}: no such group of settings (`ticklet config` "
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
    """:func:`read_settings`, for the entry points: a bad setting prints
    ``ticklet: bad setting TICKLET_...: why`` (one or two plain lines) on
    stderr and exits with status 2."""
    try:
        return read_settings()
    except ConfigError as ex:
        sys.stderr.write(f"ticklet: {ex}\n")
        raise SystemExit(2) from None

"""The config base types and validators every component config shares.

A component's config lives beside the component (``operators/bars.py``'s
``BarConfig``, ``sinks/influx_config.py``'s ``InfluxConfig``...); the root
``Settings`` that composes them and reads the environment is
:mod:`dataflows.settings`. What they share is here: the one error a bad
setting is (:class:`ConfigError`), the validators of topic names, addresses
and URLs, :func:`check_dir` for output directories (and
:func:`remove_empty_dirs` for those a refused command made), the environment source
that lets a bad JSON list be named (:class:`EnvSettings`), and
:class:`KafkaConfig`: the cluster and topics that the Kafka input
(:mod:`sources.kafka`) and outputs (:mod:`sinks.kafka`), siblings that may
not import each other, and the collector, replay and server all use.

Reading a config opens no connection: whether the brokers answer is checked
by the code that connects (:func:`sinks.kafka.check_reachable`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

__all__ = ["ConfigError", "EnvSettings", "KafkaConfig", "check_dir", "ip_address", "remove_empty_dirs", "topic_name",
           "url"]


class ConfigError(Exception):
    """A bad setting, argument or input, or a server that cannot be reached at start.

    The entry points print ``ticklet: <message>`` (one plain line, naming the
    setting or file) and exit with status 2.
    """


_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic_name(v: Optional[str]) -> Optional[str]:
    """``v`` when it is a Kafka topic name (or None); a :class:`ValueError` otherwise.

    The error says what a topic name is (for a pydantic validator).

    >>> topic_name("ticklet.ticks")
    'ticklet.ticks'
    >>> topic_name("a/b")
    Traceback (most recent call last):
    ValueError: not a Kafka topic name: 1 to 249 of the characters A-Z a-z 0-9 . _ -
    """
    if v is not None and (not _TOPIC_RE.fullmatch(v) or v in (".", "..")):
        raise ValueError("not a Kafka topic name: 1 to 249 of the characters A-Z a-z 0-9 . _ -")
    return v


def ip_address(v: str) -> str:
    """``v`` when it is an IP address to listen on or ``localhost``; a :class:`ValueError` otherwise.

    >>> ip_address("0.0.0.0"), ip_address("::1"), ip_address("localhost")
    ('0.0.0.0', '::1', 'localhost')
    >>> ip_address("example.com")
    Traceback (most recent call last):
    ValueError: not an IP address such as 127.0.0.1 or 0.0.0.0
    """
    if v != "localhost":
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError("not an IP address such as 127.0.0.1 or 0.0.0.0") from None
    return v


def url(v: Optional[str], schemes: tuple[str, ...]) -> Optional[str]:
    """``v`` when it is a URL of one of ``schemes`` with a host (or None); a :class:`ValueError` otherwise.

    The error names the schemes.

    >>> url("wss://fstream.binance.com", ("ws", "wss"))
    'wss://fstream.binance.com'
    >>> url("fstream.binance.com", ("ws", "wss"))
    Traceback (most recent call last):
    ValueError: not a URL starting with ws:// or wss://
    """
    if v is not None and not re.fullmatch(rf"(?:{'|'.join(schemes)})://[^/\s]+(?:/\S*)?", v):
        raise ValueError(f"not a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return v


def check_dir(path: Path, name: str) -> list[Path]:
    """Create the output directory ``path`` if needed.

    Raises :class:`ConfigError`, naming ``name`` (the setting or option), when
    the directory cannot be created or is not writable. Returns the
    directories it created, ``path`` and the parents that were missing,
    deepest first: a command refused later takes them away again with
    :func:`remove_empty_dirs`.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> [p.relative_to(root).as_posix() for p in check_dir(root / "a" / "b", "--out")]
    ['a/b', 'a']
    >>> check_dir(root / "a" / "b", "--out")  # there already
    []
    """
    missing = []
    p = path.absolute()
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        remove_empty_dirs(missing)
        raise ConfigError(f"{name} {path}: cannot create the directory ({ex.strerror or ex})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        remove_empty_dirs(missing)
        raise ConfigError(f"{name} {path}: the directory is not writable")
    return missing


def remove_empty_dirs(dirs: list[Path]) -> None:
    """Remove the directories ``dirs`` while they are empty, deepest first.

    ``dirs`` as :func:`check_dir` returns them: a directory that holds
    anything stays, and so do those above it.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> remove_empty_dirs(check_dir(root / "a" / "b", "--out"))
    >>> list(root.iterdir())
    []
    >>> made = check_dir(root / "a" / "b", "--out")
    >>> _ = (root / "a" / "b" / "kept.txt").write_text("x")
    >>> remove_empty_dirs(made)
    >>> [p.relative_to(root).as_posix() for p in root.rglob("*")]
    ['a', 'a/b', 'a/b/kept.txt']
    """
    for d in dirs:
        try:
            d.rmdir()
        except OSError:  # not empty, or not there any more: it and those above it stay
            return


class EnvSettings(BaseSettings):
    """The base of settings read from the environment, lenient with list and group variables.

    A list or group variable whose value is not JSON is passed on as it is, so
    that validation names that variable (pydantic-settings' own error would be
    about the whole group).
    """

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment and ``.env`` sources, with a list or group value that is not JSON passed on as it is.

        Validation then names the variable (instead of pydantic-settings' error
        about the whole group).
        """
        for source in (env_settings, dotenv_settings):
            decode = source.decode_complex_value

            def lenient(field_name: str, field: Any, value: Any, decode: Any = decode) -> Any:
                try:
                    return decode(field_name, field, value)
                except ValueError:
                    return value
            source.decode_complex_value = lenient  # type: ignore[method-assign]
        return init_settings, env_settings, dotenv_settings, file_secret_settings


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
        """The brokers of ``bootstrap_servers``, one ``host:port`` each.

        >>> KafkaConfig(bootstrap_servers="a:9092, b:9093").brokers
        ['a:9092', 'b:9093']
        """
        return [b.strip() for b in self.bootstrap_servers.split(",") if b.strip()]

    def client_config(self) -> dict[str, str]:
        """The librdkafka settings for security: they hold the secret, so pass them only to clients."""
        cfg: dict[str, str] = {"security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            cfg["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            cfg["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            cfg["sasl.password"] = self.sasl_password.get_secret_value()
        return cfg

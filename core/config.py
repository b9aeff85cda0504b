"""The config base types and validators every component config shares.

A component's config lives beside the component (``operators/bars.py``'s
``BarConfig``, ``sinks/influx_config.py``'s ``InfluxConfig``...); the root
``Settings`` that composes them and reads the environment is
:mod:`dataflows.settings`. What they share is here: the one error a bad
setting is (:class:`ConfigError`), the validators of topic names, addresses
and URLs, and :func:`check_dir` for output directories.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Optional

__all__ = ["ConfigError", "check_dir", "ip_address", "topic_name", "url"]


class ConfigError(Exception):
    """A bad setting, argument or input, or a server that cannot be reached at
    start: the entry points print ``ticklet: <message>`` (one plain line,
    naming the setting or file) and exit with status 2."""


_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic_name(v: Optional[str]) -> Optional[str]:
    """``v`` when it is a Kafka topic name (or None); a :class:`ValueError`
    saying what one is otherwise (for a pydantic validator).

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
    """``v`` when it is an IP address to listen on or ``localhost``; a
    :class:`ValueError` otherwise.

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
    """``v`` when it is a URL of one of ``schemes`` with a host (or None); a
    :class:`ValueError` naming the schemes otherwise.

    >>> url("wss://fstream.binance.com", ("ws", "wss"))
    'wss://fstream.binance.com'
    >>> url("fstream.binance.com", ("ws", "wss"))
    Traceback (most recent call last):
    ValueError: not a URL starting with ws:// or wss://
    """
    if v is not None and not re.fullmatch(rf"(?:{'|'.join(schemes)})://[^/\s]+(?:/\S*)?", v):
        raise ValueError(f"not a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return v


def check_dir(path: Path, name: str) -> None:
    """Create the output directory ``path`` if needed; :class:`ConfigError`
    naming ``name`` (the setting or option) when it cannot be, or is not
    writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        raise ConfigError(f"{name} {path}: cannot create the directory ({ex.strerror or ex})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{name} {path}: the directory is not writable")

"""The run's manifest, ``run.json``: what a run was made of (the version, its inputs, every setting and their hash).

It is written in the output directory when the flow is built
(:func:`dataflows.forecast.build_flow`) and read again by a model bundle's
manifest (:func:`dataflows.bundle.save_bundle`) and the report.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from core.config import ConfigError
from core.version import ticklet_version
from dataflows.settings import Settings
from sinks.fatal import os_error

__all__ = ["MANIFEST", "config_hash", "manifest", "write_manifest"]

#: The run's manifest, written in ``settings.output.dir`` when the flow is built (:func:`manifest`).
MANIFEST = "run.json"


def manifest(settings: Settings) -> dict[str, Any]:
    """What a run was made of: its version, inputs and config, and the config's hash.

    ``ticklet_version``, ``inputs`` (the paths, or the Kafka topic),
    ``config`` (every setting as JSON; secrets dump as ``**********``) and
    ``config_hash``, the SHA-256 of the config as canonical JSON
    (``json.dumps(config, sort_keys=True, separators=(",", ":"))``). No
    wall-clock time: the same settings give the same manifest.

    >>> from pydantic import SecretStr
    >>> s = Settings()
    >>> s = s.model_copy(update={"influx": s.influx.model_copy(update={"token": SecretStr("hunter2")})})
    >>> m = manifest(s)
    >>> m["config"]["influx"]["token"], "hunter2" in json.dumps(m)
    ('**********', False)
    >>> m["config_hash"] == hashlib.sha256(json.dumps(m["config"], sort_keys=True,
    ...                                                separators=(",", ":")).encode()).hexdigest()
    True
    """
    config = settings.model_dump(mode="json")
    k = settings.kafka
    inputs = (list(settings.input.paths) if settings.input.source == "replay"
              else [f"kafka://{k.bootstrap_servers}/{k.ticks_topic}"])
    return {"ticklet_version": ticklet_version(), "inputs": inputs, "config": config,
            "config_hash": config_hash(config)}


def config_hash(config: dict[str, Any]) -> str:
    """The SHA-256 (hex) of a config as canonical JSON: sorted keys, no spaces."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(settings: Settings) -> None:
    """Write :func:`manifest` to ``settings.output.dir/run.json``, atomically.

    The processes of a cluster each write the same file. A
    :class:`ConfigError` naming the file when it cannot be written.
    """
    out = settings.output.dir
    tmp = out / f".{MANIFEST}.{os.getpid()}.tmp"
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(manifest(settings), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, out / MANIFEST)
    except OSError as ex:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {out / MANIFEST}: {os_error(ex)}") from None

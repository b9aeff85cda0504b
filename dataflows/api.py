"""The dataflow's HTTP API (``TICKLET_API__*``): Prometheus metrics and the dataflow's graph.

They are served while ``python -m bytewax.run dataflows.forecast`` runs
(:func:`serve_api`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.config import ConfigError, ip_address

if TYPE_CHECKING:
    from bytewax.dataflow import Dataflow

__all__ = ["ApiConfig", "serve_api"]


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


def serve_api(api: ApiConfig, flow: Dataflow) -> None:
    """Serve the dataflow's API for ``flow`` when it is on: ``/metrics`` and ``/dataflow``.

    It is on with ``TICKLET_API__ENABLED``, or Bytewax's
    ``BYTEWAX_DATAFLOW_API_ENABLED``, and listens on ``TICKLET_API__ADDRESS``
    (127.0.0.1) and ``__PORT``.

    Bytewax 0.21's own server always listens on every interface (0.0.0.0), so
    it is switched off (its variable removed before Bytewax reads it) and
    :func:`core.telemetry.serve_metrics` serves instead, without Bytewax's
    ``bytewax_*`` metrics. Only an address of every interface (0.0.0.0 or
    ``::``) is left to Bytewax's server, on the same port.
    """
    if not (api.enabled or "BYTEWAX_DATAFLOW_API_ENABLED" in os.environ):
        return
    if api.address in ("0.0.0.0", "::"):
        os.environ["BYTEWAX_DATAFLOW_API_ENABLED"] = "true"
        os.environ["BYTEWAX_DATAFLOW_API_PORT"] = str(api.port)
        return
    os.environ.pop("BYTEWAX_DATAFLOW_API_ENABLED", None)
    from bytewax.visualize import to_json

    from core.telemetry import serve_metrics  # prometheus_client loads only when the API is on

    try:
        serve_metrics(api.address, api.port, to_json(flow))
    except OSError as ex:
        raise ConfigError(f"cannot serve the API on {api.address}:{api.port} (TICKLET_API__ADDRESS, "
                          f"TICKLET_API__PORT): {ex.strerror or ex}") from None

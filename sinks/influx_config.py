"""Settings of the InfluxDB v2 sink (:mod:`sinks.influx`).

They live apart from the client so that reading the settings never imports
influxdb-client.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from core.config import url as check_url

__all__ = ["InfluxConfig"]


class InfluxConfig(BaseModel):
    """The InfluxDB v2 server, and how hard to try when it is down."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field("http://127.0.0.1:8086", description="InfluxDB v2 base URL.")
    org: str = Field("ticklet", description="InfluxDB organization.")
    bucket: str = Field("ticklet", description="InfluxDB bucket.")
    token: SecretStr = Field(SecretStr(""), description="InfluxDB API token (a secret: never logged or printed).")
    features: tuple[str, ...] = Field(
        ("micro_dev", "ofi", "book_imb", "spread", "swt_dev", "swt_slope", "rv",
         "depth_imb_1", "depth_imb_5", "ofi_int", "ofi_l1", "walk_buy", "walk_sell"),
        description="Features written to the 'features' measurement (scaled, as models see them); a feature "
        "missing from a row (the depth features while a book is not ready) is not written for that bar.")
    batch_size: int = Field(1000, ge=1, description="Points per write request.")
    flush_interval_ms: int = Field(1000, ge=1, description="Longest wait before a partial batch is written.")
    retry_interval_ms: int = Field(1000, ge=1, description="First retry delay of a failed batch; doubles each time.")
    max_retry_delay_ms: int = Field(30_000, ge=1, description="Longest delay between two retries.")
    max_retries: int = Field(20, ge=0, description="Retries of a failed batch before it is given up (counted; the "
        "run then ends with exit status 74).")
    max_retry_time_ms: int = Field(600_000, ge=0,
        description="Longest time a batch is retried before it is given up (counted; the run then ends with exit "
        "status 74).")
    max_buffered_points: int = Field(
        200_000, ge=1,
        description="Most points handed over and not yet confirmed; beyond it new points are dropped (counted, "
        "logged; the run then ends with exit status 74).")
    max_close_wait_ms: int = Field(
        30_000, ge=0, description="Longest wait for pending points at shutdown; those still pending then are "
        "abandoned (counted, logged), their retries stop, and the run ends with exit status 74.")
    timeout_ms: int = Field(10_000, ge=1, description="HTTP timeout of one write request.")
    connect_timeout_s: float = Field(15.0, gt=0, le=3600,
        description="How long the dataflow waits at start for the server to accept a write of no points (token, "
        "org, bucket and write permission checked) before it stops with one line (exit status 2).")
    health_interval_s: float = Field(1.0, gt=0, description="Seconds (wall clock) between two health points.")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        check_url(v, ("http", "https"))
        return v

"""Settings of ``ticklet serve`` (``TICKLET_SERVE__*``): the API and live page over the output topic.

The HTTP/WebSocket API and live page are served by :mod:`ticklet.serve`.
The server is an app of the top floor, which nothing imports; its settings
are here, among the outputs' settings, because the root ``Settings``
(:mod:`dataflows.settings`), which the dataflow reads too, composes them,
and reading them must import neither FastAPI nor uvicorn.
"""

from __future__ import annotations

import re
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from core.config import ip_address

__all__ = ["ServeConfig"]


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

"""Limits on a request's head, where uvicorn reads it.

uvicorn's HTTP protocol over httptools (what ``uvicorn[standard]`` runs)
puts no bound on a request's head: a header of 200 MB is read, and joined
piece by piece, until it ends, while every other request waits. The
protocol made by :func:`bounded_http` feeds the parser at most
``max_bytes`` of a head (request line and header fields, the WebSocket
handshake's included) and keeps at most ``max_fields`` fields: past either
it answers ``431 Request Header Fields Too Large`` (a JSON problem, as the
API's other errors) and closes the connection, without reading the rest.

A head is counted from the first byte after the previous request's end;
the bytes that follow a body in the same read (a pipelined request after
one with a body) are counted from the next read on, so a head is bounded
by ``max_bytes`` plus one read (uvloop reads at most 256 KiB).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Optional

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["LINGER_S", "bounded_http"]

#: Seconds a refused connection stays open for its answer to arrive (it reads nothing meanwhile).
LINGER_S = 1.0


def bounded_http(max_bytes: int, max_fields: int, on_refused: Callable[[str, Any], None]
                 ) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with those limits (pass it as
    ``uvicorn.Config(http=...)``). ``on_refused(reason, client)`` is called
    for each request refused: ``reason`` is ``header_bytes`` or
    ``header_fields``, ``client`` uvicorn's (host, port) of the peer."""

    class BoundedHttpTools(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_left: Optional[int] = max_bytes  # None while a head is complete (its body, its answer)
            self._fields = 0
            self._refused = False

        def data_received(self, data: bytes) -> None:
            while data and not self._refused:
                if self._head_left is None:
                    super().data_received(data)
                    return
                if self._head_left <= 0:
                    self._refuse("header_bytes", f"the request's head is over {max_bytes} bytes")
                    return
                part, data = data[:self._head_left], data[self._head_left:]
                self._head_left -= len(part)
                super().data_received(part)
                if self.transport.is_closing() or self.transport.get_protocol() is not self:
                    return  # refused, closed, or now a WebSocket

        def on_message_begin(self) -> None:
            self._fields = 0
            super().on_message_begin()

        def on_header(self, name: bytes, value: bytes) -> None:
            self._fields += 1
            if self._fields <= max_fields:
                super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._head_left = None
            if self._fields > max_fields:
                self._refuse("header_fields", f"the request has {self._fields} header fields, more than {max_fields}")
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._refused:
                return
            self._head_left = max_bytes
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            if not self._refused:
                super().handle_websocket_upgrade()

        def _refuse(self, reason: str, message: str) -> None:
            """Answer 431 and close. The connection is closed ``LINGER_S``
            later, reading nothing meanwhile: closed at once with the
            client's bytes unread, it would be reset, and a client still
            sending would lose the answer."""
            self._refused = True
            self.transport.pause_reading()
            if self.cycle is None or self.cycle.response_complete:  # not in the middle of an answer
                body = json.dumps({"detail": "request header fields too large", "message": message}).encode()
                head = [STATUS_LINE[431], *(n + b": " + v + b"\r\n" for n, v in self.server_state.default_headers),
                        b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode(),
                        b"\r\nconnection: close\r\n\r\n"]
                self.transport.write(b"".join(head) + body)
                if self.transport.can_write_eof():
                    self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
            on_refused(reason, self.client)

    return BoundedHttpTools

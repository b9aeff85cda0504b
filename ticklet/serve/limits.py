"""Limits on a request's head, and on the connections open, where uvicorn reads them.

uvicorn's HTTP protocol over httptools (what ``uvicorn[standard]`` runs)
puts no bound on a request's head: a header of 200 MB is read, and joined
piece by piece, until it ends, while every other request waits; and a
head sent a byte every few seconds (slowloris), or nothing at all on a
fresh connection, holds the connection for ever (its keep-alive timer is
armed only after an answer, and the next byte disarms it). The protocol
made by :func:`bounded_http` bounds what a connection may hold before the
application sees a request:

- **bytes and fields**: it feeds the parser at most ``max_bytes`` of a
  head (request line and header fields, the WebSocket handshake's
  included) and keeps at most ``max_fields`` fields: past either it answers
  ``431 Request Header Fields Too Large`` and closes the connection,
  without reading the rest. A head is counted from the first byte after
  the previous request's end; the bytes that follow a body in the same
  read (a pipelined request after one with a body) are counted from the
  next read on, so a head is bounded by ``max_bytes`` plus one read (uvloop
  reads at most 256 KiB).
- **time**: a connection waiting for a request (from its accept, or from
  the end of the previous answer) has ``timeout_s`` to deliver a complete
  head, and what is left of the previous request's body if that was
  answered before it ended (as nginx's ``lingering_time``); past it, the
  answer is ``408 Request Timeout`` and the connection is closed. A
  connection idle since an answer is closed without one, as uvicorn's
  keep-alive timeout (5 s) does earlier. Not timed: the application's
  answer, a body it reads, an established WebSocket.
- **connections**: at most ``max_connections`` open at once (HTTP and
  WebSocket, the lingering ones below included). One more is accepted by
  closing the connection that has waited longest for its first request
  (``503``), else the one idle longest since an answer (closed without
  one), or, if no connection is waiting (every one is being answered or is
  a WebSocket), the new one (``503``). The slowest clients go first, a
  client that sends its request at once (``/healthz``) is served, and a
  keep-alive client stays while clients that never sent a request are
  there to close (slowloris clients reconnecting as fast as they are
  closed churn among themselves). uvicorn's ``limit_concurrency``
  is not this: it is checked only once a head is complete (a slow head is
  never refused), and past it every request is a 503, ``/healthz`` too.
  :func:`open_files_for` fits the process's open-file limit to the bound.

Every refusal is a JSON problem, as the API's other errors, with
``connection: close``, and ``on_refused(reason, client)`` is called.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Callable
from typing import Any, Optional

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["FILES_KEPT", "LINGER_S", "REASONS", "bounded_http", "open_files_for"]

#: Seconds a refused connection stays open for its answer to arrive (it reads nothing meanwhile).
LINGER_S = 1.0

#: Open files kept for what is not a client's connection (Kafka's sockets, the readers of resuming clients,
#: static files, logs): the connections may take the rest of the open-file limit.
FILES_KEPT = 256

#: What a refusal answers, by reason: (status, ``detail``).
REASONS = {"header_bytes": (431, "request header fields too large"),
           "header_fields": (431, "request header fields too large"),
           "header_timeout": (408, "request timeout"),
           "connections": (503, "too many connections")}


def bounded_http(max_bytes: int, max_fields: int, timeout_s: float, max_connections: int,
                 on_refused: Callable[[str, Any], None]) -> type[asyncio.Protocol]:
    """The uvicorn httptools protocol with those limits (pass it as ``uvicorn.Config(http=...)``).

    ``on_refused(reason, client)`` is called for each request or connection
    refused: ``reason`` is one of :data:`REASONS`, ``client`` uvicorn's
    (host, port) of the peer.
    """
    # the connections waiting for a request: [0] for their first, [1] answered before (keep-alive); in each the
    # one that began waiting first first (dicts keep their order)
    waiting: tuple[dict[BoundedHttpTools, None], dict[BoundedHttpTools, None]] = ({}, {})
    # those closed at once (their files go with the next turn of the loop): not counted
    closing: set[BoundedHttpTools] = set()

    class BoundedHttpTools(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_left: Optional[int] = max_bytes  # None while a head is complete (its body, its answer)
            self._fields = 0
            self._refused = False
            self._in_body = False  # a request's head is complete, its body is not
            self._answered = False  # a request was answered on this connection
            self._deadline: Optional[asyncio.TimerHandle] = None

        # -- the connection

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._wait()
            while len(self.connections) - len(closing) > max_connections:  # each turn closes one
                oldest = next((p for w in waiting for p in w if p is not self), self)
                oldest._give_up("connections", f"more than {max_connections} connections are open")
                if oldest is self:
                    break

        def connection_lost(self, exc: Optional[Exception]) -> None:
            self._stop_waiting()
            closing.discard(self)
            super().connection_lost(exc)

        def _wait(self) -> None:
            """The connection waits for a request, from now on."""
            self._stop_waiting()
            waiting[self._answered][self] = None
            self._deadline = self.loop.call_later(timeout_s, self._give_up, "header_timeout",
                                                  f"no complete request head within {timeout_s:g} s")

        def _stop_waiting(self) -> None:
            for w in waiting:
                w.pop(self, None)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _give_up(self, reason: str, message: str) -> None:
            """Close a connection waiting for a request: refused (``reason``), or idle since its last one.

            A connection idle since its last request is closed without an
            answer.
            """
            self._stop_waiting()
            if self._refused:
                return
            if self.transport.is_closing():  # closed by uvicorn (its keep-alive timeout), not lost yet
                closing.add(self)
            elif self._answered and self._head_left == max_bytes and not self._in_body:
                self._close()  # idle since an answer: a keep-alive connection closed
            else:
                self._refuse(reason, message)

        # -- the head

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
            self._in_body = True
            self._stop_waiting()
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
            self._in_body = False
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._answered = True
            if not self.transport.is_closing() and self.cycle.response_complete:  # no pipelined request next
                self._wait()  # (what is left of a body this answer came before is waited for too)

        def handle_websocket_upgrade(self) -> None:
            if not self._refused:
                super().handle_websocket_upgrade()

        def _refuse(self, reason: str, message: str) -> None:
            """Answer as :data:`REASONS` says and close.

            The connection is closed ``LINGER_S`` later, reading nothing
            meanwhile: closed at once with the client's bytes unread, it
            would be reset, and a client still sending would lose the
            answer. One closed to make room for another (``connections``) is
            closed at once: what lingers still holds its file.
            """
            self._refused = True
            self._stop_waiting()
            self.transport.pause_reading()
            if self.cycle is None or self.cycle.response_complete:  # not in the middle of an answer
                status, detail = REASONS[reason]
                body = json.dumps({"detail": detail, "message": message}).encode()
                head = [STATUS_LINE[status], *(n + b": " + v + b"\r\n" for n, v in self.server_state.default_headers),
                        b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode(),
                        b"\r\nconnection: close\r\n\r\n"]
                self.transport.write(b"".join(head) + body)
                if self.transport.can_write_eof():
                    self.transport.write_eof()
            if reason == "connections":
                self._close()
            else:
                self.loop.call_later(LINGER_S, self.transport.close)
            on_refused(reason, self.client)

        def _close(self) -> None:
            self.transport.close()
            closing.add(self)

    return BoundedHttpTools


def open_files_for(connections: int) -> tuple[int, int]:
    """Raise this process's open-file limit to hold ``connections`` and :data:`FILES_KEPT` more.

    The soft limit is raised, up to the hard one. Returns (the connections
    it holds, the limit now): fewer than asked when the hard limit is lower.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + FILES_KEPT
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (OSError, ValueError):  # not allowed here (macOS caps it below an "unlimited" hard limit)
            pass
    if soft == resource.RLIM_INFINITY:
        return connections, soft
    return max(0, min(connections, soft - FILES_KEPT)), soft

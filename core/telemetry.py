"""ticklet's Prometheus metrics, and the small server that serves them.

Run a dataflow with ``TICKLET_API__ENABLED=true`` (or Bytewax's
``BYTEWAX_DATAFLOW_API_ENABLED``) and :func:`serve_metrics` serves
``http://127.0.0.1:3030/metrics`` (``TICKLET_API__ADDRESS``,
``TICKLET_API__PORT``): the Python registry, which holds these:

- ``ticklet_events_total{name}``: every pipeline counter (``ticks``, ``bars``,
  ``forecasts``, ``dead_letters``, ``skipped_<reason>``, ...), the same totals
  as ``counters.json``;
- ``ticklet_stage_seconds{stage}``: compute time of one batch in each stage
  (parse, bars, features, join, metrics), a histogram.

With ``TICKLET_API__ADDRESS=0.0.0.0`` Bytewax's own server serves them
instead, with its per-step metrics (``bytewax_*``): Bytewax 0.21 can only
listen on every interface, so it is used only when that is what is asked.

``ticklet collect`` serves ``ticklet_collector_events_total{name}`` (messages,
gaps, reconnects, resyncs...) on ``TICKLET_COLLECT__METRICS_PORT``, on
127.0.0.1 unless ``TICKLET_COLLECT__METRICS_ADDRESS`` says otherwise.

These are process-wide, as Prometheus metrics are; they are only touched by
the Bytewax wrappers and sinks, never by the pure operators.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

__all__ = ["COLLECTOR", "EVENTS", "STAGE_SECONDS", "serve_metrics"]

EVENTS = Counter("ticklet_events", "Pipeline counters (ticks, bars, forecasts, dead letters, skips...)", ["name"])

COLLECTOR = Counter("ticklet_collector_events", "Collector counters (messages, gaps, reconnects, resyncs...)", ["name"])

STAGE_SECONDS = Histogram(
    "ticklet_stage_seconds", "Compute time of one batch in a pipeline stage", ["stage"],
    buckets=(1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0),
)


_SERVERS: dict[tuple[str, int], ThreadingHTTPServer] = {}


def serve_metrics(address: str, port: int, dataflow_json: Optional[str] = None) -> ThreadingHTTPServer:
    """Serve this process's Prometheus registry over HTTP from a daemon thread.

    The registry is served on ``GET /metrics`` (and ``/``), and
    ``dataflow_json`` on ``GET /dataflow`` when given, on ``address:port``,
    for the rest of the process (as ``prometheus_client.start_http_server``
    does; asked again for the same address and port, the server already
    there is returned). ``port`` 0 picks a free one
    (``server.server_address``). Raises :class:`OSError` when it cannot
    listen there.
    """
    if (address, port) in _SERVERS:
        return _SERVERS[address, port]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path in ("/metrics", "/"):
                body, ctype = generate_latest(REGISTRY), CONTENT_TYPE_LATEST
            elif path == "/dataflow" and dataflow_json is not None:
                body, ctype = dataflow_json.encode(), "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (no line per scrape)
            pass

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        daemon_threads = True

    server = Server((address, port), Handler)
    threading.Thread(target=server.serve_forever, name="ticklet-metrics", daemon=True).start()
    if port:
        _SERVERS[address, port] = server
    return server

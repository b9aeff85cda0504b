"""``ticklet serve`` against what a careless or hostile client sends, on a
real broker with the records the forecast dataflow publishes over a real
recording (issue 23, items 2, 5, 6 and 10):

- stream clients that resume from further back than the buffer: bounded in
  number (503 past ``TICKLET_SERVE__MAX_RESUMING``) and in what their
  Kafka consumers fetch ahead, dropped when they take nothing, and the
  memory given back when they leave;
- request heads: bounded in bytes and in fields (431), and ``/healthz``
  answers while someone sends a 200 MB header; bounded in time (408: 200
  clients sending their heads a byte at a time, or nothing), while
  ``/healthz``, a stream and a slow download go on; the connections open
  bounded, the slowest closed first (503);
- the API key's cookie: only ever the server's own key;
- the OpenAPI document states what the server enforces (patterns, the key,
  401 and 503), schemathesis finds nothing against it, and HEAD works on
  every GET route.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from harness.kafkautil import produce_all, publish_forecasts, topic_name
from harness.realdata import SCRATCH
from harness.serveutil import Server, SlowClients, StreamClient, metric, open_files, rss_mb
from sinks.kafka import ensure_topic

#: Integration tests (tests/integration_mark.py): a Kafka broker and ticklet serve in a subprocess.
pytestmark = pytest.mark.integration

API_KEY = "k3y-0f-the-server"
RECORDING = Path("spot") / "btcusdt_20240808.gz"


# ---------------------------------------------------------------------------
# fixtures: real records in Kafka, servers over them


@pytest.fixture(scope="module")
def published(kafka_bootstrap, ws_dir, tmp_path_factory):
    """The dataflow's records over one real recording, the maker books' too, in a topic: (topic, [(key, value, ts,
    partition)])."""
    topic = topic_name("serve-hard")
    return topic, publish_forecasts(kafka_bootstrap, topic, [ws_dir / RECORDING], tmp_path_factory.mktemp("flow"),
                                    TICKLET_MAKER__ENABLED="true")


@pytest.fixture(scope="module")
def deep(kafka_bootstrap, published):
    """Those records produced five times over into a topic of one partition
    (about 40,000 records, 16 MB): a client resuming from its start is read
    from Kafka for a while. (topic, values in offset order)."""
    topic = topic_name("serve-deep")
    ensure_topic({"bootstrap.servers": kafka_bootstrap}, topic, partitions=1)
    values = [v for _, v, _, _ in published[1]] * 5
    produce_all(kafka_bootstrap, topic, ((b"BTCUSDT", v) for v in values))
    return topic, values


@pytest.fixture(scope="module")
def server(kafka_bootstrap, published, tmp_path_factory):
    """A server with the default limits over the recording's records."""
    s = Server(kafka_bootstrap, published[0], tmp_path_factory.mktemp("srv") / "serve.log")
    s.wait_ready()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def keyed(kafka_bootstrap, published, tmp_path_factory):
    """A server with an API key over the recording's records."""
    s = Server(kafka_bootstrap, published[0], tmp_path_factory.mktemp("key") / "serve.log",
               TICKLET_SERVE__API_KEY=API_KEY)
    s.http.headers["X-API-Key"] = API_KEY
    s.wait_ready()
    yield s
    s.stop()


# ---------------------------------------------------------------------------
# helpers


def _hostport(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _head(sock: socket.socket) -> bytes:
    """The status line and headers of the answer on ``sock`` (and what came with them)."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(4096)
        assert chunk, got
        got += chunk
    return got


def _to_the_end(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of an answer after which the server closes the connection."""
    got = b""
    while chunk := sock.recv(1 << 16):
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    return head, body


def _resumer(server: Server, after: str) -> tuple[int, socket.socket]:
    """A stream client that resumes after ``after`` and then reads nothing
    (a small receive window: what is sent to it soon fills the sockets, and
    its sender waits). (handshake status, socket)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.settimeout(30)
    sock.connect(_hostport(server))
    sock.sendall(f"GET /v1/stream?after={after} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    return int(_head(sock)[9:12]), sock


def _read(url: str, n: int) -> list[dict]:
    """The first ``n`` envelopes of a stream."""
    out: list[dict] = []
    with connect(url, max_size=None, open_timeout=30) as ws:
        while len(out) < n:
            out.extend(json.loads(ws.recv(timeout=60)))
    return out


def _until(check, what: str, server: Server, timeout_s: float = 60.0):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout_s
    while not (got := check()):
        assert time.monotonic() < deadline, f"{what}: {server.log[-3000:]}"
        time.sleep(0.1)
    return got


def _metrics(server: Server) -> str:
    return server.http.get("/metrics").text


# ---------------------------------------------------------------------------
# item 2: stream clients resuming from Kafka


def test_clients_resuming_from_kafka_are_bounded_and_their_memory_given_back(kafka_bootstrap, deep, tmp_path):
    """Eight clients resume from the start of a 40,000-record topic and read
    nothing, each holding a Kafka consumer: a ninth is refused with 503
    while live clients and resumes from the buffer are served; the eight
    cost the server a few MB each (librdkafka's default prefetch: 25 MB
    each here), and when they leave their consumers are closed and the RSS
    comes back; then a resumer gets every record, in order."""
    topic, values = deep
    server = Server(kafka_bootstrap, topic, tmp_path / "serve.log", TICKLET_SERVE__BACKFILL="1000",
                    TICKLET_SERVE__BUFFER="1000", TICKLET_SERVE__MAX_RESUMING="8")
    stuck: list[socket.socket] = []
    try:
        server.wait_ready()
        before = rss_mb(server.proc.pid)
        for _ in range(8):
            status, sock = _resumer(server, "0:-1")
            stuck.append(sock)
            assert status == 101
        assert metric(_metrics(server), "ticklet_serve_ws_resuming") == 8
        with pytest.raises(InvalidStatus) as ex:
            connect(f"{server.ws_url}/v1/stream?after=0:10", open_timeout=30)
        assert ex.value.response.status_code == 503
        assert "TICKLET_SERVE__MAX_RESUMING" in json.loads(ex.value.response.body)["message"]
        # what the buffer holds, and the live stream, are served as ever
        tail = _read(f"{server.ws_url}/v1/stream?after=0:{len(values) - 11}", 10)
        assert [e["offset"] for e in tail] == list(range(len(values) - 10, len(values)))
        assert [e["record"] for e in tail] == [json.loads(v) for v in values[-10:]]
        with connect(f"{server.ws_url}/v1/stream", open_timeout=30):
            pass
        time.sleep(3)  # the readers fetch what they may ahead of the eight
        held = rss_mb(server.proc.pid) - before
        assert held < 8 * 10, f"{held:.0f} MB for 8 resuming clients"
        for sock in stuck:
            sock.close()
        _until(lambda: metric(_metrics(server), "ticklet_serve_ws_resuming") == 0, "the readers closed", server)
        time.sleep(1)
        left = rss_mb(server.proc.pid) - before
        assert left < 25, f"{left:.0f} MB still held after the resuming clients left ({held:.0f} MB with them)"
        got = _read(f"{server.ws_url}/v1/stream?after=0:-1", 2000)[:2000]
        assert [e["offset"] for e in got] == list(range(2000))
        assert [e["record"] for e in got] == [json.loads(v) for v in values[:2000]]
        assert metric(_metrics(server), 'ticklet_serve_ws_rejected_total{reason="resuming"}') == 1
        _until(lambda: metric(_metrics(server), "ticklet_serve_ws_resuming") == 0, "its reader closed", server)
    finally:
        for sock in stuck:
            sock.close()
        server.stop()


def test_a_client_resuming_from_kafka_that_takes_nothing_is_dropped(kafka_bootstrap, deep, tmp_path):
    """With one place for resuming clients, a client that takes nothing
    would hold it for ever: it is dropped after TICKLET_SERVE__RESUME_STALL_S
    (4008, counted, one line) and the next one is served."""
    topic, values = deep
    server = Server(kafka_bootstrap, topic, tmp_path / "serve.log", TICKLET_SERVE__BACKFILL="1000",
                    TICKLET_SERVE__BUFFER="1000", TICKLET_SERVE__MAX_RESUMING="1", TICKLET_SERVE__RESUME_STALL_S="1")
    try:
        server.wait_ready()
        status, sock = _resumer(server, "0:-1")
        with sock:
            assert status == 101
            _until(lambda: metric(_metrics(server), "ticklet_serve_ws_slow_clients_total") == 1, "dropped", server)
            _until(lambda: metric(_metrics(server), "ticklet_serve_ws_resuming") == 0, "its place freed", server)
            assert "TICKLET_SERVE__RESUME_STALL_S" in server.log
            got = _read(f"{server.ws_url}/v1/stream?after=0:99", 2000)[:2000]
            assert [e["offset"] for e in got] == list(range(100, 2100))
    finally:
        server.stop()


# ---------------------------------------------------------------------------
# item 5: request heads


def _answer(server: Server, request: bytes) -> bytes:
    """The answer's status line and headers to ``request``, on a connection of its own."""
    with socket.create_connection(_hostport(server), timeout=30) as sock:
        sock.sendall(request)
        return _head(sock)


def _request(fields: int, pad: int = 0) -> bytes:
    """GET /healthz with ``fields`` header fields (Host among them), the last one padded by ``pad`` bytes."""
    lines = [b"GET /healthz HTTP/1.1", b"Host: x", *(b"X-F%d: v" % i for i in range(fields - 1))]
    lines[-1] += b"v" * pad
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_request_heads_are_limited_in_bytes_and_fields(server):
    """64 KiB and 100 fields pass; a byte or a field more is a 431 (a JSON
    problem naming the limit), counted; the WebSocket handshake too."""
    assert _answer(server, _request(100)).startswith(b"HTTP/1.1 200")
    assert _answer(server, _request(101)).startswith(b"HTTP/1.1 431")
    at_limit = _request(2, 65536 - len(_request(2)))
    assert len(at_limit) == 65536
    assert _answer(server, at_limit).startswith(b"HTTP/1.1 200")
    with socket.create_connection(_hostport(server), timeout=30) as sock:
        sock.sendall(_request(2, 65537 - len(_request(2))))
        head, body = _to_the_end(sock)
    assert head.startswith(b"HTTP/1.1 431") and b"connection: close" in head.lower()
    assert json.loads(body)["message"] == "the request's head is over 65536 bytes"
    with pytest.raises(InvalidStatus) as ex:
        connect(f"{server.ws_url}/v1/stream", additional_headers=[(f"X-F{i}", "v") for i in range(120)],
                open_timeout=30)
    assert ex.value.response.status_code == 431
    assert "more than 100" in json.loads(ex.value.response.body)["message"]
    text = _metrics(server)
    assert metric(text, 'ticklet_serve_http_refused_total{reason="header_bytes"}') == 1
    assert metric(text, 'ticklet_serve_http_refused_total{reason="header_fields"}') == 2
    assert "TICKLET_SERVE__MAX_HEADERS" in server.log and "TICKLET_SERVE__MAX_HEADER_BYTES" in server.log


def test_a_200_mb_header_is_cut_short_while_health_answers(server):
    """A client streams a header of 200 MB while /healthz is asked again
    and again: it gets a 431 after the first 64 KiB and is cut off (the
    server reads no more: what it got through is what the sockets hold),
    every /healthz answers 200, and the server's memory does not grow."""
    before = rss_mb(server.proc.pid)
    sock = socket.create_connection(_hostport(server), timeout=30)
    sent, answer = [0], [b""]
    chunk = b"a" * (1 << 20)

    def stream() -> None:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            while sent[0] < 200 << 20:
                sock.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:  # cut off
            pass

    def read() -> None:
        try:
            while data := sock.recv(1 << 16):
                answer[0] += data
        except OSError:  # reset: the connection closed while the sender still sent
            pass
    threads = [threading.Thread(target=stream, daemon=True), threading.Thread(target=read, daemon=True)]
    for t in threads:
        t.start()
    health = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        while any(t.is_alive() for t in threads) and len(health) < 10_000:
            health.append(http.get("/healthz").status_code)
    for t in threads:
        t.join(30)
    sock.close()
    assert answer[0].startswith(b"HTTP/1.1 431"), answer[0]
    assert json.loads(answer[0].partition(b"\r\n\r\n")[2])["message"] == "the request's head is over 65536 bytes"
    assert sent[0] < 32 << 20, f"{sent[0] >> 20} MB went through"
    assert health and set(health) == {200}, health
    assert rss_mb(server.proc.pid) - before < 10


# ---------------------------------------------------------------------------
# slow request heads (slowloris) and the connections open

#: A request head of 150 bytes: 30 s at a byte every 0.2 s.
SLOW_GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 110 + b"\r\n\r\n"
#: A WebSocket handshake of 150 bytes.
SLOW_WS = (b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def _statuses(answers: bytes) -> list[int]:
    """The status of each answer in ``answers`` (what a connection got, in order)."""
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)]


def _connected(server: Server, *parts: bytes, pause_s: float = 0.0) -> tuple[socket.socket, bytes]:
    """A connection that has sent ``parts``, ``pause_s`` apart, waiting for
    the answer's head after each complete request: (socket, what it read)."""
    sock = socket.create_connection(_hostport(server), timeout=30)
    sent, got = b"", b""
    for i, part in enumerate(parts):
        if i:
            time.sleep(pause_s)
        sock.sendall(part)
        sent += part
        if sent.endswith(b"\r\n\r\n"):
            got += _head(sock)
    return sock, got


def _stalled_download(server: Server) -> socket.socket:
    """A connection that asks for plotly.js (4.6 MB) and reads nothing yet: its answer cannot end."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(_hostport(server))
    sock.sendall(b"GET /static/plotly.min.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return sock


def test_slow_request_heads_are_a_408_while_others_are_served(kafka_bootstrap, published, tmp_path):
    """With TICKLET_SERVE__HEADER_TIMEOUT_S=2: 200 clients send their heads
    a byte every 0.2 s (150 GETs, 40 WebSocket handshakes) or nothing (10);
    each gets a 408 (a JSON problem) no sooner than 2 s after it connected,
    and is closed, counted, in one warning line, while /healthz answers 200
    on a keep-alive connection throughout; the server's open files and RSS
    come back. A head that comes in three pieces within the time, a body
    that comes after its answer and the next request within the time, and
    a download read after 3 s are served; a connection idle since its
    answer is closed without one, one that began its next head and stopped
    gets the 408. A stream opened before them goes on (the records
    produced afterwards, none missing)."""
    topic = topic_name("serve-slow")
    ensure_topic({"bootstrap.servers": kafka_bootstrap}, topic, partitions=1)
    values = [v for _, v, _, _ in published[1]][:400]
    produce_all(kafka_bootstrap, topic, ((b"BTCUSDT", v) for v in values[:200]))
    server = Server(kafka_bootstrap, topic, tmp_path / "serve.log", TICKLET_SERVE__HEADER_TIMEOUT_S="2")
    stream = slow = None
    try:
        server.wait_ready()
        pid = server.proc.pid
        stream = StreamClient(f"{server.ws_url}/v1/stream", partitions=1)
        files, rss = open_files(pid), rss_mb(pid)
        slow = SlowClients(server.url, [SLOW_GET] * 150 + [SLOW_WS] * 40 + [b""] * 10)
        idle, idle_got = _connected(server, _request(1))
        begun, begun_got = _connected(server, _request(1), b"GET /hea")
        body, body_got = _connected(server, b"POST /v1/instruments HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
                                    b"01234", b"56789", _request(1), pause_s=0.4)
        pieces, pieces_got = _connected(server, b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n", pause_s=0.3)
        peak, health = files, []
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while slow.open and time.monotonic() < deadline:
                health.append(http.get("/healthz").status_code)
                peak = max(peak, open_files(pid))
                time.sleep(0.01)
        ended = slow.wait()
        assert len(ended) == 200
        for seconds, got in ended:
            assert _statuses(got) == [408], got
            assert json.loads(got.partition(b"\r\n\r\n")[2]) == {
                "detail": "request timeout", "message": "no complete request head within 2 s"}
            assert seconds > 1.95, seconds  # not before the limit (the loop's clock: ms)
        assert health and set(health) == {200}, health
        # (each closed: the 408 for the one that began a head, none for those idle since their answer)
        assert _statuses(idle_got + b"\r\n\r\n".join(_to_the_end(idle))) == [200]
        assert _statuses(begun_got + b"\r\n\r\n".join(_to_the_end(begun))) == [200, 408]
        assert _statuses(body_got + b"\r\n\r\n".join(_to_the_end(body))) == [405, 200]
        assert _statuses(pieces_got + b"\r\n\r\n".join(_to_the_end(pieces))) == [200]
        for sock in (idle, begun, body, pieces):
            sock.close()
        download = _stalled_download(server)
        time.sleep(3)
        with download:
            head, got = _to_the_end(download)
        assert head.startswith(b"HTTP/1.1 200") and len(got) == _plotly_size() > 4_000_000
        text = _metrics(server)
        assert metric(text, 'ticklet_serve_http_refused_total{reason="header_timeout"}') == 201
        assert server.log.count("TICKLET_SERVE__HEADER_TIMEOUT_S") == 1, server.log[-3000:]
        _until(lambda: open_files(pid) <= files, f"the files given back (peak {peak}, before {files})", server)
        assert rss_mb(pid) - rss < 10
        produce_all(kafka_bootstrap, topic, ((b"BTCUSDT", v) for v in values[200:]))
        got_stream = stream.wait_for(200, server=server)
        assert [e["record"] for e in got_stream] == [json.loads(v) for v in values[200:]]
        assert stream.resumes == 0
    finally:
        for c in (stream, slow):
            if c is not None:
                c.close()
        server.stop()


def _plotly_size() -> int:
    from ticklet.serve.app import _plotly_js

    return _plotly_js().stat().st_size


def test_open_connections_are_bounded_and_the_slowest_are_closed_first(kafka_bootstrap, published, tmp_path):
    """With TICKLET_SERVE__MAX_CONNECTIONS=300 (and MAX_CLIENTS 8), started
    under an open-file limit of 64 (hard: 272): the limit is raised to 272,
    which holds 16 connections besides the 256 files kept, and a warning
    says so. Two streams and a keep-alive client, then 100 slow heads at
    once: the server holds 13 of them (16 connections in all) and closes the
    one that has waited longest for its first request to let in the next
    (503, counted, one warning line), so 87 are closed and the keep-alive
    client is served again; every /healthz asked on a fresh connection then
    answers 200 (closing one more when there is no room), and the streams
    stay; with 8 streams and 8 answers under way (downloads read slowly),
    no connection waits for a request: the new one gets the 503."""
    server = Server(kafka_bootstrap, published[0], tmp_path / "serve.log", files=(64, 272),
                    TICKLET_SERVE__MAX_CONNECTIONS="300", TICKLET_SERVE__MAX_CLIENTS="8",
                    TICKLET_SERVE__HEADER_TIMEOUT_S="60")
    slow = None
    streams = contextlib.ExitStack()
    try:
        server.wait_ready()
        pid = server.proc.pid
        assert re.search(r"^Max open files\s+272\s+272 ", Path(f"/proc/{pid}/limits").read_text(), re.M)
        assert "at most 16 connections at once, not TICKLET_SERVE__MAX_CONNECTIONS=300" in server.log
        opened = [streams.enter_context(connect(f"{server.ws_url}/v1/stream", open_timeout=30)) for _ in range(2)]
        files = open_files(pid)
        peak, sampling = [files], threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], open_files(pid))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        kept, _ = _connected(server, _request(1))  # a keep-alive client, answered: kept while slow ones are there
        slow = SlowClients(server.url, [SLOW_GET] * 100, every_s=0.5)
        # (13 held, or 12 while the keep-alive connection of wait_ready is open)
        _until(lambda: slow.open <= 13 and len(slow.ended) + slow.open == 100, "the slow ones closed", server)
        with kept:
            kept.sendall(_request(1))
            assert _statuses(_head(kept)) == [200]
        health = [httpx.get(f"{server.url}/healthz", timeout=30).status_code for _ in range(20)]
        sampling.set()
        sampler.join()
        assert health == [200] * 20
        ended = list(slow.ended)
        assert len(ended) >= 87
        assert all(_statuses(got) in ([503], []) for _, got in ended), [e for e in ended if _statuses(e[1]) != [503]]
        assert sum(_statuses(got) == [503] for _, got in ended) > 80  # the others reset: a byte of theirs unread
        assert peak[0] <= files + 14 + 2, f"{peak[0] - files} more files open (14 more connections allowed)"
        _until(lambda: metric(_metrics(server), 'ticklet_serve_http_refused_total{reason="connections"}')
               == len(slow.ended), "each counted", server)
        assert server.log.count("refused: 503") == 1, server.log[-3000:]
        slow.close()
        for ws in opened:
            assert ws.ping().wait(30)  # still open
        # every place taken by something under way: the newcomer is refused
        for _ in range(6):
            streams.enter_context(connect(f"{server.ws_url}/v1/stream", open_timeout=30))
        downloads = [_stalled_download(server) for _ in range(8)]
        _until(lambda: metric(_metrics(server), "ticklet_serve_ws_clients") == 8, "8 streams", server)
        with socket.create_connection(_hostport(server), timeout=30) as sock:  # (refused at once: it sends nothing,
            head, body = _to_the_end(sock)  # or the request unread would make the close a reset)
        assert _statuses(head + b"\r\n\r\n") == [503], head
        assert json.loads(body)["message"] == "more than 16 connections are open"
        downloads.pop().close()
        _until(lambda: httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200, "room again", server)
        for sock in downloads:
            sock.close()
    finally:
        streams.close()
        if slow is not None:
            slow.close()
        server.stop()


# ---------------------------------------------------------------------------
# item 6: the API key's cookie


def test_the_cookie_is_only_ever_the_server_s_own_key(keyed):
    """Beside the right key in a header, another ``api_key=`` in the query
    (an attribute to inject, an encoded CR LF) is a wrong key: a clean 401
    with one line, no cookie, nothing in the log but the refusal; the
    cookie, when set, is made from the server's own key."""
    from ticklet.serve.app import key_cookie

    wanted = key_cookie(API_KEY).decode()
    for route, query in (("/v1/instruments", {}), ("/v1/forecasts/latest", {"instrument": "BTCUSDT"}), ("/", {})):
        url = keyed.url + route
        for bad in ("evil; Domain=attacker.example; Max-Age=99999", "x\r\nX-Injected: 1", "\r\n", ""):
            r = httpx.get(url, params={**query, "api_key": bad}, headers={"X-API-Key": API_KEY})
            assert r.status_code == 401 and "set-cookie" not in r.headers, (route, bad)
            assert "\n" not in r.json()["message"]
        r = httpx.get(url, params={**query, "api_key": API_KEY}, headers={"X-API-Key": API_KEY})
        assert r.status_code == 200 and r.headers["set-cookie"] == wanted, route
        # a stale cookie and the key in the query (the live page's link): served, the cookie renewed
        r = httpx.get(url, params={**query, "api_key": API_KEY}, headers={"Cookie": "ticklet_api_key=old"})
        assert r.status_code == 200 and r.headers["set-cookie"] == wanted, route
        # the cookie alone: the right one serves (and is not set again), a wrong one does not
        r = httpx.get(url, params=query, headers={"Cookie": wanted.split(";")[0]})
        assert r.status_code == 200 and "set-cookie" not in r.headers, route
        assert httpx.get(url, params=query, headers={"Cookie": "ticklet_api_key=old"}).status_code == 401
    assert "Traceback" not in keyed.log and "Invalid HTTP header" not in keyed.log, keyed.log[-3000:]
    assert API_KEY not in keyed.log


# ---------------------------------------------------------------------------
# item 10: the OpenAPI document, and schemathesis against the server


def test_the_openapi_document_states_what_the_server_enforces(server, keyed):
    from ticklet.serve.state import INSTRUMENT_PATTERN, MODEL_PATTERN

    spec = server.http.get("/openapi.json").json()
    for path in ("/v1/forecasts/latest", "/v1/forecasts/scored/latest", "/v1/metrics", "/v1/signals/latest",
                 "/v1/fills/latest"):
        params = {p["name"]: p["schema"] for p in spec["paths"][path]["get"]["parameters"]}
        assert params["instrument"]["pattern"] == INSTRUMENT_PATTERN, path
        assert params["model"]["pattern"] == MODEL_PATTERN, path
    # what the patterns admit is what the server takes, and what they refuse is a 422
    for inst, ok in (("BTCUSDT", True), ("BTCUSDT-PERP", True), ("1000PEPEUSDT", True), ("btcusdt", False),
                     ("BTCUSDT-PERP-PERP", False), ("B", False), ("BTCUSDT\n", False)):
        assert bool(re.fullmatch(INSTRUMENT_PATTERN, inst)) == ok, inst
        r = server.http.get("/v1/forecasts/latest", params={"instrument": inst})
        assert (r.status_code != 422) == ok, (inst, r.text)
    for path in ("/healthz", "/readyz"):
        assert "503" in spec["paths"][path]["get"]["responses"], path
        assert "security" not in spec["paths"][path]["get"]
    assert "securitySchemes" not in spec.get("components", {})  # no key: none asked for
    spec = keyed.http.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert {(s["type"], s.get("in"), s.get("name"), s.get("scheme")) for s in schemes.values()} == {
        ("apiKey", "header", "X-API-Key", None), ("http", None, None, "bearer"), ("apiKey", "query", "api_key", None),
        ("apiKey", "cookie", "ticklet_api_key", None)}
    for path, ops in spec["paths"].items():
        guarded = path not in ("/healthz", "/readyz")
        assert ("security" in ops["get"]) == guarded and ("401" in ops["get"]["responses"]) == guarded, path
        if guarded:
            assert len(ops["get"]["security"]) == 4  # any one of them
            assert server.http.get(path, headers={"X-API-Key": ""}).status_code != 401
            assert httpx.get(keyed.url + path).status_code == 401, path


def test_head_is_answered_on_every_get_route(server):
    """HEAD gets GET's status and headers, without a body."""
    for path in ("/v1/instruments", "/v1/forecasts/latest?instrument=BTCUSDT", "/v1/metrics?instrument=BTCUSDT",
                 "/v1/forecasts/latest?instrument=SOLUSDT", "/v1/metrics?instrument=btc", "/healthz", "/readyz",
                 "/metrics", "/openapi.json", "/docs", "/", "/static/live.js"):
        get, head = server.http.get(path), server.http.head(path)
        assert head.status_code == get.status_code and head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
        if path != "/metrics":  # its counters move between the two requests
            assert head.headers["content-length"] == get.headers["content-length"], path
    r = server.http.post("/v1/instruments")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


def _schemathesis(server: Server, *headers: str) -> subprocess.CompletedProcess:
    """``schemathesis run`` against ``server``'s OpenAPI document: every
    phase that applies (its examples, coverage of each parameter's edges,
    generated requests valid and not) and every check, 15 examples an
    operation, seeded."""
    args = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json", "--checks", "all",
            "--max-examples", "15", "--seed", "1", "--workers", "1", "--generation-database", "none", "--no-color"]
    for h in headers:
        args += ["--header", h]
    return subprocess.run(args, cwd=SCRATCH, capture_output=True, text=True, timeout=300)


def test_schemathesis_finds_nothing_against_the_server(server, keyed):
    """Generated requests, valid and not, against a server without and with
    an API key, every check: no 5xx, answers as documented (status, content
    type, headers, schema), bad input refused, input that the document
    admits accepted, undocumented methods 405, and with the key, requests
    without it the documented 401."""
    for srv, headers in ((server, ()), (keyed, (f"X-API-Key: {API_KEY}",))):
        proc = _schemathesis(srv, *headers)
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
        assert re.search(r"Tested: 11\b", proc.stdout) and "No issues found" in proc.stdout, proc.stdout[-3000:]

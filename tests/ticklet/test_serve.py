"""``ticklet serve`` against a real Kafka broker, real recordings and a real
browser.

Every recording is replayed into Kafka and the forecast dataflow publishes
its output topic, while ``ticklet serve`` (started first, before the topic
exists) follows it, WebSocket clients (``websockets``) follow the stream and
headless Chromium shows the live page. Then: every record published reached
every client, in order, per instrument; the HTTP answers (``httpx``) are the
latest records of the topic; bad parameters get a 422 with one clear line;
a resumed stream gets exactly what follows its offsets; a fresh server
rebuilds the same state from the topic; an API key guards every route but
health and never reaches a log line; a client that stops reading is dropped
without holding up anyone; bad settings are one line and exit status 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from cdp import Browser, png_size
from confluent_kafka import Producer
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from core.events import Fill, Forecast, ForecastRecord, MakerEconomicsRecord, MakerFillRecord, MetricsRecord, Signal
from harness.kafkautil import consume_all, flow_env, replay, topic_name
from harness.procs import interrupt, reaped
from harness.realdata import SCRATCH
from harness.serveutil import Server, StreamClient, exe
from sinks.records import SCHEMA_VERSION
from ticklet.serve.state import TYPES

INSTRUMENTS = ("BTCUSDT", "BTCUSDT-PERP", "ETHUSDT")
SCREENSHOT_COPY = Path("/tmp/ticklet_live_screenshot.png")  # for the engineers to look at
_TIME = {"forecast": "ts_forecast", "scored": "ts_forecast", "metrics": "ts_target", "signal": "ts_forecast",
         "fill": "ts_recv", "maker_fill": "ts_exch", "maker_economics": "ts_exch"}
API_KEY = "k3y-that-must-never-be-logged"


# ---------------------------------------------------------------------------
# helpers


def _expected_latest(records: list[tuple[int, int, dict]]) -> dict[tuple, dict]:
    """The latest record of every (type, instrument, model, horizon) of a
    topic: the greatest event time, the later offset on a tie."""
    out: dict[tuple, tuple[int, dict]] = {}
    for _, _, v in records:
        key = (v["type"], v["instrument"], v["model"], v["horizon"])
        if key not in out or v[_TIME[v["type"]]] >= out[key][0]:
            out[key] = (v[_TIME[v["type"]]], v)
    return {k: v for k, (_, v) in out.items()}


# What the live page drew: per plot, its traces and the points of each.
_DRAWN = """(() => {
  const plot = id => { const d = document.getElementById(id);
    return (d && d.data ? d.data : []).map(t => ({name: t.name, points: t.x.length})); };
  return {records: window.ticklet ? window.ticklet.records : 0, price: plot('price'), hit_rate: plot('hitrate'),
          svg_points: document.querySelectorAll('#price .point').length,
          rows: document.querySelectorAll('#metrics tbody tr').length,
          status: document.getElementById('status').textContent};
})()"""


# ---------------------------------------------------------------------------
# the live run


@pytest.fixture(scope="module")
def live(kafka_bootstrap, ws_dir, chromium, tmp_path_factory):
    """Every recording through Kafka and the dataflow, while a server, stream
    clients and the live page follow the output topic."""
    tmp = tmp_path_factory.mktemp("serve")
    ticks, out = topic_name("serve-ticks"), topic_name("serve-out")
    proc, _ = replay(kafka_bootstrap, ticks, ws_dir)
    assert proc.returncode == 0, proc.stderr
    # a small buffer: a resume from far back reads Kafka, a recent one the buffer
    server = Server(kafka_bootstrap, out, tmp / "serve-a.log", TICKLET_SERVE__BUFFER="3000")
    clients: dict[str, StreamClient] = {}
    browser = None
    try:
        assert server.http.get("/healthz").status_code == 200
        assert server.http.get("/readyz").status_code == 503  # the topic does not exist yet
        for inst in INSTRUMENTS:
            clients[inst] = StreamClient(f"{server.ws_url}/v1/stream?instrument={inst}")
        clients["metrics"] = StreamClient(f"{server.ws_url}/v1/stream?types=metrics")
        browser = Browser(chromium, width=1300, height=1000).__enter__()
        page = browser.open(f"{server.url}/?instrument=BTCUSDT")
        flow = subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.forecast"], cwd=SCRATCH,
                                env=flow_env(kafka_bootstrap, ticks, tmp / "flow", out, TICKLET_MAKER__ENABLED="true"),
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        samples = []
        while flow.poll() is None:  # the page while the dataflow publishes
            samples.append(page.evaluate(_DRAWN))
            time.sleep(0.5)
        assert flow.returncode == 0, flow.stderr.read()[-3000:]
        records = [(part, off, json.loads(v)) for _, v, _, part, off in consume_all(kafka_bootstrap, out,
                                                                                      with_offsets=True)]
        counts = Counter(v["instrument"] for _, _, v in records)
        for inst in INSTRUMENTS:
            clients[inst].wait_for(counts[inst], server=server)
        clients["metrics"].wait_for(sum(1 for _, _, v in records if v["type"] == "metrics"), server=server)
        ready = server.wait_ready()
        deadline = time.monotonic() + 60
        while page.evaluate("window.ticklet.records") < counts["BTCUSDT"] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # the page redraws every 0.5 s
        samples.append(page.evaluate(_DRAWN))
        shot = tmp / "live.png"
        png = page.screenshot(shot)
        shutil.copy(shot, SCREENSHOT_COPY)
        yield {"server": server, "topic": out, "records": records, "clients": clients, "ready": ready,
               "samples": samples, "png": png, "errors": page.errors, "requests": page.requests, "tmp": tmp,
               "bootstrap": kafka_bootstrap}
    finally:
        for c in clients.values():
            c.close()
        if browser is not None:
            browser.__exit__()
        server.stop()


@pytest.mark.integration  # a headless chromium, a Kafka broker
def test_every_record_published_is_streamed_in_order_per_instrument(live):
    records = live["records"]
    assert {v["instrument"] for _, _, v in records} == set(INSTRUMENTS)
    assert {v["type"] for _, _, v in records} == set(TYPES)
    for inst in INSTRUMENTS:
        want = [(p, o, v) for p, o, v in records if v["instrument"] == inst]
        got = live["clients"][inst].envelopes
        assert len(got) == len(want), inst
        assert [(e["partition"], e["offset"]) for e in got] == [(p, o) for p, o, _ in want], inst
        assert [e["record"] for e in got] == [v for _, _, v in want], inst  # exactly as published
        assert all(e["ts_kafka"] > 0 for e in got)
    metrics = live["clients"]["metrics"].envelopes
    assert {e["record"]["type"] for e in metrics} == {"metrics"}
    for inst in INSTRUMENTS:  # a stream of every instrument: each one's records in order
        assert [e["record"] for e in metrics if e["record"]["instrument"] == inst] == [
            v for _, _, v in records if v["instrument"] == inst and v["type"] == "metrics"]
    # live records went out in the fan-out, written once per client, not through each client's task
    text = live["server"].http.get("/metrics").text
    direct = float(re.search(r'^ticklet_serve_ws_messages_sent_total\{path="direct"\} (\S+)', text, re.M).group(1))
    assert direct > 0, text


@pytest.mark.integration  # a headless chromium, a Kafka broker
def test_the_latest_answers_are_the_topic_s_latest_records(live):
    http, records = live["server"].http, live["records"]
    expected = _expected_latest(records)
    listed = http.get("/v1/instruments").json()
    assert [i["instrument"] for i in listed] == sorted(INSTRUMENTS)
    for info in listed:
        mine = [(p, o, v) for p, o, v in records if v["instrument"] == info["instrument"]]
        assert info["records"] == {t: sum(1 for _, _, v in mine if v["type"] == t) for t in TYPES}
        assert (info["partition"], info["offset"]) == mine[-1][:2]
        assert info["models"] == sorted({v["model"] for _, _, v in mine if v["type"] == "forecast"})
    routes = {"forecast": "/v1/forecasts/latest", "scored": "/v1/forecasts/scored/latest", "metrics": "/v1/metrics",
              "signal": "/v1/signals/latest", "fill": "/v1/fills/latest", "maker_fill": "/v1/maker/fills/latest",
              "maker_economics": "/v1/maker/economics/latest"}
    for inst in INSTRUMENTS:
        for kind, route in routes.items():
            r = http.get(route, params={"instrument": inst})
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            want = [v for k, v in sorted(expected.items(), key=lambda kv: (kv[0][2], kv[0][3]))
                    if k[0] == kind and k[1] == inst]
            assert r.json() == want, (inst, kind)
            assert all(v["schema"] == SCHEMA_VERSION and v["type"] == kind for v in r.json())
    # one model, one horizon; both
    r = http.get("/v1/forecasts/latest", params={"instrument": "ETHUSDT", "model": "linear"}).json()
    assert {v["model"] for v in r} == {"linear"} and len(r) == len({v["horizon"] for v in r}) > 1
    r = http.get("/v1/metrics", params={"instrument": "ETHUSDT", "model": "logistic", "horizon": 10}).json()
    assert r == [expected[("metrics", "ETHUSDT", "logistic", 10)]]
    # the answers have the published record types' fields
    fields = {Forecast: "forecast", ForecastRecord: "scored", MetricsRecord: "metrics", Signal: "signal", Fill: "fill",
              MakerFillRecord: "maker_fill", MakerEconomicsRecord: "maker_economics"}
    for cls, kind in fields.items():
        v = http.get(routes[kind], params={"instrument": "BTCUSDT"}).json()[0]
        assert list(v) == ["schema", "type", *cls.__struct_fields__]
    # nothing of that yet: a 404 that says so
    r = http.get("/v1/signals/latest", params={"instrument": "SOLUSDT"})
    assert r.status_code == 404 and "SOLUSDT" in r.json()["message"]
    r = http.get("/v1/forecasts/latest", params={"instrument": "BTCUSDT", "model": "prophet"})
    assert r.status_code == 404 and r.json()["message"] == "no forecast of BTCUSDT, model 'prophet' yet"


@pytest.mark.integration  # a headless chromium, a Kafka broker
@pytest.mark.parametrize("route,params,named", [
    ("/v1/forecasts/latest", {"instrument": "BTCUSDT", "horizon": "abc"}, "'horizon'"),
    ("/v1/forecasts/latest", {"instrument": "BTCUSDT", "horizon": "0"}, "'horizon'"),
    ("/v1/forecasts/latest", {"instrument": "btcusdt"}, "'instrument'"),
    ("/v1/metrics", {}, "'instrument' is required"),
    ("/v1/signals/latest", {"instrument": "BTCUSDT", "model": "a model"}, "'model'"),
    ("/v1/forecasts/scored/latest", {"instrument": "BTC/USDT"}, "'instrument'"),
])
def test_a_bad_query_parameter_is_a_422_with_one_clear_line(live, route, params, named):
    r = live["server"].http.get(route, params=params)
    assert r.status_code == 422
    body = r.json()
    msg = body["message"]
    assert named in msg and "\n" not in msg and msg.startswith("query parameter"), msg
    assert body["detail"][0]["loc"][0] == "query"


@pytest.mark.integration  # a headless chromium, a Kafka broker
@pytest.mark.parametrize("query,named", [
    ("types=forecast,nope", "'types': unknown record type 'nope'"),
    ("instrument=eth", "'instrument': not an instrument"),
    ("after=0-12", "'after': not PARTITION:OFFSET pairs"),
    ("backlog=lots", "'backlog'"),
])
def test_a_bad_stream_parameter_is_a_422_with_one_clear_line(live, query, named):
    with pytest.raises(InvalidStatus) as ex:
        connect(f"{live['server'].ws_url}/v1/stream?{query}", open_timeout=30)
    assert ex.value.response.status_code == 422
    msg = json.loads(ex.value.response.body)["message"]
    assert named in msg and "\n" not in msg, msg


def _read(url: str, n: int, timeout_s: float = 60) -> list[dict]:
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    with connect(url, max_size=None, open_timeout=30) as ws:
        while len(out) < n and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                out.extend(json.loads(ws.recv(timeout=1)))
    return out


@pytest.mark.integration  # a headless chromium, a Kafka broker
def test_a_stream_resumes_after_the_offsets_it_saw(live):
    """After an offset the server no longer holds (read again from Kafka),
    after a recent one (its buffer), and the last records held (backlog=)."""
    records = live["records"]
    btc = [(p, o, v) for p, o, v in records if v["instrument"] == "BTCUSDT"]
    part = btc[0][0]
    for cut in (10, len(btc) - 500):
        seen = btc[cut][1]
        want = [(o, v) for _, o, v in btc[cut + 1:]]
        got = _read(f"{live['server'].ws_url}/v1/stream?instrument=BTCUSDT&after={part}:{seen}", len(want))
        assert [(e["offset"], e["record"]) for e in got] == want, cut
    # the metrics client got every metrics record in the order the server consumed them
    held = live["clients"]["metrics"].envelopes[-7:]
    got = _read(f"{live['server'].ws_url}/v1/stream?types=metrics&backlog=7", 7)
    assert got == held


@pytest.mark.integration  # a headless chromium, a Kafka broker
def test_health_readiness_metrics_and_docs(live):
    http, records = live["server"].http, live["records"]
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz").json()
    assert ready["ready"] and ready["lag"] == 0 and ready["consumed"] == len(records)
    text = http.get("/metrics").text
    kinds = Counter(v["type"] for _, _, v in records)
    for kind, n in kinds.items():
        assert f'ticklet_serve_records_total{{type="{kind}"}} {float(n)}' in text
    assert "ticklet_serve_ready 1.0" in text
    assert re.search(r'ticklet_serve_http_request_seconds_count\{route="/v1/forecasts/latest",status="200"\} \d',
                     text)
    spec = http.get("/openapi.json").json()
    assert {"/v1/instruments", "/v1/forecasts/latest", "/v1/metrics", "/v1/signals/latest", "/healthz", "/readyz",
            "/metrics"} <= set(spec["paths"])
    forecast = spec["components"]["schemas"]["Forecast"]
    assert list(forecast["properties"]) == ["schema", "type", *Forecast.__struct_fields__]
    assert forecast["properties"]["schema"]["const"] == SCHEMA_VERSION
    docs = http.get("/docs").text
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", docs)
    assert assets and all(a.startswith("/docs/static/") for a in assets), assets  # nothing from a CDN
    for a in assets:
        assert http.get(a).status_code == 200, a


@pytest.mark.integration  # a headless chromium, a Kafka broker
def test_the_live_page_draws_points_as_records_arrive(live):
    """Headless Chromium showed the page while the dataflow published: the
    points grew while it ran; at the end the price, each model's forecasts
    and rolling hit rates are drawn; nothing was fetched off the server."""
    samples = live["samples"]
    counts = [s["svg_points"] for s in samples]
    growing = [b for a, b in zip(counts, counts[1:], strict=False) if b > a]
    assert len(growing) >= 2, counts  # live: more points appeared during the run, more than once
    last = samples[-1]
    price = {t["name"]: t["points"] for t in last["price"]}
    assert price["price"] > 50 and last["svg_points"] > 100, last
    assert {"linear (at target)", "logistic (at target)", "naive (at target)"} <= set(price), last
    assert all(n > 20 for n in price.values()), last
    assert {t["name"] for t in last["hit_rate"]} >= {"linear", "logistic"} and last["rows"] == 3, last
    assert last["status"].startswith("live"), last
    assert live["errors"] == [], live["errors"]
    origin = live["server"].url
    assert all(u.startswith(origin) for u in live["requests"]), live["requests"]
    width, height = png_size(live["png"])
    assert width >= 1200 and height >= 900
    assert SCREENSHOT_COPY.exists()


@pytest.mark.integration  # a headless chromium, a Kafka broker
def test_a_fresh_server_rebuilds_the_state_and_guards_it_with_a_key(live):
    """Started after the run, it reads the topic back (ready once caught up)
    and answers as the first one. With an API key: every route but health
    needs it (header, bearer, ?api_key=, which sets a cookie the page's
    stream then carries); the key never reaches the log."""
    first = live["server"].http
    server = Server(live["bootstrap"], live["topic"], live["tmp"] / "serve-b.log", TICKLET_SERVE__API_KEY=API_KEY,
                    TICKLET_SERVE__GROUP_ID="another-server")
    try:
        assert server.http.get("/healthz").status_code == 200  # no key needed
        ready = server.wait_ready()
        assert ready["consumed"] == len(live["records"])
        for route in ("/v1/instruments", "/v1/forecasts/latest?instrument=BTCUSDT", "/metrics", "/", "/docs",
                      "/openapi.json", "/v1/metrics?instrument=ETHUSDT&horizon=abc"):
            r = server.http.get(route)
            assert r.status_code == 401 and "API key" in r.json()["message"], route
        assert server.http.get("/v1/instruments", headers={"X-API-Key": "wrong"}).status_code == 401
        for inst in INSTRUMENTS:
            for route in ("/v1/forecasts/latest", "/v1/metrics", "/v1/signals/latest"):
                r = server.http.get(route, params={"instrument": inst}, headers={"X-API-Key": API_KEY})
                assert r.status_code == 200 and r.json() == first.get(route, params={"instrument": inst}).json()
        assert server.http.get("/v1/instruments", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
        with pytest.raises(InvalidStatus) as ex:
            connect(f"{server.ws_url}/v1/stream", open_timeout=30)
        assert ex.value.response.status_code == 401
        # the page: ?api_key= once, then the cookie
        with httpx.Client(base_url=server.url) as browserish:
            r = browserish.get("/", params={"api_key": API_KEY})
            assert r.status_code == 200 and "httponly" in r.headers["set-cookie"].lower()
            assert browserish.get("/static/live.js").status_code == 200
            cookie = r.headers["set-cookie"].split(";")[0]
        with connect(f"{server.ws_url}/v1/stream?types=metrics&backlog=3", additional_headers={"Cookie": cookie},
                     open_timeout=30) as ws:
            got = json.loads(ws.recv(timeout=30))
        assert len(got) == 3
        assert API_KEY not in server.log and "api_key=***" in server.log, server.log[-2000:]
    finally:
        server.stop()
    assert API_KEY not in server.log


@pytest.mark.integration  # a headless chromium, a Kafka broker
def test_a_client_that_stops_reading_is_dropped_without_stalling_anyone(live, tmp_path):
    """A client that reads nothing after its handshake, while 40,000 real
    records arrive (10,000 a second): it is dropped (close code 4008,
    counted) and cut off; a reading client gets every record in order;
    health answers at once."""
    from sinks.kafka import ensure_topic

    topic = topic_name("serve-slow")
    ensure_topic({"bootstrap.servers": live["bootstrap"]}, topic)
    server = Server(live["bootstrap"], topic, tmp_path / "serve-c.log", TICKLET_SERVE__MAX_PENDING="5000")
    values = [(v["instrument"].encode(), json.dumps(v, separators=(",", ":")).encode())
              for _, _, v in live["records"]]
    n = 40_000
    host = server.url.removeprefix("http://")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    stuck.settimeout(30)
    stuck.connect((host.split(":")[0], int(host.split(":")[1])))
    try:
        stuck.sendall(f"GET /v1/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += stuck.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        reader = StreamClient(f"{server.ws_url}/v1/stream")
        p = Producer({"bootstrap.servers": live["bootstrap"], "linger.ms": 5})
        for i in range(n):
            key, value = values[i % len(values)]
            while True:
                try:
                    p.produce(topic, value, key)
                    break
                except BufferError:
                    p.poll(0.1)
            if i % 1000 == 0:
                p.poll(0)
                time.sleep(0.1)
            if i % 5000 == 0:
                t0 = time.monotonic()
                assert server.http.get("/healthz").status_code == 200
                assert time.monotonic() - t0 < 2.0
        assert p.flush(60) == 0
        got = reader.wait_for(n, timeout_s=180, server=server)
        assert len(got) == n
        per_partition: dict[int, list[int]] = {}
        for e in got:
            per_partition.setdefault(e["partition"], []).append(e["offset"])
        assert all(offs == list(range(len(offs))) for offs in per_partition.values())  # all, in order, once
        metrics = server.http.get("/metrics").text
        # the stuck client, and the reader each time it fell behind and resumed
        assert f"ticklet_serve_ws_slow_clients_total {1.0 + reader.resumes}" in metrics, metrics
        assert "ticklet_serve_ws_clients 1.0" in metrics
        assert "dropped" in server.log and "TICKLET_SERVE__MAX_PENDING" in server.log
        # the stuck client is cut off: reading it now ends (close frame, then EOF, or a reset)
        stuck.settimeout(30)
        received, ended = 0, False
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            try:
                chunk = stuck.recv(1 << 20)
            except ConnectionResetError:
                ended = True
                break
            if not chunk:
                ended = True
                break
            received += len(chunk)
        assert ended and received < n * 300, received
        reader.close()
    finally:
        stuck.close()
        server.stop()


@pytest.mark.integration  # the CLI in a subprocess
@pytest.mark.parametrize("env,named", [
    ({"TICKLET_SERVE__PORT": "http"}, "TICKLET_SERVE__PORT"),
    ({"TICKLET_SERVE__ADDRESS": "everywhere"}, "TICKLET_SERVE__ADDRESS"),
    ({"TICKLET_SERVE__API_KEY": " "}, "TICKLET_SERVE__API_KEY"),
    ({"TICKLET_SERVE__CORS_ORIGINS": '["app.example"]'}, "TICKLET_SERVE__CORS_ORIGINS"),
    ({"TICKLET_SERVE__API_KEY": "a key\r\nwith spaces"}, "TICKLET_SERVE__API_KEY: not a key of visible ASCII"),
    ({"TICKLET_SERVE__MAX_RESUMING": "0"}, "TICKLET_SERVE__MAX_RESUMING"),
    ({"TICKLET_SERVE__RESUME_PREFETCH_KB": "lots"}, "TICKLET_SERVE__RESUME_PREFETCH_KB"),
    ({"TICKLET_SERVE__RESUME_STALL_S": "0"}, "TICKLET_SERVE__RESUME_STALL_S"),
    ({"TICKLET_SERVE__MAX_HEADER_BYTES": "10"}, "TICKLET_SERVE__MAX_HEADER_BYTES"),
    ({"TICKLET_SERVE__MAX_HEADERS": "1"}, "TICKLET_SERVE__MAX_HEADERS"),
    ({"TICKLET_SERVE__HEADER_TIMEOUT_S": "0"}, "TICKLET_SERVE__HEADER_TIMEOUT_S"),
    ({"TICKLET_SERVE__MAX_CONNECTIONS": "100"}, "TICKLET_SERVE__MAX_CONNECTIONS (100) must be above "
     "TICKLET_SERVE__MAX_CLIENTS (1000)"),
    ({"TICKLET_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "TICKLET_KAFKA__CONNECT_TIMEOUT_S": "1"},
     "cannot reach Kafka"),
])
def test_bad_settings_are_one_line_and_exit_2(env, named):
    base = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    proc = subprocess.run([*exe(), "serve"], cwd=SCRATCH, env={**base, **env}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("ticklet: ") and named in proc.stderr
    assert "with spaces" not in proc.stderr  # a key, even a bad one, is never shown


@pytest.mark.integration  # a Kafka broker
def test_a_port_in_use_is_one_line_and_exit_2(kafka_bootstrap):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        base = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
        proc = subprocess.run([*exe(), "serve", "--port", str(port)], cwd=SCRATCH, capture_output=True, text=True,
                              env={**base, "TICKLET_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap}, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"ticklet: cannot listen on 127.0.0.1:{port} (TICKLET_SERVE__ADDRESS, "
                                   "TICKLET_SERVE__PORT): Address already in use"), proc.stderr


@pytest.mark.integration
def test_ctrl_c_stops_the_server_with_one_line_and_130(kafka_bootstrap, tmp_path):
    """Ctrl-C (SIGINT) on a running ``ticklet serve``: it shuts down, says so
    in one line and exits with status 130, the shell's convention. Before:
    uvicorn raised the signal again once it had shut down, and the command
    ended on a ``KeyboardInterrupt`` traceback."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env = {**base, "TICKLET_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
           "TICKLET_KAFKA__OUTPUT_TOPIC": topic_name("serve.stop"), "TICKLET_SERVE__PORT": "0"}
    log = tmp_path / "serve.log"
    with open(log, "w") as out:  # SIGINT as a terminal delivers it (a shell may start commands ignoring it)
        proc = subprocess.Popen([*exe(), "serve"], cwd=SCRATCH, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    with reaped(proc):
        deadline = time.monotonic() + 90
        while not (m := re.search(r"serving (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        assert httpx.get(f"{m.group(1)}/healthz", timeout=30).status_code == 200
        interrupt(proc, timeout=60)
    text = log.read_text()
    assert proc.returncode == 130, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert text.splitlines()[-1] == "ticklet: serve stopped on request (SIGINT): its connections closed", text


# ---------------------------------------------------------------------------
# the pure parts, without a server


def test_the_store_keeps_the_latest_event_time_through_replayed_duplicates():
    """A restarted dataflow publishes again what followed its last snapshot:
    the answers never go back in time."""
    from sinks.records import kafka_record
    from ticklet.serve.state import LatestStore, decode_record

    def rec(ts: int, off: int):
        _, value = kafka_record("BTCUSDT", Signal("BTCUSDT", "linear", 1, ts, 1, 0.6, 1e-4, 0.5))
        return decode_record(value, 0, off, 0)
    store = LatestStore()
    for off, ts in enumerate([1, 2, 3, 2, 3, 4]):  # 2 and 3 replayed
        store.update(rec(ts * 1000, off))
        assert store.latest("signal", "BTCUSDT")[0].ts == max([1, 2, 3, 2, 3, 4][:off + 1]) * 1000


def test_what_the_loop_has_not_taken_yet_goes_out_as_one_batch_in_order():
    """The consumer thread's hand-overs wait in one queue: the loop takes
    them in one step, consecutive batches joined (fewer, larger messages
    when it is busy), a partition's start still before its records, and
    every slot given back."""
    from sinks.records import kafka_record
    from ticklet.serve.feed import Feed
    from ticklet.serve.state import decode_record

    entries = [decode_record(kafka_record(r.instrument, r)[1], i % 2, i, 0) for i, r in enumerate(
        [Signal("BTCUSDT", "linear", 1, 1000 * k, 1, 0.6, 1e-4, 0.5) for k in range(6)])]
    posted: list = []
    calls: list = []
    feed = Feed({}, "t", 0, post=lambda fn, arg: posted.append((fn, arg)),
                on_begin=lambda begin: calls.append(("begin", begin)),
                on_batch=lambda batch: calls.append(("batch", [e.offset for e in batch])),
                on_ready=lambda _: calls.append(("ready", None)), max_in_flight=4)
    feed._deliver(entries[0:2])
    feed._deliver(entries[2:3])
    feed._call(feed._on_begin, {5: 0})
    feed._deliver(entries[3:6])
    feed._call(feed._on_ready, None)
    assert len(posted) == 1  # one drain scheduled for all of it
    fn, arg = posted.pop()
    fn(arg)
    assert calls == [("batch", [0, 1, 2]), ("begin", {5: 0}), ("batch", [3, 4, 5]), ("ready", None)]
    assert all(feed._slots.acquire(blocking=False) for _ in range(4))  # the 3 batches' slots are back
    feed._slots.release()
    feed._deliver(entries[:1])  # after a drain, the next hand-over schedules another
    assert len(posted) == 1


@pytest.mark.integration  # a Kafka broker
def test_the_consumer_follows_a_topic_created_just_as_it_starts(kafka_bootstrap):
    """Right after a topic is created, its partitions have no leader for a
    moment, and the broker answers offset queries with NOT_LEADER (measured
    here: on every new topic, often several times). The server's consumer
    waits and tries again instead of dying with the answer; each topic's
    records then arrive, from the first."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from ticklet.serve.feed import Feed, consumer_config

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for _ in range(5):
        topic = topic_name("serve-new")
        got: list = []
        feed = Feed(consumer_config([kafka_bootstrap], topic), topic, 0, post=lambda fn, arg: fn(arg),
                    on_begin=lambda begin: None, on_batch=got.extend, on_ready=lambda _: None)
        admin.create_topics([NewTopic(topic, 4, 1)])
        named = time.monotonic() + 30
        while not admin.list_topics(topic, timeout=10).topics[topic].partitions:
            assert time.monotonic() < named, f"{topic} was not created"  # the consumer starts as soon as
        feed.start()  # the metadata names the partitions: before the broker serves them
        try:
            p = Producer({"bootstrap.servers": kafka_bootstrap})
            deadline = time.monotonic() + 60
            while not feed.ready and feed.alive and time.monotonic() < deadline:
                time.sleep(0.05)
            assert feed.alive and feed.ready, feed.error
            for i in range(20):
                p.produce(topic, json.dumps({"i": i}).encode(), b"k")
            assert p.flush(30) == 0
            while len(got) + sum(feed.bad.values()) < 20 and feed.alive and time.monotonic() < deadline:
                time.sleep(0.05)
            assert feed.alive and sum(feed.bad.values()) == 20  # read from the first (not served records)
        finally:
            feed.stop()


@pytest.mark.integration  # a server on a local socket
def test_a_consumer_that_cannot_go_on_says_why_and_the_server_stops(caplog):
    """A consumer that stops on an error (here a real client refusing its
    configuration) reports why; the server then stops (``ticklet serve``
    exits 1, so that a supervisor restarts it) instead of serving state that
    no longer follows the topic, with /healthz at 503 for ever."""
    import asyncio

    import uvicorn

    from core.config import KafkaConfig
    from sinks.serve_config import ServeConfig
    from ticklet.serve.app import create_app
    from ticklet.serve.feed import Feed

    failed: list[str] = []
    feed = Feed({"bootstrap.servers": "127.0.0.1:9", "group.id": "g", "fetch.wait.max.ms": "soon"}, "t", 0,
                post=lambda fn, arg: fn(arg), on_begin=lambda _: None, on_batch=lambda _: None,
                on_ready=lambda _: None, on_fail=failed.append)
    feed.start()
    feed.stop()
    assert not feed.alive and failed == [feed.error]
    assert "fetch.wait.max.ms" in feed.error

    app = create_app(ServeConfig(port=0), KafkaConfig(), start_feed=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    app.state.hub.stop_server = lambda: setattr(server, "should_exit", True)
    t = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    t.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert httpx.get(url + "/v1/instruments").status_code == 200
    app.state.hub.fail(failed[0])
    t.join(10)
    assert not t.is_alive()
    assert "the Kafka consumer stopped" in caplog.text and "the server stops" in caplog.text
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/v1/instruments")
    sock.close()


def test_values_that_are_not_served_records_are_refused_with_a_reason():
    from core.events import ErrorRecord
    from sinks.records import kafka_record
    from ticklet.serve.state import BadRecord, decode_record

    cases = {b"": "json", b"{not json": "json", b'{"schema":1,"type":"forecast","instrument":"BTCUSDT"}': "schema",
             kafka_record("", ErrorRecord("parse", "bad", "x"))[1]: "type",
             b'{"schema":3,"type":"signal","instrument":"btc\\u202eusdt","model":"m"}': "instrument"}
    for value, reason in cases.items():
        with pytest.raises(BadRecord) as ex:
            decode_record(value, 0, 0, 0)
        assert ex.value.reason == reason, value


def test_the_key_is_redacted_from_log_lines():
    import logging

    from ticklet.serve.app import RedactKey

    f = RedactKey(API_KEY)
    rec = logging.LogRecord("uvicorn.error", logging.INFO, "", 0, '%s - "WebSocket %s" [accepted]',
                            ("127.0.0.1:5", f"/v1/stream?api_key={API_KEY}&types=metrics"), None)
    assert f.filter(rec)
    assert rec.getMessage() == '127.0.0.1:5 - "WebSocket /v1/stream?api_key=***&types=metrics" [accepted]'
    rec = logging.LogRecord("x", logging.INFO, "", 0, "header %s", (API_KEY,), None)
    f.filter(rec)
    assert API_KEY not in rec.getMessage()


def test_page_assets_are_local(tmp_path):
    """The page loads plotly.js and its script from the server itself."""
    from ticklet.serve.app import STATIC

    html = (STATIC / "live.html").read_text()
    srcs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert srcs == ["data:,", "static/plotly.min.js", "static/live.js"]
    assert "https://" not in (STATIC / "live.js").read_text()


def test_one_table_of_record_kinds_names_what_is_published_served_and_documented(btc_spot_chain):
    """Issue 24: sinks.records.KINDS is the one table of the record kinds:
    the ``type`` kafka_record writes, the types ``ticklet serve`` serves and
    the event time it orders each by, and its OpenAPI models read it (real
    forecasts, scored forecasts and metrics of BTCUSDT)."""
    from sinks.records import KINDS, OUTPUT_KINDS, kafka_record
    from ticklet.serve import app
    from ticklet.serve.state import TYPES, decode_record

    assert len({k.cls for k in KINDS}) == len({k.name for k in KINDS}) == len(KINDS)
    assert TYPES == tuple(k.name for k in OUTPUT_KINDS) == ("forecast", "scored", "metrics", "signal", "fill",
                                                              "maker_fill", "maker_economics")
    models = (app.ForecastModel, app.ScoredModel, app.MetricsModel, app.SignalModel, app.FillModel, app.MakerFillModel,
              app.MakerEconomicsModel)
    assert [m.model_json_schema()["properties"]["type"]["const"] for m in models] == list(TYPES)
    assert [m.__name__ for m in models] == [k.cls.__name__ for k in OUTPUT_KINDS]
    real = [r for r in btc_spot_chain.join_out[:2000] + btc_spot_chain.metrics[:100]
            if type(r) in (Forecast, ForecastRecord, MetricsRecord)]
    by_cls = {k.cls: k for k in KINDS}
    seen = set()
    for r in real:
        k = by_cls[type(r)]
        e = decode_record(kafka_record(r.instrument, r)[1], 0, 0, 0)
        assert e.kind == k.name and e.ts == getattr(r, k.time_field)
        seen.add(k.name)
    assert seen == {"forecast", "scored", "metrics"}

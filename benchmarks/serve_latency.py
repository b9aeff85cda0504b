"""``ticklet serve`` under load, through a real Kafka broker, as JSON.

1. **Stream latency.** ``--clients`` (100) WebSocket clients follow
   ``/v1/stream`` (every record of every type) while real records are
   produced into the output topic at ``--rate`` (2,000) records/s, in bursts
   every ``--tick-ms`` (10 ms). The latency of a record at a client is the time
   from its Kafka append (the topic has ``message.timestamp.type=
   LogAppendTime``: the broker stamps it; millisecond resolution, so the
   figure is late by up to 1 ms) to its arrival at the client (the moment
   its WebSocket message is read). The same machine and clock throughout.
   The time from the producer's ``produce`` call (µs) is given too, and
   where the time goes: a bare Kafka consumer of the topic (the server's
   consumer settings, a process of its own) gives what Kafka itself takes
   to deliver a record (``bare_kafka_consumer_from_append_ms``); per record,
   the first client to get it (``first_client_from_append_ms``) and how much
   later the last one does (``last_minus_first_client_ms``: the fan-out).
2. **HTTP latency.** ``GET /v1/forecasts/latest?instrument=BTCUSDT`` at
   ``--http-rate`` (1,000) requests/s, paced, on 16 keep-alive connections:
   each request's time from its scheduled start to the complete answer.

The records are the forecast dataflow's Kafka output over the bundled
sample (``data/sample``, produced once into a topic of its own and read
back), replayed in a loop. Clients, producer and HTTP load run in processes
of their own; the server is ``ticklet serve`` as a user starts it.

Usage::

    python benchmarks/serve_latency.py [--clients 100] [--rate 2000] [--seconds 20] [--http-rate 1000]

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` or starts a broker with scripts/kafka.sh.
Prints one JSON object, with the load average of the machine before and after
and the CPU (in cores) each process used while records were produced.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import gc
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

from harness.kafka_broker import kafka_broker
from harness.kafkautil import publish_forecasts
from sinks.kafka import ensure_topic

_ENV = re.compile(rb'\{"partition":(\d+),"offset":(\d+),"ts_kafka":(\d+),')


def _records(bootstrap: str, tmp: str) -> list[tuple[bytes, bytes]]:
    """The dataflow's output topic over the bundled sample: (key, value) pairs."""
    out = publish_forecasts(bootstrap, f"bench.src.{uuid.uuid4().hex[:8]}", [ROOT / "data" / "sample"], Path(tmp))
    return [(key, value) for key, value, _, _ in out]


class _StreamReader(asyncio.Protocol):
    """A minimal WebSocket client (RFC 6455) on an asyncio protocol: so that
    100 clients cost little CPU next to the server they measure. It stores,
    per message, its arrival time and the (partition, offset, ts_kafka) of
    its envelopes (a regex over the bytes; converted after the run:
    :meth:`on_message`), and answers the server's pings. ``opened`` gets
    the handshake's status (101, or the refusal's)."""

    def __init__(self, host: str, path: str, rows: list, opened: asyncio.Future):
        self.host, self.path, self.rows, self.opened = host, path, rows, opened
        self.buf = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"  # type: ignore
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        .encode())

    def data_received(self, data: bytes) -> None:
        t = time.time()
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = int(buf[9:12])
            self.opened.set_result(status)
            if status != 101:
                assert self.transport is not None
                self.transport.close()
                return
            del buf[:end + 4]
            self.open = True
        pos = 0
        while len(buf) - pos >= 2:
            b0, n = buf[pos], buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if len(buf) - pos < head + n:
                break
            payload = bytes(buf[pos + head:pos + head + n])
            pos += head + n
            op = b0 & 0x0F
            if op in (0, 1, 2):
                self.on_message(t, payload)
            elif op == 8:
                self.on_close(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005)
            elif op == 9:  # ping: a masked pong with the same payload
                mask = os.urandom(4)
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask
                                     + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        del buf[:pos]

    def on_message(self, t: float, payload: bytes) -> None:
        self.rows.append((t, _ENV.findall(payload)))

    def on_close(self, code: int) -> None:
        """The server's close frame (its code)."""


def _clients(url: str, n: int, seconds: float, out_path: str, ready: MpEvent) -> None:
    """``n`` stream clients in one process: per record, (partition, offset,
    ts_kafka ms, arrival s); written to ``out_path`` as .npy."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host, port = u.hostname, u.port
    assert host is not None and port is not None, url
    rows: list[tuple[float, list]] = []
    gc.disable()  # millions of rows: a full collection would pause the clients, not the server

    async def main() -> None:
        loop = asyncio.get_running_loop()
        conns = []
        for _ in range(n):
            opened = loop.create_future()
            tr, _ = await loop.create_connection(functools.partial(_StreamReader, u.netloc, u.path, rows, opened),
                                                 host, port)
            assert await opened == 101
            conns.append(tr)
        ready.set()
        await asyncio.sleep(seconds)
        for tr in conns:
            tr.close()

    import uvloop  # the server's own loop (uvicorn[standard]): reading 100 sockets costs the clients less

    uvloop.run(main())
    flat = [(int(p), int(o), int(ts), t) for t, found in rows for p, o, ts in found]
    np.save(out_path, np.array(flat, dtype=np.float64))


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], rate: float, tick_ms: float,
             seconds: float, out_path: str) -> None:
    """Produce ``records`` in a loop at ``rate``/s in bursts every ``tick_ms``;
    per record (partition, offset, produce time s) to ``out_path``."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1, "enable.idempotence": False})
    sent: list[tuple[int, int, float]] = []

    def report(err, msg, t0) -> None:  # noqa: ANN001
        if err is None:
            sent.append((msg.partition(), msg.offset(), t0))
    per_tick = rate * tick_ms / 1000.0
    start = time.perf_counter()
    owed, i, ticks = 0.0, 0, 0
    while time.perf_counter() - start < seconds:
        owed += per_tick
        while owed >= 1:
            key, value = records[i % len(records)]
            t0 = time.time()
            p.produce(topic, value, key, on_delivery=functools.partial(report, t0=t0))
            i += 1
            owed -= 1
        p.poll(0)
        ticks += 1
        delay = start + ticks * tick_ms / 1000.0 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    p.flush(30)
    np.save(out_path, np.array(sent, dtype=np.float64))


def _bare_consumer(bootstrap: str, topic: str, seconds: float, out_path: str, ready: MpEvent) -> None:
    """A bare Kafka consumer of ``topic`` with the server's consumer settings:
    per record (partition, offset, ts_kafka ms, time it was polled s), to
    ``out_path``. What Kafka itself takes to deliver a record, for comparison."""
    from ticklet.serve.feed import consumer_config

    c = Consumer(consumer_config([bootstrap], uuid.uuid4().hex))
    parts = sorted(c.list_topics(topic, timeout=30).topics[topic].partitions)
    c.assign([TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1])
              for p in parts])
    rows: list[tuple] = []  # (partition, offset, ts_kafka ms, polled s)
    ready.set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        m = c.poll(0.2)
        if m is None:
            continue
        msgs = [m, *c.consume(2000, 0)]
        t = time.time()
        rows.extend((x.partition(), x.offset(), x.timestamp()[1], t) for x in msgs if not x.error())
    c.close()
    np.save(out_path, np.array(rows, dtype=np.float64))


def _http_load(url: str, rate: float, seconds: float, conns: int, out_path: str) -> None:
    """GET ``url`` at ``rate``/s (open loop: each request has a scheduled
    start, and its latency counts from there, waiting included) on ``conns``
    keep-alive connections; per request its latency (s) and status. A
    minimal HTTP/1.1 client on asyncio streams, so that the load generator
    costs little CPU next to the server."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    request = (f"GET {u.path}{'?' if u.query else ''}{u.query} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n").encode()

    async def main() -> list[tuple[float, int]]:
        out: list[tuple[float, int]] = []
        queue: asyncio.Queue = asyncio.Queue()

        async def worker() -> None:
            reader, writer = await asyncio.open_connection(u.hostname, u.port)
            while True:
                due = await queue.get()
                if due is None:
                    writer.close()
                    return
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                found = re.search(rb"(?i)content-length: *(\d+)", head)
                assert found is not None, head
                length = int(found.group(1))
                await reader.readexactly(length)
                out.append((time.perf_counter() - due, status))
        workers = [asyncio.create_task(worker()) for _ in range(conns)]
        await asyncio.sleep(0.5)
        t0 = time.perf_counter()
        for k in range(int(rate * seconds)):
            due = t0 + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(due)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        return out

    np.save(out_path, np.array(asyncio.run(main()), dtype=np.float64))


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) a process (started: ``pid`` set) has used so far."""
    assert pid is not None, "a process not started"
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: np.ndarray) -> dict[str, float]:
    return {"p50": round(float(np.percentile(values, 50)), 2), "p90": round(float(np.percentile(values, 90)), 2),
            "p99": round(float(np.percentile(values, 99)), 2), "max": round(float(values.max()), 2),
            "n": int(values.size)}


def _start_server(bootstrap: str, topic: str, tmp: str, profile: str | None = None,
                  settings: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``ticklet serve`` as a user starts it, with ``settings`` (TICKLET_*
    variables), once it is ready: (process, base URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env.update({"TICKLET_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "TICKLET_KAFKA__OUTPUT_TOPIC": topic,
                "TICKLET_SERVE__PORT": "0", **(settings or {})})
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    with open(Path(tmp) / "serve.log", "w+") as log:
        proc = subprocess.Popen([sys.executable, *prof, "-m", "ticklet.cli", "serve"], cwd=tmp, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = re.search(r"serving (http://[\d.]+:\d+)", (Path(tmp) / "serve.log").read_text())
        if m:
            import httpx

            while time.monotonic() < deadline:
                try:
                    if httpx.get(m.group(1) + "/readyz", timeout=2).status_code == 200:
                        return proc, m.group(1)
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("ticklet serve did not start: " + (Path(tmp) / "serve.log").read_text()[-2000:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--client-procs", type=int, default=2, help="processes the clients are spread over")
    ap.add_argument("--rate", type=float, default=2000.0, help="records/s produced")
    ap.add_argument("--tick-ms", type=float, default=10.0, help="records are produced in bursts this far apart")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds of each part")
    ap.add_argument("--warmup", type=float, default=10.0,
                    help="seconds of the stream produced before the measured ones (the broker's JIT settles)")
    ap.add_argument("--http-rate", type=float, default=1000.0)
    ap.add_argument("--http-conns", type=int, default=16)
    ap.add_argument("--profile", metavar="FILE", help="run the server under cProfile, its stats written to FILE")
    ap.add_argument("--keep", metavar="DIR", help="keep the raw samples (.npy: produced, received by the clients, "
                    "by the bare consumer) in DIR")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with kafka_broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        records = _records(bootstrap, tmp)
        topic = f"bench.serve.{uuid.uuid4().hex[:8]}"
        ensure_topic({"bootstrap.servers": bootstrap}, topic, partitions=4,
                     topic_config={"message.timestamp.type": "LogAppendTime"})
        server, base = _start_server(bootstrap, topic, tmp, args.profile, {
            "TICKLET_SERVE__BACKFILL": "0", "TICKLET_SERVE__MAX_PENDING": "1000000"})
        try:
            ctx = mp.get_context("spawn")
            ready = [ctx.Event() for _ in range(args.client_procs)]
            per = [args.clients // args.client_procs + (i < args.clients % args.client_procs)
                   for i in range(args.client_procs)]
            warm = args.warmup
            ws_url = base.replace("http", "ws") + "/v1/stream"
            clients = [ctx.Process(target=_clients, args=(ws_url, n, args.seconds + warm + 6, f"{tmp}/c{i}.npy", r))
                       for i, (n, r) in enumerate(zip(per, ready, strict=True))]
            bare_ready = ctx.Event()
            bare = ctx.Process(target=_bare_consumer, args=(bootstrap, topic, args.seconds + warm + 6,
                                                            f"{tmp}/bare.npy", bare_ready))
            for c in [*clients, bare]:
                c.start()
            for r in [*ready, bare_ready]:
                r.wait(60)
            producer = ctx.Process(target=_produce, args=(bootstrap, topic, records, args.rate, args.tick_ms,
                                                          args.seconds + warm, f"{tmp}/sent.npy"))
            cpu0 = {"server": _cpu_s(server.pid), **{f"clients{i}": _cpu_s(c.pid) for i, c in enumerate(clients)}}
            wall0 = time.monotonic()
            producer.start()
            pid_producer = producer.pid
            cpu0["producer"] = _cpu_s(pid_producer)
            cpu_end = dict(cpu0)
            while producer.is_alive():
                for name, pid in [("server", server.pid), ("producer", pid_producer),
                                  *[(f"clients{i}", c.pid) for i, c in enumerate(clients)]]:
                    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                        cpu_end[name] = _cpu_s(pid)
                time.sleep(0.2)
            wall = time.monotonic() - wall0
            cpu_share = {k: round((cpu_end[k] - cpu0[k]) / wall, 2) for k in cpu0}
            producer.join()
            for c in [*clients, bare]:
                c.join()
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                for f in Path(tmp).glob("*.npy"):
                    shutil.copy(f, Path(args.keep) / f.name)
            sent = np.load(f"{tmp}/sent.npy")
            got = np.concatenate([np.load(f"{tmp}/c{i}.npy") for i in range(args.client_procs)])
            # measured: the records produced after the warm-up
            t_first = sent[:, 2].min() + warm
            produced_at = {(int(p), int(o)): t for p, o, t in sent}
            keep = np.array([produced_at.get((int(p), int(o)), 0.0) >= t_first for p, o in got[:, :2]])
            got_m = got[keep]
            append_ms = (got_m[:, 3] - got_m[:, 2] / 1000.0) * 1000.0
            produce_ms = (got_m[:, 3] - np.array([produced_at[(int(p), int(o))] for p, o in got_m[:, :2]])) * 1000.0
            n_measured = int(sum(1 for t in produced_at.values() if t >= t_first))
            floor = np.load(f"{tmp}/bare.npy")
            floor = floor[np.array([produced_at.get((int(p), int(o)), 0.0) >= t_first for p, o in floor[:, :2]])]
            floor_ms = (floor[:, 3] - floor[:, 2] / 1000.0) * 1000.0
            # where the time goes: the first client to get a record, and how long after it the last one does
            key = got_m[:, 0] * 1e12 + got_m[:, 1]
            order = np.lexsort((got_m[:, 3], key))
            k_sorted, t_sorted = key[order], got_m[order, 3]
            starts = np.flatnonzero(np.r_[True, k_sorted[1:] != k_sorted[:-1]])
            first_t = t_sorted[starts]
            last_t = np.maximum.reduceat(t_sorted, starts)
            first_ms = (first_t - got_m[order, 2][starts] / 1000.0) * 1000.0
            spread_ms = (last_t - first_t) * 1000.0
            stream = {
                "clients": args.clients, "rate_records_per_s": args.rate, "burst_every_ms": args.tick_ms,
                "warmup_s": args.warmup, "measured_s": args.seconds,
                "records_produced": int(len(sent)), "records_measured": n_measured,
                "deliveries_expected": n_measured * args.clients, "deliveries_received": int(len(got_m)),
                "latency_from_append_ms": _pct(append_ms),
                "latency_from_produce_ms": _pct(produce_ms),
                "bare_kafka_consumer_from_append_ms": _pct(floor_ms),
                "first_client_from_append_ms": _pct(first_ms),
                "last_minus_first_client_ms": _pct(spread_ms),
                "cpu_cores_used": cpu_share,
            }
            load_mid = os.getloadavg()
            text = __import__("httpx").get(base + "/metrics", timeout=10).text
            sent_msgs = sum(float(v) for v in re.findall(r"^ticklet_serve_ws_messages_sent_total\{[^}]*\} (\S+)", text,
                                                          re.M))
            recs_sent = re.search(r"^ticklet_serve_ws_records_sent_total (\S+)", text, re.M)
            assert recs_sent is not None, text[-2000:]
            sent_recs = float(recs_sent.group(1))
            stream["records_per_message"] = round(sent_recs / sent_msgs, 2) if sent_msgs else None
            # HTTP: the latest forecasts, while nothing else runs
            hp = ctx.Process(target=_http_load, args=(base + "/v1/forecasts/latest?instrument=BTCUSDT",
                                                      args.http_rate, args.seconds, args.http_conns,
                                                      f"{tmp}/http.npy"))
            cpu_http0, wall_http0 = _cpu_s(server.pid), time.monotonic()
            hp.start()
            hp.join()
            cpu_http = round((_cpu_s(server.pid) - cpu_http0) / (time.monotonic() - wall_http0), 2)
            h = np.load(f"{tmp}/http.npy")
            http = {"rate_requests_per_s": args.http_rate, "connections": args.http_conns,
                    "requests": int(len(h)), "non_200": int((h[:, 1] != 200).sum()),
                    "latency_ms": _pct(h[:, 0] * 1000.0), "server_cpu_cores_used": cpu_http}
            metrics = __import__("httpx").get(base + "/metrics", timeout=10).text
            slow = re.search(r"^ticklet_serve_ws_slow_clients_total (\S+)", metrics, re.M)
        finally:
            server.terminate()
            server.wait(30)
    result = {
        "benchmark": "serve_latency",
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after_stream": [round(x, 2) for x in load_mid],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "stream": {**stream, "slow_clients_dropped": float(slow.group(1)) if slow else None},
        "http_forecasts_latest": http,
        "measured_from": "Kafka append time (LogAppendTime, ms resolution) / the producer's produce call",
        "measured_to": "arrival of the WebSocket message holding the record at the client",
    }
    sys.stdout.write(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

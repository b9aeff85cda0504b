"""``ticklet serve`` soaked by resuming and live stream clients, as JSON.

For ``--seconds`` (60), through a real broker and ``ticklet serve`` as a
user starts it (its default settings):

- ``--live`` (100) WebSocket clients follow ``/v1/stream`` (every record)
  while real records are produced at ``--rate`` (1,000) records/s;
- ``--resumers`` (100) clients resume again and again: each connects with
  ``after=`` a random offset of every partition older than what the
  server's buffer holds (``--history``, 200,000 records, were in the topic
  before the server started), so that each is read from Kafka by a
  consumer of its own; it reads (``instrument=`` one instrument, as the
  live page asks) for ``--hold`` (5) seconds, leaves, and resumes from
  another offset; refused (503: every place taken), it tries again a
  second later;
- ``/healthz`` is asked ``--health-rate`` (100) times a second, paced
  (open loop: each request's time counts from when it was due);
- ``--slow`` (0) clients send a request head a byte every ``--slow-every``
  (1) seconds (slowloris), each connecting anew once the server closes it
  (408 after ``TICKLET_SERVE__HEADER_TIMEOUT_S``, or 503 when it makes room
  past ``TICKLET_SERVE__MAX_CONNECTIONS``).

Reported: the server's peak RSS, threads and open files during the soak,
the same 5 s after every client left; ``/healthz`` p50/p99/max; records
delivered to the live clients of those produced; resumes served and
refused (the clients' count and the server's); the slow clients'
connections and what closed them (the clients' count and the server's);
the machine's load average.
The records are the forecast dataflow's output over the bundled sample,
replayed in a loop; clients, producer and the health probe run in
processes of their own, on the same machine as the server and the broker.

Usage::

    python benchmarks/serve_soak.py [--seconds 60] [--live 100] [--resumers 100] [--rate 1000] [--slow 0]

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` or starts a broker with scripts/kafka.sh.
The server's own settings may be given as TICKLET_SERVE__* variables
(e.g. ``TICKLET_SERVE__MAX_RESUMING``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx
import numpy as np
from serve_latency import _cpu_s, _http_load, _pct, _produce, _records, _start_server, _StreamReader

from harness.kafka_broker import kafka_broker
from harness.kafkautil import end_offsets, produce_all
from harness.serveutil import SlowClients, metric, open_files, proc_status
from sinks.kafka import ensure_topic
from ticklet.serve.limits import REASONS

_RECORD = b'{"partition":'
#: What the slow clients send, a byte at a time: a request head of 150 bytes.
_SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 110 + b"\r\n\r\n"


class _Counting(_StreamReader):
    """A stream client that counts the records it gets (no parsing) and how
    its connection ended, in ``stats``."""

    def __init__(self, host: str, path: str, opened: asyncio.Future, stats: Counter):
        super().__init__(host, path, [], opened)
        self.stats = stats
        self.ended = opened.get_loop().create_future()

    def on_message(self, t: float, payload: bytes) -> None:
        self.stats["records"] += payload.count(_RECORD)
        self.stats["messages"] += 1

    def on_close(self, code: int) -> None:
        self.stats[f"closed_{code}"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


def _clients(url: str, live: int, resumers: int, seconds: float, hold: float, older: dict[int, int], query: str,
             seed: int, out_path: str, ready: MpEvent) -> None:
    """``live`` clients following the stream and ``resumers`` resuming again
    and again for ``seconds``; their counts (JSON) to ``out_path``."""
    u = urlsplit(url)
    host, port = u.hostname, u.port
    assert host is not None and port is not None, url
    live_stats: Counter[str] = Counter()
    resume_stats: Counter[str] = Counter()

    async def connect(path: str, stats: Counter) -> tuple[int, _Counting]:
        loop = asyncio.get_running_loop()
        opened = loop.create_future()
        _, proto = await loop.create_connection(lambda: _Counting(u.netloc, path, opened, stats), host, port)
        return await opened, proto

    async def resumer(k: int, end: float) -> None:
        rnd = random.Random(seed * 1000 + k)
        while time.monotonic() < end:
            after = ",".join(f"{p}:{rnd.randint(-1, hi)}" for p, hi in sorted(older.items()))
            status, proto = await connect(f"{u.path}?after={after}&{query}", resume_stats)
            resume_stats[f"status_{status}"] += 1
            if status != 101:
                await asyncio.sleep(1.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proto.ended), max(0.0, min(hold, end - time.monotonic())))
            assert proto.transport is not None
            proto.transport.close()
            await proto.ended

    async def main() -> None:
        conns = []
        for _ in range(live):
            status, proto = await connect(u.path, live_stats)
            assert status == 101, status
            conns.append(proto)
        ready.set()
        end = time.monotonic() + seconds
        await asyncio.gather(*(resumer(k, end) for k in range(resumers)))
        await asyncio.sleep(max(0.0, end + 3 - time.monotonic()))  # the last records produced arrive
        for proto in conns:
            assert proto.transport is not None
            proto.transport.close()

    import uvloop

    uvloop.run(main())
    Path(out_path).write_text(json.dumps({"live": live_stats, "resume": resume_stats}))


def _slow(url: str, n: int, every_s: float, seconds: float, out_path: str, ready: MpEvent) -> None:
    """``n`` slow clients for ``seconds``, each connecting anew when closed;
    the connections the server closed, by the status it answered (JSON), to ``out_path``."""
    clients = SlowClients(url, [_SLOW_HEAD] * n, every_s=every_s, again=True)
    ready.set()
    time.sleep(seconds)
    clients.close()
    statuses = Counter(got[9:12].decode() if got.startswith(b"HTTP/1.1 ") else "none" for _, got in clients.ended)
    open_s = sorted(s for s, _ in clients.ended)
    Path(out_path).write_text(json.dumps({"closed_by_server": len(clients.ended), "answers": statuses,
                                          "seconds_open_p50": open_s[len(open_s) // 2] if open_s else None}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--live", type=int, default=100, help="live stream clients")
    ap.add_argument("--resumers", type=int, default=100, help="clients resuming from Kafka again and again")
    ap.add_argument("--hold", type=float, default=5.0, help="seconds a resumer reads before it resumes anew")
    ap.add_argument("--query", default="instrument=BTCUSDT", help="what the resumers ask for besides after=")
    ap.add_argument("--rate", type=float, default=1000.0, help="records/s produced during the soak")
    ap.add_argument("--history", type=int, default=200_000, help="records in the topic before the server starts")
    ap.add_argument("--health-rate", type=float, default=100.0, help="/healthz requests a second")
    ap.add_argument("--client-procs", type=int, default=2, help="processes the clients are spread over")
    ap.add_argument("--slow", type=int, default=0, help="slow clients, each sending a request head a byte at a time")
    ap.add_argument("--slow-every", type=float, default=1.0, help="seconds between two bytes of a slow client")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    load_before = os.getloadavg()
    serve_env = {k: v for k, v in os.environ.items() if k.startswith("TICKLET_SERVE__")}
    with kafka_broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        records = _records(bootstrap, tmp)
        topic = f"bench.soak.{uuid.uuid4().hex[:8]}"
        ensure_topic({"bootstrap.servers": bootstrap}, topic, partitions=4)
        produce_all(bootstrap, topic, (records[i % len(records)] for i in range(args.history)))
        server, base = _start_server(bootstrap, topic, tmp, settings=serve_env)
        try:
            buffer = int(serve_env.get("TICKLET_SERVE__BUFFER", "50000"))
            ends = {p: n for p, n in end_offsets(bootstrap, topic).items() if n > 0}
            total = sum(ends.values())
            # per partition, the offsets that the buffer did not hold at start (nor will later)
            older = {p: n - math.ceil(buffer * n / total) - 1 for p, n in ends.items()}
            assert all(v > 0 for v in older.values()), f"--history {args.history} is within the buffer"
            idle_rss, idle_threads = proc_status(server.pid)
            idle_files = open_files(server.pid)
            ctx = mp.get_context("spawn")
            ready = [ctx.Event() for _ in range(args.client_procs)]
            share = [(args.live // args.client_procs + (i < args.live % args.client_procs),
                      args.resumers // args.client_procs + (i < args.resumers % args.client_procs))
                     for i in range(args.client_procs)]
            ws = base.replace("http", "ws") + "/v1/stream"
            clients = [ctx.Process(target=_clients, args=(ws, n_live, n_res, args.seconds, args.hold, older,
                                                          args.query, args.seed + i, f"{tmp}/c{i}.json", r))
                       for i, ((n_live, n_res), r) in enumerate(zip(share, ready, strict=True))]
            for c in clients:
                c.start()
            slow = None
            if args.slow:
                ready.append(ctx.Event())
                slow = ctx.Process(target=_slow, args=(base, args.slow, args.slow_every, args.seconds,
                                                       f"{tmp}/slow.json", ready[-1]))
                slow.start()
                clients.append(slow)
            for r in ready:
                assert r.wait(120), "the clients did not connect"
            health = ctx.Process(target=_http_load, args=(base + "/healthz", args.health_rate, args.seconds, 1,
                                                         f"{tmp}/health.npy"))
            producer = ctx.Process(target=_produce, args=(bootstrap, topic, records, args.rate, 10.0, args.seconds,
                                                          f"{tmp}/sent.npy"))
            cpu0, wall0 = _cpu_s(server.pid), time.monotonic()
            health.start()
            producer.start()
            peak_rss, peak_threads, peak_files = idle_rss, idle_threads, idle_files
            while any(p.is_alive() for p in [*clients, health, producer]):
                rss, threads = proc_status(server.pid)
                peak_rss, peak_threads = max(peak_rss, rss), max(peak_threads, threads)
                peak_files = max(peak_files, open_files(server.pid))
                time.sleep(0.1)
            load_end = os.getloadavg()
            cpu = (_cpu_s(server.pid) - cpu0) / (time.monotonic() - wall0)
            for p in [*clients, health, producer]:
                p.join()
                assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"
            time.sleep(5.0)
            rss_after, threads_after = proc_status(server.pid)
            files_after = open_files(server.pid)
            metrics = httpx.get(base + "/metrics", timeout=10).text
        finally:
            server.terminate()
            server.wait(30)
        produced = len(np.load(f"{tmp}/sent.npy"))
        counts = [json.loads(Path(f"{tmp}/c{i}.json").read_text()) for i in range(args.client_procs)]
        slow_counts = json.loads(Path(f"{tmp}/slow.json").read_text()) if args.slow else {}
        live: Counter[str] = Counter()
        resume: Counter[str] = Counter()
        for c in counts:
            live.update(c["live"])
            resume.update(c["resume"])
        h = np.load(f"{tmp}/health.npy")
    result: dict[str, Any] = {
        "benchmark": "serve_soak",
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_at_end": [round(x, 2) for x in load_end]},
        "setup": {"seconds": args.seconds, "live_clients": args.live, "resuming_clients": args.resumers,
                  "hold_s": args.hold, "resume_query": args.query, "rate_records_per_s": args.rate,
                  "history_records": args.history, "slow_clients": args.slow, "slow_byte_every_s": args.slow_every,
                  "server_settings": serve_env or "defaults"},
        "server": {"rss_mb_idle": round(idle_rss, 1), "rss_mb_peak": round(peak_rss, 1),
                   "rss_mb_after_clients_left": round(rss_after, 1), "threads_idle": idle_threads,
                   "threads_peak": peak_threads, "threads_after_clients_left": threads_after,
                   "open_files_idle": idle_files, "open_files_peak": peak_files,
                   "open_files_after_clients_left": files_after,
                   "cpu_cores_used": round(cpu, 2)},
        "healthz": {"requests": int(len(h)), "non_200": int((h[:, 1] != 200).sum()),
                    "latency_ms": _pct(h[:, 0] * 1000.0)},
        "live": {"records_produced": produced, "deliveries_expected": produced * args.live,
                 "deliveries_received": live["records"], "messages": live["messages"],
                 "closed_by_server": {k: v for k, v in live.items() if k.startswith("closed_")}},
        "resumes": {"served": resume["status_101"], "refused_503": resume["status_503"],
                    "other_status": {k: v for k, v in resume.items() if k.startswith("status_")
                                     and k not in ("status_101", "status_503")},
                    "records_received": resume["records"],
                    "closed_by_server": {k: v for k, v in resume.items() if k.startswith("closed_")},
                    "server_refused": metric(metrics, 'ticklet_serve_ws_rejected_total{reason="resuming"}'),
                    "server_slow_clients_dropped": metric(metrics, "ticklet_serve_ws_slow_clients_total")},
        "slow": {**slow_counts, "server_refused": {
            r: metric(metrics, f'ticklet_serve_http_refused_total{{reason="{r}"}}') for r in REASONS}},
        "targets": {"rss_mb_under": 500, "healthz_p99_ms_under": 50},
    }
    result["targets"]["met"] = bool(peak_rss < 500 and result["healthz"]["latency_ms"]["p99"] < 50)
    sys.stdout.write(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

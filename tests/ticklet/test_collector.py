"""The live collector against a local exchange that serves the real
recordings (harness/binance_server.py), with a real Kafka broker.

The exchange drops messages, closes connections, loses what was published
while the client was away, rejects handshakes and pings; the tests check
that the collector reports every gap, resyncs its books to the exchange's
true book, delivers everything it received to Kafka, and that its raw capture
replays to the same forecasts as the live run.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import socket
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import httpx
import pytest

from core.config import KafkaConfig
from harness.binance_server import ReplayExchange
from harness.kafkautil import consume_all, flow_env, run_flow, topic_name
from harness.realdata import SCRATCH
from sources.binance_live import CollectConfig
from sources.wire import decode_tick
from ticklet.collector import Collector

#: Integration tests (tests/integration_mark.py): a Kafka broker and the test exchange (a websocket server).
pytestmark = pytest.mark.integration

SPOT = ("btcusdt_20240808.gz", "ethusdt_20240808.gz")
STREAMS = ("trade", "bookTicker", "depth@100ms")
DROP = {("btcusdt@depth@100ms", 300), ("btcusdt@trade", 2000), ("ethusdt@trade", 5000)}


def _ids(payloads: list[bytes], stream: str, field: str) -> list[int]:
    return [json.loads(p)["data"][field] for p in payloads if json.loads(p)["stream"] == stream]


def _runs(missing: list[int], present: list[int]) -> list[tuple[int, int]]:
    """(first missing id, first id received after it) of each run of missing ids."""
    gone, out = set(missing), []
    for a, b in pairwise(present):
        if b != a + 1 and a + 1 in gone:
            out.append((a + 1, b))
    return out


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, ws_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One collector session over the spot BTCUSDT and ETHUSDT recordings,
    with dropped messages and a forced disconnect that loses messages."""
    files = [ws_dir / "spot" / f for f in SPOT]
    cap = tmp_path_factory.mktemp("capture")
    ex = ReplayExchange(files, drop=DROP, close_after={30_000}, lose_on_reconnect=40).start()
    try:
        cfg = CollectConfig(symbols=["BTCUSDT", "ETHUSDT"], streams=STREAMS, ws_url=ex.url,
                            depth_url=ex.depth_url("spot"), capture_dir=cap, backoff_initial_s=0.05)
        cfg = cfg.model_copy(update={"book_topic": topic_name("book"), "events_topic": topic_name("events")})
        kafka = KafkaConfig(bootstrap_servers=kafka_bootstrap, ticks_topic=topic_name("live"))
        collector = Collector(cfg, kafka)
        counts = asyncio.run(collector.run(idle_exit_s=1.5))
    finally:
        ex.stop()
    return ex, collector, counts, cap, kafka


def test_everything_received_reaches_kafka_in_order(live, kafka_bootstrap):
    ex, collector, counts, _, kafka = live
    assert counts["messages"] == len(ex.sent) == len(ex.messages) - len(ex.dropped) - len(ex.lost)
    assert counts.get("kafka_failed", 0) == 0 and counts.get("kafka_undelivered", 0) == 0
    recs = consume_all(kafka_bootstrap, kafka.ticks_topic)
    by_key: dict[str, list[bytes]] = {}
    for key, value, ts_ms, _ in recs:
        ts_recv, market, msg = decode_tick(value)
        assert market == "spot" and ts_ms == ts_recv // 1_000_000
        by_key.setdefault(key.decode(), []).append(msg)
    for sym in ("BTCUSDT", "ETHUSDT"):
        got = [v for v in by_key[sym] if b'"stream"' in v]
        want = [p for p in ex.sent if p.startswith(b'{"stream":"%s@' % sym.lower().encode())]
        assert [v.split(b',"stream":', 1)[1] for v in got] == [w.split(b'"stream":', 1)[1] for w in want]
        snaps = [v for v in by_key[sym] if b'"lastUpdateId"' in v]
        assert len(snaps) == ex.snapshot_requests[sym]
    assert counts["snapshots"] == sum(ex.snapshot_requests.values())
    events = [json.loads(v) for _, v, _, _ in consume_all(kafka_bootstrap, collector.cfg.events_topic)]
    kinds = {"trade": 0, "quote": 0, "depth": 0}
    for e in events:
        kinds[e["type"]] += 1
    sent = {"trade": b"@trade", "quote": b"@bookTicker", "depth": b"@depth"}
    assert kinds == {k: sum(tag in p[:40] for p in ex.sent) for k, tag in sent.items()}
    last_trade = next(e for e in reversed(events) if e["type"] == "trade" and e["instrument"] == "BTCUSDT")
    d = json.loads(next(p for p in reversed(ex.sent) if p.startswith(b'{"stream":"btcusdt@trade"')))["data"]
    assert (last_trade["trade_id"], last_trade["price"], last_trade["qty"]) == (d["t"], float(d["p"]), float(d["q"]))


def test_trade_gaps_are_reported_with_their_ids(live, kafka_bootstrap):
    ex, collector, counts, _, _ = live
    book = [json.loads(v) for _, v, _, _ in consume_all(kafka_bootstrap, collector.cfg.book_topic)]
    reported = {(g["instrument"], g["expected"], g["got"]) for g in book if g["type"] == "sequence_gap"}
    want = set()
    for sym in ("btcusdt", "ethusdt"):
        missing = _ids(ex.dropped + ex.lost, f"{sym}@trade", "t")
        want |= {(sym.upper(), a, b) for a, b in _runs(missing, _ids(ex.sent, f"{sym}@trade", "t"))}
    assert want and want <= reported
    assert counts["gaps_trade"] == len(want)
    for sym in ("BTCUSDT", "ETHUSDT"):  # book quotes with depth features, the last one the final book
        quotes = [g for g in book if g["type"] == "book_quote" and g["instrument"] == sym]
        assert len(quotes) > 1000
        q = quotes[-1]
        bid, ask, last = ex.book_top(sym)
        assert (q["bid"], q["ask"], q["update_id"]) == (bid, ask, last)
        assert -1.0 <= q["imbalance"] <= 1.0 and bid <= q["microprice"] <= ask and q["spread"] == ask - bid
    gaps = [g["kind"] for g in book if g["type"] == "book_gap"]
    assert gaps.count("depth") == counts["depth_gaps"]
    assert gaps.count("snapshot") == counts.get("stale_snapshots", 0)  # a snapshot older than the diffs at hand


def test_books_resync_after_gaps_and_match_the_exchange(live):
    ex, collector, counts, _, _ = live
    depth_missing = {s: _ids(ex.dropped + ex.lost, f"{s}@depth@100ms", "U") for s in ("btcusdt", "ethusdt")}
    assert depth_missing["btcusdt"], "the test must drop depth diffs"
    assert counts["depth_gaps"] >= 2 and counts["book_resyncs"] == counts["depth_gaps"]
    assert counts.get("crossed_books", 0) == 0
    assert counts["reconnects"] >= 1 and counts["disconnects"] >= 1
    for sym in ("BTCUSDT", "ETHUSDT"):
        st = collector.books[sym]
        assert st.status == "synced"
        bid, ask, last = ex.book_top(sym)
        assert (st.best_bid, st.best_ask, st.last_id) == (bid, ask, last)
        bids, asks, _ = ex._book[sym]
        top_b, top_a = st.top(20)
        assert [(lv.price, lv.qty) for lv in top_b] == sorted(((float(p), q) for p, q in bids.items()),
                                                              reverse=True)[:20]
        assert [(lv.price, lv.qty) for lv in top_a] == sorted((float(p), q) for p, q in asks.items())[:20]
    assert sum(ex.snapshot_requests.values()) >= 2 + counts["book_resyncs"]


def test_capture_replays_to_the_same_forecasts_as_the_live_run(live, kafka_bootstrap, tmp_path):
    ex, _, counts, cap, kafka = live
    names = [f.relative_to(cap).as_posix() for f in sorted(cap.rglob("*.gz"))]
    assert names and all(re.fullmatch(r"spot/(btc|eth)usdt_\d{8}(-\d+)?\.gz", n) for n in names), names
    env_common = {"TICKLET_BARS__INTERVAL_MS": "20"}
    live_out, cap_out = tmp_path / "live", tmp_path / "capture"
    run_flow(flow_env(kafka_bootstrap, kafka.ticks_topic, live_out, **env_common))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env.update({**env_common, "TICKLET_INPUT__PATHS": json.dumps([str(cap)]), "TICKLET_OUTPUT__DIR": str(cap_out)})
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.forecast"], cwd=SCRATCH, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("forecasts.csv", "metrics.csv"):  # the same rows; symbols interleave differently
        a = (live_out / name).read_text().splitlines()
        b = (cap_out / name).read_text().splitlines()
        assert a[0] == b[0] and len(a) > 1000
        assert sorted(a[1:]) == sorted(b[1:]), name
    live_c, cap_c = (json.loads((o / "counters.json").read_text()) for o in (live_out, cap_out))
    # the capture's files report the bytes they read (for the progress bar), Kafka does not
    assert cap_c.pop("input_bytes") == sum(p.stat().st_size for p in cap.rglob("*.gz"))
    assert live_c == cap_c
    assert live_c["ticks"] > 0.9 * counts["messages"]


def test_cli_collects_usdm_over_split_connections_with_backoff_and_pings(kafka_bootstrap, ws_dir, tmp_path):
    """``ticklet collect`` on a USD-M recording paced 25x: three connections
    of two streams each, the first two handshakes refused (backoff), server
    pings answered, and a dropped diff caught by ``pu``; the book ends in sync."""
    files = [ws_dir / "usdm" / "btcusdt_20230404.dat.gz"]
    ex = ReplayExchange(files, drop={("btcusdt@depth@0ms", 1000)}, reject_handshakes=2, ping_interval=0.2,
                        speed=25).start()
    ticks = topic_name("usdm")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env.update({
        "TICKLET_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "TICKLET_KAFKA__TICKS_TOPIC": ticks,
        "TICKLET_COLLECT__WS_URL": ex.url, "TICKLET_COLLECT__DEPTH_URL": ex.depth_url("usdm"),
        "TICKLET_COLLECT__STREAMS": json.dumps(["trade", "bookTicker", "depth@0ms", "markPrice@1s",
                                                "aggTrade", "kline_1m"]),
        "TICKLET_COLLECT__MAX_STREAMS_PER_CONNECTION": "2", "TICKLET_COLLECT__BACKOFF_INITIAL_S": "0.05",
        "TICKLET_COLLECT__BOOK_TOPIC": ticks + ".book",
    })
    try:
        proc = subprocess.run([sys.executable, "-m", "ticklet.cli", "collect", "--symbols", "BTCUSDT",
                               "--market", "usdm", "--capture", str(tmp_path / "cap"), "--exit-when-idle", "2"],
                              cwd=SCRATCH, env=env, capture_output=True, text=True, timeout=300)
    finally:
        ex.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout)
    assert len(set(ex.connections)) == 3 and ex.handshakes_rejected == 2
    assert counts["connect_failures"] == 2
    assert counts["messages"] == len(ex.sent) == len(ex.messages) - 1
    assert counts["depth_gaps"] == 1 and counts["book_resyncs"] == 1
    assert counts.get("crossed_books", 0) == 0 and counts["snapshots"] >= 2
    assert counts.get("disconnects", 0) == 0, "server pings every 0.2 s must be answered"
    assert len(consume_all(kafka_bootstrap, ticks)) == counts["messages"] + counts["snapshots"]
    assert (tmp_path / "cap" / "usdm").is_dir()


def test_scheduled_reconnects_hand_over_without_loss(kafka_bootstrap, ws_dir):
    """``reconnect_after_s`` (23.5 h by default, against Binance's 24 h)
    replaces each connection on time, make-before-break: against an exchange
    that publishes one timeline to every subscriber, each message reaches
    Kafka exactly once and in order, and no gap is reported."""
    ex = ReplayExchange([ws_dir / "spot" / "ethusdt_20240808.gz"], speed=60, broadcast=True).start()
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cfg = CollectConfig(symbols=["ETHUSDT"], streams=STREAMS, ws_url=ex.url, depth_url=ex.depth_url("spot"),
                            capture_dir=None, reconnect_after_s=1.0, handover_timeout_s=2.0,
                            book_topic=topic_name("book"), events_topic=None, metrics_port=port)
        kafka = KafkaConfig(bootstrap_servers=kafka_bootstrap, ticks_topic=topic_name("sched"))
        collector = Collector(cfg, kafka)
        counts = asyncio.run(collector.run(idle_exit_s=2.5))
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        ex.stop()
    (timeline,) = ex.published.values()
    assert counts["reconnects_scheduled"] >= 3 and len(ex.connections) >= 4
    assert counts.get("disconnects", 0) == 0 and counts.get("handovers_unmatched", 0) == 0
    assert counts.get("gaps_trade", 0) == 0 and counts.get("depth_gaps", 0) == 0
    assert counts["messages"] == len(timeline)
    got = [decode_tick(v)[2] for _, v, _, _ in consume_all(kafka_bootstrap, kafka.ticks_topic)]
    got = [g.split(b',"stream":', 1)[1] for g in got if b'"stream"' in g]
    assert got == [p.split(b'"stream":', 1)[1] for p in timeline]
    assert collector.books["ETHUSDT"].status == "synced"
    served = {ln.split('"')[1]: float(ln.split()[-1]) for ln in metrics.splitlines()
              if ln.startswith("ticklet_collector_events_total{")}
    assert served["reconnects_scheduled"] >= counts["reconnects_scheduled"]  # the process-wide totals


def test_capture_survives_a_crash_and_a_restart(ws_dir, tmp_path):
    """Real recorded lines through the capture writer: a copy taken before
    close (what a killed collector leaves) reads back to its last flushed
    line; a restart the same day writes a new file, never appends."""
    from sinks.capture import CaptureWriter
    from sources.files import _ws_blocks, group_streams, read_stream

    lines = []
    with gzip.open(ws_dir / "spot" / "ethusdt_20240808.gz", "rb") as f:
        for ln in f:
            ts, _, payload = ln.rstrip(b"\n").partition(b" ")
            if payload.startswith(b'{"stream"'):
                lines.append((int(ts), payload))
    w = CaptureWriter(tmp_path / "cap", "spot", flush_every=1000)
    for ts, p in lines[:5500]:
        w.write("ETHUSDT", ts, p)
    path = w.files()[0]
    crashed = tmp_path / "crashed" / "spot" / path.name
    crashed.parent.mkdir(parents=True)
    crashed.write_bytes(path.read_bytes())  # 5,000 lines flushed, 500 in the compressor
    got = [ln for block in _ws_blocks(str(crashed)) for ln in block]
    assert got == [b"%d %s" % x for x in lines[:5000]]
    w.close()
    w2 = CaptureWriter(tmp_path / "cap", "spot")
    for ts, p in lines[5500:6000]:
        w2.write("ETHUSDT", ts, p)
    w2.close()
    names = {p.name for p in (tmp_path / "cap" / "spot").iterdir()}
    assert names == {path.name, path.name.replace(".gz", "-1.gz")}
    (spec,) = group_streams([tmp_path / "cap"])
    merged = [ln for block in read_stream(spec) for ln in block]
    assert merged == [b"%d %s" % x for x in lines[:6000]]


def test_sigterm_stops_cleanly_with_everything_flushed(kafka_bootstrap, ws_dir, tmp_path):
    """``docker stop`` sends SIGTERM: the collector flushes Kafka, closes its
    capture (a complete gzip file) and prints its counters."""
    import signal
    import time

    ex = ReplayExchange([ws_dir / "spot" / "ethusdt_20240808.gz"], speed=20).start()
    ticks = topic_name("term")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env.update({"TICKLET_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "TICKLET_KAFKA__TICKS_TOPIC": ticks,
                "TICKLET_COLLECT__WS_URL": ex.url, "TICKLET_COLLECT__DEPTH_URL": ex.depth_url("spot"),
                "TICKLET_COLLECT__STREAMS": json.dumps(list(STREAMS)),
                "TICKLET_COLLECT__BOOK_TOPIC": ticks + ".book", "TICKLET_COLLECT__EVENTS_TOPIC": ticks + ".events"})
    try:
        proc = subprocess.Popen([sys.executable, "-m", "ticklet.cli", "collect", "--symbols", "ETHUSDT",
                                 "--capture", str(tmp_path / "cap")], cwd=SCRATCH, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(ex.sent) < 2000 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        ex.stop()
    assert proc.returncode == 0, err[-3000:]
    counts = json.loads(out)
    assert counts["messages"] >= 2000
    assert len(consume_all(kafka_bootstrap, ticks)) == counts["messages"] + counts["snapshots"]
    (cap,) = (tmp_path / "cap" / "spot").iterdir()
    with gzip.open(cap, "rb") as f:  # closed properly: reads to the end without a truncation error
        assert sum(1 for _ in f) == counts["messages"] + counts["snapshots"]


def test_metrics_listen_on_loopback_only(kafka_bootstrap, ws_dir):
    """TICKLET_COLLECT__METRICS_PORT: the collector serves its counters on
    127.0.0.1 only (TICKLET_COLLECT__METRICS_ADDRESS), not on every
    interface as prometheus_client's default would: the port listens there
    alone, /metrics answers there, and the machine's other address refuses
    it."""
    import urllib.request

    from netutil import free_port, listening, other_address, refused

    port, other = free_port(), other_address()
    ex = ReplayExchange([ws_dir / "spot" / "btcusdt_20240808.gz"], speed=20).start()
    cfg = CollectConfig(symbols=["BTCUSDT"], streams=("trade",), ws_url=ex.url, depth_url=ex.depth_url("spot"),
                        capture_dir=None, events_topic=None, book_topic=topic_name("book"), metrics_port=port)
    collector = Collector(cfg, KafkaConfig(bootstrap_servers=kafka_bootstrap, ticks_topic=topic_name("metrics")))
    seen: dict[str, object] = {}

    async def probe() -> None:
        while not any(p == port for _, p in listening()):
            await asyncio.sleep(0.02)
        seen["listening"] = {(a, p) for a, p in listening() if p == port}
        seen["metrics"] = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        seen["other_refused"] = other is None or await asyncio.to_thread(refused, other, port)
        collector.stop()

    async def session() -> dict[str, int]:
        task = asyncio.create_task(asyncio.wait_for(probe(), 120))
        counts = await collector.run(duration_s=120)
        await task
        return counts

    try:
        asyncio.run(session())
    finally:
        ex.stop()
    assert seen["listening"] == {("127.0.0.1", port)}
    assert "ticklet_collector_events_total" in str(seen["metrics"])
    assert seen["other_refused"], f"{other}:{port} accepted a connection"


# --- a capture that cannot be written ------------------------------------------------------------------------

def _collect_env(kafka_bootstrap: str, ex: ReplayExchange, ticks: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env.update({"TICKLET_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "TICKLET_KAFKA__TICKS_TOPIC": ticks,
                "TICKLET_COLLECT__WS_URL": ex.url, "TICKLET_COLLECT__DEPTH_URL": ex.depth_url("spot"),
                "TICKLET_COLLECT__STREAMS": json.dumps(list(STREAMS)),
                "TICKLET_COLLECT__BOOK_TOPIC": ticks + ".book", "TICKLET_COLLECT__EVENTS_TOPIC": ticks + ".events"})
    return env


def _flushed_lines(path: Path) -> list[bytes]:
    """The complete lines of a capture file that was cut off mid-write: what
    its last sync flush made readable (the unfinished tail dropped)."""
    import zlib

    data = zlib.decompressobj(wbits=31).decompress(path.read_bytes())
    return data.split(b"\n")[:-1]


def _check_stopped_capture(proc: subprocess.CompletedProcess, cap: Path, kept: Path, errno_text: str,
                           ex: ReplayExchange, kafka_bootstrap: str, ticks: str, moved: bool = False) -> None:
    """One line naming the capture file and the OS error, status 74, no
    counters on stdout; Kafka holds every message the collector took, in the
    order the exchange sent them, and the capture's flushed lines are a
    strict prefix of them (the message whose capture failed is in Kafka);
    a file ``moved`` away holds them all (it was flushed, then found moved)."""
    from runutil import one_line

    from sources.wire import encode_tick

    assert proc.returncode == 74, proc.stderr[-3000:]
    assert proc.stdout == ""  # no counters claiming a finished session
    line = one_line(proc.stderr)
    (written,) = sorted(kept.rglob("*.gz"))
    name = cap / written.relative_to(kept)
    assert line.startswith(f"ticklet: cannot write {name}: {errno_text}. The collector stopped with status 74 "), line
    assert f"every one of them is in Kafka ({ticks})" in line, line
    got = [v for _, v, _, _ in consume_all(kafka_bootstrap, ticks)]
    from_ws = [v for v in got if b'"stream":' in v]  # REST snapshots left out
    assert 0 < len(from_ws) <= len(ex.sent)
    sent = ex.sent[:len(from_ws)]
    assert from_ws == [encode_tick(head[0], "spot", p) for v, p in zip(from_ws, sent, strict=True)
                       if (head := decode_tick(v)) is not None]  # a value without its head: one short
    lines = _flushed_lines(written)
    assert lines and (len(lines) == len(got) if moved else len(lines) < len(got))
    assert [encode_tick(int(ln.split(b" ", 1)[0]), "spot", ln.split(b" ", 1)[1]) for ln in lines] == got[:len(lines)]


def test_a_full_disk_stops_the_collector_after_kafka_has_everything(kafka_bootstrap, ws_dir, tmp_path):
    """``ticklet collect --capture`` on a 64 kB tmpfs (a mount namespace of
    its own) fills it up: one line naming the capture file and ENOSPC,
    status 74, Kafka flushed first. Before: a traceback (OSError out of
    asyncio.run) and status 1."""
    from runutil import ticklet

    mnt, kept = tmp_path / "mnt", tmp_path / "kept"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs '{mnt}'"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs in a mount namespace here (root and unshare -m needed): "
                    f"{probe.stderr.strip()}")
    script = ('mount -t tmpfs -o size=64k tmpfs "$1" || exit 99; shift; cap="$1"; shift; '
              '"$@" --capture "$cap"; rc=$?; cp -a "$cap" "$KEPT"; exit $rc')
    ex = ReplayExchange([ws_dir / "spot" / "ethusdt_20240808.gz"]).start()
    ticks = topic_name("full")
    try:
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(mnt), str(mnt / "cap"), *ticklet(),
                               "collect", "--symbols", "ETHUSDT", "--exit-when-idle", "5"], cwd=SCRATCH,
                              env={**_collect_env(kafka_bootstrap, ex, ticks), "KEPT": str(kept)},
                              capture_output=True, text=True, timeout=300)
    finally:
        ex.stop()
    _check_stopped_capture(proc, mnt / "cap", kept, "[Errno 28] No space left on device", ex, kafka_bootstrap,
                           ticks)


def test_a_capture_file_too_large_stops_the_collector(kafka_bootstrap, ws_dir, tmp_path):
    """The same with a file size limit of 100 kB (RLIMIT_FSIZE: EFBIG)."""
    import resource

    from runutil import ticklet

    cap = tmp_path / "cap"
    ex = ReplayExchange([ws_dir / "spot" / "ethusdt_20240808.gz"]).start()
    ticks = topic_name("efbig")
    try:
        proc = subprocess.run([*ticklet(), "collect", "--symbols", "ETHUSDT", "--capture", str(cap),
                               "--exit-when-idle", "5"], cwd=SCRATCH, env=_collect_env(kafka_bootstrap, ex, ticks),
                              capture_output=True, text=True, timeout=300,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)))
    finally:
        ex.stop()
    _check_stopped_capture(proc, cap, cap, "[Errno 27] File too large", ex, kafka_bootstrap, ticks)


def test_a_capture_directory_moved_away_stops_the_collector(kafka_bootstrap, ws_dir, tmp_path):
    """The capture directory is renamed while the collector writes into it
    (what it writes since goes to a file no longer at its path): the next
    flush notices, here the one every second (trades alone, paced 5x: some
    70 a second, fewer than the 256 lines that make one), and the collector stops with one line
    and status 74. Before: it went on writing into the moved file to the end
    (exit 0), and a failed timed flush was lost silently (its task died)."""
    import time

    from runutil import ticklet

    cap, moved = tmp_path / "cap", tmp_path / "moved"
    ex = ReplayExchange([ws_dir / "spot" / "ethusdt_20240808.gz"], speed=5).start()
    ticks = topic_name("moved")
    env = {**_collect_env(kafka_bootstrap, ex, ticks), "TICKLET_COLLECT__STREAMS": '["trade"]'}
    try:
        p = subprocess.Popen([*ticklet(), "collect", "--symbols", "ETHUSDT", "--capture", str(cap),
                              "--exit-when-idle", "5"], cwd=SCRATCH, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not list(cap.rglob("*.gz")):
                assert p.poll() is None, f"the collector ended before its first line: {p.stderr.read()[-3000:]}"
                assert time.monotonic() < deadline
                time.sleep(0.005)
            cap.rename(moved)
            out, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    finally:
        ex.stop()
    proc = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    _check_stopped_capture(proc, cap, moved, "it was moved, removed or replaced while the collector wrote to it "
                           "([Errno 2] No such file or directory): the lines written since are not at this path", ex,
                           kafka_bootstrap, ticks, moved=True)
    assert len(_flushed_lines(next(moved.rglob("*.gz")))) < 256  # found by the flush every second

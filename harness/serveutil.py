"""Helpers for the tests of ``ticklet serve``: the server in a process of
its own, a stream client that follows it (and resumes when dropped), and
clients that send their request heads a byte at a time."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import httpx
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from harness.realdata import SCRATCH


def exe() -> list[str]:
    local = Path(sys.executable).parent / "ticklet"
    return [str(local)] if local.exists() else [sys.executable, "-m", "ticklet.cli"]


class Server:
    """``ticklet serve`` in a process of its own, on a free port; with
    ``files``, started under that (soft, hard) open-file limit."""

    def __init__(self, bootstrap: str, topic: str, log_path: Path, files: Optional[tuple[int, int]] = None,
                 **settings: str):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
        env.update({"TICKLET_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "TICKLET_KAFKA__OUTPUT_TOPIC": topic,
                    "TICKLET_SERVE__PORT": "0", **settings})
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (open for the process's life)
        limit = None if files is None else lambda: resource.setrlimit(resource.RLIMIT_NOFILE, files)
        self.proc = subprocess.Popen([*exe(), "serve", "-v"], cwd=SCRATCH, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, preexec_fn=limit)
        deadline = time.monotonic() + 90
        while True:
            m = re.search(r"serving (http://127\.0\.0\.1:\d+)", self.log)
            if m:
                self.url = m.group(1)
                break
            assert self.proc.poll() is None, f"ticklet serve exited: {self.log[-3000:]}"
            assert time.monotonic() < deadline, f"ticklet serve did not start: {self.log[-3000:]}"
            time.sleep(0.1)
        self.ws_url = self.url.replace("http://", "ws://")
        self.http = httpx.Client(base_url=self.url, timeout=30)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        """Fail at once, with the server's log, when it or its Kafka consumer has stopped."""
        assert self.proc.poll() is None, f"ticklet serve exited: {self.log[-3000:]}"
        r = self.http.get("/healthz")
        assert r.status_code == 200, f"ticklet serve is {r.text}: {self.log[-3000:]}"

    def wait_ready(self, timeout_s: float = 120) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            r = self.http.get("/readyz")
            if r.status_code == 200:
                return r.json()
            assert time.monotonic() < deadline, f"not ready: {r.text}"
            time.sleep(0.2)

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


class StreamClient:
    """A ``websockets`` client following ``/v1/stream`` in a thread: every
    envelope received, in order. Dropped for reading too slowly (close code
    4008: the test process shares two loaded cores with the server), it
    resumes as the API says, with ``after=`` the last offset it saw in each
    of the topic's ``partitions`` (-1 where it saw none: it follows from
    before the first record); ``resumes`` counts that."""

    def __init__(self, url: str, partitions: int = 4):
        self.url = url
        self.partitions = partitions
        self.envelopes: list[dict] = []
        self.resumes = 0
        self.error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._open.wait(60) and self.error is None, self.error

    def _resume_url(self) -> str:
        seen = {p: -1 for p in range(self.partitions)}
        for e in self.envelopes:
            seen[e["partition"]] = e["offset"]
        after = ",".join(f"{p}:{o}" for p, o in sorted(seen.items()))
        return f"{self.url}{'&' if '?' in self.url else '?'}after={after}"

    def _run(self) -> None:
        url = self.url
        try:
            while not self._stop.is_set():
                try:
                    with connect(url, max_size=None, open_timeout=30) as ws:
                        self._open.set()
                        while not self._stop.is_set():
                            try:
                                msg = ws.recv(timeout=0.5)
                            except TimeoutError:
                                continue
                            self.envelopes.extend(json.loads(msg))
                except ConnectionClosedError as ex:
                    if ex.rcvd is None or ex.rcvd.code != 4008:
                        raise
                    self.resumes += 1
                    url = self._resume_url()
        except Exception as ex:  # a failure the test reports
            if not self._stop.is_set():
                self.error = ex
        finally:
            self._open.set()

    def wait_for(self, n: int, timeout_s: float = 120, server: Optional[Server] = None) -> list[dict]:
        """The envelopes, once ``n`` have arrived (or after ``timeout_s``);
        checks every 2 s that ``server`` still runs."""
        deadline = time.monotonic() + timeout_s
        check = time.monotonic() + 2.0
        while len(self.envelopes) < n and time.monotonic() < deadline and self.error is None:
            time.sleep(0.1)
            if server is not None and time.monotonic() > check:
                server.check_alive()
                check = time.monotonic() + 2.0
        assert self.error is None, self.error
        return self.envelopes

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def proc_status(pid: int) -> tuple[float, int]:
    """(resident memory in MiB, threads) of process ``pid`` now."""
    text = Path(f"/proc/{pid}/status").read_text()
    rss = re.search(r"^VmRSS:\s+(\d+)", text, re.M)
    threads = re.search(r"^Threads:\s+(\d+)", text, re.M)
    assert rss and threads, f"no VmRSS or Threads for process {pid}"
    return int(rss.group(1)) / 1024, int(threads.group(1))


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` now, in MiB."""
    return proc_status(pid)[0]


def metric(text: str, name: str) -> float:
    """The value of the sample ``name`` (with its labels, as written) in a Prometheus text answer (0 if absent)."""
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def open_files(pid: int) -> int:
    """The files (sockets included) process ``pid`` has open now."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class SlowClients:
    """Connections to the server at ``url`` that each send their ``heads``
    (one a connection) a byte every ``every_s`` seconds, and read what comes
    back, in a thread (slowloris; an empty head sends nothing). ``ended``
    holds, for each connection the server closed, (seconds it was open,
    what it got). With ``again``, each connection closed is opened anew
    until :meth:`close`."""

    def __init__(self, url: str, heads: list[bytes], every_s: float = 0.2, again: bool = False):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.addr = (host, int(port))
        self.heads, self.every_s, self.again = heads, every_s, again
        self.ended: list[tuple[float, bytes]] = []
        self._sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        for i in range(len(heads)):
            self._open(i)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._sel.get_map() or {})

    def _open(self, i: int) -> None:
        t = time.monotonic()  # before the server accepts it
        sock = socket.create_connection(self.addr, timeout=30)
        sock.setblocking(False)
        self._sel.register(sock, selectors.EVENT_READ, [i, t, 0, b""])  # head, opened, sent, got

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set() and self._sel.get_map():
            for key, _ in self._sel.select(timeout=max(0.0, due - time.monotonic())):
                sock, state = key.fileobj, key.data
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError:  # reset
                    data = b""
                if data:
                    state[3] += data
                    continue
                self._sel.unregister(sock)
                sock.close()
                self.ended.append((time.monotonic() - state[1], state[3]))
                if self.again and not self._stop.is_set():
                    self._open(state[0])
            if time.monotonic() >= due:
                due += self.every_s
                for key in list(self._sel.get_map().values()):
                    state = key.data
                    head = self.heads[state[0]]
                    if state[2] < len(head):
                        with contextlib.suppress(OSError):
                            state[2] += key.fileobj.send(head[state[2]:state[2] + 1])  # type: ignore[union-attr]

    def wait(self, timeout_s: float = 60.0) -> list[tuple[float, bytes]]:
        """``ended``, once the server has closed every connection (or after ``timeout_s``)."""
        self._thread.join(timeout_s)
        return self.ended

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for key in list((self._sel.get_map() or {}).values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._sel.close()

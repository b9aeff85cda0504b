"""A small Chrome DevTools Protocol client, enough to test an HTML page in a
real headless Chromium: console errors, JavaScript evaluation, network
requests and screenshots. No browser-automation package: Chromium's remote
debugging protocol over a websocket (``websockets``, a ticklet dependency).
Used by the tests (``tests/ticklet/test_report.py``, ``tests/ticklet/test_serve.py``) like
this::

    with Browser(chromium_path) as b:
        page = b.open("file:///tmp/report.html")
        page.evaluate("document.title"), page.errors
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any, Optional

from websockets.sync.client import connect

__all__ = ["Browser", "CdpError", "Page", "chromium_exe", "png_size"]


class CdpError(RuntimeError):
    """The browser did not start, or a command failed or timed out."""


class Browser:
    """Headless Chromium with remote debugging on a free port, in a throwaway
    profile; a context manager (the process and profile go on exit)."""

    def __init__(self, exe: str, width: int = 1400, height: int = 1000, timeout: float = 60.0):
        self.exe, self.width, self.height, self.timeout = exe, width, height, timeout
        self._proc: Optional[subprocess.Popen] = None
        self._profile: Optional[str] = None
        self._ws: Any = None
        self._stack = ExitStack()
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []
        self._replies: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._reader: Optional[threading.Thread] = None
        self.stderr_tail: list[str] = []

    def __enter__(self) -> Browser:
        self._profile = tempfile.mkdtemp(prefix="ticklet-chromium-")
        args = [self.exe, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={self._profile}",
                "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio", "--hide-scrollbars",
                f"--window-size={self.width},{self.height}", "about:blank"]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            url = self._devtools_url()
            self._ws = self._stack.enter_context(connect(url, max_size=None, open_timeout=self.timeout))
        except BaseException:
            self.__exit__()
            raise
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._ws is not None:
                with suppress(CdpError):
                    self.send("Browser.close", timeout=5)
                self._stack.close()
        finally:
            if self._proc is not None:
                if self._ws is None:  # it never got a connection to close it by
                    self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(10)
            if self._profile:
                shutil.rmtree(self._profile, ignore_errors=True)

    def _devtools_url(self) -> str:
        """The browser's websocket URL, from the line Chromium writes on stderr."""
        assert self._proc is not None and self._proc.stderr is not None
        deadline = time.monotonic() + self.timeout
        found: list[str] = []

        def scan() -> None:
            assert self._proc is not None and self._proc.stderr is not None
            for line in self._proc.stderr:
                self.stderr_tail = [*self.stderr_tail[-30:], line.rstrip()]
                m = re.search(r"DevTools listening on (ws://\S+)", line)
                if m and not found:
                    found.append(m.group(1))
            # stderr closed: the browser has exited

        t = threading.Thread(target=scan, daemon=True)  # keeps draining stderr afterwards
        t.start()
        while not found and time.monotonic() < deadline:
            if self._proc.poll() is not None and not found:
                t.join(2)
                raise CdpError(f"chromium exited with status {self._proc.returncode}: "
                               + " | ".join(self.stderr_tail[-5:]))
            time.sleep(0.02)
        if not found:
            raise CdpError("chromium did not report its DevTools URL in time: " + " | ".join(self.stderr_tail[-5:]))
        return found[0]

    def _read(self) -> None:
        try:
            for raw in self._ws:
                msg = json.loads(raw)
                with self._cond:
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self._events.append(msg)
                    self._cond.notify_all()
        except Exception:  # the connection closed
            with self._cond:
                self._cond.notify_all()

    def send(self, method: str, params: Optional[dict[str, Any]] = None, session: Optional[str] = None,
             timeout: Optional[float] = None) -> dict[str, Any]:
        """Send one command and wait for its result."""
        i = next(self._ids)
        msg: dict[str, Any] = {"id": i, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while i not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CdpError(f"{method}: no reply in {timeout or self.timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(i)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def events(self, session: Optional[str] = None) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self._events if session is None or e.get("sessionId") == session]

    def wait_event(self, method: str, session: str, timeout: Optional[float] = None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while True:
                for e in self._events:
                    if e.get("method") == method and e.get("sessionId") == session:
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CdpError(f"no {method} in {timeout or self.timeout} s")
                self._cond.wait(left)

    def open(self, url: str) -> Page:
        """A new tab showing ``url``, once its load event has fired."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.send(f"{domain}.enable")
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        page.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired", session)
        return page


class Page:
    """One tab, attached with its own session."""

    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def send(self, method: str, params: Optional[dict[str, Any]] = None, timeout: Optional[float] = None
             ) -> dict[str, Any]:
        return self.browser.send(method, params, self.session, timeout)

    def evaluate(self, expression: str, timeout: Optional[float] = None) -> Any:
        """The value of a JavaScript expression (a promise is awaited); a
        thrown exception raises :class:`CdpError`."""
        r = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                      timeout)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CdpError(f"JavaScript threw: {d.get('exception', {}).get('description') or d.get('text')}")
        return r["result"].get("value")

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries so far."""
        out = []
        for e in self.browser.events(self.session):
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} ({p['entry'].get('url', '')})")
        return out

    @property
    def requests(self) -> list[str]:
        """URLs the page requested (the page itself included)."""
        return [e["params"]["request"]["url"] for e in self.browser.events(self.session)
                if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path, full_page: bool = True) -> bytes:
        """A PNG of the page (the whole page, beyond the viewport), written to ``path``."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            m = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": m["width"], "height": m["height"], "scale": 1})
        png = base64.b64decode(self.send("Page.captureScreenshot", params, timeout=120)["data"])
        Path(path).write_bytes(png)
        return png


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def chromium_exe() -> Optional[str]:
    """Debian's ``chromium`` on PATH (``$CHROMIUM`` overrides)."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium")

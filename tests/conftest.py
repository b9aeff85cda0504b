"""Shared fixtures: the real data in ``tests/data`` and runs reused across tests.

Every test reads its real data from ``tests/data`` (see its NOTICE.md), in
the repository. Nothing outside the checkout is read: an audit hook fails any
test that opens a file under the shared data directory (``$TICKLET_DATA`` or
``../shared``), which only the benchmarks and the evaluation use.

Before the first test, :mod:`provision` installs the servers and tools that
the collected tests need (Kafka jars, victoria-metrics, docker-compose,
chromium).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kafka_broker import BrokerStartError, kafka_broker
from provision import provision
from realdata import REPO

DATA = REPO / "tests" / "data"
_SHARED = REPO.parent / "shared"
_OUTSIDE = tuple(str(p.resolve()) + os.sep for p in {_SHARED, Path(os.environ.get("TICKLET_DATA", _SHARED))})

# Settings() reads TICKLET_* variables; stray ones from the developer's shell
# would change what the runs below compute. Tests that need them set them
# with monkeypatch.
for _k in [k for k in os.environ if k.startswith("TICKLET_")]:
    del os.environ[_k]


def _no_outside_data(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith(_OUTSIDE):
            raise PermissionError(f"a test opened {path}: tests read only the data in tests/data")


sys.addaudithook(_no_outside_data)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Install what the collected tests need, with progress on the terminal;
    stop the run with one line when it cannot be done here."""
    tr = session.config.pluginmanager.get_plugin("terminalreporter")

    def say(msg: str) -> None:
        if tr is not None:
            tr.write_line(f"ticklet tests: {msg}")

    used = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    err = provision(used, say)
    if err:
        pytest.exit(f"ticklet tests: {err}", returncode=3)


_TREE = pytest.StashKey[dict]()
_NOT_TREE = {".git", ".venv", ".kafka", "__pycache__", ".mypy_cache", ".ruff_cache"}


def _tree() -> dict[str, int]:
    """Every file of the checkout (its own caches and virtualenv aside) with its mtime."""
    out = {}
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _NOT_TREE and not d.endswith(".egg-info")]
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, REPO)] = os.stat(p).st_mtime_ns
    return out


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_TREE] = _tree()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No test writes into the working tree: a run that created, changed or
    removed a file of the checkout fails, naming the files."""
    before, after = session.stash.get(_TREE, None), _tree()
    if before is None:
        return
    touched = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    if touched:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"ticklet tests: the run wrote into the working tree: {', '.join(touched[:10])}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data bundled for the tests."""
    return DATA


@pytest.fixture(scope="session")
def ws_dir(data_dir: Path) -> Path:
    return data_dir / "binance-ws"


@pytest.fixture(scope="session")
def klines_dir(data_dir: Path) -> Path:
    return data_dir / "klines"


@pytest.fixture(scope="session")
def full_run(ws_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The dataflow over every recording, once per session: (summary, out_dir)."""
    from ticklet.cli import run_backtest

    out = tmp_path_factory.mktemp("full_run")
    summary = run_backtest([str(ws_dir)], out)
    return summary, out


@pytest.fixture(scope="session")
def cli_run(ws_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``ticklet backtest <every recording> --json`` in a fresh process with
    another hash seed: (completed process, out_dir)."""
    local = Path(sys.executable).parent / "ticklet"
    exe = str(local) if local.exists() else shutil.which("ticklet")
    assert exe, "the ticklet console script is not installed (pip install -e '.[dev]')"
    out = tmp_path_factory.mktemp("cli_run")
    proc = subprocess.run([exe, "backtest", str(ws_dir), "--json", "--out", str(out)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": "987"})
    assert proc.returncode == 0, proc.stderr
    return proc, out


@pytest.fixture(scope="session")
def btc_spot_chain(ws_dir: Path):
    """Spot BTCUSDT 2024-08-08 -> 09 (one continuous window) through the pure
    operators with the default settings."""
    from realdata import run_chain

    return run_chain([ws_dir / "spot" / "btcusdt_20240808.gz", ws_dir / "spot" / "btcusdt_20240809.gz"])


@pytest.fixture(scope="session")
def perp_chain(ws_dir: Path):
    """USD-M BTCUSDT perpetual 2023-04-04 -> 05 through the pure operators."""
    from realdata import run_chain

    return run_chain([ws_dir / "usdm" / "btcusdt_20230404.dat.gz", ws_dir / "usdm" / "btcusdt_20230405.dat.gz"])


@pytest.fixture(scope="session", params=["spot", "perp"])
def chain(request: pytest.FixtureRequest):
    """Both real operator chains in turn."""
    return request.getfixturevalue("btc_spot_chain" if request.param == "spot" else "perp_chain")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory):
    """A real Apache Kafka broker: ``$KAFKA_BOOTSTRAP_SERVERS`` when set, else
    a single-node KRaft broker started with ``scripts/kafka.sh`` for this
    session (:func:`kafka_broker.kafka_broker`). A broker that cannot start
    fails the tests (never skips)."""
    try:
        with kafka_broker(tmp_path_factory.mktemp("kafka")) as bootstrap:
            yield bootstrap
    except BrokerStartError as ex:
        pytest.fail(str(ex))


class VictoriaMetrics:
    """A real VictoriaMetrics server (it accepts the InfluxDB v2 write API)
    on 127.0.0.1; stop() and start() keep its port and data."""

    def __init__(self, data_dir: Path):
        import socket

        exe = shutil.which("victoria-metrics")
        if exe is None:  # provision() installs it before the first test
            pytest.fail("victoria-metrics is not installed: apt-get install victoria-metrics")
        self.exe, self.data_dir = exe, data_dir
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import time
        import urllib.request

        self.proc = subprocess.Popen(
            [self.exe, f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={self.data_dir}",
             "-retentionPeriod=100y", "-dedup.minScrapeInterval=1ms", "-search.disableCache",
             "-search.latencyOffset=0s", "-loggerLevel=ERROR"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(200):
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    pytest.fail(f"victoria-metrics exited: {self.proc.stderr.read()[-2000:]!r}")
                time.sleep(0.05)
        pytest.fail("victoria-metrics did not become healthy")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None

    def export(self, match: str = '{__name__=~".+"}') -> dict[tuple, dict[int, float]]:
        """Every stored series as {(name, sorted labels): {timestamp_ms: value}},
        once two reads a quarter of a second apart agree (the server makes
        freshly ingested series searchable asynchronously; at most 20 s)."""
        import time

        prev: dict[tuple, dict[int, float]] | None = None
        deadline = time.monotonic() + 20
        while True:
            got = self._export_once(match)
            if (got and got == prev) or time.monotonic() > deadline:
                return got
            prev = got
            time.sleep(0.25)

    def _export_once(self, match: str) -> dict[tuple, dict[int, float]]:
        import json
        import time
        import urllib.parse
        import urllib.request

        urllib.request.urlopen(self.url + "/internal/force_flush", timeout=30).read()
        # all time, up to an hour ahead (health points are stamped with the wall clock)
        q = urllib.parse.urlencode({"match[]": match, "start": "0", "end": str(int(time.time()) + 3600)})
        body = urllib.request.urlopen(f"{self.url}/api/v1/export?{q}", timeout=60).read().decode()
        out: dict[tuple, dict[int, float]] = {}
        for line in body.splitlines():
            d = json.loads(line)
            m = d["metric"]
            key = (m.pop("__name__"), tuple(sorted(m.items())))
            out.setdefault(key, {}).update(zip(d["timestamps"], d["values"], strict=True))
        return out


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless browser's executable: Debian's ``chromium`` (``$CHROMIUM``
    overrides), installed by :mod:`provision` before the first test. Missing,
    it fails the tests (never skips)."""
    exe = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: apt-get install chromium")
    return exe


@pytest.fixture
def victoria(tmp_path: Path):
    vm = VictoriaMetrics(tmp_path / "vm-data")
    vm.start()
    yield vm
    vm.stop()

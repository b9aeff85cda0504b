"""Shared fixtures: the real data in ``tests/data`` and runs reused across tests.

Every test reads its real data from ``tests/data`` (see its NOTICE.md), in
the repository. Nothing outside the checkout is read: an audit hook fails any
test that opens a file under the shared data directory (``$TICKLET_DATA`` or
``../shared``), which only the benchmarks and the evaluation use.

Before the first test, :mod:`provision` installs the servers and tools that
the collected tests need (Kafka jars, InfluxDB 2 built from source,
docker-compose, chromium): only integration tests need them, so the unit run,
``python -m pytest -m "not integration"``, installs nothing. The
``integration`` mark is kept true by :mod:`integration_mark`, a plugin this
conftest registers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import integration_mark
import numpy as np
import pytest
from provision import provision

from harness.kafka_broker import BrokerStartError, kafka_broker
from harness.realdata import REPO

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


def pytest_configure(config: pytest.Config) -> None:
    """The hooks that keep the integration mark true, for every test of the
    run (the doctests of the packages too, which are not under this folder)."""
    if not config.pluginmanager.is_registered(integration_mark):
        config.pluginmanager.register(integration_mark, "integration_mark")


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
_NOT_TREE = {".git", ".venv", ".kafka", ".influxdb", "__pycache__", ".mypy_cache", ".ruff_cache"}


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
    from ticklet.backtest import run_backtest

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
    from harness.realdata import run_chain

    return run_chain([ws_dir / "spot" / "btcusdt_20240808.gz", ws_dir / "spot" / "btcusdt_20240809.gz"])


@pytest.fixture(scope="session")
def perp_chain(ws_dir: Path):
    """USD-M BTCUSDT perpetual 2023-04-04 -> 05 through the pure operators."""
    from harness.realdata import run_chain

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


class InfluxStartError(Exception):
    """influxd did not start or its setup failed."""


class InfluxDB2:
    """A real InfluxDB 2 server (``influxd``, built by ``scripts/influxdb.sh``)
    on 127.0.0.1 with its own data directory, set up with an org, a bucket and
    an all-access token that are not ticklet's defaults (so a sink that
    ignored its settings would fail). stop() and start() keep its port, data
    and token (``scripts/influxdb.sh`` restarts a server it set up)."""

    ORG, BUCKET = "ticklet-tests", "ticks"

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.url = self.org = self.bucket = self.token = ""

    def _script(self, command: str) -> subprocess.CompletedProcess:
        from provision import INFLUXDB_SH

        env = {**os.environ, "INFLUXDB_RUN_DIR": str(self.run_dir), "INFLUXDB_ORG": self.ORG,
               "INFLUXDB_BUCKET": self.BUCKET}
        return subprocess.run(["bash", str(INFLUXDB_SH), command], env=env, capture_output=True, text=True,
                              timeout=120)

    def start(self) -> None:
        proc = self._script("start")
        if proc.returncode != 0:
            raise InfluxStartError(f"scripts/influxdb.sh start failed: {proc.stderr.strip()[-2000:]}")
        env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        self.url, self.org, self.bucket, self.token = (env["INFLUX_URL"], env["INFLUX_ORG"], env["INFLUX_BUCKET"],
                                                       env["INFLUX_TOKEN"])

    def stop(self) -> None:
        self._script("stop")

    def config(self, **kw: Any):
        """The sink's settings for this server (``kw`` overrides)."""
        from sinks.influx_config import InfluxConfig

        return InfluxConfig(**{"url": self.url, "org": self.org, "bucket": self.bucket, "token": self.token, **kw})

    def env(self) -> dict[str, str]:
        """The settings as a user sets them: environment variables."""
        return {"TICKLET_OUTPUT__INFLUX": "true", "TICKLET_INFLUX__URL": self.url,
                "TICKLET_INFLUX__ORG": self.org, "TICKLET_INFLUX__BUCKET": self.bucket,
                "TICKLET_INFLUX__TOKEN": self.token}

    def query(self, flux: str) -> list:
        """Run a Flux query: its tables (influxdb-client's FluxTable)."""
        from influxdb_client import InfluxDBClient

        with InfluxDBClient(url=self.url, token=self.token, org=self.org, timeout=300_000) as client:
            return list(client.query_api().query(flux))

    def rows(self, flux: str) -> list[dict[str, Any]]:
        """Every record of a Flux query's tables, as dicts."""
        return [rec.values for table in self.query(flux) for rec in table.records]


@pytest.fixture(scope="session")
def influxd() -> str:
    """The ``influxd`` binary, built once per machine by :mod:`provision`
    before the first test. Where it cannot be built the InfluxDB tests fail
    with the reason (a missing real component is never a skip)."""
    import provision as prov

    exe = prov.influxd_path()
    if exe is None:
        reason = prov.influxdb_unavailable or "influxd is not built: run `scripts/influxdb.sh build`"
        pytest.fail(reason)
    return exe


@pytest.fixture(scope="session")
def hftbacktest_python() -> Path:
    """The interpreter of hftbacktest's own virtualenv, made once per machine by
    :mod:`provision` (a missing real component is never a skip)."""
    import provision as prov

    exe = prov.hftbacktest_python()
    if exe is None:
        pytest.fail(f"hftbacktest {prov.HFTBACKTEST} is not installed in {prov.HFTBACKTEST_VENV}")
    return exe


def start_influxdb(run_dir: Path) -> InfluxDB2:
    """A fresh server in ``run_dir``; one that cannot start fails the test."""
    server = InfluxDB2(run_dir)
    try:
        server.start()
    except (InfluxStartError, subprocess.TimeoutExpired) as ex:
        server.stop()
        pytest.fail(str(ex))
    return server


@pytest.fixture(scope="session")
def influx_replay(influxd: str, tmp_path_factory: pytest.TempPathFactory):
    """A server holding the dataflow's output over every recording, written
    with the server, org, bucket and token set as users set them
    (``TICKLET_INFLUX__*``), the maker books on (``TICKLET_MAKER__ENABLED``):
    (server, summary, out_dir, every measurement but health read back right
    after the run, see :func:`fluxcheck.read_back`)."""
    from fluxcheck import read_back

    from sinks.influx_points import MEASUREMENTS
    from ticklet.backtest import run_backtest

    server = start_influxdb(tmp_path_factory.mktemp("influx-replay"))
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in {**server.env(), "TICKLET_MAKER__ENABLED": "true"}.items():
                mp.setenv(k, v)
            out = tmp_path_factory.mktemp("influx-run")
            summary = run_backtest([str(DATA / "binance-ws")], out)
        points = {m: read_back(server, m) for m in MEASUREMENTS if m != "health"}
        yield server, summary, out, points
    finally:
        server.stop()


@pytest.fixture
def influxdb(influxd: str, tmp_path: Path):
    """A fresh InfluxDB 2 server for one test (started in about a second)."""
    server = start_influxdb(tmp_path / "influxdb")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless browser's executable: Debian's ``chromium`` (``$CHROMIUM``
    overrides), installed by :mod:`provision` before the first test. Missing,
    it fails the tests (never skips)."""
    exe = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: apt-get install chromium")
    return exe


# --- the window learners (tests/models): driven through the join, each example checked ---

def _join_checked(rows, name: str, learners: Any, h: int,
                  row_of: Callable[[dict], Optional[list[float]]]) -> tuple[Any, int, int]:
    """Drive ``rows`` through the time-travel join (:func:`operators.forecast.step`) with the learner
    ``name`` alone at horizon ``h``, and check that every example it learns is the window it forecast
    from (rebuilt here from the rows it saw, ``row_of(x)`` each, None for a row it does not read) with
    that forecast's realized return. (the model, examples checked, forecasts expired)."""
    from operators import forecast

    st = forecast.JoinState(forecast.ForecastConfig(horizons=(h,), models=(name,), learners=learners))
    m: Any = st.models[(name, h)]  # a window learner: its config, n_labelled and memory are read
    c = m.config
    history: list[list[float]] = []
    windows: dict[int, np.ndarray] = {}  # ts_forecast -> the window forecast from
    checked = expired = 0
    for r in rows:
        before = m.n_labelled
        st, res = forecast.step(st, r)
        out: list[Any] = list(res)
        expired += sum(o.n for o in out if type(o).__name__ == "Count" and o.name == "forecasts_expired")
        done = [o for o in out if type(o).__name__ == "ForecastRecord"]
        assert len(done) <= 1
        if m.n_labelled > before:
            win, y = m.memory[-1]
            assert np.array_equal(win, windows[done[0].ts_forecast]), done[0].ts_forecast
            assert y == done[0].realized_return
            checked += 1
        row = row_of(r.x) if r.ready else None
        if row is not None:
            history.append(row)
            if len(history) >= c.window:
                win = np.nan_to_num(np.array(history[-c.window:]), nan=0.0)
                windows[r.ts_end] = np.clip(win, -c.clip_x, c.clip_x).astype(np.float32)
    return m, checked, expired


@pytest.fixture
def join_checked() -> Callable[..., tuple[Any, int, int]]:
    """:func:`_join_checked`."""
    return _join_checked

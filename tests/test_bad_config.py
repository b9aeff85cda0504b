"""Every bad configuration or input, at both entry points
(``python -m bytewax.run dataflows.forecast`` and ``ticklet ...``), is one or
two plain lines on stderr naming the setting, option or file, and exit status
2: never a traceback, never a silent run.

Each case runs as a real subprocess; the cases run four at a time.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dataflows.settings import Settings
from harness.realdata import REPO

#: Integration tests (tests/integration_mark.py): every case runs the CLI or the dataflow in a subprocess.
pytestmark = pytest.mark.integration

WS = REPO / "tests" / "data" / "binance-ws"
CM = REPO / "tests" / "data" / "fixtures" / "hftbacktest" / "cm" / "btcusd_perp_20240808.gz"
REC = WS / "spot" / "btcusdt_20230405.dat.gz"
KLINES = REPO / "tests" / "data" / "klines" / "BTC_USDT-15m.feather"
FLOW = [sys.executable, "-m", "bytewax.run", "dataflows.forecast"]
CLI = [sys.executable, "-m", "ticklet.cli"]
#: Unreadable files need a user that permissions apply to: root reads a chmod 000 file.
AS_NOBODY = (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
             if os.geteuid() == 0 and shutil.which("setpriv") else [] if os.geteuid() != 0 else None)


@dataclass(frozen=True)
class Case:
    id: str
    entry: str  # "flow" or "cli"
    names: str  # what the first line must name (a setting, option or file), "{d}": the case directory
    env: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    unprivileged: bool = False  # run as an ordinary user (unreadable files)
    cwd: str = ""  # under the case directory (a .env there)


def _cases() -> list[Case]:
    flow, cli = "flow", "cli"
    rec = str(REC)
    return [
        # -- python -m bytewax.run dataflows.forecast: TICKLET_* values
        Case("interval-not-int", flow, "TICKLET_BARS__INTERVAL_MS", {"TICKLET_BARS__INTERVAL_MS": "abc"}),
        Case("interval-zero", flow, "TICKLET_BARS__INTERVAL_MS", {"TICKLET_BARS__INTERVAL_MS": "0"}),
        Case("price-unknown", flow, "TICKLET_BARS__PRICE", {"TICKLET_BARS__PRICE": "close"}),
        Case("horizons-not-json", flow, "TICKLET_FORECAST__HORIZONS", {"TICKLET_FORECAST__HORIZONS": "not json"}),
        Case("models-empty", flow, "TICKLET_FORECAST__MODELS", {"TICKLET_FORECAST__MODELS": "[]"}),
        Case("model-unknown", flow, "TICKLET_FORECAST__MODELS", {"TICKLET_FORECAST__MODELS": '["prophet"]'}),
        Case("lags-negative", flow, "TICKLET_FEATURES__RETURN_LAGS", {"TICKLET_FEATURES__RETURN_LAGS": "[-1]"}),
        Case("macd-inverted", flow, "TICKLET_FEATURES__MACD", {"TICKLET_FEATURES__MACD": "[26,12,9]"}),
        Case("swt-window", flow, "TICKLET_FEATURES__SWT", {"TICKLET_FEATURES__SWT__WINDOW": "60"}),
        Case("nested-key-unknown", flow, "TICKLET_BARS__NOPE", {"TICKLET_BARS__NOPE": "1"}),
        Case("nested-key-misspelt", flow, "TICKLET_FORECAST__HORIZON: did you mean TICKLET_FORECAST__HORIZONS?",
             {"TICKLET_FORECAST__HORIZON": "[1, 5]"}),
        Case("group-unknown", flow, "TICKLET_BAR__INTERVAL_MS", {"TICKLET_BAR__INTERVAL_MS": "500"}),
        Case("bool-bad", flow, "TICKLET_OUTPUT__SUMMARY", {"TICKLET_OUTPUT__SUMMARY": "maybe"}),
        Case("thresholds-crossed", flow, "TICKLET_SIGNALS", {"TICKLET_SIGNALS__P_LONG": "0.3"}),
        Case("signals-model-not-forecast", flow, "TICKLET_SIGNALS__MODELS", {"TICKLET_SIGNALS__MODELS": '["hat"]'}),
        Case("brokers-empty", flow, "TICKLET_KAFKA__BOOTSTRAP_SERVERS", {"TICKLET_KAFKA__BOOTSTRAP_SERVERS": " "}),
        Case("influx-url", flow, "TICKLET_INFLUX__URL", {"TICKLET_INFLUX__URL": "localhost:8086"}),
        Case("influx-connect-timeout", flow, "TICKLET_INFLUX__CONNECT_TIMEOUT_S",
             {"TICKLET_INFLUX__CONNECT_TIMEOUT_S": "0"}),
        Case("api-port", flow, "TICKLET_API__PORT", {"TICKLET_API__PORT": "0"}),
        Case("api-address", flow, "TICKLET_API__ADDRESS", {"TICKLET_API__ADDRESS": "everywhere"}),
        Case("bundle-key-short", flow, "TICKLET_BUNDLE__KEY", {"TICKLET_BUNDLE__KEY": "short"}),
        Case("dotenv-bad", flow, "TICKLET_BARS__INTERVAL_MS (in .env)", cwd="with-env"),
        # -- python -m bytewax.run dataflows.forecast: inputs, outputs, servers
        Case("paths-empty", flow, "TICKLET_INPUT__PATHS", {"TICKLET_INPUT__PATHS": "[]"}),
        Case("paths-not-json", flow, "TICKLET_INPUT__PATHS", {"TICKLET_INPUT__PATHS": "data/x.gz"}),
        Case("path-missing", flow, "{d}/missing.gz", {"TICKLET_INPUT__PATHS": '["{d}/missing.gz"]'}),
        Case("path-garbage", flow, "{d}/garbage.gz", {"TICKLET_INPUT__PATHS": '["{d}/garbage.gz"]'}),
        Case("path-gzip-corrupt", flow, "{d}/corrupt.gz", {"TICKLET_INPUT__PATHS": '["{d}/corrupt.gz"]'}),
        Case("path-dangling-link", flow, "{d}/dangling.gz", {"TICKLET_INPUT__PATHS": '["{d}/dangling.gz"]'}),
        Case("path-empty-dir", flow, "{d}/empty", {"TICKLET_INPUT__PATHS": '["{d}/empty"]'}),
        Case("path-unreadable", flow, "{d}/locked.gz", {"TICKLET_INPUT__PATHS": '["{d}/locked.gz"]'},
             unprivileged=True),
        Case("coinm-contract-unknown", flow, "{d}/solusd_perp.gz", {"TICKLET_INPUT__PATHS": '["{d}/solusd_perp.gz"]'}),
        Case("market-coinm-on-spot", flow, "TICKLET_INPUT__MARKET",
             {"TICKLET_INPUT__MARKET": "coinm", "TICKLET_INPUT__PATHS": f'["{rec}"]'}),
        Case("output-dir-under-file", flow, "TICKLET_OUTPUT__DIR", {"TICKLET_OUTPUT__DIR": "{d}/afile/out"}),
        Case("kafka-input-no-broker", flow, "TICKLET_KAFKA__BOOTSTRAP_SERVERS",
             {"TICKLET_INPUT__SOURCE": "kafka", "TICKLET_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:{dead}",
              "TICKLET_KAFKA__CONNECT_TIMEOUT_S": "1"}),
        Case("kafka-output-no-broker", flow, "TICKLET_KAFKA__BOOTSTRAP_SERVERS",
             {"TICKLET_OUTPUT__KAFKA": "true", "TICKLET_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:{dead}",
              "TICKLET_KAFKA__CONNECT_TIMEOUT_S": "1"}),
        Case("influx-no-server", flow, "TICKLET_INFLUX__URL",
             {"TICKLET_OUTPUT__INFLUX": "true", "TICKLET_INFLUX__URL": "http://127.0.0.1:{dead}",
              "TICKLET_INFLUX__CONNECT_TIMEOUT_S": "1"}),
        Case("api-port-taken", flow, "TICKLET_API__PORT",
             {"TICKLET_API__ENABLED": "true", "TICKLET_API__PORT": "{busy}"}),
        # -- ticklet backtest
        Case("backtest-missing", cli, "{d}/missing.gz", argv=("backtest", "{d}/missing.gz")),
        Case("backtest-text-file", cli, "{d}/notes.txt", argv=("backtest", "{d}/notes.txt")),
        Case("backtest-unreadable", cli, "{d}/locked.gz", argv=("backtest", "{d}/locked.gz"), unprivileged=True),
        Case("backtest-unreadable-dir", cli, "{d}/lockeddir", argv=("backtest", "{d}/lockeddir"), unprivileged=True),
        Case("backtest-workers-zero", cli, "--workers", argv=("backtest", rec, "--workers", "0")),
        Case("backtest-out-is-file", cli, "--out", argv=("backtest", rec, "--out", "{d}/afile")),
        Case("backtest-models-empty", cli, "TICKLET_FORECAST__MODELS", {"TICKLET_FORECAST__MODELS": "[]"},
             argv=("backtest", rec)),
        Case("backtest-influx-no-server", cli, "TICKLET_INFLUX__URL",
             {"TICKLET_OUTPUT__INFLUX": "true", "TICKLET_INFLUX__URL": "http://127.0.0.1:{dead}",
              "TICKLET_INFLUX__CONNECT_TIMEOUT_S": "1"}, ("backtest", rec)),
        # -- ticklet replay
        Case("replay-missing", cli, "{d}/missing.gz", argv=("replay", "{d}/missing.gz")),
        Case("replay-klines", cli, str(KLINES), argv=("replay", str(KLINES))),
        Case("replay-speed-text", cli, "--speed", argv=("replay", rec, "--speed", "fast")),
        Case("replay-brokers", cli, "--bootstrap-servers", argv=("replay", rec, "--bootstrap-servers", "nohost")),
        Case("replay-topic", cli, "--topic", argv=("replay", rec, "--topic", "no spaces")),
        # -- ticklet config
        Case("config-bad", cli, "TICKLET_FORECAST__HORIZONS", {"TICKLET_FORECAST__HORIZONS": "[1,"}, ("config",)),
        Case("config-unknown", cli, "TICKLET_FORECST__MODELS", {"TICKLET_FORECST__MODELS": '["naive"]'}, ("config",)),
        Case("config-dotenv-unreadable", cli, ".env", argv=("config",), unprivileged=True, cwd="locked-env"),
        # -- ticklet collect
        Case("collect-symbols-empty", cli, "TICKLET_COLLECT__SYMBOLS", {"TICKLET_COLLECT__SYMBOLS": "[]"},
             ("collect", "--duration", "1")),
        Case("collect-symbols-bad", cli, "--symbols", argv=("collect", "--symbols", "btc-usdt", "--duration", "1")),
        Case("collect-duration", cli, "--duration", argv=("collect", "--duration", "-1")),
        Case("collect-metrics-port", cli, "TICKLET_COLLECT__METRICS_PORT",
             {"TICKLET_COLLECT__METRICS_PORT": "99999"}, ("collect", "--duration", "1")),
        Case("collect-no-broker", cli, "TICKLET_KAFKA__BOOTSTRAP_SERVERS",
             {"TICKLET_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:{dead}", "TICKLET_KAFKA__CONNECT_TIMEOUT_S": "1"},
             ("collect", "--duration", "1", "--capture", "{d}/capture")),
        # -- ticklet download and report, and the command itself
        Case("download-date", cli, "2024-13-01", argv=("download", "--symbol", "BTCUSDT", "--kind", "trades",
                                                       "--start", "2024-13-01", "--end", "2024-12-02")),
        Case("download-retries", cli, "TICKLET_DOWNLOAD__RETRIES", {"TICKLET_DOWNLOAD__RETRIES": "-1"},
             ("download", "--symbol", "BTCUSDT", "--kind", "trades", "--start", "2024-01-01", "--end", "2024-01-01")),
        Case("report-missing", cli, "{d}/nothing", argv=("report", "{d}/nothing")),
        Case("report-corrupt", cli, "{d}/corrupt-run", argv=("report", "{d}/corrupt-run")),
        Case("no-command", cli, "command"),
        Case("unknown-command", cli, "forecast", argv=("forecast",)),
    ]


CASES = _cases()


@dataclass
class Result:
    returncode: int | str
    stderr: str
    wall_s: float


def _prepare(d: Path) -> None:
    """The bad inputs, in a directory an ordinary user can read."""
    d.chmod(0o755)
    (d / "garbage.gz").write_bytes(b"\x00\x01garbage" * 100)
    (d / "corrupt.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 200)  # a gzip header, then nothing that inflates
    (d / "notes.txt").write_text("hello\n")
    (d / "dangling.gz").symlink_to(d / "gone.gz")
    (d / "empty").mkdir()
    (d / "afile").write_text("x")
    (d / "locked.gz").write_bytes(gzip.compress(b"1 {}\n"))
    with gzip.open(CM) as f:  # real COIN-M lines of a contract whose size ticklet does not know
        head = f.read(1 << 16).rsplit(b"\n", 1)[0]
    (d / "solusd_perp.gz").write_bytes(gzip.compress(head.replace(b"btcusd_perp@", b"solusd_perp@")
                                                     .replace(b'"BTCUSD_PERP"', b'"SOLUSD_PERP"') + b"\n"))
    (d / "locked.gz").chmod(0)
    (d / "lockeddir" / "spot").mkdir(parents=True)
    shutil.copy(REC, d / "lockeddir" / "spot")
    (d / "lockeddir").chmod(0)
    (d / "with-env").mkdir()
    (d / "with-env" / ".env").write_text("# a typo\nTICKLET_BARS__INTERVAL_MS=1s\n")
    (d / "locked-env").mkdir()
    (d / "locked-env" / ".env").write_text("TICKLET_BARS__INTERVAL_MS=500\n")
    (d / "locked-env" / ".env").chmod(0)
    (d / "corrupt-run").mkdir()
    (d / "corrupt-run" / "forecasts.csv").write_text("instrument,model\nBTCUSDT\x00,naive,extra,cells\n")
    for sub in ("out", "cwd"):
        (d / sub).mkdir()
        (d / sub).chmod(0o777)


def _run(case: Case, d: Path, dead: int, busy: int) -> Result:
    def sub(s: str) -> str:
        return s.replace("{d}", str(d)).replace("{dead}", str(dead)).replace("{busy}", str(busy))

    if case.unprivileged and AS_NOBODY is None:
        return Result("skipped", "", 0.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKLET_", "BYTEWAX_"))}
    env.update({"TICKLET_OUTPUT__DIR": f"{d}/out/{case.id}", "TICKLET_OUTPUT__PROGRESS": "false",
                "PYTHONPATH": str(REPO)})
    env.update({k: sub(v) for k, v in case.env.items()})
    argv = [sub(a) for a in case.argv]
    pre = AS_NOBODY if case.unprivileged else []
    cwd = d / case.cwd if case.cwd else d / "cwd" / case.id  # ticklet backtest writes out/backtest there
    if not case.cwd:
        cwd.mkdir(parents=True)
        cwd.chmod(0o777)
    t0 = time.monotonic()
    try:
        proc = subprocess.run([*(pre or []), *(FLOW if case.entry == "flow" else CLI), *argv], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired as ex:
        return Result("timeout", str(ex.stderr), time.monotonic() - t0)
    return Result(proc.returncode, proc.stderr, time.monotonic() - t0)


@pytest.fixture(scope="module")
def results() -> Iterator[tuple[Path, dict[str, Result]]]:
    d = Path(tempfile.mkdtemp(prefix="ticklet-bad-config-"))
    _prepare(d)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    busy = socket.socket()  # a port that is taken
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        with ThreadPoolExecutor(4) as pool:
            out = dict(zip([c.id for c in CASES],
                           pool.map(lambda c: _run(c, d, dead, busy.getsockname()[1]), CASES), strict=True))
    finally:
        busy.close()
    yield d, out
    for p in (d / "locked.gz", d / "lockeddir", d / "locked-env" / ".env"):
        p.chmod(0o755)
    shutil.rmtree(d, ignore_errors=True)


def test_there_are_enough_cases():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert {c.entry for c in CASES} == {"flow", "cli"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_one_plain_line_and_status_2(results, case):
    d, out = results
    r = out[case.id]
    if r.returncode == "skipped":
        pytest.fail("unreadable files need setpriv (util-linux) to run as an ordinary user when the tests run as root")
    lines = r.stderr.splitlines()
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert 1 <= len(lines) <= 2, r.stderr[-3000:]
    assert lines[0].startswith("ticklet"), lines[0]
    assert case.names.replace("{d}", str(d)) in lines[0], lines[0]


BACKTESTS = [c for c in CASES if c.argv[:1] == ("backtest",)]


@pytest.mark.parametrize("case", BACKTESTS, ids=[c.id for c in BACKTESTS])
def test_a_refused_backtest_leaves_no_output_directory(results, case):
    """``ticklet backtest`` refused at start takes away the directory it made
    for its outputs (``out/backtest`` in the case's working directory)."""
    d, out = results
    assert out[case.id].returncode == 2
    assert not (d / "cwd" / case.id / "out").exists(), sorted((d / "cwd" / case.id).rglob("*"))


FLOWS = [c for c in CASES if c.entry == "flow"]


@pytest.mark.parametrize("case", FLOWS, ids=[c.id for c in FLOWS])
def test_a_refused_dataflow_leaves_no_output_directory(results, case):
    """``python -m bytewax.run dataflows.forecast`` refused at start takes away
    the directory it made for its outputs (``TICKLET_OUTPUT__DIR``)."""
    d, out = results
    assert out[case.id].returncode == 2
    assert not (d / "out" / case.id).exists(), sorted((d / "out" / case.id).rglob("*"))


def test_secrets_are_never_shown(tmp_path):
    """A bad secret is named, its value is not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env["TICKLET_KAFKA"] = json.dumps({"sasl_password": 73571133})  # a number, not a string
    proc = subprocess.run([*CLI, "config"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "TICKLET_KAFKA__SASL_PASSWORD" in proc.stderr, proc.stderr
    assert "73571133" not in proc.stderr + proc.stdout


def test_a_truncated_gzip_is_read_to_where_it_stops(tmp_path):
    """Not an error: a capture cut short by a crash is read up to the cut,
    with one warning naming the file, and the run goes on."""
    data = REC.read_bytes()
    cut = tmp_path / "spot" / "btcusdt_cut.gz"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 3])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env["TICKLET_OUTPUT__SUMMARY"] = "false"
    proc = subprocess.run([*CLI, "backtest", str(cut), "--out", str(tmp_path / "out")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and str(cut) in lines[0] and "truncated" in lines[0], proc.stderr
    assert json.loads((tmp_path / "out" / "counters.json").read_text())["ticks"] > 0


def test_defaults_are_valid():
    Settings()

"""``ticklet download`` against a local archive server on 127.0.0.1.

The served tree has Binance's public-data layout and is built from the real
data (once per session):

- daily **trades** archives for spot BTCUSDT 2024-08-08 and 2024-08-09, from
  the ``trade`` messages of the two spot websocket recordings, split by trade
  time (UTC day). Columns as Binance writes them: ``id, price, qty, quote_qty,
  time (ms), is_buyer_maker, is_best_match``; ``quote_qty`` is price x qty to
  8 decimals, ``is_best_match`` is the message's ``M``.
- **1m klines** for 2025-05-30 .. 2025-07-02 from ``BTC_USDT-1m.feather``:
  daily archives for May 30-31 and July 1-2, one monthly archive for June.
  Timestamps in microseconds, as Binance's spot archives are from 2025 on.
  The Feather file has only OHLCV, so ``quote_volume``, ``count``,
  ``taker_buy_volume`` and ``taker_buy_quote_volume`` are written as 0 (and
  ``ignore`` as 0, as Binance does): nothing here claims to know them.
- a daily COIN-M **trades** archive for BTCUSD_PERP 2024-08-08, from the
  ``trade`` messages of hftbacktest's COIN-M recording
  (``tests/data/fixtures/hftbacktest/cm``), in COIN-M's columns: ``id,
  price, qty, base_qty, time, is_buyer_maker``, ``qty`` in contracts of 100
  USD and ``base_qty`` their worth in BTC to 8 decimals (as in the sample row
  of Binance's public-data README).

The server (:class:`ArchiveHandler`) answers ``Range: bytes=N-`` with 206,
counts every request, and can inject faults per path (HTTP 503, a body cut
short, a corrupted body, a ``Range`` header ignored).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from collections import defaultdict
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from harness.realdata import REPO
from sources.binance import parse_csv_row
from sources.download import plan
from sources.download_io import ChecksumMismatch, DownloadError, MissingArchive, download, sha256_file
from sources.files import group_streams, read_stream
from ticklet.backtest import run_backtest
from ticklet.cli import main

#: Integration tests (tests/integration_mark.py): a local archive server (HTTP on a socket).
pytestmark = pytest.mark.integration

TRADES = dict(symbol="BTCUSDT", kind="trades", start="2024-08-08", end="2024-08-09")
KLINES = dict(symbol="BTCUSDT", kind="klines", start="2025-05-30", end="2025-07-02", interval="1m")
FAST = dict(retries=3, backoff_s=0.0, timeout_s=10.0)  # no waiting between retries in tests


# ---------------------------------------------------------------- the served tree

def _trades_by_day(ws_spot: Path) -> dict[str, list[dict]]:
    seen: dict[int, dict] = {}
    for name in ("btcusdt_20240808.gz", "btcusdt_20240809.gz"):
        with gzip.open(ws_spot / name, "rt") as f:
            for line in f:
                msg = json.loads(line.split(" ", 1)[1])
                if msg.get("stream", "").endswith("@trade"):
                    seen[msg["data"]["t"]] = msg["data"]
    days: dict[str, list[dict]] = defaultdict(list)
    for t in sorted(seen):
        d = seen[t]
        days[dt.datetime.fromtimestamp(d["T"] / 1000, dt.UTC).strftime("%Y-%m-%d")].append(d)
    return days


def _trade_csv(trades: list[dict]) -> str:
    rows = []
    for d in trades:
        quote = (Decimal(d["p"]) * Decimal(d["q"])).quantize(Decimal("0.00000001"))
        rows.append(f"{d['t']},{d['p']},{d['q']},{quote},{d['T']},{d['m']},{d.get('M', True)}")
    return "\n".join(rows) + "\n"


def _kline_csv(df: pd.DataFrame) -> str:
    rows = []
    for r in df.itertuples(index=False):
        open_us = r.date.value // 1000
        rows.append(f"{open_us},{r.open:.8f},{r.high:.8f},{r.low:.8f},{r.close:.8f},{r.volume:.8f},"
                    f"{open_us + 60_000_000 - 1},0,0,0,0,0")
    return "\n".join(rows) + "\n"


def _publish(root: Path, rel: str, csv_text: str) -> None:
    """Write ``data/<rel>`` (a zip holding one CSV, as Binance does) and its CHECKSUM."""
    path = root / "data" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    info = zipfile.ZipInfo(path.name[:-4] + ".csv", date_time=(2025, 1, 1, 0, 0, 0))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(info, csv_text)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (path.parent / (path.name + ".CHECKSUM")).write_text(f"{digest}  {path.name}\n")


@pytest.fixture(scope="session")
def trades_by_day(ws_dir: Path) -> dict[str, list[dict]]:
    return _trades_by_day(ws_dir / "spot")


@pytest.fixture(scope="session")
def klines_src(klines_dir: Path) -> pd.DataFrame:
    df = pd.read_feather(klines_dir / "BTC_USDT-1m.feather")
    lo, hi = pd.Timestamp("2025-05-30", tz="UTC"), pd.Timestamp("2025-07-03", tz="UTC")
    return df[(df.date >= lo) & (df.date < hi)].reset_index(drop=True)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, trades_by_day, klines_src) -> Path:
    """The archive tree (``<root>/data/spot/...``), built from the real data."""
    root = tmp_path_factory.mktemp("binance-vision")
    assert set(trades_by_day) == {"2024-08-08", "2024-08-09"}
    for day, trades in trades_by_day.items():
        _publish(root, f"spot/daily/trades/BTCUSDT/BTCUSDT-trades-{day}.zip", _trade_csv(trades))
    days = klines_src.date.dt.strftime("%Y-%m-%d")
    for day in ("2025-05-30", "2025-05-31", "2025-07-01", "2025-07-02"):
        _publish(root, f"spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-{day}.zip", _kline_csv(klines_src[days == day]))
    june = klines_src[days.str.startswith("2025-06")]
    assert len(june) == 30 * 1440  # the data README: no gaps
    _publish(root, "spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-06.zip", _kline_csv(june))
    _publish(root, "futures/cm/daily/trades/BTCUSD_PERP/BTCUSD_PERP-trades-2024-08-08.zip",
             _coinm_trade_csv(_coinm_trades()))
    return root


CM_REC = REPO / "tests" / "data" / "fixtures" / "hftbacktest" / "cm" / "btcusd_perp_20240808.gz"


def _coinm_trades() -> list[dict]:
    with gzip.open(CM_REC, "rt") as f:
        msgs = [json.loads(line.split(" ", 1)[1]) for line in f]
    return [m["data"] for m in msgs if m.get("stream", "").endswith("@trade")]


def _coinm_trade_csv(trades: list[dict]) -> str:
    rows = []
    for d in trades:
        base = (Decimal(d["q"]) * 100 / Decimal(d["p"])).quantize(Decimal("0.00000001"))
        rows.append(f"{d['t']},{d['p']},{d['q']},{base},{d['T']},{str(d['m']).lower()}")
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------- the server

class ArchiveHandler(BaseHTTPRequestHandler):
    """Static files with ``Range: bytes=N-`` support, a request log and faults."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        srv: ArchiveServer = self.server  # type: ignore[assignment]
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((self.path, rng))
            faults = srv.faults.get(self.path)
            fault = faults.pop(0) if faults else None
        path = (srv.root / self.path.lstrip("/")).resolve()
        if fault == "503":
            return self._send(503, b"busy")
        if not path.is_relative_to(srv.root) or not path.is_file():
            return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>")
        data = path.read_bytes()
        if fault == "corrupt":
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        start = 0
        if rng and fault != "ignore-range":
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start = int(m[1])
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
        body = data[start:]
        headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
        if fault == "cut":  # announce the whole body, send half, hang up
            self.close_connection = True
            return self._send(200 if not start else 206, body[: len(body) // 2], headers, length=len(body))
        self._send(206 if start else 200, body, headers)

    def _send(self, code: int, body: bytes, headers: dict | None = None, length: int | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if length is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


class ArchiveServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), ArchiveHandler)
        self.root = root.resolve()
        self.requests: list[tuple[str, str | None]] = []
        self.faults: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def archive_requests(self, name: str) -> list[str | None]:
        """The Range header of every request for the archive ``name`` (not its CHECKSUM)."""
        return [r for p, r in self.requests if p.endswith("/" + name)]


@pytest.fixture
def server(served: Path):
    srv = ArchiveServer(served)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(10)


def _get(server: ArchiveServer, out: Path, spec: dict, **kw):
    return download(plan(**spec), out, server.url, **{**FAST, **kw})


def _trade_rows(paths) -> list:
    (spec,) = group_streams([str(p) for p in paths])
    assert (spec.fmt, spec.market, spec.symbol) == ("trades", "spot", "BTCUSDT")
    return [parse_csv_row(r, "trades", spec.symbol, spec.market) for block in read_stream(spec) for r in block]


# ---------------------------------------------------------------- tests

def test_trades_download_verifies_and_backtests(server, served, tmp_path, trades_by_day):
    out = tmp_path / "dl"
    report = _get(server, out, TRADES)
    names = ["BTCUSDT-trades-2024-08-08.zip", "BTCUSDT-trades-2024-08-09.zip"]
    assert [p.name for p in report.files] == names and not report.present and not report.missing
    for p in report.files:
        rel = p.relative_to(out).as_posix()
        assert rel == f"spot/daily/trades/BTCUSDT/{p.name}"
        assert sha256_file(p) == hashlib.sha256((served / "data" / rel).read_bytes()).hexdigest()
        assert (p.parent / (p.name + ".CHECKSUM")).read_text() == (served / "data" / (rel + ".CHECKSUM")).read_text()
        assert not (p.parent / (p.name + ".part")).exists()
    assert report.bytes == sum(p.stat().st_size for p in report.files)

    # the files readers take the directory as it is; values are the recordings'
    src = [d for day in sorted(trades_by_day) for d in trades_by_day[day]]
    got = _trade_rows([out])
    assert len(got) == len(src) == 9757 + 10147  # the data README's trade counts
    for i in (0, 1, len(src) // 2, -1):
        t, d = got[i], src[i]
        assert (t.trade_id, t.price, t.qty, t.buyer_maker) == (d["t"], float(d["p"]), float(d["q"]), d["m"])
        assert t.ts_recv == d["T"] * 1_000_000

    # trades archives carry no quotes: the backtest prices bars by the last trade by itself
    summary = run_backtest([str(out)], tmp_path / "bt")
    assert summary["ticks"] == len(src) and summary["errors"] == 0
    assert summary["forecasts"] > 0 and set(summary["instruments"]) == {"BTCUSDT"}


def test_klines_monthly_and_daily(server, tmp_path, klines_src):
    out = tmp_path / "dl"
    report = _get(server, out, KLINES)
    assert [p.relative_to(out).as_posix() for p in report.downloaded] == [
        "spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-05-30.zip",
        "spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-05-31.zip",
        "spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-06.zip",
        "spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-07-01.zip",
        "spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-07-02.zip",
    ]
    # every bar of the 34 days comes back, in order, equal to the source
    (spec,) = group_streams([str(out)])
    assert (spec.fmt, spec.symbol, spec.interval_ns) == ("klines", "BTCUSDT", 60 * 10**9)
    ks = [parse_csv_row(r, "klines", "BTCUSDT", "spot") for block in read_stream(spec) for r in block]
    assert len(ks) == len(klines_src) == 34 * 1440
    open_ns = klines_src.date.astype("int64").tolist()
    assert [k.ts_open for k in ks] == open_ns
    assert [k.ts_close for k in ks] == [t + 60 * 10**9 for t in open_ns]
    for col in ("open", "high", "low", "close", "volume"):
        assert [getattr(k, col) for k in ks] == klines_src[col].tolist(), col

    # the dataflow runs on downloaded klines (the four daily archives: keeps the test short)
    summary = run_backtest([str(out / "spot" / "daily")], tmp_path / "bt")
    assert summary["ticks"] == 4 * 1440 and summary["errors"] == 0 and summary["forecasts"] > 0


def test_second_run_is_offline(server, tmp_path):
    out = tmp_path / "dl"
    first = _get(server, out, KLINES)
    n = len(server.requests)
    assert n == 2 * 5  # a CHECKSUM and an archive each
    again = _get(server, out, KLINES)
    assert len(server.requests) == n  # complete archives are verified on disk: no request at all
    assert again.present == first.downloaded and not again.downloaded and again.bytes == 0


def _one_archive(served, out, query):
    """The single archive ``query`` plans, its served bytes, and its destination (parent made)."""
    (a,) = plan(**query)
    dest = out / a.path
    dest.parent.mkdir(parents=True)
    return a, (served / "data" / a.path).read_bytes(), dest


def test_partial_file_is_resumed_with_range(server, served, tmp_path):
    out = tmp_path / "dl"
    a, src, dest = _one_archive(served, out, {**TRADES, "end": "2024-08-08"})
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(src[:5000])
    report = _get(server, out, {**TRADES, "end": "2024-08-08"})
    assert server.archive_requests(a.name) == ["bytes=5000-"]
    assert report.bytes == len(src) - 5000
    assert sha256_file(dest) == hashlib.sha256(src).hexdigest() and not part.exists()


def test_server_ignoring_range_restarts(server, served, tmp_path):
    out = tmp_path / "dl"
    a, src, dest = _one_archive(served, out, {**TRADES, "start": "2024-08-09"})
    dest.with_name(dest.name + ".part").write_bytes(b"stale bytes of something else")
    server.faults["/data/" + a.path] = ["ignore-range"]
    report = _get(server, out, {**TRADES, "start": "2024-08-09"})
    assert server.archive_requests(a.name) == ["bytes=29-"]  # asked, got 200 and the whole file
    assert report.bytes == len(src) and dest.read_bytes() == src


def test_transient_failures_are_retried_and_resumed(server, served, tmp_path):
    out = tmp_path / "dl"
    (a,) = plan(**{**TRADES, "end": "2024-08-08"})
    src = (served / "data" / a.path).read_bytes()
    server.faults["/data/" + a.path] = ["503", "cut"]
    server.faults["/data/" + a.path + ".CHECKSUM"] = ["503"]
    _get(server, out, {**TRADES, "end": "2024-08-08"})
    # 503, then half the body and a hang-up, then the rest by Range (from the last chunk written)
    first, second, third = server.archive_requests(a.name)
    assert first is None and second is None
    assert 0 < int(re.fullmatch(r"bytes=(\d+)-", third)[1]) <= len(src) // 2
    assert (out / a.path).read_bytes() == src


def test_persistent_server_error_gives_up(server, tmp_path):
    (a,) = plan(**{**TRADES, "end": "2024-08-08"})
    server.faults["/data/" + a.path + ".CHECKSUM"] = ["503"] * 10
    with pytest.raises(DownloadError, match=r"BTCUSDT spot trades 2024-08-08 \(daily\): giving up after 3 "
                                            r"attempts: HTTP 503 .*CHECKSUM") as ei:
        _get(server, tmp_path / "dl", {**TRADES, "end": "2024-08-08"}, retries=2)
    assert server.url in str(ei.value) and len(server.requests) == 3


def test_bad_checksum_is_an_error_and_leaves_no_file(server, served, tmp_path):
    out = tmp_path / "dl"
    (a,) = plan(**{**TRADES, "end": "2024-08-08"})
    expected = (served / "data" / (a.path + ".CHECKSUM")).read_text().split()[0]
    server.faults["/data/" + a.path] = ["corrupt"]
    with pytest.raises(ChecksumMismatch) as ei:
        _get(server, out, {**TRADES, "end": "2024-08-08"})
    msg = str(ei.value)
    assert a.name in msg and expected in msg and ei.value.actual in msg and ei.value.actual != expected
    assert list((out / a.path).parent.iterdir()) == []  # no archive, no .part, no CHECKSUM
    _get(server, out, {**TRADES, "end": "2024-08-08"})  # the next run gets it right
    assert sha256_file(out / a.path) == expected


def test_local_file_that_no_longer_verifies_is_fetched_again(server, served, tmp_path):
    out = tmp_path / "dl"
    spec = {**TRADES, "end": "2024-08-08"}
    (a,) = plan(**spec)
    _get(server, out, spec)
    (out / a.path).write_bytes(b"damaged")
    report = _get(server, out, spec)
    assert report.downloaded == [out / a.path]
    assert (out / a.path).read_bytes() == (served / "data" / a.path).read_bytes()


def test_missing_day_aborts_or_is_skipped(server, tmp_path):
    spec = {**TRADES, "start": "2024-08-07", "end": "2024-08-08"}
    with pytest.raises(MissingArchive) as ei:
        _get(server, tmp_path / "a", spec)
    msg = str(ei.value)
    url = f"{server.url}/data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-08-07.zip.CHECKSUM"
    assert "BTCUSDT spot trades 2024-08-07" in msg and url in msg and "404" in msg
    assert not (tmp_path / "a" / "spot" / "daily" / "trades" / "BTCUSDT" / "BTCUSDT-trades-2024-08-08.zip").exists()

    report = _get(server, tmp_path / "b", spec, skip_missing=True)
    assert [a.date for a, _ in report.missing] == ["2024-08-07"] and report.missing[0][1] == url
    assert [p.name for p in report.downloaded] == ["BTCUSDT-trades-2024-08-08.zip"]
    assert report.as_dict()["missing"] == [{"archive": "BTCUSDT spot trades 2024-08-07 (daily)", "url": url}]


def test_cli_download_then_backtest(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TICKLET_DOWNLOAD__BACKOFF_S", "0")
    out = tmp_path / "dl"
    argv = ["download", "--symbol", "btcusdt", "--kind", "trades", "--start", "2024-08-08", "--end", "2024-08-09",
            "--out", str(out), "--base-url", server.url, "--quiet"]
    assert main(argv) == 0
    s = json.loads(capsys.readouterr().out)
    assert s == {"out": str(out), "archives": 2, "downloaded": 2, "present": 0, "missing": [],
                 "bytes": s["bytes"]} and s["bytes"] > 0
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["present"] == 2

    # --skip-missing: exit 0, the missing day in the summary
    argv = [*argv[:6], "2024-08-07", *argv[7:], "--skip-missing"]
    assert main(argv) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["present"], [m["archive"] for m in s["missing"]]) == (2, ["BTCUSDT spot trades 2024-08-07 (daily)"])

    # bad arguments: argparse's exit status 2 and a message
    for bad in (["--start", "2024-08-10", "--end", "2024-08-09"], ["--start", "2024/08/08", "--end", "2024-08-09"]):
        with pytest.raises(SystemExit) as ei:
            main(["download", "--symbol", "BTCUSDT", "--kind", "trades", *bad, "--out", str(out)])
        assert ei.value.code == 2
    assert "start 2024-08-10 is after end 2024-08-09" in capsys.readouterr().err


def _ticklet() -> str:
    local = Path(sys.executable).parent / "ticklet"
    exe = str(local) if local.exists() else shutil.which("ticklet")
    assert exe, "the ticklet console script is not installed (pip install -e '.[dev]')"
    return exe


def test_cli_missing_day_exits_1_without_traceback(server, tmp_path):
    proc = subprocess.run(
        [_ticklet(), "download", "--symbol", "BTCUSDT", "--kind", "klines", "--interval", "1m",
         "--start", "2025-07-03", "--end", "2025-07-03", "--out", str(tmp_path), "--base-url", server.url],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TICKLET_DOWNLOAD__BACKOFF_S": "0"})
    assert proc.returncode == 1 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert "BTCUSDT spot klines 1m 2025-07-03 (daily) is not published: HTTP 404 for " \
           f"{server.url}/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-07-03.zip.CHECKSUM" in proc.stderr


def test_cli_backtest_json_on_downloaded_trades(server, tmp_path):
    out = tmp_path / "dl"
    _get(server, out, TRADES)
    proc = subprocess.run([_ticklet(), "backtest", str(out), "--json", "--out", str(tmp_path / "bt")],
                          capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "TICKLET_BARS__PRICE"})
    assert proc.returncode == 0, proc.stderr
    assert "priced by the last trade" in proc.stderr  # trades only, no quotes: said, not silent
    s = json.loads(proc.stdout)
    assert s["ticks"] == 9757 + 10147 and s["forecasts"] > 0 and s["errors"] == 0


def test_coinm_trades_download_read_and_backtest(server, tmp_path, capsys, monkeypatch):
    """ticklet download --market coinm fetches futures/cm archives of a
    COIN-M contract's symbol; they read as COIN-M (they were refused as not
    a Binance archive), each trade's quantity its base_qty in BTC, and back-
    test as BTCUSD_PERP."""
    monkeypatch.setenv("TICKLET_DOWNLOAD__BACKOFF_S", "0")
    out = tmp_path / "dl"
    assert main(["download", "--symbol", "BTCUSD_PERP", "--kind", "trades", "--start", "2024-08-08", "--end",
                 "2024-08-08", "--market", "coinm", "--out", str(out), "--base-url", server.url, "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["downloaded"] == 1
    (spec,) = group_streams([str(out)])
    assert (spec.fmt, spec.market, spec.symbol) == ("trades", "coinm", "BTCUSD_PERP")
    assert spec.files == (str(out / "futures/cm/daily/trades/BTCUSD_PERP/BTCUSD_PERP-trades-2024-08-08.zip"),)
    src = _coinm_trades()
    got = [parse_csv_row(r, "trades", spec.symbol, spec.market) for block in read_stream(spec) for r in block]
    assert len(got) == len(src) > 1000
    for t, d in zip(got, src, strict=True):
        assert (t.instrument, t.trade_id, t.price) == ("BTCUSD_PERP", d["t"], float(d["p"]))
        assert abs(t.qty - float(d["q"]) * 100 / t.price) <= 0.5e-8 + 1e-15  # the contracts' BTC, to 8 decimals
    summary = run_backtest([str(out)], tmp_path / "bt")
    assert summary["errors"] == 0 and summary["forecasts"] > 0 and set(summary["instruments"]) == {"BTCUSD_PERP"}

"""The command line and the ``python -m bytewax.run`` entry point, as
subprocesses, on the real recordings and on the bundled sample."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from core.events import ForecastRecord
from dataflows.settings import Settings
from harness.realdata import SCRATCH, csv_dicts, messages, run_chain, stream_kind
from sources.input_config import SAMPLE_DIR


@pytest.fixture(scope="module")
def summary(cli_run) -> dict:
    proc, _ = cli_run
    return json.loads(proc.stdout)  # the entire stdout is one JSON document


@pytest.mark.integration  # the CLI in a subprocess
def test_stdout_is_exactly_one_json_object(cli_run, summary):
    proc, _ = cli_run
    assert isinstance(summary, dict)
    obj, end = json.JSONDecoder().raw_decode(proc.stdout)
    assert obj == summary and proc.stdout[end:].strip() == ""  # nothing after the object
    assert proc.stdout.lstrip().startswith("{")  # nor before it


def _is(v, *types) -> bool:
    return type(v) in types


@pytest.mark.integration  # the CLI in a subprocess
def test_summary_fields_and_types(summary):
    for k in ("ticks", "bars", "forecasts", "errors"):
        assert _is(summary[k], int) and summary[k] >= 0, k
    assert _is(summary["wall_s"], float) and summary["wall_s"] > 0
    assert _is(summary["ticks_per_s"], float)
    assert math.isclose(summary["ticks_per_s"], summary["ticks"] / summary["wall_s"], rel_tol=1e-3)
    s = Settings()
    assert set(summary["instruments"]) == {"BTCUSDT", "ETHUSDT", "BTCUSDT-PERP"}
    for sym, body in summary["instruments"].items():
        assert set(body["models"]) == set(s.forecast.models), sym
        for _model, hs in body["models"].items():
            assert set(hs) == {str(h) for h in s.forecast.horizons}
            for _h, m in hs.items():
                assert _is(m["n"], int) and m["n"] > 0
                assert _is(m["mae"], float) and _is(m["rmse"], float) and 0 <= m["mae"] <= m["rmse"]
                assert _is(m["skill"], float, type(None))
                assert _is(m["hit_rate"], float, type(None))
                assert _is(m["n_directional"], int) and 0 <= m["n_directional"] <= m["n"]
                if m["hit_rate"] is not None:
                    assert 0.0 <= m["hit_rate"] <= 1.0


@pytest.mark.integration  # the CLI in a subprocess
def test_summary_counts_match_the_output_files(cli_run, summary):
    _, out = cli_run
    rows = csv_dicts(out / "forecasts.csv")
    assert summary["forecasts"] == len(rows) > 0
    per = Counter((r["instrument"], r["model"], r["horizon"]) for r in rows)
    got = {(sym, model, h): m["n"] for sym, b in summary["instruments"].items()
           for model, hs in b["models"].items() for h, m in hs.items()}
    assert got == dict(per)
    counters = json.loads((out / "counters.json").read_text())
    assert summary["ticks"] == counters["ticks"]
    assert summary["bars"] == counters["bars"]
    assert summary["forecasts"] == counters["forecasts"]
    assert summary["errors"] == counters.get("dead_letters", 0) == 0
    assert not (out / "dead_letters.jsonl").exists() or (out / "dead_letters.jsonl").read_text() == ""


@pytest.mark.integration  # the CLI in a subprocess
def test_ticks_and_skips_match_the_recordings(ws_dir, summary):
    """Every trade (market only), bookTicker, depth message and REST depth snapshot is a tick."""
    kinds: Counter = Counter()
    non_market = 0
    for p in sorted(ws_dir.glob("*/*.gz")):
        for _, _, m in messages(p):
            k = stream_kind(m)
            if k == "trade" and m["data"].get("X", "MARKET") != "MARKET":
                non_market += 1
            else:
                kinds[k] += 1
    assert summary["ticks"] == kinds["trade"] + kinds["bookTicker"] + kinds["depth"] + kinds["snapshot"]
    c = summary["counters"]
    assert c["skipped_markPrice"] == kinds["markPrice"]
    assert kinds["snapshot"] == 3 and "skipped_depth_snapshot" not in c  # each the start of its file's book
    assert c["skipped_non_market_trade"] == non_market == 1


@pytest.mark.integration  # the CLI in a subprocess
def test_metrics_recomputed_from_forecasts(cli_run, summary):
    """The summary's metrics from forecasts.csv alone: MAE, RMSE, skill against
    the zero forecast, hit rate over realized non-zero moves."""
    _, out = cli_run
    acc: dict = defaultdict(lambda: {"n": 0, "ae": 0.0, "se": 0.0, "sr": 0.0, "nd": 0, "hits": 0, "calls": 0})
    for r in csv_dicts(out / "forecasts.csv"):
        a = acc[(r["instrument"], r["model"], r["horizon"])]
        p, y = float(r["pred_return"]), float(r["realized_return"])
        assert math.isclose(float(r["error"]), y - p, rel_tol=1e-12, abs_tol=1e-18)
        a["n"] += 1
        a["ae"] += abs(y - p)
        a["se"] += (y - p) ** 2
        a["sr"] += y * y
        a["calls"] += p != 0.0
        if y != 0.0:
            a["nd"] += 1
            a["hits"] += p * y > 0
    for (sym, model, h), a in acc.items():
        m = summary["instruments"][sym]["models"][model][h]
        assert m["n"] == a["n"] and m["n_directional"] == a["nd"] and m["hits"] == a["hits"]
        assert math.isclose(m["mae"], a["ae"] / a["n"], rel_tol=1e-9)
        assert math.isclose(m["rmse"], math.sqrt(a["se"] / a["n"]), rel_tol=1e-9)
        assert math.isclose(m["skill"], 1 - a["se"] / a["sr"], rel_tol=1e-9, abs_tol=1e-12)
        if a["calls"]:
            assert math.isclose(m["hit_rate"], a["hits"] / a["nd"], rel_tol=1e-12)
        else:
            assert m["hit_rate"] is None
        if model == "naive":
            assert m["skill"] == 0.0 and m["hit_rate"] is None


def _summary_block(stderr: str) -> tuple[str, list[str], list[str]]:
    """(totals line, metric rows, output lines) of the end-of-run summary
    (the two lines of legend after the rows checked and left out)."""
    lines = stderr.splitlines()
    i = max(i for i, ln in enumerate(lines) if ln.startswith("ticklet: ") and " ticks, " in ln)
    j = lines.index("outputs:", i)
    cols = lines[i + 1].split()
    assert cols == ["instrument", "model", "h", "n", "hit", "rate", "95%", "CI", "p(binom)", "DM", "p", "PT", "p",
                    "skill"], lines[i + 1]
    assert lines[j - 2].startswith("p(binom): ") and lines[j - 1].startswith("PT: "), lines[j - 2 : j]
    return lines[i], lines[i + 2 : j - 2], [ln for ln in lines[j + 1 :] if ln.startswith("  ")]


@pytest.mark.integration  # the CLI in a subprocess
def test_human_readable_summary(ws_dir, tmp_path):
    """Without --json nothing goes to stdout; stderr ends with the totals, one
    row per model and horizon, and where each output file is."""
    src = ws_dir / "spot" / "btcusdt_20230405.dat.gz"
    proc = subprocess.run([sys.executable, "-m", "ticklet.cli", "backtest", str(src), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=SCRATCH)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    head, rows, outputs = _summary_block(proc.stderr)
    counters = json.loads((tmp_path / "counters.json").read_text())
    assert head.startswith(f"ticklet: {counters['ticks']:,} ticks, {counters['bars']:,} bars, "
                           f"{counters['forecasts']:,} forecasts scored, 0 dead letters in ")
    n = len(Settings().forecast.models) * len(Settings().forecast.horizons)
    assert len(rows) == n and all(r.split()[0] == "BTCUSDT" for r in rows)
    metrics = {(r["model"], r["horizon"]): r for r in csv_dicts(tmp_path / "metrics.csv")}
    for r in rows:  # instrument, model, h, n, hit rate, p, skill: the last metrics of the run
        _, model, h, n_, *_ = r.split()
        assert int(n_) == max(int(m["n"]) for k, m in metrics.items() if k == (model, h))
    paths = dict(ln.split(None, 1) for ln in outputs)
    assert set(paths) == {"forecasts", "metrics", "signals", "trades", "equity", "economics", "dead_letters",
                          "counters", "run"}
    assert paths["metrics"] == str(tmp_path / "metrics.csv") and (tmp_path / "metrics.csv").exists()


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal: (exit status, stdout, what the terminal showed)."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    proc = subprocess.Popen(args, cwd=SCRATCH, env=env, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    shown = bytearray()

    def drain() -> None:
        while True:
            try:
                b = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                return
            if not b:
                return
            shown.extend(b)

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    out, _ = proc.communicate(timeout=300)
    t.join(30)
    os.close(master)
    return proc.returncode, out.decode(), shown.decode(errors="replace")


@pytest.mark.integration  # the dataflow in a subprocess
def test_bytewax_run_on_the_bundled_sample(tmp_path):
    """The README's quick start, as a user at a terminal runs it: a progress
    bar over the input bytes while it runs, the summary at the end; the
    dataflow's forecasts are exactly those of the pure operators run by hand
    on the same files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env["TICKLET_OUTPUT__DIR"] = str(tmp_path / "out")
    rc, out, shown = _run_on_a_terminal([sys.executable, "-m", "bytewax.run", "dataflows.forecast"], env)
    assert rc == 0, shown
    assert out == ""
    total = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*.gz"))
    bars = [ln for ln in shown.replace("\r", "\n").splitlines() if ln.startswith("ticklet:") and "%|" in ln]
    assert bars, shown  # tqdm drew its bar over the input bytes ...
    assert "100%" in bars[-1] and f"{total / 1e6:.2f}M/{total / 1e6:.2f}M" in bars[-1], bars[-1]  # ... to the end
    head, rows, outputs = _summary_block(shown.replace("\r", ""))
    assert "0 dead letters" in head and len(rows) == 6
    assert dict(ln.split(None, 1) for ln in outputs)["forecasts"] == str(tmp_path / "out" / "forecasts.csv")
    rows = csv_dicts(tmp_path / "out" / "forecasts.csv")
    assert rows
    fields = ForecastRecord.__struct_fields__
    assert list(rows[0]) == list(fields)
    types = ForecastRecord.__annotations__

    def conv(f: str, v: str):
        t = str(types[f])
        if "Optional" in t:  # an empty cell is None
            return None if v == "" else float(v)
        return int(v) if t == "int" else float(v) if t == "float" else v

    got = [ForecastRecord(**{f: conv(f, r[f]) for f in fields}) for r in rows]
    chain = run_chain(sorted(SAMPLE_DIR.rglob("*.gz")))
    assert got == chain.forecasts
    counters = json.loads((tmp_path / "out" / "counters.json").read_text())
    assert counters["ticks"] == len(chain.events)
    assert counters["forecasts"] == len(chain.forecasts)


def test_short_input_reports_nothing_stale(ws_dir, full_run, tmp_path):
    """An input shorter than the warm-up makes no forecasts; run into a
    directory that holds a previous full run, the summary must not report the
    old run's files."""
    import gzip
    import shutil

    from ticklet.backtest import run_backtest

    _, full_out = full_run
    out = tmp_path / "out"
    shutil.copytree(full_out, out)
    assert (out / "metrics.csv").stat().st_size > 0
    rec = tmp_path / "spot" / "btcusdt_20240808.gz"
    rec.parent.mkdir()
    with gzip.open(ws_dir / "spot" / "btcusdt_20240808.gz", "rb") as f:
        head = [next(f) for _ in range(200)]  # about 20 s of ticks: less than the warm-up
    with gzip.open(rec, "wb") as g:
        g.writelines(head)
    summary = run_backtest([str(rec.parent)], out)
    assert summary["forecasts"] == 0 and summary["instruments"] == {}
    assert summary["ticks"] == 200  # 200 lines, the first the REST depth snapshot
    assert not (out / "forecasts.csv").exists() and not (out / "metrics.csv").exists()


_HEAVY = ("torch", "river", "scipy", "influxdb_client", "bytewax")
_LOADED = ("import sys; from ticklet.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
           f"print('loaded:' + ','.join(m for m in {_HEAVY!r} if m in sys.modules))")


def _heavy_modules(argv: list[str]) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", _LOADED.format(argv=argv)], capture_output=True, text=True,
                          timeout=300, cwd=SCRATCH)
    assert proc.returncode == 0, proc.stderr
    return set(filter(None, proc.stdout.strip().splitlines()[-1].removeprefix("loaded:").split(",")))


@pytest.mark.integration  # the CLI in a subprocess
@pytest.mark.parametrize("argv", [["--help"], ["config"], ["download", "--help"], ["backtest", "--help"]])
def test_help_and_config_load_no_heavy_library(argv):
    """`ticklet --help`, `config` and `download --help` load neither torch, River,
    SciPy, influxdb-client nor Bytewax (benchmarks/startup.py times them)."""
    assert _heavy_modules(argv) == set()


@pytest.mark.integration  # the CLI in a subprocess
def test_a_backtest_without_the_cnn_gru_does_not_load_torch(ws_dir, tmp_path):
    """The default models need River (and SciPy, for the summary's p-values), never
    torch; influxdb-client only loads when the InfluxDB output is on."""
    src = str(ws_dir / "spot" / "btcusdt_20230405.dat.gz")
    assert _heavy_modules(["backtest", src, "--out", str(tmp_path)]) == {"river", "scipy", "bytewax"}


@pytest.mark.integration  # the CLI in a subprocess
def test_economics_block_of_every_book(cli_run, summary):
    """``economics`` in the JSON: every instrument, every default model and
    horizon plus the two baselines (horizon 0), as the last rows of
    economics.csv say."""
    _, out = cli_run
    s = Settings()
    econ = summary["economics"]
    assert set(econ) == {"BTCUSDT", "ETHUSDT", "BTCUSDT-PERP"}
    want = {(m, str(h)) for m in s.forecast.models for h in s.forecast.horizons} | {("buy_and_hold", "0"),
                                                                                       ("flat", "0")}
    last = {(r["instrument"], r["model"], r["horizon"]): r for r in csv_dicts(out / "economics.csv")}
    for inst, books in econ.items():
        assert {(m, h) for m, hs in books.items() for h in hs} == want
        for m, hs in books.items():
            for h, e in hs.items():
                row = last[(inst, m, h)]
                assert e["net_return"] == float(row["net_return"]) and e["fills"] == int(row["fills"])
                assert set(e) >= {"sharpe", "sortino", "max_drawdown", "calmar", "trades", "win_rate",
                                  "profit_factor", "turnover", "exposure", "avg_holding_s", "break_even_bps"}
        assert books["flat"]["0"]["fills"] == 0 and books["buy_and_hold"]["0"]["fills"] >= 1


@pytest.mark.integration  # a server on a local socket
def test_replay_to_brokers_that_are_gone_stops_after_the_delivery_timeout(ws_dir, tmp_path):
    """A closed port on loopback (no broker): with a 1 s delivery timeout the
    replay stops after about a second, says what was not delivered in its
    summary (exit status 1), and stderr holds two plain lines, no
    librdkafka chatter."""
    from netutil import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    env["TICKLET_KAFKA__DELIVERY_TIMEOUT_S"] = env["TICKLET_KAFKA__CONNECT_TIMEOUT_S"] = "1"
    rec = ws_dir / "spot" / "btcusdt_20240808.gz"
    proc = subprocess.run([sys.executable, "-m", "ticklet.cli", "replay", str(rec), "--bootstrap-servers",
                           f"127.0.0.1:{free_port()}"], cwd=SCRATCH, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["delivered"] == 0 and summary["undelivered"] == summary["messages"] > 0
    assert summary["failed"] == summary["messages"] and "TICKLET_KAFKA__DELIVERY_TIMEOUT_S" in summary["stopped"]
    assert summary["wall_s"] < 10  # about the 1 s timeout (librdkafka's default: 300 s per queue of messages)
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "did not answer" in lines[0] and f"{summary['undelivered']} of {summary['messages']}" in lines[1]


@pytest.mark.integration  # a server on a local socket
@pytest.mark.parametrize("switch", ["TICKLET_API__ENABLED", "BYTEWAX_DATAFLOW_API_ENABLED"])
def test_the_dataflow_api_listens_on_loopback_only(ws_dir, tmp_path, switch):
    """With the API on (ticklet's switch or Bytewax's), the dataflow's process
    listens on 127.0.0.1:TICKLET_API__PORT and nowhere else (Bytewax's own
    server, which binds 0.0.0.0, stays off): /metrics answers there, and a
    connection to the machine's other address is refused."""
    import time
    import urllib.request

    from netutil import free_port, listening, other_address, refused

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKLET_", "BYTEWAX_"))}
    env.update({switch: "true", "TICKLET_API__PORT": str(port), "TICKLET_OUTPUT__DIR": str(tmp_path / "out"),
                "TICKLET_OUTPUT__SUMMARY": "false", "TICKLET_INPUT__PATHS": json.dumps([str(ws_dir)])})
    proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.forecast"], cwd=SCRATCH, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: set[tuple[str, int]] = set()
    text, other = "", other_address()
    other_refused = None
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                now = listening(proc.pid)
            except OSError:  # the process has just ended
                break
            seen |= now
            if ("127.0.0.1", port) in now:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                if other is not None:
                    other_refused = refused(other, port)
                seen |= listening(proc.pid)
                break
            time.sleep(0.02)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert seen == {("127.0.0.1", port)}, (seen, err[-2000:])
    assert "ticklet_events_total" in text
    assert other is None or other_refused, f"{other}:{port} accepted a connection"


# --- the command itself, in this process ---------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_installed_version(flag, capsys):
    from core.version import ticklet_version
    from ticklet.cli import main

    with pytest.raises(SystemExit) as ex:
        main([flag])
    out, err = capsys.readouterr()
    assert ex.value.code == 0 and err == ""
    assert out == f"ticklet {ticklet_version()}\n" and ticklet_version() != "unknown"


def _help(argv: list[str], capsys) -> str:
    from ticklet.cli import main

    with pytest.raises(SystemExit) as ex:
        main([*argv, "--help"])
    out, err = capsys.readouterr()
    assert ex.value.code == 0 and err == "", err
    return out


def test_help_is_plain_text_and_shows_the_main_job(capsys):
    """``ticklet --help`` says what ticklet is and shows the README's first
    command (the dataflow on the bundled sample) and a backtest; no help
    holds reStructuredText markup (a terminal shows it as it is), and every
    command's help starts by saying what the command does."""
    import re

    rst = re.compile(r"``|:(?:mod|func|class|meth|attr|data|exc|obj):`")
    top = _help([], capsys)
    assert not rst.search(top), top
    assert "\n  python -m bytewax.run dataflows.forecast\n" in top and "\n  ticklet backtest data/sample " in top, top
    assert "-V, --version" in top
    choices = next(ln.strip() for ln in top.splitlines() if ln.strip().startswith("{"))
    commands = choices.strip("{}").split(",")
    assert set(commands) == {"backtest", "train", "report", "replay", "config", "collect", "serve", "download"}
    for command in commands:
        text = _help([command], capsys)
        assert not rst.search(text), (command, text)
        assert text.split("\n\n")[1].startswith(f"ticklet {command}: "), (command, text)  # after the usage


def _backtest(argv: list[str], capsys) -> tuple[int, str, str]:
    """``ticklet backtest ARGV`` in this process: (status, stdout, stderr)."""
    from ticklet.cli import main

    rc = main(["backtest", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_refused_backtest_leaves_no_directory_it_made(ws_dir, tmp_path, monkeypatch, capsys):
    """A backtest refused at start (an input that is no recording, a bad
    setting, a bundle that is not there) takes away the directories it made
    for its outputs and bundle, parents included, and only those: a
    directory that was there before stays, empty or not."""
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    rec = str(ws_dir / "spot" / "btcusdt_20230405.dat.gz")
    new = tmp_path / "new"
    rc, out, err = _backtest([str(notes), "--out", str(new / "out")], capsys)
    assert rc == 2 and out == "" and err.startswith(f"ticklet: {notes}: not a recording"), err
    assert not new.exists()
    rc, _, err = _backtest([rec, "--out", str(new / "out"), "--save-models", str(new / "bundle"),
                            "--warm-start", str(tmp_path / "no-bundle")], capsys)
    assert rc == 2 and "TICKLET_FORECAST__WARM_START" in err and not new.exists(), err
    monkeypatch.setenv("TICKLET_FORECAST__MODELS", "[]")
    rc, _, err = _backtest([rec, "--out", str(new / "out")], capsys)
    assert rc == 2 and "TICKLET_FORECAST__MODELS" in err and not new.exists(), err
    monkeypatch.delenv("TICKLET_FORECAST__MODELS")
    empty, kept = tmp_path / "empty", tmp_path / "kept"
    empty.mkdir()
    kept.mkdir()
    (kept / "mine.txt").write_text("not ticklet's\n")
    for out_dir in (empty, kept, empty / "sub"):
        rc, _, err = _backtest([str(notes), "--out", str(out_dir)], capsys)
        assert rc == 2 and err.startswith(f"ticklet: {notes}: "), err
    assert empty.is_dir() and list(empty.iterdir()) == [] and [p.name for p in kept.iterdir()] == ["mine.txt"]


def test_the_summary_lists_the_run_manifest(ws_dir, tmp_path, capsys):
    """``run.json``, which every run writes, is among the outputs the summary lists."""
    rc, out, err = _backtest([str(ws_dir / "spot" / "btcusdt_20230405.dat.gz"), "--out", str(tmp_path)], capsys)
    assert rc == 0 and out == "", err
    _, _, outputs = _summary_block(err)
    paths = dict(ln.split(None, 1) for ln in outputs)
    assert paths["run"] == str(tmp_path / "run.json") and (tmp_path / "run.json").is_file()

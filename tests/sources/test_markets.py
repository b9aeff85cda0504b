"""Inputs that were read wrong without a word (issue 23, item 9), on real
Binance messages from other projects' fixtures (tests/data/NOTICE.md) and
from the recordings:

- COIN-M futures are read as COIN-M: their own instrument names
  (``BTCUSD_PERP``, the quarterly ``BTCUSD_211231``), quantities converted
  from contracts to coins with the contract size, inverse-contract books;
  an unknown contract is refused with one line, never misread;
- every kind of stream counts towards market detection (USD-M aggTrade and
  kline streams alone are USD-M);
- a recording of trades without quotes falls back to last-trade bars, and
  says so;
- raw (not combined) stream recordings are read like combined ones;
- COIN-M archives (``BTCUSD_PERP-trades-...zip``) are read.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

from core.events import BookSnapshot, DepthUpdate, Kline, Quote, RawChunk, Trade
from harness.realdata import REPO, SCRATCH, csv_dicts, lines, messages, parse_paths, write_gz
from operators.pnl import ExecutionConfig
from sources.binance import parse_chunk
from sources.files import InputFormatError, describe, group_streams, unquoted
from sources.symbols import COINM_CONTRACT_USD
from sources.wire import encode_tick, tick_head

DATA = REPO / "tests" / "data"
FX = DATA / "fixtures"
WS = DATA / "binance-ws"
CM_BTC = FX / "hftbacktest" / "cm" / "btcusd_perp_20240808.gz"
CM_ETH = FX / "hftbacktest" / "cm" / "ethusd_perp_20240808.gz"
CF_CM = FX / "cryptofeed" / "coinm"
EXCHANGE_INFO = CF_CM / "exchangeInfo_20210721.json"
PUBLIC = FX / "binance-public-data"


def _contract_sizes() -> dict[str, float]:
    """Binance's own contract sizes, from its exchangeInfo (the fixture)."""
    info = json.loads(EXCHANGE_INFO.read_text())
    return {s["symbol"]: float(s["contractSize"]) for s in info["symbols"]}


def _ticklet(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ticklet.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=SCRATCH, env=env)


# --- COIN-M -------------------------------------------------------------------------------------------------------


def test_the_contract_sizes_are_binances():
    """The table is exactly Binance's exchangeInfo (pair -> contractSize),
    and the public-data README's COIN-M trade row agrees: 1 contract at
    9635.0 is 0.01037883 BTC, so a BTCUSD contract is 100 USD."""
    info = json.loads(EXCHANGE_INFO.read_text())
    assert dict(COINM_CONTRACT_USD) == {s["pair"]: float(s["contractSize"]) for s in info["symbols"]}
    (row,) = csv.reader((PUBLIC / "BTCUSD_PERP-trades-2020-06-04.csv").read_text().splitlines())
    assert round(float(row[2]) * COINM_CONTRACT_USD["BTCUSD"] / float(row[1]), 8) == float(row[3])


COINM_FILES = [CM_BTC, CM_ETH, CF_CM / "btcusd_211231.gz", CF_CM / "ethusd_210924.gz", CF_CM / "xrpusd_perp.gz"]


@pytest.mark.parametrize("path", COINM_FILES, ids=lambda p: p.name)
def test_coinm_recordings_are_read_as_coinm(path: Path):
    """Every message of a COIN-M recording becomes an event of the
    instrument its symbol names (no -PERP added: BTCUSD_PERP, and the
    quarterly BTCUSD_211231 stays a quarterly), its quantities the
    contracts' worth in coins at the message's own price."""
    msgs = messages(path)
    symbol = next(m["data"]["s"] for _, _, m in msgs if "data" in m)
    (spec,) = group_streams([path])
    assert (spec.market, spec.symbol) == ("coinm", symbol)
    by_key, errors, counts = parse_paths([path])
    assert errors == [] and list(by_key) == [symbol]
    usd = _contract_sizes()[symbol]
    expected: list[tuple] = []  # what each message says, in coins, computed here from the raw JSON
    for _, _, m in msgs:
        d, kind = m.get("data", {}), m.get("stream", "@snapshot").split("@")[1]
        if kind == "trade" or kind == "aggTrade":
            expected.append((Trade, float(d["p"]), float(d["q"]) * usd / float(d["p"])))
        elif kind == "bookTicker":
            expected.append((Quote, float(d["b"]), float(d["B"]) * usd / float(d["b"]),
                             float(d["a"]), float(d["A"]) * usd / float(d["a"])))
        elif kind == "depth":
            expected.append((DepthUpdate, *[(float(p), float(q) * usd / float(p)) for p, q in d["b"] + d["a"]]))
        elif kind == "snapshot":  # the REST depth snapshot: the start of the book
            expected.append((BookSnapshot, *[(float(p), float(q) * usd / float(p)) for p, q in m["bids"] + m["asks"]]))
        elif kind.startswith("kline") and d["k"]["x"]:
            expected.append((Kline, float(d["k"]["q"]), float(d["k"]["v"]) * usd))
    got: list[tuple] = []
    for e in by_key[symbol]:
        if type(e) is Trade:
            got.append((Trade, e.price, e.qty))
        elif type(e) is Quote:
            got.append((Quote, e.bid, e.bid_qty, e.ask, e.ask_qty))
        elif type(e) is DepthUpdate:
            got.append((DepthUpdate, *[(lv.price, lv.qty) for lv in e.bids + e.asks]))
        elif type(e) is BookSnapshot:  # the REST snapshot, in contracts too
            got.append((BookSnapshot, *[(lv.price, lv.qty) for lv in e.bids + e.asks]))
        else:
            got.append((Kline, e.volume, e.quote_volume))
    assert len(got) == len(expected) == counts["ticks"] > 0
    assert all(_close(g, x) for g, x in zip(got, expected, strict=True))


def _close(a, b) -> bool:
    """Equal, floats to 1e-12 relative, tuples element by element."""
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=1e-12)
    return a == b


def test_coinm_backtest_keeps_inverse_books_in_the_coin(tmp_path: Path):
    """A backtest of the COIN-M recordings: forecasts for BTCUSD_PERP and
    ETHUSD_PERP, and books kept in the coin with inverse-contract PnL. Over
    every holding period from flat to flat, the coins gained are the sum of
    qty / price over its fills less their fees (N x (1/p1 - 1/p2) for one
    round trip of N USD of contracts), and a book starts with the initial
    equity's worth of the coin at its first mid."""
    from ticklet.backtest import run_backtest

    out = tmp_path / "out"
    summary = run_backtest([str(CM_BTC), str(CM_ETH)], out)
    assert set(summary["instruments"]) == {"BTCUSD_PERP", "ETHUSD_PERP"}
    assert summary["errors"] == 0 and summary["forecasts"] > 0
    init = ExecutionConfig().initial_equity
    equity = csv_dicts(out / "equity.csv")
    first: dict = {}
    for r in equity:
        first.setdefault((r["instrument"], r["model"], r["horizon"]), r)
        assert math.isclose(float(r["equity"]), float(r["gross_equity"]) - float(r["costs"]), rel_tol=1e-12)
    for r in first.values():  # the flat book has no costs: exactly the initial equity in coins
        if r["model"] == "flat":
            assert math.isclose(float(r["equity"]), init / float(r["mid"]), rel_tol=1e-12)
    fills = defaultdict(list)
    for f in csv_dicts(out / "trades.csv"):
        fills[(f["instrument"], f["model"], f["horizon"])].append(f)
    periods = 0
    for key, fs in fills.items():
        cash = init / float(first[key]["mid"])  # before the first fill
        gained = 0.0
        for f in fs:
            qty, price, fee, position = float(f["qty"]), float(f["price"]), float(f["fee"]), float(f["position"])
            gained += qty / price - fee
            if position == 0.0:  # flat again: the coins held are what the period made
                assert math.isclose(float(f["cash"]) - cash, gained, rel_tol=1e-9, abs_tol=1e-15)
                cash, gained = float(f["cash"]), 0.0
                periods += 1
    assert periods > 20


@pytest.mark.integration  # the CLI in a subprocess
def test_unknown_coinm_contract_is_refused_with_one_line(tmp_path: Path):
    """A COIN-M contract whose size ticklet does not know is refused, never
    read with a guessed size: a file with exit status 2 and one line; on
    Kafka every message is a dead letter saying why."""
    renamed = [ln.replace(b"btcusd_perp@", b"solusd_perp@").replace(b'"BTCUSD_PERP"', b'"SOLUSD_PERP"')
               for ln in lines(CM_BTC)[:500]]
    rec = write_gz(tmp_path / "solusd_perp_20240808.gz", renamed)
    proc = _ticklet("backtest", str(rec), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"ticklet: {rec}: unknown COIN-M contract size: SOLUSD_PERP (ticklet knows those of "
        f"{len(COINM_CONTRACT_USD)} pairs: sources/symbols.py)"]
    with pytest.raises(InputFormatError, match=r"solusd_perp_20240808.gz: unknown COIN-M contract size"):
        group_streams([tmp_path])  # inside a directory too: refused, not skipped
    values = [encode_tick(int(ln[:19]), "coinm", ln[20:]) for ln in renamed]
    by_key, errors, counts = parse_chunk(RawChunk("kafka", "", "", values))
    assert by_key == {} and counts["ticks"] == 0
    assert len(errors) == counts["parse_errors"] == len(values)  # the REST snapshot too: it names its contract
    assert {e.reason.split(":")[0] for e in errors} == {"unknown COIN-M contract size"}
    assert {e.instrument for e in errors} == {"SOLUSD_PERP"}


def test_coinm_over_kafka_is_read_like_the_file():
    """The ticks topic carries the market; COIN-M ticks give the events the
    file gives, in the same order. Their compact head is read by the wire
    format's fast path, as spot and USD-M ones are (it knew only 4-letter
    markets: a COIN-M tick was decoded whole, then its message again, the
    slow way; benchmarks/parse_throughput.py --kafka)."""
    by_file, _, _ = parse_paths([CM_ETH])
    values = [encode_tick(int(ln[:19]), "coinm", ln[20:]) for ln in lines(CM_ETH)]
    by_kafka, errors, _ = parse_chunk(RawChunk("kafka", "", "", values))
    assert errors == [] and list(by_kafka) == ["ETHUSD_PERP"]
    assert list(by_kafka["ETHUSD_PERP"]) == list(by_file["ETHUSD_PERP"])
    heads = [tick_head(v) for v in values]  # the end of the compact head (0: decoded whole)
    assert all(h[1:] == ("coinm", len(b'{"ts_recv":%d,"market":"coinm"' % h[0])) for h in heads)


@pytest.mark.integration  # the CLI in a subprocess
def test_a_market_forced_against_the_symbols_is_refused(tmp_path: Path):
    """TICKLET_INPUT__MARKET=coinm on a spot recording is a bad setting: one
    line and exit status 2 (not a dead letter per message)."""
    rec = WS / "spot" / "btcusdt_20240808.gz"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    proc = _ticklet("backtest", str(rec), "--out", str(tmp_path / "out"), env={**env, "TICKLET_INPUT__MARKET": "coinm"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"ticklet: {rec}: not a COIN-M symbol: BTCUSDT (COIN-M symbols are <COIN>USD_PERP or <COIN>USD_<YYMMDD>) "
        "(TICKLET_INPUT__MARKET=coinm)"]


# --- market detection ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path,market", [
    (FX / "cryptofeed" / "usdm" / "sushiusdt_aggtrade_kline.gz", "usdm"),
    (FX / "cryptofeed" / "usdm" / "ctkusdt_aggtrade_kline.gz", "usdm"),
    (FX / "cryptofeed" / "spot" / "nknusdt_aggtrade_kline.gz", "spot"),
    (FX / "cryptofeed" / "spot" / "lrcbtc_aggtrade_kline.gz", "spot"),
], ids=lambda x: x.name if isinstance(x, Path) else x)
def test_aggtrade_and_kline_streams_alone_tell_their_market(path: Path, market: str):
    """A recording of aggTrade and kline streams only: spot aggTrades carry
    M (futures ones do not), spot klines write 8 decimals (futures ones the
    contract's precision), so USD-M ones are USD-M and never share a spot
    instrument's state."""
    kinds = {m["stream"].split("@")[1] for _, _, m in messages(path)}
    assert kinds == {"aggTrade", "kline_1m"}
    spec = describe(path)
    assert spec.market == market and spec.kinds == {"aggTrade", "kline"}
    by_key, errors, _ = parse_paths([path])
    symbol = messages(path)[0][2]["data"]["s"]
    assert errors == [] and list(by_key) == [symbol if market == "spot" else f"{symbol}-PERP"]


@pytest.mark.parametrize("kind", ["trade", "bookTicker", "depth"])
def test_each_stream_of_the_recordings_alone_tells_its_market(tmp_path: Path, kind: str):
    """Each kind of stream of the real recordings, alone, gives the market
    of the whole recording (bookTicker and depth of spot by what they lack)."""
    for market in ("spot", "usdm"):
        src = sorted((WS / market).glob("*.gz"))[0]
        one = [ln for ln in lines(src) if f'@{kind}'.encode() in ln[:80]]
        assert one
        assert describe(write_gz(tmp_path / market / f"{kind}.gz", one)).market == market


# --- trades without quotes ------------------------------------------------------------------------------------------


def test_a_recording_of_trades_without_quotes_gets_last_trade_bars(tmp_path: Path, caplog):
    """The trade lines of a real recording alone: the run prices its bars by
    the last trade and says so, instead of making no bar at all."""
    from ticklet.backtest import run_backtest

    src = WS / "spot" / "btcusdt_20240808.gz"
    trades = write_gz(tmp_path / "in" / "btcusdt_20240808.gz", [ln for ln in lines(src) if b"@trade" in ln[:60]])
    assert unquoted([trades]) == (["BTCUSDT"], False)
    with caplog.at_level(logging.WARNING, logger="ticklet"):
        summary = run_backtest([str(trades)], tmp_path / "out")
    assert summary["errors"] == 0 and summary["bars"] > 300 and summary["forecasts"] > 0
    warned = [r.getMessage() for r in caplog.records if "quotes" in r.getMessage()]
    assert warned == ["no quotes (bookTicker) in the inputs, only trades (BTCUSDT): bars are priced by the last "
                      "trade (TICKLET_BARS__PRICE=last)"]


@pytest.mark.integration  # the dataflow in a subprocess
def test_the_dataflow_entry_point_falls_back_too(tmp_path: Path):
    """python -m bytewax.run dataflows.forecast on the same trades alone:
    last-trade bars and forecasts, and the warning on stderr."""
    src = WS / "spot" / "btcusdt_20240808.gz"
    trades = write_gz(tmp_path / "in" / "btcusdt_20240808.gz", [ln for ln in lines(src) if b"@trade" in ln[:60]])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKLET_", "BYTEWAX_"))}
    env.update({"TICKLET_INPUT__PATHS": json.dumps([str(trades)]), "TICKLET_OUTPUT__DIR": str(tmp_path / "out"),
                "TICKLET_OUTPUT__PROGRESS": "false", "PYTHONPATH": str(REPO)})
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.forecast"], capture_output=True, text=True,
                          timeout=180, cwd=SCRATCH, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no quotes (bookTicker) in the inputs, only trades (BTCUSDT): bars are priced by the last trade" \
        in proc.stderr
    assert len(csv_dicts(tmp_path / "out" / "forecasts.csv")) > 0


def test_trades_without_quotes_beside_quoted_inputs_are_named(tmp_path: Path):
    """Beside a recording with quotes, the instrument whose inputs have
    trades but no quotes is named (its bars need TICKLET_BARS__PRICE=last);
    an instrument quoted in any of its inputs is not."""
    src = WS / "spot" / "btcusdt_20240808.gz"
    trades = write_gz(tmp_path / "btc" / "btcusdt_trades.gz", [ln for ln in lines(src) if b"@trade" in ln[:60]])
    eth = WS / "spot" / "ethusdt_20240808.gz"
    assert unquoted([trades, eth]) == (["BTCUSDT"], True)
    assert unquoted([trades, src, eth]) == ([], True)


# --- raw stream recordings -------------------------------------------------------------------------------------------


def _raw(line: bytes) -> bytes:
    """A combined-stream recording line as a raw stream recorder writes it: the data alone."""
    ts, body = line.split(b" ", 1)
    msg = json.loads(body)
    return ts + b" " + (json.dumps(msg["data"], separators=(",", ":")).encode() if "data" in msg else body)


@pytest.mark.parametrize("src", [WS / "spot" / "btcusdt_20240808.gz", WS / "usdm" / "btcusdt_20230404.dat.gz",
                                 CM_ETH], ids=lambda p: p.parent.name)
def test_raw_stream_recordings_are_read_like_combined_ones(tmp_path: Path, src: Path):
    """The same messages recorded from raw streams (``/ws/<stream>``: the
    data without the envelope) give the same market, symbol, events and
    counts as the combined-stream recording."""
    raw = write_gz(tmp_path / src.name, [_raw(ln) for ln in lines(src)])
    assert (describe(raw).market, describe(raw).symbol) == (describe(src).market, describe(src).symbol)
    want, want_errors, want_counts = parse_paths([src])
    got, errors, counts = parse_paths([raw])
    assert errors == want_errors == [] and counts == want_counts
    assert {k: list(v) for k, v in got.items()} == {k: list(v) for k, v in want.items()}


@pytest.mark.parametrize("name,kind", [
    ("futures_trade_stream.json", Trade), ("futures_agg_trade_stream.json", Trade),
    ("futures_book_ticker_stream.json", Quote), ("futures_depth_update_stream.json", DepthUpdate),
    ("futures_kline_stream_closed.json", Kline), ("futures_kline_stream_open.json", "open_kline"),
    ("futures_mark_price_stream.json", "markPrice")])
def test_nautilus_raw_futures_messages(name: str, kind):
    """nautilus_trader's raw USD-M messages (pretty-printed JSON) parse."""
    from sources.binance import parse_ws

    body = (FX / "nautilus_trader" / name).read_bytes()
    ev = parse_ws(1, body, "usdm")
    assert (type(ev) if isinstance(kind, type) else ev) == kind
    if isinstance(kind, type):
        assert not isinstance(ev, str) and ev.instrument == json.loads(body)["s"] + "-PERP"


def test_a_message_of_no_stream_names_the_combined_form():
    """A JSON object that is neither a combined-stream message nor a raw
    stream's is a dead letter that says what a message should look like."""
    from sources.binance import parse_ws

    err = parse_ws(1, b'{"s":"BTCUSDT","p":"1"}', "spot")
    assert err.reason == ('not a Binance stream message: no "stream" (the combined-stream form is '
                          '{"stream":"<symbol>@<kind>","data":{...}}) nor an event type "e"')
    assert parse_ws(1, b'{"e":"executionReport","s":"BTCUSDT"}', "spot").reason.startswith("unknown event type")


# --- COIN-M archives ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["BTCUSD_PERP-trades-2020-06-04.csv", "BTCUSD_PERP-1m-2020-06-04.csv"])
def test_coinm_archives_are_read(tmp_path: Path, name: str):
    """The COIN-M sample rows of Binance's public-data README, in an archive
    named as Binance names it: read as COIN-M (they were refused as "not a
    Binance archive"), quantities in coins."""
    rel = "futures/cm/daily/" + ("trades/BTCUSD_PERP/" if "trades" in name else "klines/BTCUSD_PERP/1m/")
    zpath = tmp_path / rel / name.replace(".csv", ".zip")
    zpath.parent.mkdir(parents=True)
    with zipfile.ZipFile(zpath, "w") as z:
        z.write(PUBLIC / name, name)
    spec = describe(zpath)
    assert (spec.market, spec.symbol) == ("coinm", "BTCUSD_PERP")
    by_key, errors, _ = parse_paths([zpath])
    assert errors == [] and list(by_key) == ["BTCUSD_PERP"]
    (row,) = csv.reader((PUBLIC / name).read_text().splitlines())
    (ev,) = by_key["BTCUSD_PERP"]
    if spec.fmt == "trades":  # qty: the base_qty column
        assert (ev.price, ev.qty, ev.trade_id) == (float(row[1]), float(row[3]), int(row[0]))
    else:  # volume: base_asset_volume; quote volume: the contracts' USD; taker buys in coins
        usd = COINM_CONTRACT_USD["BTCUSD"]
        assert (ev.close, ev.volume, ev.quote_volume, ev.trades, ev.taker_buy_volume) == (
            float(row[4]), float(row[7]), float(row[5]) * usd, int(row[8]), float(row[10]))

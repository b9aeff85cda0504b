"""Parsing of every Binance stream and archive format, on real data.

Expected events are built by hand from the JSON (stdlib ``json``) or from
exact decimal arithmetic over the real trades, never copied from a run.
"""

from __future__ import annotations

import csv
import json
import math
import zipfile
from collections import Counter
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import msgspec
import pandas as pd
import pytest

from core.events import BookSnapshot, DepthUpdate, ErrorRecord, Kline, Level, Quote, RawChunk, Trade
from harness.realdata import (
    aggregate_trades,
    dec8,
    lines,
    messages,
    minute_klines,
    payload,
    recv_ns,
    stream_kind,
    trade_dicts,
)
from sources.binance import parse_chunk, parse_ws
from sources.files import group_streams, read_stream
from sources.symbols import valid_symbol

MS = 1_000_000

ALL_FILES = [
    "spot/btcusdt_20230405.dat.gz",
    "spot/btcusdt_20240808.gz",
    "spot/btcusdt_20240809.gz",
    "spot/ethusdt_20240808.gz",
    "spot/ethusdt_20240809.gz",
    "usdm/btcusdt_20230404.dat.gz",
    "usdm/btcusdt_20230405.dat.gz",
]

# The "trades" column of the data README.
README_TRADES = {
    "spot/btcusdt_20230405.dat.gz": 3144,
    "spot/btcusdt_20240808.gz": 9757,
    "spot/btcusdt_20240809.gz": 10147,
    "usdm/btcusdt_20230404.dat.gz": 2197,
    "usdm/btcusdt_20230405.dat.gz": 10738,
}


def market_of(rel: str) -> str:
    return "usdm" if rel.startswith("usdm/") else "spot"


def key_of(symbol: str, market: str) -> str:
    return symbol if market == "spot" else symbol + "-PERP"


def expected(ts: int, msg: dict, market: str):
    """What parse_ws must return for one message, built from the JSON."""
    kind = stream_kind(msg)
    if kind == "snapshot":
        return "depth_snapshot"
    if kind == "markPrice":
        return "markPrice"
    d = msg["data"]
    key = key_of(d["s"], market)
    if kind == "trade":
        if d.get("X", "MARKET") != "MARKET":
            return "non_market_trade"
        return Trade(key, ts, d["T"] * MS, float(d["p"]), float(d["q"]), d["m"], d["t"])
    if kind == "bookTicker":
        exch = d["E"] * MS if market == "usdm" else None
        return Quote(key, ts, exch, float(d["b"]), float(d["B"]), float(d["a"]), float(d["A"]), d["u"])
    if kind == "depth":
        exch = d.get("T", d["E"]) * MS  # the matching engine's time where the diff has it (futures)
        return norm(DepthUpdate(key, ts, exch, d["U"], d["u"], d["pu"] if market == "usdm" else -1,
                                tuple(Level(float(p), float(q)) for p, q in d["b"]),
                                tuple(Level(float(p), float(q)) for p, q in d["a"])))
    raise AssertionError(f"unexpected stream {msg.get('stream')}")


def pairs(levels) -> tuple[tuple[float, float], ...]:
    """Depth levels as (price, qty) pairs, whatever their record type."""
    return tuple((lv.price, lv.qty) if hasattr(lv, "price") else tuple(lv) for lv in levels)


def norm(ev):
    """Depth updates and snapshots with their levels as plain pairs, for comparison."""
    if type(ev) is DepthUpdate or type(ev) is BookSnapshot:
        return msgspec.structs.replace(ev, bids=pairs(ev.bids), asks=pairs(ev.asks))
    return ev


def snapshot_of(ts: int, msg: dict, key: str) -> BookSnapshot:
    """The book a REST snapshot line starts, built from the JSON: the recording's instrument's (normalized)."""
    e = msg.get("T", msg.get("E"))  # the matching engine's time, else the event time, where it has them
    return norm(BookSnapshot(key, ts, msg["lastUpdateId"], tuple(Level(float(p), float(q)) for p, q in msg["bids"]),
                             tuple(Level(float(p), float(q)) for p, q in msg["asks"]), None if e is None else e * MS))


def parsed(ws_dir: Path, rel: str) -> list:
    m = market_of(rel)
    return [norm(parse_ws(ts, pl, m)) for ts, pl, _ in messages(ws_dir / rel)]


# --- websocket recordings -----------------------------------------------------

@pytest.mark.integration  # slow: every line of every recording, about 10 s
@pytest.mark.parametrize("rel", ALL_FILES)
def test_every_recorded_line_parses_to_the_hand_built_event(ws_dir, rel):
    market = market_of(rel)
    msgs = messages(ws_dir / rel)
    want = [expected(ts, m, market) for ts, _, m in msgs]
    got = parsed(ws_dir, rel)
    bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not bad, bad[:3]
    assert len(got) == len(lines(ws_dir / rel))

    # The same through parse_chunk on the raw lines: events grouped by key in
    # input order, skips counted by reason, no dead letters on real data.
    sym = Path(rel).name.split("_")[0].upper()
    by_key, errors, counts = parse_chunk(RawChunk("ws", market, sym, list(lines(ws_dir / rel))))
    key = key_of(sym, market)  # a REST snapshot line is the start of the recording's instrument's book
    events = [snapshot_of(ts, m, key) if w == "depth_snapshot" else w
              for (ts, _, m), w in zip(msgs, want, strict=True) if not isinstance(w, str) or w == "depth_snapshot"]
    skips = Counter(w for w in want if isinstance(w, str) and w != "depth_snapshot")
    assert errors == []
    assert list(by_key) == [key_of(sym, market)]
    assert [norm(e) for e in by_key[key_of(sym, market)]] == events
    assert counts == {"input_records": len(lines(ws_dir / rel)), "ticks": len(events),
                      **{f"skipped_{k}": v for k, v in sorted(skips.items())}}


@pytest.mark.parametrize("rel,n", README_TRADES.items())
def test_trade_counts_match_the_data_readme(ws_dir, rel, n):
    raw = [ln for ln in lines(ws_dir / rel) if b'@trade"' in ln[:60]]
    assert len(raw) == n
    out = [parse_ws(recv_ns(ln), payload(ln), market_of(rel)) for ln in raw]
    trades = [t for t in out if type(t) is Trade]
    rejected = [(ln, t) for ln, t in zip(raw, out, strict=True) if type(t) is not Trade]
    if rel == "usdm/btcusdt_20230405.dat.gz":
        # exactly one non-market trade, the insurance-fund one, is dropped
        assert len(rejected) == 1
        ln, why = rejected[0]
        assert why == "non_market_trade" and b'"X":"INSURANCE_FUND"' in ln
    else:
        assert rejected == []
    assert len(trades) == n - len(rejected)
    # README: trade ids are consecutive within each file
    ids = sorted([t.trade_id for t in trades] + [json.loads(payload(ln))["data"]["t"] for ln, _ in rejected])
    assert ids == list(range(ids[0], ids[0] + n))


def test_insurance_fund_trade_is_the_only_non_market_trade(ws_dir):
    rel = "usdm/btcusdt_20230405.dat.gz"
    data = trade_dicts(ws_dir / rel, market_only=False)
    assert Counter(d["X"] for d in data) == {"MARKET": README_TRADES[rel] - 1, "INSURANCE_FUND": 1}
    by_key, errors, counts = parse_chunk(RawChunk("ws", "usdm", "BTCUSDT", list(lines(ws_dir / rel))))
    assert errors == [] and counts["skipped_non_market_trade"] == 1
    kept = [e.trade_id for e in by_key["BTCUSDT-PERP"] if type(e) is Trade]
    assert kept == [d["t"] for d in data if d["X"] == "MARKET"]
    fund = next(d for d in data if d["X"] == "INSURANCE_FUND")
    assert fund["t"] not in kept


@pytest.mark.parametrize("rel", ["spot/btcusdt_20230405.dat.gz", "spot/ethusdt_20240809.gz"])
def test_spot_book_ticker_has_no_exchange_time(ws_dir, rel):
    msgs = [(ts, pl, m) for ts, pl, m in messages(ws_dir / rel) if stream_kind(m) == "bookTicker"]
    assert msgs and all("E" not in m["data"] and "T" not in m["data"] for _, _, m in msgs)
    quotes = [parse_ws(ts, pl, "spot") for ts, pl, _ in msgs]
    assert all(type(q) is Quote and q.ts_event is None for q in quotes)
    assert [q.ts_recv for q in quotes] == [ts for ts, _, _ in msgs]  # only the receive clock
    assert [q.update_id for q in quotes] == [m["data"]["u"] for _, _, m in msgs]
    assert all(q.bid < q.ask for q in quotes)


def test_usdm_book_ticker_keeps_the_event_time(ws_dir):
    msgs = [(ts, pl, m) for ts, pl, m in messages(ws_dir / "usdm/btcusdt_20230404.dat.gz")
            if stream_kind(m) == "bookTicker"]
    quotes = [parse_ws(ts, pl, "usdm") for ts, pl, _ in msgs]
    assert [q.ts_event for q in quotes] == [m["data"]["E"] * MS for _, _, m in msgs]
    assert all(q.instrument == "BTCUSDT-PERP" for q in quotes)
    # µs receive stamps normalized to ns land within a second of exchange time
    assert all(abs(q.ts_recv - q.ts_event) < 1_000 * MS for q in quotes)


@pytest.mark.parametrize("rel", ["spot/btcusdt_20240808.gz", "spot/ethusdt_20240809.gz",
                                 "usdm/btcusdt_20230404.dat.gz", "usdm/btcusdt_20230405.dat.gz"])
def test_depth_updates_chain_their_ids(ws_dir, rel):
    deps = [e for e in parsed(ws_dir, rel) if type(e) is DepthUpdate]
    assert len(deps) > 1000
    if market_of(rel) == "spot":
        assert all(d.prev_last_id == -1 for d in deps)
        assert all(b.first_id == a.last_id + 1 for a, b in pairwise(deps))
    else:
        assert all(b.prev_last_id == a.last_id for a, b in pairwise(deps))
    # levels with quantity 0 (removals) are kept, not rejected
    levels = [lv for d in deps for lv in pairs(d.bids + d.asks)]
    assert any(q == 0.0 for _, q in levels)
    assert all(p > 0.0 and q >= 0.0 for p, q in levels)


@pytest.mark.parametrize("rel", ["usdm/btcusdt_20230404.dat.gz", "usdm/btcusdt_20230405.dat.gz"])
def test_mark_price_is_counted_as_skipped(ws_dir, rel):
    msgs = messages(ws_dir / rel)
    marks = [(ts, pl) for ts, pl, m in msgs if stream_kind(m) == "markPrice"]
    assert marks
    assert all(parse_ws(ts, pl, "usdm") == "markPrice" for ts, pl in marks)
    _, errors, counts = parse_chunk(RawChunk("ws", "usdm", "BTCUSDT", list(lines(ws_dir / rel))))
    assert errors == [] and counts["skipped_markPrice"] == len(marks)


def test_rest_depth_snapshot_lines_are_skipped(ws_dir):
    seen = 0
    for rel in ALL_FILES:
        for ts, pl, m in messages(ws_dir / rel):
            if stream_kind(m) == "snapshot":
                seen += 1
                assert parse_ws(ts, pl, market_of(rel)) == "depth_snapshot"
    assert seen == 3  # spot btc/eth 20240808 and usdm 20230404 start with one


# --- aggTrade and kline messages, built from real trades ---------------------

AGG_SOURCES = [("spot/btcusdt_20240808.gz", "spot"), ("usdm/btcusdt_20230405.dat.gz", "usdm")]


@pytest.mark.parametrize("rel,market", AGG_SOURCES)
def test_agg_trade_messages_from_real_trades(ws_dir, rel, market):
    trades = trade_dicts(ws_dir / rel)
    groups = aggregate_trades(trades)
    assert len(groups) < len(trades)  # some real trades do aggregate
    recs, want = [], []
    t_recv = 1_723_161_300_000_000_000
    for a, g in enumerate(groups, start=5_000_000):
        first, last = g[0], g[-1]
        qty = sum(Decimal(d["q"]) for d in g)
        data = {"e": "aggTrade", "E": last["E"], "s": last["s"], "a": a, "p": last["p"], "q": str(qty),
                "f": first["t"], "l": last["t"], "T": last["T"], "m": last["m"]}
        if market == "spot":
            data["M"] = True
        msg = json.dumps({"stream": f"{last['s'].lower()}@aggTrade", "data": data}, separators=(",", ":"))
        ts = t_recv + a
        recs.append(f"{ts} {msg}".encode())
        want.append(Trade(key_of(last["s"], market), ts, last["T"] * MS, float(last["p"]), float(qty),
                          last["m"], a, agg=True))
    assert sum(Decimal(d["q"]) for d in trades) == sum(Decimal(d["q"]) for g in groups for d in g)
    by_key, errors, counts = parse_chunk(RawChunk("ws", market, "BTCUSDT", recs))
    assert errors == [] and counts == {"input_records": len(recs), "ticks": len(groups)}
    assert by_key == {key_of("BTCUSDT", market): want}
    # the aggregated volume is the traded volume
    assert math.isclose(sum(t.qty for t in want), sum(float(d["q"]) for d in trades), rel_tol=1e-9)


def kline_message(k: dict, closed: bool = True) -> str:
    body = {"t": k["t"], "T": k["T"], "s": k["s"], "i": "1m", "f": k["f"], "L": k["L"],
            "o": k["o"], "c": k["c"], "h": k["h"], "l": k["l"], "v": k["v"], "n": k["n"],
            "x": closed, "q": k["q"], "V": k["V"], "Q": k["Q"], "B": "0"}
    data = {"e": "kline", "E": k["E_last"] + 1, "s": k["s"], "k": body}
    return json.dumps({"stream": f"{k['s'].lower()}@kline_1m", "data": data}, separators=(",", ":"))


def kline_from_dict(key: str, ts: int, k: dict) -> Kline:
    return Kline(key, ts, k["t"] * MS, (k["T"] + 1) * MS, float(k["o"]), float(k["h"]), float(k["l"]),
                 float(k["c"]), float(k["v"]), float(k["q"]), k["n"], float(k["V"]), True)


@pytest.mark.parametrize("rel,market", AGG_SOURCES)
def test_kline_messages_from_real_trades(ws_dir, rel, market):
    trades = trade_dicts(ws_dir / rel)
    klines = minute_klines(trades)
    assert len(klines) >= 4
    key = key_of("BTCUSDT", market)
    recs, want = [], []
    for i, k in enumerate(klines):
        ts = (k["T"] + 1) * MS + 1_000 + i
        recs.append(f"{ts} {kline_message(k)}".encode())
        want.append(kline_from_dict(key, ts, k))
        # an unfinished candle of the same minute is skipped, not used
        recs.append(f"{ts} {kline_message(k, closed=False)}".encode())
    by_key, errors, counts = parse_chunk(RawChunk("ws", market, "BTCUSDT", recs))
    assert errors == []
    assert counts == {"input_records": len(recs), "ticks": len(klines), "skipped_open_kline": len(klines)}
    assert by_key == {key: want}
    # independent float check of one candle against the raw trades
    k = by_key[key][1]
    inside = [d for d in trades if k.ts_open <= d["T"] * MS < k.ts_close]
    assert k.ts_close - k.ts_open == 60_000 * MS
    assert (k.open, k.close) == (float(inside[0]["p"]), float(inside[-1]["p"]))
    assert (k.high, k.low) == (max(float(d["p"]) for d in inside), min(float(d["p"]) for d in inside))
    assert k.trades == len(inside)
    assert math.isclose(k.volume, sum(float(d["q"]) for d in inside), rel_tol=1e-12)
    assert math.isclose(k.taker_buy_volume, sum(float(d["q"]) for d in inside if not d["m"]), rel_tol=1e-12)


def test_kline_message_with_inconsistent_high_is_dead_lettered(ws_dir):
    k = dict(minute_klines(trade_dicts(ws_dir / "spot/btcusdt_20240808.gz"))[0])
    k["h"] = dec8(Decimal(k["l"]) - Decimal("1"))  # high below low
    msg = kline_message(k)
    r = parse_ws(1_723_161_400_000_000_000, msg.encode(), "spot")
    assert type(r) is ErrorRecord and r.reason == "inconsistent high/low" and r.raw == msg


# --- Binance public-data CSV archives ------------------------------------------

def trade_rows(trades: list[dict], unit: str, futures: bool = False) -> list[list[str]]:
    mult = 1 if unit == "ms" else 1000
    rows = []
    for d in trades:
        quote = dec8(Decimal(d["p"]) * Decimal(d["q"]))
        row = [str(d["t"]), d["p"], d["q"], quote, str(d["T"] * mult), str(d["m"])]
        rows.append(row if futures else row + ["True"])
    return rows


def write_archive(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    """A Binance CSV, or a .zip holding one CSV of the same name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    csv_path = path.with_suffix(".csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if header:
            w.writerow(header)
        w.writerows(rows)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(csv_path, csv_path.name)
        csv_path.unlink()
    return path


def read_all(paths: list[Path]) -> tuple[list, dict, list, dict]:
    specs = group_streams([str(p) for p in paths])
    assert len(specs) == 1, specs
    s = specs[0]
    recs = [r for b in read_stream(s) for r in b]
    by_key, errors, counts = parse_chunk(RawChunk(s.fmt, s.market, s.symbol, recs, s.interval_ns))
    assert counts.pop("input_records") == len(recs)
    return recs, by_key, errors, {"spec": s, **counts}


@pytest.mark.parametrize("suffix", [".csv", ".zip"])
@pytest.mark.parametrize("unit", ["ms", "us"])
def test_trades_archive(tmp_path, ws_dir, suffix, unit):
    trades = trade_dicts(ws_dir / "spot/btcusdt_20240808.gz")
    rows = trade_rows(trades, unit)
    path = write_archive(tmp_path / "spot" / f"BTCUSDT-trades-2024-08-08{suffix}", rows)
    recs, by_key, errors, counts = read_all([path])
    spec = counts.pop("spec")
    assert (spec.fmt, spec.market, spec.symbol) == ("trades", "spot", "BTCUSDT")
    assert recs == rows
    assert errors == [] and counts == {"ticks": len(trades)}
    # no receive clock in archives: ts is the trade time, in ns for ms and µs alike
    assert by_key == {"BTCUSDT": [Trade("BTCUSDT", d["T"] * MS, d["T"] * MS, float(d["p"]), float(d["q"]),
                                        d["m"], d["t"]) for d in trades]}


def test_trades_archives_of_two_days_merge_into_one_stream(tmp_path, ws_dir):
    days = [trade_dicts(ws_dir / "spot/btcusdt_20240808.gz"), trade_dicts(ws_dir / "spot/btcusdt_20240809.gz")]
    # written in reverse so that directory order is not what orders them
    p2 = write_archive(tmp_path / "BTCUSDT-trades-2024-08-09.zip", trade_rows(days[1], "us"))
    p1 = write_archive(tmp_path / "BTCUSDT-trades-2024-08-08.zip", trade_rows(days[0], "ms"))
    _, by_key, errors, counts = read_all([p2, p1])
    trades = by_key["BTCUSDT"]
    assert errors == [] and counts["ticks"] == len(days[0]) + len(days[1])
    ids = [t.trade_id for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # README: ids continue across the pair
    assert all(a.ts_recv <= b.ts_recv for a, b in pairwise(trades))


def test_futures_trades_archive_with_header(tmp_path, ws_dir):
    trades = trade_dicts(ws_dir / "usdm/btcusdt_20230405.dat.gz")
    path = write_archive(tmp_path / "futures" / "um" / "daily" / "trades" / "BTCUSDT-trades-2023-04-05.zip",
                         trade_rows(trades, "ms", futures=True),
                         header=["id", "price", "qty", "quote_qty", "time", "is_buyer_maker"])
    _, by_key, errors, counts = read_all([path])
    spec = counts.pop("spec")
    assert (spec.fmt, spec.market) == ("trades", "usdm")
    assert errors == [] and counts == {"ticks": len(trades), "skipped_header": 1}
    assert by_key == {"BTCUSDT-PERP": [Trade("BTCUSDT-PERP", d["T"] * MS, d["T"] * MS, float(d["p"]),
                                             float(d["q"]), d["m"], d["t"]) for d in trades]}


@pytest.mark.parametrize("unit", ["ms", "us"])
def test_agg_trades_archive(tmp_path, ws_dir, unit):
    groups = aggregate_trades(trade_dicts(ws_dir / "spot/btcusdt_20240809.gz"))
    mult = 1 if unit == "ms" else 1000
    rows, want = [], []
    for a, g in enumerate(groups, start=100):
        qty = sum(Decimal(d["q"]) for d in g)
        last = g[-1]
        rows.append([str(a), last["p"], dec8(qty), str(g[0]["t"]), str(last["t"]), str(last["T"] * mult),
                     str(last["m"]), "True"])
        want.append(Trade("BTCUSDT", last["T"] * MS, last["T"] * MS, float(last["p"]), float(qty), last["m"], a,
                          agg=True))
    path = write_archive(tmp_path / "BTCUSDT-aggTrades-2024-08-09.csv", rows)
    _, by_key, errors, counts = read_all([path])
    assert counts.pop("spec").fmt == "aggTrades"
    assert errors == [] and counts == {"ticks": len(groups)}
    assert by_key == {"BTCUSDT": want}


KLINE_HEADER = ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
                "taker_buy_volume", "taker_buy_quote_volume", "ignore"]


@pytest.mark.parametrize("unit,header", [("ms", False), ("us", False), ("ms", True)])
def test_klines_archive(tmp_path, ws_dir, unit, header):
    trades = (trade_dicts(ws_dir / "spot/btcusdt_20240808.gz") + trade_dicts(ws_dir / "spot/btcusdt_20240809.gz"))
    klines = minute_klines(trades)
    assert len(klines) >= 9  # the pair covers about 11 minutes
    mult = 1 if unit == "ms" else 1000
    rows = [[str(k["t"] * mult), k["o"], k["h"], k["l"], k["c"], k["v"],
             str(k["t"] * mult + 60_000 * mult - 1), k["q"], str(k["n"]), k["V"], k["Q"], "0"] for k in klines]
    path = write_archive(tmp_path / "BTCUSDT-1m-2024-08-08.zip", rows, KLINE_HEADER if header else None)
    _, by_key, errors, counts = read_all([path])
    spec = counts.pop("spec")
    assert (spec.fmt, spec.interval_ns) == ("klines", 60_000 * MS)
    assert errors == [] and counts == ({"ticks": len(klines)} | ({"skipped_header": 1} if header else {}))
    # an archive kline becomes known at its close
    assert by_key == {"BTCUSDT": [kline_from_dict("BTCUSDT", (k["T"] + 1) * MS, k) for k in klines]}
    # and agrees with the websocket kline of the same minute, except the receive time
    ws = parse_ws(1, kline_message(klines[3]).encode(), "spot")
    assert msgspec.structs.replace(ws, ts_recv=0) == msgspec.structs.replace(by_key["BTCUSDT"][3], ts_recv=0)


# --- Feather klines ---------------------------------------------------------------

def test_feather_klines_match_pandas(klines_dir):
    path = klines_dir / "BTC_USDT-15m.feather"
    df = pd.read_feather(path)
    recs, by_key, errors, counts = read_all([path])
    spec = counts.pop("spec")
    iv = 15 * 60 * 10**9
    assert (spec.fmt, spec.symbol, spec.interval_ns) == ("kline_rows", "BTCUSDT", iv)
    assert errors == [] and counts == {"ticks": len(df)}
    ks = by_key["BTCUSDT"]
    opens = [ts.value for ts in df["date"].dt.as_unit("ns")]
    assert [k.ts_open for k in ks] == opens
    assert all(k.ts_close == k.ts_open + iv == k.ts_recv for k in ks)
    for col in ("open", "high", "low", "close", "volume"):
        assert [getattr(k, col) for k in ks] == df[col].tolist(), col
    assert all(k.closed and k.instrument == "BTCUSDT" for k in ks)
    assert len(recs) == len(df)


# --- hostile input (issue 15) --------------------------------------------------


def test_whitespace_json_is_read_like_compact_json(ws_dir):
    """Item 7: the tester's 15,088 lines written as Python's json.dumps writes
    them (", " and ": ") parse to the same events as the compact originals,
    from a recording line and from a Kafka tick."""
    from sources.wire import encode_tick

    rel = "spot/btcusdt_20230405.dat.gz"
    real = list(lines(ws_dir / rel))
    spaced = [b"%s %s" % (ln.split(b" ", 1)[0], json.dumps(json.loads(payload(ln))).encode()) for ln in real]
    assert len(spaced) == 15_088 and all(b'"stream": "' in ln for ln in spaced)
    want = parse_chunk(RawChunk("ws", "spot", "BTCUSDT", real))
    assert parse_chunk(RawChunk("ws", "spot", "BTCUSDT", spaced)) == want
    ticks = [encode_tick(recv_ns(ln), "spot", payload(ln)) for ln in spaced]
    by_key, errors, counts = parse_chunk(RawChunk("kafka", "", "", ticks))
    assert (by_key, errors, counts) == want and counts["ticks"] == 15_088


def test_invalid_symbols_never_become_instruments(ws_dir):
    """Item 5: the tester's symbols ("", a NUL, a right-to-left override) and
    others Binance does not list are dead-lettered with the reason, so are
    messages whose data names another symbol than their stream; the real
    symbols are valid."""
    rel = "spot/btcusdt_20240808.gz"
    line = next(ln for ln in lines(ws_dir / rel) if b'@trade"' in ln[:60])
    ts, msg = recv_ns(line), json.loads(payload(line))
    for sym in ("", "\x00BTCUSDT", "BTC\u202eUSDT", "\u202eTDSUCTB", "btcusdt", "BTC-PERP", "B", "X" * 21,
                "\u0412\u0422\u0421USDT", "BTC USDT"):
        m = json.loads(json.dumps(msg))
        m["stream"], m["data"]["s"] = sym.lower() + "@trade", sym
        r = parse_ws(ts, json.dumps(m).encode(), "spot")
        assert type(r) is ErrorRecord and r.reason.startswith("invalid symbol"), (sym, r)
    m = json.loads(json.dumps(msg))
    m["data"]["s"] = "ETHUSDT"
    r = parse_ws(ts, json.dumps(m, separators=(",", ":")).encode(), "spot")
    assert r.reason == "symbol ETHUSDT does not match stream btcusdt@trade" and r.instrument == "BTCUSDT"
    for rel in ALL_FILES:
        syms = {m["data"]["s"] for _, _, m in messages(ws_dir / rel) if "data" in m}
        assert syms and all(valid_symbol(s) for s in syms)


def test_parse_dead_letters_name_the_instrument_of_their_stream(ws_dir):
    """Item 10: a broken line still names its instrument (spot and USD-M)
    wherever its stream name gives one; garbage names none."""
    for rel, key in (("spot/btcusdt_20240808.gz", "BTCUSDT"), ("usdm/btcusdt_20230404.dat.gz", "BTCUSDT-PERP")):
        real = [ln for ln in lines(ws_dir / rel)[:3000] if b'"stream"' in ln[:40]]
        broken = [ln[: len(ln) // 2] for ln in real] + [payload(ln) for ln in real[:50]]  # cut; no receive time
        _, errors, counts = parse_chunk(RawChunk("ws", market_of(rel), "BTCUSDT", broken))
        assert len(errors) == len(broken) == counts["parse_errors"]
        assert {e.instrument for e in errors} == {key}
    _, errors, _ = parse_chunk(RawChunk("ws", "spot", "BTCUSDT", [b"1723161254087891268 garbage", b"\x00\xff"]))
    assert [e.instrument for e in errors] == ["", ""]


def test_a_64_mb_line_is_read_in_bounded_memory_and_dead_lettered_with_its_head(ws_dir, tmp_path):
    """Item 6: a 64 MB line between real lines is never held whole by the
    reader (its peak is the 1 MiB limit plus the 512 KiB block being split,
    twice), and becomes one dead letter with its first 1 KiB,
    its size, its receive time and its instrument; the lines around it are
    read as they are."""
    import gzip
    import tracemalloc

    from sources.binance import LONG_LINE_HEAD, MAX_LINE_BYTES, LongLine
    from sources.files import _ws_blocks

    real = list(lines(ws_dir / "spot/btcusdt_20240808.gz")[:2000])
    ts = recv_ns(real[999])
    body = b'{"stream":"btcusdt@trade","data":' + b"x" * (64 << 20)
    path = tmp_path / "spot" / "btcusdt_20240808.gz"
    path.parent.mkdir()
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b"\n".join(real[:1000]) + b"\n%d " % ts + body + b"\n" + b"\n".join(real[1000:]) + b"\n")
    tracemalloc.start()
    try:
        got = [ln for block in _ws_blocks(str(path)) for ln in block]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * MAX_LINE_BYTES, peak  # measured: 2.5 MiB
    assert got[:1000] == real[:1000] and got[1001:] == real[1000:]
    long = got[1000]
    assert type(long) is LongLine and long.size == 20 + len(body) and len(long) == LONG_LINE_HEAD
    _, errors, counts = parse_chunk(RawChunk("ws", "spot", "BTCUSDT", [long]))
    (e,) = errors
    assert (e.stage, e.ts_recv, e.instrument, e.raw_size) == ("read_ticks", ts, "BTCUSDT", len(body))
    assert e.reason == (f"line too long: {len(body)} bytes, more than the {MAX_LINE_BYTES} allowed "
                        "(TICKLET_INPUT__MAX_LINE_BYTES)")
    assert e.raw_bytes() == body[: LONG_LINE_HEAD - 20] and counts["parse_errors"] == 1
    # a Kafka message over the limit: the same, from the message itself
    from sources.wire import encode_tick

    tick = encode_tick(ts, "spot", body[:3 << 20])
    _, (k,), _ = parse_chunk(RawChunk("kafka", "", "", [tick]))
    assert (k.stage, k.ts_recv, k.instrument, k.raw_size) == ("read_ticks", ts, "BTCUSDT", len(tick))
    assert k.raw_bytes() == tick[:LONG_LINE_HEAD] and k.reason.startswith("message too long")
    # ... and amid real messages of the same batch, which are parsed as they are (the other
    # messages of such a batch used to be parsed with the wrong call: a TypeError, exit 1)
    near = [encode_tick(recv_ns(ln), "spot", ln[ln.index(b" ") + 1 :]) for ln in real[990:1010]]
    alone, _, _ = parse_chunk(RawChunk("kafka", "", "", near))
    by_key, (k2,), counts = parse_chunk(RawChunk("kafka", "", "", near[:10] + [tick] + near[10:]))
    assert by_key["BTCUSDT"] == alone["BTCUSDT"] and len(alone["BTCUSDT"]) == 20
    assert k2.reason == k.reason and counts["input_records"] == 21 and counts["parse_errors"] == 1


@pytest.mark.parametrize("suffix", [".csv", ".zip"])
def test_an_archive_with_bytes_that_are_not_utf8_and_a_huge_field_is_dead_lettered_not_a_crash(tmp_path, ws_dir,
                                                                                                suffix):
    """The CSV reader used to raise on a byte that is not UTF-8 or a field
    over the csv module's limit, stopping the dataflow: each is now a dead
    letter (the bytes exactly), and every other row reads as before."""
    trades = trade_dicts(ws_dir / "spot/btcusdt_20240808.gz")
    text = "\n".join(",".join(r) for r in trade_rows(trades, "ms")).encode() + b"\n"
    lines_ = text.split(b"\n")
    bad_utf8 = lines_[100].replace(b".", b"\xff.", 1)
    lines_[100] = bad_utf8
    lines_[200] = lines_[200] + b"," + b"9" * 200_000
    path = tmp_path / f"BTCUSDT-trades-2024-08-08{suffix}"
    csv_path = path.with_suffix(".csv")
    csv_path.write_bytes(b"\n".join(lines_))
    if suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(csv_path, csv_path.name)
        csv_path.unlink()
    recs, by_key, errors, counts = read_all([path])
    assert len(recs) == len(trades) and counts["ticks"] == len(trades) - 2 and counts["parse_errors"] == 2
    first, second = errors
    assert first.raw_bytes() == bad_utf8 and first.raw_base64 and first.reason.startswith("bad trades row: could not")
    assert second.reason == "bad trades row: field larger than field limit (131072)"
    assert [t.trade_id for t in by_key["BTCUSDT"]] == [d["t"] for i, d in enumerate(trades) if i not in (100, 200)]


def test_one_stream_symbol_names_kafka_keys_and_dead_letters_alike(ws_dir):
    """Issue 24: one ``stream_symbol`` (sources/wire.py). On every message of
    a real recording it gives the instrument the parser decodes, compact as
    recorded and re-encoded with spaces and the data first; where a message
    names two streams, a spaced one first and a compact one inside its data,
    it gives the first, which is also the instrument of the message's dead
    letter (the Kafka key ``ticklet publish`` gives it came from another
    function, which read the second)."""
    import sources.symbols
    from sources.wire import stream_symbol

    assert not hasattr(sources.symbols, "stream_symbol")
    n = 0
    for ln in lines(ws_dir / "spot" / "btcusdt_20240808.gz")[:5000]:
        msg = payload(ln)
        ev = parse_ws(recv_ns(ln), msg, "spot")
        if type(ev) is str:  # a REST snapshot: no stream
            assert stream_symbol(msg) is None
            continue
        d = json.loads(msg)
        data_first = json.dumps({"data": d["data"], "stream": d["stream"]}).encode()
        assert stream_symbol(msg) == stream_symbol(data_first) == ev.instrument == "BTCUSDT"
        n += 1
    assert n > 4000
    two = b'{"stream": "ethusdt@trade", "data": {"stream":"btcusdt@trade"}}'
    letter = parse_ws(1, two, "spot")
    assert type(letter) is ErrorRecord and letter.instrument == stream_symbol(two) == "ETHUSDT"


def test_a_chunk_s_parse_goes_down_one_path():
    """Issue 24: sources/binance.py decodes on top of sources/wire.py (heads
    and fields read from the bytes), on top of sources/symbols.py (the symbol
    tables), and beside them the chunk path's compiled scanner
    (sources/columns.py, issue 28), which imports no other source module;
    none imports a module above it (imports inside functions included), and
    the live collector's module is beside the path, not on it."""
    import ast

    from harness.realdata import REPO

    def imports(name: str) -> set[str]:
        tree = ast.parse((REPO / "sources" / f"{name}.py").read_text())
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} if node.module != "sources" else {f"sources.{a.name}" for a in node.names}
        return {m for m in found if m.split(".")[0] == "sources"}

    assert imports("symbols") == set()
    assert imports("wire") == {"sources.symbols"}
    assert imports("columns") == set()
    assert imports("binance") == {"sources.symbols", "sources.wire", "sources.columns"}
    assert imports("binance_live") == {"sources.wire"}

"""Inputs are recognized by their content (``sources.files.describe``), on
real recordings copied under names and into folders that say nothing, or the
wrong thing, about them.

Expected markets and symbols come from the data README (which folder each
recording was published in) and from the real messages read with the stdlib,
never from a run of the code under test.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import zipfile
from decimal import Decimal
from pathlib import Path

import pytest

from core.events import RawChunk
from harness.realdata import aggregate_trades, dec8, lines, trade_dicts
from sources.binance import parse_chunk
from sources.files import InputFormatError, describe, discover, group_streams, read_stream

SPOT = "spot/btcusdt_20240808.gz"
USDM = "usdm/btcusdt_20230404.dat.gz"
ETH = "spot/ethusdt_20240808.gz"


def copy(src: Path, dst: Path, inflate: bool = False) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if inflate:
        with gzip.open(src, "rb") as f:
            dst.write_bytes(f.read())
    else:
        shutil.copyfile(src, dst)
    return dst


def read_all(paths: list[Path], market: str | None = None) -> tuple[list[str], list[bytes]]:
    """(stream names, the records of the first stream)."""
    specs = group_streams([str(p) for p in paths], market)
    return [s.name for s in specs], [r for block in read_stream(specs[0]) for r in block]


def write_plain(path: Path, rows: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(r + b"\n" for r in rows))
    return path


# --- websocket recordings, whatever their name ------------------------------------

@pytest.mark.parametrize("inflate", [False, True], ids=["gzip", "plain"])
def test_recording_without_suffix_is_read(ws_dir, tmp_path, inflate):
    path = copy(ws_dir / SPOT, tmp_path / "btcusdt_20240718", inflate)
    s = describe(path)
    assert (s.fmt, s.market, s.symbol) == ("ws", "spot", "BTCUSDT")
    names, recs = read_all([path])
    assert names == ["ws:spot:BTCUSDT"]
    assert recs == list(lines(ws_dir / SPOT))


@pytest.mark.parametrize("folder", ["spot", "data"])
def test_usdm_recording_market_comes_from_its_messages(ws_dir, tmp_path, folder):
    path = copy(ws_dir / USDM, tmp_path / folder / "btcusdt_20230404.dat.gz")
    assert describe(path).market == "usdm"
    names, recs = read_all([tmp_path / folder])
    assert names == ["ws:usdm:BTCUSDT"]
    by_key, errors, _ = parse_chunk(RawChunk("ws", "usdm", "BTCUSDT", recs[:4096]))
    assert list(by_key) == ["BTCUSDT-PERP"] and not errors
    # the setting still wins
    assert describe(path, market="spot").market == "spot"
    assert read_all([tmp_path / folder], market="spot")[0] == ["ws:spot:BTCUSDT"]


@pytest.mark.parametrize("rel", [SPOT, ETH])
def test_spot_recording_in_a_usdm_folder_is_spot(ws_dir, tmp_path, rel):
    """The ETH file's first 64 KiB hold no trade, only bookTicker and depth
    messages (and a REST snapshot): spot by the futures fields they lack."""
    path = copy(ws_dir / rel, tmp_path / "usdm" / Path(rel).name)
    assert describe(path).market == "spot"


def test_symbol_comes_from_the_stream_names(ws_dir, tmp_path):
    eth = copy(ws_dir / ETH, tmp_path / "in" / "foo.gz")
    btc = copy(ws_dir / SPOT, tmp_path / "in" / "ethusdt_bar.gz")  # a misleading name
    assert (describe(eth).symbol, describe(btc).symbol) == ("ETHUSDT", "BTCUSDT")
    specs = group_streams([tmp_path / "in"])
    assert [(s.name, s.files) for s in specs] == [("ws:spot:BTCUSDT", (str(btc),)), ("ws:spot:ETHUSDT", (str(eth),))]


def test_recording_starting_with_a_rest_snapshot(ws_dir, tmp_path):
    """usdm/btcusdt_20230404 has its REST depth snapshot on line 17; spot ETH
    2024-08-08 on line 6. Files cut to start there begin with the snapshot."""
    usdm = lines(ws_dir / USDM)
    i = next(i for i, ln in enumerate(usdm) if b'"lastUpdateId"' in ln)
    path = write_plain(tmp_path / "data" / "book", list(usdm[i:]))
    assert (describe(path).fmt, describe(path).market, describe(path).symbol) == ("ws", "usdm", "BTCUSDT")
    # the futures snapshot alone tells the market (it carries E and T)...
    only = write_plain(tmp_path / "data" / "snap.txt", [usdm[i]])
    assert (describe(only).fmt, describe(only).market) == ("ws", "usdm")
    # ...and the spot one, which lacks them, outweighs a folder name
    eth = lines(ws_dir / ETH)
    j = next(j for j, ln in enumerate(eth) if b'"lastUpdateId"' in ln)
    spot_only = write_plain(tmp_path / "futures" / "snap.txt", [eth[j]])
    assert (describe(spot_only).fmt, describe(spot_only).market) == ("ws", "spot")


def test_only_a_prefix_is_read(ws_dir, tmp_path):
    """What lies past the first 64 KiB is not looked at: a real recording
    followed by binary junk, and a gzip file cut short, are still recordings."""
    head = list(lines(ws_dir / USDM)[:2000])
    assert sum(len(ln) + 1 for ln in head) > 1 << 17
    plain = tmp_path / "data" / "rec"
    write_plain(plain, head)
    with open(plain, "ab") as f:
        f.write(bytes(range(256)) * 64)
    assert describe(plain).market == "usdm"
    cut = tmp_path / "data" / "cut.gz"
    cut.write_bytes((ws_dir / SPOT).read_bytes()[:30_000])
    assert (describe(cut).fmt, describe(cut).market, describe(cut).symbol) == ("ws", "spot", "BTCUSDT")


def test_messages_of_both_markets_go_by_the_majority(ws_dir, tmp_path, caplog):
    spot, usdm = lines(ws_dir / SPOT), lines(ws_dir / USDM)
    trade = [ln for ln in spot if b"@trade" in ln][:5]
    path = write_plain(tmp_path / "mixed", trade + list(usdm[:30]))
    with caplog.at_level(logging.WARNING, logger="sources.files"):
        assert describe(path).market == "usdm"
    assert "both markets" in caplog.text and str(path) in caplog.text


# --- files that are none of the known formats -----------------------------------

def bad_files(tmp_path: Path, klines_dir: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, what the message must say it found)."""
    d = tmp_path / "in"
    d.mkdir(parents=True, exist_ok=True)
    (d / "notes.txt").write_bytes(b"hello world\n" * 3)
    (d / "empty.gz").write_bytes(b"")
    with open(klines_dir / "BTC_USDT-1m.feather", "rb") as f:  # real bytes of a file under another name
        (d / "BTCUSDT.bin").write_bytes(f.read(4096))
    with gzip.open(d / "readme.gz", "wb") as f:
        f.write(b"\n\n" + b"x" * 500 + b"\n")
    return {
        "text": (d / "notes.txt", "(first line: b'hello world')"),
        "empty": (d / "empty.gz", "(empty file)"),
        "binary": (d / "BTCUSDT.bin", "(first bytes: b'ARROW1\\x00\\x00"),
        "gzip text": (d / "readme.gz", "(gzip, first line: b'" + "x" * 60 + "'...)"),
        "missing": (d / "btcusdt_20240101.gz", ": no such file"),
    }


@pytest.mark.parametrize("case", ["text", "empty", "binary", "gzip text", "missing"])
def test_unknown_file_given_explicitly_raises_one_line(tmp_path, klines_dir, case):
    path, found = bad_files(tmp_path, klines_dir)[case]
    with pytest.raises(InputFormatError) as ei:
        group_streams([str(path)])
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError) and ei.value.path == str(path)
    assert msg.startswith(f"{path}: ") and "\n" not in msg and found in msg, msg
    assert len(msg) < len(str(path)) + 160
    if case != "missing":
        assert "not a recording, Binance CSV/zip archive or Feather klines file" in msg


def test_unknown_files_in_a_directory_are_skipped(ws_dir, tmp_path, klines_dir, caplog):
    files = bad_files(tmp_path, klines_dir)
    rec = copy(ws_dir / ETH, tmp_path / "in" / "capture")
    with caplog.at_level(logging.DEBUG, logger="sources.files"):
        specs = group_streams([tmp_path / "in"])
    assert [(s.name, s.files) for s in specs] == [("ws:spot:ETHUSDT", (str(rec),))]
    assert discover([tmp_path / "in"]) == [str(rec)]
    skipped = [r for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert {r.levelno for r in skipped} == {logging.DEBUG}
    want = [(p, found) for k, (p, found) in files.items() if k != "missing"]
    assert len(skipped) == len(want)
    for p, found in want:  # one line each, naming the file and what was found
        (msg,) = [r.getMessage() for r in skipped if r.getMessage().startswith(f"skipped {p}: ")]
        assert found in msg


# --- Binance CSV archives: the columns tell the market ----------------------------

def trade_rows(trades: list[dict], futures: bool) -> list[list[str]]:
    """Binance's trades CSV rows: id, price, qty, quote_qty, time, is_buyer_maker[, is_best_match]."""
    rows = []
    for d in trades:
        row = [str(d["t"]), d["p"], d["q"], dec8(Decimal(d["p"]) * Decimal(d["q"])), str(d["T"]), str(d["m"])]
        rows.append(row if futures else row + [str(d["M"])])
    return rows


def agg_rows(trades: list[dict], futures: bool) -> list[list[str]]:
    """aggTrades rows: agg id, price, qty, first id, last id, time, is_buyer_maker[, is_best_match]."""
    rows = []
    for a, g in enumerate(aggregate_trades(trades), start=1):
        row = [str(a), g[-1]["p"], dec8(sum(Decimal(d["q"]) for d in g)), str(g[0]["t"]), str(g[-1]["t"]),
               str(g[-1]["T"]), str(g[-1]["m"])]
        rows.append(row if futures else row + ["True"])
    return rows


def write_archive(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    """A CSV, .csv.gz or a .zip holding one CSV, as Binance publishes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(",".join(r) + "\n" for r in ([header] if header else []) + rows).encode()
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(path.name[:-4] + ".csv", text)
    elif path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text))
    else:
        path.write_bytes(text)
    return path


@pytest.mark.parametrize("suffix", [".zip", ".csv", ".csv.gz"])
def test_trades_archive_market_from_its_columns(ws_dir, tmp_path, suffix):
    spot = trade_rows(trade_dicts(ws_dir / SPOT), futures=False)
    usdm = trade_rows(trade_dicts(ws_dir / USDM), futures=True)
    assert {len(r) for r in spot} == {7} and {len(r) for r in usdm} == {6}
    a = write_archive(tmp_path / "data" / "a" / f"BTCUSDT-trades-2024-08-08{suffix}", spot)
    b = write_archive(tmp_path / "data" / "b" / f"BTCUSDT-trades-2023-04-04{suffix}", usdm)
    assert [(describe(p).fmt, describe(p).market) for p in (a, b)] == [("trades", "spot"), ("trades", "usdm")]
    specs = group_streams([tmp_path / "data"])
    assert [(s.name, s.files) for s in specs] == [("trades:spot:BTCUSDT", (str(a),)),
                                                  ("trades:usdm:BTCUSDT", (str(b),))]
    assert [r for block in read_stream(specs[1]) for r in block] == usdm
    assert describe(b, market="spot").market == "spot"


def test_usdm_archives_with_a_header_and_agg_trades(ws_dir, tmp_path):
    usdm = trade_rows(trade_dicts(ws_dir / USDM), futures=True)
    header = ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker"]
    p = write_archive(tmp_path / "spot" / "BTCUSDT-trades-2023-04-04.zip", usdm, header)
    assert describe(p).market == "usdm"
    spot_agg = write_archive(tmp_path / "um" / "BTCUSDT-aggTrades-2024-08-08.csv",
                             agg_rows(trade_dicts(ws_dir / SPOT), futures=False))
    usdm_agg = write_archive(tmp_path / "x" / "BTCUSDT-aggTrades-2023-04-04.csv",
                             agg_rows(trade_dicts(ws_dir / USDM), futures=True))
    assert [(describe(q).fmt, describe(q).market) for q in (spot_agg, usdm_agg)] == [
        ("aggTrades", "spot"), ("aggTrades", "usdm")]


def test_klines_archive_and_feather_market_from_the_path(tmp_path, klines_dir):
    row = ["1748563200000", "1.0", "2.0", "0.5", "1.5", "10", "1748563259999", "0", "0", "0", "0", "0"]
    um = write_archive(tmp_path / "futures" / "um" / "BTCUSDT-1m-2025-05-30.zip", [row])
    sp = write_archive(tmp_path / "data" / "BTCUSDT-1m-2025-05-30.zip", [row])
    assert [(describe(p).fmt, describe(p).market, describe(p).interval_ns) for p in (um, sp)] == [
        ("klines", "usdm", 60 * 10**9), ("klines", "spot", 60 * 10**9)]
    f = describe(klines_dir / "BTC_USDT-15m.feather")
    assert (f.fmt, f.market, f.symbol, f.interval_ns) == ("kline_rows", "spot", "BTCUSDT", 900 * 10**9)
    # a download's destination, not there yet: its name says what it is
    later = describe(tmp_path / "futures" / "um" / "BTCUSDT-trades-2024-08-08.zip")
    assert (later.fmt, later.market, later.symbol) == ("trades", "usdm", "BTCUSDT")


def test_file_named_like_an_archive_holding_something_else(tmp_path, caplog):
    page = b"<html><body>404 Not Found</body></html>\n"
    bad = tmp_path / "d" / "BTCUSDT-trades-2024-08-08.zip"
    bad.parent.mkdir()
    bad.write_bytes(page)
    with pytest.raises(InputFormatError, match=r"not a zip archive \(first line: b'<html><body>404"):
        describe(bad)
    with caplog.at_level(logging.DEBUG, logger="sources.files"):
        assert group_streams([bad.parent]) == []
    assert [r.levelno for r in caplog.records if r.getMessage().startswith("skipped ")] == [logging.WARNING]

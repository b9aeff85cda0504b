"""The compiled line scanner (:mod:`sources.columns`) against the per-line parser, the reference.

Recording lines (:func:`~sources.columns.scan`) and Kafka ticks
(:func:`~sources.columns.scan_ticks`) alike.

The invariant: every line the scanner takes becomes the event the parser
makes of it, field for field and byte for byte in JSON; every other line is
left to the parser. Checked on every repository recording (where the
scanner must take every best bid/ask and trade line: they are Binance's own
layouts), on the fuzzed lines of ``tests/test_fuzz.py`` (100,000 invalid
lines and valid re-encodings of real ones), and on edits of real lines made
to sit just outside what the scanner may take.
"""

from __future__ import annotations

import pickle
import random
from collections import Counter

import msgspec
import pytest

from core.events import DepthUpdate, Quote, RawChunk, Trade, event_json, instrument_key
from harness.fuzz import build
from harness.realdata import lines, payload, recv_ns
from sources.binance import ParseLimits, ParseState, _parse_line, _parse_tick, parse_chunk
from sources.columns import DEPTH, OTHER, QUOTE, event, scan, scan_ticks
from sources.wire import encode_tick

RECORDINGS = ("spot/btcusdt_20230405.dat.gz", "spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz",
              "spot/ethusdt_20240808.gz", "spot/ethusdt_20240809.gz", "usdm/btcusdt_20230404.dat.gz",
              "usdm/btcusdt_20230405.dat.gz")


def _symbol(rel: str) -> str:
    return rel.split("/")[1].split("_")[0].upper()


_EVENTS = (Quote, Trade, DepthUpdate)


def _same(got: object, ref: object) -> None:
    """``got`` is ``ref``: equal, and the same JSON, repr, hash and pickle (a depth diff's levels in arrays too)."""
    assert got == ref and ref == got, (got, ref)
    assert event_json(got) == msgspec.json.encode(ref).decode()
    assert repr(got) == repr(ref) and hash(got) == hash(ref)
    assert pickle.loads(pickle.dumps(got)) == ref


def _check(rows: list[bytes], market: str, symbol: str) -> Counter:
    """Assert the invariant on ``rows``; count the outcomes (taken quotes, trades, depth diffs; events and lines
    left)."""
    c = scan(rows, symbol)
    key = symbol if market == "spot" else instrument_key(symbol, market)
    seen: Counter = Counter()
    for i, line in enumerate(rows):
        ref = _parse_line(line, market)
        if c.kind[i] == OTHER:
            seen["left: event" if type(ref) in _EVENTS else "left: other"] += 1
            continue
        _same(event(c, i, key), ref)
        seen["quote" if c.kind[i] == QUOTE else "depth" if c.kind[i] == DEPTH else "trade"] += 1
    return seen


@pytest.mark.parametrize("rel", RECORDINGS)
def test_every_best_bid_ask_and_trade_line_of_a_recording_becomes_the_parsers_event(ws_dir, rel):
    rows = list(lines(ws_dir / rel))
    seen = _check(rows, rel.split("/")[0], _symbol(rel))
    assert seen["quote"] > 1000 and seen["trade"] > 100 and seen["depth"] > 1000
    assert seen["left: event"] == 0  # snapshots are "other": the parser's


def test_the_fuzzed_lines_are_taken_only_where_they_give_the_parsers_event(ws_dir):
    rng = random.Random(28)
    for rel in ("spot/btcusdt_20240808.gz", "usdm/btcusdt_20230404.dat.gz"):
        market = rel.split("/")[0]
        dirty, _, fed, replaced = build(rng, lines(ws_dir / rel), market, 20_000, 0)
        seen = _check(dirty, market, _symbol(rel))
        assert seen["quote"] + seen["trade"] > 5_000 and seen["depth"] > 1_000
        assert seen["left: other"] + seen["left: event"] >= len(fed)  # the fuzzer's lines: none in the layouts


def _edits(line: bytes) -> list[bytes]:
    """Real lines changed just past what the scanner may take (each is invalid, or valid in another form)."""
    head, _, body = line.partition(b" ")
    edits = [head[:-3] + b" " + body, head + b"0 " + body, head + b"  " + body, line + b" ", line + b"\r",
             line.replace(b'"s":"BTCUSDT"', b'"s":"ETHUSDT"'), line.replace(b"btcusdt@", b"BTCUSDT@"),
             line.replace(b'{"stream"', b'{ "stream"'), b"9" * 19 + b" " + body]
    for field in (b'"b":"', b'"B":"', b'"a":"', b'"A":"', b'"p":"', b'"q":"'):
        at = line.find(field)
        if at < 0:
            continue
        start = at + len(field)
        end = line.index(b'"', start)
        for value in (b"0", b"0.0", b"00.5", b"05", b".5", b"5.", b"1e3", b"-1", b"+1", b"1234567890123456",
                      b"0.00000000000000000000001", b"1.0000000000000001", b"99999999999999.9", b"123", b"0.1",
                      b"18446744073709551615", b"12345678901234567890", b"1234567890123456789.5", b"123456789012345.6",
                      b"123456789012345", b"0.000000000000000000123", b"0.0000000000000000000000000001"):
            edits.append(line[:start] + value + line[end:])
    for field in (b'"u":', b'"t":', b'"E":', b'"T":'):
        at = line.find(field)
        if at < 0:
            continue
        start = at + len(field)
        end = start
        while line[end:end + 1].isdigit():
            end += 1
        for value in (b"0", b"01", b"-1", b"1.0", b"9223372036852", b"9223372036855", b"1234567890123456789", b"7"):
            edits.append(line[:start] + value + line[end:])
    edits += [line.replace(b'"m":true', b'"m":1'), line.replace(b'"m":false', b'"m":"false"'),
              line.replace(b'"X":"MARKET"', b'"X":"INSURANCE_FUND"'), line.replace(b'"M":true', b'"M":null')]
    for field in (b'"U":', b'"pu":'):
        at = line.find(field)
        if at >= 0:
            start = at + len(field)
            end = start
            while line[end:end + 1].isdigit():
                end += 1
            edits += [line[:start] + v + line[end:] for v in (b"0", b"01", b"-1", b"1.0", b"1234567890123456789")]
    for side in (b'"b":[', b'"a":['):  # a depth diff's levels: the first one's price and quantity, the array
        at = line.find(side)
        if at < 0 or line[at + len(side):at + len(side) + 1] == b"]":
            continue
        start = at + len(side)
        end = line.index(b"]", start) + 1  # the first level
        for price, qty in ((b"0", b"1"), (b"0.0", b"1"), (b"1", b"0"), (b"1", b"0.0"), (b"1", b"00"), (b"1", b"-0"),
                           (b"1", b"0.00000000000000000000001"), (b"1", b"0.0000000000000000000000"), (b"1e3", b"1"),
                           (b"1", b"1234567890123456"), (b"99999999999999.9", b"0.5"), (b"07", b"1"),
                           (b"18446744073709551615", b"1"), (b"1", b"18446744073709551615"),
                           (b"1", b"0.000000000000000000123")):
            edits.append(line[:start] + b'["' + price + b'","' + qty + b'"]' + line[end:])
        edits += [line[:start] + line[end:].lstrip(b","),  # one level fewer
                  line[:start] + b"]" + line[line.index(b"]]", start) + 2:],  # none: []
                  line[:start] + b'["1","2"],' + line[start:],  # one more
                  line[:start] + b'["1","2"] ,' + line[start:], line[:start] + b'["1","2",3],' + line[start:],
                  line[:start] + b'["1",2],' + line[start:], line[:start] + b"[]," + line[start:],
                  line[:start] + b'["1","2"],]' + line[line.index(b"]]", start) + 2:]]
    edits += [line.replace(b"@depth@100ms", b"@depth"), line.replace(b"@depth@0ms", b"@depth@250ms"),
              line.replace(b"@depth@100ms", b"@depth@ms"), line.replace(b"@depth@0ms", b"@depth@0s"),
              line.replace(b'"e":"depthUpdate"', b'"e":"depth"'), line.replace(b',"pu":', b',"pU":')]
    return edits


@pytest.mark.parametrize("rel", ["spot/btcusdt_20240808.gz", "usdm/btcusdt_20230404.dat.gz"])
def test_edits_just_outside_the_layouts_go_to_the_parser_or_give_its_event(ws_dir, rel):
    rows = list(lines(ws_dir / rel))
    picked = [ln for ln in rows if b"@bookTicker" in ln[:60]][:40] + [ln for ln in rows if b"@trade" in ln[:60]][:40]
    picked += [ln for ln in rows if b"@depth" in ln[:60]][:40]
    edited = [e for ln in picked for e in _edits(ln)]
    seen = _check(edited, rel.split("/")[0], "BTCUSDT")
    assert seen["left: other"] > 1000  # the invalid ones: the parser's dead letters or skips
    assert seen["left: event"] > 100  # valid in another form ("1e3", a space in the JSON): the parser's too
    assert seen["quote"] > 100 and seen["trade"] > 100  # valid in the layouts (other numbers): taken, and right
    assert seen["depth"] > 500


def test_a_symbol_the_parser_would_refuse_takes_no_line():
    """A chunk's symbol outside what the parser accepts (one character, 21) makes the scanner take nothing."""
    for sym in ("A", "X" * 21, "btcusdt", "BTC_USDT"):
        low = sym.lower().encode()
        line = (b'1723161254087891268 {"stream":"' + low + b'@bookTicker","data":{"u":9,"s":"' + sym.encode()
                + b'","b":"1.0","B":"1","a":"2.0","A":"1"}}')
        assert scan([line], sym).kind.tolist() == [OTHER]


def _ticks(ws_dir) -> list[bytes]:
    """Every line of every repository recording as a Kafka tick, the instruments and markets interleaved."""
    per_file = [[encode_tick(recv_ns(ln), rel.split("/")[0], payload(ln)) for ln in lines(ws_dir / rel)]
                for rel in RECORDINGS]
    out: list[bytes] = []
    for i in range(max(map(len, per_file))):
        out.extend(f[i] for f in per_file if i < len(f))
    return out


def test_every_best_bid_ask_and_trade_tick_of_a_kafka_batch_becomes_the_parsers_event(ws_dir):
    """Ticks of five instruments of two markets in one batch: the scanner reads each one's symbol and market."""
    ticks = _ticks(ws_dir)
    c = scan_ticks(ticks)
    seen: Counter = Counter()
    for i, value in enumerate(ticks):
        ref = _parse_tick(value)
        if c.kind[i] == OTHER:
            seen["left: event" if type(ref) in _EVENTS else "left: other"] += 1
            continue
        market = "spot" if c.market[i] == 0 else "usdm"
        got = event(c, i, c.symbol(i) if market == "spot" else instrument_key(c.symbol(i), market))
        _same(got, ref)
        seen[got.instrument] += 1
        seen[type(got).__name__] += 1
    assert seen["left: event"] == 0 and seen["DepthUpdate"] > 10_000
    assert {k for k in seen if not k.startswith("left") and k.isupper()} == {"BTCUSDT", "ETHUSDT", "BTCUSDT-PERP"}


def _as_tick(line: bytes, market: str) -> bytes:
    """A fuzzed line as a Kafka tick where its receive time is one (16 or 19 digits), else as it is (not a tick)."""
    head, sep, body = line.partition(b" ")
    if sep and head.isdigit() and len(head) in (16, 19) and recv_ns(line) < 1 << 63:
        return encode_tick(recv_ns(line), market, body)
    return line


def _parsed(chunks: list[RawChunk], path: str) -> list:
    st = ParseState(ParseLimits(path=path))
    return [parse_chunk(ch, st) for ch in chunks]


def test_parse_chunk_gives_the_same_events_dead_letters_and_counts_on_both_paths(ws_dir):
    """parse_chunk, chunk path against per-message path, on chunks of 2,048: every recording's lines, the same
    as Kafka ticks, and the fuzzed lines of two of them (as lines and as ticks)."""
    rng = random.Random(280)
    chunks: list[RawChunk] = []
    for rel in RECORDINGS:
        rows = list(lines(ws_dir / rel))
        chunks += [RawChunk("ws", rel.split("/")[0], _symbol(rel), rows[i:i + 2048]) for i in range(0, len(rows), 2048)]
    for rel in ("spot/btcusdt_20240808.gz", "usdm/btcusdt_20230404.dat.gz"):
        market = rel.split("/")[0]
        dirty, *_ = build(rng, lines(ws_dir / rel), market, 5_000, 1)
        chunks += [RawChunk("ws", market, "BTCUSDT", dirty[i:i + 2048]) for i in range(0, len(dirty), 2048)]
        as_ticks = [_as_tick(ln, market) for ln in dirty]
        chunks += [RawChunk("kafka", "", "", as_ticks[i:i + 2048]) for i in range(0, len(as_ticks), 2048)]
    ticks = _ticks(ws_dir)
    chunks += [RawChunk("kafka", "", "", ticks[i:i + 2048]) for i in range(0, len(ticks), 2048)]
    fast, ref = _parsed(chunks, "chunk"), _parsed(chunks, "message")
    assert len(fast) == len(ref) and "sources.columns" in __import__("sys").modules
    for (by_f, err_f, cnt_f), (by_r, err_r, cnt_r) in zip(fast, ref, strict=True):
        assert cnt_f == cnt_r and err_f == err_r
        assert by_f.keys() == by_r.keys()
        for key in by_r:
            assert list(by_f[key]) == list(by_r[key]) and by_f[key].records == by_r[key].records

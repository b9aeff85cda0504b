"""Properties of the input layer (reader and parser) under hostile input, with
hypothesis.

Examples start from real recorded lines (every recording in tests/data) or
from arbitrary bytes. ``$HYPOTHESIS_MAX_EXAMPLES`` examples per property
(default 100: the file runs in a few seconds; raise it for a deeper search);
the examples are derandomized, so a run is reproducible.

What is asserted:

1. the parser never raises, and every line (a recording line or a Kafka
   message) yields exactly one outcome: one event, one counted skip, or one
   dead letter whose raw is the line's message byte for byte (its first
   bytes and its size for an over-long one), text or base64;
2. a message means the same whatever its JSON layout: whitespace, key order,
   escapes, ``\\r``, as a recording line or in the Kafka wire format;
3. a message's symbol gives an instrument exactly when it is valid;
4. the reader gives back exactly the lines written, whatever the block size:
   ``\\r\\n`` ends a line like ``\\n``, a bare ``\\r`` is part of it, blank
   lines are kept for counting, and a line longer than the limit comes as
   its first bytes and its size.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from core.events import ErrorRecord, RawChunk, Trade
from harness.realdata import REPO, SCRATCH, lines, payload, recv_ns
from sources.binance import LONG_LINE_HEAD, LongLine, ParseLimits, ParseState, parse_chunk, parse_ws
from sources.files import _ws_blocks
from sources.symbols import valid_symbol
from sources.wire import encode_tick

set_hypothesis_home_dir(SCRATCH / "hypothesis")  # not .hypothesis/ in the checkout: tests write nothing there
MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "100"))
PROFILE = settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WS = REPO / "tests" / "data" / "binance-ws"
FILES = sorted(p.relative_to(WS).as_posix() for p in WS.glob("*/*.gz"))
#: Every 97th line of every recording: all stream kinds, both markets, µs and ns stamps.
REAL = [(rel.split("/")[0], ln) for rel in FILES for ln in lines(WS / rel)[::97]]
TRADES = [(m, ln) for m, ln in REAL if b'@trade"' in ln[:60]]
_HEAD = re.compile(rb"(\d{19}|\d{16}) ")


def message(line: bytes) -> bytes:
    """What a dead letter of ``line`` must carry (README: the message after a
    valid receive timestamp, else the whole line)."""
    m = _HEAD.match(line)
    if m is None or int(m.group(1)) * (1000 if len(m.group(1)) == 16 else 1) >= 1 << 63:
        return line
    return line[m.end():]


def outcome(fmt: str, market: str, rec: bytes, cap: int = 1 << 20):
    """The single outcome of one record: ("event", e), ("skip", reason) or ("dead", ErrorRecord)."""
    by_key, errors, counts = parse_chunk(RawChunk(fmt, market, "X", [rec]), ParseState(ParseLimits(max_line_bytes=cap)))
    skips = {k: v for k, v in counts.items() if k.startswith("skipped_")}
    assert counts["input_records"] == 1 == counts["ticks"] + counts.get("parse_errors", 0) + sum(skips.values())
    if counts["ticks"]:
        ((_, (ev,)),) = by_key.items()
        return "event", ev
    if errors:
        (err,) = errors
        assert type(err) is ErrorRecord
        # what a sink writes reads back to the same bytes
        assert msgspec.json.decode(msgspec.json.encode(err), type=ErrorRecord).raw_bytes() == err.raw_bytes()
        return "dead", err
    (reason,) = skips
    return "skip", reason.removeprefix("skipped_")


def mutate(line: bytes, ops: list[tuple[int, int, bytes]]) -> bytes:
    """Apply (kind, position, bytes) edits: 0 replace a byte, 1 insert, 2 delete, 3 cut."""
    for kind, pos, b in ops:
        if not line:
            break
        i = pos % len(line)
        if kind == 0:
            line = line[:i] + b[:1] + line[i + 1:]
        elif kind == 1:
            line = line[:i] + b + line[i:]
        elif kind == 2:
            line = line[:i] + line[i + len(b) + 1:]
        else:
            line = line[:i]
    return line


real_lines = st.sampled_from(REAL)
edits = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**6), st.binary(min_size=1, max_size=4)),
                 min_size=1, max_size=4)
hostile_bytes = st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"."))


@PROFILE
@given(real_lines, edits, st.booleans())
@example(("spot", b""), [(0, 0, b"x")], False)
@example(("spot", b"1723161254087891268 {\"stream\":\"\\u0000btc@trade\",\"data\":{}}"), [(3, 10**6, b"x")], False)
def test_every_mutated_line_is_one_event_skip_or_dead_letter_with_its_exact_bytes(src, ops, kafka):
    market, line = src
    line = mutate(line, ops) if line else line
    if kafka:  # the same message in the Kafka wire format, its receive time spliced in front
        m = _HEAD.match(line)
        rec = encode_tick(recv_ns(line), market, payload(line)) if m and message(line) != line else line
        kind, out = outcome("kafka", "", rec)
        if kind == "dead":
            assert out.raw_bytes() == rec
    else:
        kind, out = outcome("ws", market, line)
        if kind == "dead":
            assert out.raw_bytes() == message(line) and out.raw_size is None
            assert out.raw_base64 == (not _utf8(message(line)))
        elif kind == "skip":
            assert out != "blank_line" or not line.strip()
    if kind == "event":  # a symbol the stream name and the data agree on
        assert valid_symbol(out.instrument.removesuffix("-PERP"))


@PROFILE
@given(hostile_bytes, st.integers(64, 400), st.sampled_from(["ws", "kafka"]))
def test_arbitrary_bytes_never_raise_and_come_back_exactly(data, cap, fmt):
    kind, out = outcome(fmt, "spot", data, cap)
    assert kind in ("dead", "skip")
    if kind == "skip":
        assert out == "blank_line" and fmt == "ws" and not data.strip()
        return
    if len(data) > cap:  # its first bytes and its size, the receive time and key from its head
        assert out.raw_size is not None and out.stage == "read_ticks"
        assert data.startswith(out.raw_bytes()) or message(data).startswith(out.raw_bytes())
    else:
        assert out.raw_bytes() == (message(data) if fmt == "ws" else data)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def layouts(draw) -> dict:
    """How to write a JSON object: separators with any JSON whitespace, key
    order, indentation, ASCII escapes."""
    ws = st.text(alphabet=" \t\r\n", max_size=3)
    return {"item": draw(ws) + "," + draw(ws), "key": draw(ws) + ":" + draw(ws),
            "order": draw(st.sampled_from(["as is", "data first", "sorted"])),
            "ascii": draw(st.booleans()), "lead": draw(ws), "trail": draw(ws)}


def relayout(msg: dict, how: dict) -> bytes:
    if how["order"] == "data first":
        msg = {k: msg[k] for k in sorted(msg, reverse=True)}
    text = json.dumps(msg, separators=(how["item"], how["key"]), sort_keys=how["order"] == "sorted",
                      ensure_ascii=how["ascii"])
    return (how["lead"] + text + how["trail"]).encode()


@PROFILE
@given(real_lines, layouts(), st.booleans())
def test_a_message_means_the_same_in_any_json_layout(src, how, escape_at):
    market, line = src
    ts, pl = recv_ns(line), payload(line)
    want = parse_ws(ts, pl, market)
    msg = json.loads(pl)
    variant = relayout(msg, how)
    if escape_at and "stream" in msg:  # "btcusdt\u0040trade": the same string
        variant = variant.replace(b"@", b"\\u0040", 1)
    assert parse_ws(ts, variant, market) == want
    # in the Kafka wire format too (its head spliced in front of the fields)
    kind, got = outcome("kafka", "", encode_tick(ts, market, variant))
    if isinstance(want, ErrorRecord):
        assert kind == "dead"
    else:
        assert got == want


@PROFILE
@given(st.sampled_from(TRADES), st.one_of(st.text(max_size=24), st.from_regex(r"[A-Z0-9_]{1,22}", fullmatch=True),
                                          st.sampled_from(["币安人生USDT", "ВТСUSDT", "\u202eBTCUSDT", "BTC-PERP"])))
@example(TRADES[0], "")
@example(TRADES[0], "\x00BTCUSDT")
def test_a_symbol_gives_an_instrument_exactly_when_it_is_valid(src, symbol):
    market, line = src
    msg = json.loads(payload(line))
    msg["data"]["s"] = symbol
    msg["stream"] = symbol.lower() + "@trade"
    got = parse_ws(recv_ns(line), json.dumps(msg).encode(), market)
    if valid_symbol(symbol):
        assert type(got) is Trade and got.instrument == (symbol if market == "spot" else symbol + "-PERP")
    else:
        assert type(got) is ErrorRecord
        assert got.reason.startswith("invalid symbol") or "@" in symbol  # "a@b@trade" is another stream


@PROFILE
@given(st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")), max_size=12),
       st.integers(1, 700), st.integers(64, 200), st.booleans())
@example([b"a" * 65 + b"\r", b"", b"\r", b"x\ry"], 7, 64, True)
def test_the_reader_gives_back_every_line_in_bounded_pieces(rows, block, cap, final_newline):
    data = b"\n".join(rows) + (b"\n" if final_newline and rows else b"")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "rec.gz")
        with gzip.open(path, "wb", compresslevel=1) as f:
            f.write(data)
        got = [ln for b in _ws_blocks(path, block_bytes=block, max_line=cap, blank=True) for ln in b]
    keep = min(LONG_LINE_HEAD, cap)
    want = [LongLine(r[:keep], len(r)) if len(r) > cap else r.removesuffix(b"\r") for r in rows]
    if rows and not final_newline and rows[-1] == b"":
        want.pop()  # nothing after the last line feed: no line
    assert got == want
    assert [type(g) for g in got] == [type(w) for w in want]
    assert [g.size for g in got if type(g) is LongLine] == [w.size for w in want if type(w) is LongLine]


@PROFILE
@given(st.sampled_from(FILES), st.integers(0, 10**9), st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)),
                                                               max_size=3), st.integers(64, 1 << 16))
def test_a_cut_or_corrupt_gzip_recording_never_raises(rel, cut, flips, block):
    """What inflates comes back: the recording's lines in order (the last one
    possibly cut short, and any after a corrupt byte possibly altered)."""
    raw = bytearray((WS / rel).read_bytes()[:200_000])  # the start of the file: a member cut short
    raw = raw[: 21 + cut % (len(raw) - 21)]
    for pos, b in flips:
        raw[20 + pos % (len(raw) - 20)] ^= b
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "rec.gz")
        with open(path, "wb") as f:
            f.write(raw)
        got = [ln for b in _ws_blocks(path, block_bytes=block) for ln in b]
    real = lines(WS / rel)
    if not flips and got:
        n = len(got)
        assert got[:-1] == list(real[: n - 1]) and real[n - 1].startswith(got[-1])

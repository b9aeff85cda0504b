"""Fuzzing the input layer through the real dataflow (issue 15, items 5-11).

Two real recordings (spot/btcusdt_20240808.gz and usdm/btcusdt_20230404.dat.gz,
54,633 lines) get 100,000 mutated lines mixed in at random places (seeded),
and about 2,700 of their own lines replaced by equivalent encodings of the
same message. The dataflow runs on the result ("dirty") and on the real lines
alone ("clean"), with ``TICKLET_INPUT__MAX_INSTRUMENTS=1`` (each recording
has one instrument).

Every mutation is **invalid by construction**, so that the valid subset is
well defined: the control bytes, broken UTF-8 and truncations below can
never leave a valid message, and every field edit breaks a rule the parser
documents. Each inserted line must therefore end as exactly one dead letter
of the parser (or one counted skip: blank lines), except the *late* ones: a
copy of a real depth update received seconds to an hour before the latest
line of its file parses, and is dead-lettered by the bar builder (depth
updates move no price reference and make no fill quote, so they touch no
state). The **replacements** are valid: JSON with spaces (``json.dumps``'s
default), another key order, an escaped ``@`` in the stream name, a ``\\r``
as JSON whitespace, CRLF line endings; they must parse to the same events.

What is checked: the run completes; the counters add up exactly
(``input_records`` = lines fed = ``ticks + parse_errors + skipped_*``, and
every other counter is what the mutations imply); every inserted line has its
dead letter with its exact raw bytes (base64 where they are not UTF-8), size
and instrument; and the forecasts, metrics, signals and books of the dirty run are those
of the clean run, row for row (per instrument: the two recordings' rows
interleave as their chunks happen to be processed).

Runs in about 25 s on a quiet 2-core machine.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import pytest

from core.events import ErrorRecord
from dataflows.settings import load_settings
from harness.realdata import RECORD_FILES, lines, payload, recv_ns, stream_kind, write_gz
from ticklet.backtest import run_backtest

#: Integration tests (tests/integration_mark.py): 100,000 mutated lines through whole runs, in the process, about 20
#: s: too slow for the unit run.
pytestmark = pytest.mark.integration

SEED = 15
N_MUTATED = 100_000
FILES = ("spot/btcusdt_20240808.gz", "usdm/btcusdt_20230404.dat.gz")
INSTRUMENT = {"spot": "BTCUSDT", "usdm": "BTCUSDT-PERP"}
N_LONG = 6  # over-long lines (1.5 to 3 MiB each)
CTRL = bytes(b for b in range(32) if b not in (9, 10, 13))  # never valid in JSON, in a string or out
BAD_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80")
BAD_SYMBOLS = ("", "A", "\x00BTCUSDT", "BTC\u202eUSDT", "btcusdt", "BTC-PERP", "X" * 21, "\u0412\u0422\u0421USDT",
               "BTC USDT", "BTCUSDT\n", "\u200bBTCUSDT")
REQUIRED = {"trade": "EstpqTm", "bookTicker": "usbBaA", "depth": "EsUuba"}
_VALID_HEAD = re.compile(rb"(\d{19}|\d{16}) ")
_MAX_TS = 1 << 63


def compact(msg: dict) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def expected_raw(line: bytes) -> bytes:
    """The message a dead letter of ``line`` must carry: what follows a valid
    receive timestamp (16 or 19 digits, within int64 ns), else the whole
    line (the README's contract, written independently of the parser)."""
    m = _VALID_HEAD.match(line)
    if m is None:
        return line
    head = m.group(1)
    ts = int(head) * (1000 if len(head) == 16 else 1)
    return line[m.end():] if ts < _MAX_TS else line


@dataclass
class Fed:
    """A line mixed into a recording, and what must become of it."""

    kind: str
    line: bytes
    outcome: str  # "parse": a parser dead letter; "blank": a counted skip; "late": a bar builder's dead letter
    instrument: Optional[str] = None  # the dead letter's instrument, where the mutation fixes it
    size: Optional[int] = None  # raw_size, for an over-long line


class Mutator:
    """Makes the mutated lines from real ones; every method returns a Fed."""

    def __init__(self, rng: random.Random, market: str):
        self.rng = rng
        self.market = market
        self.inst = INSTRUMENT[market]
        self.fakes = 0

    def _split(self, line: bytes) -> tuple[bytes, dict]:
        head = line.split(b" ", 1)[0]
        return head, json.loads(payload(line))

    def flip(self, line: bytes) -> Fed:
        i = self.rng.randrange(len(line))
        return Fed("flip", line[:i] + bytes([self.rng.choice(CTRL)]) + line[i + 1:], "parse")

    def truncate(self, line: bytes) -> Fed:
        return Fed("truncate", line[: self.rng.randrange(1, len(line) - 1)], "parse")

    def drop_field(self, line: bytes) -> Fed:
        head, msg = self._split(line)
        msg["data"].pop(self.rng.choice(REQUIRED[stream_kind(msg)]))
        return Fed("drop_field", head + b" " + compact(msg), "parse", self.inst)

    def dup_field(self, line: bytes) -> Fed:
        head, msg = self._split(line)
        bad = {"trade": b'"p":"-1"', "bookTicker": b'"b":"NaN"', "depth": b'"E":-5'}[stream_kind(msg)]
        pl = payload(line)
        assert pl.endswith(b"}}")
        return Fed("dup_field", head + b" " + pl[:-2] + b"," + bad + b"}}", "parse", self.inst)

    def huge(self, line: bytes) -> Fed:
        head, msg = self._split(line)
        d = msg["data"]
        kind = stream_kind(msg)
        field, value = self.rng.choice({
            "trade": [("p", "1e400"), ("q", "1e999"), ("p", "-0"), ("T", 10**30), ("t", "1e999")],
            "bookTicker": [("b", "1e309"), ("A", "-1e308"), ("a", "0"), ("u", 1.5)],
            "depth": [("E", 10**25), ("b", [["1e400", "1"]]), ("a", [["1", "-2"]]), ("U", "x")],
        }[kind])
        d[field] = value
        return Fed("huge", head + b" " + compact(msg), "parse", self.inst)

    def exchange_time(self, line: bytes) -> Fed:
        head, msg = self._split(line)
        d = msg["data"]
        field = "T" if "T" in d and stream_kind(msg) == "trade" else "E" if "E" in d else "u"
        d[field] = self.rng.choice([10**16, -1, 2**64]) if field != "u" else "late"
        return Fed("exchange_time", head + b" " + compact(msg), "parse", self.inst)

    def non_utf8(self, line: bytes) -> Fed:
        i = self.rng.randrange(len(line) + 1)
        return Fed("non_utf8", line[:i] + self.rng.choice(BAD_UTF8) + line[i:], "parse")

    def bad_ts(self, line: bytes) -> Fed:
        head, pl = line.split(b" ", 1)
        new = self.rng.choice([head[:-1], head + b"7", head + b"123456", b"9" * 19, b"9" * 16, b"-" + head,
                               b"0x" + head[2:], b"", b"1e18", head[:10] + b"." + head[10:]])
        return Fed("bad_ts", new + b" " + pl, "parse", self.inst)

    def bad_symbol(self, line: bytes) -> Fed:
        head, msg = self._split(line)
        sym = self.rng.choice(BAD_SYMBOLS)
        msg["stream"] = sym.lower() + msg["stream"][msg["stream"].index("@"):]
        msg["data"]["s"] = sym
        return Fed("bad_symbol", head + b" " + json.dumps(msg).encode(), "parse")

    def mismatch(self, line: bytes) -> Fed:
        head, msg = self._split(line)
        msg["data"]["s"] = self.rng.choice(["ETHUSDT", "BTCUSDC", "BTCUSDT_250328", "币安人生USDT"])
        return Fed("mismatch", head + b" " + compact(msg), "parse", self.inst)

    def fake_symbol(self, line: bytes) -> Fed:
        """A valid symbol, consistent in stream and data: refused, as the
        partition's one admitted instrument is the real one."""
        head, msg = self._split(line)
        self.fakes += 1
        sym = f"F{self.fakes:06d}USDT"
        msg["stream"] = sym.lower() + msg["stream"][msg["stream"].index("@"):]
        msg["data"]["s"] = sym
        inst = sym if self.market == "spot" else sym + "-PERP"
        return Fed("fake_symbol", head + b" " + compact(msg), "parse", inst)

    def unknown_stream(self, line: bytes) -> Fed:
        head, msg = self._split(line)
        msg["stream"] = msg["stream"].split("@")[0] + self.rng.choice(["@bogus", "@trades", "@bookticker", "@",
                                                                        "@depth5x", "@kline"])
        return Fed("unknown_stream", head + b" " + compact(msg), "parse", self.inst)

    def garbage(self, line: bytes) -> Fed:
        n = self.rng.randrange(1, 200)
        body = self.rng.randbytes(n).replace(b"\n", b"?")
        body = b"!" + body.rstrip(b"\r")  # never blank, never a CRLF ending
        return Fed("garbage", body, "parse")

    def cr_inside(self, line: bytes) -> Fed:
        """A line with a bare carriage return inside: one record, not two."""
        pl = payload(line)
        i = self.rng.randrange(pl.index(b'"data"'), len(pl) - 1)  # the stream name stays whole
        return Fed("cr_inside", line.split(b" ", 1)[0] + b" " + pl[:i] + b"\r" + pl[i:-1], "parse", self.inst)

    def blank(self, line: bytes) -> Fed:
        return Fed("blank", self.rng.choice([b"", b" ", b"\t", b"  \t ", b"\r"]), "blank")

    def long(self, line: bytes) -> Fed:
        n = self.rng.randrange(3 << 19, 3 << 20)
        pl = payload(line)
        body = pl[:40] + b"x" * n
        return Fed("long", line.split(b" ", 1)[0] + b" " + body, "parse", self.inst, len(body))


WEIGHTS = {"flip": 14, "truncate": 12, "drop_field": 8, "dup_field": 5, "huge": 8, "exchange_time": 4,
           "non_utf8": 8, "bad_ts": 6, "bad_symbol": 6, "mismatch": 4, "fake_symbol": 5, "unknown_stream": 4,
           "garbage": 8, "cr_inside": 3, "blank": 2, "late": 3}


def replacement(rng: random.Random, line: bytes) -> bytes:
    """``line`` written another valid way: the same message, so the same event."""
    head, pl = line.split(b" ", 1)
    msg = json.loads(pl)
    how = rng.randrange(5)
    if how == 0:
        new = json.dumps(msg).encode()  # ", " and ": ", as Python writes JSON
    elif how == 1:
        new = compact({"data": msg["data"], "stream": msg["stream"]})
    elif how == 2:
        new = pl.replace(b"@", b"\\u0040", 1)
    elif how == 3:
        new = pl.replace(b'","data":', b'",\r"data": ', 1)
    else:
        return line + b"\r"  # CRLF: the \r is part of the line ending
    return head + b" " + new


def build(rng: random.Random, real: tuple[bytes, ...], market: str, n_mutated: int, n_long: int
          ) -> tuple[list[bytes], list[bytes], list[Fed], int]:
    """(dirty lines, clean lines, what was fed, replacements)."""
    mut = Mutator(rng, market)
    kinds = [stream_kind(json.loads(payload(ln))) for ln in real]
    events = [i for i, k in enumerate(kinds) if k in REQUIRED]
    late_ok = [i for i in events if i >= 2000 and kinds[i] == "depth"]
    after: dict[int, list[Fed]] = {}
    names, weights = zip(*WEIGHTS.items(), strict=True)
    picks = rng.choices(names, weights, k=n_mutated - n_long) + ["long"] * n_long
    running_max = []
    m = 0
    for ln in real:
        m = max(m, recv_ns(ln))
        running_max.append(m)
    for kind in picks:
        if kind == "late":
            at = rng.choice(late_ok)
            ts = running_max[at] - rng.randrange(2 * 10**9, 3600 * 10**9)
            fed = Fed("late", b"%d " % ts + payload(real[at]), "late", mut.inst)
        else:
            at = rng.choice(events[10:] if kind != "fake_symbol" else [i for i in events if i >= 2000])
            fed = getattr(mut, kind)(real[at])
        after.setdefault(at, []).append(fed)
    dirty, fed_all = [], []
    replaced = 0
    for i, ln in enumerate(real):
        if i in events and i > 10 and rng.random() < 0.05:
            dirty.append(replacement(rng, ln))
            replaced += 1
        else:
            dirty.append(ln)
        for f in after.get(i, ()):
            dirty.append(f.line)
            fed_all.append(f)
    return dirty, list(real), fed_all, replaced


@pytest.fixture(scope="module")
def fuzz(ws_dir, tmp_path_factory):
    rng = random.Random(SEED)
    base = tmp_path_factory.mktemp("fuzz")
    sizes = {rel: len(lines(ws_dir / rel)) for rel in FILES}
    total = sum(sizes.values())
    fed: list[Fed] = []
    n_lines = n_replaced = 0
    for k, rel in enumerate(FILES):
        market = rel.split("/")[0]
        n = N_MUTATED * sizes[rel] // total if k < len(FILES) - 1 else N_MUTATED - len(fed)
        dirty, clean, f, r = build(rng, lines(ws_dir / rel), market, n, N_LONG // len(FILES))
        write_gz(base / "dirty" / rel, dirty)
        write_gz(base / "clean" / rel, clean)
        fed += f
        n_lines += len(dirty)
        n_replaced += r
    assert len(fed) == N_MUTATED
    s = load_settings()
    s = s.model_copy(update={"input": s.input.model_copy(update={"max_instruments": 1}),
                             "output": s.output.model_copy(update={"summary": False})})
    clean = run_backtest([str(base / "clean")], base / "clean_out", base=s)
    dirty = run_backtest([str(base / "dirty")], base / "dirty_out", base=s)
    return fed, n_lines, n_replaced, (clean, base / "clean_out"), (dirty, base / "dirty_out")


def _counters(out) -> dict:
    return json.loads((out / "counters.json").read_text())


def _dead(out) -> list[ErrorRecord]:
    import msgspec

    path = out / "dead_letters.jsonl"
    return [msgspec.json.decode(ln, type=ErrorRecord) for ln in path.read_bytes().splitlines()] if path.exists() else []


def test_fuzz_feeds_at_least_100000_mutated_lines_of_every_kind(fuzz):
    fed, n_lines, n_replaced, (clean, _), (dirty, _) = fuzz
    assert len(fed) >= 100_000 and n_replaced > 2000
    kinds = Counter(f.kind for f in fed)
    assert set(kinds) == {*WEIGHTS, "long"} and min(kinds.values()) >= N_LONG // 2, kinds
    assert dirty["errors"] > 0 and clean["forecasts"] > 0  # both runs completed


def test_every_line_fed_is_counted_exactly_once(fuzz):
    fed, n_lines, _, (_, clean_out), (_, out) = fuzz
    c, cc = _counters(out), _counters(clean_out)
    skips = sum(v for k, v in c.items() if k.startswith("skipped_"))
    assert c["input_records"] == n_lines == c["ticks"] + c["parse_errors"] + skips
    outcome = Counter(f.outcome for f in fed)
    assert c["parse_errors"] == outcome["parse"]
    assert c["skipped_blank_line"] == outcome["blank"]
    assert c["ticks"] == cc["ticks"] + outcome["late"]
    assert c["instruments_refused"] == sum(f.kind == "fake_symbol" for f in fed)
    assert c["dead_letters"] == cc.get("dead_letters", 0) + outcome["parse"] + outcome["late"]
    assert {k: v for k, v in c.items() if k.startswith("skipped_") and k != "skipped_blank_line"} == \
        {k: v for k, v in cc.items() if k.startswith("skipped_")}


def test_every_dead_letter_keeps_the_exact_raw_bytes_of_its_line(fuzz):
    fed, *_, (_, clean_out), (_, out) = fuzz
    dead = _dead(out)
    parse = [d for d in dead if d.stage in ("parse", "read_ticks")]
    want = Counter(expected_raw(f.line)[:1024 - (len(f.line) - len(expected_raw(f.line)))] if f.kind == "long"
                   else expected_raw(f.line) for f in fed if f.outcome == "parse")
    assert Counter(d.raw_bytes() for d in parse) == want
    # bytes that are not UTF-8 come as base64, the others as text
    assert all(d.raw_base64 == (not _is_utf8(d.raw_bytes())) for d in dead)
    assert sum(d.raw_base64 for d in parse) >= sum(f.kind == "non_utf8" for f in fed)
    # the later stages' dead letters: the clean run's, plus the late lines, as received
    later = Counter(d.raw_bytes() for d in dead if d.stage not in ("parse", "read_ticks"))
    clean_later = Counter(d.raw_bytes() for d in _dead(clean_out))
    assert later == clean_later + Counter(payload(f.line) for f in fed if f.outcome == "late")


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_over_long_lines_carry_their_head_size_time_and_instrument(fuzz):
    fed, *_, (_, out) = fuzz
    longs = [d for d in _dead(out) if d.stage == "read_ticks"]
    want = sorted((f.size, recv_ns(f.line), f.instrument) for f in fed if f.kind == "long")
    assert sorted((d.raw_size, d.ts_recv, d.instrument) for d in longs) == want
    assert all(d.reason.startswith(f"line too long: {d.raw_size} bytes") and len(d.raw_bytes()) < 1024
               for d in longs)


def test_dead_letters_name_the_instrument_their_stream_gives(fuzz):
    fed, *_, (_, out) = fuzz
    by_raw: dict[bytes, Counter] = {}
    for d in _dead(out):
        by_raw.setdefault(d.raw_bytes(), Counter())[d.instrument] += 1
    checked = 0
    for f in fed:
        if f.instrument is not None and f.kind != "long":
            assert f.instrument in by_raw[expected_raw(f.line)], (f.kind, f.line[:120])
            checked += 1
    assert checked > 40_000
    named = sum(n for c in by_raw.values() for k, n in c.items() if k)
    assert named / sum(sum(c.values()) for c in by_raw.values()) > 0.7


def _by_instrument(path) -> dict[str, list[str]]:
    """A record file's rows per instrument, in order (the two recordings'
    instruments interleave as their chunks happen to be processed)."""
    head, *rows = path.read_text().splitlines()
    out: dict[str, list[str]] = {"": [head]}
    for r in rows:
        out.setdefault(r.split(",", 1)[0], []).append(r)
    return out


def test_forecasts_of_the_valid_lines_are_those_of_the_clean_run(fuzz):
    *_, (clean, clean_out), (dirty, out) = fuzz
    assert dirty["bars"] == clean["bars"] > 0 and dirty["forecasts"] == clean["forecasts"] > 0
    for name in RECORD_FILES:
        got, want = _by_instrument(out / name), _by_instrument(clean_out / name)
        assert set(want) == {"", *INSTRUMENT.values()}, name
        assert got == want, name

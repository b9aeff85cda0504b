"""The fuzzed input of ``tests/test_fuzz.py``: real lines, and mutated lines each invalid by construction.

Shared by the tests that feed it to the dataflow (``tests/test_fuzz.py``)
and to the chunk path's compiled scanner (``tests/sources/test_columns.py``).
:func:`build` mixes ``n_mutated`` mutated lines (:class:`Mutator`) into a
recording's lines at random places, and replaces about 5% of its lines by
valid re-encodings of the same message (:func:`replacement`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Optional

from harness.realdata import payload, recv_ns, stream_kind

__all__ = ["BAD_SYMBOLS", "BAD_UTF8", "CTRL", "INSTRUMENT", "REQUIRED", "WEIGHTS", "Fed", "Mutator", "build",
           "compact", "replacement"]

INSTRUMENT = {"spot": "BTCUSDT", "usdm": "BTCUSDT-PERP"}
CTRL = bytes(b for b in range(32) if b not in (9, 10, 13))  # never valid in JSON, in a string or out
BAD_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80")
BAD_SYMBOLS = ("", "A", "\x00BTCUSDT", "BTC\u202eUSDT", "btcusdt", "BTC-PERP", "X" * 21, "\u0412\u0422\u0421USDT",
               "BTC USDT", "BTCUSDT\n", "\u200bBTCUSDT")
REQUIRED = {"trade": "EstpqTm", "bookTicker": "usbBaA", "depth": "EsUuba"}


def compact(msg: dict) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


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


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

import pytest

from core.events import ErrorRecord
from dataflows.settings import load_settings
from harness.fuzz import INSTRUMENT, WEIGHTS, Fed, build
from harness.realdata import RECORD_FILES, lines, payload, recv_ns, write_gz
from ticklet.backtest import run_backtest

#: Integration tests (tests/integration_mark.py): 100,000 mutated lines through whole runs, in the process, about 20
#: s: too slow for the unit run.
pytestmark = pytest.mark.integration

SEED = 15
N_MUTATED = 100_000
FILES = ("spot/btcusdt_20240808.gz", "usdm/btcusdt_20230404.dat.gz")
N_LONG = 6  # over-long lines (1.5 to 3 MiB each)
_VALID_HEAD = re.compile(rb"(\d{19}|\d{16}) ")
_MAX_TS = 1 << 63


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
    dirty = run_backtest([str(base / "dirty")], base / "dirty_out", base=_path(s, "chunk"))
    run_backtest([str(base / "dirty")], base / "dirty_message_out", base=_path(s, "message"))
    return fed, n_lines, n_replaced, (clean, base / "clean_out"), (dirty, base / "dirty_out")


def _path(s, path: str):
    """``s`` with ``TICKLET_INPUT__PATH=path``: the dirty input goes through both paths."""
    return s.model_copy(update={"input": s.input.model_copy(update={"path": path})})


def test_the_chunk_path_gives_the_per_message_paths_outputs_byte_for_byte(fuzz):
    """The dirty run on the chunk path (the compiled scanner first) and on the
    per-message path (the reference): every output file the same, dead
    letters included (``run.json`` records the settings, which differ)."""
    *_, (_, out) = fuzz
    ref = out.parent / "dirty_message_out"
    names = sorted(p.name for p in ref.iterdir() if p.name != "run.json")
    assert "dead_letters.jsonl" in names and "forecasts.csv" in names
    assert sorted(p.name for p in out.iterdir() if p.name != "run.json") == names
    for name in names:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


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

"""Bad input is dead-lettered with its reason and raw payload, counted, and
does not stop or disturb the dataflow.

A recording is built from the first real lines of spot/btcusdt_20240808.gz
with bad lines injected (each derived from a real neighbouring line), blank
lines, and some real lines ending in CRLF, and the whole dataflow is run on
it and on the same lines without the injections. Further runs on real lines
show the instrument limits (issue 15, items 5 to 11).
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from dataclasses import dataclass

import pytest

from dataflows.settings import load_settings
from harness.realdata import RECORD_FILES, lines, payload, recv_ns, stream_kind, write_gz
from ticklet.backtest import run_backtest

SRC = "spot/btcusdt_20240808.gz"
N = 15_000  # about two minutes: enough bars for warm-up and the 10-bar horizon
BLANKS = (b"", b"  ", b"\t", b"\r")  # b"\r": a blank line with a CRLF ending


@dataclass
class Injected:
    name: str
    after: int  # inserted after this real line
    line: bytes
    reason: str  # regular expression the dead letter's reason must match
    stage: str
    raw: bytes  # the raw payload expected in the dead letter, exactly
    ts_recv: int


def _compact(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _build(real: list[bytes]) -> list[Injected]:
    kinds = [stream_kind(json.loads(payload(ln))) for ln in real]
    trades = [i for i, k in enumerate(kinds) if k == "trade"]
    quotes = [i for i, k in enumerate(kinds) if k == "bookTicker"]
    out: list[Injected] = []

    def trade_variant(name: str, at: int, edit, reason: str) -> None:
        ln = real[at]
        msg = json.loads(payload(ln))
        edit(msg["data"])
        pl = _compact(msg)
        out.append(Injected(name, at, b"%d " % recv_ns(ln) + pl, reason, "parse", pl, recv_ns(ln)))

    pick = iter(trades[10::len(trades) // 12])
    ln = real[t := next(pick)]
    pl = payload(ln)[: len(payload(ln)) // 2]
    out.append(Injected("bad json", t, b"%d " % recv_ns(ln) + pl, r"^bad json", "parse", pl, recv_ns(ln)))
    trade_variant("missing field", next(pick), lambda d: d.pop("p"), r"^missing field: .*field `p`")
    trade_variant("nan price", next(pick), lambda d: d.update(p="NaN"), r"^invalid field: .*\$(\.data)?\.p`")
    trade_variant("zero quantity", next(pick), lambda d: d.update(q="0.00000000"), r"^invalid field: .*\$(\.data)?\.q`")
    trade_variant("negative quantity", next(pick), lambda d: d.update(q="-" + d["q"]),
                  r"^invalid field: .*\$(\.data)?\.q`")
    t = next(pick)
    msg = json.loads(payload(real[t]))
    msg["stream"] = "btcusdt@bogus@100ms"
    pl = _compact(msg)
    out.append(Injected("unknown stream", t, b"%d " % recv_ns(real[t]) + pl, r"^unknown stream: btcusdt@bogus",
                        "parse", pl, recv_ns(real[t])))
    t = next(pick)
    out.append(Injected("no receive timestamp", t, payload(real[t]), r"^missing receive timestamp", "parse",
                        payload(real[t]), 0))
    t = next(pick)  # a byte that is not UTF-8, in a field ticklet does not read
    pl = payload(real[t]).replace(b'"e":"trade"', b'"e":"tr\xffde"')
    out.append(Injected("not utf-8", t, b"%d " % recv_ns(real[t]) + pl, r"^bad json: invalid UTF-8 at byte 41",
                        "parse", pl, recv_ns(real[t])))
    t = next(pick)  # a bare carriage return inside a broken line: one record, not two
    pl = payload(real[t])[:80] + b"\r" + payload(real[t])[80:-1]
    out.append(Injected("carriage return inside", t, b"%d " % recv_ns(real[t]) + pl, r"^bad json", "parse", pl,
                        recv_ns(real[t])))
    for name, at, bid in (("crossed quote", quotes[len(quotes) // 3], "above"),
                          ("locked quote", quotes[len(quotes) // 2], "equal")):
        ln = real[at]
        msg = json.loads(payload(ln))
        d = msg["data"]
        d["b"] = d["a"] if bid == "equal" else f"{float(d['a']) + 1.0:.8f}"
        pl = _compact(msg)
        out.append(Injected(name, at, b"%d " % recv_ns(ln) + pl, r"^crossed quote: bid .* >= ask ", "parse",
                            pl, recv_ns(ln)))
    # an implausible quote (check_ticks): its dead letter carries the line too
    at = quotes[2 * len(quotes) // 3]
    msg = json.loads(payload(real[at]))
    msg["data"].update(b=f"{float(msg['data']['b']) * 1.5:.2f}", a=f"{float(msg['data']['a']) * 1.5:.2f}")
    pl = _compact(msg)
    out.append(Injected("implausible quote", at, b"%d " % recv_ns(real[at]) + pl, r"^outside the price band",
                        "check_ticks", pl, recv_ns(real[at])))
    # a valid trade received 1.5 s before the latest event: later than the
    # default allowed lateness of 1000 ms
    t = next(pick)
    late_ts = recv_ns(real[t]) - 1_500_000_000
    msg = json.loads(payload(real[t]))
    msg["data"]["t"] += 10**9  # an id of its own: a copy of the real trade, passed on before, is its duplicate
    pl = _compact(msg)
    out.append(Injected("late trade", t, b"%d " % late_ts + pl, r"^late by 1500(\.0+)? ms", "make_bars", pl,
                        late_ts))
    assert len({i.after for i in out}) == len(out)
    return out


@pytest.fixture(scope="module")
def runs(ws_dir, tmp_path_factory):
    real = list(lines(ws_dir / SRC)[:N])
    inj = _build(real)
    by_pos = {i.after: i for i in inj}
    dirty = []
    for i, ln in enumerate(real):
        dirty.append(ln + b"\r" if i % 7 == 3 else ln)  # CRLF line endings: the same lines
        if i in by_pos:
            dirty.append(by_pos[i].line)
        if i % 1000 == 500:
            dirty.append(BLANKS[i // 1000 % len(BLANKS)])
    base = tmp_path_factory.mktemp("dead_letters")
    clean_in = write_gz(base / "clean" / "spot" / "btcusdt_20240808.gz", real)
    dirty_in = write_gz(base / "dirty" / "spot" / "btcusdt_20240808.gz", dirty)
    clean = run_backtest([str(clean_in)], base / "clean_out")
    dirty_summary = run_backtest([str(dirty_in)], base / "dirty_out")
    return real, inj, (clean, base / "clean_out"), (dirty_summary, base / "dirty_out")


def _dead_letters(out) -> list[dict]:
    return [json.loads(ln) for ln in (out / "dead_letters.jsonl").read_text().splitlines()]


def _raw(d: dict) -> bytes:
    """A dead letter's raw bytes, as the README says to read them."""
    return base64.b64decode(d["raw"]) if d["raw_base64"] else d["raw"].encode()


def test_one_dead_letter_per_injected_line(runs):
    _, inj, _, (_, out) = runs
    dead = _dead_letters(out)
    assert len(dead) == len(inj)
    unmatched = list(dead)
    for i in inj:
        hits = [d for d in unmatched if _raw(d) == i.raw]
        assert len(hits) == 1, i.name
        d = hits[0]
        unmatched.remove(d)
        assert re.search(i.reason, d["reason"]), (i.name, d["reason"])
        assert d["stage"] == i.stage and d["ts_recv"] == i.ts_recv, i.name
    assert unmatched == []


def test_late_dead_letter_carries_the_original_line(runs):
    """Item 9: the bar builder's dead letter of a late trade holds the message
    exactly as recorded, not the parsed event re-encoded."""
    real, inj, _, (_, out) = runs
    late = next(i for i in inj if i.name == "late trade")
    (d,) = [d for d in _dead_letters(out) if d["stage"] == "make_bars"]
    assert _raw(d) == payload(late.line) and json.loads(_raw(d))["data"]["p"] == json.loads(payload(
        real[late.after]))["data"]["p"]
    assert d["instrument"] == "BTCUSDT" and d["ts_recv"] == late.ts_recv and d["raw_size"] is None


def test_every_dead_letter_names_the_instrument_of_its_stream(runs):
    """Item 10: every injected line names btcusdt in its stream, bad JSON and
    lines without a receive timestamp included, so every dead letter is
    keyed by BTCUSDT (the Kafka dead-letter key)."""
    _, inj, _, (_, out) = runs
    dead = _dead_letters(out)
    assert len(dead) == len(inj) and all(b"btcusdt@" in i.line for i in inj)
    assert [d["instrument"] for d in dead] == ["BTCUSDT"] * len(dead)


def test_a_payload_that_is_not_utf8_keeps_its_exact_bytes(runs):
    """Item 8: the dead letter holds the bytes as recorded (base64), not a
    text with U+FFFD in place of the bad byte."""
    _, inj, _, (_, out) = runs
    bad = next(i for i in inj if i.name == "not utf-8")
    dead = _dead_letters(out)
    (d,) = [d for d in dead if d["raw_base64"]]  # the only one: the others are text
    assert base64.b64decode(d["raw"]) == bad.raw and b"\xff" in bad.raw and d["raw_size"] is None
    assert not any("\ufffd" in x["raw"] for x in dead)


def test_an_implausible_tick_is_dead_lettered_with_its_line(runs):
    """Item 9 for the plausibility check: its dead letters carry the line as
    received too."""
    _, inj, _, (_, out) = runs
    bad = next(i for i in inj if i.name == "implausible quote")
    (d,) = [d for d in _dead_letters(out) if d["stage"] == "check_ticks"]
    assert _raw(d) == bad.raw and d["instrument"] == "BTCUSDT"


def test_blank_lines_and_carriage_returns_are_counted_not_lost(runs):
    """Item 11: blank lines are counted skips; CRLF line endings are line
    endings (those lines parse as before); a bare \\r is part of its line."""
    real, inj, (_, clean_out), (_, out) = runs
    c = json.loads((out / "counters.json").read_text())
    blanks = sum(1 for i in range(len(real)) if i % 1000 == 500)
    assert c["skipped_blank_line"] == blanks > 10
    assert c["input_records"] == len(real) + len(inj) + blanks
    cr = next(i for i in inj if i.name == "carriage return inside")
    assert [_raw(d) for d in _dead_letters(out) if b"\r" in _raw(d)] == [cr.raw]


def test_counters_count_every_dead_letter_and_every_good_tick(runs):
    real, inj, (_, clean_out), (summary, out) = runs
    counters = json.loads((out / "counters.json").read_text())
    assert counters["dead_letters"] == len(inj) == summary["errors"]
    assert sum(stream_kind(json.loads(payload(ln))) == "snapshot" for ln in real) == 1
    assert "skipped_depth_snapshot" not in counters  # the REST snapshot is the book's start: a tick
    # every real line is a tick; so is the late trade, which parses and is
    # only rejected by the bar builder
    assert counters["ticks"] == len(real) + 2  # the late trade and the implausible quote
    clean = json.loads((clean_out / "counters.json").read_text())
    assert "dead_letters" not in clean and clean["ticks"] == len(real)
    # the dirty input is larger by its injected lines
    same = lambda c: {k: v for k, v in c.items()  # noqa: E731
                      if k not in ("dead_letters", "ticks", "input_bytes", "input_records", "parse_errors",
                                   "skipped_blank_line", "implausible_price_band")}
    assert same(counters) == same(clean)
    assert counters["implausible_price_band"] == clean.get("implausible_price_band", 0) + 1
    assert clean["input_bytes"] < counters["input_bytes"]
    # every line read is a tick, a parse error or a counted skip
    blanks = counters["skipped_blank_line"]
    assert clean["input_records"] == len(real) and counters["input_records"] == len(real) + len(inj) + blanks
    late = sum(i.stage != "parse" for i in inj)
    assert counters["parse_errors"] == len(inj) - late
    for c in (clean, counters):
        skips = sum(v for k, v in c.items() if k.startswith("skipped_"))
        assert c["input_records"] == c["ticks"] + c.get("parse_errors", 0) + skips


def test_flow_keeps_running_and_results_are_undisturbed(runs):
    _, _, (clean, clean_out), (dirty, out) = runs
    fc = (out / "forecasts.csv").read_bytes()
    assert dirty["forecasts"] > 0 and fc.count(b"\n") == dirty["forecasts"] + 1
    # the bad lines left no trace in any state: same bars, forecasts, metrics
    assert dirty["bars"] == clean["bars"] > 0
    assert fc == (clean_out / "forecasts.csv").read_bytes()
    assert (out / "metrics.csv").read_bytes() == (clean_out / "metrics.csv").read_bytes()


# --- instruments: the allow-list and the limit per source partition ---------------


def _with_fakes(real: list[bytes], n: int, first: int = 0) -> list[bytes]:
    """``real`` with ``n`` copies of its trades under fake, valid symbols
    (F000000USDT...), consistent in stream name and data, from line 100 on."""
    trades = [ln for ln in real[100:] if b'@trade"' in ln[:60]]
    out, k = list(real[:100]), 0
    step = max(1, (len(real) - 100) // n)
    for i, ln in enumerate(real[100:]):
        out.append(ln)
        if i % step == 0 and k < n:
            t = trades[k % len(trades)]
            msg = json.loads(payload(t))
            sym = f"F{first + k:06d}USDT"
            msg["stream"], msg["data"]["s"] = f"{sym.lower()}@trade", sym
            out.append(b"%d " % recv_ns(ln) + _compact(msg))
            k += 1
    assert k == n
    return out


def _run(paths, out, workers: int = 1, **input_settings):
    s = load_settings()
    s = s.model_copy(update={"input": s.input.model_copy(update=input_settings),
                             "output": s.output.model_copy(update={"summary": False})})
    return run_backtest([str(p) for p in paths], out, workers=workers, base=s)


def _rows(out, instrument: str) -> dict[str, list[str]]:
    return {name: [r for r in (out / name).read_text().splitlines()[1:] if r.startswith(instrument + ",")]
            for name in RECORD_FILES}


@pytest.mark.integration  # slow: whole runs over every recording
def test_instruments_beyond_the_limit_are_dead_lettered_and_counted(ws_dir, runs, tmp_path):
    """Item 5: the tester's 8,000 fake symbols; with TICKLET_INPUT__MAX_INSTRUMENTS=50
    the real instrument and the first 49 fakes are admitted, the other 7,951
    are dead-lettered and counted, and BTCUSDT's results are untouched."""
    real, _, (_, clean_out), _ = runs
    path = write_gz(tmp_path / "in" / "spot" / "btcusdt_20240808.gz", _with_fakes(real, 8000))
    _run([path], tmp_path / "out", max_instruments=50)
    c = json.loads((tmp_path / "out" / "counters.json").read_text())
    assert c["instruments_refused"] == 8000 - 49 == c["parse_errors"]
    dead = _dead_letters(tmp_path / "out")
    refused = [d for d in dead if d["reason"].startswith("too many instruments")]
    assert len(refused) == 7951 and {d["instrument"] for d in refused} == {f"F{k:06d}USDT" for k in range(49, 8000)}
    assert all(d["reason"].endswith("(TICKLET_INPUT__MAX_INSTRUMENTS=50)") for d in refused)
    assert _rows(tmp_path / "out", "BTCUSDT") == _rows(clean_out, "BTCUSDT")


@pytest.mark.integration  # slow: whole runs over every recording, two workers
def test_the_instrument_limit_holds_per_source_partition_with_two_workers(ws_dir, runs, tmp_path):
    """Item 5: each recording is a source partition with its own limit (3:
    its real instrument and 2 fakes), whatever worker parses it."""
    real, *_ = runs
    eth = list(lines(ws_dir / "spot/ethusdt_20240808.gz")[:N])
    p1 = write_gz(tmp_path / "in" / "spot" / "btcusdt_20240808.gz", _with_fakes(real, 100))
    p2 = write_gz(tmp_path / "in" / "spot" / "ethusdt_20240808.gz", _with_fakes(eth, 100, first=500))
    _run([p1, p2], tmp_path / "out", workers=2, max_instruments=3)
    c = json.loads((tmp_path / "out" / "counters.json").read_text())
    assert c["instruments_refused"] == 2 * (100 - 2)
    refused = {d["instrument"] for d in _dead_letters(tmp_path / "out")
               if d["reason"].startswith("too many instruments")}
    assert refused == {f"F{k:06d}USDT" for k in [*range(2, 100), *range(502, 600)]}


def test_the_allow_list_admits_only_its_instruments(ws_dir, runs, tmp_path):
    """Item 5: with TICKLET_INPUT__INSTRUMENTS=["BTCUSDT"], every ETHUSDT tick
    is dead-lettered with its line, and BTCUSDT's results are those of a run
    on its recording alone."""
    real, _, (_, clean_out), _ = runs
    eth = list(lines(ws_dir / "spot/ethusdt_20240808.gz")[:N])
    p1 = write_gz(tmp_path / "in" / "spot" / "btcusdt_20240808.gz", real)
    p2 = write_gz(tmp_path / "in" / "spot" / "ethusdt_20240808.gz", eth)
    _run([p1, p2], tmp_path / "out", instruments=["BTCUSDT"])
    c = json.loads((tmp_path / "out" / "counters.json").read_text())
    eth_ticks = len(eth)  # the REST snapshot among them: ETHUSDT's, from its file
    assert c["instruments_refused"] == eth_ticks == c["parse_errors"]
    dead = _dead_letters(tmp_path / "out")
    why = "instrument not allowed: ETHUSDT (TICKLET_INPUT__INSTRUMENTS)"
    assert Counter(d["reason"] for d in dead) == {why: eth_ticks}
    assert sorted(_raw(d) for d in dead) == sorted(payload(ln) for ln in eth)
    assert _rows(tmp_path / "out", "BTCUSDT") == _rows(clean_out, "BTCUSDT")
    assert _rows(tmp_path / "out", "ETHUSDT") == {name: [] for name in RECORD_FILES}

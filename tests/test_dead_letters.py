"""Bad input is dead-lettered with its reason and raw payload, counted, and
does not stop or disturb the dataflow.

A recording is built from the first real lines of spot/btcusdt_20240808.gz
with bad lines injected (each derived from a real neighbouring line), and the
whole dataflow is run on it and on the same lines without the injections.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
from realdata import lines, payload, recv_ns, stream_kind, write_gz

from ticklet.cli import run_backtest

SRC = "spot/btcusdt_20240808.gz"
N = 15_000  # about two minutes: enough bars for warm-up and the 10-bar horizon


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
    for name, at, bid in (("crossed quote", quotes[len(quotes) // 3], "above"),
                          ("locked quote", quotes[len(quotes) // 2], "equal")):
        ln = real[at]
        msg = json.loads(payload(ln))
        d = msg["data"]
        d["b"] = d["a"] if bid == "equal" else f"{float(d['a']) + 1.0:.8f}"
        pl = _compact(msg)
        out.append(Injected(name, at, b"%d " % recv_ns(ln) + pl, r"^crossed quote: bid .* >= ask ", "parse",
                            pl, recv_ns(ln)))
    # a valid trade received 1.5 s before the latest event: later than the
    # default allowed lateness of 1000 ms
    t = next(pick)
    late_ts = recv_ns(real[t]) - 1_500_000_000
    out.append(Injected("late trade", t, b"%d " % late_ts + payload(real[t]), r"^late by 1500(\.0+)? ms",
                        "make_bars", payload(real[t]), late_ts))
    assert len({i.after for i in out}) == len(out)
    return out


@pytest.fixture(scope="module")
def runs(ws_dir, tmp_path_factory):
    real = list(lines(ws_dir / SRC)[:N])
    inj = _build(real)
    by_pos = {i.after: i for i in inj}
    dirty = []
    for i, ln in enumerate(real):
        dirty.append(ln)
        if i in by_pos:
            dirty.append(by_pos[i].line)
    base = tmp_path_factory.mktemp("dead_letters")
    clean_in = write_gz(base / "clean" / "spot" / "btcusdt_20240808.gz", real)
    dirty_in = write_gz(base / "dirty" / "spot" / "btcusdt_20240808.gz", dirty)
    clean = run_backtest([str(clean_in)], base / "clean_out")
    dirty_summary = run_backtest([str(dirty_in)], base / "dirty_out")
    return real, inj, (clean, base / "clean_out"), (dirty_summary, base / "dirty_out")


def _dead_letters(out) -> list[dict]:
    return [json.loads(ln) for ln in (out / "dead_letters.jsonl").read_text().splitlines()]


def test_one_dead_letter_per_injected_line(runs):
    _, inj, _, (_, out) = runs
    dead = _dead_letters(out)
    assert len(dead) == len(inj)
    unmatched = list(dead)
    for i in inj:
        hits = [d for d in unmatched if d["raw"] == i.raw.decode() and not d["raw_base64"]]
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
    assert d["raw"].encode() == payload(real[late.after]) == payload(late.line)
    assert d["instrument"] == "BTCUSDT" and d["ts_recv"] == late.ts_recv and d["raw_size"] is None


def test_every_dead_letter_names_the_instrument_of_its_stream(runs):
    """Item 10: every injected line names btcusdt in its stream, bad JSON and
    lines without a receive timestamp included, so every dead letter is
    keyed by BTCUSDT (the Kafka dead-letter key)."""
    _, inj, _, (_, out) = runs
    dead = _dead_letters(out)
    assert len(dead) == len(inj) and all(b"btcusdt@" in i.line for i in inj)
    assert [d["instrument"] for d in dead] == ["BTCUSDT"] * len(dead)


def test_counters_count_every_dead_letter_and_every_good_tick(runs):
    real, inj, (_, clean_out), (summary, out) = runs
    counters = json.loads((out / "counters.json").read_text())
    assert counters["dead_letters"] == len(inj) == summary["errors"]
    skipped = sum(stream_kind(json.loads(payload(ln))) == "snapshot" for ln in real)
    assert skipped == 1 and counters["skipped_depth_snapshot"] == skipped
    # every real line but the skipped snapshot is a tick; so is the late
    # trade, which parses and is only rejected by the bar builder
    assert counters["ticks"] == len(real) - skipped + 1
    clean = json.loads((clean_out / "counters.json").read_text())
    assert "dead_letters" not in clean and clean["ticks"] == len(real) - skipped
    # the dirty input is larger by its injected lines
    same = lambda c: {k: v for k, v in c.items()  # noqa: E731
                      if k not in ("dead_letters", "ticks", "input_bytes", "input_records", "parse_errors")}
    assert same(counters) == same(clean)
    assert clean["input_bytes"] < counters["input_bytes"]
    # every line read is a tick, a parse error or a counted skip
    assert clean["input_records"] == len(real) and counters["input_records"] == len(real) + len(inj)
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

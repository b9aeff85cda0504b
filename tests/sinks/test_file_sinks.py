"""File sinks through real (small) Bytewax dataflows, read back; and their
recovery semantics: a resumed partition truncates to its snapshot offset, so
nothing written after the last snapshot is duplicated."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any, Optional, get_args

import bytewax.operators as op
import msgspec
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from core.events import Count, ErrorRecord, ForecastRecord, MetricsRecord, RawChunk, Trade
from dataflows import ops
from harness.realdata import SCRATCH, csv_dicts, lines, payload, recv_ns
from sinks.files import CounterSink, CsvSink, JsonLinesSink
from sources.binance import parse_chunk, parse_ws

set_hypothesis_home_dir(SCRATCH / "hypothesis")  # not .hypothesis/ in the checkout

_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str, "Optional[float]": Optional[float],
                          "Optional[int]": Optional[int]}


def from_csv(cls, row: dict[str, str]):
    """A record from a CSV row, by the record's field annotations."""
    vals = {}
    for f in cls.__struct_fields__:
        t = _TYPES[cls.__annotations__[f]]
        s = row[f]
        if get_args(t):  # Optional[x]: empty is None
            vals[f] = None if s == "" else get_args(t)[0](s)
        else:
            vals[f] = t(s)
    return cls(**vals)


def run_records(items: list, sink, batch_size: int = 37) -> None:
    flow = Dataflow("sink_test")
    s = op.input("in", flow, TestingSource(items, batch_size=batch_size))
    op.output("out", ops.key_records("key", s), sink)
    run_main(flow)


@pytest.mark.parametrize("cls", [ForecastRecord, MetricsRecord])
def test_csv_sink_round_trip(btc_spot_chain, tmp_path, cls):
    recs = (btc_spot_chain.forecasts if cls is ForecastRecord else btc_spot_chain.metrics)[:700]
    if cls is MetricsRecord:  # real records with empty (None) fields are in the batch
        assert any(r.hit_rate is None for r in recs) and any(r.skill is not None for r in recs)
    path = tmp_path / "x" / "records.csv"
    run_records(recs, CsvSink(path, cls))
    rows = csv_dicts(path)
    assert list(rows[0]) == list(cls.__struct_fields__)
    assert [from_csv(cls, r) for r in rows] == recs
    assert path.read_bytes().count(b"\r\n") == len(recs) + 1


def test_json_lines_sink_round_trip(ws_dir, tmp_path):
    real = lines(ws_dir / "spot" / "btcusdt_20240809.gz")[:3000]
    trades = [e for e in (parse_ws(recv_ns(ln), payload(ln), "spot") for ln in real) if type(e) is Trade]
    # real lines broken in transit, plus a raw payload that needs escaping
    errors = [parse_ws(recv_ns(ln), payload(ln)[:-7], "spot") for ln in real[:50]]
    errors.append(ErrorRecord("parse", "bad json: test", 'line\nbreak "quoted" \u00e9\u20ac', "BTCUSDT", 1))
    assert all(type(e) is ErrorRecord for e in errors) and trades
    path_t, path_e = tmp_path / "trades.jsonl", tmp_path / "dead.jsonl"
    run_records(trades, JsonLinesSink(path_t))
    run_records(errors, JsonLinesSink(path_e))
    got_t = [msgspec.json.decode(ln, type=Trade) for ln in path_t.read_bytes().splitlines()]
    got_e = [msgspec.json.decode(ln, type=ErrorRecord) for ln in path_e.read_bytes().splitlines()]
    assert got_t == trades
    assert got_e == errors  # one line per record, raw payload intact
    assert got_e[0].raw == payload(real[0])[:-7].decode()


def test_counter_sink_totals(ws_dir, tmp_path):
    real = list(lines(ws_dir / "usdm" / "btcusdt_20230404.dat.gz"))
    counts = []
    for i in range(0, len(real), 1000):
        _, _, c = parse_chunk(RawChunk("ws", "usdm", "BTCUSDT", real[i : i + 1000]))
        counts.extend(Count(k, v) for k, v in c.items() if v)
    _, _, whole = parse_chunk(RawChunk("ws", "usdm", "BTCUSDT", real))
    path = tmp_path / "counters.json"
    run_records(counts, CounterSink(path), batch_size=5)
    assert json.loads(path.read_text()) == whole
    assert not path.with_suffix(".tmp").exists()


# --- recovery ------------------------------------------------------------------

def _writes(sink, resume, batches: list[list]):
    (part,) = sink.list_parts()
    p = sink.build_part("out", part, resume)
    snaps = []
    for b in batches:
        p.write_batch(b)
        snaps.append(p.snapshot())
    p.close()
    return snaps


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_resumed_partition_truncates_to_its_offset(btc_spot_chain, tmp_path, kind):
    recs = btc_spot_chain.forecasts[:300]

    def make(path):
        return CsvSink(path, ForecastRecord) if kind == "csv" else JsonLinesSink(path)

    ref = tmp_path / "ref"
    _writes(make(ref), None, [recs])
    path = tmp_path / "out"
    snap, _ = _writes(make(path), None, [recs[:100], recs[100:200]])  # crash after the 2nd batch
    offset, digest = snap  # the offset, and the SHA-256 of the bytes before it
    assert path.stat().st_size > offset and digest == hashlib.sha256(path.read_bytes()[:offset]).hexdigest()
    sink = make(path)
    (part,) = sink.list_parts()
    p = sink.build_part("out", part, snap)  # resume from the snapshot taken after 100 records
    assert path.stat().st_size == offset  # what came after the snapshot is gone
    p.write_batch(recs[100:])  # the replayed records
    p.close()
    assert path.read_bytes() == ref.read_bytes()
    if kind == "csv":
        assert path.read_bytes().count(b"instrument,model,horizon") == 1  # no second header


def test_resumed_counter_partition_continues_its_totals(tmp_path):
    path = tmp_path / "counters.json"
    sink = CounterSink(path)
    (part,) = sink.list_parts()
    p = sink.build_part("out", part, {"ticks": 40, "bars": 2})
    assert json.loads(path.read_text()) == {"bars": 2, "ticks": 40}
    p.write_batch([Count("ticks", 2), Count("dead_letters", 1), Count("ticks", 3)])
    assert p.snapshot() == {"bars": 2, "ticks": 45, "dead_letters": 1}
    p.close()
    assert json.loads(path.read_text()) == {"bars": 2, "dead_letters": 1, "ticks": 45}


@pytest.mark.parametrize("epoch", [timedelta(0), timedelta(seconds=60)])
def test_dataflow_resume_after_abort_duplicates_nothing(btc_spot_chain, tmp_path, epoch):
    """A Bytewax run with recovery aborts mid-stream and is resumed: every
    sink's file equals that of an uninterrupted run. With a long epoch no
    snapshot was taken before the abort, so everything is rewritten."""
    recs = btc_spot_chain.forecasts[:120]

    def flow(out, items):
        f = Dataflow("resume_test")
        s = op.input("in", f, TestingSource(items))
        fc = op.filter("fc", s, lambda x: type(x) is ForecastRecord)
        op.output("csv", ops.key_records("k1", fc), CsvSink(out / "forecasts.csv", ForecastRecord))
        op.output("jsonl", ops.key_records("k2", fc), JsonLinesSink(out / "forecasts.jsonl"))
        cnt = op.map("count", fc, lambda x: Count("forecasts", 1))
        op.output("counters", ops.key_records("k3", cnt), CounterSink(out / "counters.json"))
        return f

    run_main(flow(tmp_path / "ref", recs))
    db = tmp_path / "db"
    db.mkdir()
    init_db_dir(db, 1)
    items = recs[:70] + [TestingSource.ABORT()] + recs[70:]
    run_main(flow(tmp_path / "out", items), epoch_interval=epoch, recovery_config=RecoveryConfig(db))
    first = csv_dicts(tmp_path / "out" / "forecasts.csv")
    assert len(first) == 70  # the first execution stopped at the abort
    run_main(flow(tmp_path / "out", items), epoch_interval=epoch, recovery_config=RecoveryConfig(db))
    for name in ("forecasts.csv", "forecasts.jsonl", "counters.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    assert json.loads((tmp_path / "out" / "counters.json").read_text()) == {"forecasts": len(recs)}


_CELLS = st.one_of(
    st.none(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.sampled_from(["null", "true", "a,b", 'q"x', "x]", "[y", "],[", "l\nm", "\\", "é", ""]))


class _Row(msgspec.Struct):
    a: Any
    b: Any
    c: Any


def _read_back(text: str) -> list:
    """The cells of CSV text as ``csv.reader`` reads them, numbers as floats (NaN as ``"nan"``)."""
    import csv
    import io
    import math

    def norm(v: str) -> Any:
        try:
            f = float(v)
        except ValueError:
            return v
        return "nan" if math.isnan(f) else f
    return [[norm(v) for v in r] for r in csv.reader(io.StringIO(text, newline=""))]


def _csv_module(rows: list) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(rows=st.lists(st.lists(_CELLS, min_size=1, max_size=4), min_size=1, max_size=5))
def test_csv_cells_read_back_as_the_csv_module_writes_them(rows):
    """``csv_cells`` (msgspec's JSON turned into CSV, or the csv module where a
    row needs it: a comma or quote in a string, a NaN) reads back with
    ``csv.reader`` as the rows the csv module writes: the same cells, floats
    equal as floats (their text may differ: ``1e-6`` for ``1e-06``)."""
    from sinks.records import csv_cells

    got = csv_cells([tuple(r) for r in rows])
    assert got.endswith(b"\r\n")
    assert _read_back(got.decode()) == _read_back(_csv_module(rows))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(rows=st.lists(st.tuples(st.one_of(_CELLS, st.booleans(), st.just((1, 2))), _CELLS, _CELLS), min_size=1,
                     max_size=5))
def test_csv_bytes_of_records_read_back_as_the_csv_module_writes_them(rows):
    """``csv_bytes`` of records whose fields may hold anything (a bool, a
    tuple: the csv module's path) reads back as the csv module's rows."""
    from sinks.records import csv_bytes

    got = csv_bytes([_Row(*r) for r in rows])
    assert _read_back(got.decode()) == _read_back(_csv_module(rows))


def test_real_records_take_the_fast_path_and_read_back_as_they_were(btc_spot_chain):
    """The records a run writes (forecasts, metrics: None cells among them)
    take msgspec's path, and read back as the csv module's rows."""
    from sinks import records

    recs = btc_spot_chain.metrics[:500]
    assert records._plain(MetricsRecord) and any(r.hit_rate is None for r in recs)
    rows = [msgspec.structs.astuple(r) for r in recs]
    got = records.csv_bytes(recs)
    assert got == records.csv_cells(rows) and b"null" not in got and b'"' not in got
    assert _read_back(got.decode()) == _read_back(_csv_module(rows))


def test_csv_bytes_floats_are_msgspecs_on_both_paths():
    """A float is written in one form whichever path a batch takes (here a
    comma in a string sends the second batch through the csv module)."""
    from sinks.records import csv_bytes

    assert csv_bytes([_Row(1e-06, 1e16, "x")]) == b"1e-6,1e16,x\r\n"
    assert csv_bytes([_Row(1e-06, 1e16, "x,y")]) == b'1e-6,1e16,"x,y"\r\n'
    assert csv_bytes([_Row(float("nan"), float("-inf"), None)]) == b"nan,-inf,\r\n"

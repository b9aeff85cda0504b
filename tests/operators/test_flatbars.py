"""The bars and their book over runs of events in compiled code (:mod:`operators.flatbars`) against the step.

The dataflow's bars step (:class:`dataflows.ops.StepLogic` with
:func:`operators.depth.run`) takes a chunk's events in runs by the kernel and
the others one by one with :func:`operators.depth.step`. On the repository's
recordings, as recorded and edited so that every way a run can end happens
(a bar's end, a late line, a gap in the diffs, a diff that crosses the book,
lines the scanner leaves to the parser), it gives the outputs of stepping
every event, and the same state after every chunk, to the bit.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from dataflows.ops import Side, StepLogic
from harness.realdata import chunk_batches, lines
from operators import depth
from operators.bars import BarConfig
from operators.depth import DepthConfig, DepthState

DATA = Path(__file__).resolve().parents[1] / "data" / "binance-ws"
RECORDINGS = [("usdm", "BTCUSDT", DATA / "usdm" / "btcusdt_20230404.dat.gz"),
              ("usdm", "BTCUSDT", DATA / "usdm" / "btcusdt_20230405.dat.gz"),
              ("spot", "BTCUSDT", DATA / "spot" / "btcusdt_20240808.gz"),
              ("spot", "ETHUSDT", DATA / "spot" / "ethusdt_20240809.gz")]


def _state_of(st: DepthState) -> tuple:
    """What a compiled :class:`DepthState` holds, comparable (a book's arrays by their levels)."""
    b, book, f = st.bars, st.book, st.book.flat
    assert f is not None and st.flat is not None and st.counts is not None
    bars = tuple(getattr(b, k) for k in b.__slots__ if k != "config")
    return (bars, book.status, book.last_id, book.ts_event, book.requested, len(book.buffer), f.levels(0), f.levels(1),
            repr(f.bid), repr(f.ask), st.seen, st.live, st.updates, st.flat.tobytes(), st.counts.tobytes())


def _outputs(res: Iterable) -> list:
    """A step logic's outputs, its side outputs (dead letters, counts) as lists."""
    return [(r.errors, r.counts) if type(r) is Side else r for r in res]


def _compare(market: str, symbol: str, rows: list[bytes], bars: BarConfig) -> tuple[int, int]:
    """The dataflow's bars step over the chunk path's batches, event by event and with runs: (events, in runs)."""
    cfg = DepthConfig()
    taken = [0]

    def counted(state, events, cols, i):  # depth.run, counting the events it takes
        state, j, out = depth.run(state, events, cols, i)
        taken[0] += j - i
        return state, j, out

    ref = StepLogic(depth.step, DepthState(bars, cfg, True), True, None, "test")
    logic = StepLogic(depth.step, DepthState(bars, cfg, True), True, None, "test", run=counted)
    n = 0
    for batch in chunk_batches(market, symbol, rows):
        assert batch.cols is not None and len(batch.cols) == len(batch)
        want, _ = ref.on_batch([batch])
        got, _ = logic.on_batch([batch])
        assert _outputs(got) == _outputs(want)
        assert _state_of(logic.state) == _state_of(ref.state)
        n += len(batch)
    return n, taken[0]


@pytest.mark.parametrize(("market", "symbol", "path"), RECORDINGS, ids=lambda x: getattr(x, "name", x))
def test_runs_give_the_steps_outputs_and_state_on_the_recordings(market, symbol, path):
    n, taken = _compare(market, symbol, list(lines(path)), BarConfig())
    assert n > 1000
    assert taken > 0.8 * n, (taken, n)  # most events go in runs, not one by one


def _edited(paths: list[Path], edit: str) -> list[bytes]:
    """USD-M recordings, one after the other, edited: a diff dropped (``gap``) or one whose best bid is far above
    the asks (``crossed``), two lines moved a few hundred lines on (late), a line the scanner leaves to the
    parser (its keys in another order)."""
    rows = [r for p in paths for r in lines(p)]
    diffs = [i for i, r in enumerate(rows) if b"@depth" in r[:80]]
    at = diffs[2 * len(diffs) // 3]
    if edit == "crossed":
        row = rows[at]
        k = row.index(b'"b":[["') + 7
        rows[at] = row[:k] + b"999999.9" + row[row.index(b'"', k):]
    quotes = [i for i, r in enumerate(rows) if b"@bookTicker" in r[:80]]
    odd = quotes[len(quotes) // 2]
    rows[odd] = (rows[odd].replace(b'{"e":"bookTicker","u":', b'{"u":', 1)
                 .replace(b',"s":', b',"e":"bookTicker","s":', 1))
    if edit == "gap":
        del rows[at]
    trades = [i for i, r in enumerate(rows) if b"@trade" in r[:80]]
    for k in sorted((quotes[len(quotes) // 4], trades[len(trades) // 2]), reverse=True):  # each late at its place
        rows.insert(k + 400, rows.pop(k))
    return rows


@pytest.mark.parametrize("edit", ["gap", "crossed"])
def test_runs_give_the_steps_outputs_and_state_where_every_kind_of_stop_happens(edit):
    rows = _edited([DATA / "usdm" / "btcusdt_20230404.dat.gz", DATA / "usdm" / "btcusdt_20230405.dat.gz"], edit)
    bars = BarConfig(allowed_lateness_ms=100)
    # the edits do what they are for, on the reference's step
    ref = DepthState(bars, DepthConfig(), True)
    counts: dict = {}
    reasons = []
    for batch in chunk_batches("usdm", "BTCUSDT", rows):
        for ev in batch:
            ref, out = depth.step(ref, ev)
            for o in out:
                if type(o).__name__ == "Count":
                    counts[o.name] = counts.get(o.name, 0) + o.n
                elif type(o).__name__ == "ErrorRecord":
                    reasons.append(o.reason)
    assert counts.get({"gap": "depth_gaps", "crossed": "crossed_books"}[edit]) == 1, counts
    assert sum(r.startswith("late by") for r in reasons) >= 2, reasons[:5]
    n, taken = _compare("usdm", "BTCUSDT", rows, bars)
    assert 0 < taken < n


def test_a_run_ends_before_the_first_event_a_bar_closes_on():
    rows = list(lines(DATA / "usdm" / "btcusdt_20230404.dat.gz"))[:3000]
    (batch, *_) = chunk_batches("usdm", "BTCUSDT", rows, size=3000)
    st = DepthState(BarConfig(), DepthConfig(), True)
    st, j, out = depth.run(st, batch, batch.cols, 0)
    assert (j, out) == (0, [])  # no bar open yet: the first event opens one, by the step
    st, _ = depth.step(st, batch[0])
    i, closes = 1, []
    while i < len(batch):  # runs, each ended by an event the step takes: a bar's end, the snapshot, the first diffs
        st, j, out = depth.run(st, batch, batch.cols, i)
        end = st.bars.start + st.bars.interval
        assert out == [] and all(e.ts_recv < end for e in batch[i:j])
        if j == len(batch):
            break
        st, out = depth.step(st, batch[j])
        if batch[j].ts_recv >= end:
            assert out and type(out[0]).__name__ == "Bar" and out[0].ts_end == end
            closes.append(j - i)
        else:
            assert not any(type(o).__name__ == "Bar" for o in out)
        i = j + 1
    assert len(closes) > 10 and max(closes) > 100  # runs of a bar's events, each up to the event at its end


def test_a_state_without_a_compiled_book_takes_no_run():
    rows = list(lines(DATA / "usdm" / "btcusdt_20230404.dat.gz"))[:500]
    (batch, *_) = chunk_batches("usdm", "BTCUSDT", rows)
    st = DepthState(BarConfig(), DepthConfig(), False)
    assert depth.run(st, batch, batch.cols, 0)[1:] == (0, [])


def test_the_columns_follow_the_events_when_lines_are_dropped():
    rows = list(lines(DATA / "usdm" / "btcusdt_20230404.dat.gz"))[:300]
    rows.insert(5, b"garbage")
    (batch, *_) = chunk_batches("usdm", "BTCUSDT", rows)
    c = batch.cols
    assert len(c) == len(batch) < 300
    kinds = [int(c.kind[k]) for k in range(len(c))]
    assert kinds == [{"Quote": 1, "Trade": 2, "DepthUpdate": 3}.get(type(e).__name__, 0) for e in batch]
    assert 0 in kinds  # the snapshot, which the parser made
    for k, ev in enumerate(batch):
        if kinds[k]:
            ident = (None, "update_id", "trade_id", "last_id")[kinds[k]]
            assert (c.ts_recv[k], c.ids[k]) == (ev.ts_recv, getattr(ev, ident))
        if kinds[k] == 1:
            assert c.values[k].tolist() == [ev.bid, ev.bid_qty, ev.ask, ev.ask_qty]

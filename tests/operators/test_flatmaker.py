"""The maker books over runs of events in compiled code (:mod:`operators.flatmaker`) against the Python path.

:func:`operators.maker.step_batch` fed a batch with its columns (the chunk
path's) steps the events that change only the book, the clocks and the
queues by runs of the kernel, and the others (decisions, orders going live
or settling, fills, the book's rules) with :func:`operators.maker.step`. On
the repository's recordings, with decisions of two model books every
second, under each queue model and the settings that change the kernel's
arithmetic (power n integral or not, the feed latency model, skew, distance,
signal sizing, one side, few fills waiting), it gives the Python path's
outputs, and the same state after every batch: the resting orders with
their queues, the book, the clocks, the mid's record, the fills waiting.
Also with a crossed book (an edited diff), and across a pickle in the middle.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.events import MakerFillRecord, Signal
from harness.realdata import chunk_batches, lines
from operators import flatmaker
from operators.maker import MakerConfig, QuoterState, step_batch

DATA = Path(__file__).resolve().parents[1] / "data" / "binance-ws"
USDM = [DATA / "usdm" / "btcusdt_20230404.dat.gz", DATA / "usdm" / "btcusdt_20230405.dat.gz"]
SPOT = [DATA / "spot" / "btcusdt_20240808.gz"]
CONFIGS = {
    "risk_averse": MakerConfig(enabled=True),
    "power2": MakerConfig(enabled=True, queue="power", power_n=2.0, skew_ticks=0.5, sizing="signal"),
    "power2.5": MakerConfig(enabled=True, queue="power", power_n=2.5, distance_ticks=1, latency_model="feed"),
    "log": MakerConfig(enabled=True, queue="log", max_pending_fills=2, late_ms=0.0, sides="bid", latency_ms=1.0),
    "power3_no_baseline": MakerConfig(enabled=True, queue="power", power_n=3.0, baseline=False, quote_lots=3),
    "offset_inventory": MakerConfig(enabled=True, clock_offset_ms=26.932, latency_model="feed", latency_ms=2.0,
                                    feed_latency_mul=1.5, max_inventory_lots=2, skew_ticks=2.0),
}
#: what the kernel may set differently and the Python path sets later, the same (see operators.maker._watch)
_DERIVED = {"config", "book", "sides", "dirty", "live", "watch_b", "watch_a", "hi_b", "lo_a"}


def _state_of(st: QuoterState) -> tuple:
    b = st.book
    f = b.flat
    assert f is not None
    book = repr((b.status, b.last_id, b.ts_event, f.bid, f.ask, f.levels(0), f.levels(1)))
    return (book, *(repr(getattr(st, k)) for k in st.__slots__ if k not in _DERIVED))


def _signals(batch: list, rng: random.Random) -> list:
    """Two model books' decisions at each whole second the batch spans."""
    lo, hi = batch[0].ts_recv, batch[-1].ts_recv
    out = []
    for t in range((lo // 10**9 + 1) * 10**9, hi, 10**9):
        for model, h in (("linear", 1), ("naive", 10)):
            out.append(Signal(batch[0].instrument, model, h, t, 1, None, rng.uniform(-3e-4, 3e-4),
                              rng.uniform(-0.5, 0.5)))
    return out


def _compare(market: str, symbol: str, rows: list[bytes], cfg: MakerConfig, monkeypatch: pytest.MonkeyPatch,
             size: int = 2048, decided: bool = True) -> tuple[int, int, int, int]:
    """Both paths over the chunk path's batches: (events, events the kernel took, diffs it left applied, fills).

    Also checks that the kernel took nearly every decision (``decided``), or
    none, and that most fills went out in its runs (with the state after
    the event that let them: each book's orders sent, the mid, the depth
    stream's time, which their economics records show).
    """
    seen = [0, 0, 0, 0]
    advance = flatmaker.advance

    def counted(st, cols, i, *args):
        quotes = st.quotes
        run = advance(st, cols, i, *args)
        seen[0] += run.j - i
        seen[1] += run.code == flatmaker.APPLIED
        seen[2] += st.quotes - quotes
        seen[3] += sum(s[2] for s in run.settles)
        return run

    monkeypatch.setattr(flatmaker, "advance", counted)
    batches = chunk_batches(market, symbol, rows, size)
    inst = batches[0][0].instrument
    ref, got = QuoterState(cfg, inst, compiled=True), QuoterState(cfg, inst, compiled=True)
    rng = random.Random(7)
    n = fills = 0
    for b, batch in enumerate(batches):
        assert batch.cols is not None and len(batch.cols) == len(batch)
        sigs = _signals(batch, rng)
        ref, want = step_batch(ref, [list(batch), *sigs])  # a plain list: the Python path
        got, have = step_batch(got, [batch, *sigs])
        assert have == want
        assert _state_of(got) == _state_of(ref), b
        if b == len(batches) // 2:  # a snapshot and a recovery in the middle
            got = pickle.loads(pickle.dumps(got))
        n += len(batch)
        fills += sum(type(r) is MakerFillRecord for r in want)
    assert got.quotes > 200 and (seen[2] > 0.9 * got.quotes if decided else seen[2] == 0), (seen[2], got.quotes)
    assert seen[3] > 0.5 * fills, (seen[3], fills)
    return n, seen[0], seen[1], fills


@pytest.mark.parametrize("name", list(CONFIGS))
def test_runs_give_the_python_paths_outputs_and_state_on_the_usdm_recordings(name, monkeypatch):
    rows = [r for p in USDM for r in lines(p)]
    n, taken, applied, fills = _compare("usdm", "BTCUSDT", rows, CONFIGS[name], monkeypatch)
    assert n > 70_000 and fills >= 10
    assert taken > 0.9 * n, (taken, n)  # nearly every event in runs, not one by one
    assert applied > 0  # diffs that fill, finished in Python


def test_runs_give_the_python_paths_outputs_and_state_on_spot(monkeypatch):
    rows = [r for p in SPOT for r in lines(p)]
    n, taken, _, fills = _compare("spot", "BTCUSDT", rows, CONFIGS["power2"], monkeypatch)
    assert n > 30_000 and fills >= 10
    assert taken > 0.9 * n, (taken, n)


def test_a_crossed_book_is_the_same_on_both_paths(monkeypatch):
    """A diff near the end of the recordings with a bid above every ask: the book resyncs, on both paths alike."""
    rows = [r for p in USDM for r in lines(p)]
    depth = [i for i, r in enumerate(rows) if b"@depth" in r[:80]]
    k = depth[int(len(depth) * 0.95)]
    rows[k] = rows[k].replace(b'"b":[', b'"b":[["99999.00","1.000"],', 1)
    assert b"99999.00" in rows[k]
    n, taken, applied, _ = _compare("usdm", "BTCUSDT", rows, CONFIGS["risk_averse"], monkeypatch, size=997)
    assert applied > 0 and taken > 0.9 * n


def test_the_kernels_prices_are_pythons_round_of_the_grid():
    """The kernel prices a quote ``k`` ticks up as ``k x m / 10**decimals``
    (``flatmaker._grid``), not with Python's ``round(k x tick, decimals)``:
    the same floats, on the grids of Binance's symbols and beyond."""
    rng = random.Random(3)
    for tick, decimals in ((0.1, 1), (0.01, 2), (0.5, 1), (0.001, 3), (1e-8, 8), (1.0, 0), (5.0, 0), (0.05, 2)):
        m, scale = flatmaker._grid(SimpleNamespace(tick=tick, decimals=decimals))
        assert m > 0
        for _ in range(20_000):
            k = rng.choice([rng.randrange(-10**6, 10**6), rng.randrange(1, int(2**50 / m))])
            assert k * m / scale == round(k * tick, decimals), (tick, k)


def test_decisions_the_kernel_cannot_price_are_the_python_steps(monkeypatch):
    """Where the tick is not a whole number of its last decimal (0.25 with one decimal,
    say), every decision stops the run and the Python step takes it: the same outputs and state."""
    monkeypatch.setattr(flatmaker, "_grid", lambda st: (-1.0, 1.0))
    rows = [r for p in USDM[:1] for r in lines(p)]
    n, taken, _, fills = _compare("usdm", "BTCUSDT", rows, CONFIGS["power2"], monkeypatch, decided=False)
    assert fills >= 10 and taken > 0.8 * n

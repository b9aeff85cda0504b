"""The plausibility checks over runs of events in compiled code (:mod:`operators.flatsanity`) against the Python path.

:func:`operators.sanity.step_batch` fed a batch with its columns (the chunk
path's) passes events on by runs of the kernel, the others one by one with
:func:`operators.sanity.step`. On the repository's recordings, as recorded
and edited so that the checks fire (a duplicate trade, a gap in the trade
ids, a line from the future, prices out of the band, a notional over the
cap), and under settings that make the band's window turn over at every
price, it gives the outputs of the Python path, the same event objects in
the same order, and the same state after every batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.realdata import chunk_batches, lines
from operators import flatsanity
from operators.sanity import SanityConfig, SanityState, step_batch

DATA = Path(__file__).resolve().parents[1] / "data" / "binance-ws"
USDM = [DATA / "usdm" / "btcusdt_20230404.dat.gz", DATA / "usdm" / "btcusdt_20230405.dat.gz"]
RECORDINGS = [("usdm", "BTCUSDT", USDM), ("spot", "BTCUSDT", [DATA / "spot" / "btcusdt_20240808.gz"]),
              ("spot", "ETHUSDT", [DATA / "spot" / "ethusdt_20240809.gz"])]


def _state_of(st: SanityState) -> tuple:
    return tuple(repr(getattr(st, k)) for k in st.__slots__ if k != "config")


def _compare(market: str, symbol: str, rows: list[bytes], cfg: SanityConfig, monkeypatch: pytest.MonkeyPatch,
             size: int = 2048) -> tuple[int, int, dict[str, int]]:
    """Both paths over the chunk path's batches: (events, events the kernel passed, the counts)."""
    taken = [0]
    run = flatsanity.run

    def counted(st, cols, i, n, most_gaps):
        j, priced = run(st, cols, i, n, most_gaps)
        taken[0] += j - i
        return j, priced

    monkeypatch.setattr(flatsanity, "run", counted)
    ref, got = SanityState(cfg), SanityState(cfg)
    n = 0
    counts: dict[str, int] = {}
    for batch in chunk_batches(market, symbol, rows, size):
        assert batch.cols is not None and len(batch.cols) == len(batch)
        ref, want = step_batch(ref, list(batch))  # a plain list: the Python path
        got, have = step_batch(got, batch)
        assert len(have) == len(want)
        for h, w in zip(have, want, strict=True):
            if type(w) is list:
                assert len(h) == len(w) and all(a is b for a, b in zip(h, w, strict=True))
            else:
                assert h == w
                if type(w).__name__ == "Count":
                    counts[w.name] = counts.get(w.name, 0) + w.n
        assert _state_of(got) == _state_of(ref)
        n += len(batch)
    return n, taken[0], counts


@pytest.mark.parametrize(("market", "symbol", "paths"), RECORDINGS, ids=lambda x: getattr(x, "name", x))
def test_runs_give_the_python_paths_outputs_and_state_on_the_recordings(market, symbol, paths, monkeypatch):
    rows = [r for p in paths for r in lines(p)]
    n, taken, _ = _compare(market, symbol, rows, SanityConfig(), monkeypatch)
    assert n > 10_000
    assert taken > 0.95 * n, (taken, n)  # nearly every event in runs, not one by one


def _edited() -> list[bytes]:
    """The USD-M recordings with a trade line twice, a trade line dropped (a gap in the ids), a quote 40 s ahead of
    its time, and two trades far out of the band."""
    rows = [r for p in USDM for r in lines(p)]
    trades = [i for i, r in enumerate(rows) if b"@trade" in r[:80]]
    quotes = [i for i, r in enumerate(rows) if b"@bookTicker" in r[:80]]
    t_dup, t_gap, t_far, q_future = trades[len(trades) // 3], trades[len(trades) // 2], trades[2 * len(trades) // 3], \
        quotes[len(quotes) // 4]
    far = rows[t_far]
    k = far.index(b'"p":"') + 5
    rows[t_far] = far[:k] + b"9" + far[k:]  # ten times and more the price
    rows.insert(t_far + 1, rows[t_far])
    ts, rest = rows[q_future].split(b" ", 1)
    rows[q_future] = str(int(ts) + 40_000_000_000).encode() + b" " + rest
    del rows[t_gap]
    rows.insert(t_dup + 1, rows[t_dup])
    return rows


@pytest.mark.parametrize("cfg", [
    SanityConfig(),
    SanityConfig(window=5, sample_ms=0, duplicate_window=50),  # every price sampled, the window turning over
    SanityConfig(price_band=0.0005, reanchor_after=3),  # a band so tight that prices leave it, and re-anchor it
    SanityConfig(max_notional=50_000.0),  # a cap that some trades, quotes and depth levels pass
], ids=["default", "small-window", "tight-band", "low-cap"])
def test_runs_give_the_python_paths_outputs_where_the_checks_fire(cfg, monkeypatch):
    # in batches of 97 lines: the states compared after each, so that a difference lasting a few events shows
    n, taken, counts = _compare("usdm", "BTCUSDT", _edited(), cfg, monkeypatch, size=97)
    assert 0 < taken < n
    assert counts.get("duplicate_trades", 0) >= 1, counts
    assert any(k.startswith("implausible_") for k in counts), counts


def test_a_state_still_warming_up_takes_no_run(monkeypatch):
    rows = list(lines(USDM[0]))[:300]
    n, taken, _ = _compare("usdm", "BTCUSDT", rows, SanityConfig(warmup=1000), monkeypatch)
    assert n > 100 and taken == 0

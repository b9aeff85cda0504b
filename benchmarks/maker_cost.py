"""What resting (maker) orders cost, on the real recordings, as JSON.

For each window of the recordings, over the same parsed events (parsing
excluded), best of ``--repeat`` runs from fresh states:

- ``book_us_per_depth_update``: the quoting step's own checked order book
  (:mod:`operators.orderbook`, what :func:`operators.maker.step` keeps) per
  depth diff;
- ``quoting_us_per_event_baseline`` and ``quoting_us_per_depth_update_baseline``:
  the whole quoting step as the dataflow runs it (:func:`operators.maker.step_batch`
  and :func:`operators.maker.finish`: its book, the baseline book quoting at
  every second, the queues, fills, their moves and economics) less its
  book, per event and per depth diff;
- ``quoting_us_per_bar_with_models``: the same with one more book per model
  and horizon of the run's signals (the chain's forecasts, a plain rule),
  less the baseline alone, per bar and book;
- ``dataflow_lines_per_s_maker`` / ``dataflow_lines_per_s_no_maker``: the
  whole forecasting dataflow (``ticklet.backtest.run_backtest``, one worker,
  every output file) on the window's recordings, input lines per second of
  wall time, with the maker books on (``maker.enabled``) and off.

These are the per-message path's (``TICKLET_INPUT__PATH=message``: the
events one by one, the book in Python). ``chunk`` holds the chunk path's
(``TICKLET_INPUT__PATH=chunk``: the events in batches of 2,048 lines with
their columns, the book compiled, the quoting step's runs of compiled code,
:mod:`operators.flatmaker`), its kernels loaded before: the quoting step with
its own book, per event and per depth diff, with the baseline alone, and per
bar and model book; and the whole dataflow.

Usage::

    python benchmarks/maker_cost.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.events import BookSnapshot, DepthUpdate, MakerFillRecord, Signal  # noqa: E402
from dataflows.settings import Settings  # noqa: E402
from harness.realdata import best_of, chunk_batches, lines, run_chain, signals_of  # noqa: E402
from operators import maker, orderbook  # noqa: E402

DATA = Path(os.environ.get("TICKLET_DATA", ROOT.parent / "shared" / "data")) / "binance-ws"
WINDOWS = {
    "BTCUSDT USD-M 2023-04-04/05": ("usdm/btcusdt_20230404.dat.gz", "usdm/btcusdt_20230405.dat.gz"),
    "BTCUSDT spot 2024-08-08/09": ("spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz"),
}


def _dataflow(files: tuple[str, ...], repeat: int, path: str) -> tuple[int, dict[str, float]]:
    """Input lines, and the best wall time of the whole dataflow with the maker books on and off, on ``path``."""
    from ticklet.backtest import run_backtest

    s = Settings()
    n_lines = 0
    walls = {}
    for label, on in (("maker", True), ("no_maker", False)):
        base = s.model_copy(update={"maker": s.maker.model_copy(update={"enabled": on}),
                                    "input": s.input.model_copy(update={"path": path}),
                                    "output": s.output.model_copy(update={"summary": False})})
        best = float("inf")
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                run_backtest([str(DATA / f) for f in files], Path(out), base=base)
                best = min(best, time.perf_counter() - t0)
                n_lines = json.loads((Path(out) / "counters.json").read_text())["input_records"]
        walls[label] = best
    return n_lines, walls


def _chunk(files: tuple[str, ...], sigs: list, cfg: maker.MakerConfig, n_bars: int, repeat: int) -> dict:
    """The chunk path's figures (module docstring)."""
    market = files[0].split("/")[0]
    batches = chunk_batches(market, "BTCUSDT", [r for f in files for r in lines(DATA / f)])
    inst = batches[0][0].instrument
    n_events = sum(len(b) for b in batches)
    n_depth = sum(type(e) is DepthUpdate for b in batches for e in b)
    books = len({(s.model, s.horizon) for s in sigs})
    maker.warm()

    def quoting(values: list) -> None:
        st, _ = maker.step_batch(maker.QuoterState(cfg, inst, compiled=True), values)
        maker.finish(st)

    t_base = best_of(repeat, lambda: quoting(batches))
    t_all = best_of(repeat, lambda: quoting([*batches, *sigs]))
    n_lines, walls = _dataflow(files, repeat, "chunk")
    return {
        "events": n_events, "depth_updates": n_depth,
        "quoting_us_per_event_baseline": round(t_base / n_events * 1e6, 2),
        "quoting_us_per_depth_update_baseline": round(t_base / n_depth * 1e6, 2),
        "quoting_us_per_bar_with_models": round((t_all - t_base) / n_bars / max(books, 1) * 1e6, 1),
        "wall_s_baseline": round(t_base, 4), "wall_s_with_models": round(t_all, 4),
        "dataflow_lines_per_s_maker": round(n_lines / walls["maker"]),
        "dataflow_lines_per_s_no_maker": round(n_lines / walls["no_maker"]),
        "dataflow_wall_s_maker": round(walls["maker"], 3), "dataflow_wall_s_no_maker": round(walls["no_maker"], 3),
    }


def _window(name: str, files: tuple[str, ...], repeat: int) -> dict:
    chain = run_chain([DATA / f for f in files])
    events = chain.events
    book_events = [e for e in events if type(e) is DepthUpdate or type(e) is BookSnapshot]
    n_depth = sum(type(e) is DepthUpdate for e in events)
    sigs = [s for s in signals_of(chain) if type(s) is Signal]
    cfg = maker.MakerConfig(lot=0.001)
    books = len({(s.model, s.horizon) for s in sigs})
    n_bars = len(chain.bars)

    def book_only() -> None:
        st = orderbook.OrderBookState(orderbook.OrderBookConfig(quotes=False))  # as the quoting step keeps it
        for e in book_events:
            orderbook.step(st, e)

    def quoting(values: list) -> list:
        st, out = maker.step_batch(maker.QuoterState(cfg, chain.instrument), values)
        return out + maker.finish(st)[1]

    t_book = best_of(repeat, book_only)
    t_base = best_of(repeat, lambda: quoting([events]))
    t_all = best_of(repeat, lambda: quoting([events, *sigs]))
    fills = [r for r in quoting([events, *sigs]) if type(r) is MakerFillRecord]

    n_lines, walls = _dataflow(files, repeat, "message")
    return {
        "window": name, "events": len(events), "input_lines": n_lines, "depth_updates": n_depth, "bars": n_bars,
        "model_books": books, "fills": len(fills),
        "book_us_per_depth_update": round(t_book / n_depth * 1e6, 2),
        "quoting_us_per_event_baseline": round((t_base - t_book) / len(events) * 1e6, 2),
        "quoting_us_per_depth_update_baseline": round((t_base - t_book) / n_depth * 1e6, 2),
        "quoting_us_per_bar_with_models": round((t_all - t_base) / n_bars / max(books, 1) * 1e6, 1),
        "wall_s_book": round(t_book, 4), "wall_s_baseline": round(t_base, 4), "wall_s_with_models": round(t_all, 4),
        "dataflow_lines_per_s_maker": round(n_lines / walls["maker"]),
        "dataflow_lines_per_s_no_maker": round(n_lines / walls["no_maker"]),
        "dataflow_wall_s_maker": round(walls["maker"], 3), "dataflow_wall_s_no_maker": round(walls["no_maker"], 3),
        "chunk": _chunk(files, sigs, cfg, n_bars, repeat),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    res = [_window(name, files, args.repeat) for name, files in WINDOWS.items()]
    print(json.dumps({"benchmark": "maker_cost", "python": platform.python_version(), "cpus": os.cpu_count(),
                      "repeat": args.repeat, "windows": res}, indent=1))


if __name__ == "__main__":
    main()

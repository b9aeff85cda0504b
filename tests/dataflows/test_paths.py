"""The chunk path against the per-message path, the reference, on every repository recording (issue 28).

``TICKLET_INPUT__PATH=chunk`` parses each chunk of recording lines with the
compiled scanner first (:mod:`sources.columns`); ``message`` parses them one
by one. One backtest of every recording of ``tests/data/binance-ws`` (spot
and USD-M, five instruments and markets) and of the COIN-M and public-data
fixtures, with the taker and maker books on, runs on each path: every
output file is the same byte for byte (``run.json`` records the settings,
which differ). The fuzzed input goes through both paths in
``tests/test_fuzz.py``.
"""

from __future__ import annotations

import sys

import pytest

from dataflows.settings import load_settings
from ticklet.backtest import run_backtest

#: Integration tests (tests/integration_mark.py): two whole backtests over every recording.
pytestmark = pytest.mark.integration


def test_every_output_file_is_the_same_on_both_paths(ws_dir, tmp_path):
    fixtures = ws_dir.parent / "fixtures"
    inputs = [str(ws_dir), str(fixtures / "hftbacktest"), str(fixtures / "binance-public-data")]
    s = load_settings()
    outs = {}
    for path in ("message", "chunk"):
        run = s.model_copy(update={"input": s.input.model_copy(update={"path": path}),
                                   "maker": s.maker.model_copy(update={"enabled": True}),
                                   "output": s.output.model_copy(update={"summary": False})})
        outs[path] = tmp_path / path
        res = run_backtest(inputs, outs[path], base=run)
        assert res["forecasts"] > 1000
    assert "sources.columns" in sys.modules  # the chunk run went through the compiled scanner
    names = sorted(p.name for p in outs["message"].iterdir() if p.name != "run.json")
    assert {"forecasts.csv", "metrics.csv", "signals.csv", "trades.csv", "maker_fills.csv", "maker_economics.csv",
            "counters.json"} <= set(names)
    assert sorted(p.name for p in outs["chunk"].iterdir() if p.name != "run.json") == names
    for name in names:
        assert (outs["chunk"] / name).read_bytes() == (outs["message"] / name).read_bytes(), name

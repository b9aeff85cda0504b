"""``ticklet.backtest.run_backtest``: what a run refused at start leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataflows.forecast import OUTPUT_FILES
from sources.files import InputFormatError
from ticklet.backtest import run_backtest


def _previous_run(out: Path, bundle: Path) -> dict[Path, bytes]:
    """An earlier run's outputs and model bundle, as they were."""
    files = {out / OUTPUT_FILES[0]: b"instrument,model\nBTCUSDT,naive\n", bundle / "manifest.json": b"{}\n"}
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


@pytest.mark.parametrize("bad", ["missing.gz", "notes.txt"])
def test_a_backtest_refused_for_its_input_keeps_the_previous_run(tmp_path, bad):
    """The refused run takes away neither the earlier run's outputs nor its
    bundle: they only go once a run is accepted."""
    (tmp_path / "notes.txt").write_text("not a recording\n")
    files = _previous_run(tmp_path / "run", tmp_path / "bundle")
    with pytest.raises(InputFormatError, match=bad):
        run_backtest([str(tmp_path / bad)], tmp_path / "run", save_models=tmp_path / "bundle")
    assert {p: p.read_bytes() for p in files} == files


def test_a_refused_backtest_takes_away_the_directories_it_made(tmp_path):
    with pytest.raises(InputFormatError, match="missing.gz"):
        run_backtest([str(tmp_path / "missing.gz")], tmp_path / "new" / "run", save_models=tmp_path / "b" / "m")
    assert sorted(tmp_path.iterdir()) == []


def test_an_accepted_backtest_replaces_the_previous_run(tmp_path, ws_dir):
    """Accepted, the run removes the earlier run's files and writes its own,
    its manifest (``run.json``) among them."""
    files = _previous_run(tmp_path / "run", tmp_path / "bundle")
    summary = run_backtest([str(ws_dir / "spot" / "btcusdt_20230405.dat.gz")], tmp_path / "run")
    assert summary["counters"]["ticks"] > 0
    forecasts = tmp_path / "run" / OUTPUT_FILES[0]
    assert forecasts.read_bytes() != files[forecasts]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config_hash"]

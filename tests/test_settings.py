"""Settings come from TICKLET_* environment variables, are validated, and
change what the dataflow does."""

from __future__ import annotations

import json

import pydantic
import pytest
from realdata import csv_dicts

from operators.bars import BarConfig
from operators.features import FeatureConfig
from operators.forecast import ForecastConfig
from ticklet.cli import run_backtest
from ticklet.settings import SAMPLE_DIR, Settings


def test_defaults_without_environment():
    s = Settings()
    assert s.bars == BarConfig() and s.features == FeatureConfig() and s.forecast == ForecastConfig()
    assert s.input.paths == [str(SAMPLE_DIR)]


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("TICKLET_BARS__INTERVAL_MS", "500")
    monkeypatch.setenv("TICKLET_FORECAST__HORIZONS", "[5,2]")
    monkeypatch.setenv("TICKLET_FORECAST__MODELS", '["naive","linear"]')
    monkeypatch.setenv("TICKLET_BARS__PRICE", "last")
    monkeypatch.setenv("TICKLET_FEATURES__SWT__LEVEL", "2")
    monkeypatch.setenv("TICKLET_INPUT__PATHS", json.dumps([str(tmp_path)]))
    monkeypatch.setenv("TICKLET_OUTPUT__DIR", str(tmp_path / "o"))
    s = Settings()
    assert s.bars.interval_ms == 500 and s.bars.price == "last"
    assert s.forecast.horizons == (2, 5)  # sorted
    assert s.forecast.models == ("naive", "linear")
    assert s.features.swt.level == 2 and s.features.swt.window == 64  # other fields keep defaults
    assert s.input.paths == [str(tmp_path)] and s.output.dir == tmp_path / "o"


@pytest.mark.parametrize("var,value", [
    ("TICKLET_BARS__INTERVAL_MS", "0"),
    ("TICKLET_BARS__INTERVAL_MS", "-500"),
    ("TICKLET_BARS__INTERVAL_MS", "half a second"),
    ("TICKLET_BARS__PRICE", "close"),
    ("TICKLET_FORECAST__HORIZONS", "[0,5]"),
    ("TICKLET_FORECAST__HORIZONS", "[]"),
    ("TICKLET_FORECAST__HORIZONS", "not json"),
    ("TICKLET_FORECAST__MODELS", '["naive","prophet"]'),
    ("TICKLET_FEATURES__SWT__WINDOW", "60"),  # not a multiple of 2**level
    ("TICKLET_FEATURES__SWT__WAVELET", "nope4"),
    ("TICKLET_INPUT__MARKET", "coinm"),
    ("TICKLET_INPUT__BATCH_SIZE", "0"),
])
def test_invalid_values_raise(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises((pydantic.ValidationError, ValueError)):
        Settings()


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(pydantic.ValidationError):
        s.bars.interval_ms = 5  # type: ignore[misc]


def test_environment_drives_the_dataflow(monkeypatch, tmp_path, ws_dir):
    """500 ms bars, horizons 2 and 5, two models: visible in every forecast."""
    monkeypatch.setenv("TICKLET_BARS__INTERVAL_MS", "500")
    monkeypatch.setenv("TICKLET_FORECAST__HORIZONS", "[2,5]")
    monkeypatch.setenv("TICKLET_FORECAST__MODELS", '["naive","linear"]')
    summary = run_backtest([str(ws_dir / "spot" / "btcusdt_20230405.dat.gz")], tmp_path)
    rows = csv_dicts(tmp_path / "forecasts.csv")
    assert rows and summary["forecasts"] == len(rows)
    assert {r["model"] for r in rows} == {"naive", "linear"}
    assert {r["horizon"] for r in rows} == {"2", "5"}
    for r in rows:
        assert int(r["ts_target"]) - int(r["ts_forecast"]) == int(r["horizon"]) * 500_000_000
        assert int(r["ts_forecast"]) % 500_000_000 == 0
    # about 414 s of data in 0.5 s bars
    assert summary["bars"] > 2 * 400


def test_readme_configuration_table_is_current():
    """The README's configuration table is exactly what `ticklet config` prints."""
    from realdata import REPO

    from ticklet.settings import settings_table

    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- settings-table -->\n") + len("<!-- settings-table -->\n")
    end = readme.index("<!-- /settings-table -->")
    assert readme[start:end] == settings_table()

"""Settings come from TICKLET_* environment variables, are validated, and
change what the dataflow does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pydantic
import pytest

from dataflows.settings import Settings
from harness.realdata import REPO, csv_dicts
from operators.bars import BarConfig
from operators.features import FeatureConfig
from operators.forecast import ForecastConfig
from sources.input_config import SAMPLE_DIR
from ticklet.backtest import run_backtest
from ticklet.settings_tables import settings_table


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
    ("TICKLET_INPUT__MARKET", "options"),  # spot, usdm and coinm are markets
    ("TICKLET_INPUT__BATCH_SIZE", "0"),
    # values that validated once and then ran to nothing, or crashed inside Bytewax
    ("TICKLET_FORECAST__MODELS", "[]"),
    ("TICKLET_FEATURES__RETURN_LAGS", "[-1]"),
    ("TICKLET_FEATURES__RETURN_LAGS", "[0, 5]"),
    ("TICKLET_FEATURES__RETURN_LAGS", "[]"),
    ("TICKLET_FEATURES__MACD", "[26, 12, 9]"),
    ("TICKLET_FEATURES__MACD", "[0, 26, 9]"),
    ("TICKLET_FORECAST__LEARNERS__SNARIMAX_ORDER", "[-1, 0, 1]"),
    ("TICKLET_INPUT__PATHS", "[]"),
    ("TICKLET_INPUT__PATHS", '[""]'),
    ("TICKLET_SIGNALS__MODELS", "[]"),
    ("TICKLET_SIGNALS__MODELS", '["hat"]'),  # not among the forecast models
    ("TICKLET_SIGNALS__HORIZONS", "[3]"),  # not among the forecast horizons
    ("TICKLET_KAFKA__BOOTSTRAP_SERVERS", ""),
    ("TICKLET_KAFKA__BOOTSTRAP_SERVERS", "broker"),
    ("TICKLET_KAFKA__BOOTSTRAP_SERVERS", "broker:99999"),
    ("TICKLET_KAFKA__TICKS_TOPIC", ""),
    ("TICKLET_KAFKA__OUTPUT_TOPIC", "two words"),
    ("TICKLET_KAFKA__DELIVERY_TIMEOUT_S", "0"),
    ("TICKLET_KAFKA__CONNECT_TIMEOUT_S", "-1"),
    ("TICKLET_INFLUX__URL", "localhost:8086"),
    ("TICKLET_DOWNLOAD__BASE_URL", "data.binance.vision"),
    ("TICKLET_COLLECT__SYMBOLS", "[]"),
    ("TICKLET_COLLECT__SYMBOLS", '["BTC/USDT"]'),
    ("TICKLET_COLLECT__SYMBOLS", '["BTCUSDT", "btcusdt"]'),
    ("TICKLET_COLLECT__STREAMS", "[]"),
    ("TICKLET_COLLECT__METRICS_PORT", "0"),
    ("TICKLET_COLLECT__METRICS_PORT", "65536"),
    ("TICKLET_COLLECT__METRICS_ADDRESS", "my-host"),
    ("TICKLET_COLLECT__WS_URL", "http://127.0.0.1:9443"),
    ("TICKLET_COLLECT__BACKOFF_MAX_S", "0.1"),  # below backoff_initial_s
    ("TICKLET_COLLECT__BOOK_TOPIC", "a/b"),
    ("TICKLET_API__PORT", "0"),
    ("TICKLET_API__ADDRESS", "anywhere"),
])
def test_invalid_values_raise(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises((pydantic.ValidationError, ValueError)):
        Settings()


def test_settings_are_frozen() -> None:  # annotated: mypy checks the body (a frozen field)
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


def _config(monkeypatch, capsys, tmp_path, env: dict[str, str], dotenv: str = "") -> tuple[int, str, str]:
    from ticklet.cli import main

    monkeypatch.chdir(tmp_path)
    if dotenv:
        (tmp_path / ".env").write_text(dotenv)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rc = main(["config"])
    out, err = capsys.readouterr()
    return rc, out, err


def _rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0].strip("`")] = [c.strip("`") for c in cells[1:]]
    return rows


def test_config_prints_the_effective_values_and_where_they_come_from(monkeypatch, capsys, tmp_path):
    """What a run would use: the environment over .env over the defaults; a
    secret is masked."""
    rc, out, err = _config(monkeypatch, capsys, tmp_path,
                           {"TICKLET_BARS__INTERVAL_MS": "500", "TICKLET_KAFKA__SASL_PASSWORD": "hunter2",
                            "TICKLET_FORECAST": '{"models": ["naive", "hat"]}'},
                           dotenv="TICKLET_FORECAST__HORIZONS=[2, 7]\nTICKLET_BARS__INTERVAL_MS=250\nOTHER=1\n")
    assert rc == 0 and err == ""
    rows = _rows(out)
    assert out.splitlines()[0] == "| variable | value | from | meaning |"
    assert rows["TICKLET_BARS__INTERVAL_MS"][:2] == ["500", "environment"]  # the environment wins over .env
    assert rows["TICKLET_FORECAST__HORIZONS"][:2] == ["[2, 7]", ".env"]
    assert rows["TICKLET_FORECAST__MODELS"][:2] == ['["naive", "hat"]', "environment"]  # a whole group in JSON
    assert rows["TICKLET_KAFKA__SASL_PASSWORD"][:2] == ["**********", "environment"]
    assert rows["TICKLET_BARS__PRICE"][:2] == ["mid", "default"]
    assert "hunter2" not in out
    defaults = _rows(settings_table())
    assert set(rows) == set(defaults)  # every setting, in both tables


@pytest.mark.parametrize("env,dotenv,named", [
    ({"TICKLET_BARS__INTERVAL_MS": "fast"}, "", "TICKLET_BARS__INTERVAL_MS"),
    ({}, "TICKLET_FORECAST__HORIZONS=1,10\n", "TICKLET_FORECAST__HORIZONS (in .env)"),
    ({"TICKLET_BAR__INTERVAL_MS": "5"}, "", "unknown setting TICKLET_BAR__INTERVAL_MS"),
    ({"TICKLET_FORECAST__MODELS": "[]"}, "", "TICKLET_FORECAST__MODELS"),
])
def test_config_fails_on_what_is_invalid(monkeypatch, capsys, tmp_path, env, dotenv, named):
    rc, out, err = _config(monkeypatch, capsys, tmp_path, env, dotenv)
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("ticklet: ") and named in err, err


def test_config_defaults_is_the_settings_table(monkeypatch, capsys):
    """`ticklet config --defaults` prints the table the docs' settings page is built with
    (docs/_hooks/generated.py; tests/test_docs.py builds the page)."""
    from ticklet.cli import main

    assert main(["config", "--defaults"]) == 0
    assert capsys.readouterr().out == settings_table()


def test_several_bad_settings_make_two_lines(monkeypatch):
    from core.config import ConfigError
    from dataflows.settings import read_settings

    monkeypatch.setenv("TICKLET_BARS__INTERVAL_MS", "x")
    monkeypatch.setenv("TICKLET_BARS__PRICE", "y")
    monkeypatch.setenv("TICKLET_FORECAST__HORIZONS", "z")
    with pytest.raises(ConfigError) as ex:
        read_settings()
    lines = str(ex.value).splitlines()
    assert len(lines) == 2 and "TICKLET_BARS__INTERVAL_MS" in lines[0] and "2 more" in lines[1]


def test_variables_that_are_not_settings_are_left_alone(monkeypatch):
    """TICKLET_DATA (the benchmarks' data) and TICKLET_DATA_DIR (the compose
    file's) have no ``__``: they are not settings, and not errors."""
    from dataflows.settings import read_settings

    monkeypatch.setenv("TICKLET_DATA", "../shared/data")
    monkeypatch.setenv("TICKLET_DATA_DIR", "./data/sample")
    assert read_settings() == Settings()


@pytest.mark.integration  # Python in a subprocess
def test_reading_settings_opens_no_connection(tmp_path):
    """Reading the settings of a run with Kafka input and output, whose
    brokers answer nowhere, loads no network client at all: whether the
    brokers answer is asked by the code that connects, at its start
    (:func:`sinks.kafka.check_reachable`; tests/test_bad_config.py has its
    one line and status 2). In a fresh process, so that no other test's
    imports count."""
    code = ("import sys\nfrom dataflows.settings import read_settings\ns = read_settings()\n"
            "clients = {'confluent_kafka', 'httpx', 'websockets', 'requests', 'influxdb_client', 'uvicorn'}\n"
            "print(s.input.source, s.output.kafka, s.kafka.bootstrap_servers, "
            "sorted({m.split('.')[0] for m in sys.modules} & clients))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TICKLET_INPUT__SOURCE": "kafka", "TICKLET_OUTPUT__KAFKA": "true",
           "TICKLET_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["kafka", "True", "127.0.0.1:1", "[]"]


@pytest.mark.parametrize("env,dotenv,line", [
    ({"TICKLET_FORECAST__HORIZON": "[1, 5]"}, "",
     "unknown setting TICKLET_FORECAST__HORIZON: did you mean TICKLET_FORECAST__HORIZONS?"),
    ({"TICKLET_BARS__INTERVAL": "500"}, "", "unknown setting TICKLET_BARS__INTERVAL: did you mean "
     "TICKLET_BARS__INTERVAL_MS?"),
    ({"TICKLET_FEATURES__SWT__WINDW": "64"}, "",  # a nested group
     "unknown setting TICKLET_FEATURES__SWT__WINDW: did you mean TICKLET_FEATURES__SWT__WINDOW?"),
    ({"TICKLET_FORECAST__LEARNERS__INTERVAL_LEVL": "0.8"}, "",
     "unknown setting TICKLET_FORECAST__LEARNERS__INTERVAL_LEVL: did you mean "
     "TICKLET_FORECAST__LEARNERS__INTERVAL_LEVEL?"),
    ({}, "TICKLET_SIGNALS__P_LONGG=0.6\n",
     "unknown setting TICKLET_SIGNALS__P_LONGG (in .env): did you mean TICKLET_SIGNALS__P_LONG?"),
    ({"TICKLET_FORECST__MODELS": '["naive"]'}, "",  # an unknown group, and the setting it was meant to be
     "unknown setting TICKLET_FORECST__MODELS: no such group of settings; did you mean TICKLET_FORECAST__MODELS?"),
    ({"TICKLET_BARS__NOPE": "1"}, "", "unknown setting TICKLET_BARS__NOPE: TICKLET_BARS has no such setting"),
    ({"TICKLET_KAFKA__SASL_PASSWRD": "hunter2"}, "",  # the value of a misspelt secret is not shown either
     "unknown setting TICKLET_KAFKA__SASL_PASSWRD: did you mean TICKLET_KAFKA__SASL_PASSWORD?"),
])
def test_a_misspelt_setting_gets_the_nearest_name(monkeypatch, capsys, tmp_path, env, dotenv, line):
    """A setting its group does not have is one plain line (status 2) with the
    nearest setting's name, at any depth, and never its value."""
    rc, out, err = _config(monkeypatch, capsys, tmp_path, env, dotenv)
    assert rc == 2 and out == ""
    assert err == f"ticklet: {line} (`ticklet config` lists them all)\n", err
    assert not any(v in err for v in env.values())

"""docker-compose.yml, .env.example and the provisioned Grafana dashboards
and datasource, checked against what ticklet really reads and writes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from dataflows.settings import Settings
from harness.realdata import REPO
from sinks.influx import InfluxConfig
from sinks.influx_points import MEASUREMENTS

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))


@pytest.fixture(scope="module")
def compose_cmd() -> list[str]:
    """A docker compose CLI: Docker's plugin where it works, else
    docker-compose (installed by the test session's provisioning)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    exe = shutil.which("docker-compose")
    assert exe, "no docker compose CLI: apt-get install docker-compose"
    return [exe]


@pytest.fixture(scope="module")
def resolved(compose_cmd) -> dict:
    """The compose file as `docker compose config` resolves it with the example environment."""
    proc = subprocess.run([*compose_cmd, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


@pytest.mark.integration  # docker compose in a subprocess
def test_docker_compose_config_validates(resolved):
    """`docker compose config` accepts the file with the example environment."""
    assert resolved["services"]["forecast"]["environment"]["TICKLET_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"


@pytest.mark.integration  # docker compose in a subprocess
def test_forecast_is_restarted_on_failure_a_few_times_only(resolved):
    """scripts/run-forecast.sh restarts the dataflow itself after a crash, a
    kill or status 75, and exits only on 0 (input ended), 2 (bad setting or
    store) and 74 (output not written), which a restart repeats: Docker
    restarts the service after a failure, a few times at most (before:
    `unless-stopped`, after every exit, forever). A reboot starts it beside
    Kafka and InfluxDB (depends_on holds for `up` only), so it waits for them
    longer than the 15 s default. (No Docker engine runs here: this checks the
    policy as the compose CLI resolves it, not Docker restarting a container.)"""
    forecast = resolved["services"]["forecast"]
    name, _, tries = forecast["restart"].partition(":")
    assert name == "on-failure" and 1 <= int(tries) <= 10, forecast["restart"]
    assert "deploy" not in forecast  # deploy.restart_policy: ignored by docker-compose 1, overrides restart in 2
    for k in ("TICKLET_KAFKA__CONNECT_TIMEOUT_S", "TICKLET_INFLUX__CONNECT_TIMEOUT_S"):
        assert float(forecast["environment"][k]) >= 60, k


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_stack_services_ports_and_health(compose):
    svc = compose["services"]
    assert {"kafka", "influxdb", "grafana", "replay", "forecast"} <= set(svc)
    for name, s in svc.items():
        for port in s.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)  # localhost only by default
    for name in ("kafka", "influxdb", "grafana", "forecast"):
        assert svc[name]["healthcheck"]["test"], name
    env = svc["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert svc["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    fenv = svc["forecast"]["environment"]
    assert fenv["TICKLET_INPUT__SOURCE"] == "kafka" and fenv["TICKLET_OUTPUT__INFLUX"] == "true"


def test_every_ticklet_variable_in_compose_is_a_real_setting(compose, monkeypatch):
    names = set()
    literal: dict[str, str] = {}  # the values the file gives without a ${...} substitution
    envs = [s.get("environment") or {} for s in compose["services"].values()]
    for env in [*envs, compose["x-ticklet"]["environment"]]:
        names |= {k for k in env if k.startswith("TICKLET_")}
        literal |= {k: str(v) for k, v in env.items() if k.startswith("TICKLET_") and "$" not in str(v)}
    assert names
    fields = set(Settings.model_fields)
    for k in names:  # the top level ignores unknown names: check them here
        assert k[len("TICKLET_"):].split("__")[0].lower() in fields, k
    for k in names:  # nested models forbid unknown names: constructing Settings checks the rest
        monkeypatch.setenv(k, {"TICKLET_INPUT__SOURCE": "kafka", "TICKLET_OUTPUT__KAFKA": "true",
                               "TICKLET_OUTPUT__INFLUX": "true", "TICKLET_OUTPUT__DIR": "/out",
                               "TICKLET_COLLECT__SYMBOLS": '["BTCUSDT","ETHUSDT"]', "TICKLET_COLLECT__MARKET": "usdm",
                               "TICKLET_COLLECT__NETWORK": "testnet", "TICKLET_COLLECT__METRICS_PORT": "9101",
                               }.get(k, literal.get(k, "x")))
    s = Settings()
    assert s.input.source == "kafka" and s.output.influx and s.influx.token.get_secret_value() == "x"
    assert s.collect.symbols == ["BTCUSDT", "ETHUSDT"] and s.collect.network == "testnet"


def test_env_example_defines_every_interpolated_variable():
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    defined = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
               if line and not line.startswith("#")}
    assert used <= defined, used - defined


def _queries() -> list[tuple[str, str]]:
    """Every panel's queries, and the variables' that read a measurement."""
    out = []
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        for p in d["panels"]:
            for t in p.get("targets", []):
                out.append((f"{path.name}: {p['title']}", t["query"]))
        for v in d["templating"]["list"]:
            if "r._measurement" in v.get("query", ""):
                out.append((f"{path.name}: variable {v['name']}", v["query"]))
    return out


def test_dashboards_query_only_what_the_sink_writes():
    queries = _queries()
    assert len(queries) >= 10
    features = set(InfluxConfig().features)
    measurements_seen = set()
    for where, q in queries:
        ms = re.findall(r'r\._measurement == "(\w+)"', q)
        assert len(set(ms)) == 1, where
        m = ms[0]
        measurements_seen.add(m)
        assert m in MEASUREMENTS, (where, m)
        tags, fields = MEASUREMENTS[m]
        allowed = features if m == "features" else set(fields)
        for f in re.findall(r'r\._field == "(\w+)"', q):
            assert f in allowed, (where, f)
        for name in re.findall(r"\br\.(\w+)\b", q):  # tags, and fields used after a pivot
            if name.startswith("_"):
                continue
            assert name in tags or name in allowed, (where, name)
        for col in re.findall(r'group\(columns: \[([^\]]*)\]', q):
            for c in re.findall(r'"(\w+)"', col):
                assert c in tags or c == "_field", (where, c)
    assert {"bar", "forecast", "scored", "metrics", "health"} <= measurements_seen


def test_dashboards_use_the_provisioned_datasource():
    ds = yaml.safe_load((REPO / "grafana" / "provisioning" / "datasources" / "influxdb.yml").read_text())
    src = ds["datasources"][0]
    assert src["jsonData"]["version"] == "Flux" and src["secureJsonData"]["token"] == "${INFLUXDB_TOKEN}"
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        for p in d["panels"]:
            if p.get("targets"):  # not the text panel
                assert p["datasource"]["uid"] == src["uid"], p["title"]
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"]["uid"] == src["uid"], v["name"]
        titles = " ".join(p["title"].lower() for p in d["panels"])
        for need in ("forecast", "delta", "hit rate", "skill", "error", "throughput", "lag", "dead letters"):
            assert need in titles, need


def test_compose_runs_the_influxdb_the_tests_run(compose):
    """docker-compose.yml pins the InfluxDB release that the tests build and
    run (scripts/influxdb.sh), so what users run is what was tested."""
    pinned = re.search(r'^INFLUXDB_VERSION="\$\{INFLUXDB_VERSION:-([\d.]+)\}"', (REPO / "scripts" / "influxdb.sh")
                       .read_text(), re.M)
    assert pinned, "scripts/influxdb.sh pins no INFLUXDB_VERSION"
    assert compose["services"]["influxdb"]["image"] == f"influxdb:{pinned.group(1)}"


#: what a documented command writes into the clone, and the command
WRITTEN = {
    "out/forecasts.csv": "python -m bytewax.run dataflows.forecast (TICKLET_OUTPUT__DIR)",
    "out/backtest/report.html": "ticklet backtest data/sample --report (--out, report)",
    "recovery/part-0.sqlite3": "python -m bytewax.recovery recovery/ 1 (Crash recovery)",
    "bundles/btc/manifest.json": "ticklet backtest ... --save-models bundles/btc (Warm start)",
    "capture/spot/btcusdt_20240808.gz": "ticklet collect (TICKLET_COLLECT__CAPTURE_DIR)",
    "data/binance/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-08-08.zip": "ticklet download (TICKLET_DOWNLOAD__DIR)",
    ".kafka/run/kafka.log": "scripts/kafka.sh fetch / start (KAFKA_HOME, KAFKA_RUN_DIR)",
    ".influxdb/run/influxd.log": "scripts/influxdb.sh start (INFLUXDB_RUN_DIR)",
    ".test-exchange/exchange.log": "scripts/test-exchange.sh start (TEST_EXCHANGE_RUN_DIR)",
    "site/index.html": "mkdocs build",
    ".env": "cp .env.example .env (secrets)",
}


@pytest.mark.integration  # git in a subprocess
def test_git_ignores_what_the_documented_commands_write():
    """``git status`` in a clone stays clean after the documented commands:
    each path they write is ignored (``git check-ignore``, by the rules alone)."""
    proc = subprocess.run(["git", "check-ignore", "--no-index", "--verbose", "--non-matching", *WRITTEN],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    not_ignored = [line.split("\t")[1] for line in proc.stdout.splitlines() if line.startswith("::")]
    assert not not_ignored, {p: WRITTEN[p] for p in not_ignored}

"""The development servers' scripts as the docs use them: ``eval "$(scripts/kafka.sh start)"``,
``eval "$(scripts/influxdb.sh start)"`` and ``eval "$(scripts/test-exchange.sh start ...)"``
point the ticklet commands that follow, in the same shell, at the server just started (a
free port, its own org, bucket and token).

Each test starts the real server through the script in a shell, evals what it printed,
and runs the documented ticklet commands after it: they must reach that server. The
shell has no ``TICKLET_*`` variable of its own, and the ticklet defaults (Kafka on
127.0.0.1:9092, InfluxDB on 127.0.0.1:8086 with org and bucket ``ticklet``) point
elsewhere, so a setting that was printed but not exported, or not printed, fails the run.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest
from runutil import file_env

from harness.realdata import REPO, csv_dicts

#: Integration tests (tests/integration_mark.py): the scripts/*.sh start servers (Kafka, InfluxDB, the test exchange).
pytestmark = pytest.mark.integration

RECORDING = REPO / "tests" / "data" / "binance-ws" / "spot" / "btcusdt_20230405.dat.gz"
DAY = REPO / "tests" / "data" / "binance-ws" / "spot" / "btcusdt_20240808.gz"  # = data/sample/spot/


def _shell(script: str, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    """``script`` in bash from the repository root, stopping at the first failed command."""
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout_s)


def _stop(script: str, env: dict[str, str]) -> None:
    subprocess.run(["bash", str(REPO / "scripts" / script), "stop"], env=env, capture_output=True, timeout=120)


def test_kafka_sh_start_exports_the_broker_for_the_commands_that_follow(tmp_path: Path):
    """Replay into Kafka, then the dataflow on Kafka, as *Replay recordings
    into Kafka* and *Run the dataflow on Kafka* show them, after
    ``eval "$(scripts/kafka.sh start)"``: every message is delivered to the
    broker on its free port, and the dataflow reads them all back and forecasts."""
    out = tmp_path / "out"
    env = file_env(out, KAFKA_RUN_DIR=str(tmp_path / "kafka"),
                   # fail in seconds, not 15 s and 46 s, where the broker was not set
                   TICKLET_KAFKA__CONNECT_TIMEOUT_S="3", TICKLET_KAFKA__DELIVERY_TIMEOUT_S="5")
    script = f"""
eval "$(scripts/kafka.sh start)"
ticklet replay {RECORDING} --to kafka --speed max
TICKLET_INPUT__SOURCE=kafka TICKLET_OUTPUT__KAFKA=true TICKLET_KAFKA__TAIL=false \\
  python -m bytewax.run dataflows.forecast
"""
    try:
        proc = _shell(script, env, 600)
    finally:
        _stop("kafka.sh", env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["messages"] > 10_000 and summary["delivered"] == summary["messages"], summary
    counters = json.loads((out / "counters.json").read_text())
    assert counters["ticks"] > 10_000 and counters["forecasts"] > 0, counters
    assert csv_dicts(out / "forecasts.csv")


def test_influxdb_sh_start_exports_the_server_for_the_commands_that_follow(influxd: str, tmp_path: Path):
    """A backtest with the InfluxDB output on, after
    ``eval "$(scripts/influxdb.sh start)"`` (an org and bucket that are not
    ticklet's defaults): it writes every point to that server's bucket."""
    from influxdb_client import InfluxDBClient

    env = file_env(tmp_path / "out", INFLUXDB_RUN_DIR=str(tmp_path / "influxdb"), INFLUXDB_ORG="dev-org",
                   INFLUXDB_BUCKET="dev-bucket", TICKLET_INFLUX__CONNECT_TIMEOUT_S="3")
    script = f"""
eval "$(scripts/influxdb.sh start)"
TICKLET_OUTPUT__INFLUX=true ticklet backtest {RECORDING} --out {tmp_path / "out"}
scripts/influxdb.sh status
"""
    try:
        proc = _shell(script, env, 600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        exported = dict(line[len("export TICKLET_INFLUX__"):].split("=", 1) for line in proc.stdout.splitlines()
                        if line.startswith("export TICKLET_INFLUX__"))
        url, token = exported["URL"], exported["TOKEN"]
        assert (exported["ORG"], exported["BUCKET"]) == ("dev-org", "dev-bucket"), exported
        where = f"ticklet: InfluxDB at {url}, bucket 'dev-bucket': "
        written = [ln for ln in proc.stderr.splitlines() if ln.startswith(where)]
        assert len(written) == 1 and written[0].endswith(" points written"), proc.stderr[-3000:]
        n = int(written[0].rsplit(": ", 1)[1].split()[0])
        flux = ('from(bucket: "dev-bucket") |> range(start: 0, stop: 2100-01-01T00:00:00Z) '
                '|> filter(fn: (r) => r._measurement == "bar" and r._field == "close") |> count()')
        with InfluxDBClient(url=url, token=token, org="dev-org") as client:
            bars = sum(rec.get_value() for table in client.query_api().query(flux) for rec in table.records)
        assert n > bars > 0
    finally:
        _stop("influxdb.sh", env)


def test_test_exchange_sh_feeds_the_collector_like_binance(tmp_path: Path):
    """*Running live* against the local exchange instead of Binance: after
    ``eval "$(scripts/kafka.sh start)"`` and ``eval "$(scripts/test-exchange.sh
    start --speed N RECORDING)"``, ``ticklet collect`` receives every recorded
    message, syncs its book from the exchange's REST snapshot, captures them,
    and the dataflow on Kafka reads every one of them as a tick."""
    out = tmp_path / "out"
    env = file_env(out, KAFKA_RUN_DIR=str(tmp_path / "kafka"), TEST_EXCHANGE_RUN_DIR=str(tmp_path / "exchange"),
                   TICKLET_COLLECT__CAPTURE_DIR=str(tmp_path / "capture"))
    script = f"""
eval "$(scripts/kafka.sh start)"
eval "$(scripts/test-exchange.sh start --speed 1000 {DAY})"
ticklet collect --symbols BTCUSDT --market spot --exit-when-idle 3
TICKLET_INPUT__SOURCE=kafka TICKLET_OUTPUT__KAFKA=true TICKLET_KAFKA__TAIL=false \\
  python -m bytewax.run dataflows.forecast
"""
    try:
        proc = _shell(script, env, 600)
    finally:
        _stop("test-exchange.sh", env)
        _stop("kafka.sh", env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with gzip.open(DAY, "rb") as f:
        recorded = sum(1 for line in f if b'"stream":' in line)
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["messages"] == recorded and counts["snapshots"] >= 1, counts
    assert not any(k.startswith(("gaps_", "depth_gaps", "book_resyncs", "kafka_failed")) for k in counts), counts
    (capture,) = (tmp_path / "capture" / "spot").glob("btcusdt_*.gz")
    with gzip.open(capture, "rb") as f:
        assert sum(1 for line in f if b'"stream":' in line) == recorded
    counters = json.loads((out / "counters.json").read_text())  # (1,000 times faster: too few bars to forecast)
    # every message a tick, and every REST snapshot the collector fetched and published (the start of a book)
    assert counters["ticks"] == recorded + counts["snapshots"] and counters.get("dead_letters", 0) == 0, counters

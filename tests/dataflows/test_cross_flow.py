"""Cross-asset features in the dataflow (dataflows/cross.py), on the real
BTCUSDT and ETHUSDT spot recordings of the same window: the follower's
forecasts use the leader's features; one worker, two worker processes and a
prefix of both recordings agree; a model bundle saved with pairs set starts a run."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from dataflows.settings import Settings
from harness.realdata import RECORD_FILES, csv_dicts, lines, recv_ns, write_gz
from ticklet.backtest import run_backtest

#: Integration tests (tests/integration_mark.py): the dataflow in two processes.
pytestmark = pytest.mark.integration

FILES = ("spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz", "spot/ethusdt_20240808.gz",
         "spot/ethusdt_20240809.gz")
PAIRS = Settings().model_copy(update={"cross": Settings().cross.model_copy(update={"pairs": ("BTCUSDT->ETHUSDT",)})})


def _per_instrument(out: Path) -> dict[str, dict[str, list[bytes]]]:
    got: dict[str, dict[str, list[bytes]]] = {}
    for name in RECORD_FILES:
        by: dict[str, list[bytes]] = defaultdict(list)
        for r in (out / name).read_bytes().split(b"\r\n")[1:]:
            if r:
                by[r.split(b",", 1)[0].decode()].append(r)
        got[name] = dict(by)
    return got


@pytest.fixture(scope="module")
def runs(ws_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("cross")
    paths = [str(ws_dir / f) for f in FILES]
    one = run_backtest(paths, base / "one", base=PAIRS)
    run_backtest(paths, base / "two", workers=2, base=PAIRS)
    run_backtest(paths, base / "plain")  # no pairs
    return one, base


def test_the_follower_gets_the_leaders_features(runs):
    one, base = runs
    got, plain = _per_instrument(base / "one"), _per_instrument(base / "plain")
    assert set(got["forecasts.csv"]) == {"BTCUSDT", "ETHUSDT"}
    assert got["forecasts.csv"]["BTCUSDT"] == plain["forecasts.csv"]["BTCUSDT"]  # the leader is as before
    assert got["forecasts.csv"]["ETHUSDT"] != plain["forecasts.csv"]["ETHUSDT"]  # the follower learns from it
    assert one["counters"].get("cross_leader_late", 0) == 0


def test_two_processes_give_what_one_gives(runs):
    _, base = runs
    a, b = _per_instrument(base / "one"), _per_instrument(base / "two")
    for name in RECORD_FILES:
        assert a[name] and a[name] == b[name], name


def test_a_prefix_of_both_recordings_gives_a_prefix_of_the_outputs(runs, ws_dir, tmp_path):
    """Both instruments cut at the same receive time: every forecast of the
    prefix run is the full run's, byte for byte, in order."""
    _, base = runs
    cut = recv_ns(lines(ws_dir / FILES[1])[len(lines(ws_dir / FILES[1])) // 2])
    prefix = []
    for f in FILES:
        kept = [ln for ln in lines(ws_dir / f) if recv_ns(ln) <= cut]
        if kept:
            prefix.append(str(write_gz(tmp_path / "in" / f, kept)))
    run_backtest(prefix, tmp_path / "out", base=PAIRS)
    p, full = _per_instrument(tmp_path / "out"), _per_instrument(base / "one")
    for inst in ("BTCUSDT", "ETHUSDT"):
        rows = p["forecasts.csv"][inst]
        assert len(rows) > 500
        assert rows == full["forecasts.csv"][inst][: len(rows)], inst


def test_a_bundle_of_a_run_with_pairs_warm_starts_one(ws_dir, tmp_path):
    """The learners of a run with pairs, keyed where the leader's rows meet the follower's, are saved when
    the input ends, both instruments' with their features; a run started from the bundle uses them."""
    paths = [str(ws_dir / f) for f in FILES]
    saved = run_backtest(paths, tmp_path / "out", base=PAIRS, save_models=tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert saved["bundle"]["id"] == manifest["bundle_id"]
    assert sorted(manifest["data"]["instruments"]) == ["BTCUSDT", "ETHUSDT"]
    warm = run_backtest(paths, tmp_path / "warm", base=PAIRS, warm_start=tmp_path / "b")
    rows = [r for r in csv_dicts(tmp_path / "warm" / "forecasts.csv") if r["model"] == "logistic"]
    assert rows and all(r["bundle"] == manifest["bundle_id"] for r in rows)
    assert {r["instrument"] for r in rows} == {"BTCUSDT", "ETHUSDT"}
    assert warm["forecasts"] == saved["forecasts"]

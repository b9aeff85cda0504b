"""Model bundles and warm starts, on the real recordings.

A bundle is made by a whole run of the dataflow on spot BTCUSDT 2024-08-08
(``run_backtest(..., save_models=DIR)``, as ``ticklet backtest PATH
--save-models DIR`` does); runs on 2024-08-09, on the other instruments and
through the command line then start from it.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import pickle
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from dataflows.settings import Settings
from harness.realdata import REPO, SCRATCH, csv_dicts, run_chain
from models.bundle import FORMAT, bundle_id, loads
from operators import features as features_op
from operators import forecast as forecast_op
from operators.forecast import ForecastConfig

#: Integration tests (tests/integration_mark.py): whole runs that make and load bundles, in the process (about 25 s:
#: too slow for the unit run) and through the CLI in subprocesses.
pytestmark = pytest.mark.integration

DATA = REPO / "tests" / "data" / "binance-ws"
SPOT8 = DATA / "spot" / "btcusdt_20240808.gz"
SPOT9 = DATA / "spot" / "btcusdt_20240809.gz"
ETH9 = DATA / "spot" / "ethusdt_20240809.gz"
PERP = [DATA / "usdm" / "btcusdt_20230404.dat.gz", DATA / "usdm" / "btcusdt_20230405.dat.gz"]
MODELS = ("naive", "linear", "logistic", "ensemble")


def _settings(**forecast) -> Settings:
    s = Settings()
    fc = ForecastConfig(**{"models": MODELS, **forecast})
    return s.model_copy(update={"forecast": fc, "output": s.output.model_copy(update={"economics": False})})


def _run(paths, out: Path, **kw) -> dict:
    from ticklet.backtest import run_backtest

    base = kw.pop("base", None) or _settings()
    return run_backtest([str(p) for p in paths], out, base=base, **kw)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, dict, Path]:
    """(bundle directory, summary, output directory) of a run on 2024-08-08."""
    d = tmp_path_factory.mktemp("bundle")
    summary = _run([SPOT8], d / "out", save_models=d / "bundle")
    return d / "bundle", summary, d / "out"


@pytest.fixture(scope="module")
def manifest(made) -> dict:
    return json.loads((made[0] / "manifest.json").read_text())


def _by_model(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    out: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        out[(r["model"], int(r["horizon"]))].append(r)
    return out


# --- (1) bundles: the manifest -------------------------------------------------------------------------------

def test_the_bundle_holds_a_manifest_and_one_state_file_per_instrument(made, manifest):
    bundle, summary, _ = made
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "states"]
    assert sorted(p.name for p in (bundle / "states").iterdir()) == ["BTCUSDT.pkl"]
    assert summary["bundle"] == {"path": str(bundle), "id": manifest["bundle_id"]}
    assert manifest["format"] == FORMAT
    assert manifest["ticklet_version"]
    for rel, digest in manifest["files"].items():  # a sha256 of every file of the bundle
        assert hashlib.sha256((bundle / rel).read_bytes()).hexdigest() == digest
    assert manifest["bundle_id"] == bundle_id(manifest)


def test_the_manifest_records_the_config_and_its_hash(manifest):
    cfg = manifest["config"]
    canonical = json.dumps(cfg, sort_keys=True, separators=(",", ":"))
    assert manifest["config_hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert cfg["forecast"]["models"] == list(MODELS) == manifest["models"]
    assert manifest["horizons"] == cfg["forecast"]["horizons"] == [1, 10]
    assert manifest["bar_interval_ms"] == cfg["bars"]["interval_ms"] == 1000
    assert manifest["scaler"] == "standard"


def test_the_manifest_names_the_features_the_learners_saw(manifest):
    rows = [r for r in run_chain([SPOT8]).rows if r.ready]
    assert manifest["features"] == list(rows[0].x) == list(features_op.feature_names(Settings().features))
    assert all(list(r.x) == manifest["features"] for r in rows)


def test_the_manifest_records_the_data_learnt_from(made, manifest):
    _, summary, out = made
    (inp,) = manifest["data"]["inputs"]
    assert inp["path"] == str(SPOT8) and inp["bytes"] == SPOT8.stat().st_size
    assert inp["sha256"] == hashlib.sha256(SPOT8.read_bytes()).hexdigest()
    inst = manifest["data"]["instruments"]["BTCUSDT"]
    rows = run_chain([SPOT8]).rows
    assert inst["bars"] == len(rows) == summary["bars"]
    assert (inst["ts_first"], inst["ts_last"]) == (rows[0].ts_end, rows[-1].ts_end)
    scored = _by_model(csv_dicts(out / "forecasts.csv"))
    labels = inst["labels"]
    assert {(m, int(h)) for m, hs in labels.items() for h in hs} == set(scored)
    for (m, h), rs in scored.items():  # every scored forecast was learnt from
        assert labels[m][str(h)] == len(rs) > 200
    assert manifest["metrics"] == summary["instruments"]  # the prequential metrics at save time
    assert manifest["metrics"]["BTCUSDT"]["models"]["logistic"]["1"]["n"] == labels["logistic"]["1"]


def test_the_same_run_makes_the_same_bundle(made, tmp_path):
    """The same data, model settings and seed give the same bundle, byte for
    byte, wherever the run wrote its outputs and its bundle, and whichever
    servers its settings name: the id says what the learners learnt, not
    where they were written."""
    bundle, _, _ = made
    s = _settings()
    elsewhere = s.model_copy(update={
        "kafka": s.kafka.model_copy(update={"bootstrap_servers": "kafka.example:9093", "output_topic": "other"}),
        "influx": s.influx.model_copy(update={"url": "http://influx.example:8086", "bucket": "other"}),
        "collect": s.collect.model_copy(update={"capture_dir": tmp_path / "capture", "ws_url": "ws://example"}),
        "serve": s.serve.model_copy(update={"port": 8123})})
    _run([SPOT8], tmp_path / "out-a", save_models=tmp_path / "a")
    _run([SPOT8], tmp_path / "elsewhere" / "out-b", save_models=tmp_path / "b", base=elsewhere)
    dirs = (bundle, tmp_path / "a", tmp_path / "b")
    state = Path("states") / "BTCUSDT.pkl"
    assert len({(d / state).read_bytes() for d in dirs}) == 1
    assert len({(d / "manifest.json").read_bytes() for d in dirs}) == 1  # the manifests too, id and all
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["bundle_id"] == bundle_id(m)
    # what says where is left out of the recorded config; what the learners learnt from stays in it
    assert {"output", "influx", "collect", "serve", "api", "download"}.isdisjoint(m["config"])
    assert "bootstrap_servers" not in m["config"]["kafka"] and str(tmp_path) not in json.dumps(m)
    assert m["config"]["input"]["paths"] == [str(SPOT8)] and m["config"]["forecast"]["models"] == list(MODELS)


def test_the_saved_states_are_the_runs_final_states(made):
    """The learners in the bundle are those of a pure replay of the same rows:
    they forecast the same on the next day's rows."""
    bundle, _, _ = made
    states = loads((bundle / "states" / "BTCUSDT.pkl").read_bytes())
    assert sorted(states) == ["features", "join"]
    chain = run_chain([SPOT8], _settings())
    join = forecast_op.JoinState(chain.settings.forecast)
    for r in chain.rows:
        join, _ = forecast_op.step(join, r)
    saved: forecast_op.JoinState = states["join"]
    assert saved.n_pending == 0 and all(not dq for dq in saved.pending.values())
    assert saved.n_learnt == join.n_learnt and saved.n_rows == join.n_rows
    nxt = [r for r in run_chain([SPOT9]).rows if r.ready][:50]
    for key in [("linear", 1), ("logistic", 10)]:
        assert [saved.models[key].predict_one(r.x) for r in nxt] == [join.models[key].predict_one(r.x) for r in nxt]
    fs: features_op.FeatureState = states["features"]
    assert fs.scaler.counts == chain_scaler_counts(chain)


def chain_scaler_counts(chain) -> dict:
    st = features_op.FeatureState(chain.settings.features)
    for b in chain.bars:
        st, _ = features_op.step(st, b)
    return dict(st.scaler.counts)


# --- (2) warm start -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def warm_and_cold(made, tmp_path_factory) -> tuple[list[dict], list[dict]]:
    bundle, _, _ = made
    d = tmp_path_factory.mktemp("next_day")
    _run([SPOT9], d / "warm", warm_start=bundle)
    _run([SPOT9], d / "cold")
    return csv_dicts(d / "warm" / "forecasts.csv"), csv_dicts(d / "cold" / "forecasts.csv")


def test_a_warm_start_continues_from_the_bundles_labels(manifest, warm_and_cold):
    warm, cold = warm_and_cold
    labels = manifest["data"]["instruments"]["BTCUSDT"]["labels"]
    wb, cb = _by_model(warm), _by_model(cold)
    assert set(wb) == set(cb)
    for (m, h), rs in wb.items():
        assert {r["bundle"] for r in rs} == {manifest["bundle_id"]}
        n0 = labels[m][str(h)]
        assert int(rs[0]["n_learnt"]) == n0  # the first forecast: made by the bundle's learner as it was
        targets = sorted(int(r["ts_target"]) for r in rs)
        for r in rs:  # and it keeps learning: every label resolved before a forecast was learnt
            assert int(r["n_learnt"]) == n0 + bisect.bisect_right(targets, int(r["ts_forecast"])), r
        crs = cb[(m, h)]
        assert {r["bundle"] for r in crs} == {"cold"} and int(crs[0]["n_learnt"]) == 0
        assert [r["ts_forecast"] for r in rs] == [r["ts_forecast"] for r in crs]  # the same bars, from the start
    # warm learners forecast from the first bar on; cold ones have learnt nothing then
    assert float(wb[("linear", 1)][0]["pred_return"]) != 0.0 and float(cb[("linear", 1)][0]["pred_return"]) == 0.0


def test_warm_states_copy_the_bundle(made):
    bundle, _, _ = made
    states = loads((bundle / "states" / "BTCUSDT.pkl").read_bytes())
    cfg = _settings()
    st = forecast_op.warm(states["join"], cfg.forecast, "abc")
    assert st.origin == {k: "abc" for k in states["join"].models}
    assert st.n_learnt == states["join"].n_learnt and st.n_rows == 0 and st.n_pending == 0
    for k, model in st.models.items():
        assert model is not states["join"].models[k]
        assert pickle.dumps(model) == pickle.dumps(states["join"].models[k])  # the same learner, copied
    fs = features_op.warm(states["features"], cfg.features)
    assert fs.n == 0 and not fs.logp and fs.scaler.counts == states["features"].scaler.counts
    # a model the bundle lacks starts cold; the ensemble too when its members differ
    more = ForecastConfig(models=(*MODELS[:-1], "pa", "ensemble"))
    st2 = forecast_op.warm(states["join"], more, "abc")
    assert ("pa", 1) not in st2.origin and ("ensemble", 1) not in st2.origin and ("linear", 1) in st2.origin


def test_one_instrument_starts_another(made, tmp_path):
    """Spot BTCUSDT's learners start the USD-M perpetual (a map entry), or every
    instrument ("*"); without a map an instrument the bundle lacks starts cold."""
    bundle, _, _ = made
    bid = json.loads((bundle / "manifest.json").read_text())["bundle_id"]
    _run(PERP, tmp_path / "plain", warm_start=bundle)
    assert {r["bundle"] for r in csv_dicts(tmp_path / "plain" / "forecasts.csv")} == {"cold"}
    mapped = _settings(warm_start_map={"BTCUSDT-PERP": "BTCUSDT"})
    _run(PERP, tmp_path / "mapped", warm_start=bundle, base=mapped)
    rows = csv_dicts(tmp_path / "mapped" / "forecasts.csv")
    assert {r["instrument"] for r in rows} == {"BTCUSDT-PERP"} and {r["bundle"] for r in rows} == {bid}
    everyone = _settings(warm_start_map={"*": "BTCUSDT"})
    _run([SPOT9, ETH9], tmp_path / "all", warm_start=bundle, base=everyone)
    rows = csv_dicts(tmp_path / "all" / "forecasts.csv")
    assert {(r["instrument"], r["bundle"]) for r in rows} == {("BTCUSDT", bid), ("ETHUSDT", bid)}


def test_recovery_state_takes_precedence_over_the_bundle(made, tmp_path, caplog):
    """A run with a recovery store resumes its own (cold) learners from the
    store even when a bundle is given; it says so at start (the store wins
    for BTCUSDT), and at the end that the bundle went unused (before: the
    bundle was silently ignored)."""
    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.testing import run_main

    from dataflows.forecast import build_flow, check_recovery

    bundle, _, _ = made
    rec = tmp_path / "recovery"
    rec.mkdir()
    init_db_dir(rec, 1)

    def run(paths, out: Path, warm: bool) -> list[dict]:
        s = _settings(warm_start=bundle if warm else None)
        s = s.model_copy(update={"input": s.input.model_copy(update={"paths": [str(p) for p in paths]}),
                                 "output": s.output.model_copy(update={"dir": out, "summary": False})})
        from datetime import timedelta

        flow = build_flow(s)
        check_recovery(s, flow, (rec, True))
        run_main(flow, epoch_interval=timedelta(seconds=0.5), recovery_config=RecoveryConfig(str(rec)))
        return csv_dicts(out / "forecasts.csv")

    first = run([SPOT8], tmp_path / "out", warm=False)
    end = max(int(r["ts_target"]) for r in first)
    caplog.clear()
    both = run([SPOT8, SPOT9], tmp_path / "out", warm=True)  # resumes after 2024-08-08, with a bundle
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    bundle_id = json.loads((bundle / "manifest.json").read_text())["bundle_id"]
    assert said == [
        f"recovery store {rec} holds the learners of the instruments of ws:spot:BTCUSDT: they resume from its "
        f"snapshot, not from the bundle {bundle} (TICKLET_FORECAST__WARM_START), which starts only the instruments "
        "the store has no state of",
        f"bundle {bundle_id} ({bundle}, holding BTCUSDT) went unused: no instrument of this run started afresh: a "
        "recovery store (-r) resumed every one from its snapshot, or the input held no ticks (a finished store "
        "resumes at the end of its input; a warm start with recovery needs a store of its own)"], said
    resumed = [r for r in both if int(r["ts_target"]) > end]
    assert len(resumed) > 1000 and {r["bundle"] for r in both} == {"cold"}
    lin = [r for r in resumed if r["model"] == "linear" and r["horizon"] == "1"]
    learnt = sum(1 for r in first if r["model"] == "linear" and r["horizon"] == "1")
    assert int(lin[0]["n_learnt"]) >= learnt  # the learner of the first run, not the bundle's nor a fresh one


def test_a_bundle_no_instrument_of_the_run_starts_from_says_so(made, tmp_path, caplog):
    """A bundle of BTCUSDT given to a run on ETHUSDT, with no instrument map:
    every learner starts cold, and one warning at the end says the bundle
    went unused and why; mapped (TICKLET_FORECAST__WARM_START_MAP), it is
    used and nothing is said."""
    bundle, _, _ = made
    bundle_id = json.loads((bundle / "manifest.json").read_text())["bundle_id"]
    cold = _run([ETH9], tmp_path / "eth", warm_start=bundle)
    said = [r.getMessage() for r in caplog.records if "went unused" in r.getMessage()]
    assert said == [f"bundle {bundle_id} ({bundle}, holding BTCUSDT) went unused: none of this run's instruments "
                    "(ETHUSDT) is in it, and TICKLET_FORECAST__WARM_START_MAP maps none of them to one of its "
                    "instruments: they started cold"], said
    assert {r["bundle"] for r in csv_dicts(tmp_path / "eth" / "forecasts.csv")} == {"cold"} and cold
    caplog.clear()
    _run([ETH9], tmp_path / "mapped", base=_settings(warm_start=bundle, warm_start_map={"ETHUSDT": "BTCUSDT"}))
    assert not [r for r in caplog.records if "went unused" in r.getMessage()]
    assert {r["bundle"] for r in csv_dicts(tmp_path / "mapped" / "forecasts.csv")} == {bundle_id}


# --- refusals and trust ---------------------------------------------------------------------------------------

def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    e = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    return subprocess.run([sys.executable, "-m", "ticklet.cli", *args], cwd=SCRATCH, capture_output=True,
                          text=True, env={**e, **(env or {})}, timeout=300)


def _copy(bundle: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(bundle, to)
    return to


def test_an_unfit_or_damaged_bundle_is_refused_in_one_line(made, tmp_path):
    bundle, _, _ = made
    spot9 = str(SPOT9)
    tampered = _copy(bundle, tmp_path / "tampered")
    with open(tampered / "states" / "BTCUSDT.pkl", "ab") as f:
        f.write(b"x")
    other = _copy(bundle, tmp_path / "other-format")
    m = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**m, "format": FORMAT + 1}))
    cases = [
        ({"TICKLET_FORECAST__HORIZONS": "[1, 5]"}, bundle, "horizons [1, 10] in the bundle, [1, 5] in this run"),
        ({"TICKLET_BARS__INTERVAL_MS": "500"}, bundle, "bar interval 1000 ms in the bundle, 500 ms in this run"),
        ({"TICKLET_FEATURES__RETURN_LAGS": "[1, 5, 10]"}, bundle, "feature names differ (only in the bundle: ret_30"),
        ({"TICKLET_FEATURES__SWT__LEVEL": "2"}, bundle, "only in the bundle: swt_e3"),
        ({"TICKLET_FEATURES__SCALER": "adaptive"}, bundle, "feature scaler 'standard' in the bundle, 'adaptive'"),
        ({}, other, f"bundle format {FORMAT + 1}, this ticklet reads format {FORMAT}"),
        ({}, tampered, "states/BTCUSDT.pkl does not match its SHA-256 in the manifest"),
        ({}, tmp_path / "nothing", "no such directory"),
        ({}, tmp_path, "not a model bundle (no manifest.json)"),
        ({"TICKLET_FORECAST__WARM_START_MAP": '{"*": "ETHUSDT"}'}, bundle, "ETHUSDT not in bundle"),
    ]
    for env, path, why in cases:
        proc = _cli(["backtest", spot9, "--out", str(tmp_path / "out"), "--warm-start", str(path)], env)
        assert proc.returncode == 2, (env, proc.stderr[-2000:])
        assert proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr
        line = proc.stderr.strip()
        assert "\n" not in line and line.startswith("ticklet: TICKLET_FORECAST__WARM_") and why in line, line
    # the environment variable and the entry point of Bytewax refuse the same way
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.forecast"], cwd=SCRATCH,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                               "TICKLET_FORECAST__WARM_START": str(tampered),
                               "TICKLET_OUTPUT__DIR": str(tmp_path / "out2")})
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "SHA-256" in proc.stderr, proc.stderr


def test_a_pickle_that_is_not_the_manifests_never_runs(made, tmp_path):
    """A state file replaced by one that runs code when unpickled (it would
    create a file) is refused before it is unpickled."""
    bundle, _, _ = made
    evil = _copy(bundle, tmp_path / "evil")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (evil / "states" / "BTCUSDT.pkl").write_bytes(pickle.dumps({"join": Evil()}))
    proc = _cli(["backtest", str(SPOT9), "--out", str(tmp_path / "out"), "--warm-start", str(evil)])
    assert proc.returncode == 2 and "does not match its SHA-256" in proc.stderr
    assert not marker.exists()
    # a state file the manifest does not list is never read either
    extra = _copy(bundle, tmp_path / "extra")
    (extra / "states" / "ETHUSDT.pkl").write_bytes(pickle.dumps({"join": Evil()}))
    proc = _cli(["backtest", str(ETH9), "--out", str(tmp_path / "out3"), "--warm-start", str(extra), "--json"],
                {"TICKLET_FORECAST__MODELS": json.dumps(MODELS), "TICKLET_OUTPUT__ECONOMICS": "false"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists()
    assert {r["bundle"] for r in csv_dicts(tmp_path / "out3" / "forecasts.csv")} == {"cold"}


def test_ticklet_train_is_backtest_saving_a_bundle(tmp_path):
    proc = _cli(["train", str(SPOT8), "--out", str(tmp_path / "out"), "--save-models", str(tmp_path / "b"),
                 "--json"], {"TICKLET_FORECAST__MODELS": '["naive", "linear"]', "TICKLET_OUTPUT__ECONOMICS": "false"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert summary["bundle"] == {"path": str(tmp_path / "b"), "id": m["bundle_id"]}
    assert m["models"] == ["naive", "linear"]
    assert proc.stderr.count("\noutputs:\n") == 1  # the summary, written once the bundle is saved
    proc = _cli(["train", str(SPOT8), "--out", str(tmp_path / "out")])
    assert proc.returncode == 2 and "--save-models" in proc.stderr


@pytest.mark.parametrize("what", ["states/BTCUSDT.pkl", "manifest.json"])
def test_a_bundle_that_cannot_be_written_is_one_line(made, tmp_path, what):
    """``ticklet train --save-models DIR`` with DIR on a tmpfs too small for
    the bundle (its own mount namespace: ENOSPC): one page short of the
    state file, which the dataflow writes when the input ends, or just the
    state file's pages, so that the manifest, written after the run, does
    not fit. One line naming the file and the OS error, status 74, no
    summary, no JSON, no bundle left (and no counters.json when the dataflow
    itself stopped). Before: a Rust panic and a stray temporary state file,
    or a traceback; status 1."""
    from runutil import one_line

    bundle, _, _ = made
    pages = -(-(bundle / "states" / "BTCUSDT.pkl").stat().st_size // 4096)
    assert pages >= 2  # one page short still holds part of the state file
    kb = 4 * (pages - 1 if what.startswith("states") else pages)
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    script = (f'mount -t tmpfs -o size={kb}k tmpfs "$1" || exit 99; shift; "$@"; rc=$?; '
              'find "$DIR" -mindepth 1 > "$LEFT"; exit $rc')
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("TICKLET_")}
    env.update({"TICKLET_FORECAST__MODELS": json.dumps(MODELS), "TICKLET_OUTPUT__ECONOMICS": "false",
                "DIR": str(mnt / "b"), "LEFT": str(tmp_path / "left")})
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(mnt), sys.executable, "-m", "ticklet.cli",
                           "train", str(SPOT8), "--out", str(out), "--save-models", str(mnt / "b"), "--json"],
                          cwd=SCRATCH, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 74, proc.stderr[-3000:]
    assert proc.stdout == ""
    line = one_line(proc.stderr)
    assert line.startswith(f"ticklet: cannot write {mnt / 'b' / what}: [Errno 28] No space left on device. No model "
                           f"bundle was saved in {mnt / 'b'}"), line
    assert (tmp_path / "left").read_text().split() == [str(mnt / "b" / "states")]  # nothing of a bundle
    if what == "manifest.json":  # after the run: its outputs are complete
        assert f"the run itself finished and its outputs in {out} are complete" in line
        assert json.loads((out / "counters.json").read_text())["forecasts"] > 0
    else:  # in the dataflow: the outputs may lack their end, and no totals claim otherwise
        assert "its outputs are incomplete" in line and not (out / "counters.json").exists()


def test_states_a_bundle_may_not_hold_stop_the_save_in_one_line(made, tmp_path):
    """Learners whose states refer to a class the bundle loader does not
    allow cannot be saved: no warm start could read them. No learner of the
    registry does (test_the_allow_list_is_what_ticklet_writes), so no run
    makes such states, and this is tested at the function level: the states
    of the real run, with one learner replaced by a real River linear
    regression whose intercept follows River's InverseScaling schedule (not
    on the list; as a learner of one's own might), given to save_bundle, the
    step ``ticklet backtest --save-models`` and ``ticklet train`` take after
    the run, in a subprocess as the command runs it. It is a ticklet bug: one
    line that says so and what to report, status 70, no traceback, and no
    bundle left. Before: a RuntimeError's traceback, status 1, the states
    left without a manifest."""
    import itertools
    import math

    from river import linear_model, optim

    from models.bundle import dumps

    bundle, _, out = made
    states = loads((bundle / "states" / "BTCUSDT.pkl").read_bytes())
    own = linear_model.LinearRegression(intercept_lr=optim.schedulers.InverseScaling(0.01))
    rows = [r for r in run_chain([SPOT8]).rows if r.ready][:200]
    for r0, r1 in itertools.pairwise(rows):
        own.learn_one(r0.x, math.log(r1.price / r0.price))
    states["join"].models[("linear", 1)] = own
    d = tmp_path / "b"
    (d / "states").mkdir(parents=True)
    (d / "states" / "BTCUSDT.pkl").write_bytes(dumps(states))
    script = ("import sys; from pathlib import Path; from dataflows.bundle import save_bundle; "
              "from sinks.report import summarize; from dataflows.settings import read_settings; "
              "s = read_settings(); save_bundle(s, Path(sys.argv[1]), summarize(s.output.dir)); print('saved')")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("TICKLET_")}
    env.update({"TICKLET_INPUT__PATHS": json.dumps([str(SPOT8)]), "TICKLET_OUTPUT__DIR": str(out),
                "TICKLET_FORECAST__MODELS": json.dumps(MODELS), "TICKLET_OUTPUT__ECONOMICS": "false"})
    proc = subprocess.run([sys.executable, "-c", script, str(d)], cwd=SCRATCH, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 70, proc.stderr[-3000:]
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line, line
    assert line.startswith(f"ticklet: cannot save the model bundle {d}: the states of BTCUSDT refer to "
                           "river.optim.schedulers.InverseScaling, which the bundle loader does not allow "
                           "(models.bundle.ALLOWED)"), line
    assert "This is a bug in ticklet, not in your data or settings: please report it with this line" in line
    assert f"TICKLET_FORECAST__MODELS={json.dumps(MODELS)}" in line and line.endswith("(status 70).")
    assert sorted(p.relative_to(d).as_posix() for p in d.rglob("*")) == ["states"]  # no bundle left


# --- (3) model age in the outputs -----------------------------------------------------------------------------

def test_model_age_in_every_output(warm_and_cold, manifest):
    """forecasts.csv (above), the Kafka records (schema 3) and the InfluxDB points carry the learner's age."""
    from core.events import Forecast, ForecastRecord
    from sinks.influx_points import MEASUREMENTS, to_point
    from sinks.records import SCHEMA_VERSION, header, kafka_record

    assert SCHEMA_VERSION == 3
    assert header(ForecastRecord)[-2:] == header(Forecast)[-2:] == ["bundle", "n_learnt"]
    warm, _ = warm_and_cold
    r = warm[0]
    rec = ForecastRecord(r["instrument"], r["model"], int(r["horizon"]), int(r["ts_forecast"]), int(r["ts_target"]),
                         float(r["pred_return"]), float(r["pred_price"]), float(r["realized_return"]),
                         float(r["realized_price"]), float(r["error"]), None, None, r["bundle"], int(r["n_learnt"]))
    body = json.loads(kafka_record(rec.instrument, rec)[1])
    assert (body["schema"], body["type"], body["bundle"], body["n_learnt"]) == (3, "scored", manifest["bundle_id"],
                                                                                 int(r["n_learnt"]))
    assert f"n_learnt={r['n_learnt']}i" in to_point(rec).to_line_protocol()
    assert "n_learnt" in MEASUREMENTS["scored"][1] and "n_learnt" in MEASUREMENTS["forecast"][1]
    dash = json.loads((REPO / "grafana" / "dashboards" / "ticklet.json").read_text())
    age = [p for p in dash["panels"] if p["title"].startswith("Model age")]
    assert len(age) == 1 and '"n_learnt"' in age[0]["targets"][0]["query"]


# --- (4) the CNN-GRU in a bundle -------------------------------------------------------------------------------

def test_a_bundle_of_the_cnn_gru_trained_offline(tmp_path):
    from models.cnn_gru_config import CNNGRUConfig
    from models.registry import LearnerConfig

    cnn = CNNGRUConfig(window=16, channels=4, hidden=8, objective="direction", offline_epochs=4, offline_batch=64)
    s = _settings(models=("naive", "cnn_gru"), learners=LearnerConfig(cnn_gru=cnn))
    _run([SPOT8], tmp_path / "out", base=s, save_models=tmp_path / "b")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    for h in ("1", "10"):
        rep = m["offline"]["BTCUSDT"]["cnn_gru"][h]
        assert rep["train"] + rep["validation"] == rep["examples"] > 80 and 1 <= rep["epochs"] <= 4
        assert rep["train_span"][1] < rep["val_span"][0]
    states = loads((tmp_path / "b" / "states" / "BTCUSDT.pkl").read_bytes())
    model = states["join"].models[("cnn_gru", 1)]
    assert not model.recording and model.trace == [] and len(pickle.dumps(model)) < 2_000_000  # bounded bundle
    _run([SPOT9], tmp_path / "warm", base=s, warm_start=tmp_path / "b")
    rows = [r for r in csv_dicts(tmp_path / "warm" / "forecasts.csv")
            if r["model"] == "cnn_gru" and r["horizon"] == "1"]
    # the first forecasts that have a full window come from the trained network; cold, they would be 0 until
    # the first online retrain
    assert {r["bundle"] for r in rows} == {m["bundle_id"]}
    assert sum(1 for r in rows[:40] if float(r["pred_return"]) != 0.0) >= 40 - cnn.window


# --- (5) bundles without code execution: what loading builds, links, the id, the signature, old formats ---------

def _cli_one_line(proc: subprocess.CompletedProcess, *why: str) -> str:
    """The one line of a refused warm start (exit status 2), which says each of ``why``."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith("ticklet: TICKLET_FORECAST__WARM_START: "), line
    assert all(w in line for w in why), line
    return line


def _warm(bundle: Path, out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return _cli(["backtest", str(SPOT9), "--out", str(out), "--warm-start", str(bundle)],
                {"TICKLET_FORECAST__MODELS": json.dumps(MODELS), "TICKLET_OUTPUT__ECONOMICS": "false",
                 "TICKLET_OUTPUT__SUMMARY": "false", **(env or {})})


def _forge(bundle: Path, to: Path, state: bytes | None = None, **fields) -> Path:
    """A copy of ``bundle`` with its state file replaced by ``state`` and the
    manifest's ``fields`` replaced, the hashes and the id made anew, as anyone
    who can write a bundle can (no key: the signature, if any, is kept)."""
    from sinks.bundle import file_sha256

    _copy(bundle, to)
    m = json.loads((to / "manifest.json").read_text())
    if state is not None:
        (to / "states" / "BTCUSDT.pkl").write_bytes(state)
    m.update(fields)
    m["files"] = {rel: file_sha256(to / rel) for rel in m["files"]}
    m["bundle_id"] = bundle_id(m)
    (to / "manifest.json").write_text(json.dumps(m))
    return to


class _System:  # a state whose unpickling runs a shell command
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


class _Eval:  # ... that evaluates Python
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"__import__('pathlib').Path({str(self.marker)!r}).touch()",))


class _Method:  # ... that calls a method of an object made of an allowed class (pathlib.PosixPath.touch)
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (self.marker.touch, ())  # pickled as builtins.getattr(PosixPath(marker), "touch")()


@pytest.mark.parametrize("payload, names", [(_System, "system"), (_Eval, "builtins.eval"),
                                            (_Method, "builtins.getattr(pathlib.PosixPath, 'touch')")],
                         ids=["os.system", "eval", "getattr"])
def test_loading_a_bundle_runs_no_code_of_its_own(made, tmp_path, payload, names):
    """A bundle whose state runs code when unpickled, with a manifest made to
    match it (the hashes and the id are no secret), is refused in one line
    and runs nothing; the same bytes do run with Python's own unpickler."""
    bundle, _, _ = made
    marker = tmp_path / "pwned"
    real = loads((bundle / "states" / "BTCUSDT.pkl").read_bytes())
    evil = pickle.dumps({"features": real["features"], "join": payload(marker)}, protocol=5)  # as bundles are
    pickle.loads(evil)  # the payload is real: Python's unpickler runs it
    assert marker.exists()
    marker.unlink()
    forged = _forge(bundle, tmp_path / "forged", evil)
    _cli_one_line(_warm(forged, tmp_path / "out"), "states/BTCUSDT.pkl refers to", names, "refused")
    assert not marker.exists()


class _Recorder(pickle.Unpickler):
    """Python's unpickler, noting every global a pickle refers to and every
    bound method it rebuilds (for bundles this test made itself)."""

    def __init__(self, data: bytes):
        import io

        super().__init__(io.BytesIO(data))
        self.globals: set[tuple[str, str]] = set()
        self.methods: set[tuple[str, str, str]] = set()

    def find_class(self, module, name):
        if (module, name) == ("builtins", "getattr"):
            def method(obj, attr):
                self.methods.add((type(obj).__module__, type(obj).__qualname__, attr))
                return getattr(obj, attr)
            return method
        self.globals.add((module, name))
        return super().find_class(module, name)


def test_the_allow_list_is_what_ticklet_writes(made, tmp_path):
    """Bundles of every learner of the registry and the ensemble (stacking,
    the rule with a learner of its own), the small CNN-GRU trained offline,
    both feature scalers, from a warm-started run (its config holds the
    bundle's path): their states refer to exactly the globals and bound
    methods the loader allows, no fewer and no more, and a warm start from
    them starts every learner."""
    from models.bundle import ALLOWED, METHODS
    from models.cnn_gru_config import CNNGRUConfig
    from models.registry import MODELS as REGISTRY
    from models.registry import LearnerConfig

    bundle, _, _ = made
    cnn = CNNGRUConfig(window=16, channels=4, hidden=8, offline_epochs=2, offline_batch=64)
    every = (*sorted(REGISTRY), "ensemble")
    lc = LearnerConfig(ensemble_rule="stack", hat_grace_period=20, arf_models=2, cnn_gru=cnn)
    _run([SPOT8], tmp_path / "o1", base=_settings(models=every, learners=lc), save_models=tmp_path / "all",
         warm_start=bundle)
    s = _settings(models=("naive", "linear"))
    adaptive = s.model_copy(update={"features": s.features.model_copy(update={"scaler": "adaptive"})})
    _run([SPOT8], tmp_path / "o2", base=adaptive, save_models=tmp_path / "adaptive")
    seen, methods = set(), set()
    for d in ("all", "adaptive"):
        rec = _Recorder((tmp_path / d / "states" / "BTCUSDT.pkl").read_bytes())
        rec.load()
        seen |= rec.globals
        methods |= rec.methods

    def numpy2(names):  # NumPy 1 writes numpy.core.*, NumPy 2 numpy._core.*: the loader allows both
        return {(m.replace("numpy.core.", "numpy._core."), n) for m, n in names}

    assert seen <= ALLOWED and methods <= METHODS, (seen - ALLOWED, methods - METHODS)
    assert numpy2(ALLOWED) == numpy2(seen) and methods == METHODS  # nothing allowed that ticklet never writes
    assert not any(m.startswith(("torch", "os", "posix", "subprocess")) for m, _ in seen)
    assert ("builtins", "getattr") not in ALLOWED
    import torch

    from models.bundle import UnsafeState

    with pytest.raises(UnsafeState, match="torch"):  # a tensor pickled as torch pickles it
        loads(pickle.dumps({"net": torch.zeros(3)}))
    # and the bundle of every learner, as a warm start reads it, starts every learner
    from dataflows.bundle import load_warm_start

    s = _settings(models=every, learners=lc, warm_start=tmp_path / "all")
    warm = load_warm_start(s)
    assert warm is not None and warm.manifest["config"]["forecast"]["warm_start"] == str(bundle)
    join = warm.join("BTCUSDT")
    assert join is not None and set(join.origin) == set(join.models) and len(join.models) == 2 * len(every)


@pytest.mark.parametrize("what", ["states/BTCUSDT.pkl", "states", "manifest.json"])
def test_a_bundle_file_that_is_a_symbolic_link_is_refused(made, tmp_path, what):
    """A state file, the states folder or the manifest that is a symbolic
    link (here to an exact copy outside the bundle: every hash matches) is
    refused in one line; the bundle's directory itself may be a link."""
    import shutil

    bundle, _, _ = made
    linked = _copy(bundle, tmp_path / "linked")
    outside = tmp_path / "elsewhere" / what
    outside.parent.mkdir(parents=True)
    (shutil.copytree if (linked / what).is_dir() else shutil.copy)(linked / what, outside)
    (shutil.rmtree if (linked / what).is_dir() else Path.unlink)(linked / what)
    (linked / what).symlink_to(outside)
    _cli_one_line(_warm(linked, tmp_path / "out"), f"{linked}: {what} is a symbolic link", "refused")
    # the directory the user names may be a link: it is the bundle
    alias = tmp_path / "alias"
    alias.symlink_to(bundle)
    from sources.bundle import load_states, read_manifest

    m = read_manifest(alias)
    assert load_states(alias, m, "states/BTCUSDT.pkl").keys() == {"features", "join"}


def test_saving_over_a_linked_states_folder_writes_nothing_through_it(made, tmp_path):
    """--save-models into a directory whose ``states`` is a symbolic link (to
    another bundle's states): the link is removed, never what it points to,
    and the new bundle's states are its own."""
    import shutil

    bundle, _, _ = made
    outside = tmp_path / "other-states"
    shutil.copytree(bundle / "states", outside)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    target = tmp_path / "target"
    target.mkdir()
    (target / "states").symlink_to(outside)
    _run([SPOT8], tmp_path / "out", base=_settings(models=("naive", "linear")), save_models=target)
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    assert not (target / "states").is_symlink() and (target / "states" / "BTCUSDT.pkl").is_file()
    from sources.bundle import read_manifest

    assert read_manifest(target)["models"] == ["naive", "linear"]


def test_rewriting_any_field_of_the_manifest_is_refused(made, manifest, tmp_path):
    """The id covers the whole manifest: a rewrite of any field (the data
    learnt from, the metrics, the config, ...) that keeps the id is refused,
    in one line at the command line."""
    from sources.bundle import BundleError, read_manifest

    bundle, _, _ = made
    changed = _copy(bundle, tmp_path / "changed")

    def refused(m: dict) -> str:
        (changed / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(BundleError) as ex:
            read_manifest(changed)
        return str(ex.value)

    fields = [k for k in manifest if k not in ("bundle_id", "format")]
    assert {"data", "metrics", "config", "config_hash", "features", "files", "offline", "ticklet_version"} <= {*fields}
    for k in fields:
        assert "does not match its bundle id" in refused({**manifest, k: {"rewritten": manifest[k]}}), k
    inputs = [{**manifest["data"]["inputs"][0], "path": "/somewhere/else.gz"}]
    why = refused({**manifest, "data": {**manifest["data"], "inputs": inputs}})
    assert why == f"{changed}: the manifest does not match its bundle id {manifest['bundle_id']!r} (changed or damaged)"
    _cli_one_line(_warm(changed, tmp_path / "out"), "does not match its bundle id")


def test_a_bundle_of_the_old_format_is_refused_with_how_to_remake_it(made, tmp_path):
    """A format-1 bundle (states read with Python's own unpickler, the id made
    from the state files' hashes only), as ticklet wrote them before."""
    bundle, _, _ = made
    old = _copy(bundle, tmp_path / "old")
    m = json.loads((old / "manifest.json").read_text())
    files = m["files"]
    old_id = hashlib.sha256(json.dumps({"format": 1, "files": files}, sort_keys=True,
                                       separators=(",", ":")).encode()).hexdigest()[:16]
    (old / "manifest.json").write_text(json.dumps({**m, "format": 1, "bundle_id": old_id}))
    _cli_one_line(_warm(old, tmp_path / "out"), "bundle format 1 is no longer read",
                  "remake it with ticklet train PATH... --save-models DIR")


KEY = "k3y-0f-th3-m0d3l-m4k3r"


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> Path:
    """A bundle made with TICKLET_BUNDLE__KEY set (ticklet train)."""
    d = tmp_path_factory.mktemp("signed")
    proc = _cli(["train", str(SPOT8), "--out", str(d / "out"), "--save-models", str(d / "b"), "--verbose"],
                {"TICKLET_FORECAST__MODELS": json.dumps(MODELS), "TICKLET_OUTPUT__ECONOMICS": "false",
                 "TICKLET_BUNDLE__KEY": KEY})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert KEY not in proc.stdout + proc.stderr
    return d / "b"


def test_a_key_signs_a_bundle_and_never_shows(signed):
    from models.bundle import signature, signed_by

    m = json.loads((signed / "manifest.json").read_text())
    assert m["signature"] == signature(m, KEY.encode()) and signed_by(m, KEY.encode())
    assert not signed_by(m, b"another key, just as long") and m["bundle_id"] == bundle_id(m)
    assert m["config"]["bundle"]["key"] == "**********"
    for f in [signed / "manifest.json", *(signed / "states").iterdir()]:
        assert KEY.encode() not in f.read_bytes(), f
    proc = _cli(["config"], {"TICKLET_BUNDLE__KEY": KEY})
    assert proc.returncode == 0 and KEY not in proc.stdout and "TICKLET_BUNDLE__KEY" in proc.stdout
    short = "tooshort"
    proc = _cli(["config"], {"TICKLET_BUNDLE__KEY": short})
    assert proc.returncode == 2 and "TICKLET_BUNDLE__KEY" in proc.stderr and "at least 16" in proc.stderr
    assert short not in proc.stderr + proc.stdout and proc.stderr.count("\n") == 1


def test_with_a_key_only_bundles_signed_with_it_load(made, signed, tmp_path):
    bundle, _, _ = made
    m = json.loads((signed / "manifest.json").read_text())
    proc = _warm(signed, tmp_path / "ok", {"TICKLET_BUNDLE__KEY": KEY})
    assert proc.returncode == 0 and KEY not in proc.stderr, proc.stderr[-2000:]
    assert {r["bundle"] for r in csv_dicts(tmp_path / "ok" / "forecasts.csv")} == {m["bundle_id"]}
    _cli_one_line(_warm(signed, tmp_path / "o2", {"TICKLET_BUNDLE__KEY": "another key, just as long"}),
                  "signature is not that of TICKLET_BUNDLE__KEY")
    _cli_one_line(_warm(bundle, tmp_path / "o3", {"TICKLET_BUNDLE__KEY": KEY}),
                  f"{bundle}: the bundle is not signed, and TICKLET_BUNDLE__KEY is set")
    # a signed bundle whose states someone replaced (the id made anew, the signature kept) runs nothing
    marker = tmp_path / "pwned"
    real = loads((signed / "states" / "BTCUSDT.pkl").read_bytes())
    forged = _forge(signed, tmp_path / "forged", pickle.dumps({**real, "join": _System(marker)}))
    _cli_one_line(_warm(forged, tmp_path / "o4", {"TICKLET_BUNDLE__KEY": KEY}),
                  "signature is not that of TICKLET_BUNDLE__KEY")
    assert not marker.exists()
    # without a key a signed bundle loads, with a warning that it was not checked
    proc = _warm(signed, tmp_path / "o5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"bundle {m['bundle_id']} is signed, but TICKLET_BUNDLE__KEY is not set" in proc.stderr

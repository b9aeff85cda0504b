"""Two runs of the dataflow over every real recording give identical files,
in the same process and in a fresh process with another hash seed."""

from __future__ import annotations

import pytest

from harness.realdata import RECORD_FILES
from ticklet.backtest import run_backtest

#: Integration tests (tests/integration_mark.py): whole runs over every recording, twice and with two workers, and the
#: CLI in a subprocess.
pytestmark = pytest.mark.integration

FILES = [*RECORD_FILES, "counters.json"]


@pytest.fixture(scope="module")
def second_run(ws_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("second_run")
    return run_backtest([str(ws_dir)], out), out


@pytest.mark.parametrize("name", FILES)
def test_two_runs_are_byte_identical(full_run, second_run, name):
    (_s1, out1), (_s2, out2) = full_run, second_run
    a, b = (out1 / name).read_bytes(), (out2 / name).read_bytes()
    assert len(a) > 100
    assert a == b


@pytest.mark.parametrize("name", FILES)
def test_a_fresh_process_with_another_hash_seed_agrees(full_run, cli_run, name):
    _, out1 = full_run
    _, out2 = cli_run
    assert (out1 / name).read_bytes() == (out2 / name).read_bytes()


def test_summaries_agree_except_timing(full_run, second_run):
    (s1, _), (s2, _) = full_run, second_run
    strip = lambda s: {k: v for k, v in s.items() if k not in ("wall_s", "ticks_per_s")}  # noqa: E731
    assert strip(s1) == strip(s2)
    assert s1["forecasts"] > 0 and s1["instruments"]


def test_two_workers_give_the_same_records_per_instrument(full_run, ws_dir, tmp_path):
    """With two worker threads the partitions run in parallel: the interleaving
    of instruments in the files may differ, each instrument's rows may not."""
    _, out1 = full_run
    summary = run_backtest([str(ws_dir)], tmp_path, workers=2)
    for name in RECORD_FILES:
        a = (out1 / name).read_bytes().split(b"\r\n")
        b = (tmp_path / name).read_bytes().split(b"\r\n")
        assert a[0] == b[0] and sorted(a) == sorted(b)
        for sym in (b"BTCUSDT,", b"ETHUSDT,", b"BTCUSDT-PERP,"):
            assert [r for r in a if r.startswith(sym)] == [r for r in b if r.startswith(sym)]
    assert (out1 / "counters.json").read_bytes() == (tmp_path / "counters.json").read_bytes()
    assert summary["instruments"] == full_run[0]["instruments"]

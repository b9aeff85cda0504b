"""The backtest runner: ``ticklet backtest`` and ``ticklet train``.

:func:`run_backtest` builds the forecasting dataflow (:mod:`dataflows.forecast`)
on recordings or archives, runs it with Bytewax's runner, summarizes the run
from its output files and, with ``save_models``, saves its learners as a
model bundle. The command line around it is :mod:`ticklet.cli`.

With ``workers`` above 1, the run is a cluster of that many processes on
this machine (loopback addresses), one Bytewax worker each: this process is
process 0, and the others (``python -m ticklet.backtest``, which read the
run's settings from their stdin, secrets included, never from the command
line) build the same dataflow. Processes, not threads: the workers of one
process share its interpreter lock, so threads do not make a run faster.
"""

from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path
from typing import Any, Optional

from bytewax.dataflow import Dataflow
from bytewax.testing import cluster_main, run_main

from core.config import check_dir, remove_empty_dirs
from dataflows.bundle import save_bundle
from dataflows.forecast import build_flow, check_output_files, priced_for_quotes
from dataflows.settings import Settings, read_settings
from sinks.bundle import clear_bundle
from sinks.report import summarize
from ticklet.cluster import Helpers, loopback_addresses
from ticklet.cluster import start as start_cluster

__all__ = ["run_backtest"]


def run_backtest(paths: list[str], out_dir: Path, workers: int = 1,
                 base: Optional[Settings] = None, save_models: Optional[Path] = None,
                 warm_start: Optional[Path] = None, helpers: Optional[Helpers] = None) -> dict[str, Any]:
    """Run the forecasting dataflow on ``paths`` and return the summary.

    ``base`` settings, by default those of the environment. With
    ``save_models``, the learners and feature states at the end are saved
    there as a model bundle (the summary's ``bundle``: its ``path`` and
    ``id``); ``warm_start`` (over ``TICKLET_FORECAST__WARM_START``) starts
    them from one. A run refused at start (a bad setting, input or bundle:
    :class:`~core.config.ConfigError`) leaves no directory it made behind,
    unless something was written in it, and removes no file of an earlier
    run: those go once the run is accepted. ``workers`` processes run it
    (see the module docstring); ``helpers``, processes 1 to ``workers - 1``
    started already (:func:`ticklet.cluster.start`), or they are started
    here.
    """
    if workers < 1:
        raise ValueError(f"workers must be 1 or more, not {workers}")
    if helpers is None:  # (the command line starts them before it imports this module)
        helpers = start_cluster(workers)
    elif len(helpers) != workers - 1:
        raise ValueError(f"{workers} workers need {workers - 1} other processes, not {len(helpers)}")
    try:
        return _run(paths, out_dir, workers, base, save_models, warm_start, helpers)
    finally:
        helpers.stop()


def _run(paths: list[str], out_dir: Path, workers: int, base: Optional[Settings], save_models: Optional[Path],
         warm_start: Optional[Path], helpers: Helpers) -> dict[str, Any]:
    base = base or read_settings()  # a bad setting first: nothing made, nothing removed
    made = check_dir(out_dir, "--out")
    made_bundle: list[Path] = []
    try:
        check_output_files(out_dir, "--out")
        update: dict[str, Any] = {
            "input": base.input.model_copy(update={"paths": list(paths)}),
            "output": base.output.model_copy(update={"dir": out_dir}),
        }
        if warm_start is not None:
            update["forecast"] = base.forecast.model_copy(update={"warm_start": warm_start})
        if save_models is not None:
            made_bundle = check_dir(save_models, "--save-models")
        settings = priced_for_quotes(base.model_copy(update=update))
        held: Optional[list[str]] = None if save_models is None else []  # the summary, once the bundle is saved
        flow = build_flow(settings, save_models=save_models, summary=held)
        # accepted: only now go a previous run's files (a fresh run never reports them) and bundle,
        # so a run refused for its input or bundle takes nothing away
        check_output_files(out_dir, "--out", remove=True, manifest=False)  # run.json: this run's, just written
        if save_models is not None:
            clear_bundle(save_models)
    except BaseException:  # refused (an input, a bundle...): the directories made for the run go again, if empty
        remove_empty_dirs(made_bundle)
        remove_empty_dirs(made)
        raise
    t0 = time.perf_counter()
    if workers == 1:
        run_main(flow)
    else:
        _run_cluster(flow, settings, save_models, helpers)
    wall = time.perf_counter() - t0
    summary = summarize(out_dir, wall)
    if save_models is not None:
        bundle = save_bundle(settings, save_models, summary)  # states it cannot save: one line, status 70
        summary["bundle"] = {"path": str(save_models), "id": bundle["bundle_id"]}
        sys.stderr.write("".join(held or ()))
        sys.stderr.flush()
    return summary


def _run_cluster(flow: Dataflow, settings: Settings, save_models: Optional[Path], helpers: Helpers) -> None:
    """Run ``flow`` as process 0 of a cluster on loopback, with ``helpers`` as the other processes.

    They were started first (:mod:`ticklet.cluster`) and have built their
    dataflow by the time this one listens, or build it and connect then. A
    process that fails ends the run with its status (:class:`SystemExit`).
    """
    addresses = loopback_addresses(len(helpers) + 1)
    helpers.give(pickle.dumps((settings, save_models, addresses)))
    cluster_main(flow, addresses, 0)
    failed = [code for code in helpers.wait() if code != 0]
    if failed:
        raise SystemExit(failed[0])


def _process(index: int) -> None:
    """Process ``index`` of a backtest's cluster: the run's settings from stdin, the same dataflow.

    Nothing on stdin: the run was refused, and the process ends quietly.
    """
    job = sys.stdin.buffer.read()
    if not job:
        return
    settings, save_models, addresses = pickle.loads(job)
    cluster_main(build_flow(settings, save_models=save_models), addresses, index)


if __name__ == "__main__":
    _process(int(sys.argv[1]))

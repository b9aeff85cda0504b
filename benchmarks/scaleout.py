"""Scale-out: the forecasting dataflow in 1 and 2 processes, and 1 and 2 workers, as JSON.

Every figure is the wall time of whole processes (start-up, imports, the run
and the exit), the median of ``--repeat`` runs, on the same inputs:

- ``recordings``: the real recordings (3 instruments of unequal size, so a
  split in two cannot balance: reported, not targeted);
- ``replicated``: ``--copies`` copies of them with their symbols renamed
  (:func:`harness.realdata.replicate`; 4 copies: 12 instruments, 1,070,612
  ticks).

For each set, over files:

- ``one_process``: ``python -m bytewax.run dataflows.forecast``;
- ``two_workers``: the same with ``-w 2`` (threads of one process);
- ``two_processes``: ``-i 0`` and ``-i 1`` with ``-a`` on loopback, process 1
  started once process 0 listens (started together, process 1 may find no
  one listening and retry a second later);
- ``backtest_1``, ``backtest_2``: ``ticklet backtest --workers 1`` and ``2``;
- ``halves_in_parallel`` (replicated set): two independent single-process
  runs, each on half of the instruments, at once: what this machine allows
  two processes that share nothing, the ceiling of the cluster;

and over Kafka (a broker from scripts/kafka.sh, the set published by
``ticklet publish`` into a topic of ``--partitions`` partitions, keyed by
instrument): ``one_process``, ``two_workers`` and ``two_processes`` reading
the topic to its end. ``speedup`` is one process's time over the other's;
every run's outputs are checked to be the same, per instrument and in order,
as the one process's.

Usage::

    python benchmarks/scaleout.py [--recordings DIR] [--copies N] [--repeat N] [--no-kafka]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.realdata import RECORD_FILES, replicate  # noqa: E402
from ticklet.cluster import loopback_addresses  # noqa: E402

PY = sys.executable
FLOW = [PY, "-m", "bytewax.run", "dataflows.forecast"]


def _listening(port: int) -> bool:
    """Whether something listens on ``port`` (Linux: /proc/net/tcp; elsewhere, after a pause)."""
    try:
        table = Path("/proc/net/tcp").read_text()
    except OSError:
        time.sleep(0.5)
        return True
    return f":{port:04X} 00000000:0000 0A" in table


def _run(cmds: list[list[str]], env: dict[str, str], stagger: bool = False) -> float:
    """Wall time of running ``cmds`` as processes at once (process 1 on once process 0 listens, with ``stagger``)."""
    t0 = time.perf_counter()
    procs: list[subprocess.Popen[str]] = []
    for i, cmd in enumerate(cmds):
        if stagger and i == 1:
            port = int(cmds[0][cmds[0].index("-a") + 1].split(";")[0].rsplit(":", 1)[1])
            while not _listening(port) and procs[0].poll() is None:
                time.sleep(0.005)
        procs.append(subprocess.Popen(cmd, env=env, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"{p.args!r} failed ({p.returncode}): {err[-2000:]}")
    return time.perf_counter() - t0


def _per_instrument(out: Path) -> dict[str, dict[str, list[str]]]:
    got: dict[str, dict[str, list[str]]] = {}
    for name in RECORD_FILES:
        by: dict[str, list[str]] = defaultdict(list)
        for row in (out / name).read_text().splitlines()[1:]:
            by[row.split(",", 1)[0]].append(row)
        got[name] = dict(by)
    return got


def _measure(label: str, runs: dict[str, Callable[[Path], float]], repeat: int, tmp: Path) -> dict:
    """Median wall time of each run; each run's outputs checked against the first's."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    ref = None
    for r in range(repeat):
        for name, fn in runs.items():  # interleaved, so that a slow spell of the machine hits every mode
            out = tmp / f"{label}-{name}-{r}"
            times[name].append(fn(out))
            if name.startswith("halves"):
                continue
            got = _per_instrument(out)
            if ref is None:
                ref = got
            elif got != ref:
                raise RuntimeError(f"{label}: {name} gave other outputs than {next(iter(runs))}")
    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    one = med["one_process"]
    return {"wall_s": med, "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "speedup": {k: round(one / v, 3) for k, v in med.items() if k != "one_process"}}


def _file_runs(paths: list[str], halves: tuple[list[str], list[str]] | None) -> dict[str, Callable[[Path], float]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TICKLET_")}
    base["TICKLET_OUTPUT__PROGRESS"] = "false"

    def env(out: Path, p: list[str] = paths) -> dict[str, str]:
        return {**base, "TICKLET_INPUT__PATHS": json.dumps(p), "TICKLET_OUTPUT__DIR": str(out)}

    def two(out: Path) -> float:
        addrs = ";".join(loopback_addresses(2))
        return _run([[*FLOW, "-i", str(i), "-a", addrs] for i in range(2)], env(out), stagger=True)

    def backtest(n: int) -> Callable[[Path], float]:
        return lambda out: _run([[PY, "-m", "ticklet.cli", "backtest", *paths, "--out", str(out),
                                  "--workers", str(n)]], base)

    runs: dict[str, Callable[[Path], float]] = {
        "one_process": lambda out: _run([FLOW], env(out)),
        "two_workers": lambda out: _run([[*FLOW, "-w", "2"]], env(out)),
        "two_processes": two,
        "backtest_1": backtest(1),
        "backtest_2": backtest(2),
    }
    if halves is not None:
        a, b = halves
        runs["halves_in_parallel"] = lambda out: _halves(env(out / "a", a), env(out / "b", b))
    return runs


def _halves(env_a: dict[str, str], env_b: dict[str, str]) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(FLOW, env=e, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for e in (env_a, env_b)]
    for p in procs:
        if p.wait(timeout=1800) != 0:
            raise RuntimeError("a half failed")
    return time.perf_counter() - t0


def _kafka_runs(bootstrap: str, topic: str) -> dict[str, Callable[[Path], float]]:
    from harness.kafkautil import flow_env

    def env(out: Path) -> dict[str, str]:
        return {**flow_env(bootstrap, topic, out), "TICKLET_OUTPUT__PROGRESS": "false"}

    def two(out: Path) -> float:
        addrs = ";".join(loopback_addresses(2))
        return _run([[*FLOW, "-i", str(i), "-a", addrs] for i in range(2)], env(out), stagger=True)

    return {
        "one_process": lambda out: _run([FLOW], env(out)),
        "two_workers": lambda out: _run([[*FLOW, "-w", "2"]], env(out)),
        "two_processes": two,
    }


def _ticks(paths: list[str]) -> int:
    from core.events import RawChunk
    from sources.binance import parse_chunk
    from sources.files import group_streams, read_stream

    n = 0
    for spec in group_streams(paths):
        for block in read_stream(spec):
            by, _, _ = parse_chunk(RawChunk(spec.fmt, spec.market, spec.symbol, block, spec.interval_ns))
            n += sum(len(v) for v in by.values())
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", default=str(ROOT.parent / "shared" / "data" / "binance-ws"))
    ap.add_argument("--copies", type=int, default=4, help="copies in the replicated set (4: 12 instruments)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4, help="partitions of the Kafka topic")
    ap.add_argument("--no-kafka", action="store_true", help="files only")
    args = ap.parse_args()
    result: dict = {"benchmark": "scaleout", "python": platform.python_version(), "cpus": os.cpu_count(),
                    "repeat": args.repeat}
    with tempfile.TemporaryDirectory(prefix="ticklet-scaleout-") as t:
        tmp = Path(t)
        rep = tmp / "replicated"
        replicate(Path(args.recordings), rep, args.copies)
        half = args.copies // 2
        halves = ([str(rep / "a")], [str(rep / "b")])
        for files in sorted(rep.rglob("*.gz")):  # the halves: copies 0..half-1, the others
            sym = files.name.split("_", 1)[0]
            side = "a" if int(sym[-5]) < half else "b"
            link = rep / side / files.parent.name / files.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(files)
        sets = {"recordings": [args.recordings], "replicated": [str(rep / "spot"), str(rep / "usdm")]}
        for name, paths in sets.items():
            entry: dict = {"paths": paths, "ticks": _ticks(paths)}
            entry["files"] = _measure(f"{name}-files", _file_runs(paths, halves if name == "replicated" else None),
                                      args.repeat, tmp)
            result[name] = entry
        if not args.no_kafka:
            from harness.kafka_broker import kafka_broker
            from ticklet.publish import publish

            with kafka_broker() as bootstrap:
                for name, paths in sets.items():
                    topic = f"bench.scaleout.{name}.{uuid.uuid4().hex[:8]}"
                    publish(paths, [bootstrap], topic, partitions=args.partitions)
                    k = _measure(f"{name}-kafka", _kafka_runs(bootstrap, topic), args.repeat, tmp)
                    k["partitions"] = args.partitions
                    result[name]["kafka"] = k
    sys.stdout.write(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""What the tests need beyond the Python packages, installed on first use.

- **Kafka**: Apache Kafka's jars from Maven Central (``scripts/kafka.sh
  fetch``; needs Java 17 and Maven), cached in ``.kafka/`` of the checkout.
- **InfluxDB 2** (``influxd``, the version ``scripts/influxdb.sh`` pins):
  built from source with Go and cargo (``scripts/influxdb.sh build``: Go
  module proxy and crates.io, about 10 minutes on 2 cores) into the user
  cache (``~/.cache/ticklet/influxdb-VERSION/``), once per machine, its steps
  shown as it goes. Where it cannot be built (a toolchain missing: the line
  says which), the run stops with that line.
- **hftbacktest** (the reference for resting-order fills,
  ``tests/operators/test_maker.py``): ``hftbacktest==HFTBACKTEST`` from PyPI in
  a virtualenv of its own (``~/.cache/ticklet/hftbacktest-VERSION/``), since it
  pins NumPy below ticklet's; created once per machine.
- **docker-compose** (to validate ``docker-compose.yml``) and **chromium**
  (headless, to open the HTML report: ``tests/ticklet/test_report.py``): Debian
  packages, installed with ``apt-get`` when the tests run as root; otherwise
  the run stops with one line giving the command to run.

:func:`provision` is called once per test session with the fixtures that
the collected tests use, so a run of a few tests installs only what they need.
It returns ``None`` when everything is there, or the one-line reason why not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: fixture name -> (binary on PATH, Debian package)
APT_TOOLS = {"compose_cmd": ("docker-compose", "docker-compose"), "chromium": ("chromium", "chromium")}

INFLUXDB_SH = REPO / "scripts" / "influxdb.sh"

#: The hftbacktest release the maker fills are checked against, and its virtualenv.
HFTBACKTEST = "2.4.4"
HFTBACKTEST_VENV = Path.home() / ".cache" / "ticklet" / f"hftbacktest-{HFTBACKTEST}"

#: The fixtures whose tests need something installed here: only integration
#: tests request them (tests/integration_mark.py), so the unit run installs nothing.
PROVISIONED = frozenset({*APT_TOOLS, "influxd", "kafka_bootstrap", "hftbacktest_python"})

#: why the InfluxDB tests cannot run here (set by :func:`provision`; the
#: ``influxd`` fixture fails with it)
influxdb_unavailable: str | None = None


def _apt_install(packages: list[str], say: Callable[[str], None]) -> str | None:
    cmd = f"apt-get install -y {' '.join(packages)}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"the tests need {', '.join(packages)}: run `sudo apt-get update && sudo {cmd}`, then the tests again"
    say(f"installing {', '.join(packages)} with apt-get (needed by the tests) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
            return f"`{' '.join(args)}` failed ({last[0]}): run `{cmd}` by hand, then the tests again"
    return None


def _kafka(say: Callable[[str], None]) -> str | None:
    home = Path(os.environ.get("KAFKA_HOME", REPO / ".kafka"))
    if (home / "libs" / ".complete").exists() or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return None
    missing = [t for t in ("java", "mvn") if shutil.which(t) is None]
    if missing:
        return (f"the Kafka tests need Java 17 and Maven ({', '.join(missing)} not found): "
                "run `apt-get install openjdk-17-jre-headless maven`, then the tests again")
    say("fetching Apache Kafka's jars from Maven Central into .kafka/ (once) ...")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "kafka.sh"), "fetch"], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        return f"`scripts/kafka.sh fetch` failed ({last[0]}); run it by hand to see why"
    return None


def influxd_path() -> str | None:
    """The built ``influxd`` (``scripts/influxdb.sh path``), or None."""
    proc = subprocess.run(["bash", str(INFLUXDB_SH), "path"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _influxdb(say: Callable[[str], None]) -> str | None:
    """Build influxd once per machine, its steps on the terminal. Returns
    why it cannot be built, or None."""
    if influxd_path():
        return None
    fd, name = tempfile.mkstemp(prefix="ticklet-influxdb-build-", suffix=".log")  # this user's, this run's
    os.close(fd)
    log = Path(name)
    say(f"building InfluxDB from source with Go and cargo (`scripts/influxdb.sh build`, once per machine, "
        f"about 10 min on 2 cores; full log: {log}) ...")
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", str(INFLUXDB_SH), "build"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        last = "no output"
        for line in proc.stdout:  # type: ignore[union-attr]
            out.write(line)
            out.flush()
            if line.startswith("influxdb.sh: "):
                last = line[len("influxdb.sh: "):].strip()
                say(f"  {last}")
            elif line.strip():
                last = line.strip()
    if proc.wait() != 0 or not influxd_path():
        return f"InfluxDB could not be built: {last} (log: {log})"
    return None


def hftbacktest_python() -> Path | None:
    """The interpreter of hftbacktest's virtualenv, if hftbacktest is installed there."""
    exe = HFTBACKTEST_VENV / "bin" / "python"
    if not exe.exists():
        return None
    proc = subprocess.run([str(exe), "-c", "import hftbacktest, importlib.metadata as m; "
                           "print(m.version('hftbacktest'))"], capture_output=True, text=True)
    return exe if proc.returncode == 0 and proc.stdout.strip() == HFTBACKTEST else None


def _hftbacktest(say: Callable[[str], None]) -> str | None:
    """Create hftbacktest's virtualenv once per machine. Returns why it cannot be, or None."""
    if hftbacktest_python():
        return None
    say(f"installing hftbacktest {HFTBACKTEST} from PyPI into a virtualenv of its own ({HFTBACKTEST_VENV}; "
        "it pins NumPy below ticklet's) ...")
    HFTBACKTEST_VENV.parent.mkdir(parents=True, exist_ok=True)
    for cmd in ([sys.executable, "-m", "venv", "--clear", str(HFTBACKTEST_VENV)],  # this Python (3.11), its own venv
                [str(HFTBACKTEST_VENV / "bin" / "pip"), "install", "-q", f"hftbacktest=={HFTBACKTEST}"]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return f"hftbacktest could not be installed: `{' '.join(cmd)}` failed: {proc.stderr.strip()[-300:]}"
    return None if hftbacktest_python() else "hftbacktest could not be installed (its import fails)"


def provision(fixtures: Iterable[str], say: Callable[[str], None]) -> str | None:
    """Install what tests using ``fixtures`` need; ``say`` shows progress.
    Returns None when all is there, else one line saying what to do."""
    used = set(fixtures)
    packages = [pkg for fx, (exe, pkg) in APT_TOOLS.items() if fx in used and shutil.which(exe) is None]
    if packages:
        err = _apt_install(packages, say)
        if err:
            return err
    if "influxd" in used:
        global influxdb_unavailable
        influxdb_unavailable = _influxdb(say)
        if influxdb_unavailable:
            return influxdb_unavailable
    if "hftbacktest_python" in used:
        err = _hftbacktest(say)
        if err:
            return err
    if "kafka_bootstrap" in used:
        return _kafka(say)
    return None

"""What the tests need beyond the Python packages, installed on first use.

- **Kafka**: Apache Kafka's jars from Maven Central (``scripts/kafka.sh
  fetch``; needs Java 17 and Maven), cached in ``.kafka/`` of the checkout.
- **victoria-metrics** (a server that accepts the InfluxDB v2 write API),
  **docker-compose** (to validate ``docker-compose.yml``) and **chromium**
  (headless, to open the HTML report: ``tests/test_report.py``): Debian
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
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: fixture name -> (binary on PATH, Debian package)
APT_TOOLS = {"victoria": ("victoria-metrics", "victoria-metrics"), "compose_cmd": ("docker-compose", "docker-compose"),
             "chromium": ("chromium", "chromium")}


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


def provision(fixtures: Iterable[str], say: Callable[[str], None]) -> str | None:
    """Install what tests using ``fixtures`` need; ``say`` shows progress.
    Returns None when all is there, else one line saying what to do."""
    used = set(fixtures)
    packages = [pkg for fx, (exe, pkg) in APT_TOOLS.items() if fx in used and shutil.which(exe) is None]
    if packages:
        err = _apt_install(packages, say)
        if err:
            return err
    if "kafka_bootstrap" in used:
        return _kafka(say)
    return None

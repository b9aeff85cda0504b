"""The test session's provisioning (:mod:`provision`), where it can be run
for real without installing anything: a build of InfluxDB that cannot start."""

from __future__ import annotations

import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from provision import _influxdb

#: Integration tests (tests/integration_mark.py): it runs scripts/influxdb.sh build in a subprocess.
pytestmark = pytest.mark.integration


def test_each_influxdb_build_has_its_own_log_and_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two builds (two users, or two runs, sharing the temporary directory)
    write two logs, readable by their owner only, and each line about the
    build names its own. PATH holds bash and dirname only, so the real
    ``scripts/influxdb.sh build`` stops at once with the line naming the
    missing toolchains."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no influxd built there
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))  # type: ignore[arg-type]
    monkeypatch.setenv("PATH", str(bin_dir))
    logs = []
    for _ in range(2):
        said: list[str] = []
        why = _influxdb(said.append)
        assert why is not None and "needs Go" in why, why
        log = Path(why.rsplit("(log: ", 1)[1].rstrip(")"))
        assert f"full log: {log})" in said[0], said
        assert log.parent == tmp_path / "tmp" and log.name.startswith("ticklet-influxdb-build-"), log
        assert "needs Go" in log.read_text()
        assert stat.S_IMODE(log.stat().st_mode) == 0o600, oct(log.stat().st_mode)
        logs.append(log)
    assert logs[0] != logs[1]

"""``sinks.report.read_last``: its split fast path against csv's rows, on a real run's files and on edited ones."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from core.events import EconomicsRecord, MetricsRecord
from sinks.report import _read_last_csv, read_last

#: Integration (tests/integration_mark.py): the whole run over every recording (the shared ``full_run``).
pytestmark = pytest.mark.integration


def _by_csv(path: Path, cls: type) -> list:
    return _read_last_csv(path.read_bytes(), cls)


@pytest.mark.parametrize(("name", "cls"), [("metrics.csv", MetricsRecord), ("economics.csv", EconomicsRecord)])
def test_the_split_rows_are_csv_rows(full_run, name: str, cls: type) -> None:
    """On every recording's metrics and economics: the same records as csv reads, in the same order."""
    _, out = full_run
    path = out / name
    assert b'"' not in path.read_bytes()  # the fast path is the one taken
    fast: list = read_last(path, cls)
    assert len(fast) > 5
    assert fast == _by_csv(path, cls)


def test_a_torn_last_line_and_a_quoted_cell(full_run, tmp_path: Path) -> None:
    """A killed run's torn last line is no record on either path; a quoted cell sends the file to csv."""
    _, out = full_run
    data = (out / "metrics.csv").read_bytes()
    lines = data.split(b"\r\n")
    torn = tmp_path / "torn.csv"
    torn.write_bytes(data + lines[-2][: len(lines[-2]) // 2])  # a last row cut in its middle
    assert read_last(torn, MetricsRecord) == read_last(out / "metrics.csv", MetricsRecord)
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    rows[-1][rows[0].index("model")] = 'lin, "quoted"'  # a model name that needs quoting
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    quoted = tmp_path / "quoted.csv"
    quoted.write_text(buf.getvalue(), newline="")
    got = read_last(quoted, MetricsRecord)
    assert 'lin, "quoted"' in {r.model for r in got}
    assert len(got) == len(read_last(out / "metrics.csv", MetricsRecord)) + 1


def test_no_file_and_an_empty_file(tmp_path: Path) -> None:
    assert read_last(tmp_path / "none.csv", MetricsRecord) == []
    (tmp_path / "empty.csv").write_bytes(b"")
    assert read_last(tmp_path / "empty.csv", MetricsRecord) == []

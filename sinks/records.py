"""Pure conversions of records to file rows (no I/O).

>>> from ticklet.events import Count
>>> header(Count)
['name', 'n']
>>> csv_line(Count("ticks", 3))
'ticks,3\\r\\n'
>>> jsonl(Count("ticks", 3))
b'{"name":"ticks","n":3}\\n'
"""

from __future__ import annotations

import csv
import io

import msgspec

__all__ = ["csv_lines", "csv_line", "header", "jsonl"]

_enc = msgspec.json.Encoder()


def header(cls: type[msgspec.Struct]) -> list[str]:
    """Column names of a record type, in field order."""
    return list(cls.__struct_fields__)


def csv_lines(rows: list[msgspec.Struct]) -> str:
    """Records as CSV text (floats in shortest round-trip form, None empty)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerows(msgspec.structs.astuple(r) for r in rows)
    return buf.getvalue()


def csv_line(row: msgspec.Struct) -> str:
    return csv_lines([row])


def jsonl(row: msgspec.Struct) -> bytes:
    """One record as a JSON line."""
    return _enc.encode(row) + b"\n"

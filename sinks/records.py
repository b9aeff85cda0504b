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

__all__ = ["SCHEMA_VERSION", "csv_line", "csv_lines", "header", "jsonl", "kafka_record"]

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


#: Version of the JSON records ticklet publishes; bumped on any breaking change.
#: 3: forecasts (issued and scored) carry the learner's age, ``bundle`` and ``n_learnt``.
SCHEMA_VERSION = 3

_KIND = {
    "Forecast": b"forecast",
    "ForecastRecord": b"scored",
    "MetricsRecord": b"metrics",
    "Signal": b"signal",
    "Fill": b"fill",
    "ErrorRecord": b"dead_letter",
    "BookQuote": b"book_quote",
    "Trade": b"trade",
    "Quote": b"quote",
    "DepthUpdate": b"depth",
    "Kline": b"kline",
    "BookGap": b"book_gap",
    "SequenceGap": b"sequence_gap",
}


def kafka_record(key: str, rec: msgspec.Struct) -> tuple[bytes, bytes]:
    """``(key, value)`` of a record for Kafka: the value is the record's JSON
    with ``schema`` and ``type`` first.

    >>> from ticklet.events import ErrorRecord
    >>> kafka_record("BTCUSDT", ErrorRecord("parse", "bad json", "x"))[1][:106]
    b'{"schema":3,"type":"dead_letter","stage":"parse","reason":"bad json","raw":"x","instrument":"","ts_recv":0'
    """
    body = _enc.encode(rec)
    head = b'{"schema":%d,"type":"%s"' % (SCHEMA_VERSION, _KIND[type(rec).__name__])
    return key.encode(), head + (b"," + body[1:] if len(body) > 2 else b"}")

r"""Pure conversions of records to file rows (no I/O).

>>> from core.events import Count
>>> header(Count)
['name', 'n']
>>> csv_line(Count("ticks", 3))
'ticks,3\r\n'
>>> jsonl(Count("ticks", 3))
b'{"name":"ticks","n":3}\n'
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import math
import typing
from typing import NamedTuple, Optional

import msgspec

from core.events import (
    ENCODER,
    BookGap,
    BookQuote,
    DepthUpdate,
    ErrorRecord,
    Fill,
    Forecast,
    ForecastRecord,
    Kline,
    MakerEconomicsRecord,
    MakerFillRecord,
    MetricsRecord,
    Quote,
    Signal,
    Trade,
)
from operators.sequence import SequenceGap

__all__ = ["KINDS", "OUTPUT_KINDS", "SCHEMA_VERSION", "Kind", "csv_bytes", "csv_cells", "csv_line", "csv_lines",
           "fit_dead_letter", "header", "jsonl", "kafka_record"]

_enc = ENCODER  # events' depth levels as the pairs they are


def header(cls: type[msgspec.Struct]) -> list[str]:
    """Column names of a record type, in field order."""
    return list(cls.__struct_fields__)


def csv_bytes(rows: list[msgspec.Struct]) -> bytes:
    r"""Records as UTF-8 CSV lines: floats in shortest round-trip form, None empty, ``\r\n`` line endings.

    Floats are written as msgspec writes them in JSON (``1e-6``, ``0.0001``;
    ``nan``, ``inf`` and ``-inf`` as Python writes them), in the same form on
    both paths here. Rows of one record type whose fields are all ints,
    floats, strings or None (:func:`_plain`), with no string that needs
    quoting and every float finite, are encoded by msgspec in one call and
    turned into CSV with a few C-level replacements; the others go through
    :mod:`csv`. Both give the bytes that :func:`csv.reader` reads back into
    the records' values.

    >>> from core.events import Count, ErrorRecord
    >>> csv_bytes([Count("ticks", 3), Count("bars", 1)])
    b'ticks,3\r\nbars,1\r\n'
    >>> csv_bytes([ErrorRecord("parse", 'bad "x", y', "{}", "", 2)])
    b'parse,"bad ""x"", y",{},,2,False,,\r\n'
    """
    rows_t = [msgspec.structs.astuple(r) for r in rows]
    if not rows_t:
        return b""
    cls = type(rows[0])
    if not _plain(cls) or any(type(r) is not cls for r in rows):
        return _csv_module(rows_t)
    return csv_cells(rows_t)


def csv_cells(rows_t: list[tuple]) -> bytes:
    r"""Rows of ints, floats, strings and None as CSV lines, as :func:`csv_bytes` writes records.

    >>> csv_cells([("BTCUSDT", 2000, -1.5e-05, ""), ("BTCUSDT", 3000, None, 0.125)])
    b'BTCUSDT,2000,-0.000015,\r\nBTCUSDT,3000,,0.125\r\n'
    """
    if not rows_t:
        return b""
    if min(map(len, rows_t)) < 2:  # a row of one empty cell: csv writes "" (an empty line is no row)
        return _csv_module(rows_t)
    try:
        blob = _enc.encode(rows_t)
    except (TypeError, ValueError):  # a value msgspec cannot encode (a NumPy scalar...): csv's str() of it
        return _csv_module(rows_t)
    if b"\\" in blob or blob.count(b",") != sum(map(len, rows_t)) - 1 or blob.count(b"[") != len(rows_t) + 1:
        return _csv_module(rows_t)  # an escaped character (a quote...), a comma in a string, a list among the cells
    out = blob.replace(b",null", b",").replace(b"[null", b"[")
    nulls = (len(blob) - len(out)) // 4
    if nulls and nulls != sum(t.count(None) for t in rows_t):  # a NaN or inf, which JSON writes null
        return _csv_module(rows_t)
    return out[2:-2].replace(b"],[", b"\r\n").replace(b'"', b"") + b"\r\n"


@functools.cache
def _plain(cls: type[msgspec.Struct]) -> bool:
    """Whether every field of ``cls`` is an int, a float, a string or None: one CSV cell each, as JSON writes them.

    >>> from core.events import Count, ErrorRecord
    >>> _plain(Count), _plain(ErrorRecord)  # a bool: csv writes True
    (True, False)
    """
    cells = {int, float, str, type(None)}
    return all(set(typing.get_args(f.type) or (f.type,)) <= cells for f in msgspec.structs.fields(cls))


def _csv_cell(x: object) -> object:
    """A value as :func:`csv_bytes` writes it through :mod:`csv` (a finite float as msgspec writes it)."""
    if type(x) is float and math.isfinite(x):
        return _enc.encode(x).decode()
    return x


def _csv_module(rows: list[tuple]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows([_csv_cell(x) for x in row] for row in rows)
    return buf.getvalue().encode()


def csv_lines(rows: list[msgspec.Struct]) -> str:
    """Records as CSV text (:func:`csv_bytes`, decoded)."""
    return csv_bytes(rows).decode()


def csv_line(row: msgspec.Struct) -> str:
    r"""One record as a CSV line (:func:`csv_lines` of one row).

    >>> from core.events import Count
    >>> csv_line(Count("ticks", 3))
    'ticks,3\r\n'
    """
    return csv_lines([row])


def jsonl(row: msgspec.Struct) -> bytes:
    """One record as a JSON line."""
    return _enc.encode(row) + b"\n"


#: Version of the JSON records ticklet publishes; bumped on any breaking change.
#: 3: forecasts (issued and scored) carry the learner's age, ``bundle`` and ``n_learnt``.
SCHEMA_VERSION = 3


class Kind(NamedTuple):
    """One record type ticklet publishes as JSON (:func:`kafka_record`).

    >>> [k.name for k in OUTPUT_KINDS]
    ['forecast', 'scored', 'metrics', 'signal', 'fill', 'maker_fill', 'maker_economics']
    >>> next(k.name for k in KINDS if k.cls is ErrorRecord)
    'dead_letter'
    """

    #: The record's class.
    cls: type[msgspec.Struct]
    #: The ``type`` its JSON carries.
    name: str
    #: The event time that orders the records of a type of the output topic
    #: (the latest ``ticklet serve`` keeps is the one with the greatest); None
    #: for the other topics' types.
    time_field: Optional[str] = None


#: Every record type ticklet publishes, the one table of them: the output
#: topic's first, in the order the dataflow makes them, then the dead letters
#: and what the collector publishes (events, book quotes, gaps).
KINDS = (
    Kind(Forecast, "forecast", "ts_forecast"),
    Kind(ForecastRecord, "scored", "ts_forecast"),
    Kind(MetricsRecord, "metrics", "ts_target"),
    Kind(Signal, "signal", "ts_forecast"),
    Kind(Fill, "fill", "ts_recv"),
    Kind(MakerFillRecord, "maker_fill", "ts_exch"),
    Kind(MakerEconomicsRecord, "maker_economics", "ts_exch"),
    Kind(ErrorRecord, "dead_letter"),
    Kind(BookQuote, "book_quote"),
    Kind(Trade, "trade"),
    Kind(Quote, "quote"),
    Kind(DepthUpdate, "depth"),
    Kind(Kline, "kline"),
    Kind(BookGap, "book_gap"),
    Kind(SequenceGap, "sequence_gap"),
)
#: The record types of the output topic (what ``ticklet serve`` serves), in the order the dataflow makes them.
OUTPUT_KINDS = tuple(k for k in KINDS if k.time_field is not None)
_KIND = {k.cls: k.name.encode() for k in KINDS}


def kafka_record(key: str, rec: msgspec.Struct) -> tuple[bytes, bytes]:
    """``(key, value)`` of a record for Kafka: the value is the record's JSON with ``schema`` and ``type`` first.

    >>> from core.events import ErrorRecord
    >>> kafka_record("BTCUSDT", ErrorRecord("parse", "bad json", "x"))[1][:106]
    b'{"schema":3,"type":"dead_letter","stage":"parse","reason":"bad json","raw":"x","instrument":"","ts_recv":0'
    """
    return key.encode(), _value(rec)


def _value(rec: msgspec.Struct) -> bytes:
    body = _enc.encode(rec)
    head = b'{"schema":%d,"type":"%s"' % (SCHEMA_VERSION, _KIND[type(rec)])
    return head + (b"," + body[1:] if len(body) > 2 else b"}")


_dead_letter = msgspec.json.Decoder(ErrorRecord)  # the schema and type fields are ignored


def fit_dead_letter(value: bytes, room: int) -> Optional[bytes]:
    """A dead letter's Kafka value (:func:`kafka_record`) in at most ``room`` bytes, its payload cut to fit.

    ``value`` itself if it fits, else the same dead letter with the first
    bytes of its payload that fit in ``raw``, the payload's whole size in
    ``raw_size`` and the SHA-256 (hex) of the whole payload in
    ``raw_sha256`` (where ``raw_size`` was already set, ``raw`` was already
    only the first bytes: those stay as they were). A text payload is cut
    between characters. None if ``value`` is not a dead letter, or does not
    fit even with an empty ``raw``.

    >>> _, v = kafka_record("BTCUSDT", ErrorRecord("parse", "bad json", '{"p":"' + "9" * 500))
    >>> cut = fit_dead_letter(v, 300)
    >>> len(v), len(cut)
    (668, 300)
    >>> d = msgspec.json.decode(cut)
    >>> d["raw"][:12], d["raw_size"], d["raw_sha256"][:16]
    ('{"p":"999999', 506, 'c008a56d2273cab3')
    >>> fit_dead_letter(v, 1000) is v, fit_dead_letter(v, 100), fit_dead_letter(b'{"schema":3,"type":"forecast"}', 10)
    (True, None, None)
    """
    if len(value) <= room:
        return value
    if not value.startswith(b'{"schema":%d,"type":"dead_letter"' % SCHEMA_VERSION):
        return None
    rec = _dead_letter.decode(value)
    raw = rec.raw_bytes()
    if rec.raw_size is None:
        rec = msgspec.structs.replace(rec, raw_size=len(raw), raw_sha256=hashlib.sha256(raw).hexdigest())
    text = not rec.raw_base64

    def cut(n: int) -> bytes:
        if text:  # back to the first byte of the character at n
            while 0 < n < len(raw) and raw[n] & 0xC0 == 0x80:
                n -= 1
        return _value(ErrorRecord.of(rec.stage, rec.reason, raw[:n], rec.instrument, rec.ts_recv, rec.raw_size,
                                     rec.raw_sha256))

    # The longest cut that fits: from lo (it fits) to hi (excluded); a cut longer than room never fits (its
    # JSON string is at least as long as its bytes).
    lo, hi = 0, min(len(raw), room) + 1
    if len(cut(0)) > room:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(cut(mid)) <= room:
            lo = mid
        else:
            hi = mid
    return cut(lo)

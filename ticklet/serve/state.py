"""What ``ticklet serve`` keeps and answers, as pure conversions (no server, no Kafka).

Each consumed record is decoded once into an :class:`Entry`; the bounded
:class:`LatestStore` is behind the ``latest`` routes, the
:class:`ResumeBuffer` lets a WebSocket client resume after the last offset
it saw, and the query parameters are checked here.

A record is served exactly as it was published (its JSON value on the output
topic, ``schema`` and ``type`` first, see :func:`sinks.records.kafka_record`).
The WebSocket stream wraps each one in an envelope that says where it is in
the topic::

    {"partition": 0, "offset": 41, "ts_kafka": 1723161253000, "record": {"schema": 3, "type": "forecast", ...}}

``ts_kafka`` is the record's Kafka timestamp in ms (the append time on a
topic with ``message.timestamp.type=LogAppendTime``, else the producer's).

Examples
--------
>>> from sinks.records import kafka_record
>>> from core.events import Forecast
>>> _, value = kafka_record("BTCUSDT", Forecast("BTCUSDT", "linear", 1, 1_000, 2_000, 1e-4, 61000.0, 61006.1))
>>> e = decode_record(value, partition=2, offset=41, ts_kafka=1723161253000)
>>> e.kind, e.instrument, e.model, e.horizon, e.ts
('forecast', 'BTCUSDT', 'linear', 1, 1000)
>>> e.frame[:62]
'{"partition":2,"offset":41,"ts_kafka":1723161253000,"record":{'
>>> store = LatestStore()
>>> store.update(e)
True
>>> [x.offset for x in store.latest("forecast", "BTCUSDT")]
[41]
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple, Optional

import msgspec

from sinks.records import OUTPUT_KINDS, SCHEMA_VERSION
from sources.symbols import SYMBOL_PATTERN

__all__ = ["INSTRUMENT_PATTERN", "MODEL_PATTERN", "TYPES", "BadRecord", "Entry", "LatestStore", "ResumeBuffer",
           "StreamFilter", "check_instrument", "check_model", "decode_record", "follows", "frame_text", "parse_after",
           "parse_backlog", "parse_types"]

#: The record types of the output topic, in the order the dataflow makes them (:data:`sinks.records.KINDS`).
TYPES = tuple(k.name for k in OUTPUT_KINDS)

#: The event time that orders each type's records: the latest is the one with the greatest.
_TIME_FIELD = {k.name: k.time_field for k in OUTPUT_KINDS if k.time_field is not None}

#: An instrument as ticklet names them: a Binance symbol, ``-PERP`` for USD-M (what the API's
#: ``instrument`` parameters accept; their pattern in the OpenAPI document).
INSTRUMENT_PATTERN = f"^(?:{SYMBOL_PATTERN.pattern})(?:-PERP)?$"
#: A model's name (what the API's ``model`` parameters accept).
MODEL_PATTERN = "^[A-Za-z0-9_.-]{1,64}$"
_INSTRUMENT = re.compile(INSTRUMENT_PATTERN)
_MODEL = re.compile(MODEL_PATTERN)


class BadRecord(ValueError):
    """A value of the output topic that is not a record ticklet serves.

    ``reason`` is one word (for the counter): ``json``, ``schema``,
    ``type``, ``instrument``.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class _Head(msgspec.Struct):
    """The fields of a published record the server reads (the rest is passed on as it is)."""

    schema: int = 0
    type: str = ""
    instrument: str = ""
    model: str = ""
    horizon: int = 0
    ts_forecast: int = 0
    ts_target: int = 0
    ts_recv: int = 0
    ts_exch: int = 0


_head = msgspec.json.Decoder(_Head)


class Entry:
    """One consumed record: where it is in the topic, what it is about, its value exactly as published.

    It also holds its stream envelope (``frame``, text).
    """

    __slots__ = ("frame", "horizon", "instrument", "kind", "model", "offset", "partition", "ts", "ts_kafka", "value")

    def __init__(self, partition: int, offset: int, ts_kafka: int, kind: str, instrument: str, model: str,
                 horizon: int, ts: int, value: bytes, frame: str):
        self.partition, self.offset, self.ts_kafka = partition, offset, ts_kafka
        self.kind, self.instrument, self.model, self.horizon, self.ts = kind, instrument, model, horizon, ts
        self.value, self.frame = value, frame

    def __repr__(self) -> str:
        return (f"Entry({self.kind} {self.instrument} {self.model} h={self.horizon} ts={self.ts} "
                f"@{self.partition}:{self.offset})")


def check_instrument(text: str) -> str:
    """``text`` if it is an instrument as ticklet names them (``BTCUSDT``, ``BTCUSDT-PERP``).

    Otherwise a :class:`ValueError` saying what one looks like.

    >>> check_instrument("BTCUSDT-PERP")
    'BTCUSDT-PERP'
    >>> check_instrument("btcusdt")
    Traceback (most recent call last):
    ...
    ValueError: not an instrument such as BTCUSDT or BTCUSDT-PERP (a Binance symbol in upper case, -PERP for USD-M)
    """
    if not _INSTRUMENT.fullmatch(text):
        raise ValueError("not an instrument such as BTCUSDT or BTCUSDT-PERP (a Binance symbol in upper case, "
                         "-PERP for USD-M)")
    return text


def check_model(text: str) -> str:
    """``text`` if it can be a model's name (1 to 64 of ``A-Z a-z 0-9 _ . -``)."""
    if not _MODEL.fullmatch(text):
        raise ValueError("not a model name such as linear or logistic (1 to 64 of A-Z a-z 0-9 _ . -)")
    return text


def decode_record(value: Optional[bytes], partition: int, offset: int, ts_kafka: int) -> Entry:
    """The :class:`Entry` of one message of the output topic.

    :class:`BadRecord` for a value that is not a record of the current
    schema, of a type in :data:`TYPES` about a valid instrument (dead
    letters go to their own topic).
    """
    if not value:
        raise BadRecord("json", "empty value")
    try:
        head = _head.decode(value)
        text = value.decode("utf-8")
    except (msgspec.DecodeError, UnicodeDecodeError) as ex:
        raise BadRecord("json", str(ex)) from None
    if head.schema != SCHEMA_VERSION:
        raise BadRecord("schema", f"schema {head.schema}, not {SCHEMA_VERSION}")
    if head.type not in _TIME_FIELD:
        raise BadRecord("type", f"type {head.type!r}")
    if not _INSTRUMENT.fullmatch(head.instrument) or not _MODEL.fullmatch(head.model):
        raise BadRecord("instrument", f"instrument {head.instrument!r}, model {head.model!r}")
    ts = getattr(head, _TIME_FIELD[head.type])
    frame = f'{{"partition":{partition},"offset":{offset},"ts_kafka":{ts_kafka},"record":{text}}}'
    return Entry(partition, offset, ts_kafka, head.type, head.instrument, head.model, head.horizon, ts, value, frame)


def follows(e: Entry, after: dict[int, int]) -> bool:
    """Whether ``e`` comes after the last offsets a client saw.

    ``after``: partition -> offset; partitions it did not name are not
    followed.
    """
    seen = after.get(e.partition)
    return seen is not None and e.offset > seen


def frame_text(frames: Iterable[str]) -> str:
    """One WebSocket message: a JSON array of envelopes.

    >>> frame_text(['{"a":1}', '{"b":2}'])
    '[{"a":1},{"b":2}]'
    """
    return "[" + ",".join(frames) + "]"


def parse_types(text: Optional[str]) -> frozenset[str]:
    """The record types of a ``types`` parameter (comma-separated); all of them when it is missing or empty.

    >>> sorted(parse_types("forecast, signal"))
    ['forecast', 'signal']
    >>> parse_types("forecasts")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown record type 'forecasts': a comma-separated list of forecast, scored, metrics, signal, fill, ...
    """
    if not text or not text.strip():
        return frozenset(TYPES)
    names = [t.strip() for t in text.split(",")]
    bad = [t for t in names if t not in TYPES]
    if bad:
        raise ValueError(f"unknown record type {', '.join(map(repr, bad))}: a comma-separated list of "
                         f"{', '.join(TYPES)}")
    return frozenset(names)


def parse_backlog(text: Optional[str], most: int) -> int:
    """The number of a ``backlog`` parameter: how many of the latest held records a new stream client gets first.

    At most ``most``, what the buffer holds.

    >>> parse_backlog("500", 1000), parse_backlog("5000", 1000), parse_backlog(None, 1000)
    (500, 1000, 0)
    """
    if not text:
        return 0
    if not re.fullmatch(r"\d{1,12}", text.strip()):
        raise ValueError("not a whole number of records (the latest held records to send first)")
    return min(int(text), most)


def parse_after(text: Optional[str]) -> dict[int, int]:
    """The last offset a client saw in each partition, from an ``after`` parameter.

    The parameter is ``PARTITION:OFFSET[,PARTITION:OFFSET...]`` (offset -1:
    nothing yet, start at the partition's beginning).

    >>> parse_after("0:1234,3:-1")
    {0: 1234, 3: -1}
    >>> parse_after(None)
    {}
    >>> parse_after("1234")
    Traceback (most recent call last):
    ...
    ValueError: not PARTITION:OFFSET pairs separated by commas, e.g. 0:1234,1:-1 (got '1234')
    """
    if not text:
        return {}
    out: dict[int, int] = {}
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d{1,6})\s*:\s*(-1|\d{1,19})\s*", part)
        if m is None or int(m.group(1)) in out:
            raise ValueError(f"not PARTITION:OFFSET pairs separated by commas, e.g. 0:1234,1:-1 (got {text!r:.80})")
        out[int(m.group(1))] = int(m.group(2))
    return out


class StreamFilter(NamedTuple):
    """What a stream client asked for: one instrument (None: every one) and some record types.

    >>> f = StreamFilter("BTCUSDT", frozenset({"metrics"}))
    >>> f.match(Entry(0, 1, 0, "metrics", "BTCUSDT", "naive", 1, 0, b"", "")), f.match(
    ...     Entry(0, 2, 0, "forecast", "BTCUSDT", "naive", 1, 0, b"", ""))
    (True, False)
    """

    instrument: Optional[str]
    types: frozenset[str]

    def match(self, e: Entry) -> bool:
        """Whether the stream client of this filter gets ``e``: its type, and its instrument if one is set."""
        return e.kind in self.types and (self.instrument is None or e.instrument == self.instrument)


class LatestStore:
    """The latest record of every type, instrument, model and horizon: the one with the greatest event time.

    The event time is ``ts_forecast`` (``ts_target`` for metrics, ``ts_recv``
    for fills), so a duplicate that a restarted dataflow publishes again
    never takes an answer back in time.

    Bounded: at most ``max_instruments`` instruments (in order of first
    appearance) and ``max_series`` (type, model, horizon) series per
    instrument; records beyond them are refused (:meth:`update` returns
    False) and counted in ``refused``.

    >>> s = LatestStore(max_instruments=1)
    >>> def rec(inst, model, ts, off):
    ...     return Entry(0, off, 0, "signal", inst, model, 1, ts, b"{}", "")
    >>> s.update(rec("BTCUSDT", "linear", 2000, 1)), s.update(rec("BTCUSDT", "linear", 1000, 2))
    (True, True)
    >>> [e.offset for e in s.latest("signal", "BTCUSDT")]  # the later event time, not the later offset
    [1]
    >>> s.update(rec("ETHUSDT", "linear", 1000, 3)), s.refused
    (False, 1)
    """

    def __init__(self, max_instruments: int = 1000, max_series: int = 4096):
        self.max_instruments, self.max_series = max_instruments, max_series
        self._by: dict[str, dict[tuple[str, str, int], Entry]] = {}
        self._info: dict[str, dict[str, object]] = {}
        self.refused = 0

    def update(self, e: Entry) -> bool:
        """Keep ``e`` if it is the latest of its series; False if refused (over the bounds)."""
        series = self._by.get(e.instrument)
        if series is None:
            if len(self._by) >= self.max_instruments:
                self.refused += 1
                return False
            series = self._by[e.instrument] = {}
            self._info[e.instrument] = {"partition": e.partition, "offset": e.offset, "ts_kafka": e.ts_kafka,
                                        "records": dict.fromkeys(TYPES, 0)}
        key = (e.kind, e.model, e.horizon)
        old = series.get(key)
        if old is None:
            if len(series) >= self.max_series:
                self.refused += 1
                return False
            series[key] = e
        elif e.ts >= old.ts:
            series[key] = e
        info = self._info[e.instrument]
        info["partition"], info["offset"], info["ts_kafka"] = e.partition, e.offset, e.ts_kafka
        info["records"][e.kind] += 1  # type: ignore[index]
        return True

    def __contains__(self, instrument: object) -> bool:
        return instrument in self._by

    def latest(self, kind: str, instrument: str, model: Optional[str] = None,
               horizon: Optional[int] = None) -> list[Entry]:
        """The latest ``kind`` records of ``instrument``, one per model and horizon, ordered by them.

        Only those of one model and/or horizon if given.
        """
        series = self._by.get(instrument, {})
        return [series[k] for k in sorted(series) if k[0] == kind and (model is None or k[1] == model)
                and (horizon is None or k[2] == horizon)]

    def instruments(self) -> list[dict[str, object]]:
        """Per instrument: its partition, the offset and Kafka time of its last record, and what it has.

        What it has: how many records of each type were consumed, and the
        models and horizons it has forecasts of.
        """
        out = []
        for inst in sorted(self._by):
            keys = [k for k in self._by[inst] if k[0] == "forecast"] or list(self._by[inst])
            out.append({"instrument": inst, **self._info[inst], "models": sorted({k[1] for k in keys}),
                        "horizons": sorted({k[2] for k in keys})})
        return out


class ResumeBuffer:
    """The last ``size`` records consumed (all partitions together), for clients that resume after an offset.

    What it no longer holds is read again from Kafka.

    :meth:`begin` is told where the consumer starts in each partition;
    :meth:`plan` then says, for a client that saw up to some offset in some
    partitions, which offset ranges it must read from Kafka and which held
    records follow them.

    >>> b = ResumeBuffer(2)
    >>> b.begin(0, 10)
    >>> for off in (10, 11, 12):
    ...     b.append(Entry(0, off, 0, "fill", "BTCUSDT", "m", 1, 0, b"", ""))
    >>> ranges, held = b.plan({0: 9})
    >>> ranges, [e.offset for e in held]  # offset 10 fell out of the buffer: read it from Kafka
    ({0: (10, 11)}, [11, 12])
    >>> ranges, held = b.plan({0: 11})
    >>> ranges, [e.offset for e in held if follows(e, {0: 11})]
    ({}, [12])
    """

    def __init__(self, size: int):
        self.size = size
        self._q: deque[Entry] = deque()
        self._start: dict[int, int] = {}  # partition -> the first offset from which every record is held

    def begin(self, partition: int, offset: int) -> None:
        """The consumer reads ``partition`` from ``offset`` on."""
        self._start[partition] = offset

    def append(self, e: Entry) -> None:
        """Hold ``e``, the record consumed next; the oldest held falls out past ``size``."""
        if self.size <= 0:
            self._start[e.partition] = e.offset + 1
            return
        self._start.setdefault(e.partition, e.offset)
        self._q.append(e)
        if len(self._q) > self.size:
            old = self._q.popleft()
            self._start[old.partition] = old.offset + 1

    def __len__(self) -> int:
        return len(self._q)

    def ranges(self, after: dict[int, int]) -> dict[int, tuple[int, int]]:
        """The Kafka offset ranges ``[lo, hi)`` a client must read first, per partition.

        For a client that saw up to ``after[p]`` in each partition ``p``:
        what the buffer no longer holds.
        """
        out = {}
        for p, seen in after.items():
            start = self._start.get(p)
            if start is not None and seen + 1 < start:
                out[p] = (max(seen + 1, 0), start)
        return out

    def plan(self, after: dict[int, int]) -> tuple[dict[int, tuple[int, int]], list[Entry]]:
        """:meth:`ranges`, and every record held now, in arrival order.

        The records are a copy of the buffer, made at C speed: those of them
        that :func:`follows` the offsets come after the ranges.
        """
        return self.ranges(after), list(self._q)

    def last(self, n: int, filt: StreamFilter) -> list[Entry]:
        """The last ``n`` held records that ``filt`` matches, in arrival order.

        >>> b = ResumeBuffer(10)
        >>> for off, kind in enumerate(["metrics", "fill", "metrics", "metrics"]):
        ...     b.append(Entry(0, off, 0, kind, "BTCUSDT", "m", 1, 0, b"", ""))
        >>> [e.offset for e in b.last(2, StreamFilter(None, frozenset({"metrics"})))]
        [2, 3]
        """
        out: list[Entry] = []
        for e in reversed(self._q):
            if len(out) >= n:
                break
            if filt.match(e):
                out.append(e)
        return out[::-1]

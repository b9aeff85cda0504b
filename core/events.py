"""Normalized records that flow through ticklet.

Every record is an immutable :class:`msgspec.Struct`: cheap to build, picklable
for Bytewax recovery, and encodable to JSON without hand-written code.

Names
-----
One vocabulary on every record, file, topic and measurement:

- ``instrument`` is ticklet's name of a traded instrument: the exchange
  symbol for spot (``BTCUSDT``), with ``-PERP`` for USD-M perpetuals, and
  the exchange symbol for the contracts whose symbol already says what they
  are: delivery contracts (``BTCUSDT_250328``) and COIN-M contracts
  (``BTCUSD_PERP``, ``BTCUSD_211231``) (:func:`instrument_key`,
  :func:`market_of`). ``symbol`` only ever means the exchange's bare
  symbol (:class:`RawChunk`, file names, Binance requests).
- Times are integer nanoseconds since the epoch, named ``ts_<what>``:
  ``ts_recv`` (receive clock), ``ts_event`` (the exchange's own time),
  ``ts_open``/``ts_close`` (a kline), ``ts_start``/``ts_end`` (a bar, and
  the bar end a feature row is known at), ``ts_forecast``/``ts_target`` (a
  forecast, and the target time a metrics row is up to).

Clock
-----
``ts_recv`` is the **receive clock**: the moment the collector had the
message in hand (the first field of a recording line, or the Kafka
timestamp). It is the only clock every Binance message carries (spot
``bookTicker`` has no exchange time), it is monotonic in arrival order, and it
is exactly "what had been received by t". Bars, windows, forecast times and
target times all live on this clock. The exchange's own time, where the
message has one, is kept in ``ts_event`` for reference and is never used to
order or window. Records built from exchange archives (CSV trades, klines)
have no receive time; for those ``ts_recv`` is the exchange time at which the
record became known (trade time, kline close).

Examples
--------
>>> t = Trade("BTCUSDT", 1_000, 990, 61837.63, 0.02, True, 7)
>>> t.price, t.buyer_maker
(61837.63, True)
>>> import pickle
>>> pickle.loads(pickle.dumps(t)) == t
True
"""

from __future__ import annotations

import re
import sys
from base64 import b64decode, b64encode
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Optional, Union

import msgspec

__all__ = [
    "ENCODER",
    "Bar",
    "BookGap",
    "BookStats",
    "BookQuote",
    "BookSnapshot",
    "Count",
    "DepthUpdate",
    "ErrorRecord",
    "Event",
    "EventColumns",
    "FeatureRow",
    "Forecast",
    "ForecastRecord",
    "Kline",
    "Level",
    "Levels",
    "MetricsRecord",
    "Quote",
    "RawChunk",
    "EconomicsRecord",
    "MakerEconomicsRecord",
    "MakerFillRecord",
    "EquityPoint",
    "Fill",
    "FillQuote",
    "Signal",
    "SnapshotRequest",
    "Trade",
    "MARKETS",
    "coinm_pair",
    "event_json",
    "instrument_key",
    "market_of",
]

_Positive = Annotated[float, msgspec.Meta(gt=0.0, le=sys.float_info.max)]
_NonNegative = Annotated[float, msgspec.Meta(ge=0.0, le=sys.float_info.max)]


class Level(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One price level of a depth update; quantity 0 removes the level.

    Encoded (and decoded from Binance) as ``["price", "qty"]``; decoding
    rejects a non-positive or non-finite price and a negative or non-finite
    quantity.

    >>> msgspec.json.decode(b'["61737.63", "0.5"]', type=Level, strict=False)
    Level(price=61737.63, qty=0.5)
    """

    price: _Positive
    qty: _NonNegative


class Levels(Sequence):
    """The levels of one side of a depth diff, held in arrays: what the chunk path's decoder makes.

    ``px[lo:hi]`` and ``qty[lo:hi]`` (NumPy float64 arrays, often a whole
    chunk's) are the levels, in the message's order. It reads as the tuple
    of :class:`Level` the per-message parser makes: equal to it, the same
    repr, hash, pickle and JSON (:func:`event_json`), a :class:`Level` made
    only when one is read; compiled code reads the arrays themselves
    (:mod:`operators.flatbook`). A pickle holds its own levels, not the
    arrays they are a part of.

    >>> import numpy as np, pickle
    >>> px, qty = np.array([1.0, 100.0, 99.5]), np.array([9.0, 2.0, 0.0])
    >>> bids = Levels(px, qty, 1, 3)
    >>> bids == (Level(100.0, 2.0), Level(99.5, 0.0)), len(bids), bids[1]
    (True, 2, Level(price=99.5, qty=0.0))
    >>> pickle.loads(pickle.dumps(bids)).px.tolist()
    [100.0, 99.5]
    """

    __slots__ = ("hi", "lo", "notional", "px", "qty")

    def __init__(self, px: Any, qty: Any, lo: int, hi: int, notional: Optional[float] = None) -> None:
        self.px, self.qty, self.lo, self.hi = px, qty, lo, hi
        #: the largest price x quantity of the levels, where the decoder vouches that every price is a normal
        #: float and every quantity 0 or one (the scanner's decimals are): all the sanity checks then need
        self.notional = notional

    def __len__(self) -> int:
        return self.hi - self.lo

    def __bool__(self) -> bool:
        return self.hi > self.lo

    def __iter__(self) -> Iterator[Level]:
        return map(Level, self.px[self.lo:self.hi].tolist(), self.qty[self.lo:self.hi].tolist())

    def __getitem__(self, i: Any) -> Any:
        return tuple(self)[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (tuple, Levels)):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))

    def __reduce__(self) -> tuple:
        return Levels, (self.px[self.lo:self.hi].copy(), self.qty[self.lo:self.hi].copy(), 0, self.hi - self.lo,
                        self.notional)


class EventColumns:
    """The fields of a batch's events in arrays, one row per event: what the chunk path's decoder gives with them.

    Row ``i`` is event ``i`` of the batch. ``kind`` says what the row
    holds: 1 a best bid/ask, 2 a trade, 3 a depth diff, 0 nothing (an event
    the per-message parser made: its fields are only in the event).
    ``values``: a quote's bid, bid quantity, ask, ask quantity; a trade's
    price, quantity and buyer-maker flag (1.0 or 0.0); a diff's largest
    notional per side. ``ids``: the update or trade id; ``first_ids`` and
    ``prev_ids``: a diff's ``U`` and ``pu`` (-1 on spot); ``levels``: a
    diff's bids ``[lo, mid)`` and asks ``[mid, hi)`` of ``lv_px`` and
    ``lv_qty``. ``ts_event`` is -1 where an event has no exchange time.
    Compiled steps read these instead of the events (``dataflows.ops.StepLogic``).

    >>> import numpy as np
    >>> z = np.zeros(1, np.int64)
    >>> c = EventColumns(np.array([2], np.int8), np.array([5]), np.array([4]), np.array([7]),
    ...                  np.array([[100.0, 0.5, 1.0, 0.0]]), z, z, np.zeros((1, 3), np.int64), np.zeros(0), np.zeros(0))
    >>> len(c), int(c.kind[0]), c.values[0, :2].tolist()      # a trade: 0.5 at 100.0, the buyer the maker
    (1, 2, [100.0, 0.5])
    """

    __slots__ = ("first_ids", "ids", "kind", "levels", "lv_px", "lv_qty", "prev_ids", "ts_event", "ts_recv", "values")

    def __init__(self, kind: Any, ts_recv: Any, ts_event: Any, ids: Any, values: Any, first_ids: Any, prev_ids: Any,
                 levels: Any, lv_px: Any, lv_qty: Any) -> None:
        self.kind, self.ts_recv, self.ts_event, self.ids, self.values = kind, ts_recv, ts_event, ids, values
        self.first_ids, self.prev_ids, self.levels, self.lv_px, self.lv_qty = first_ids, prev_ids, levels, lv_px, lv_qty

    def __len__(self) -> int:
        return len(self.kind)


def _enc_hook(obj: Any) -> Any:
    if type(obj) is Levels:
        return tuple(obj)
    # msgspec's protocol for an enc_hook: NotImplementedError for a type it does not take, which msgspec raises as
    # its TypeError ("Encoding objects of type X is unsupported"), as its default encoder does
    raise NotImplementedError(f"Objects of type {type(obj).__name__} are not supported")


#: Encodes records, events included (a depth diff's :class:`Levels` as the ``[price, qty]`` pairs they are).
ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)


def event_json(record: Any) -> str:
    """A record as JSON text, as :data:`ENCODER` writes it: the raw of the dead letter of an event.

    >>> event_json(Level(100.5, 2.0))
    '[100.5,2.0]'
    """
    return ENCODER.encode(record).decode()


#: Binance's markets: spot, USD-M futures (linear: quantities in coins, prices
#: and PnL in the quote currency) and COIN-M futures (inverse: quantities in
#: contracts worth a fixed number of USD, PnL in the coin).
MARKETS = ("spot", "usdm", "coinm")

#: A COIN-M contract's symbol: ``<COIN>USD_PERP`` (perpetual) or
#: ``<COIN>USD_<YYMMDD>`` (delivery); group 1 is its pair (``BTCUSD``). USD-M
#: delivery symbols end in ``USDT_``/``USDC_`` and spot symbols have no ``_``.
_COINM = re.compile(r"([A-Z0-9]+USD)_(?:PERP|[0-9]{6})")


def instrument_key(symbol: str, market: str) -> str:
    """Return the key that identifies one instrument across the dataflow.

    Spot symbols are used as they are; USD-M perpetuals, whose symbol is
    also a spot symbol's, get a ``-PERP`` suffix so that spot and futures of
    the same symbol never share state. A symbol with ``_`` already names its
    contract and is used as it is: a delivery contract (``BTCUSDT_250328``,
    ``BTCUSD_211231``: the date is its delivery) or a COIN-M perpetual
    (``BTCUSD_PERP``). No spot symbol has ``_``.

    >>> instrument_key("BTCUSDT", "spot"), instrument_key("BTCUSDT", "usdm")
    ('BTCUSDT', 'BTCUSDT-PERP')
    >>> instrument_key("BTCUSDT_250328", "usdm"), instrument_key("BTCUSD_PERP", "coinm")
    ('BTCUSDT_250328', 'BTCUSD_PERP')
    """
    return symbol if market == "spot" or "_" in symbol else f"{symbol}-PERP"


def coinm_pair(name: str) -> Optional[str]:
    """The pair of a COIN-M contract, or None for any other symbol or instrument.

    ``BTCUSD`` of ``BTCUSD_PERP`` or ``BTCUSD_211231`` (a COIN-M contract's
    symbol and its instrument are the same).

    >>> coinm_pair("BTCUSD_PERP"), coinm_pair("ETHUSD_210924"), coinm_pair("BTCUSDT_250328"), coinm_pair("BTCUSDT")
    ('BTCUSD', 'ETHUSD', None, None)
    """
    m = _COINM.fullmatch(name)
    return None if m is None else m.group(1)


def market_of(instrument: str) -> str:
    """The market of an instrument, from its name (:func:`instrument_key`).

    >>> [market_of(i) for i in ("BTCUSDT", "BTCUSDT-PERP", "BTCUSDT_250328", "BTCUSD_PERP", "BTCUSD_211231")]
    ['spot', 'usdm', 'usdm', 'coinm', 'coinm']
    """
    if instrument.endswith("-PERP"):
        return "usdm"
    if "_" not in instrument:
        return "spot"
    return "coinm" if _COINM.fullmatch(instrument) else "usdm"


class Trade(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One market trade, or one aggregate trade.

    ``agg`` is True for Binance's aggregate trades (the ``aggTrade`` stream,
    ``aggTrades`` archives): the fills of one taker order at one price, with
    their summed quantity, the last fill's price and time, and an aggTrade
    id (``a``), a sequence of its own, never a trade id. False (omitted from
    the JSON, the default of a snapshot taken before the field existed): a
    plain trade (``trade`` stream, ``trades`` archives), ``trade_id`` its
    trade id (``t``). The same fills reach ticklet once per stream when both
    are recorded; ``check_ticks`` (:mod:`operators.sanity`) keeps one.

    >>> msgspec.json.encode(Trade("BTCUSDT", 1_000, 990, 61837.63, 0.5, False, 2_200_000_000, agg=True))[-53:]
    b'"buyer_maker":false,"trade_id":2200000000,"agg":true}'
    >>> msgspec.json.encode(Trade("BTCUSDT", 1_000, 990, 61837.63, 0.02, True, 7))  # a plain trade: as before
    b'{"instrument":"BTCUSDT","ts_recv":1000,"ts_event":990,"price":61837.63,"qty":0.02,"buyer_maker":true,"trade_id":7}'
    """

    instrument: str
    ts_recv: int
    ts_event: int
    price: float
    qty: float
    buyer_maker: bool  # True: the taker sold (hit the bid)
    trade_id: int  # the trade id, or the aggTrade id where agg
    agg: bool = False  # an aggregate trade (aggTrade), its id an aggTrade id


class Quote(msgspec.Struct, frozen=True, gc=False):
    """A best bid/ask update (``bookTicker``)."""

    instrument: str
    ts_recv: int
    ts_event: Optional[int]  # spot bookTicker carries no exchange time
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float
    update_id: int


class DepthUpdate(msgspec.Struct, frozen=True, gc=False):
    """An incremental order-book update (``depthUpdate``).

    ``prev_last_id`` is the futures ``pu`` field, ``-1`` on spot.
    A level with quantity 0 removes that price. ``ts_event`` is the
    matching engine's time of the change (``T``) where the message has one
    (USD-M, COIN-M; trades carry theirs too), else its event time (``E``).
    The chunk path's decoder gives ``bids`` and ``asks`` as :class:`Levels`,
    which read as these tuples.
    """

    instrument: str
    ts_recv: int
    ts_event: int
    first_id: int
    last_id: int
    prev_last_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


class BookSnapshot(msgspec.Struct, frozen=True, gc=False):
    """A REST depth snapshot (spot ``/api/v3/depth``, USD-M ``/fapi/v1/depth``).

    ``last_update_id`` is Binance's ``lastUpdateId``: the book as of that
    update id. ``ts_recv`` is when the response was in hand; ``ts_event`` is the
    response's ``T`` (the matching engine's time), else its ``E``, where it has
    them (futures), else None. Levels with quantity
    0 are ignored. Consumed by :mod:`operators.orderbook`.
    """

    instrument: str
    ts_recv: int
    last_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    ts_event: Optional[int] = None


class BookQuote(msgspec.Struct, frozen=True, gc=False):
    """Top of a local order book kept from depth diffs, with depth features.

    ``update_id`` is the book's update id (the last applied diff's ``u``, or
    the snapshot's ``lastUpdateId``). ``depth_bid``/``depth_ask`` sum the
    quantities of the best ``levels`` levels of each side (as configured);
    ``imbalance = (depth_bid - depth_ask) / (depth_bid + depth_ask)`` lies in
    [-1, 1]; ``microprice = (bid * ask_qty + ask * bid_qty) / (bid_qty +
    ask_qty)`` is the top-of-book size-weighted price; ``spread = ask - bid``.
    """

    instrument: str
    ts_recv: int
    ts_event: Optional[int]
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float
    update_id: int
    depth_bid: float
    depth_ask: float
    imbalance: float
    microprice: float
    spread: float


class SnapshotRequest(msgspec.Struct, frozen=True, gc=False):
    """The local book of ``instrument`` needs a (new) REST depth snapshot.

    ``reason``: ``"no_snapshot"`` (first diff of a book that has none),
    ``"gap"`` (a depth diff went missing), ``"stale_snapshot"`` (the last
    snapshot is older than the diffs at hand) or ``"crossed_book"``.
    """

    instrument: str
    ts_recv: int
    reason: str


class BookGap(msgspec.Struct, frozen=True, gc=False):
    """Update ids that did not line up in a local order book.

    ``kind`` ``"depth"``: a diff does not continue the previous one (spot:
    ``expected`` is the previous ``u + 1``, ``got`` the diff's ``U``; USD-M:
    ``expected`` is the previous ``u``, ``got`` the diff's ``pu``).
    ``kind`` ``"snapshot"``: the first diff after a snapshot starts after it
    (``expected`` is ``lastUpdateId + 1`` on spot, ``lastUpdateId`` on USD-M;
    ``got`` is the diff's ``U``).
    """

    instrument: str
    ts_recv: int
    kind: str
    expected: int
    got: int


class Kline(msgspec.Struct, frozen=True, gc=False):
    """One OHLCV candle; it covers ``[ts_open, ts_close)``."""

    instrument: str
    ts_recv: int
    ts_open: int
    ts_close: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int
    taker_buy_volume: float
    closed: bool


Event = Union[Trade, Quote, DepthUpdate, BookSnapshot, Kline]


class ErrorRecord(msgspec.Struct, frozen=True, gc=False):
    r"""A dead letter: input that could not be used, with the reason and the raw payload exactly as received.

    ``raw`` is the payload as text when its bytes are valid UTF-8. When they
    are not, ``raw_base64`` is true and ``raw`` is the standard base64 of the
    bytes. Either way :meth:`raw_bytes` gives back the exact bytes. When the
    input was longer than the line limit, or the dead letter longer than its
    Kafka topic takes, ``raw`` holds only its first bytes and ``raw_size`` is
    its whole size in bytes (None: ``raw`` is whole); ``raw_sha256`` is then
    the SHA-256 (hex) of the whole payload where it was at hand (the Kafka
    sink's cut; None for a line the reader never held whole).
    ``instrument`` is the instrument the input names, where it names a valid
    one (empty otherwise).

    >>> e = ErrorRecord.of("parse", "bad json", b"\xff{", "BTCUSDT", 5)
    >>> e.raw, e.raw_base64, e.raw_bytes()
    ('/3s=', True, b'\xff{')
    >>> ErrorRecord.of("parse", "bad json", b'{"a":').raw
    '{"a":'
    """

    stage: str
    reason: str
    raw: str
    instrument: str = ""
    ts_recv: int = 0
    raw_base64: bool = False
    raw_size: Optional[int] = None
    raw_sha256: Optional[str] = None

    @classmethod
    def of(cls, stage: str, reason: str, raw: bytes, instrument: str = "", ts_recv: int = 0,
           raw_size: Optional[int] = None, raw_sha256: Optional[str] = None) -> ErrorRecord:
        """A dead letter of ``raw``, the input's bytes as received.

        The bytes are kept exactly: as text if they are UTF-8, else base64.
        """
        try:
            return cls(stage, reason, raw.decode("utf-8"), instrument, ts_recv, False, raw_size, raw_sha256)
        except UnicodeDecodeError:
            return cls(stage, reason, b64encode(raw).decode("ascii"), instrument, ts_recv, True, raw_size, raw_sha256)

    def raw_bytes(self) -> bytes:
        """The input's bytes as received (its first bytes where ``raw_size`` is set)."""
        return b64decode(self.raw) if self.raw_base64 else self.raw.encode("utf-8")


class RawChunk(msgspec.Struct, frozen=True, gc=False):
    """A batch of raw input records from one source partition.

    ``fmt`` says how to parse ``records``:

    - ``"ws"``: recording lines ``b"<receive timestamp> <json>"`` of Binance
      combined-stream messages (timestamp in µs or ns);
    - ``"trades"``, ``"aggTrades"``, ``"klines"``: rows (lists of strings) of
      Binance public-data CSV files;
    - ``"kafka"``: Kafka message values in ticklet's tick wire format
      (:mod:`sources.wire`), which carry their own receive time and market;
    - ``"kline_rows"``: ``(open_time_ns, open, high, low, close, volume)``
      tuples with a known ``interval_ns``, e.g. from Feather files.

    ``nbytes`` is how many bytes of the input files were read since the
    source's previous chunk (for progress; 0 where unknown, as with Kafka).
    ``source`` names the source partition that read it (a replay stream, a
    Kafka partition); the parser keeps its per-partition limits under it.
    """

    fmt: str
    market: str
    symbol: str
    records: list
    interval_ns: int = 0
    nbytes: int = 0
    source: str = ""


class BookStats(msgspec.Struct, frozen=True, gc=False):
    """The local order book over one bar (:mod:`operators.depth`).

    ``ready`` is False while the instrument carries depth but has no usable
    book (no snapshot yet, or a resync in progress): every other field is
    then empty. Per level ``m = 1..L`` (best first): ``ofi`` sums the
    multi-level order-flow imbalance of the bar's diffs (Xu, Gould & Howison)
    and ``level_depth`` is the level's mean depth ``(bid + ask) / 2`` over
    them (the book's at the bar's end where no diff came). The top ``L``
    levels are those at the bar's end. ``within_bid``/``within_ask``: the
    quantity within each configured distance of the mid (bps).
    ``walk_buy``/``walk_sell``: the cost in bps of the mid of a market order
    of the configured notional walked through the book (None: the book kept
    is thinner). ``adds``, ``cancels`` and ``changes`` count the levels of
    the bar's diffs, within the top ``L``, that appeared, went, or changed
    quantity, per side. ``updates``: diffs applied in the bar.
    """

    ready: bool
    ofi: tuple[float, ...] = ()
    level_depth: tuple[float, ...] = ()
    bid_px: tuple[float, ...] = ()
    bid_qty: tuple[float, ...] = ()
    ask_px: tuple[float, ...] = ()
    ask_qty: tuple[float, ...] = ()
    within_bid: tuple[float, ...] = ()
    within_ask: tuple[float, ...] = ()
    walk_buy: Optional[float] = None
    walk_sell: Optional[float] = None
    adds_bid: int = 0
    adds_ask: int = 0
    cancels_bid: int = 0
    cancels_ask: int = 0
    changes_bid: int = 0
    changes_ask: int = 0
    updates: int = 0


class Bar(msgspec.Struct, frozen=True, gc=False):
    """An event-time bar over ``[start, end)`` on the receive clock.

    ``price`` is the bar's reference price for returns (mid-quote or last
    trade, as configured). A bar with ``n_events == 0`` was carried forward
    across an empty interval. ``reset`` marks the first bar after a gap too
    long to carry forward: windows restart there. ``depth`` is the order
    book over the bar where the instrument carries depth and the bars keep
    its book (:mod:`operators.depth`), else None.
    """

    instrument: str
    ts_start: int
    ts_end: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    vwap: float
    trades: int
    buy_volume: float
    sell_volume: float
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float
    ofi: float
    mean_depth: float
    price: float
    n_events: int
    reset: bool = False
    depth: Optional[BookStats] = None


class FeatureRow(msgspec.Struct, frozen=True, gc=False):
    """Features known at ``ts_end`` (a bar's end), scaled online.

    ``ready`` is False during warm-up, while the windows are still filling.
    ``interval`` is the bar length in ns, so a horizon of ``h`` bars ends at
    ``ts_end + h * interval``.
    """

    instrument: str
    ts_end: int
    interval: int
    price: float
    x: dict[str, float]
    ready: bool
    reset: bool = False


class Forecast(msgspec.Struct, frozen=True, gc=False):
    """A forecast as issued at ``ts_forecast``, before its target is known.

    ``price`` is the bar price at ``ts_forecast``; ``pred_price`` is
    ``price * exp(pred_return)``. The learner's age: ``bundle``, the id of
    the model bundle it was warm-started from (``"cold"``: it started from
    nothing), and ``n_learnt``, the labels it had learnt when it forecast
    (those of the bundle included).
    """

    instrument: str
    model: str
    horizon: int
    ts_forecast: int
    ts_target: int
    pred_return: float
    price: float
    pred_price: float
    pred_lo: Optional[float] = None  # predictive interval of the return, if the model gives one
    pred_hi: Optional[float] = None
    p_up: Optional[float] = None  # probability of an up move, if the model gives one
    bundle: str = "cold"  # the model bundle the learner started from, or "cold"
    n_learnt: int = 0  # labels the learner had learnt when it forecast


class ForecastRecord(msgspec.Struct, frozen=True, gc=False):
    """A forecast paired with its realized value.

    Returns are log returns of the bar price from ``ts_forecast`` to
    ``ts_target``; ``error = realized_return - pred_return``.
    ``pred_lo``/``pred_hi`` bound the predictive interval of the return, for
    models that give one. ``bundle`` and ``n_learnt``: the learner's age when
    it forecast, as in :class:`Forecast`.
    """

    instrument: str
    model: str
    horizon: int
    ts_forecast: int
    ts_target: int
    pred_return: float
    pred_price: float
    realized_return: float
    realized_price: float
    error: float
    pred_lo: Optional[float] = None
    pred_hi: Optional[float] = None
    bundle: str = "cold"
    n_learnt: int = 0


class MetricsRecord(msgspec.Struct, frozen=True, gc=False):
    """Prequential metrics of one model at one horizon, as of ``ts_target`` (that of the last forecast scored).

    ``skill = 1 - MSE_model / MSE_naive`` where the naive forecast is a zero
    return. ``hit_rate`` is over realized non-zero moves (``n_directional``)
    and is None for a model that never predicted a non-zero return. The
    significance tests (Diebold-Mariano, Pesaran-Timmermann) are defined in
    :mod:`operators.metrics`.
    """

    instrument: str
    model: str
    horizon: int
    ts_target: int
    n: int
    mae: float
    rmse: float
    skill: Optional[float]
    hit_rate: Optional[float]
    n_directional: int
    hits: int
    coverage: Optional[float] = None  # share of realized returns inside the predictive interval
    n_interval: int = 0
    hit_rate_se: Optional[float] = None  # HAC (Newey-West, lag h-1) standard error of hit_rate
    dm_stat: Optional[float] = None  # Diebold-Mariano vs the zero-return forecast, HLN-corrected
    dm_p_value: Optional[float] = None  # one-sided: the model's squared error is lower
    pt_stat: Optional[float] = None  # Pesaran-Timmermann, on non-overlapping forecasts
    pt_p_value: Optional[float] = None  # one-sided: the forecast's direction beats chance
    n_pt: int = 0  # the non-overlapping directional pairs the PT test used


class Count(msgspec.Struct, frozen=True, gc=False):
    """An increment of a named pipeline counter (ticks, errors, skips...)."""

    name: str
    n: int


class Signal(msgspec.Struct, frozen=True, gc=False):
    """A decision taken at ``ts_forecast`` (a bar's end) from one model's forecast: the position to hold.

    The position is a signed fraction of the book's equity (``side`` is +1
    LONG, -1 SHORT, 0 NEUTRAL).
    """

    instrument: str
    model: str
    horizon: int
    ts_forecast: int
    side: int
    p_up: Optional[float]
    expected_return: float
    target_position: float


class FillQuote(msgspec.Struct, frozen=True, gc=False):
    """The quote that a market order sent at the decision time ``ts_forecast`` is filled against.

    It is the first best bid/ask received (at ``ts_recv``) at or after
    ``ts_forecast`` plus the order latency.
    """

    instrument: str
    ts_forecast: int
    ts_recv: int
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float


class Fill(msgspec.Struct, frozen=True, gc=False):
    """A market order of one book filled at ``ts_recv``.

    ``qty`` units of the instrument (signed: + bought, - sold) at ``price``,
    the opposite best quote moved by the slippage. ``spread_cost`` (against
    the mid), ``slippage_cost`` and ``fee`` are in quote currency;
    ``position`` and ``cash`` are the book's after the fill.
    """

    instrument: str
    model: str
    horizon: int
    ts_forecast: int
    ts_recv: int
    qty: float
    price: float
    mid: float
    spread_cost: float
    slippage_cost: float
    fee: float
    position: float
    cash: float
    #: The liquidity it took: always "taker" here (a market order); resting
    #: orders' fills are :class:`MakerFillRecord` s, "maker". Default: older
    #: CSVs load.
    liquidity: str = "taker"


class EquityPoint(msgspec.Struct, frozen=True, gc=False):
    """A book marked to the mid at one decision (``ts_recv``: the fill quote's time).

    Its position in units, equity (net of every cost), the equity it would
    have had trading at the mid without fees (``gross_equity``), the costs
    paid so far, and the drawdown from the equity's running peak.
    """

    instrument: str
    model: str
    horizon: int
    ts_recv: int
    position: float
    mid: float
    equity: float
    gross_equity: float
    costs: float
    drawdown: float  # 1 - equity / its running peak


class MakerFillRecord(msgspec.Struct, frozen=True, gc=False):
    """A fill of a resting (maker) order of a book: a model's at a horizon, or the baseline's (``touch``, 0).

    It is at the order's ``price`` (``side`` +1 bought, -1 sold, ``qty``
    units), at ``ts_exch`` on the exchange clock, made by the market event
    received at ``ts_recv``; ``queue`` was ahead of the order when it went
    live. ``fee`` is the maker fee paid, in quote currency (negative: a
    rebate), ``position`` the book's after it. ``mid`` is the book's mid
    just before ``ts_exch``, ``mid_1s`` and ``mid_10s`` the mid 1 s and
    10 s later on the exchange clock (raw values, for adverse selection;
    None when the input ended before). The record goes out once the book
    has passed ``ts_exch`` + 10 s. See :mod:`operators.maker`.
    """

    instrument: str
    model: str
    horizon: int
    order_id: int
    side: int
    price: float
    qty: float
    ts_exch: int
    ts_recv: int
    queue: float
    liquidity: str
    fee: float
    position: float
    mid: Optional[float]
    mid_1s: Optional[float]
    mid_10s: Optional[float]


class MakerEconomicsRecord(msgspec.Struct, frozen=True, gc=False):
    """Running economics of one maker book, as of ``ts_exch`` (the book's latest exchange stamp).

    Over the fills that have gone out (:class:`MakerFillRecord`; the last
    10 s of fills join once their moves are known, all of them when the
    input ends): ``orders`` sent, ``filled_orders`` (with at least one
    fill) and ``fill_rate`` (their share), post-only orders ``refused``;
    ``fills``, the quantity and value (``traded``, at the fill prices)
    filled; the ``position``; ``gross_pnl`` (cash plus the position at the
    mid, without fees), the ``fees`` at ``fee_bps``, ``net_pnl``; in bps of
    the value traded, ``break_even_bps`` (the maker fee at which the net
    PnL is zero: ``gross_pnl / traded``) and ``net_bps``; the mean adverse
    selection of the fills, in bps of the mid (``-side x (mid_T - mid) /
    mid``: positive when the mid moved against the fill) at 1 s and 10 s.
    See :mod:`operators.maker`.
    """

    instrument: str
    model: str
    horizon: int
    ts_exch: int
    orders: int
    filled_orders: int
    fill_rate: Optional[float]
    refused: int
    fills: int
    qty: float
    traded: float
    position: float
    gross_pnl: float
    fees: float
    net_pnl: float
    fee_bps: float
    break_even_bps: Optional[float]
    net_bps: Optional[float]
    adverse_1s_bps: Optional[float]
    adverse_10s_bps: Optional[float]


class EconomicsRecord(msgspec.Struct, frozen=True, gc=False):
    """Running economics of one book (see :mod:`operators.pnl` for every formula), as of ``ts_recv``."""

    instrument: str
    model: str
    horizon: int
    ts_recv: int
    n_bars: int
    net_return: float
    gross_return: float
    costs: float
    sharpe: Optional[float]
    sortino: Optional[float]
    max_drawdown: float
    calmar: Optional[float]
    trades: int
    win_rate: Optional[float]
    profit_factor: Optional[float]
    turnover: float
    exposure: float
    avg_holding_s: Optional[float]
    fills: int
    break_even_bps: Optional[float]
    #: The statistics of the Sharpe ratio (None while it is): the Sharpe
    #: ratio of one bar (not annualized), the standard error of the annualized
    #: one (Lo, 2002, IID returns), the skewness and the non-excess kurtosis
    #: of the per-bar returns (biased moments, as scipy's defaults), and the
    #: probabilistic Sharpe ratio P[true Sharpe > 0] (Bailey & López de Prado,
    #: 2012). The number of returns is ``n_bars``. Defaults: older CSVs load.
    sharpe_per_bar: Optional[float] = None
    sharpe_se: Optional[float] = None
    skew: Optional[float] = None
    kurt: Optional[float] = None
    psr: Optional[float] = None

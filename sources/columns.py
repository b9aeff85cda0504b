"""Recorded lines to NumPy columns in compiled code: the first stage of the chunk path (issue 28).

A chunk of ``<receive time> <JSON>`` lines is scanned by one call of a
kernel compiled with numba. Each line whose bytes are exactly one of the
layouts Binance sends for the best bid/ask and the trade streams of a symbol
(spot and USD-M, below) has its fields decoded into columns, with no Python
object per line; every other line (depth diffs, other streams, other key
orders or spacing, anything malformed) is marked for the per-line parser,
:func:`sources.binance.parse_ws`, which stays the reference.

The kernel takes a line only where the reference would make an event of it
with the same fields, so that the columns are the reference's events:

- the receive time has 16 digits (µs) or 19 (ns, below 2**63);
- the stream name is the chunk's symbol in lower case, and the data's
  ``s`` the symbol itself, a valid one (``[A-Z0-9]``, 2 to 20 of them, as
  :data:`sources.symbols.SYMBOL_PATTERN` allows: no delivery or COIN-M
  contract);
- integers are JSON integers (no sign, no leading zero) of at most 18
  digits; the exchange times (``E``, ``T``) are within what the reference
  takes (``sources.binance._MAX_MS``);
- prices and quantities are strings of a plain decimal (``0`` or a digit
  1-9 then digits, then optionally ``.`` and digits), above zero, with at
  most 15 significant digits and 22 decimals, so that ``mantissa /
  10**decimals`` is exact in both operands and IEEE division gives the
  correctly rounded value, the one msgspec's decoder gives;
- a best bid/ask is not crossed (``bid < ask``), and a USD-M trade is a
  ``MARKET`` trade.

The layouts, after ``<receive time> {"stream":"<symbol>@<stream>","data":``:

- USD-M best bid/ask: ``{"e":"bookTicker","u":U,"s":"S","b":"P","B":"Q","a":"P","A":"Q","T":T,"E":E}``
- spot best bid/ask: ``{"u":U,"s":"S","b":"P","B":"Q","a":"P","A":"Q"}``
- USD-M trade: ``{"e":"trade","E":E,"T":T,"s":"S","t":ID,"p":"P","q":"Q","X":"MARKET","m":M}``
- spot trade: ``{"e":"trade","E":E,"s":"S","t":ID,"p":"P","q":"Q","T":T,"m":M,"M":M}``, and as it
  was until 2023, with the buyer's and seller's order ids: ``...,"q":"Q","b":ID,"a":ID,"T":T,...``

each followed by ``}}`` and the end of the line.

Examples
--------
>>> lines = [b'1723161254087891268 {"stream":"btcusdt@bookTicker","data":{"u":9,"s":"BTCUSDT",'
...          b'"b":"61837.63000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}',
...          b'1723161254087896568 {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT",'
...          b'"t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}}',
...          b'1723161254087896569 {"stream":"btcusdt@bookTicker","data":{"u":9,"s":"BTCUSDT",'
...          b'"b":"0.0","B":"1","a":"1.0","A":"1"}}']
>>> c = scan(lines, "BTCUSDT")
>>> c.kind.tolist()                          # a quote, a trade, and a line for the reference (a zero bid)
[1, 2, 0]
>>> c.values[0].tolist(), int(c.ts_event[0]), int(c.ids[0])
([61837.63, 3.78826, 61837.64, 1.54698], -1, 9)
>>> c.values[1].tolist(), int(c.ts_event[1]), int(c.ids[1])
([61837.63, 0.02, 1.0, 0.0], 1723161255342000000, 3735683259)
>>> t = event(c, 1, "BTCUSDT")               # the event the per-line parser makes of the line
>>> t.instrument, t.ts_event, t.price, t.qty, t.buyer_maker, t.trade_id, t.agg
('BTCUSDT', 1723161255342000000, 61837.63, 0.02, True, 3735683259, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numba
import numpy as np

from core.events import DepthUpdate, Levels, Quote, Trade

__all__ = ["DEPTH", "OTHER", "QUOTE", "TRADE", "Columns", "event", "scan", "scan_ticks"]

#: ``Columns.kind`` of a line left to the per-line parser.
OTHER = 0
#: ``Columns.kind`` of a best bid/ask: ``values`` are bid, bid quantity, ask, ask quantity; ``ids`` its ``u``.
QUOTE = 1
#: ``Columns.kind`` of a trade: ``values`` are price, quantity, buyer maker (1.0 or 0.0), 0; ``ids`` its trade id.
TRADE = 2
#: ``Columns.kind`` of a depth diff: ``ids`` its ``u``, ``first_ids`` its ``U``, ``prev_ids`` its ``pu`` (-1 on
#: spot), its levels ``levels[i]`` (``lo, mid, hi``: bids in ``[lo, mid)``, asks in ``[mid, hi)`` of ``lv_px`` and
#: ``lv_qty``); ``values`` the largest notional (price x quantity) of its bids, of its asks.
DEPTH = 3

# The layouts as programs: (op, argument) pairs. Ops: a literal (the argument: its index in _LITERALS),
# an integer field (the argument: its slot), a decimal field (its slot), a boolean field (its slot), the
# symbol in lower case, the symbol, the end of the line, a depth stream's optional speed (``@100ms``), and
# a depth diff's levels (its slot: 0 bids, 1 asks).
_LIT, _INT, _DEC, _BOOL, _SYM_LOW, _SYM, _END, _SPEED, _LEVELS = range(9)
# integer slots: 0 the id (u or t), 1 the exchange time in ms (the quote's E, the trade's T, the depth diff's T or
# spot's E), 2 the trade's and USD-M depth diff's E and 3 the quote's T (checked only), 3 also the order ids of an
# old spot trade (ignored, as the parser ignores them), 4 the depth diff's U and 5 its pu
# decimal slots: 0..3; boolean slots: 0 (m), 1 (M, checked only)
_HEAD = b' {"stream":"'
_LITERALS: list[bytes] = []


def _lit(text: bytes) -> tuple[int, int]:
    _LITERALS.append(text)
    return (_LIT, len(_LITERALS) - 1)


def _program(*ops: tuple[int, int]) -> list[tuple[int, int]]:
    return list(ops)


_H = _lit(_HEAD)
_LAYOUTS = [
    (QUOTE, _program(_H, (_SYM_LOW, 0), _lit(b'@bookTicker","data":{"e":"bookTicker","u":'), (_INT, 0),
                     _lit(b',"s":"'), (_SYM, 0), _lit(b'","b":"'), (_DEC, 0), _lit(b'","B":"'), (_DEC, 1),
                     _lit(b'","a":"'), (_DEC, 2), _lit(b'","A":"'), (_DEC, 3), _lit(b'","T":'), (_INT, 3),
                     _lit(b',"E":'), (_INT, 1), _lit(b"}}"), (_END, 0))),
    (QUOTE, _program(_H, (_SYM_LOW, 0), _lit(b'@bookTicker","data":{"u":'), (_INT, 0), _lit(b',"s":"'), (_SYM, 0),
                     _lit(b'","b":"'), (_DEC, 0), _lit(b'","B":"'), (_DEC, 1), _lit(b'","a":"'), (_DEC, 2),
                     _lit(b'","A":"'), (_DEC, 3), _lit(b'"}}'), (_END, 0))),
    (TRADE, _program(_H, (_SYM_LOW, 0), _lit(b'@trade","data":{"e":"trade","E":'), (_INT, 2), _lit(b',"T":'),
                     (_INT, 1), _lit(b',"s":"'), (_SYM, 0), _lit(b'","t":'), (_INT, 0), _lit(b',"p":"'), (_DEC, 0),
                     _lit(b'","q":"'), (_DEC, 1), _lit(b'","X":"MARKET","m":'), (_BOOL, 0), _lit(b"}}"), (_END, 0))),
    (TRADE, _program(_H, (_SYM_LOW, 0), _lit(b'@trade","data":{"e":"trade","E":'), (_INT, 2), _lit(b',"s":"'),
                     (_SYM, 0), _lit(b'","t":'), (_INT, 0), _lit(b',"p":"'), (_DEC, 0), _lit(b'","q":"'), (_DEC, 1),
                     _lit(b'","T":'), (_INT, 1), _lit(b',"m":'), (_BOOL, 0), _lit(b',"M":'), (_BOOL, 1),
                     _lit(b"}}"), (_END, 0))),
    (TRADE, _program(_H, (_SYM_LOW, 0), _lit(b'@trade","data":{"e":"trade","E":'), (_INT, 2), _lit(b',"s":"'),
                     (_SYM, 0), _lit(b'","t":'), (_INT, 0), _lit(b',"p":"'), (_DEC, 0), _lit(b'","q":"'), (_DEC, 1),
                     _lit(b'","b":'), (_INT, 3), _lit(b',"a":'), (_INT, 3), _lit(b',"T":'), (_INT, 1), _lit(b',"m":'),
                     (_BOOL, 0), _lit(b',"M":'), (_BOOL, 1), _lit(b"}}"), (_END, 0))),
    (DEPTH, _program(_H, (_SYM_LOW, 0), _lit(b"@depth"), (_SPEED, 0), _lit(b'","data":{"e":"depthUpdate","E":'),
                     (_INT, 2), _lit(b',"T":'), (_INT, 1), _lit(b',"s":"'), (_SYM, 0), _lit(b'","U":'), (_INT, 4),
                     _lit(b',"u":'), (_INT, 0), _lit(b',"pu":'), (_INT, 5), _lit(b',"b":'), (_LEVELS, 0),
                     _lit(b',"a":'), (_LEVELS, 1), _lit(b"}}"), (_END, 0))),
    (DEPTH, _program(_H, (_SYM_LOW, 0), _lit(b"@depth"), (_SPEED, 0), _lit(b'","data":{"e":"depthUpdate","E":'),
                     (_INT, 1), _lit(b',"s":"'), (_SYM, 0), _lit(b'","U":'), (_INT, 4), _lit(b',"u":'), (_INT, 0),
                     _lit(b',"b":'), (_LEVELS, 0), _lit(b',"a":'), (_LEVELS, 1), _lit(b"}}"), (_END, 0))),
]
# Which integer slot holds the exchange time of each layout (the quote's E; the trade's T); the spot quote has none.
_EVENT_SLOT = np.array([1, -1, 1, 1, 1, 1, 1], np.int64)
# Whether a layout's E is in slot 2 (checked against the limit); the spot depth diff's is its exchange time (slot 1).
_HAS_E2 = np.array([0, 0, 1, 1, 1, 1, 0], np.int64)
# Whether a layout has a pu (slot 5): USD-M depth diffs.
_HAS_PU = np.array([0, 0, 0, 0, 0, 1, 0], np.int64)
_KINDS = np.array([k for k, _ in _LAYOUTS], np.int8)
_NOPS = max(len(p) for _, p in _LAYOUTS)
_OPS = np.full((len(_LAYOUTS), _NOPS, 2), -1, np.int64)
for _i, (_, _prog) in enumerate(_LAYOUTS):
    _OPS[_i, : len(_prog)] = _prog
_LIT_AT = np.cumsum([0] + [len(t) for t in _LITERALS]).astype(np.int64)
_LIT_BYTES = np.frombuffer(b"".join(_LITERALS), np.uint8)
_POW10 = np.array([10.0**k for k in range(23)])
#: ``sources.binance._MAX_MS``: exchange times (ms) whose ns, plus one ms, fit int64.
_MAX_MS = (1 << 63) // 1_000_000 - 2
_MAX_TS = np.uint64(1 << 63)


@dataclass(frozen=True)
class Columns:
    """The decoded fields of a chunk's lines, one row per line (``kind`` says which rows hold an event).

    ``ts_recv``: the receive time (ns); ``ts_event``: the exchange time (ns;
    -1: none, a spot best bid/ask); ``ids``: the update or trade id;
    ``values``: four floats per line (see :data:`QUOTE`, :data:`TRADE`);
    ``market``: a tick's market (0 spot, 1 USD-M; :func:`scan_ticks`);
    ``sym_at``/``sym_len``: where the symbol is in ``data``, the lines
    joined; a depth diff's ``first_ids`` (``U``), ``prev_ids`` (``pu``,
    -1 on spot) and ``levels`` (see :data:`DEPTH`), in ``lv_px`` and
    ``lv_qty``, all the chunk's levels. Rows of :data:`OTHER` lines hold
    nothing.
    """

    def symbol(self, i: int) -> str:
        """The symbol of row ``i``."""
        at = int(self.sym_at[i])
        return self.data[at:at + int(self.sym_len[i])].decode()

    kind: np.ndarray
    ts_recv: np.ndarray
    ts_event: np.ndarray
    ids: np.ndarray
    values: np.ndarray
    market: np.ndarray
    sym_at: np.ndarray
    sym_len: np.ndarray
    data: bytes
    first_ids: np.ndarray
    prev_ids: np.ndarray
    levels: np.ndarray
    lv_px: np.ndarray
    lv_qty: np.ndarray


@numba.njit(cache=True, nogil=True)
def _int(buf: np.ndarray, i: int, end: int) -> tuple[int, int]:  # pragma: no cover - compiled
    """A JSON integer (no sign, no leading zero, at most 18 digits) at ``i``: (value, next index), -1 if none."""
    j = i
    v = 0
    while j < end and 48 <= buf[j] <= 57:
        v = v * 10 + (buf[j] - 48)
        j += 1
    n = j - i
    if n == 0 or n > 18 or (n > 1 and buf[i] == 48):
        return -1, -1
    return v, j


@numba.njit(cache=True, nogil=True)
def _dec(buf: np.ndarray, i: int, end: int, pow10: np.ndarray,
         zero: bool = False) -> tuple[float, int]:  # pragma: no cover - compiled
    """A plain decimal above zero (or 0 too, with ``zero``) at ``i`` (the module docstring): (value, next index).

    Its digits make the mantissa ``m``; its significant digits (from the
    first that is not 0) are at most 15 exactly where ``m < 10**15``, which
    also keeps ``m`` from overflowing.
    """
    j = i
    m = 0
    while j < end:
        d = int(buf[j]) - 48
        if d < 0 or d > 9:
            break
        m = m * 10 + d
        j += 1
    n = j - i
    if n == 0 or n > 15 or (n > 1 and buf[i] == 48):  # more than 15 digits before the point: as many significant
        return -1.0, -1
    k = 0
    if j < end and buf[j] == 46:
        j += 1
        f = j
        while j < end:
            d = int(buf[j]) - 48
            if d < 0 or d > 9:
                break
            m = m * 10 + d
            if m >= 1_000_000_000_000_000:
                return -1.0, -1
            j += 1
        k = j - f
        if k == 0 or k > 22:
            return -1.0, -1
    if m == 0 and not zero:
        return -1.0, -1
    return m / pow10[k], j


@numba.njit(cache=True, nogil=True)
def _levels(buf: np.ndarray, j: int, end: int, pow10: np.ndarray, px: np.ndarray, qty: np.ndarray,
            n: int) -> tuple[int, int]:  # pragma: no cover - compiled
    """A JSON array of ``["price","qty"]`` pairs at ``j`` into ``px``, ``qty`` from ``n`` on: (next index, new ``n``).

    The next index is -1 where there is none such: no space, each price
    a plain decimal above zero and each quantity one of zero or more.
    """
    if j >= end or buf[j] != 91:  # [
        return -1, n
    j += 1
    if j < end and buf[j] == 93:  # ]
        return j + 1, n
    while True:
        if j + 2 > end or buf[j] != 91 or buf[j + 1] != 34:  # ["
            return -1, n
        p, j = _dec(buf, j + 2, end, pow10)
        if j < 0 or j + 3 > end or buf[j] != 34 or buf[j + 1] != 44 or buf[j + 2] != 34:  # ","
            return -1, n
        q, j = _dec(buf, j + 3, end, pow10, True)
        if j < 0 or j + 2 > end or buf[j] != 34 or buf[j + 1] != 93:  # "]
            return -1, n
        px[n] = p
        qty[n] = q
        n += 1
        j += 2
        if j < end and buf[j] == 44:  # ,
            j += 1
        elif j < end and buf[j] == 93:  # ]
            return j + 1, n
        else:
            return -1, n


@numba.njit(cache=True, nogil=True)
def _match(buf: np.ndarray, j: int, end: int, text: np.ndarray) -> bool:  # pragma: no cover - compiled
    """Whether ``text`` is at ``j``."""
    if j + len(text) > end:
        return False
    for q in range(len(text)):  # noqa: SIM110 - compiled: a loop, not a generator
        if buf[j + q] != text[q]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _scan(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, sym: np.ndarray, low: np.ndarray, kafka: bool,
          ops: np.ndarray, kinds: np.ndarray, event_slot: np.ndarray, lit_at: np.ndarray, lit: np.ndarray,
          pow10: np.ndarray, max_ms: int, max_ts: np.uint64, has_e2: np.ndarray, has_pu: np.ndarray,
          kind: np.ndarray, ts_recv: np.ndarray, ts_event: np.ndarray, ids: np.ndarray, values: np.ndarray,
          market: np.ndarray, sym_at: np.ndarray, sym_len: np.ndarray, first_ids: np.ndarray, prev_ids: np.ndarray,
          levels: np.ndarray, lv_px: np.ndarray, lv_qty: np.ndarray) -> None:  # pragma: no cover - compiled
    ints = np.zeros(6, np.int64)
    nl = 0  # the levels taken so far
    lv = np.zeros(3, np.int64)
    decs = np.zeros(4)
    bools = np.zeros(2, np.int64)
    k_ts = np.frombuffer(b'{"ts_recv":', np.uint8)
    k_market = np.frombuffer(b',"market":"', np.uint8)
    k_spot = np.frombuffer(b'spot","stream":"', np.uint8)
    k_usdm = np.frombuffer(b'usdm","stream":"', np.uint8)
    for li in range(len(starts)):
        s, end = starts[li], ends[li]
        kind[li] = 0
        j = s
        t = np.uint64(0)
        first = 0  # the first op of the layouts: the recording line's head, or after a tick's
        if kafka:  # {"ts_recv":N,"market":"spot|usdm","stream":"
            if not _match(buf, j, end, k_ts):
                continue
            j += len(k_ts)
            d0 = j
            while j < end and 48 <= buf[j] <= 57 and j - d0 < 20:
                t = t * np.uint64(10) + np.uint64(buf[j] - 48)
                j += 1
            nd = j - d0
            if nd == 0 or nd > 19 or (nd > 1 and buf[d0] == 48) or t >= max_ts or not _match(buf, j, end, k_market):
                continue
            j += len(k_market)
            if _match(buf, j, end, k_spot):
                market[li] = 0
            elif _match(buf, j, end, k_usdm):
                market[li] = 1
            else:
                continue
            j += len(k_spot)
            first = 1
        else:
            while j < end and 48 <= buf[j] <= 57 and j - s < 20:
                t = t * np.uint64(10) + np.uint64(buf[j] - 48)
                j += 1
            nd = j - s
            if nd == 16:
                t = t * np.uint64(1000)
            elif nd != 19:
                continue
            if t >= max_ts or j >= end or buf[j] != 32:
                continue
        at = j
        lo_at, lo_n = 0, 0
        for lay in range(ops.shape[0]):
            j = at
            ok = True
            lv[0] = lv[1] = lv[2] = nl
            for o in range(first, ops.shape[1]):
                op, arg = ops[lay, o, 0], ops[lay, o, 1]
                if op < 0:
                    break
                if op == 0:  # a literal
                    a, b = lit_at[arg], lit_at[arg + 1]
                    if j + (b - a) > end:
                        ok = False
                        break
                    for q in range(b - a):
                        if buf[j + q] != lit[a + q]:
                            ok = False
                            break
                    if not ok:
                        break
                    j += b - a
                elif op == 1:
                    v, j = _int(buf, j, end)
                    if j < 0:
                        ok = False
                        break
                    ints[arg] = v
                elif op == 2:
                    x, j = _dec(buf, j, end, pow10)
                    if j < 0:
                        ok = False
                        break
                    decs[arg] = x
                elif op == 8:  # a depth diff's levels: bids, then asks
                    j, m = _levels(buf, j, end, pow10, lv_px, lv_qty, lv[2])
                    if j < 0:
                        ok = False
                        break
                    if not arg:
                        lv[1] = m
                    lv[2] = m
                elif op == 7:  # a depth stream's speed: nothing, or @ digits ms
                    if j < end and buf[j] == 64:
                        d0 = j + 1
                        j = d0
                        while j < end and 48 <= buf[j] <= 57:
                            j += 1
                        if j == d0 or j + 2 > end or buf[j] != 109 or buf[j + 1] != 115:
                            ok = False
                            break
                        j += 2
                elif op == 3:
                    if j + 4 <= end and buf[j] == 116 and buf[j + 1] == 114 and buf[j + 2] == 117 and buf[j + 3] == 101:
                        bools[arg] = 1
                        j += 4
                    elif (j + 5 <= end and buf[j] == 102 and buf[j + 1] == 97 and buf[j + 2] == 108
                          and buf[j + 3] == 115 and buf[j + 4] == 101):
                        bools[arg] = 0
                        j += 5
                    else:
                        ok = False
                        break
                elif (op == 4 or op == 5) and len(sym):  # the chunk's symbol
                    ref = low if op == 4 else sym
                    if not _match(buf, j, end, ref):
                        ok = False
                        break
                    if op == 5:
                        sym_at[li] = j
                        sym_len[li] = len(ref)
                    j += len(ref)
                elif op == 4:  # any symbol: 2 to 20 of [a-z0-9] in the stream name
                    lo_at = j
                    while j < end and (48 <= buf[j] <= 57 or 97 <= buf[j] <= 122) and j - lo_at <= 20:
                        j += 1
                    lo_n = j - lo_at
                    if lo_n < 2 or lo_n > 20:
                        ok = False
                        break
                elif op == 5:  # and the same in upper case in the data's "s"
                    if j + lo_n > end:
                        ok = False
                        break
                    for q in range(lo_n):
                        c = buf[lo_at + q]
                        if buf[j + q] != (c - 32 if c >= 97 else c):
                            ok = False
                            break
                    if not ok:
                        break
                    sym_at[li] = j
                    sym_len[li] = lo_n
                    j += lo_n
                else:  # the end of the line
                    if j != end:
                        ok = False
                    break
            if not ok:
                continue
            k = kinds[lay]
            es = event_slot[lay]
            if k == 1:
                if decs[0] >= decs[2]:  # crossed: the reference's dead letter
                    break
                if es >= 0 and (ints[es] > max_ms or ints[3] > max_ms):
                    break
                values[li, 0] = decs[0]
                values[li, 1] = decs[1]
                values[li, 2] = decs[2]
                values[li, 3] = decs[3]
            elif k == 3:
                if ints[1] > max_ms or (has_e2[lay] and ints[2] > max_ms):
                    break
                first_ids[li] = ints[4]
                prev_ids[li] = ints[5] if has_pu[lay] else -1
                levels[li, 0] = lv[0]
                levels[li, 1] = lv[1]
                levels[li, 2] = lv[2]
                for sd in range(2):  # each side's largest notional (price x quantity) for the sanity checks
                    top = 0.0
                    for q in range(lv[sd], lv[sd + 1]):
                        top = max(top, lv_px[q] * lv_qty[q])
                    values[li, sd] = top
                nl = lv[2]
            else:
                if ints[1] > max_ms or ints[2] > max_ms:
                    break
                values[li, 0] = decs[0]
                values[li, 1] = decs[1]
                values[li, 2] = 1.0 if bools[0] else 0.0
                values[li, 3] = 0.0
            kind[li] = k
            ts_recv[li] = np.int64(t)
            ts_event[li] = ints[es] * 1_000_000 if es >= 0 else -1
            ids[li] = ints[0]
            break


def scan(lines: Sequence[bytes], symbol: str) -> Columns:
    """Decode the best bid/ask and trade lines of ``symbol`` in ``lines`` (see the module docstring).

    ``lines`` are recording lines without their line endings (as
    :class:`~core.events.RawChunk` holds them).
    """
    valid = symbol.isascii() and symbol.isalnum() and symbol.upper() == symbol and 2 <= len(symbol) <= 20
    return _run(lines, symbol if valid else "", False, valid)


def scan_ticks(values: Sequence[bytes]) -> Columns:
    """Decode the best bid/ask and trade ticks of a Kafka batch (:mod:`sources.wire`'s compact layout), any symbol.

    A tick is ``{"ts_recv":N,"market":"M",`` then a recording line's
    message from its ``"stream"`` on; it is taken as a line is (see the
    module docstring), for the markets ``spot`` and ``usdm``, its symbol
    (2 to 20 of ``[A-Z0-9]``) read from it.

    >>> c = scan_ticks([b'{"ts_recv":5,"market":"usdm","stream":"ethusdt@bookTicker","data":{"e":"bookTicker",'
    ...                 b'"u":7,"s":"ETHUSDT","b":"1.5","B":"2","a":"1.6","A":"3","T":1,"E":2}}'])
    >>> c.kind.tolist(), c.symbol(0), int(c.market[0]), int(c.ts_event[0])
    ([1], 'ETHUSDT', 1, 2000000)
    """
    return _run(values, "", True, True)


def _run(lines: Sequence[bytes], symbol: str, kafka: bool, go: bool) -> Columns:
    n = len(lines)
    data = b"".join(lines)
    buf = np.frombuffer(data, np.uint8)
    sizes = np.fromiter(map(len, lines), np.int64, n)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    kind = np.zeros(n, np.int8)
    ts_recv = np.zeros(n, np.int64)
    ts_event = np.zeros(n, np.int64)
    ids = np.zeros(n, np.int64)
    values = np.zeros((n, 4))
    market = np.zeros(n, np.int8)
    sym_at = np.zeros(n, np.int64)
    sym_len = np.zeros(n, np.int64)
    first_ids = np.zeros(n, np.int64)
    prev_ids = np.zeros(n, np.int64)
    levels = np.zeros((n, 3), np.int64)
    cap = len(data) // 9 + 1  # a level takes 9 bytes at least: ["1","0"]; only the levels taken are written
    lv_px = np.empty(cap)
    lv_qty = np.empty(cap)
    if go and n:
        up = np.frombuffer(symbol.encode(), np.uint8)
        low = np.frombuffer(symbol.lower().encode(), np.uint8)
        _scan(buf, starts, ends, up, low, kafka, _OPS, _KINDS, _EVENT_SLOT, _LIT_AT, _LIT_BYTES, _POW10, _MAX_MS,
              _MAX_TS, _HAS_E2, _HAS_PU, kind, ts_recv, ts_event, ids, values, market, sym_at, sym_len, first_ids,
              prev_ids, levels, lv_px, lv_qty)
    return Columns(kind, ts_recv, ts_event, ids, values, market, sym_at, sym_len, data, first_ids, prev_ids, levels,
                   lv_px, lv_qty)


def event(c: Columns, i: int, key: str) -> Union[Quote, Trade, DepthUpdate]:
    """The event of row ``i`` (:data:`QUOTE`, :data:`TRADE`, :data:`DEPTH`) of instrument ``key``, as the parser's."""
    v = c.values[i]
    if c.kind[i] == QUOTE:
        te = int(c.ts_event[i])
        return Quote(key, int(c.ts_recv[i]), None if te < 0 else te, float(v[0]), float(v[1]), float(v[2]),
                     float(v[3]), int(c.ids[i]))
    if c.kind[i] == TRADE:
        return Trade(key, int(c.ts_recv[i]), int(c.ts_event[i]), float(v[0]), float(v[1]), bool(v[2]), int(c.ids[i]))
    if c.kind[i] == DEPTH:
        lo, mid, hi = c.levels[i].tolist()
        return DepthUpdate(key, int(c.ts_recv[i]), int(c.ts_event[i]), int(c.first_ids[i]), int(c.ids[i]),
                           int(c.prev_ids[i]), Levels(c.lv_px, c.lv_qty, lo, mid, float(v[0])),  # type: ignore[arg-type]
                           Levels(c.lv_px, c.lv_qty, mid, hi, float(v[1])))  # type: ignore[arg-type]
    raise ValueError(f"row {i} holds no event")

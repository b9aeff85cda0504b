"""Helpers for tests on the real recordings: reading lines, writing derived
files, and driving the pure operators. Everything here is independent of the
code under test except where it calls it explicitly (``run_chain``)."""

from __future__ import annotations

import csv
import gzip
import json
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: Working directory of the subprocesses the tests start (the CLI, Bytewax
#: runs): never the checkout, so that nothing a run writes to its working
#: directory (Bytewax's dataflow.json, default output dirs) lands in it.
SCRATCH = Path(tempfile.mkdtemp(prefix="ticklet-tests-"))

MS = 1_000_000  # ns per ms

#: The record files of a run: forecasts and metrics, then the decision layer's.
RECORD_FILES = ("forecasts.csv", "metrics.csv", "signals.csv", "trades.csv", "equity.csv", "economics.csv")


@cache
def lines(path: str | Path) -> tuple[bytes, ...]:
    """Non-empty lines of a (gzip) recording, without line endings."""
    with gzip.open(path, "rb") as f:
        return tuple(ln for ln in f.read().split(b"\n") if ln)


def recv_ns(line: bytes) -> int:
    """Receive time in ns of a recording line: 16 digits are µs, 19 are ns."""
    head = line.split(b" ", 1)[0].decode()
    if len(head) == 16:
        return int(head) * 1000
    if len(head) == 19:
        return int(head)
    raise ValueError(f"unexpected receive timestamp {head!r}")


def payload(line: bytes) -> bytes:
    return line.split(b" ", 1)[1]


@cache
def messages(path: str | Path) -> tuple[tuple[int, bytes, dict], ...]:
    """(receive ns, payload, decoded JSON) for every line of a recording."""
    return tuple((recv_ns(ln), payload(ln), json.loads(payload(ln))) for ln in lines(path))


def stream_kind(msg: dict) -> str:
    """'trade', 'bookTicker', 'depth', 'markPrice' or 'snapshot'."""
    if "stream" not in msg:
        assert "lastUpdateId" in msg
        return "snapshot"
    kind = msg["stream"].split("@", 1)[1]
    return kind.split("@", 1)[0]


def write_gz(path: Path, rows: Iterable[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b"".join(r + b"\n" for r in rows))
    return path


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def csv_dicts(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def drive(step: Callable, state: Any, items: Iterable) -> tuple[Any, list]:
    """Feed items one by one through a pure ``step``; collect every output."""
    out: list = []
    for it in items:
        state, o = step(state, it)
        out.extend(o)
    return state, out


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    """The shortest wall time, in seconds, of ``repeat`` calls of ``fn`` (for the benchmarks)."""
    import time

    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def parse_paths(paths: Sequence[str | Path], path: str = "message") -> tuple[dict, list, dict]:
    """Read paths as one stream with the project's reader and parse it (``path``: the parser's, message or chunk)."""
    from core.events import RawChunk
    from sources.binance import ParseLimits, ParseState, parse_chunk
    from sources.files import group_streams, read_stream

    specs = group_streams([str(p) for p in paths])
    assert len(specs) == 1, specs
    spec = specs[0]
    recs = [r for block in read_stream(spec) for r in block]
    return parse_chunk(RawChunk(spec.fmt, spec.market, spec.symbol, recs, spec.interval_ns),
                       ParseState(ParseLimits(path=path)))


def chunk_batches(market: str, symbol: str, rows: Sequence[bytes], size: int = 2048) -> list:
    """The events of recording lines ``rows`` as the chunk path parses them, ``size`` lines a chunk: each chunk's
    batch per instrument (an ``EventBatch``, with its columns)."""
    from core.events import RawChunk
    from sources.binance import ParseLimits, ParseState, parse_chunk

    ps = ParseState(ParseLimits(path="chunk"))
    out: list = []
    for i in range(0, len(rows), size):
        by_key, _, _ = parse_chunk(RawChunk("ws", market, symbol, list(rows[i:i + size])), ps)
        out.extend(by_key.values())
    return out


@cache
def chunk_events(paths: tuple[str, ...]) -> list:
    """The events of the recordings as the chunk path parses them (a depth diff's levels in arrays)."""
    by_key, errors, _ = parse_paths(paths, "chunk")
    assert not errors and len(by_key) == 1, (errors[:3], list(by_key))
    (events,) = by_key.values()
    return list(events)


@dataclass
class Chain:
    """One instrument's real events and every operator's inputs/outputs."""

    settings: Any
    instrument: str
    events: list
    bar_out: list  # everything bars.step emitted (bars, dead letters, counts)
    bars: list
    rows: list
    join_out: list  # everything forecast.step emitted
    forecasts: list
    metrics: list
    paths: tuple = ()  # the recordings read


def run_chain(paths: Sequence[str | Path], settings: Any = None) -> Chain:
    from core.events import Bar, ForecastRecord
    from dataflows.settings import Settings
    from operators import features, forecast, metrics

    s = settings or Settings()
    by_key, errors, _ = parse_paths(paths)
    assert not errors, errors[:3]
    assert len(by_key) == 1, list(by_key)
    (key, events), = by_key.items()
    step, state = bar_step(s)
    _, bar_out = drive(step, state, events)
    bar_list = [b for b in bar_out if type(b) is Bar]
    _, rows = drive(features.step, features.FeatureState(s.features), bar_list)
    _, join_out = drive(forecast.step, forecast.JoinState(s.forecast), rows)
    fcs = [r for r in join_out if type(r) is ForecastRecord]
    _, mets = drive(metrics.step, metrics.MetricsState(), fcs)
    return Chain(s, key, events, bar_out, bar_list, rows, join_out, fcs, mets, tuple(str(p) for p in paths))


def bar_step(settings: Any, compiled: bool = False) -> tuple:
    """(step, fresh state) of the bars as the dataflow makes them: with the order book where depth is on
    (``compiled``: the chunk path's)."""
    from operators import bars, depth

    if settings.features.depth.enabled:
        return depth.step, depth.DepthState(settings.bars, settings.features.depth, compiled)
    return bars.step, bars.BarState(settings.bars)


@cache
def book_stream(paths: tuple[str, ...], market: str) -> tuple[tuple, tuple]:
    """(depth diffs and REST snapshots, bookTicker quotes) of recordings read
    as one stream, each in file order, parsed with the project's parsers
    (``parse_ws``; ``sources.binance.parse_snapshot`` for snapshot lines)."""
    from core.events import BookSnapshot, DepthUpdate, Quote, Trade, instrument_key
    from sources.binance import parse_snapshot, parse_ws

    book, quotes = [], []
    for path in paths:
        key = instrument_key(Path(path).name.split("_", 1)[0].upper(), market)
        for ln in lines(path):
            ts, pl = recv_ns(ln), payload(ln)
            r: object = parse_ws(ts, pl, market)
            if r == "depth_snapshot":
                r = parse_snapshot(ts, pl, key)
            cls = type(r)
            if cls is DepthUpdate or cls is BookSnapshot:
                book.append(r)
            elif cls is Quote:
                quotes.append(r)
            elif cls is not str and cls is not Trade:
                raise AssertionError(f"unexpected record in {path}: {r!r}")
    return tuple(book), tuple(quotes)


@cache
def book_case(paths: tuple[str, ...], market: str) -> tuple[tuple, list]:
    """(real order-book inputs, outputs of the reference run with the default
    :class:`operators.orderbook.OrderBookConfig`)."""
    from operators import orderbook

    items, _ = book_stream(paths, market)
    _, out = drive(orderbook.step, orderbook.OrderBookState(orderbook.OrderBookConfig()), items)
    return items, out


# --- Binance-format messages and archives built from real trades -------------

def trade_dicts(path: str | Path, market_only: bool = True) -> list[dict]:
    """The ``data`` objects of a recording's trade messages, in file order."""
    out = [m["data"] for _, _, m in messages(path) if stream_kind(m) == "trade"]
    if market_only:
        out = [d for d in out if d.get("X", "MARKET") == "MARKET"]
    return out


def aggregate_trades(trades: list[dict]) -> list[list[dict]]:
    """Group trades as Binance aggTrades do: consecutive ids filled at the same
    time and price with the same taker side."""
    groups: list[list[dict]] = []
    for d in trades:
        if groups:
            last = groups[-1][-1]
            if (last["T"], last["p"], last["m"], last["t"] + 1) == (d["T"], d["p"], d["m"], d["t"]):
                groups[-1].append(d)
                continue
        groups.append([d])
    return groups


def dec8(x: Decimal | int) -> str:
    """A decimal with Binance's 8 fractional digits (``x``: a sum of decimals, 0 when empty)."""
    return f"{Decimal(x).quantize(Decimal('1e-8'), rounding=ROUND_HALF_EVEN):.8f}"


def minute_klines(trades: list[dict]) -> list[dict]:
    """1-minute klines (Binance field names, decimal strings) of every complete
    minute covered by ``trades`` (by trade time ``T``), computed with exact
    decimal arithmetic."""
    by_min: dict[int, list[dict]] = {}
    for d in sorted(trades, key=lambda d: d["t"]):
        by_min.setdefault(d["T"] // 60_000 * 60_000, []).append(d)
    minutes = sorted(by_min)
    out = []
    for t0 in minutes[1:-1]:  # the first and last minutes are partial
        g = by_min[t0]
        px = [Decimal(d["p"]) for d in g]
        qty = [Decimal(d["q"]) for d in g]
        buy = [not d["m"] for d in g]  # buyer is the taker
        out.append({
            "t": t0, "T": t0 + 59_999, "f": g[0]["t"], "L": g[-1]["t"],
            "o": dec8(px[0]), "h": dec8(max(px)), "l": dec8(min(px)), "c": dec8(px[-1]),
            "v": dec8(sum(qty)), "n": len(g),
            "q": dec8(sum(p * q for p, q in zip(px, qty, strict=True))),
            "V": dec8(sum(q for q, b in zip(qty, buy, strict=True) if b)),
            "Q": dec8(sum(p * q for p, q, b in zip(px, qty, buy, strict=True) if b)),
            "E_last": g[-1]["E"], "s": g[0]["s"],
        })
    return out


def signals_of(chain: Chain, size: float = 0.5) -> list:
    """A plain rule on the chain's issued forecasts, for the execution tests:
    hold ``size`` of equity in the direction of the forecast, flat on a zero."""
    from core.events import Forecast, Signal

    out = []
    for f in chain.join_out:
        if type(f) is Forecast:
            side = (f.pred_return > 0) - (f.pred_return < 0)
            out.append(Signal(f.instrument, f.model, f.horizon, f.ts_forecast, side, None, f.pred_return, side * size))
    return out


def pnl_inputs(chain: Chain) -> list:
    """The chain's signals and the fill quotes of its events, interleaved both
    ways: on even bars the quote comes first, on odd bars the decisions."""
    from operators import fills, pnl

    b = chain.settings.bars
    _, quotes = drive(fills.step, fills.FillState(pnl.ExecutionConfig().latency_ms, b.interval_ms, b.max_gap_bars),
                      chain.events)
    iv = chain.settings.bars.interval_ms * 1_000_000

    def order(x) -> tuple:
        first = 0 if (x.ts_forecast // iv) % 2 == 0 else 1
        return (x.ts_forecast, first if type(x).__name__ == "FillQuote" else 1 - first)

    return sorted(signals_of(chain) + quotes, key=order)


def operator_case(name: str, chain) -> tuple:
    """(step, fresh state factory, real inputs, outputs of the reference run)
    of one pure operator over a :class:`Chain`."""
    from core.events import Trade
    from operators import bars, depth, features, forecast, metrics, orderbook, sequence

    if name.endswith("[chunk]"):  # the operator on the chunk path: its events from the compiled scanner, its
        return _chunk_case(name.removesuffix("[chunk]"), chain)  # book in compiled code where it keeps one
    if name == "sequence":  # the real trade ids, every 500th trade lost to make gaps
        trades = [e for e in chain.events if isinstance(e, Trade)]
        items: list[Any] = [sequence.SequenceEvent(e.instrument, "trade", e.trade_id, e.ts_recv)
                            for i, e in enumerate(trades) if i % 500 != 499]
        _, ref = drive(sequence.step, sequence.SequenceState(), items)
        return sequence.step, sequence.SequenceState, items, ref
    if name == "fills":  # the fill quote of every bar end, from the same events as the bars
        from operators import fills, pnl

        def fresh():
            return fills.FillState(pnl.ExecutionConfig().latency_ms, chain.settings.bars.interval_ms,
                                   chain.settings.bars.max_gap_bars)

        _, ref = drive(fills.step, fresh(), chain.events)
        return fills.step, fresh, chain.events, ref
    if name == "signals":  # the join's output in order: scored forecasts, then those issued
        from operators import signals

        scfg = signals.SignalConfig()
        _, ref = drive(signals.step, signals.SignalState(scfg), chain.join_out)
        return signals.step, lambda: signals.SignalState(scfg), chain.join_out, ref
    if name == "pnl":
        from operators import pnl

        items = pnl_inputs(chain)
        pcfg, iv = pnl.ExecutionConfig(), chain.settings.bars.interval_ms
        _, ref = drive(pnl.step, pnl.PnlState(pcfg, iv), items)
        return pnl.step, lambda: pnl.PnlState(pcfg, iv), items, ref
    if name == "sanity":
        from operators import sanity

        items = sanity_items(chain.events)
        sane = sanity.SanityConfig()
        _, ref = drive(sanity.step, sanity.SanityState(sane), items)
        return sanity.step, lambda: sanity.SanityState(sane), items, ref
    if name == "maker":  # the fixed quoting strategy over the same events: its own book, resting orders, fills
        from operators import maker

        mcfg = maker.MakerConfig()
        _, ref = drive(maker.step, maker.QuoterState(mcfg), chain.events)
        return maker.step, lambda: maker.QuoterState(mcfg), chain.events, ref
    if name == "orderbook":  # the depth diffs and REST snapshot of the same recordings
        book, ref = book_case(chain.paths, "usdm" if chain.instrument.endswith("-PERP") else "spot")
        cfg = orderbook.OrderBookConfig()
        return orderbook.step, lambda: orderbook.OrderBookState(cfg), list(book), ref
    if name == "owner":  # the recordings' bars, claimed by their files in turn, as two partitions would
        from operators import owner

        parts = [Path(p).name for p in chain.paths]
        items = [(parts[(i // 50) % len(parts)], b) for i, b in enumerate(chain.bars)]
        _, ref = drive(owner.step, owner.OwnerState(), items)
        return owner.step, owner.OwnerState, items, ref
    if name == "cross":  # the chain's rows lead another real instrument's over the same time (spot: ETHUSDT of the
        # same days; perpetual: the spot market of the same day), the leader's rows from 8 bars behind the
        # follower's to 8 ahead and back (a turn every 32 bars), each instrument's in its own order
        import heapq

        from core.events import Bar
        from operators import cross

        if chain.instrument.endswith("-PERP"):
            other = [Path(chain.paths[-1]).parent.parent / "spot" / "btcusdt_20230405.dat.gz"]
        else:
            other = [Path(p).with_name(Path(p).name.replace("btcusdt", "ethusdt")) for p in chain.paths]
        by_key, _, _ = parse_paths(other)
        (follower, fevents), = by_key.items()
        _, fbars = drive(bars.step, bars.BarState(chain.settings.bars), fevents)
        _, frows = drive(features.step, features.FeatureState(chain.settings.features),
                         [b for b in fbars if type(b) is Bar])
        ccfg = cross.CrossConfig(pairs=(f"{chain.instrument}->{follower}",))
        iv = frows[0].interval

        def turn(it) -> tuple:
            lead = type(it) is cross.LeaderRow
            k = (it.row if lead else it).ts_end // iv
            shift = abs(k % 32 - 16) - 8 if lead else 0
            return (k + shift, k % 2 != lead)

        items = list(heapq.merge([cross.LeaderRow(follower, r) for r in chain.rows], frows, key=turn))
        _, ref = drive(cross.step, cross.CrossState(ccfg), items)
        return cross.step, lambda: cross.CrossState(ccfg), items, ref
    s = chain.settings
    return {
        "bars": (bars.step, lambda: bars.BarState(s.bars), chain.events,
                 drive(bars.step, bars.BarState(s.bars), chain.events)[1]),
        "depth": (depth.step, lambda: depth.DepthState(s.bars, s.features.depth), chain.events, chain.bar_out),
        "features": (features.step, lambda: features.FeatureState(s.features), chain.bars, chain.rows),
        "forecast": (forecast.step, lambda: forecast.JoinState(s.forecast), chain.rows, chain.join_out),
        "metrics": (metrics.step, metrics.MetricsState, chain.forecasts, chain.metrics),
    }[name]


def sanity_items(events: list) -> list:
    """The real events, with implausible copies and duplicates of some of them in between, and the aggTrades of
    some trades (skipped: the instrument has passed on trades): the sanity checks' case."""
    import msgspec

    from core.events import Quote, Trade

    items = []
    for i, e in enumerate(events):
        items.append(e)
        if i % 997 == 500 and type(e) is Quote:  # out of the band, then stamped an hour ahead
            items.append(msgspec.structs.replace(e, bid=e.bid * 1.5, ask=e.ask * 1.5))
            items.append(msgspec.structs.replace(e, ts_recv=e.ts_recv + 3600 * 10**9))
        elif i % 997 == 500 and type(e) is Trade:  # a subnormal price (an id of its own: not a duplicate)
            items.append(msgspec.structs.replace(e, price=1e-320, trade_id=e.trade_id + 10**9))
        elif i % 499 == 300 and type(e) is Trade:  # the same trade again
            items.append(e)
        elif i % 499 == 100 and type(e) is Trade:  # its aggTrade
            items.append(msgspec.structs.replace(e, agg=True, trade_id=e.trade_id - 10**9))
    return items


def _chunk_case(name: str, chain) -> tuple:
    """:func:`operator_case` of ``name`` on the chunk path (the same recordings)."""
    from core.events import BookSnapshot, DepthUpdate
    from operators import depth, maker, orderbook, sanity

    events = chunk_events(chain.paths)
    s = chain.settings
    if name == "orderbook":
        cfg = orderbook.OrderBookConfig(compiled=True)
        items = [e for e in events if type(e) is DepthUpdate or type(e) is BookSnapshot]
        return orderbook.step, lambda: orderbook.OrderBookState(cfg), items, drive(
            orderbook.step, orderbook.OrderBookState(cfg), items)[1]
    if name == "depth":
        return depth.step, lambda: depth.DepthState(s.bars, s.features.depth, True), events, drive(
            depth.step, depth.DepthState(s.bars, s.features.depth, True), events)[1]
    if name == "maker":
        mcfg = maker.MakerConfig()
        return maker.step, lambda: maker.QuoterState(mcfg, compiled=True), events, drive(
            maker.step, maker.QuoterState(mcfg, compiled=True), events)[1]
    if name == "sanity":
        sane = sanity.SanityConfig()
        items = sanity_items(events)
        return sanity.step, lambda: sanity.SanityState(sane), items, drive(
            sanity.step, sanity.SanityState(sane), items)[1]
    raise KeyError(f"no chunk-path case of operator {name}")


def replicate(src: Path, dest: Path, copies: int) -> list[Path]:
    """Copies of the recordings under ``src`` with their symbols renamed, for a set of more instruments.

    Copy ``k`` of a recording of ``btcusdt`` holds ``BTC<k>USDT`` (stream names
    ``btc<k>usdt@...`` and the ``"s"`` field of the messages), under
    ``dest/<market>/``: ``copies`` times the instruments and ticks of ``src``,
    each copy the real recording's ticks under another name. Files already
    there are kept (the set is made once per ``dest``). Returns the files.
    """
    out: list[Path] = []
    for path in sorted(Path(src).rglob("*.gz")):
        sym = path.name.split("_", 1)[0]  # btcusdt_20240808.gz -> btcusdt
        data = None
        for k in range(copies):
            new = f"{sym[:-4]}{k}{sym[-4:]}"  # btcusdt -> btc0usdt
            target = dest / path.parent.name / path.name.replace(sym, new, 1)
            out.append(target)
            if target.exists():
                continue
            if data is None:
                with gzip.open(path, "rb") as f:
                    data = f.read()
            renamed = data.replace(f"{sym}@".encode(), f"{new}@".encode()).replace(
                f'"s":"{sym.upper()}"'.encode(), f'"s":"{new.upper()}"'.encode())
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            with gzip.open(tmp, "wb", compresslevel=1) as f:
                f.write(renamed)
            tmp.rename(target)
    return out

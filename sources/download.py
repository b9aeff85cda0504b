"""Which Binance public-data archives cover a date range (pure, no I/O).

Binance publishes daily and monthly zip archives of trades, aggregated trades
and klines at https://data.binance.vision, laid out as::

    {base}/data/spot/{daily|monthly}/{kind}/{SYMBOL}/[{interval}/]{name}.zip
    {base}/data/futures/um/{daily|monthly}/...                (USD-M futures)
    {base}/data/futures/cm/{daily|monthly}/...                (COIN-M futures)

where ``name`` is ``{SYMBOL}-{kind}-{YYYY-MM-DD|YYYY-MM}`` for trades and
aggTrades and ``{SYMBOL}-{interval}-{YYYY-MM-DD|YYYY-MM}`` for klines. Every
archive has a sibling ``{name}.zip.CHECKSUM`` holding ``<sha256>  {name}.zip``.

:func:`plan` turns an inclusive date range into :class:`Archive` descriptors:
one monthly archive for every calendar month that lies wholly inside the
range, daily archives for the remaining days. An archive is stored locally at
:attr:`Archive.path` (the URL path without the leading ``data/``), a name and
a place that :func:`sources.files.describe` reads, market included.

The downloading itself (HTTP, resume, checksums on disk) is in
:mod:`sources.download_io`; its settings (``TICKLET_DOWNLOAD__*``) are
:class:`DownloadConfig`.

Examples
--------
>>> [a.name for a in plan("BTCUSDT", "klines", "2025-05-30", "2025-07-02", interval="1m")]
... # doctest: +NORMALIZE_WHITESPACE
['BTCUSDT-1m-2025-05-30.zip', 'BTCUSDT-1m-2025-05-31.zip', 'BTCUSDT-1m-2025-06.zip',
 'BTCUSDT-1m-2025-07-01.zip', 'BTCUSDT-1m-2025-07-02.zip']
>>> from sources.files import describe
>>> for symbol, market in (("BTCUSDT", "usdm"), ("BTCUSD_PERP", "coinm")):
...     a = plan(symbol, "trades", "2024-08-08", "2024-08-08", market=market)[0]
...     s = describe(a.path)
...     print(a.path, s.fmt, s.market, s.symbol)
futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2024-08-08.zip trades usdm BTCUSDT
futures/cm/daily/trades/BTCUSD_PERP/BTCUSD_PERP-trades-2024-08-08.zip trades coinm BTCUSD_PERP
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.config import url as check_url
from core.events import coinm_pair

__all__ = ["BASE_URL", "INTERVALS", "KINDS", "MARKETS", "Archive", "DownloadConfig", "parse_checksum", "parse_date",
           "plan"]

#: Binance's public-data host.
BASE_URL = "https://data.binance.vision"
#: Archive kinds that :mod:`sources.files` can read.
KINDS = ("trades", "aggTrades", "klines")
#: Markets, and their directory under ``data/``.
MARKETS = {"spot": "spot", "usdm": "futures/um", "coinm": "futures/cm"}
#: Kline intervals Binance publishes that ticklet reads (``1mo`` is not a
#: fixed length, so it is left out; ``1s`` exists for spot only).
INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")

_SYMBOL_RE = re.compile(r"^[A-Z0-9]+(?:_[A-Z0-9]+)?$")  # delivery and COIN-M contracts have "_"
_CHECKSUM_RE = re.compile(r"^\s*([0-9a-fA-F]{64})\s+\*?(\S+)\s*$")


@dataclass(frozen=True)
class Archive:
    """One Binance archive: what it holds and where it lives.

    Parameters
    ----------
    market : str
        ``"spot"``, ``"usdm"`` (USD-M futures) or ``"coinm"`` (COIN-M futures).
    kind : str
        ``"trades"``, ``"aggTrades"`` or ``"klines"``.
    symbol : str
        Upper-case symbol, e.g. ``"BTCUSDT"``.
    period : str
        ``"daily"`` or ``"monthly"``.
    date : str
        ``YYYY-MM-DD`` (daily) or ``YYYY-MM`` (monthly).
    interval : str or None
        Kline interval (``"1m"``...), ``None`` for trades.

    Examples
    --------
    >>> a = Archive("spot", "klines", "BTCUSDT", "monthly", "2025-06", "1m")
    >>> a.name
    'BTCUSDT-1m-2025-06.zip'
    >>> a.url("https://data.binance.vision/")
    'https://data.binance.vision/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-06.zip'
    >>> a.checksum_url("http://127.0.0.1:8000")
    'http://127.0.0.1:8000/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-06.zip.CHECKSUM'
    >>> a.label
    'BTCUSDT spot klines 1m 2025-06 (monthly)'
    """

    market: str
    kind: str
    symbol: str
    period: str
    date: str
    interval: Optional[str] = None

    @property
    def name(self) -> str:
        """File name, e.g. ``BTCUSDT-trades-2024-08-08.zip``."""
        return f"{self.symbol}-{self.interval if self.kind == 'klines' else self.kind}-{self.date}.zip"

    @property
    def path(self) -> str:
        """Relative path (``/``-separated), both under ``{base}/data/`` and locally."""
        parts = [MARKETS[self.market], self.period, self.kind, self.symbol]
        if self.kind == "klines":
            parts.append(str(self.interval))
        return "/".join(parts + [self.name])

    @property
    def label(self) -> str:
        """Human description for messages: symbol, market, kind, date."""
        kind = f"klines {self.interval}" if self.kind == "klines" else self.kind
        return f"{self.symbol} {self.market} {kind} {self.date} ({self.period})"

    def url(self, base: str = BASE_URL) -> str:
        """The archive's URL under ``base``."""
        return f"{base.rstrip('/')}/data/{self.path}"

    def checksum_url(self, base: str = BASE_URL) -> str:
        """The URL of the archive's ``.CHECKSUM`` file."""
        return self.url(base) + ".CHECKSUM"


def parse_date(text: str | dt.date) -> dt.date:
    """A ``YYYY-MM-DD`` date.

    >>> parse_date("2024-08-08")
    datetime.date(2024, 8, 8)
    >>> parse_date("08/08/2024")
    Traceback (most recent call last):
    ...
    ValueError: bad date '08/08/2024': expected YYYY-MM-DD
    """
    if isinstance(text, dt.date):
        return text
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"bad date {text!r}: expected YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(text)
    except ValueError as ex:
        raise ValueError(f"bad date {text!r}: {ex}") from None


def _month_end(year: int, month: int) -> dt.date:
    return dt.date(year, month, calendar.monthrange(year, month)[1])


def plan(symbol: str, kind: str, start: str | dt.date, end: str | dt.date, market: str = "spot",
         interval: Optional[str] = None) -> list[Archive]:
    """The archives that cover ``start`` .. ``end`` (both inclusive), in date order.

    A calendar month wholly inside the range is one monthly archive; the days
    of partial months at either end are daily archives.

    Parameters
    ----------
    symbol : str
        Symbol, any case (``btcusdt`` becomes ``BTCUSDT``).
    kind : str
        One of :data:`KINDS`.
    start, end : str or datetime.date
        First and last day, ``YYYY-MM-DD``.
    market : str
        ``"spot"``, ``"usdm"`` or ``"coinm"`` (whose symbols are COIN-M
        contracts', ``BTCUSD_PERP``, and no other market's are).
    interval : str, optional
        Kline interval (one of :data:`INTERVALS`); required for klines and
        refused otherwise.

    Returns
    -------
    list of Archive

    Raises
    ------
    ValueError
        On a bad symbol, kind, market, interval or date range.

    Examples
    --------
    >>> [(a.period, a.date) for a in plan("ethusdt", "aggTrades", "2024-01-30", "2024-03-01")]
    [('daily', '2024-01-30'), ('daily', '2024-01-31'), ('monthly', '2024-02'), ('daily', '2024-03-01')]
    >>> [a.date for a in plan("BTCUSDT", "trades", "2024-02-01", "2024-02-29")]  # leap year: whole month
    ['2024-02']
    >>> days = [a.date for a in plan("BTCUSDT", "trades", "2024-02-01", "2024-02-28")]
    >>> len(days), days[0], days[-1]  # a month not whole: 28 daily archives
    (28, '2024-02-01', '2024-02-28')
    >>> [a.date for a in plan("BTCUSDT", "trades", "2023-12-01", "2024-01-31")]
    ['2023-12', '2024-01']
    >>> plan("BTCUSDT", "klines", "2024-01-01", "2024-01-01")
    Traceback (most recent call last):
    ...
    ValueError: klines need an interval (one of 1s, 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w)
    >>> plan("BTCUSDT", "trades", "2024-01-02", "2024-01-01")
    Traceback (most recent call last):
    ...
    ValueError: start 2024-01-02 is after end 2024-01-01
    >>> plan("BTCUSD_PERP", "trades", "2024-01-01", "2024-01-01", market="usdm")
    Traceback (most recent call last):
    ...
    ValueError: BTCUSD_PERP is a COIN-M contract: --market coinm
    """
    symbol = symbol.upper()
    if not _SYMBOL_RE.match(symbol):
        raise ValueError(f"bad symbol {symbol!r}: expected letters and digits (and _ for a contract), e.g. BTCUSDT")
    if kind not in KINDS:
        raise ValueError(f"bad kind {kind!r}: expected one of {', '.join(KINDS)}")
    if market not in MARKETS:
        raise ValueError(f"bad market {market!r}: expected one of {', '.join(MARKETS)}")
    if (coinm_pair(symbol) is not None) != (market == "coinm"):
        raise ValueError(f"{symbol} is a COIN-M contract: --market coinm" if market != "coinm" else
                         f"{symbol} is not a COIN-M contract (BTCUSD_PERP, BTCUSD_250328): --market spot or usdm")
    if kind == "klines":
        if interval is None:
            raise ValueError(f"klines need an interval (one of {', '.join(INTERVALS)})")
        if interval not in INTERVALS:
            raise ValueError(f"bad kline interval {interval!r}: expected one of {', '.join(INTERVALS)}")
        if interval == "1s" and market != "spot":
            raise ValueError("1s klines exist for spot only")
    elif interval is not None:
        raise ValueError(f"an interval applies to klines only, not to {kind}")
    first, last = parse_date(start), parse_date(end)
    if first > last:
        raise ValueError(f"start {first} is after end {last}")
    out: list[Archive] = []
    day = first
    while day <= last:
        month_end = _month_end(day.year, day.month)
        if day.day == 1 and month_end <= last:
            out.append(Archive(market, kind, symbol, "monthly", f"{day:%Y-%m}", interval))
            day = month_end + dt.timedelta(days=1)
        else:
            out.append(Archive(market, kind, symbol, "daily", f"{day:%Y-%m-%d}", interval))
            day += dt.timedelta(days=1)
    return out


def parse_checksum(text: str, name: Optional[str] = None) -> str:
    r"""The sha256 (lower-case hex) in a ``.CHECKSUM`` file's text.

    The text is ``<sha256hex>  <file name>`` (``sha256sum``'s format; a ``*``
    before the name, binary mode, is accepted). With ``name``, the file name
    in it must be ``name``.

    Raises
    ------
    ValueError
        When the text is not one such line, or names another file.

    Examples
    --------
    >>> h = "a3" * 32
    >>> parse_checksum(h.upper() + "  BTCUSDT-1m-2025-06.zip\n", "BTCUSDT-1m-2025-06.zip") == h
    True
    >>> parse_checksum(h + " *BTCUSDT-1m-2025-06.zip") == h
    True
    >>> parse_checksum(h + "  BTCUSDT-1m-2025-05.zip", "BTCUSDT-1m-2025-06.zip")
    Traceback (most recent call last):
    ...
    ValueError: checksum file is for 'BTCUSDT-1m-2025-05.zip', not 'BTCUSDT-1m-2025-06.zip'
    >>> parse_checksum("<html>Not found</html>")
    Traceback (most recent call last):
    ...
    ValueError: not a sha256 checksum line: '<html>Not found</html>'
    """
    m = _CHECKSUM_RE.match(text)
    if not m:
        raise ValueError(f"not a sha256 checksum line: {text[:80]!r}")
    if name is not None and m[2] != name:
        raise ValueError(f"checksum file is for {m[2]!r}, not {name!r}")
    return m[1].lower()


class DownloadConfig(BaseModel):
    """Binance's public-data archives (``ticklet download``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(BASE_URL,
        description="Server of the archives (``--base-url`` overrides).")
    dir: Path = Field(Path("data/binance"),
        description="Directory the archives are stored under, in Binance's layout (``--out`` overrides).")
    retries: int = Field(5, ge=0,
        description="Retries of a transient failure (connection error, timeout, HTTP 5xx or 429), per request.")
    backoff_s: float = Field(1.0, ge=0,
        description="First retry delay in seconds; doubles with every retry, at most 60 s.")
    timeout_s: float = Field(30.0, gt=0, description="Connect and read timeout of each HTTP request, in seconds.")

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> Optional[str]:
        return check_url(v, ("http", "https"))

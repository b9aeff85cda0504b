r"""The symbol tables: what a Binance symbol may look like, and the COIN-M contract sizes.

Pure, no I/O; this module imports nothing of ``sources``.

A **symbol** is 2 to 20 characters, each an upper-case ASCII letter, an
ASCII digit, ``_`` (delivery contracts: ``BTCUSDT_250328``; COIN-M
contracts: ``BTCUSD_PERP``, ``BTCUSD_211231``) or a CJK
ideograph (U+3400-U+4DBF, U+4E00-U+9FFF: since 2025 Binance lists a few
symbols such as ``币安人生USDT``). Binance documents spot symbols as
``^[A-Z0-9-_.]{1,20}$``; no listed symbol uses ``-`` or ``.``, and ``-``
would collide with ticklet's ``-PERP`` suffix, so neither is accepted. Empty
names, control and format characters (NUL, right-to-left overrides), spaces,
lower-case and other scripts' letters (Cyrillic look-alikes of Latin
capitals) are not symbols. Stream names spell the symbol in lower case
(``btcusdt@trade``); :func:`symbol_of_stream` reads it back, upper-cased
(and :func:`sources.wire.stream_symbol` finds it in a message's bytes).

COIN-M quantities are **contracts** of a fixed USD value, not coins:
:func:`coinm_contract` gives a COIN-M symbol's contract size
(:data:`COINM_CONTRACT_USD`), with which the parser converts them to coins.

Examples
--------
>>> [valid_symbol(s) for s in ("BTCUSDT", "1000SATSUSDT", "BTCUSDT_250328", "币安人生USDT")]
[True, True, True, True]
>>> [valid_symbol(s) for s in ("", "B", "btcusdt", "\x00BTCUSDT", "BTC\u202eUSDT", "ВТСUSDT", "BTC-PERP")]
[False, False, False, False, False, False, False]
>>> symbol_of_stream("btcusdt"), symbol_of_stream("\x00btc")
('BTCUSDT', None)
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Optional, Union

from core.events import coinm_pair

__all__ = ["COINM_CONTRACT_USD", "SYMBOL_PATTERN", "coinm_contract", "symbol_of_stream", "valid_symbol"]

_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
#: A Binance symbol (see the module docstring).
SYMBOL_PATTERN = re.compile(f"[A-Z0-9_{_CJK}]{{2,20}}")
#: The symbol of a stream name as Binance spells it (lower case).
_STREAM_SYMBOL = re.compile(f"[A-Za-z0-9_{_CJK}]{{2,20}}")


def valid_symbol(symbol: str) -> bool:
    r"""Whether ``symbol`` is a Binance symbol as its messages' ``s`` field spells it (upper case).

    >>> valid_symbol("ETHUSDT"), valid_symbol("ETHUSDT\n")
    (True, False)
    """
    return SYMBOL_PATTERN.fullmatch(symbol) is not None


def symbol_of_stream(name: str) -> Optional[str]:
    """The upper-cased symbol of a stream name's symbol part (``btcusdt`` -> ``BTCUSDT``), or None if it cannot be one.

    >>> symbol_of_stream("btcusdt"), symbol_of_stream("btcußdt"), symbol_of_stream("")
    ('BTCUSDT', None, None)
    """
    return name.upper() if _STREAM_SYMBOL.fullmatch(name) else None


#: The USD value of one COIN-M contract, by pair: the ``contractSize`` of
#: every pair in Binance's ``/dapi/v1/exchangeInfo`` of 2021-07-21 (kept in
#: cryptofeed's sample data, see tests/data/NOTICE.md): 100 USD for BTCUSD,
#: 10 USD for every other pair. A COIN-M symbol of another pair is refused
#: (:func:`coinm_contract`) rather than read with a guessed size.
COINM_CONTRACT_USD = MappingProxyType({
    "BTCUSD": 100.0,
    **dict.fromkeys(("ADAUSD", "BCHUSD", "BNBUSD", "DOGEUSD", "DOTUSD", "EGLDUSD", "EOSUSD", "ETCUSD", "ETHUSD",
                     "FILUSD", "LINKUSD", "LTCUSD", "THETAUSD", "TRXUSD", "UNIUSD", "XLMUSD", "XRPUSD"), 10.0),
})


def coinm_contract(symbol: str, market: str) -> Union[float, str]:
    """The USD value of one contract of ``symbol`` read in a ``market`` input, or why the symbol cannot be read.

    0.0 for a linear instrument (spot, USD-M: quantities are coins), the
    contract's size for a COIN-M contract (the symbol says so, whatever the
    market), or why the symbol cannot be read (a str).

    >>> [coinm_contract(*a) for a in (("BTCUSD_PERP", "coinm"), ("ETHUSD_210924", "usdm"), ("BTCUSDT", "spot"))]
    [100.0, 10.0, 0.0]
    >>> print(coinm_contract("SOLUSD_PERP", "coinm"))
    unknown COIN-M contract size: SOLUSD_PERP (ticklet knows those of 18 pairs: sources/symbols.py)
    >>> coinm_contract("BTCUSDT", "coinm")
    'not a COIN-M symbol: BTCUSDT (COIN-M symbols are <COIN>USD_PERP or <COIN>USD_<YYMMDD>)'
    """
    pair = coinm_pair(symbol)
    if pair is None:
        if market == "coinm":
            return f"not a COIN-M symbol: {symbol} (COIN-M symbols are <COIN>USD_PERP or <COIN>USD_<YYMMDD>)"
        return 0.0
    usd = COINM_CONTRACT_USD.get(pair)
    if usd is None:
        return f"unknown COIN-M contract size: {symbol} (ticklet knows those of {len(COINM_CONTRACT_USD)} pairs: " \
            "sources/symbols.py)"
    return usd

"""What a Binance symbol may look like, and where a message names its stream
(pure, no I/O).

A **symbol** is 2 to 20 characters, each an upper-case ASCII letter, an
ASCII digit, ``_`` (USD-M delivery contracts: ``BTCUSDT_250328``) or a CJK
ideograph (U+3400-U+4DBF, U+4E00-U+9FFF: since 2025 Binance lists a few
symbols such as ``币安人生USDT``). Binance documents spot symbols as
``^[A-Z0-9-_.]{1,20}$``; no listed symbol uses ``-`` or ``.``, and ``-``
would collide with ticklet's ``-PERP`` suffix, so neither is accepted. Empty
names, control and format characters (NUL, right-to-left overrides), spaces,
lower-case and other scripts' letters (Cyrillic look-alikes of Latin
capitals) are not symbols. Stream names spell the symbol in lower case
(``btcusdt@trade``); :func:`stream_symbol` reads it back, upper-cased.

Examples
--------
>>> [valid_symbol(s) for s in ("BTCUSDT", "1000SATSUSDT", "BTCUSDT_250328", "币安人生USDT")]
[True, True, True, True]
>>> [valid_symbol(s) for s in ("", "B", "btcusdt", "\\x00BTCUSDT", "BTC\\u202eUSDT", "ВТСUSDT", "BTC-PERP")]
[False, False, False, False, False, False, False]
>>> stream_symbol(b'{"stream": "btcusdt@trade", "data": {}}')
'BTCUSDT'
>>> stream_symbol(b'{"data":{},"stream":"\\x00btc@trade"}') is None
True
"""

from __future__ import annotations

import re
from typing import Optional

__all__ = ["SYMBOL_PATTERN", "stream_symbol", "valid_symbol"]

_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
#: A Binance symbol (see the module docstring).
SYMBOL_PATTERN = re.compile(f"[A-Z0-9_{_CJK}]{{2,20}}")
#: The symbol of a stream name as Binance spells it (lower case).
_STREAM_SYMBOL = re.compile(f"[A-Za-z0-9_{_CJK}]{{2,20}}")
#: ``"stream": "<symbol>@`` anywhere, with the whitespace JSON allows around the colon.
_STREAM_KEY = re.compile(rb'"stream"[ \t\r\n]*:[ \t\r\n]*"([^"\\@]{1,80})@')


def valid_symbol(symbol: str) -> bool:
    """Whether ``symbol`` is a Binance symbol as its messages' ``s`` field
    spells it (upper case).

    >>> valid_symbol("ETHUSDT"), valid_symbol("ETHUSDT\\n")
    (True, False)
    """
    return SYMBOL_PATTERN.fullmatch(symbol) is not None


def symbol_of_stream(name: str) -> Optional[str]:
    """The upper-cased symbol of a stream name's symbol part
    (``btcusdt`` -> ``BTCUSDT``), or None if it cannot be one.

    >>> symbol_of_stream("btcusdt"), symbol_of_stream("btcußdt"), symbol_of_stream("")
    ('BTCUSDT', None, None)
    """
    return name.upper() if _STREAM_SYMBOL.fullmatch(name) else None


def stream_symbol(message: bytes) -> Optional[str]:
    """The upper-cased symbol of a combined-stream message's stream name,
    read from its bytes whatever the JSON's layout (the first
    ``"stream": "<symbol>@`` found), or None where there is none or it
    cannot be a symbol. For naming dead letters and Kafka keys; the parser
    decodes the stream name exactly.

    >>> stream_symbol(b'{"stream":"ethusdt@depth@100ms","data":{}}'), stream_symbol(b'not json')
    ('ETHUSDT', None)
    """
    m = _STREAM_KEY.search(message)
    if m is None:
        return None
    try:
        name = m.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return symbol_of_stream(name)

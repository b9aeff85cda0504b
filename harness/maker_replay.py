"""ticklet's side of the maker-fill comparison with hftbacktest (``harness/hftbacktest_ref.py``).

The same fixed strategy on the same recordings, run by ticklet's own quoting
step (:func:`operators.maker.step`: its checked order book, and the exchange
side of resting orders): at every whole second of the receive clock, cancel
the resting orders, then quote one lot at the best bid and at the best ask
of the book as received by then.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from harness.realdata import drive, parse_paths
from operators import maker


def quote_every_second(paths: Sequence[str | Path], config: maker.MakerConfig, upto: Optional[int] = None) -> dict:
    """Run the fixed strategy on the first ``upto`` events (all by default).

    Returns its fills (:class:`~operators.maker.MakerFill`), final position,
    the times quotes were replaced and the post-only orders refused.
    """
    (events,) = parse_paths(paths)[0].values()
    st, fills = drive(maker.step, maker.QuoterState(config), events[:upto])
    return {"fills": fills, "position": st.position, "decisions": st.quotes, "refused": st.maker.refused}

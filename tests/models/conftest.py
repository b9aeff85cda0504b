"""What the tests of the window learners share: driving one through the time-travel join while checking
that every example it learns is the window of its own forecast."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import pytest


def _join_checked(rows, name: str, learners: Any, h: int,
                  row_of: Callable[[dict], Optional[list[float]]]) -> tuple[Any, int, int]:
    """Drive ``rows`` through the time-travel join (:func:`operators.forecast.step`) with the learner
    ``name`` alone at horizon ``h``, and check that every example it learns is the window it forecast
    from (rebuilt here from the rows it saw, ``row_of(x)`` each, None for a row it does not read) with
    that forecast's realized return. (the model, examples checked, forecasts expired)."""
    from operators import forecast

    st = forecast.JoinState(forecast.ForecastConfig(horizons=(h,), models=(name,), learners=learners))
    m = st.models[(name, h)]
    c = m.config
    history: list[list[float]] = []
    windows: dict[int, np.ndarray] = {}  # ts_forecast -> the window forecast from
    checked = expired = 0
    for r in rows:
        before = m.n_labelled
        st, out = forecast.step(st, r)
        expired += sum(o.n for o in out if type(o).__name__ == "Count" and o.name == "forecasts_expired")
        done = [o for o in out if type(o).__name__ == "ForecastRecord"]
        assert len(done) <= 1
        if m.n_labelled > before:
            win, y = m.memory[-1]
            assert np.array_equal(win, windows[done[0].ts_forecast]), done[0].ts_forecast
            assert y == done[0].realized_return
            checked += 1
        row = row_of(r.x) if r.ready else None
        if row is not None:
            history.append(row)
            if len(history) >= c.window:
                win = np.nan_to_num(np.array(history[-c.window:]), nan=0.0)
                windows[r.ts_end] = np.clip(win, -c.clip_x, c.clip_x).astype(np.float32)
    return m, checked, expired


@pytest.fixture
def join_checked() -> Callable[..., tuple[Any, int, int]]:
    """:func:`_join_checked`."""
    return _join_checked

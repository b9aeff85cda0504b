"""Cross-asset features: a follower's feature row gains its leaders' lagged features, causally.

Settings name ``LEADER->FOLLOWER`` pairs (``BTCUSDT-PERP->ETHUSDT-PERP``, or
both ``BTCUSDT->BTCUSDT-PERP`` and ``BTCUSDT-PERP->BTCUSDT`` for spot and
perpetual). The step runs per follower: its events are the follower's own
:class:`~core.events.FeatureRow`, as they are, and a :class:`LeaderRow` for
every feature row of each of its leaders (the router copies a leader's rows
to each of its followers' keys). Leader rows are the leader's own rows, as
:mod:`operators.features` makes them, never rows this step enriched, so
pairs both ways do not feed on each other.

What a follower row gains
-------------------------
The follower row ending at ``T`` gains, for each leader ``L`` of the
follower (in the order of ``pairs``), each lag ``k`` of ``lags`` and each
name ``f`` of ``features``, the key ``lead_<L>_<f>_l<k>``
(``lead_BTCUSDT-PERP_ret_1_l0``): the value of ``f`` in the row of ``L``
whose ``ts_end`` is exactly ``T - k * interval`` (``interval``: the follower
row's). A leader bar ending at ``T`` holds only leader data received before
``T``, so lag 0 is as causal as the follower's own features. The gained keys
go into a new ``x`` (the follower's keys first); ``ready``, ``reset`` and the
rest stay the follower's.

A value that is not there is absent, never zero: a name missing from the
leader row is simply absent, and a leader row missing at ``T - k *
interval`` (the leader's series restarted after a long gap, or started after
it) leaves every key of that leader and lag absent; the row is then followed
by ``Count("cross_missing", n)``, ``n`` the (leader, lag) slots it lacks.

When a row is emitted: arrival order does not matter
-----------------------------------------------------
Leader and follower rows come in an order that depends on workers and
timing; each instrument's own rows come in their order. The follower row
ending at ``T`` is held until, for **every** leader, a row with ``ts_end >=
T`` has arrived: the leader has progressed past ``T``, and as its bars are
emitted for every interval (empty ones carried forward), every row it will
ever have at or before ``T`` is in hand. Its gained keys are then fixed by
the data alone, and rows are emitted in follower order, each with its
counts: the outputs are the same whatever the interleaving, and a cut of
both streams at any time ``t`` gives a prefix of them.

The two bounds are the one place where arrival order can matter:

- more than ``max_wait`` follower rows held (a leader stalled or absent):
  the oldest is emitted with the leader keys it can have (those of leader
  rows already in hand; the others count as missing) and
  ``Count("cross_leader_late", 1)``;
- a leader more than ``max_wait`` bars ahead of the follower: its kept rows
  are bounded by ``max_wait + max(lags) + 1``, the oldest beyond are dropped
  and counted ``cross_follower_late``.

Within ``max_wait`` bars of drift either way the outputs do not depend on
the interleaving.

State and dead letters
----------------------
The state covers one follower: per leader, its progress (the latest
``ts_end`` received) and the feature values (only those of ``features``)
of its rows that a follower row may still need (from the oldest held row,
or the next one, less ``max(lags)`` bars); and the held follower rows. It
is bounded, and made of plain containers and structs (it pickles). A
leader row older than what is kept is ignored; one at or before the
leader's progress (a repeat) is ignored and counted
``cross_leader_stale``. A leader row of a leader that is not one of the
follower's, an event of another follower, or a follower row at or before
the previous one is an :class:`~core.events.ErrorRecord` (stage
``"cross"``) with the reason and the event.

Examples
--------
>>> cfg = CrossConfig(pairs=("BTC->ETH",), features=("ret_1",), lags=(0, 1))
>>> st = CrossState(cfg)
>>> def row(inst, t, r):
...     return FeatureRow(inst, t, 1, 100.0, {"ret_1": r}, True)
>>> st, out = step(st, row("ETH", 1, 0.5))   # held: BTC has not reached 1
>>> out
[]
>>> st, out = step(st, LeaderRow("ETH", row("BTC", 1, 2.0)))
>>> out[0].x, [c.n for c in out[1:]]         # BTC's row at 0 is missing
({'ret_1': 0.5, 'lead_BTC_ret_1_l0': 2.0}, [1])
>>> st, out = step(st, LeaderRow("ETH", row("BTC", 2, 3.0)))  # ahead: kept
>>> st, out = step(st, row("ETH", 2, -0.5))
>>> out[0].x
{'ret_1': -0.5, 'lead_BTC_ret_1_l0': 3.0, 'lead_BTC_ret_1_l1': 2.0}
>>> cfg.leaders_of("ETH"), cfg.followers_of("BTC"), cfg.lead_names("ETH")
(('BTC',), ('ETH',), ('lead_BTC_ret_1_l0', 'lead_BTC_ret_1_l1'))
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Union

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.events import Count, ErrorRecord, FeatureRow, event_json

__all__ = ["STAGE", "CrossConfig", "CrossState", "LeaderRow", "LeaderTrack", "step"]

#: The stage of this step's dead letters.
STAGE = "cross"

Out = Union[FeatureRow, Count, ErrorRecord]


class LeaderRow(msgspec.Struct, frozen=True, gc=False):
    """A leader's feature row, routed to one of its followers' keys.

    ``follower`` is the key it was routed to; ``row`` is the leader's own
    :class:`~core.events.FeatureRow`, its instrument the leader.

    >>> LeaderRow("ETH", FeatureRow("BTC", 1, 1, 100.0, {}, True)).leader
    'BTC'
    """

    follower: str
    row: FeatureRow

    @property
    def leader(self) -> str:
        """The leader: the row's instrument."""
        return self.row.instrument


class CrossConfig(BaseModel):
    """Leader -> follower pairs and the leader features a follower row gains."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pairs: tuple[str, ...] = Field(
        (), description="'LEADER->FOLLOWER' pairs of instruments: the follower's rows gain the leader's lagged "
        "features. Both ways (A->B and B->A) is two pairs.")
    features: tuple[str, ...] = Field(
        ("ret_1", "ret_5", "ofi", "ofi_w", "ofi_int", "depth_imb_5"),
        description="The leader features a follower row gains; a name missing from a leader row is absent.")
    lags: tuple[int, ...] = Field(
        (0, 1, 2), description="Lags in bars: lag k takes the leader row ending k bars before the follower row "
        "(0: the same bar end).")
    max_wait: int = Field(
        600, ge=0, description="Most follower rows held waiting for a late leader (and most bars a leader may run "
        "ahead of the follower): beyond it the oldest is emitted with the leader features in hand.")

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for p in v:
            sides = p.split("->")
            if len(sides) != 2 or not sides[0].strip() or not sides[1].strip():
                raise ValueError(f"a pair is 'LEADER->FOLLOWER', two non-empty instruments, not {p!r}")
            lead, fol = sides[0].strip(), sides[1].strip()
            if lead == fol:
                raise ValueError(f"an instrument cannot lead itself ({p!r})")
            pair = f"{lead}->{fol}"
            if pair in out:
                raise ValueError(f"the pair {pair} is given twice")
            out.append(pair)
        return tuple(out)

    @field_validator("features")
    @classmethod
    def _features(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or any(not f for f in v) or len(set(v)) != len(v):
            raise ValueError("features are one or more distinct, non-empty feature names")
        return v

    @field_validator("lags")
    @classmethod
    def _lags(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(k < 0 for k in v) or len(set(v)) != len(v):
            raise ValueError("lags are one or more distinct bar counts >= 0")
        return v

    def _split(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in (p.split("->") for p in self.pairs)]

    def leaders_of(self, follower: str) -> tuple[str, ...]:
        """The leaders of ``follower``, in the order of ``pairs`` (empty: it follows none)."""
        return tuple(a for a, b in self._split() if b == follower)

    def followers_of(self, leader: str) -> tuple[str, ...]:
        """The followers of ``leader``, in the order of ``pairs``: the keys its rows are routed to."""
        return tuple(b for a, b in self._split() if a == leader)

    @property
    def followers(self) -> tuple[str, ...]:
        """Every instrument that follows one, in the order of ``pairs``."""
        return tuple(dict.fromkeys(b for _, b in self._split()))

    def lead_names(self, follower: str) -> tuple[str, ...]:
        """The keys a row of ``follower`` can gain, in their order."""
        return tuple(f"lead_{a}_{f}_l{k}" for a in self.leaders_of(follower) for k in self.lags for f in self.features)


@dataclass(slots=True)
class LeaderTrack:
    """One leader as a follower sees it: its progress and the feature values of its kept rows.

    ``ts`` holds the ``ts_end`` of the kept rows in order; ``values`` maps
    each to the row's values of the configured features.
    """

    progress: Optional[int] = None  # the latest ts_end received
    ts: deque[int] = field(default_factory=deque)
    values: dict[int, dict[str, float]] = field(default_factory=dict)

    def drop_before(self, cutoff: int) -> None:
        """Forget the rows ending before ``cutoff``."""
        ts, values = self.ts, self.values
        while ts and ts[0] < cutoff:
            del values[ts.popleft()]


@dataclass(slots=True)
class CrossState:
    """One follower's leaders and held rows.

    ``follower`` is set by the first event when not given. ``last_ts`` and
    ``interval`` are those of the latest follower row.
    """

    config: CrossConfig
    follower: Optional[str] = None
    leaders: dict[str, LeaderTrack] = field(default_factory=dict)
    held: deque[FeatureRow] = field(default_factory=deque)  # follower rows waiting for their leaders, in order
    last_ts: Optional[int] = None
    interval: int = 0

    def __post_init__(self) -> None:
        if self.follower is not None and not self.leaders:
            self.leaders = {a: LeaderTrack() for a in self.config.leaders_of(self.follower)}


def _dead(reason: str, event: object, inst: str, ts: int) -> ErrorRecord:
    try:
        raw = event_json(event)
    except (TypeError, msgspec.EncodeError):  # not a record: its repr
        raw = repr(event)
    return ErrorRecord(STAGE, reason, raw, inst, ts)


def _emit(st: CrossState, row: FeatureRow, late: bool, out: list[Out]) -> None:
    """Emit ``row`` with the leader features in hand, then its counts."""
    c = st.config
    if not st.leaders:
        out.append(row)
        return
    x = dict(row.x)
    missing = 0
    for name, tr in st.leaders.items():
        for k in c.lags:
            vals = tr.values.get(row.ts_end - k * row.interval)
            if vals is None:
                missing += 1
                continue
            for f in c.features:
                v = vals.get(f)
                if v is not None:
                    x[f"lead_{name}_{f}_l{k}"] = v
    out.append(msgspec.structs.replace(row, x=x))
    if missing:
        out.append(Count("cross_missing", missing))
    if late:
        out.append(Count("cross_leader_late", 1))


def _release(st: CrossState, out: list[Out]) -> None:
    """Emit the held rows every leader has progressed past, then the oldest beyond ``max_wait``."""
    held = st.held
    while held:
        t = held[0].ts_end
        if any(tr.progress is None or tr.progress < t for tr in st.leaders.values()):
            break
        _emit(st, held.popleft(), False, out)
    while len(held) > st.config.max_wait:
        _emit(st, held.popleft(), True, out)


def _prune(st: CrossState) -> None:
    """Forget leader rows no follower row can need any more."""
    if st.last_ts is None:
        return
    first = st.held[0].ts_end if st.held else st.last_ts + 1  # the oldest row held, or the next one
    cutoff = first - max(st.config.lags) * st.interval
    for tr in st.leaders.values():
        tr.drop_before(cutoff)


def step(state: CrossState, event: Union[FeatureRow, LeaderRow]) -> tuple[CrossState, list[Out]]:
    """Take a follower row or a leader row; emit the follower rows now complete, with their counts.

    ``state`` is updated in place and returned.
    """
    st = state
    out: list[Out] = []
    own = type(event) is FeatureRow
    if type(event) is LeaderRow:
        follower, row = event.follower, event.row
    elif type(event) is FeatureRow:
        follower, row = event.instrument, event
    else:
        return st, [_dead(f"not a feature row or a leader row: {type(event).__name__}", event, "", 0)]
    if st.follower is None:
        st.follower = follower
        st.leaders = {a: LeaderTrack() for a in st.config.leaders_of(follower)}
    elif follower != st.follower:
        return st, [_dead(f"an event of follower {follower} at the key of {st.follower}", event, row.instrument,
                          row.ts_end)]
    if own:
        if st.last_ts is not None and row.ts_end <= st.last_ts:
            return st, [_dead(f"a row of {follower} ending at {row.ts_end}, not after its previous one "
                              f"({st.last_ts})", event, follower, row.ts_end)]
        st.held.append(row)
        st.last_ts, st.interval = row.ts_end, row.interval
    else:
        tr = st.leaders.get(row.instrument)
        if tr is None:
            return st, [_dead(f"{row.instrument} is not a leader of {follower} (its leaders: "
                              f"{', '.join(st.leaders) or 'none'})", event, row.instrument, row.ts_end)]
        if tr.progress is not None and row.ts_end <= tr.progress:
            return st, [Count("cross_leader_stale", 1)]
        tr.progress = row.ts_end
        tr.ts.append(row.ts_end)
        tr.values[row.ts_end] = {f: row.x[f] for f in st.config.features if f in row.x}
        cap = st.config.max_wait + max(st.config.lags) + 1
        if len(tr.ts) > cap:
            n = len(tr.ts) - cap
            for _ in range(n):
                del tr.values[tr.ts.popleft()]
            out.append(Count("cross_follower_late", n))
    _release(st, out)
    _prune(st)
    return st, out

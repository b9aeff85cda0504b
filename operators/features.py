"""Market-microstructure and technical features per bar, causal and online.

Every feature at bar ``t`` is a function of bars up to and including ``t``
only. Windows are fixed-size deques; the online scaler is updated with
``x_t`` and then applied to ``x_t`` (its statistics never include later
bars).

Features (returns and prices in basis points of the bar price):

=================  ==========================================================
``ret_<k>``        log return over the last ``k`` bars
``rv``             realized volatility: root sum of squared 1-bar returns
``flow_imb``       trade-flow imbalance of the bar, (buy - sell) / (buy + sell)
``flow_imb_w``     the same over ``flow_window`` bars
``ofi``            Cont-Kukanov-Stoikov L1 order-flow imbalance / mean depth
``ofi_w``          the same over ``flow_window`` bars
``micro_dev``      micro-price minus mid
``spread``         ask minus bid
``book_imb``       top-of-book imbalance (bid_qty - ask_qty) / (sum)
``last_vs_mid``    last trade minus mid (where the last trade hit the book)
``vwap_dev``       bar VWAP minus bar price
``log_volume``     log(1 + volume)
``rsi``            Wilder RSI, rescaled to [-1, 1]
``macd*``          MACD line, signal and histogram
``swt_dev``        SWT-denoised log price minus raw log price
``swt_slope``      change of the denoised last point since the last bar
``swt_e<j>``       log(1 + mean detail energy) of level j (1 = coarsest)
=================  ==========================================================

Depth features, from the order book over the bar (:mod:`operators.depth`),
where the instrument carries depth and ``depth.enabled``; missing (absent
from the row, never zero) while its book is not ready:

===================  ========================================================
``ofi_l<m>``         multi-level OFI of level m (1..L) over the bar / the
                     level's mean depth (Xu, Gould & Howison)
``ofi_int``          integrated OFI: the level OFIs projected on their first
                     principal component (Cont, Cucuringu & Zhang), whose
                     weights (L1-normalized, summing to +1) come from an
                     exponentially weighted covariance of the bars so far,
                     this one included; missing for ``pca_warmup`` bars
``depth_imb_<k>``    depth imbalance (bid - ask) / (bid + ask) of the top k
                     levels, at the bar's end
``depth_b_<d>bp``    log(1 + bid quote notional within d bps of the mid)
``depth_a_<d>bp``    the same on the ask side
``walk_buy``         cost in bps of the mid of buying ``walk_notional``
                     through the book (missing: the book kept is thinner)
``walk_sell``        the same for selling
``book_<e>_<s>``     log(1 + book events e of side s in the bar): e in adds,
                     cancels, changes; s in b (bid), a (ask)
``lob_<f><i>``       with ``depth.book_in_row``, the book itself, level i:
                     ``ap``/``bp`` the ask/bid price in bps from the mid,
                     ``aq``/``bq`` log(1 + size)
===================  ========================================================

Examples
--------
>>> from core.events import Bar
>>> cfg = FeatureConfig(return_lags=(1, 2), vol_window=4, flow_window=2,
...                     rsi_period=3, macd=(2, 4, 2), swt=SWTConfig(window=8, level=1))
>>> st = FeatureState(cfg)
>>> rows = []
>>> for i in range(12):
...     p = 100.0 + (i % 3)
...     b = Bar("X", i, i + 1, p, p, p, p, 1.0, p, p, 1, 0.5, 0.5,
...             p - 0.01, 1.0, p + 0.01, 1.0, 0.0, 1.0, p, 1)
...     st, out = step(st, b)
...     rows += out
>>> [r.ready for r in rows][:9]
[False, False, False, False, False, False, False, True, True]
>>> sorted(rows[-1].x)[:4]
['book_imb', 'flow_imb', 'flow_imb_w', 'last_vs_mid']
"""

from __future__ import annotations

import copy
import functools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.events import Bar, BookStats, FeatureRow
from operators.depth import DepthConfig, book_names
from operators.swt import SWTConfig, denoise_last

__all__ = ["FeatureConfig", "FeatureState", "feature_names", "step", "warm"]

_BPS = 1e4


class FeatureConfig(BaseModel):
    """Feature windows, SWT denoising and online scaling."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    return_lags: tuple[int, ...] = Field((1, 5, 10, 30), description="Lags in bars of the log-return features.")
    vol_window: int = Field(30, ge=2, description="Bars in the realized-volatility window.")
    flow_window: int = Field(10, ge=1, description="Bars in the windowed trade-flow and order-flow imbalances.")
    rsi_period: int = Field(14, ge=2, description="Wilder RSI period in bars.")
    macd: tuple[int, int, int] = Field((12, 26, 9), description="MACD fast, slow and signal EMA spans in bars.")
    swt: SWTConfig = Field(default_factory=SWTConfig, description="Causal SWT denoising of the log price.")
    scaler: Literal["standard", "adaptive", "none"] = Field(
        "standard",
        description="Online feature scaling: running mean/variance ('standard'), exponentially "
        "weighted ('adaptive', River's AdaptiveStandardScaler) or none.")
    scaler_fading: float = Field(
        0.05, gt=0, lt=1,
        description="Fading factor of the adaptive scaler: closer to 1 forgets old bars faster.")
    clip: float = Field(5.0, gt=0, description="Scaled features are clipped to [-clip, clip].")
    depth: DepthConfig = Field(default_factory=DepthConfig,
        description="The order book kept per instrument and its depth features (operators.depth).")
    drop: tuple[str, ...] = Field(
        (), description="Features left out of every row (an ablation): names, or prefixes ending in '*' "
        "(e.g. [\"ofi_l*\", \"walk_buy\"]).")

    @field_validator("return_lags")
    @classmethod
    def _lags(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(lag < 1 for lag in v):
            raise ValueError("lags must be one or more positive bar counts")
        return v

    @field_validator("macd")
    @classmethod
    def _spans(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        fast, slow, _ = v
        if min(v) < 1 or fast >= slow:
            raise ValueError(f"the spans [fast, slow, signal] must be positive, fast below slow (fast={fast}, "
                             f"slow={slow})")
        return v

    @property
    def warmup(self) -> int:
        """Bars before the first complete feature row."""
        fast, slow, sig = self.macd
        return max(max(self.return_lags) + 1, self.vol_window + 1, self.swt.window, slow + sig,
                   self.rsi_period + 1)


def _ema(prev: Optional[float], x: float, span: int) -> float:
    if prev is None:
        return x
    a = 2.0 / (span + 1.0)
    return prev + a * (x - prev)


@dataclass(slots=True)
class LevelPCA:
    """An exponentially weighted mean and covariance of the level-OFI vectors, and their first principal component."""

    n: int
    mean: np.ndarray
    cov: np.ndarray

    def update(self, x: np.ndarray, alpha: float) -> None:
        """Add a vector: ``mean += a d``, ``cov = (1 - a) (cov + a d d')`` with ``d = x - mean``."""
        if self.n == 0:
            self.mean = x.copy()
        else:
            d = x - self.mean
            self.mean += alpha * d
            self.cov = (1.0 - alpha) * (self.cov + alpha * np.outer(d, d))
        self.n += 1

    def weights(self) -> Optional[np.ndarray]:
        """The first principal component, L1-normalized with a positive sum; None where it is not defined."""
        vals, vecs = np.linalg.eigh(self.cov)
        w = vecs[:, -1]
        norm = float(np.abs(w).sum())
        if not vals[-1] > 0.0 or not norm > 0.0:
            return None
        w = w / norm
        return -w if w.sum() < 0.0 else w


@dataclass(slots=True)
class FeatureState:
    """Per-instrument feature windows, indicator recursions and scaler."""

    config: FeatureConfig
    n: int = 0
    logp: deque = field(init=False)
    rets: deque = field(init=False)
    flows: deque = field(init=False)
    ofis: deque = field(init=False)
    avg_gain: float = 0.0
    avg_loss: float = 0.0
    ema_fast: Optional[float] = None
    ema_slow: Optional[float] = None
    macd_signal: Optional[float] = None
    prev_denoised: Optional[float] = None
    scaler: Any = None  # a River scaler (learn_one, transform_one), or None
    pca: Optional[LevelPCA] = None  # of the level OFIs (integrated OFI); kept across gaps, like the scaler

    def __post_init__(self) -> None:
        c = self.config
        self.logp = deque(maxlen=max(max(c.return_lags) + 1, c.swt.window))
        self.rets = deque(maxlen=c.vol_window)
        self.flows = deque(maxlen=c.flow_window)
        self.ofis = deque(maxlen=c.flow_window)
        if self.scaler is None and c.scaler != "none":
            from river import preprocessing  # loaded when a scaler is first built, not with the settings

            if c.scaler == "standard":
                self.scaler = preprocessing.StandardScaler()
            elif c.scaler == "adaptive":
                self.scaler = preprocessing.AdaptiveStandardScaler(fading_factor=c.scaler_fading)

    def restart(self) -> None:
        """Forget the windows after a gap; keep the scaler's statistics."""
        self.n = 0
        for d in (self.logp, self.rets, self.flows, self.ofis):
            d.clear()
        self.avg_gain = self.avg_loss = 0.0
        self.ema_fast = self.ema_slow = self.macd_signal = self.prev_denoised = None


def feature_names(config: FeatureConfig) -> tuple[str, ...]:
    """The names of the features of a row, in their order (as a learner sees them; a model bundle records them).

    >>> feature_names(FeatureConfig(return_lags=(1, 5)))[:3], len(feature_names(FeatureConfig()))
    (('ret_1', 'ret_5', 'rv'), 53)
    >>> len(feature_names(FeatureConfig(depth=DepthConfig(enabled=False))))  # top of the book only
    24
    """
    names = (*(f"ret_{k}" for k in config.return_lags), "rv", "flow_imb", "flow_imb_w", "ofi", "ofi_w",
             "micro_dev", "spread", "book_imb", "last_vs_mid", "vwap_dev", "log_volume", "rsi", "macd",
             "macd_signal", "macd_hist", "swt_dev", "swt_slope", *(f"swt_e{j}" for j in range(1, config.swt.level + 1)),
             *depth_names(config.depth))
    return tuple(n for n in names if not _dropped(n, config.drop)) if config.drop else names


def _dropped(name: str, drop: tuple[str, ...]) -> bool:
    return any(name == d or (d.endswith("*") and name.startswith(d[:-1])) for d in drop)


def depth_names(config: DepthConfig) -> tuple[str, ...]:
    """The names of the depth features, in their order (none where depth is off); a row lacks those missing.

    >>> depth_names(DepthConfig(levels=2, imbalance_levels=(1,), within_bps=(5,)))  # doctest: +NORMALIZE_WHITESPACE
    ('ofi_l1', 'ofi_l2', 'ofi_int', 'depth_imb_1', 'depth_b_5bp', 'depth_a_5bp', 'walk_buy', 'walk_sell',
     'book_adds_b', 'book_adds_a', 'book_cancels_b', 'book_cancels_a', 'book_changes_b', 'book_changes_a')
    """
    if not config.enabled:
        return ()
    ofi, imb, within, book = _depth_keys(config)
    return (*ofi, "ofi_int", *imb, *(n for pair in within for n in pair), "walk_buy", "walk_sell", *_EVENT_NAMES,
            *(book if config.book_in_row else ()))


_EVENT_NAMES = ("book_adds_b", "book_adds_a", "book_cancels_b", "book_cancels_a", "book_changes_b", "book_changes_a")


@functools.lru_cache(maxsize=16)
def _depth_keys(config: DepthConfig) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...],
                                              tuple[str, ...]]:
    """The names of the level OFIs, the depth imbalances, the (bid, ask) depths within bps and the book itself.

    Made once per configuration (a pure memo), not for every bar.
    """
    return (tuple(f"ofi_l{m}" for m in range(1, config.levels + 1)),
            tuple(f"depth_imb_{k}" for k in config.imbalance_levels),
            tuple((f"depth_b_{d:g}bp", f"depth_a_{d:g}bp") for d in config.within_bps),
            book_names(config.levels))


def warm(bundle: FeatureState, config: FeatureConfig) -> FeatureState:
    """A fresh state for ``config`` that keeps a copy of the online scaler of ``bundle`` (a saved state).

    The features its learners were trained on are scaled the same way from
    the first bar. The windows start empty, as after a gap. A scaler of
    another kind is not carried over.

    >>> from core.events import Bar
    >>> old = FeatureState(FeatureConfig())
    >>> for i in range(50):
    ...     p = 100.0 + i % 3
    ...     old, _ = step(old, Bar("X", i, i + 1, p, p, p, p, 1.0, p, p, 1, 0.5, 0.5,
    ...                            p - 0.01, 1.0, p + 0.01, 1.0, 0.0, 1.0, p, 1))
    >>> st = warm(old, FeatureConfig())
    >>> st.n, st.scaler.counts["rv"] == old.scaler.counts["rv"] == 50, st.scaler is old.scaler
    (0, True, False)
    """
    same = bundle.config.scaler == config.scaler and bundle.config.scaler_fading == config.scaler_fading
    pca = getattr(bundle, "pca", None)  # a bundle's state from before depth features has none
    same_pca = pca is not None and len(pca.mean) == config.depth.levels
    return FeatureState(config, scaler=copy.deepcopy(bundle.scaler) if same else None,
                        pca=copy.deepcopy(pca) if same_pca else None)


def _depth_features(st: FeatureState, d: BookStats, x: dict[str, float]) -> None:
    """Add the depth features of a ready book ``d`` to ``x`` (see the module docstring)."""
    c = st.config.depth
    ofi_names, imb_names, within_names, book = _depth_keys(c)
    ofi, level_depth = d.ofi, d.level_depth
    k = len(ofi)
    norm = [o / ld if ld > 0.0 else 0.0 for o, ld in zip(ofi, level_depth, strict=True)]
    x.update(zip(ofi_names, norm, strict=False))  # as many as the book has levels
    if k == c.levels:
        if st.pca is None:
            st.pca = LevelPCA(0, np.zeros(k), np.zeros((k, k)))
        v = np.array(norm)
        st.pca.update(v, 1.0 - 0.5 ** (1.0 / c.pca_halflife))
        if st.pca.n >= c.pca_warmup:
            w = st.pca.weights()
            if w is not None:
                x["ofi_int"] = float(w @ v)
    bq, aq = d.bid_qty, d.ask_qty
    for n, name in zip(c.imbalance_levels, imb_names, strict=True):
        if n <= len(bq) and n <= len(aq):
            b, a = sum(bq[:n]), sum(aq[:n])
            x[name] = (b - a) / (b + a)
    for (nb, na), wb, wa in zip(within_names, d.within_bid, d.within_ask, strict=True):
        x[nb] = math.log1p(wb)
        x[na] = math.log1p(wa)
    if d.walk_buy is not None:
        x["walk_buy"] = d.walk_buy
    if d.walk_sell is not None:
        x["walk_sell"] = d.walk_sell
    for name, e in zip(_EVENT_NAMES, (d.adds_bid, d.adds_ask, d.cancels_bid, d.cancels_ask, d.changes_bid,
                                      d.changes_ask), strict=True):
        x[name] = math.log1p(e)
    if c.book_in_row:
        mid = (d.bid_px[0] + d.ask_px[0]) * 0.5
        for i in range(min(c.levels, len(d.bid_px), len(d.ask_px))):
            ap, aq_, bp, bq_ = book[4 * i : 4 * i + 4]
            x[ap] = (d.ask_px[i] - mid) / mid * _BPS
            x[aq_] = math.log1p(d.ask_qty[i])
            x[bp] = (mid - d.bid_px[i]) / mid * _BPS
            x[bq_] = math.log1p(d.bid_qty[i])


def _raw_features(st: FeatureState, bar: Bar, lp: float) -> dict[str, float]:
    c = st.config
    logp = st.logp
    x: dict[str, float] = {}
    n = len(logp)
    for k in c.return_lags:
        x[f"ret_{k}"] = (lp - logp[n - 1 - k]) * _BPS if n > k else 0.0
    rets = st.rets
    x["rv"] = math.sqrt(sum(r * r for r in rets)) if rets else 0.0
    tv = bar.buy_volume + bar.sell_volume
    x["flow_imb"] = (bar.buy_volume - bar.sell_volume) / tv if tv > 0 else 0.0
    fb = sum(f[0] for f in st.flows)
    fs = sum(f[1] for f in st.flows)
    x["flow_imb_w"] = (fb - fs) / (fb + fs) if fb + fs > 0 else 0.0
    x["ofi"] = bar.ofi / bar.mean_depth if bar.mean_depth > 0 else 0.0
    od = sum(o[1] for o in st.ofis)
    x["ofi_w"] = sum(o[0] for o in st.ofis) / (od / len(st.ofis)) if od > 0 else 0.0
    if bar.ask > 0.0 and bar.bid > 0.0:
        mid = (bar.bid + bar.ask) * 0.5
        depth = bar.bid_qty + bar.ask_qty
        micro = (bar.bid * bar.ask_qty + bar.ask * bar.bid_qty) / depth if depth > 0 else mid
        x["micro_dev"] = (micro - mid) / mid * _BPS
        x["spread"] = (bar.ask - bar.bid) / mid * _BPS
        x["book_imb"] = (bar.bid_qty - bar.ask_qty) / depth if depth > 0 else 0.0
        x["last_vs_mid"] = (bar.close - mid) / mid * _BPS
    else:
        x["micro_dev"] = x["spread"] = x["book_imb"] = x["last_vs_mid"] = 0.0
    x["vwap_dev"] = (bar.vwap - bar.price) / bar.price * _BPS
    x["log_volume"] = math.log1p(bar.volume)
    gl = st.avg_gain + st.avg_loss
    x["rsi"] = (st.avg_gain - st.avg_loss) / gl if gl > 0 else 0.0
    macd = (st.ema_fast - st.ema_slow) * _BPS if st.ema_fast is not None else 0.0  # type: ignore[operator]
    sig = st.macd_signal if st.macd_signal is not None else 0.0
    x["macd"] = macd
    x["macd_signal"] = sig
    x["macd_hist"] = macd - sig
    w = c.swt.window
    if n >= w:
        arr = np.fromiter(logp, float, n)[n - w :]
        anchor = arr[-1]
        den, energies = denoise_last((arr - anchor) * _BPS, c.swt)
        level = float(anchor) + den / _BPS  # denoised log price at this bar
        x["swt_dev"] = den
        # the slope compares successive *last points*, each from its own window
        x["swt_slope"] = (level - st.prev_denoised) * _BPS if st.prev_denoised is not None else 0.0
        st.prev_denoised = level
        for j, e in enumerate(energies, 1):
            x[f"swt_e{j}"] = math.log1p(e)
    else:
        x["swt_dev"] = x["swt_slope"] = 0.0
        for j in range(1, c.swt.level + 1):
            x[f"swt_e{j}"] = 0.0
    return x


def step(state: FeatureState, bar: Bar) -> tuple[FeatureState, list[FeatureRow]]:
    """Consume one bar; emit its :class:`FeatureRow`.

    ``state`` is updated in place and returned.
    """
    st = state
    c = st.config
    if bar.reset:
        st.restart()
    lp = math.log(bar.price)
    if st.logp:
        r = (lp - st.logp[-1]) * _BPS
        st.rets.append(r)
        p = 1.0 / c.rsi_period
        st.avg_gain += p * (max(r, 0.0) - st.avg_gain)
        st.avg_loss += p * (max(-r, 0.0) - st.avg_loss)
    fast, slow, sig = c.macd
    st.ema_fast = _ema(st.ema_fast, lp, fast)
    st.ema_slow = _ema(st.ema_slow, lp, slow)
    st.macd_signal = _ema(st.macd_signal, (st.ema_fast - st.ema_slow) * _BPS, sig)
    st.flows.append((bar.buy_volume, bar.sell_volume))
    st.ofis.append((bar.ofi, bar.mean_depth))
    st.logp.append(lp)
    st.n += 1
    x = _raw_features(st, bar, lp)
    d = bar.depth
    if d is not None and d.ready and c.depth.enabled:
        _depth_features(st, d, x)
    if st.scaler is not None:
        st.scaler.learn_one(x)
        x = st.scaler.transform_one(x)
    lim = c.clip
    if c.drop:
        x = {k: v for k, v in x.items() if not _dropped(k, c.drop)}
    x = {k: (lim if v > lim else -lim if v < -lim else v) for k, v in x.items()}
    return st, [FeatureRow(bar.instrument, bar.ts_end, bar.ts_end - bar.ts_start, bar.price, x,
                           st.n >= c.warmup, bar.reset)]

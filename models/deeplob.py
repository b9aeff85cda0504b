"""A DeepLOB-style online learner over the last bars of the order book itself.

Input: the book's top ``levels`` levels per side in the feature row, level
``i`` (1 the best) as ``lob_ap<i>`` (ask price, bps above the mid),
``lob_aq<i>`` (log1p of the ask size), ``lob_bp<i>`` (bid price, bps below
the mid) and ``lob_bq<i>`` (log1p of the bid size), scaled online like
every feature. The join gives these keys only to learners whose class says
``reads_book = True``, as this one does. One bar's book is a row of ``4 x
levels`` values, in that order level by level (a level the row lacks reads
as 0, the scaled mean); the network reads the last ``window`` rows.

Network (after Zhang, Zohren & Roberts, "DeepLOB", 2019), on the window as
an image of ``window`` bars x ``4 levels`` columns, every convolution
followed by a leaky ReLU:

1. a (1 x 2) convolution with stride (1 x 2): each level's price with its
   size, per side; then a (``kernel`` x 1) convolution over time;
2. a (1 x 2) convolution with stride (1 x 2): each level's ask with its bid;
   then one over time;
3. a (1 x ``levels``) convolution across the levels; then one over time;
4. with ``inception``, DeepLOB's inception module: (3 x 1) and (5 x 1)
   convolutions over time and a (3 x 1) max-pool, side by side, each behind
   a 1 x 1 convolution, concatenated;
5. a GRU over the bars and a linear head on its last hidden state: the
   forecast of the standardized log return.

The convolutions over time keep the window's length: those after the
spatial ones pad with zeros before the window's first bar, the inception's
on both sides (every value in the window is known at the forecast's time,
so none of them looks ahead of it).

**Initialization.** Every convolution's weights are He-initialized for the
leaky ReLU (normal, variance ``2 / ((1 + 0.01^2) fan_in)``) and its biases
are zero, so that the book's variation reaches the GRU. Under torch's
default initialization (variance ``1 / (3 fan_in)``, and uniform biases)
each of the eight stacked convolutions shrank it about threefold while the
biases added a constant: on the real USD-M windows the untrained network's
output varied by 4e-3 of its value, no training moved that (the output
was still constant after 2000 Adam steps on the whole recording), and the
forecast was the running mean of the returns plus a constant, blind to the
book; its hit rate was a matter of the seed (0.33 to 0.50 over seeds 0-9).
``tests/models/test_deeplob.py::test_the_book_reaches_the_output_and_the_network_learns_from_it``.

Everything else, the online schedule (``retrain_every``, ``steps``,
``batch``, ``buffer``), the target's scaling (the forecast in raw log-return
units), the direction objective, the matching of each label with the window
of its own forecast, the offline epochs of a model bundle, determinism and
pickling, is :class:`models.cnn_gru.WindowLearner`'s, as for the CNN-GRU.

**Without the book.** A row with neither ``lob_ap1`` nor ``lob_bp1`` (the
book is not ready) gives a forecast of ``0.0``; the bar is not added to the
window (which skips it, as windows skip gaps in the bar series) and the
label of that forecast is not learnt from (it counts in ``n_skipped``).

Examples
--------
>>> import random
>>> cfg = DeepLOBConfig(levels=2, window=4, kernel=2, filters=2, hidden=4, retrain_every=5, steps=1, batch=4)
>>> m = DeepLOBModel(cfg)
>>> rng = random.Random(0)
>>> xs = [{n: rng.gauss(0, 1) for n in m.book_names()} for _ in range(30)]
>>> preds = []
>>> for t, x in enumerate(xs):
...     preds.append(m.predict_one(x))
...     if t >= 1:  # horizon 1: the forecast made at t-1 is resolved now
...         m.learn_one(xs[t - 1], 1e-4 * xs[t - 1]["lob_bq1"])
>>> preds[:4] == [0.0] * 4 and m.n_retrains > 0 and preds[-1] != 0.0
True
>>> m.predict_one({"ret_1": 0.3})  # no book: no forecast, nothing learnt
0.0
>>> import pickle
>>> pickle.loads(pickle.dumps(m)).predict_one(xs[0]) == m.predict_one(xs[0])
True
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from models.cnn_gru import WindowLearner
from models.deeplob_config import DeepLOBConfig

__all__ = ["DeepLOBConfig", "DeepLOBModel"]

#: The values of one level, in the order of a row.
FIELDS = ("ap", "aq", "bp", "bq")


#: The negative slope of every leaky ReLU.
_SLOPE = 0.01


def _act() -> nn.Module:
    return nn.LeakyReLU(_SLOPE)


def _block(c_in: int, c_out: int, span: tuple[int, int], stride: tuple[int, int], kernel: int) -> nn.Sequential:
    """A spatial convolution, then one over time (``kernel`` bars, zeros before the window's first)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, span, stride=stride), _act(),
                         nn.ZeroPad2d((0, 0, kernel - 1, 0)), nn.Conv2d(c_out, c_out, (kernel, 1)), _act())


class _Inception(nn.Module):
    """DeepLOB's inception module over time: three branches side by side, concatenated."""

    def __init__(self, c: int):
        super().__init__()
        self.b3 = nn.Sequential(nn.Conv2d(c, c, 1), _act(), nn.Conv2d(c, c, (3, 1), padding="same"), _act())
        self.b5 = nn.Sequential(nn.Conv2d(c, c, 1), _act(), nn.Conv2d(c, c, (5, 1), padding="same"), _act())
        self.pool = nn.Sequential(nn.MaxPool2d((3, 1), stride=1, padding=(1, 0)), nn.Conv2d(c, c, 1), _act())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b3(h), self.b5(h), self.pool(h)], dim=1)


class _BookNet(nn.Module):
    """(batch, window, 4 levels) -> (batch,): the convolutions over the book, a GRU over the bars, a head."""

    def __init__(self, levels: int, filters: int, kernel: int, hidden: int, inception: bool):
        super().__init__()
        f = filters
        self.convs = nn.Sequential(
            _block(1, f, (1, 2), (1, 2), kernel),  # price with size
            _block(f, f, (1, 2), (1, 2), kernel),  # ask with bid
            _block(f, f, (1, levels), (1, 1), kernel),  # across the levels
        )
        self.inception = _Inception(f) if inception else None
        self.gru = nn.GRU(3 * f if inception else f, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)
        for mod in self.modules():  # He initialization: the book's variation reaches the GRU (module docstring)
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, a=_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
                assert mod.bias is not None
                nn.init.zeros_(mod.bias)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        h = self.convs(w.unsqueeze(1))  # (B, F, T, 1)
        if self.inception is not None:
            h = self.inception(h)
        _, last = self.gru(h.squeeze(-1).transpose(1, 2))  # over (B, T, C)
        return self.head(last[0]).squeeze(-1)


class DeepLOBModel(WindowLearner):
    """DeepLOB-style regressor of the future log return from the book's last bars (see the module docstring).

    Parameters
    ----------
    config : DeepLOBConfig, optional
        Hyper-parameters; the defaults when omitted.
    """

    #: The join gives this learner the book itself (the ``lob_*`` keys of the row).
    reads_book = True
    config_class = DeepLOBConfig
    config: DeepLOBConfig

    def book_names(self) -> tuple[str, ...]:
        """The keys read, level by level, in the order of a row."""
        return tuple(f"lob_{k}{i}" for i in range(1, self.config.levels + 1) for k in FIELDS)

    def _input_names(self, x: dict[str, float]) -> tuple[str, ...]:
        return self.book_names()

    def _vector(self, x: dict[str, float]) -> tuple[bytes, Optional[np.ndarray]]:
        """(matching key, the book's row) of ``x``; the row is None without a book."""
        assert self.names is not None
        raw = np.array([x.get(n, np.nan) for n in self.names], dtype=np.float64)
        if "lob_ap1" not in x and "lob_bp1" not in x:
            return raw.tobytes(), None
        return raw.tobytes(), self._clean(raw)

    def _make_net(self) -> nn.Module:
        c = self.config
        return _BookNet(c.levels, c.filters, c.kernel, c.hidden, c.inception)

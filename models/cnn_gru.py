"""A CNN-GRU online learner over a rolling window of feature vectors.

The network reads the last ``window`` feature vectors (one per bar, features
sorted by name, missing ones 0): a 1-D convolution over time, ReLU, a GRU,
and a linear head on the GRU's last hidden state give one scalar, the
forecast of the *standardized* log return. The answer of
:meth:`CNNGRUModel.predict_one` is in raw log-return units: the target is
standardized internally with the running mean and standard deviation of the
targets learned so far (past targets only), and the network's output is
mapped back with them.

Online protocol (see :mod:`models.base`). ``learn_one(x, y)`` only receives
the features ``x`` of the forecast time, not the window the forecast was
made from, so every window used by ``predict_one`` is kept in a bounded FIFO
keyed by the values of ``x`` (sorted by name); ``learn_one`` pops windows
from the left until it finds the one for ``x`` (windows of forecasts that
expired without a target are dropped on the way) and moves it, with ``y``,
into a rolling memory of ``buffer`` labelled examples. Every
``retrain_every`` labelled examples the network takes ``steps`` Adam steps on
mini-batches of ``batch`` examples drawn from that memory with a seeded
generator: the cost of retraining is bounded by ``steps``, never by the wall
clock, so runs are reproducible. A ``learn_one`` whose ``x`` matches no
pending forecast (it was never forecast, or its window fell out of the FIFO)
is counted in ``n_unmatched`` and otherwise ignored.

Until the window is full and the network has trained at least once the
forecast is ``0.0`` (the zero-return baseline).

Determinism: parameters are initialized from ``seed`` (the global torch RNG
is forked and restored, so other users of it are not disturbed) and
mini-batches are drawn with a ``numpy.random.Generator`` seeded from it. On
the CPU, with the same number of torch threads, two fresh instances fed the
same inputs give bitwise identical forecasts. The only process-wide effect
is ``torch.set_num_threads(threads)`` (done when an instance is created or
restored, if ``threads`` is not 0): torch's intra-op thread pool is shared by
the whole process, so the last learner created decides it for all.

Instances pickle (and ``copy.deepcopy``, which Bytewax uses for snapshots):
the state holds the config, the network's and the optimizer's state dicts,
the memory, the history window, the pending FIFO, the counters, the target
statistics and the generator's state, so a restored copy continues exactly
like the original. A snapshot holds up to ``buffer + max_pending`` windows
of ``window x features`` float32 values (about 3 MB with the defaults and 24
features).

The history window is the sequence of ``x`` given to ``predict_one``; it does
not know about gaps in the bar series (a window may span one).

Examples
--------
>>> import math, random
>>> cfg = CNNGRUConfig(window=8, channels=4, hidden=8, buffer=50, retrain_every=5, steps=2, batch=8)
>>> m = CNNGRUModel(cfg)
>>> rng = random.Random(0)
>>> xs = [{"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)} for _ in range(40)]
>>> preds = []
>>> for t, x in enumerate(xs):
...     preds.append(m.predict_one(x))
...     if t >= 1:  # horizon 1: the forecast made at t-1 is resolved now
...         m.learn_one(xs[t - 1], 1e-4 * xs[t - 1]["a"])
>>> preds[:8] == [0.0] * 8   # the window is not full yet
True
>>> m.n_retrains > 0 and preds[-1] != 0.0 and math.isfinite(preds[-1])
True
>>> import pickle
>>> m2 = pickle.loads(pickle.dumps(m))
>>> m2.predict_one({"a": 1.0, "b": 0.0}) == m.predict_one({"a": 1.0, "b": 0.0})
True
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import torch
from torch import nn

from models.cnn_gru_config import CNNGRUConfig

__all__ = ["CNNGRUConfig", "CNNGRUModel"]


class _Net(nn.Module):
    """Conv1d over time -> ReLU -> GRU -> Linear on the last hidden state."""

    def __init__(self, n_features: int, channels: int, kernel: int, hidden: int):
        super().__init__()
        self.conv = nn.Conv1d(n_features, channels, kernel)
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """``w``: (batch, window, features) -> (batch,)."""
        h = torch.relu(self.conv(w.transpose(1, 2)))  # (B, C, L)
        _, last = self.gru(h.transpose(1, 2))  # last: (1, B, H)
        return self.head(last[0]).squeeze(-1)


class CNNGRUModel:
    """CNN-GRU regressor of the future log return (see the module docstring).

    Parameters
    ----------
    config : CNNGRUConfig, optional
        Hyper-parameters; the defaults when omitted.

    Attributes
    ----------
    names : tuple of str or None
        Feature names (sorted), fixed by the first ``predict_one``.
    n_labelled, n_retrains, n_unmatched, n_dropped : int
        Labelled examples learned, retrains run, ``learn_one`` calls that
        matched no pending forecast, pending windows dropped (expired or
        beyond ``max_pending``).
    """

    def __init__(self, config: CNNGRUConfig | None = None):
        self.config = config if config is not None else CNNGRUConfig()
        c = self.config
        _apply_threads(c.threads)
        self.names: tuple[str, ...] | None = None
        self.net: _Net | None = None
        self.opt: torch.optim.Adam | None = None
        self.history: deque = deque(maxlen=c.window)
        self.pending: deque = deque()
        self.memory: deque = deque(maxlen=c.buffer)
        self.rng = np.random.default_rng(c.seed)
        self.n_labelled = 0
        self.n_retrains = 0
        self.n_unmatched = 0
        self.n_dropped = 0
        # Welford statistics of the targets learned so far
        self.y_n = 0
        self.y_mean = 0.0
        self.y_m2 = 0.0

    # --- the online protocol -------------------------------------------------

    def predict_one(self, x: dict[str, float]) -> float:
        """Append ``x`` to the history window and forecast the log return."""
        if self.names is None:
            self._build(tuple(sorted(x)))
        key, vec = self._vector(x)
        self.history.append(vec)
        c = self.config
        if len(self.history) < c.window:
            return 0.0
        win = np.stack(self.history)
        self.pending.append((key, win))
        if len(self.pending) > c.pending_limit:
            self.pending.popleft()
            self.n_dropped += 1
        if self.n_retrains == 0:
            return 0.0
        net, _ = self._network()
        with torch.no_grad():
            out = float(net(torch.from_numpy(win).unsqueeze(0).to(c.device))[0])
        return out * self._scale() + self.y_mean

    def learn_one(self, x: dict[str, float], y: float) -> None:
        """Label the pending forecast made from ``x`` with ``y``; maybe retrain."""
        if self.names is None or not math.isfinite(y):
            return
        key, _ = self._vector(x)
        pos = next((i for i, (k, _) in enumerate(self.pending) if k == key), None)
        if pos is None:
            self.n_unmatched += 1
            return
        for _ in range(pos):  # forecasts that expired without a target
            self.pending.popleft()
        self.n_dropped += pos
        _, win = self.pending.popleft()
        self.memory.append((win, float(y)))
        self.y_n += 1
        d = y - self.y_mean
        self.y_mean += d / self.y_n
        self.y_m2 += d * (y - self.y_mean)
        self.n_labelled += 1
        if self.n_labelled % self.config.retrain_every == 0:
            self._retrain()

    # --- internals -----------------------------------------------------------

    def _network(self) -> tuple[_Net, torch.optim.Adam]:
        """The network and its optimizer, built by the first ``predict_one``."""
        assert self.net is not None and self.opt is not None, "no forecast made yet"
        return self.net, self.opt

    def _build(self, names: tuple[str, ...]) -> None:
        c = self.config
        self.names = names
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self.net = _Net(len(names), c.channels, c.kernel, c.hidden).to(c.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)

    def _vector(self, x: dict[str, float]) -> tuple[bytes, np.ndarray]:
        """(matching key, clean float32 vector) of ``x`` in ``names`` order."""
        assert self.names is not None
        raw = np.array([x.get(n, 0.0) for n in self.names], dtype=np.float64)
        vec = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
        lim = self.config.clip_x
        np.clip(vec, -lim, lim, out=vec)
        return raw.tobytes(), vec.astype(np.float32)

    def _scale(self) -> float:
        if self.y_n < 2:
            return 1e-12
        return max(math.sqrt(self.y_m2 / (self.y_n - 1)), 1e-12)

    def _retrain(self) -> None:
        c = self.config
        n = len(self.memory)
        if n == 0:
            return
        mean, scale = self.y_mean, self._scale()
        net, opt = self._network()
        params = list(net.parameters())
        for _ in range(c.steps):
            idx = self.rng.choice(n, size=min(c.batch, n), replace=False)
            wb = torch.from_numpy(np.stack([self.memory[i][0] for i in idx])).to(c.device)
            ys = np.array([self.memory[i][1] for i in idx], dtype=np.float64)
            yb = torch.from_numpy(((ys - mean) / scale).astype(np.float32)).to(c.device)
            loss = torch.mean((net(wb) - yb) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if c.clip_grad > 0:
                nn.utils.clip_grad_norm_(params, c.clip_grad)
            opt.step()
        self.n_retrains += 1

    # --- pickling (Bytewax snapshots use copy.deepcopy / pickle) -------------

    def __getstate__(self) -> dict[str, Any]:
        net = opt = None
        if self.net is not None:
            model, adam = self._network()
            net = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            opt = _to_cpu(adam.state_dict())
        return {
            "config": self.config.model_dump(),
            "names": self.names,
            "net": net,
            "opt": opt,
            "history": list(self.history),
            "pending": list(self.pending),
            "memory": list(self.memory),
            "rng": self.rng.bit_generator.state,
            "counters": (self.n_labelled, self.n_retrains, self.n_unmatched, self.n_dropped),
            "y_stats": (self.y_n, self.y_mean, self.y_m2),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        CNNGRUModel.__init__(self, CNNGRUConfig(**state["config"]))
        if state["names"] is not None:
            self._build(tuple(state["names"]))
            model, adam = self._network()
            model.load_state_dict(state["net"])
            adam.load_state_dict(state["opt"])
        self.history.extend(state["history"])
        self.pending.extend(state["pending"])
        self.memory.extend(state["memory"])
        self.rng.bit_generator.state = state["rng"]
        self.n_labelled, self.n_retrains, self.n_unmatched, self.n_dropped = state["counters"]
        self.y_n, self.y_mean, self.y_m2 = state["y_stats"]


def _apply_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` (process-wide) unless ``n`` is 0 or already set."""
    if n and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj

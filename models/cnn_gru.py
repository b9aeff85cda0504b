"""A CNN-GRU online learner over a rolling window of feature vectors.

The network reads the last ``window`` feature vectors (one per bar, features
sorted by name, missing ones 0): a 1-D convolution over time, ReLU, a GRU,
and a linear head on the GRU's last hidden state give one scalar, the
forecast of the *standardized* log return. The answer of
:meth:`CNNGRUModel.predict_one` is in raw log-return units: the target is
standardized internally with the running mean and standard deviation of the
targets learned so far (past targets only), and the network's output is
mapped back with them.

The online machinery is :class:`WindowLearner`'s, which the book learner
(:class:`models.deeplob.DeepLOBModel`) shares: only the network and how a
feature dict becomes one row of the window differ.

Online protocol (see :mod:`models.base`). ``learn_one(x, y)`` only receives
the features ``x`` of the forecast time, not the window the forecast was
made from, so every forecast of ``predict_one`` is kept in a bounded FIFO, in
forecast order: the ``x`` it was made from (the object itself), its values,
and its window (none for a forecast made before the window was full).
``learn_one`` labels the forecast made from that very ``x`` object (the
time-travel join passes back the dict it forecast from); only when no pending
forecast holds that object (a learner restored alone from a pickle, whose
copies of ``x`` are not the caller's) does it fall back to the oldest one
with equal values. Forecasts before it in the FIFO expired without a target
and are dropped. Its window, with ``y``, goes into a rolling memory of
``buffer`` labelled examples. Matching by values alone paired labels with the
wrong window whenever two forecasts had equal feature vectors (quiet,
carried-forward bars): an expired forecast's stale window, or, at ``h > 1``,
the window of a *later* forecast, which already holds part of the target's
path (``tests/models/test_cnn_gru.py::test_equal_feature_vectors_keep_each_label_with_its_window``).
Every ``retrain_every`` labelled examples the network takes ``steps`` Adam
steps on mini-batches of ``batch`` examples drawn from that memory with a
seeded generator: the cost of retraining is bounded by ``steps``, never by
the wall clock, so runs are reproducible. A label of a forecast made without
a window is counted in ``n_skipped``, and one whose ``x`` matches no pending
forecast (it was never forecast, or fell out of the FIFO) in
``n_unmatched``; neither is learnt from.

Until the window is full and the network has trained at least once the
forecast is ``0.0`` (the zero-return baseline). A network that has trained
and whose stream started afresh (:meth:`WindowLearner.reset_stream`, a warm
start) forecasts at once, the missing part of its window zeros (the mean
of the scaled features).

Direction head (``objective="direction"``): the network's output is the
logit of an up move, trained with binary cross-entropy on the sign of the
realized return (zero returns carry no direction: they update the mean
absolute return but are not trained on). The forecast is ``(2 p_up - 1) *
mean|r|``, as :class:`models.river_models.DirectionClassifier` does, and
:meth:`WindowLearner.proba_up` gives ``p_up`` to the signals (None with the
``return`` objective, whose signals use the forecast and its past errors).

Features whose names start with a prefix in ``exclude`` are not fed to the
network (``exclude=("swt_",)``: the SWT ablation).

Offline epochs. In a run that makes a model bundle, the join calls
:meth:`WindowLearner.record_offline` at the start: from then on every feature
vector given to ``predict_one`` and every labelled example (the index of its
window's last vector, and its target) is kept (at most ``offline_max``
vectors). When the run ends, :meth:`WindowLearner.fit_offline` trains a fresh
network (seeded like the first) on them, in time order: the earliest
``1 - offline_val`` of the examples train for up to ``offline_epochs``
epochs (mini-batches of ``offline_batch``, shuffled by a seeded generator),
and the latest ``offline_val`` validate after each epoch; training stops
after ``offline_patience`` epochs without a better validation loss and the
best epoch's network is kept, with a fresh optimizer for the online
learning that follows. No example of the validation split is trained on by
these epochs, and none of the examples is after the bundle's data. The
recorded vectors are then dropped. ``offline_report`` says what happened.
Online, nothing changes: ``steps`` Adam steps every ``retrain_every``
labels.

Determinism: parameters are initialized from ``seed`` (the global torch RNG
is forked and restored, so other users of it are not disturbed) and
mini-batches are drawn with a ``numpy.random.Generator`` seeded from it. On
the CPU, with the same number of torch threads, two fresh instances fed the
same inputs give bitwise identical forecasts. The only process-wide effect
is ``torch.set_num_threads(threads)`` (done when an instance is created or
restored, if ``threads`` is not 0): torch's intra-op thread pool is shared by
the whole process, so the last learner created decides it for all.

Instances pickle (and ``copy.deepcopy``, which Bytewax uses for snapshots):
the state holds the config, the network's and the optimizer's state dicts
(their tensors as NumPy arrays: no torch object is pickled),
the memory, the history window, the pending FIFO (with the ``x`` of each
forecast: pickled together with the join's state, they stay the join's
objects), the counters, the target statistics and the generator's state,
so a restored copy continues exactly like the original. A snapshot holds up
to ``buffer + max_pending`` windows of ``window x features`` float32 values
(about 3 MB with the defaults and 24 features).

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
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import numpy as np
import torch
from torch import nn

from models.cnn_gru_config import CNNGRUConfig, WindowLearnerConfig

__all__ = ["CNNGRUConfig", "CNNGRUModel", "WindowLearner"]


class _Net(nn.Module):
    """Conv1d over time -> ReLU -> GRU -> Linear on the last hidden state.

    With ``skip``, plus a linear term of the window's last feature vector.
    """

    def __init__(self, n_features: int, channels: int, kernel: int, hidden: int, skip: bool = False):
        super().__init__()
        self.conv = nn.Conv1d(n_features, channels, kernel)
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)
        self.skip = nn.Linear(n_features, 1) if skip else None

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """``w``: (batch, window, features) -> (batch,)."""
        h = torch.relu(self.conv(w.transpose(1, 2)))  # (B, C, L)
        _, last = self.gru(h.transpose(1, 2))  # last: (1, B, H)
        out = self.head(last[0])
        if self.skip is not None:
            out = out + self.skip(w[:, -1, :])
        return out.squeeze(-1)


class _Pending(NamedTuple):
    """A forecast waiting for its label."""

    x: dict[str, float]  # the dict forecast from (the caller's object)
    key: bytes  # its values, to match a learner restored alone
    win: Optional[np.ndarray]  # the window forecast from; None before the window was full
    idx: int  # the index (in n_seen) of the window's last vector


class WindowLearner(ABC):
    """An online regressor of the future log return from a window of the last bars (see the module docstring).

    The machinery the CNN-GRU and the book learner share. A subclass gives
    ``config_class``, and :meth:`_input_names`, :meth:`_vector` and
    :meth:`_make_net`: which names it reads, how a feature dict becomes one
    row of the window, and its network (any module from (batch, window,
    row) to (batch,)).

    Parameters
    ----------
    config : WindowLearnerConfig, optional
        Hyper-parameters (of the subclass's ``config_class``); the defaults when omitted.

    Attributes
    ----------
    names : tuple of str or None
        The names the rows are read from, fixed by the first ``predict_one``.
    n_labelled, n_retrains, n_unmatched, n_dropped, n_skipped : int
        Labelled examples learned, retrains run, ``learn_one`` calls that
        matched no pending forecast, pending forecasts dropped (expired or
        beyond ``max_pending``), labels of forecasts made without a window
        (not learnt from).
    """

    config_class: type[WindowLearnerConfig] = WindowLearnerConfig

    def __init__(self, config: WindowLearnerConfig | None = None):
        self.config: Any = config if config is not None else self.config_class()
        c = self.config
        _apply_threads(c.threads)
        self.names: tuple[str, ...] | None = None
        self.net: nn.Module | None = None
        self.opt: torch.optim.Adam | None = None
        self.history: deque = deque(maxlen=c.window)
        self.pending: deque[_Pending] = deque()
        self.memory: deque = deque(maxlen=c.buffer)
        self.rng = np.random.default_rng(c.seed)
        self.n_labelled = 0
        self.n_retrains = 0
        self.n_unmatched = 0
        self.n_dropped = 0
        self.n_skipped = 0
        # Welford statistics of the targets learned so far, and their mean absolute value
        self.y_n = 0
        self.y_mean = 0.0
        self.y_m2 = 0.0
        self.abs_sum = 0.0
        self.p_up = 0.5  # of the last forecast (direction objective)
        # offline training (see the module docstring)
        self.n_seen = 0  # feature vectors given to predict_one
        self.recording = False
        self.trace: list[np.ndarray] = []
        self.trace_start = 0  # the index (in n_seen) of trace[0]
        self.examples: list[tuple[int, float]] = []  # (index of the window's last vector, target)
        self.offline_report: Optional[dict[str, Any]] = None

    # --- what a subclass gives -----------------------------------------------

    @abstractmethod
    def _input_names(self, x: dict[str, float]) -> tuple[str, ...]:
        """The names the rows are read from, given the first ``x``."""

    @abstractmethod
    def _vector(self, x: dict[str, float]) -> tuple[bytes, Optional[np.ndarray]]:
        """(matching key, float32 row of the window) of ``x``; the row is None when ``x`` has nothing to read."""

    @abstractmethod
    def _make_net(self) -> nn.Module:
        """A fresh network (the torch RNG is seeded by the caller)."""

    # --- the online protocol -------------------------------------------------

    def predict_one(self, x: dict[str, float]) -> float:
        """Append ``x`` to the history window and forecast the log return."""
        if self.names is None:
            self._build(self._input_names(x))
        key, vec = self._vector(x)
        self.p_up = 0.5
        if vec is None:  # nothing to read: a zero forecast, and the window skips the bar
            self._pend(_Pending(x, key, None, -1))
            return 0.0
        self.history.append(vec)
        idx = self.n_seen
        self.n_seen += 1
        if self.recording:
            self._record(vec)
        c = self.config
        if len(self.history) < c.window:
            if self.n_retrains == 0:
                self._pend(_Pending(x, key, None, idx))
                return 0.0
            # a trained network whose stream started afresh (a warm start): the missing past is
            # zeros, the mean of the scaled features
            win = np.zeros((c.window, vec.shape[0]), dtype=np.float32)
            win[c.window - len(self.history):] = np.stack(self.history)
        else:
            win = np.stack(self.history)
        self._pend(_Pending(x, key, win, idx))
        if self.n_retrains == 0:
            return 0.0
        net, _ = self._network()
        with torch.no_grad():
            out = float(net(torch.from_numpy(win).unsqueeze(0).to(c.device))[0])
        if c.objective == "direction":
            self.p_up = 1.0 / (1.0 + math.exp(-out)) if out > -700.0 else 0.0
            return (2.0 * self.p_up - 1.0) * (self.abs_sum / self.y_n if self.y_n else 0.0)
        return out * self._scale() + self.y_mean

    def proba_up(self, x: dict[str, float]) -> Optional[float]:
        """P(up) of the forecast just made from ``x`` (0.5 while untrained) with the direction objective.

        None with the return objective.
        """
        return self.p_up if self.config.objective == "direction" else None

    def learn_one(self, x: dict[str, float], y: float) -> None:
        """Label the pending forecast made from ``x`` with ``y``; maybe retrain."""
        if self.names is None or not math.isfinite(y):
            return
        pos = self._find(x)
        if pos is None:
            self.n_unmatched += 1
            return
        for _ in range(pos):  # forecasts that expired without a target
            self.pending.popleft()
        self.n_dropped += pos
        p = self.pending.popleft()
        if p.win is None:
            self.n_skipped += 1
            return
        if self.config.objective == "return" or y != 0.0:
            self.memory.append((p.win, float(y)))
        if self.recording and p.idx >= self.trace_start:
            self.examples.append((p.idx, float(y)))
        self.y_n += 1
        d = y - self.y_mean
        self.y_mean += d / self.y_n
        self.y_m2 += d * (y - self.y_mean)
        self.abs_sum += abs(y)
        self.n_labelled += 1
        if self.n_labelled % self.config.retrain_every == 0:
            self._retrain()

    def reset_stream(self) -> None:
        """Forget the feature vectors of the stream seen so far, keeping what was learnt.

        The history window and the forecasts waiting for a label are
        forgotten: for a warm start on another day or instrument.
        """
        self.history.clear()
        self.pending.clear()
        self.p_up = 0.5

    def _pend(self, p: _Pending) -> None:
        self.pending.append(p)
        if len(self.pending) > self.config.pending_limit:
            self.pending.popleft()
            self.n_dropped += 1

    def _find(self, x: dict[str, float]) -> Optional[int]:
        """The position in the FIFO of the forecast made from ``x``: that very object, else equal values."""
        key, _ = self._vector(x)
        first = None
        for i, p in enumerate(self.pending):
            if p.key == key:
                if p.x is x:
                    return i
                if first is None:
                    first = i
        return first

    # --- offline epochs (model bundles) ---------------------------------------

    def record_offline(self) -> None:
        """Keep every feature vector and labelled example from now on, for :meth:`fit_offline`.

        :meth:`fit_offline` runs when a bundle is made.
        """
        if self.config.offline_epochs > 0 and not self.recording:
            self.recording = True
            self.trace, self.examples, self.trace_start = [], [], self.n_seen

    def _record(self, vec: np.ndarray) -> None:
        self.trace.append(vec)
        over = len(self.trace) - self.config.offline_max
        if over > 0:  # drop the oldest quarter (at least what is over), and the examples they end
            k = max(over, self.config.offline_max // 4)
            del self.trace[:k]
            self.trace_start += k
            first = self.trace_start + self.config.window - 1
            self.examples = [e for e in self.examples if e[0] >= first]

    def fit_offline(self, on_epoch: Optional[Callable[[int, dict[str, Any]], None]] = None) -> None:
        """Train a fresh network on the recorded examples, keep the best epoch's, and drop the recording.

        See the module docstring. ``on_epoch(epoch, state_dict)`` is called
        after each epoch.
        """
        if not self.recording:
            return
        self.recording = False
        trace, examples = self.trace, self.examples
        self.trace, self.examples = [], []
        c = self.config
        w = c.window
        first = self.trace_start + w - 1
        ex = [e for e in examples if e[0] >= first]
        if c.objective == "direction":
            ex = [e for e in ex if e[1] != 0.0]
        n = len(ex)
        n_val = int(round(n * c.offline_val))
        n_train = n - n_val
        if self.names is None or n_val < 1 or n_train < c.offline_batch:
            self.offline_report = {"examples": n, "epochs": 0, "why": "too few labelled examples"}
            return
        vecs = np.stack(trace)
        ends = np.array([e[0] - self.trace_start for e in ex], dtype=np.int64)
        ys = np.array([e[1] for e in ex], dtype=np.float64)
        offs = np.arange(-w + 1, 1, dtype=np.int64)
        direction = c.objective == "direction"
        if direction:
            targets = (ys > 0.0).astype(np.float32)
            up = 0.0  # the logit of p_up = 1/2
        else:
            mean = float(ys[:n_train].mean())  # statistics of the training split only
            sd = float(ys[:n_train].std()) or 1e-12
            targets = ((ys - mean) / sd).astype(np.float32)
            up = -mean / sd  # a zero return, standardized

        def batch(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            wins = vecs[ends[idx][:, None] + offs[None, :]]
            return torch.from_numpy(wins).to(c.device), torch.from_numpy(targets[idx]).to(c.device)

        net = self._seeded_net()
        opt = torch.optim.Adam(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        rng = np.random.default_rng(c.seed + 1)
        params = list(net.parameters())
        val_idx = np.arange(n_train, n)

        moved = torch.from_numpy(ys != 0.0)
        n_moved = max(int(moved[n_train:].sum()), 1)

        def val_loss() -> tuple[float, float]:
            """The validation split's mean loss, and hit rate on its non-zero moves."""
            tot, hits = 0.0, 0
            with torch.no_grad():
                for i in range(0, n_val, 1024):
                    idx = val_idx[i:i + 1024]
                    wb, yb = batch(idx)
                    out = net(wb)
                    tot += float(self._loss(out, yb, reduction="sum"))
                    right = (out > up) == (yb > (0.5 if direction else up))
                    hits += int((right & moved[idx]).sum())
            return tot / n_val, hits / n_moved

        best_loss, best_hit = val_loss()
        first_loss = best_loss
        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        best_epoch, epochs, stale = 0, 0, 0
        train_loss = float("nan")
        for epoch in range(1, c.offline_epochs + 1):
            order = rng.permutation(n_train)
            tot = 0.0
            for i in range(0, n_train, c.offline_batch):
                wb, yb = batch(order[i:i + c.offline_batch])
                loss = self._loss(net(wb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if c.clip_grad > 0:
                    nn.utils.clip_grad_norm_(params, c.clip_grad)
                opt.step()
                tot += float(loss.detach()) * len(yb)
            train_loss = tot / n_train
            epochs = epoch
            if on_epoch is not None:
                on_epoch(epoch, net.state_dict())
            loss_v, hit_v = val_loss()
            if loss_v < best_loss:
                best_loss, best_hit, best_epoch, stale = loss_v, hit_v, epoch, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
                if stale >= c.offline_patience:
                    break
        net.load_state_dict(best_state)
        self.net = net
        self.opt = self._online_optimizer(net)
        if best_epoch > 0:
            self.n_retrains = max(self.n_retrains, 1)
        self.offline_report = {
            "examples": n, "train": n_train, "validation": n_val, "epochs": epochs, "best_epoch": best_epoch,
            # the vectors (counted from the first forecast) that ended the first and last training and
            # validation windows: every training example ends before the first validation one
            "train_span": [int(ex[0][0]), int(ex[n_train - 1][0])], "val_span": [int(ex[n_train][0]), int(ex[-1][0])],
            "train_loss": round(train_loss, 6), "val_loss_before": round(first_loss, 6),
            "val_loss": round(best_loss, 6), "val_hit_rate": round(best_hit, 6),
        }

    def _loss(self, out: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.config.objective == "direction":
            return nn.functional.binary_cross_entropy_with_logits(out, target, reduction=reduction)
        return nn.functional.mse_loss(out, target, reduction=reduction)

    # --- internals -----------------------------------------------------------

    def _network(self) -> tuple[nn.Module, torch.optim.Adam]:
        """The network and its optimizer, built by the first ``predict_one``."""
        assert self.net is not None and self.opt is not None, "no forecast made yet"
        return self.net, self.opt

    def _build(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.net = self._seeded_net()
        self.opt = self._online_optimizer(self.net)

    def _seeded_net(self) -> nn.Module:
        """A fresh network initialized from ``seed``, the global torch RNG left as it was."""
        c = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            return self._make_net().to(c.device)

    def _online_optimizer(self, net: nn.Module) -> torch.optim.Adam:
        c = self.config
        return torch.optim.Adam(net.parameters(), lr=c.online_lr if c.online_lr is not None else c.lr,
                                weight_decay=c.weight_decay)

    def _clean(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` values as the network's float32 row: non-finite ones 0, clipped to ``clip_x``."""
        vec = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
        lim = self.config.clip_x
        np.clip(vec, -lim, lim, out=vec)
        return vec.astype(np.float32)

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
            if c.objective == "direction":
                yb = torch.from_numpy((ys > 0.0).astype(np.float32)).to(c.device)
                loss = nn.functional.binary_cross_entropy_with_logits(net(wb), yb)
            else:
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
            net = _arrays(model.state_dict())
            opt = _arrays(adam.state_dict())
        return {
            "config": self.config.model_dump(),
            "names": self.names,
            "net": net,
            "opt": opt,
            "history": list(self.history),
            "pending": [tuple(p) for p in self.pending],
            "memory": list(self.memory),
            "rng": self.rng.bit_generator.state,
            "counters": (self.n_labelled, self.n_retrains, self.n_unmatched, self.n_dropped, self.n_skipped),
            "y_stats": (self.y_n, self.y_mean, self.y_m2, self.abs_sum),
            "p_up": self.p_up,
            "offline": (self.n_seen, self.recording, list(self.trace), self.trace_start, list(self.examples),
                        self.offline_report),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        WindowLearner.__init__(self, self.config_class(**state["config"]))
        if state["names"] is not None:
            self._build(tuple(state["names"]))
            model, adam = self._network()
            model.load_state_dict(_tensors(state["net"]))
            adam.load_state_dict(_tensors(state["opt"]))
        self.history.extend(state["history"])
        # an older state's pending forecasts are (key, window, index), of full windows only
        self.pending.extend(_Pending(*p) if len(p) == 4 else _Pending({}, *p) for p in state["pending"])
        self.memory.extend(state["memory"])
        self.rng.bit_generator.state = state["rng"]
        counters = state["counters"]
        self.n_labelled, self.n_retrains, self.n_unmatched, self.n_dropped = counters[:4]
        self.n_skipped = counters[4] if len(counters) > 4 else 0
        self.y_n, self.y_mean, self.y_m2, self.abs_sum = state["y_stats"]
        self.p_up = state["p_up"]
        (self.n_seen, self.recording, trace, self.trace_start, examples, self.offline_report) = state["offline"]
        self.trace, self.examples = list(trace), list(examples)


class CNNGRUModel(WindowLearner):
    """CNN-GRU regressor of the future log return (see the module docstring).

    Parameters
    ----------
    config : CNNGRUConfig, optional
        Hyper-parameters; the defaults when omitted.

    Attributes
    ----------
    names : tuple of str or None
        Feature names (sorted), fixed by the first ``predict_one``.
    cols : numpy.ndarray or None
        Indices (in ``names``) of the features fed to the network; None: all of them.
    """

    config_class = CNNGRUConfig
    config: CNNGRUConfig

    def __init__(self, config: CNNGRUConfig | None = None):
        super().__init__(config)
        self.cols: Optional[np.ndarray] = None

    def _input_names(self, x: dict[str, float]) -> tuple[str, ...]:
        return tuple(sorted(x))

    def _build(self, names: tuple[str, ...]) -> None:
        ex = self.config.exclude
        self.cols = np.array([i for i, n in enumerate(names) if not n.startswith(ex)], dtype=np.int64) \
            if ex else None
        super()._build(names)

    def _make_net(self) -> nn.Module:
        c = self.config
        return _Net(len(self._columns()), c.channels, c.kernel, c.hidden, c.skip)

    def _columns(self) -> tuple[str, ...]:
        """The names of the features fed to the network, in order."""
        assert self.names is not None
        return self.names if self.cols is None else tuple(self.names[i] for i in self.cols)

    def _vector(self, x: dict[str, float]) -> tuple[bytes, np.ndarray]:
        """(matching key, clean float32 vector of the network's features) of ``x`` in ``names`` order."""
        assert self.names is not None
        raw = np.array([x.get(n, 0.0) for n in self.names], dtype=np.float64)
        return raw.tobytes(), self._clean(raw if self.cols is None else raw[self.cols])


def _apply_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` (process-wide) unless ``n`` is 0 or already set."""
    if n and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _arrays(obj: Any) -> Any:
    """A state dict with every tensor as a NumPy array (a copy, on the CPU): what a pickle of the model holds.

    Reading such a pickle (a model bundle, :func:`models.bundle.loads`) thus
    never runs torch's own unpickling.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy().copy()
    if isinstance(obj, dict):
        return {k: _arrays(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_arrays(v) for v in obj]
    return obj


def _tensors(obj: Any) -> Any:
    """The inverse of :func:`_arrays` (tensors, as in a snapshot of an older version, pass as they are)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))  # a writable copy
    if isinstance(obj, dict):
        return {k: _tensors(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_tensors(v) for v in obj]
    return obj

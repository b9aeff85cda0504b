"""Hyper-parameters of the window learners: the CNN-GRU (:mod:`models.cnn_gru`) and what they share.

Kept apart from the networks so that reading the settings never imports
torch: torch is imported only when such a learner is built.
:class:`WindowLearnerConfig` holds what every learner over a rolling window
of bars has (the window, the online schedule, the target, the offline
epochs); :class:`CNNGRUConfig` adds the CNN-GRU's network, and
:class:`models.deeplob_config.DeepLOBConfig` the book network's.

>>> CNNGRUConfig(window=8, kernel=3).pending_limit
32
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["CNNGRUConfig", "WindowLearnerConfig"]


class WindowLearnerConfig(BaseModel):
    """What every window learner (:class:`models.cnn_gru.WindowLearner`) is configured with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(60, ge=2, description="Bars of feature vectors the network reads per forecast.")
    hidden: int = Field(32, ge=1, description="Hidden size of the GRU.")
    kernel: int = Field(3, ge=1, description="Kernel size (bars) of the convolution over time; at most window.")
    buffer: int = Field(300, ge=1, description="Rolling memory of labelled (window, target) examples trained on.")
    retrain_every: int = Field(20, ge=1, description="Retrain after every this many labelled examples.")
    steps: int = Field(4, ge=1, description="Adam steps per retrain (bounds its cost; no wall-clock limit).")
    batch: int = Field(32, ge=1, description="Mini-batch size, drawn without replacement from the memory.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="Adam L2 weight decay.")
    seed: int = Field(0, ge=0, description="Seed of the parameter initialization and mini-batch sampling.")
    device: str = Field("cpu", description="Torch device, e.g. 'cpu' or 'cuda'; bitwise determinism is "
                        "promised on the CPU only.")
    threads: int = Field(1, ge=0, description="torch.set_num_threads value applied when an instance is created "
                         "or restored. PROCESS-WIDE: it sets torch's shared intra-op thread pool for every "
                         "user in the process. 0 leaves torch's setting alone.")
    clip_grad: float = Field(1.0, ge=0, description="Max gradient norm per step; 0 disables clipping.")
    clip_x: float = Field(10.0, gt=0, description="Feature values are clipped to [-clip_x, clip_x]; "
                          "non-finite ones become 0.")
    max_pending: int | None = Field(None, ge=1, description="Most forecasts kept waiting for "
                                       "their target (the oldest are dropped); None means 4 * window. "
                                       "Must exceed the horizon in bars.")
    online_lr: float | None = Field(None, gt=0, description="Adam learning rate of the online steps; None: lr. "
                                    "Lower keeps more of what offline epochs learnt.")
    objective: Literal["return", "direction"] = Field(
        "return", description="'return': squared error on the standardized return. 'direction': binary "
        "cross-entropy on its sign (zero returns skipped), like the logistic learner: the forecast is "
        "(2 P(up) - 1) x the mean absolute return, and P(up) goes to the signals.")
    offline_epochs: int = Field(
        20, ge=0, description="When a model bundle is made (ticklet backtest --save-models), epochs of training "
        "from a fresh network on every labelled example of the run, in time order: the earlier part trains, "
        "the later (offline_val) validates and stops it early. 0: the bundle keeps the online network.")
    offline_val: float = Field(0.2, gt=0, lt=1, description="Share of the run's labelled examples, the latest, "
                               "that validate the offline epochs (never trained on by them).")
    offline_patience: int = Field(3, ge=1, description="Offline training stops after this many epochs without a "
                                  "better validation loss; the best epoch's network is kept.")
    offline_batch: int = Field(128, ge=1, description="Mini-batch size of the offline epochs.")
    offline_max: int = Field(500_000, ge=1, description="Most feature vectors kept for offline training (the "
                             "oldest are dropped beyond it): at most this x features float32 values in memory, "
                             "only while a bundle is being made.")

    @model_validator(mode="after")
    def _kernel_fits(self) -> WindowLearnerConfig:
        if self.kernel > self.window:
            raise ValueError(f"kernel ({self.kernel}) must not exceed window ({self.window})")
        return self

    @property
    def pending_limit(self) -> int:
        """The effective bound of the pending-forecast FIFO."""
        return self.max_pending if self.max_pending is not None else 4 * self.window


class CNNGRUConfig(WindowLearnerConfig):
    """Hyper-parameters of :class:`CNNGRUModel`: the window learner's, and its network's."""

    channels: int = Field(16, ge=1, description="Output channels of the 1-D convolution over time.")
    skip: bool = Field(False, description="Add to the network's output a linear term of the last feature vector "
                       "(a logistic or linear regression inside the network, which the GRU's part adds to).")
    exclude: tuple[str, ...] = Field(
        (), description="Features not fed to the network, by name prefix (e.g. [\"swt_\"] leaves out the SWT "
        "features).")

"""Hyper-parameters of the DeepLOB-style book learner (:mod:`models.deeplob`).

Kept apart from the network so that reading the settings never imports
torch. What every window learner has (the online schedule, the target, the
offline epochs) is :class:`models.cnn_gru_config.WindowLearnerConfig`'s;
here is the book network's, and shorter defaults for its window and GRU.

>>> c = DeepLOBConfig()
>>> c.levels, c.window, c.pending_limit
(10, 20, 80)
"""

from __future__ import annotations

from pydantic import Field

from models.cnn_gru_config import WindowLearnerConfig

__all__ = ["DeepLOBConfig"]


class DeepLOBConfig(WindowLearnerConfig):
    """Hyper-parameters of :class:`models.deeplob.DeepLOBModel`."""

    window: int = Field(20, ge=2, description="Bars of book snapshots (one per bar) the network reads per forecast.")
    hidden: int = Field(16, ge=1, description="Hidden size of the GRU over the bars.")
    levels: int = Field(10, ge=1, description="Book levels per side read (lob_ap1..lob_bq<levels>, 1 the best); "
                        "a level the row lacks reads as 0, the scaled mean.")
    filters: int = Field(8, ge=1, description="Channels of each convolution over the book.")
    kernel: int = Field(4, ge=1, description="Bars spanned by the convolution over time after each spatial one "
                        "(DeepLOB's (4 x 1)); at most window.")
    inception: bool = Field(True, description="An inception module after the convolutions: (3 x 1) and (5 x 1) "
                            "convolutions over time and a (3 x 1) max-pool, side by side, each behind a 1 x 1.")

"""Causal denoising with the Stationary Wavelet Transform (PyWavelets).

The transform sees only a trailing window of past values and only the
window's **last** reconstructed point is kept: reconstructions of earlier
points would use values that were in their future. Windows are extended by
reflection of their own past (``boundary="symmetric"``) before the periodic
SWT, so the last point is not contaminated by a wrap-around to the window's
start.

Thresholds (on the detail coefficients, noise level ``sigma`` from the median
absolute finest detail, ``sigma = MAD / 0.6745``):

- ``universal``: Donoho-Johnstone ``sigma * sqrt(2 ln n)``;
- ``minimax``: ``sigma * (0.3936 + 0.1829 log2 n)``;
- ``bayes``: BayesShrink, per level ``sigma^2 / sigma_x``.

Examples
--------
A random walk observed with noise: the denoised last point is closer to the
truth than the raw last point, on average over 100 paths.

>>> import numpy as np
>>> cfg = SWTConfig(window=64, level=3)
>>> err_raw = err_swt = 0.0
>>> for seed in range(100):
...     rng = np.random.default_rng(seed)
...     clean = np.cumsum(rng.normal(0, 0.02, 64))
...     noisy = clean + rng.normal(0, 0.05, 64)
...     last, energies = denoise_last(noisy, cfg)
...     err_swt += (last - clean[-1]) ** 2
...     err_raw += (noisy[-1] - clean[-1]) ** 2
>>> bool(err_swt < 0.6 * err_raw), len(energies)
(True, 3)
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
import pywt
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SWTConfig", "denoise_last", "denoise_last_reference"]


class SWTConfig(BaseModel):
    """Windowed SWT denoising."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(64, ge=8, description="Trailing window length in bars; a multiple of 2**level.")
    wavelet: str = Field("db4", description="PyWavelets discrete wavelet name, e.g. db4, sym8, haar.")
    level: int = Field(3, ge=1, le=8, description="Decomposition levels.")
    threshold: Literal["universal", "minimax", "bayes"] = Field(
        "universal", description="Threshold selection rule for the detail coefficients.")
    mode: Literal["soft", "hard", "garrote"] = Field("soft", description="Thresholding function.")
    boundary: Literal["symmetric", "periodic"] = Field(
        "symmetric", description="Extension of the window before the (periodic) SWT.")

    @model_validator(mode="after")
    def _check(self) -> SWTConfig:
        if self.window % (2**self.level):
            raise ValueError(f"window {self.window} must be a multiple of 2**level = {2**self.level}")
        pywt.Wavelet(self.wavelet)  # raises on an unknown name
        return self


def _thresholds(details: list[np.ndarray], sigma: float, n: int, rule: str) -> list[float]:
    if rule == "universal":
        return [sigma * math.sqrt(2.0 * math.log(n))] * len(details)
    if rule == "minimax":
        return [sigma * (0.3936 + 0.1829 * math.log2(n))] * len(details)
    out = []
    for d in details:  # bayes
        sx = math.sqrt(max(float(np.mean(d * d)) - sigma * sigma, 0.0))
        out.append(sigma * sigma / sx if sx > 0.0 else float(np.max(np.abs(d))))
    return out


def denoise_last_reference(window: np.ndarray, cfg: SWTConfig) -> tuple[float, list[float]]:
    """Denoise ``window`` with :func:`pywt.swt`/:func:`pywt.iswt` directly: the definition.

    Returns its last point and the mean detail energy of each level
    (coarsest first). :func:`denoise_last` computes the same thing faster.

    Parameters
    ----------
    window
        1-D array of length ``cfg.window``; the last value is the newest.
    cfg
        The transform's settings.
    """
    x = np.asarray(window, dtype=float)
    n = x.shape[0]
    if cfg.boundary == "symmetric":
        x = np.concatenate((x, x[::-1]))
    coeffs = pywt.swt(x, cfg.wavelet, level=cfg.level, trim_approx=True, norm=True)
    details = coeffs[1:]  # coarsest ... finest
    sigma = float(np.median(np.abs(details[-1][:n]))) / 0.6745
    energies = [float(np.mean(d[:n] * d[:n])) for d in details]
    if sigma > 0.0:
        ths = _thresholds([d[:n] for d in details], sigma, n, cfg.threshold)
        coeffs = [coeffs[0]] + [pywt.threshold(d, t, mode=cfg.mode) for d, t in zip(details, ths, strict=True)]
    rec = pywt.iswt(coeffs, cfg.wavelet, norm=True)
    return float(rec[n - 1]), energies


@functools.lru_cache(maxsize=32)
def _operators(cfg: SWTConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """The SWT as matrices, built by PyWavelets itself.

    The forward transform of the (extended) window is linear,
    ``coeffs = F @ window``, and with ``norm=True`` the SWT is a Parseval
    tight frame, so :func:`pywt.iswt` is its adjoint and the last
    reconstructed point is ``F0[:, n - 1] . coeffs``. Both come from one
    :func:`pywt.swt` of the identity. Memoized per config: a pure function
    of its immutable argument.
    """
    n = cfg.window
    m = 2 * n if cfg.boundary == "symmetric" else n
    f0 = np.concatenate(
        pywt.swt(np.eye(m), cfg.wavelet, level=cfg.level, trim_approx=True, norm=True, axis=0), axis=0
    )
    ext = np.eye(n)
    if cfg.boundary == "symmetric":
        ext = np.vstack((ext, ext[::-1]))
    return f0 @ ext, np.ascontiguousarray(f0[:, n - 1]), m


def denoise_last(window: np.ndarray, cfg: SWTConfig) -> tuple[float, list[float]]:
    """Denoise ``window`` and return its last point and the mean detail energy of each level (coarsest first).

    Same result as :func:`denoise_last_reference` (to rounding), about 10x
    faster: the transform and the last point's reconstruction are applied as
    precomputed matrices, and only the thresholding runs per call.

    Parameters
    ----------
    window
        1-D array of length ``cfg.window``; the last value is the newest.
    cfg
        The transform's settings.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.cumsum(np.random.default_rng(3).normal(size=64))
    >>> fast, ef = denoise_last(x, SWTConfig())
    >>> ref, er = denoise_last_reference(x, SWTConfig())
    >>> bool(abs(fast - ref) < 1e-9 and np.allclose(ef, er))
    True
    """
    fwd, rec, m = _operators(cfg)
    n = cfg.window
    c = (fwd @ np.asarray(window, dtype=float)).reshape(cfg.level + 1, m)
    details = c[1:]
    head = details[:, :n]
    energies = np.einsum("ij,ij->i", head, head) / n
    finest = np.abs(head[-1])
    k = n // 2
    part = np.partition(finest, (k - 1, k))
    sigma = float(part[k] if n % 2 else 0.5 * (part[k - 1] + part[k])) / 0.6745
    if sigma > 0.0:
        ths = np.array(_thresholds(list(head), sigma, n, cfg.threshold))[:, None]
        c[1:] = pywt.threshold(details, ths, mode=cfg.mode)  # all levels at once
    return float(rec @ c.ravel()), energies.tolist()

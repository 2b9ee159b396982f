"""Diffusers' timestep and sigma rules, reproduced from its documented behaviour.

Every diffusers scheduler turns ``num_inference_steps`` into a list of model timesteps (in training
steps ``0..T-1``) and, for the sigma-based classes, a list of noise levels ``s = sigma / alpha``.
The rules differ between class families, which is why a drop-in must know the family:

* ``timestep_spacing`` (``set_timesteps``):

  ====================== ============================== =======================================
  spacing                DDPM/DDIM/PNDM/Euler/LMS/Heun   DPMSolver/DEIS/UniPC ("multistep")
  ====================== ============================== =======================================
  ``leading``            ``k * (T // N) + offset``      ``k * (T // (N + 1)) + offset``, top
                                                        point dropped
  ``linspace``           ``linspace(0, T-1, N)``         ``linspace(0, T-1, N+1)`` rounded, last
                         (rounded for the integer        point dropped
                         classes, fractional for
                         Euler/LMS/Heun)
  ``trailing``           ``round(arange(T, 0, -T/N)) - 1`` (both)
  ====================== ============================== =======================================

* sigmas at fractional timesteps are interpolated *linearly in sigma* between training steps
  (``np.interp``), and stored in float32;
* Karras sigmas (Karras et al. 2022, eq. 5, ``rho = 7``) and exponential sigmas (uniform in
  ``log sigma``) span the first and last sigma of the list they convert; their timesteps are
  found by interpolating ``t`` linearly in ``log sigma`` between training steps.

These are written here from those rules, not taken from diffusers' code.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

SPACINGS = ("linspace", "leading", "trailing")


def train_sigmas(alphas_cumprod: Tensor) -> np.ndarray:
    """``sqrt((1 - ac) / ac)`` at every training step, in float32 like diffusers' tensors."""
    ac = alphas_cumprod.to(torch.float32)
    return (((1 - ac) / ac) ** 0.5).numpy()


def spaced_timesteps(spacing: str, T: int, N: int, offset: int, multistep: bool,
                     integral: bool = True) -> np.ndarray:
    """The ``N`` model timesteps of a spacing, noise to data, float64 (see the module table)."""
    if spacing not in SPACINGS:
        raise ValueError(f"timestep_spacing={spacing!r} is not one of {', '.join(SPACINGS)}")
    if spacing == "trailing":
        return np.round(np.arange(T, 0, -T / N)) - 1.0
    if spacing == "leading":
        if multistep:
            ratio = T // (N + 1)
            return (np.arange(0, N + 1) * ratio)[::-1][:-1].astype(np.float64) + offset
        return (np.arange(0, N) * (T // N))[::-1].astype(np.float64) + offset
    if multistep:
        return np.linspace(0, T - 1, N + 1).round()[::-1][:-1].copy()
    ts = np.linspace(0, T - 1, N, dtype=np.float64 if integral else np.float32)[::-1]
    return ts.round().copy() if integral else ts.astype(np.float64)


def sigmas_at(timesteps: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Sigma at (possibly fractional) timesteps, linear in sigma between training steps."""
    return np.interp(timesteps, np.arange(len(sigmas)), sigmas)


def timestep_of_sigma(s: np.ndarray, sigmas: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """The fractional timestep of each ``s``: linear in ``log sigma`` between training steps,
    clamped to ``[0, T - 1]``, computed in ``dtype`` (``np.float32`` where the class does the
    arithmetic on float32 tensors, as KDPM2-ancestral's midpoints; the logs of the training
    sigmas are float32 either way, as diffusers')."""
    log_train: np.ndarray = np.log(sigmas.astype(np.float32)).astype(dtype)
    log_s = np.log(np.maximum(np.asarray(s, dtype=dtype), dtype(1e-10)))
    low = np.clip(np.searchsorted(log_train, log_s, side="right") - 1, 0, len(log_train) - 2)
    w = np.clip((log_train[low] - log_s) / (log_train[low] - log_train[low + 1]), 0, 1)
    return ((1 - w) * low.astype(dtype) + w * (low + 1).astype(dtype)).astype(np.float64)


def karras_sigmas(s_max: float, s_min: float, N: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022), eq. 5: ``N`` sigmas from ``s_max`` to ``s_min``."""
    ramp = np.linspace(0, 1, N)
    hi, lo = s_max ** (1 / rho), s_min ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def exponential_sigmas(s_max: float, s_min: float, N: int) -> np.ndarray:
    """``N`` sigmas uniform in ``log sigma`` from ``s_max`` to ``s_min``."""
    return np.exp(np.linspace(math.log(s_max), math.log(s_min), N))


def beta_sigmas(s_max: float, s_min: float, N: int, a: float = 0.6, b: float = 0.6) -> np.ndarray:
    """``N`` sigmas from ``s_max`` to ``s_min`` at the quantiles ``1 - linspace(0, 1, N)`` of the
    Beta(``a``, ``b``) distribution, linear in sigma (Lee et al. 2024, "Beta Sampling is All You
    Need"; diffusers' ``use_beta_sigmas`` with ``a = b = 0.6``): steps concentrate at both ends."""
    try:
        from scipy.special import betaincinv
    except ImportError as e:  # pragma: no cover - scipy ships with the test extra
        raise ImportError("use_beta_sigmas needs scipy (pip install scipy)") from e
    q = betaincinv(a, b, 1.0 - np.linspace(0.0, 1.0, N))
    return s_min + q * (s_max - s_min)


def flow_shift(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """The time shift of rectified-flow samplers (Esser et al. 2024, eq. 23):
    ``shift s / (1 + (shift - 1) s)``."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def exponential_time_shift(mu: float, sigmas: np.ndarray) -> np.ndarray:
    """Resolution-dependent shift with ``shift = exp(mu)`` (Flux's ``time_shift_type="exponential"``)."""
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))


def linear_time_shift(mu: float, sigmas: np.ndarray) -> np.ndarray:
    """``time_shift_type="linear"``: ``mu / (mu + (1 / s - 1))``."""
    return mu / (mu + (1 / sigmas - 1))

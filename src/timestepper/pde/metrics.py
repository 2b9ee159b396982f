"""Rollout metrics: per-step MSE and normalised RMSE, Pearson correlation over time, the
high-correlation time, and the energy-spectrum error.

Predictions and references have shape ``(B, T, *space)``; per-step metrics reduce over space and
return ``(B, T)``.

The high-correlation time follows Kochkov et al. (2021) and Lippe et al. (2023): the time
until the Pearson correlation between prediction and reference first drops below a threshold
(0.8). Some code instead counts all steps whose correlation is above the threshold, which can
only be longer after a drop and recovery; ``mode="count"`` gives that variant for comparison.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _space_dims(x: Tensor) -> tuple[int, ...]:
    if x.ndim < 3:
        raise ValueError(f"expected (batch, time, *space), got shape {tuple(x.shape)}")
    return tuple(range(2, x.ndim))


def mse_per_step(pred: Tensor, ref: Tensor) -> Tensor:
    """Mean squared error over space: ``(B, T)``."""
    return (pred - ref).pow(2).mean(dim=_space_dims(ref))


def nrmse_per_step(pred: Tensor, ref: Tensor) -> Tensor:
    """``||pred - ref|| / ||ref||`` over space: ``(B, T)``."""
    d = _space_dims(ref)
    return (pred - ref).pow(2).sum(d).sqrt() / ref.pow(2).sum(d).sqrt()


def pearson_per_step(pred: Tensor, ref: Tensor) -> Tensor:
    """Pearson correlation over space between prediction and reference: ``(B, T)``."""
    d = _space_dims(ref)
    p = pred - pred.mean(d, keepdim=True)
    r = ref - ref.mean(d, keepdim=True)
    return (p * r).sum(d) / (p.pow(2).sum(d).sqrt() * r.pow(2).sum(d).sqrt())


def high_correlation_time(
    corr: Tensor, dt: float, *, threshold: float = 0.8, mode: str = "first"
) -> Tensor:
    """Time during which the correlation stays above ``threshold``.

    Args:
        corr: ``(B, T)`` correlations at times ``0, dt, ..., (T-1) dt`` (index 0 may be the
            initial state), or ``(T,)`` (e.g. a batch mean).
        mode: ``"first"``: ``dt`` times the index of the last step before the first drop below
            the threshold (a NaN counts as a drop); the whole horizon if it never drops.
            ``"count"``: ``dt`` times the number of steps after index 0 above the threshold.

    Returns:
        ``(B,)`` (or a scalar) float64 times.
    """
    if mode not in ("first", "count"):
        raise ValueError(f"mode must be 'first' or 'count', got {mode!r}")
    ok = (corr >= threshold) & torch.isfinite(corr)
    if mode == "count":
        return ok[..., 1:].sum(-1).to(torch.float64) * dt
    t = corr.shape[-1]
    bad = ~ok
    never = torch.full(bad.shape[:-1], t, dtype=torch.int64, device=corr.device)
    first_bad = torch.where(bad.any(-1), bad.to(torch.int64).argmax(-1), never)
    last_good = torch.where(first_bad > 0, first_bad - 1, torch.zeros_like(first_bad))
    return last_good.to(torch.float64) * dt


def energy_spectrum(u: Tensor) -> Tensor:
    """1-D energy spectrum ``|u_hat_k|^2`` over the last axis (``rfft``), averaged over batch."""
    return torch.fft.rfft(u, dim=-1, norm="forward").abs().pow(2).mean(0)


def spectrum_error(pred: Tensor, ref: Tensor) -> Tensor:
    """Per-step relative error of the batch-mean energy spectrum of 1-D fields:
    ``|| E_pred(k) - E_ref(k) ||_1 / || E_ref(k) ||_1`` over wavenumbers, shape ``(T,)``."""
    ep, er = energy_spectrum(pred), energy_spectrum(ref)
    return (ep - er).abs().sum(-1) / er.abs().sum(-1)


__all__ = [
    "energy_spectrum",
    "high_correlation_time",
    "mse_per_step",
    "nrmse_per_step",
    "pearson_per_step",
    "spectrum_error",
]

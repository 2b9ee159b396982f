"""The phi functions of exponential integrators, evaluated stably in float64.

``phi_0(z) = exp(z)`` and ``phi_{k+1}(z) = (phi_k(z) - 1/k!) / z``, so ``phi_k(0) = 1/k!``
(Hochbruck & Ostermann 2010, eq. 2.10). The recurrence cancels catastrophically for small
``|z|``; there a Taylor series ``phi_k(z) = sum_j z^j / (j + k)!`` is used instead. Both the
diffusion solvers (DDIM, DPM-Solver, DEIS, UniPC: ``z = -h`` in log-SNR) and ETD schemes for PDEs
(``z = h L``) use these functions. ``z = -inf`` gives ``phi_k = 0`` for ``k >= 1`` (a step to zero
noise).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

_SERIES_RADIUS = 0.5
_SERIES_TERMS = 20  # |z| < 0.5: truncation below 0.5^20 / 20! ~ 4e-25


def phi(k: int, z: Tensor | float) -> Tensor:
    """``phi_k(z)`` for ``k >= 0``, elementwise, computed in float64 (complex128 for complex z).

    Args:
        k: the index of the phi function (0, 1, 2, ...).
        z: real or complex tensor (or number).

    Returns:
        A float64 (or complex128) tensor shaped like ``z``, on ``z``'s device. CPU inputs (the
        per-grid coefficient tables) are evaluated with NumPy, whose per-call overhead on small
        arrays is a fraction of torch's; the arithmetic is the same.
    """
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    z = torch.as_tensor(z)
    z = z.to(torch.complex128) if z.is_complex() else z.to(torch.float64)
    if z.device.type == "cpu" and not z.requires_grad:
        return torch.from_numpy(np.asarray(_phi(np, k, z.numpy())))
    return _phi(torch, k, z)


def _phi(xp, k: int, z):
    """The evaluation, written once for any array namespace ``xp`` (``numpy`` or ``torch``)."""
    if k == 0:
        return xp.exp(z)
    small = abs(z) < _SERIES_RADIUS
    # Recurrence on the large-|z| part (small entries replaced by a safe value first).
    zr = xp.where(small, xp.ones_like(z), z)
    p = xp.expm1(zr) / zr  # phi_1 without cancellation
    for j in range(1, k):
        p = (p - 1.0 / math.factorial(j)) / zr
    if not bool(small.any()):
        return p
    zs = xp.where(small, z, xp.zeros_like(z))
    series = xp.zeros_like(z)
    for j in reversed(range(_SERIES_TERMS)):
        series = series * zs + 1.0 / math.factorial(j + k)
    return xp.where(small, series, p)


def phi_rows(kmax: int, z) -> np.ndarray:
    """``[phi_1(z), .., phi_kmax(z)]`` for a real float64 NumPy array ``z`` as one ``(kmax, n)``
    array: the arithmetic of :func:`phi` elementwise (the same recurrence, the same Horner series,
    so the values are bit-identical), with every ``k`` evaluated in one pass. The per-grid
    coefficient tables use it, where the per-call overhead of separate evaluations dominates."""
    z = np.asarray(z, dtype=np.float64)
    small = np.abs(z) < _SERIES_RADIUS
    zr = np.where(small, 1.0, z)
    p = np.expm1(zr) / zr
    rows = [p]
    for j in range(1, kmax):
        p = (p - 1.0 / math.factorial(j)) / zr
        rows.append(p)
    out = np.stack(rows)
    if not small.any():
        return out
    zs = np.where(small, z, 0.0)
    series = np.zeros_like(out)
    coeffs = _series_coefficients(kmax)
    for j in reversed(range(_SERIES_TERMS)):
        series = series * zs + coeffs[j]
    return np.where(small, series, out)


@functools.lru_cache(maxsize=16)
def _series_coefficients(kmax: int) -> np.ndarray:
    """``c[j, k - 1, 0] = 1 / (j + k)!``: the Horner coefficients of :func:`phi_rows`' series."""
    return np.array([[[1.0 / math.factorial(j + k)] for k in range(1, kmax + 1)]
                     for j in range(_SERIES_TERMS)])

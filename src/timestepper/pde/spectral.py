"""Pseudo-spectral operators on periodic domains: wavenumbers and 2/3 de-aliasing masks.

Fields are real; their Fourier coefficients come from ``torch.fft.rfft`` (1-D, last axis) or
``torch.fft.rfft2`` (2-D, last two axes, ``x`` the last). Wavenumbers are in float64. The 2/3 rule
(Orszag 1971) zeroes every mode with ``|index| > n/3`` in the quadratic products, so the aliased
part of a product of two truncated fields falls on discarded modes.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


def check_grid(length: float, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 4 or n % 2:
        raise ValueError(
            f"n (grid points) must be an even integer >= 4 (an rfft grid with its Nyquist mode, "
            f"on which the 2/3 de-aliasing rule keeps |k| <= n/3), got {n!r}"
        )
    if not (isinstance(length, (int, float)) and math.isfinite(length) and length > 0):
        raise ValueError(f"length must be a positive finite number, got {length!r}")


def wavenumbers_rfft(length: float, n: int, *, odd: bool = False) -> Tensor:
    """Angular wavenumbers ``2 pi j / length`` of ``rfft`` modes ``j = 0..n/2`` (float64).

    With ``odd=True`` the Nyquist mode is zeroed, as it must be for odd derivatives of a real
    field (its Fourier coefficient has no sign to pick; Trefethen 2000, Spectral Methods, ch. 3).
    """
    k = torch.arange(n // 2 + 1, dtype=torch.float64) * (2 * math.pi / length)
    if odd:
        k[-1] = 0.0
    return k


def wavenumbers_fft(length: float, n: int, *, odd: bool = False) -> Tensor:
    """Angular wavenumbers of full ``fft`` modes in ``fftfreq`` order (float64)."""
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64) * (2 * math.pi / length)
    if odd:
        k[n // 2] = 0.0
    return k


def dealias_mask_1d(n: int) -> Tensor:
    """Boolean mask of ``rfft`` modes kept by the 2/3 rule (``index <= n/3``)."""
    return torch.arange(n // 2 + 1) <= n // 3


def dealias_mask_2d(n: int) -> Tensor:
    """Boolean ``(n, n//2+1)`` mask of ``rfft2`` modes kept by the 2/3 rule in both directions."""
    ky = torch.fft.fftfreq(n, d=1.0 / n).abs()
    kx = torch.arange(n // 2 + 1)
    return (ky[:, None] <= n // 3) & (kx[None, :] <= n // 3)


def complex_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype that holds the Fourier coefficients of a real field of ``dtype``."""
    if dtype == torch.float64:
        return torch.complex128
    if dtype == torch.float32:
        return torch.complex64
    raise TypeError(f"fields must be float32 or float64, got {dtype}")


__all__ = [
    "check_grid",
    "complex_dtype_for",
    "dealias_mask_1d",
    "dealias_mask_2d",
    "wavenumbers_fft",
    "wavenumbers_rfft",
]

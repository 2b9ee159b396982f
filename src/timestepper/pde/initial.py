"""Random initial conditions, reproducible per sample.

* 1-D: a random sum of sines ``u0(x) = sum_{j=1}^{J} A_j sin(2 pi l_j x / L + phi_j)`` with
  ``A_j ~ U[-a, a]``, ``l_j ~ U{1..l_max}``, ``phi_j ~ U[0, 2 pi)`` (Bar-Sinai et al. 2019;
  the Kuramoto–Sivashinsky data of Brandstetter et al. 2022 and Lippe et al. 2023 use ``J = 10``,
  ``a = 0.5``, ``l_max = 3``).
* 2-D: a band-limited Gaussian random vorticity field with random phases on wavenumbers
  ``1 <= |k| <= k_max``, normalised to unit RMS.

Each sample draws from its own generator seeded by ``(seed, stream, index)``, so a data set is
the same whatever the batch size or number of workers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def sample_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """A CPU generator for sample ``index`` of ``stream`` (e.g. 0 = train, 1 = test)."""
    state = np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(
        2, np.uint64
    )
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def sum_of_sines(
    x: Tensor,
    length: float,
    generator: torch.Generator,
    *,
    terms: int = 10,
    amplitude: float = 0.5,
    max_wavenumber: int = 3,
) -> Tensor:
    """One random sum of sines on the float64 grid ``x`` (see the module docstring)."""
    a = (torch.rand(terms, generator=generator, dtype=torch.float64) * 2 - 1) * amplitude
    k = torch.randint(1, max_wavenumber + 1, (terms,), generator=generator).to(torch.float64)
    ph = torch.rand(terms, generator=generator, dtype=torch.float64) * (2 * math.pi)
    arg = (2 * math.pi / length) * k[:, None] * x[None, :] + ph[:, None]
    return (a[:, None] * torch.sin(arg)).sum(0)


def random_vorticity(n: int, generator: torch.Generator, *, max_wavenumber: int = 4) -> Tensor:
    """A band-limited random vorticity field on an ``n x n`` grid (float64, unit RMS)."""
    ky = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)[:, None]
    kx = torch.arange(n // 2 + 1, dtype=torch.float64)[None, :]
    kk = torch.sqrt(kx**2 + ky**2)
    band = ((kk >= 1) & (kk <= max_wavenumber)).to(torch.float64)
    re = torch.randn(n, n // 2 + 1, generator=generator, dtype=torch.float64)
    im = torch.randn(n, n // 2 + 1, generator=generator, dtype=torch.float64)
    w = torch.fft.irfft2(torch.complex(re, im) * band, s=(n, n))
    return w / w.pow(2).mean().sqrt()


__all__ = ["random_vorticity", "sample_generator", "sum_of_sines"]

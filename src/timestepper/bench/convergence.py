"""Empirical order of convergence of a diffusion solver on the exact Gaussian mixture.

The error of a solve from fixed noise, against the float64 reference solution of the same
probability-flow ODE, behaves like ``C h^p`` for step size ``h``; ``p`` is the least-squares
slope of ``log error`` against ``log h`` over refined grids (uniform in log-SNR, ending at
``sigma_min`` so every step is a regular one).
"""

from __future__ import annotations

import math

import torch

from ..core.solver import Solver
from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import make_grid
from ..sampling.sample import sample
from .gmm import GaussianMixture
from .metrics import trajectory_error


def reference_endpoint(gmm: GaussianMixture, denoiser: Denoiser, noise: torch.Tensor, steps: int,
                       grid: str = "logsnr", final: str = "sigma_min") -> torch.Tensor:
    """The exact solution at the end of ``make_grid(schedule, steps, grid, final)`` from ``noise``."""
    g = make_grid(denoiser.schedule, steps, grid, final=final)
    a0, s0 = float(g.alpha[0]), float(g.sigma[0])
    x_init = noise.to(torch.float64) * math.sqrt(a0 * a0 + s0 * s0)
    y_end = gmm.reference_solution(x_init / a0, s0 / a0, float(g.sigma[-1] / g.alpha[-1]))
    return y_end * float(g.alpha[-1])


def empirical_order(solver: str | Solver, gmm: GaussianMixture, denoiser: Denoiser, noise: torch.Tensor,
                    steps: tuple[int, ...] = (10, 20, 40, 80), solver_options: dict | None = None,
                    reference: torch.Tensor | None = None) -> float:
    """Slope of log error vs log step size over ``steps`` (float64 throughout).

    ``reference`` (from :func:`reference_endpoint`) may be passed to share one reference solve
    between solvers; it depends on the grid's end points only, not on the number of steps.
    """
    ref = reference_endpoint(gmm, denoiser, noise, steps[0]) if reference is None else reference
    errs = []
    for n in steps:
        x = sample(denoiser, noise.to(torch.float64), solver, steps=n, grid="logsnr", final="sigma_min",
                   solver_options=solver_options)
        errs.append(trajectory_error(x, ref))
    logh = torch.tensor([-math.log(n) for n in steps], dtype=torch.float64)
    loge = torch.log(torch.tensor(errs, dtype=torch.float64))
    a = torch.stack([logh, torch.ones_like(logh)], dim=1)
    slope = torch.linalg.lstsq(a, loge.unsqueeze(1)).solution[0, 0]
    return float(slope)

"""DDIM (Song, Meng & Ermon 2021), deterministic (eta = 0).

``x_{i+1} = (sigma_{i+1} / sigma_i) x_i + alpha_{i+1} (1 - e^{-h_i}) x0_theta(x_i, t_i)``
(eq. 12 rewritten with ``h = lambda_{i+1} - lambda_i``); this is the first-order exponential
integrator of the data-prediction ODE (Lu et al. 2022b, DPM-Solver++, eq. 9 with k = 1), and the
first step of every multistep method here. It equals Euler's method on the scaled state
``x / alpha`` in ``sigma / alpha`` (Karras et al. 2022, Section 4).
"""

from __future__ import annotations

import torch

from ..core.solver import register
from .base import DiffusionSolver, lincomb, step_sizes


def first_order_coefficients(grid) -> tuple[list, list]:
    """``(sigma_{i+1} / sigma_i, -alpha_{i+1} expm1(-h_i))`` for every step, float64 -> floats."""
    h = step_sizes(grid)
    cx = grid.sigma[1:] / grid.sigma[:-1]
    cd = -grid.alpha[1:] * torch.expm1(-h)
    return cx.tolist(), cd.tolist()


@register("ddim")
class DDIM(DiffusionSolver):
    """Deterministic DDIM (Song et al. 2021, eq. 12). Order 1, one model call per step."""

    order = 1
    nfe_per_step = 1

    def coefficients(self, grid):
        cx, cd = first_order_coefficients(grid)
        return {"cx": cx, "cd": cd}

    def step(self, term, t0, t1, x, state):
        i, c = state.i, state.coeffs
        d = term.data_prediction(x, i)
        return lincomb(x, c["cx"][i], [(c["cd"][i], d)]), state.advance(), None

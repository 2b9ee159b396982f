"""DDIM (Song, Meng & Ermon 2021), deterministic (eta = 0) or stochastic (eta > 0).

``x_{i+1} = (sigma_{i+1} / sigma_i) x_i + alpha_{i+1} (1 - e^{-h_i}) x0_theta(x_i, t_i)``
(eq. 12 rewritten with ``h = lambda_{i+1} - lambda_i``); this is the first-order exponential
integrator of the data-prediction ODE (Lu et al. 2022b, DPM-Solver++, eq. 9 with k = 1), and the
first step of every multistep method here. It equals Euler's method on the scaled state
``x / alpha`` in ``sigma / alpha`` (Karras et al. 2022, Section 4).

With ``eta > 0`` (DDIM eq. 12 with the noise scale of eq. 16) the step adds fresh noise of standard
deviation ``c = eta * sigma_{i+1} sqrt(1 - e^{-2 h})`` and takes the deterministic step to the
reduced noise level ``sigma_down = sqrt(sigma_{i+1}^2 - c^2)``:
``x_{i+1} = (sigma_down / sigma_i) x_i + alpha_{i+1} (1 - (sigma_down / sigma_{i+1}) e^{-h}) x0
+ c z``.
``eta = 1`` is the DDPM ancestral step (Ho et al. 2020, eqs. 6-7: the posterior
``q(x_{i+1} | x_i, x0)``), and in the scaled state it is exactly k-diffusion's Euler-ancestral
step with ``(sigma_down, sigma_up) = get_ancestral_step(s_i, s_{i+1}, eta)`` for ``eta <= 1``.
"""

from __future__ import annotations

import torch

from ..core.solver import register
from .base import lincomb, step_sizes
from .noise import StochasticDiffusionSolver


def first_order_coefficients(grid) -> tuple[list, list]:
    """``(sigma_{i+1} / sigma_i, -alpha_{i+1} expm1(-h_i))`` for every step, float64 -> floats."""
    h = step_sizes(grid)
    cx = grid.sigma[1:] / grid.sigma[:-1]
    cd = -grid.alpha[1:] * torch.expm1(-h)
    return cx.tolist(), cd.tolist()


def ancestral_coefficients(grid, eta: float) -> tuple[list, list, list]:
    """``(cx, cd, cn)`` of the stochastic DDIM step ``x' = cx x + cd x0 + cn z`` (float64).

    ``cn = eta sigma_{i+1} sqrt(-expm1(-2h))``; ``rho = sigma_down / sigma_{i+1} =
    sqrt(1 - eta^2 (1 - e^{-2h}))``; ``cx = rho sigma_{i+1} / sigma_i``;
    ``cd = -alpha_{i+1} expm1(log(rho) - h)`` (no cancellation for small ``h``). A step to zero
    noise (``h = inf``) gives ``(0, alpha_{i+1}, 0)``.
    """
    h = step_sizes(grid)
    one_minus_e2h = -torch.expm1(-2.0 * h)
    cn = eta * grid.sigma[1:] * torch.sqrt(one_minus_e2h)
    log_rho = 0.5 * torch.log1p(-(eta * eta) * one_minus_e2h)
    cx = torch.exp(log_rho) * grid.sigma[1:] / grid.sigma[:-1]
    cd = -grid.alpha[1:] * torch.expm1(log_rho - h)
    return cx.tolist(), cd.tolist(), cn.tolist()


@register("ddim")
class DDIM(StochasticDiffusionSolver):
    """DDIM (Song et al. 2021, eq. 12). Order 1, one model call per step.

    Args:
        eta: noise scale of eq. 16 in ``[0, 1]``; 0 (default) is the deterministic sampler, 1 the
            DDPM ancestral sampler.
        s_noise: multiplier of the added noise (k-diffusion's ``s_noise``; 1 is the algorithm).
        noise: ``"normal"`` (draws from the term's generator) or ``"brownian"``
            (:mod:`timestepper.solvers.noise`).
    """

    order = 1
    nfe_per_step = 1

    def __init__(self, eta: float = 0.0, s_noise: float = 1.0, noise: str = "normal") -> None:
        super().__init__(eta, s_noise, noise)

    def coefficients(self, grid):
        if not self.is_stochastic:
            cx, cd = first_order_coefficients(grid)
            return {"cx": cx, "cd": cd}
        cx, cd, cn = ancestral_coefficients(grid, self.eta)
        return {"cx": cx, "cd": cd, "cn": [self.s_noise * c for c in cn]}

    def step(self, term, t0, t1, x, state):
        i, c = state.i, state.coeffs
        # x1 = cx x + cd (a x + b m): the prediction's conversion folded in, one new tensor
        a, b = term.data_coefficients(i)
        cx, cd = c["cx"][i], c["cd"][i]
        x1 = lincomb(x, cx + cd * a, [(cd * b, term.model_output(x, i))])
        return self.add_noise(x1, x, state), state.advance(), None

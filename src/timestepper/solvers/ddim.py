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

from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.term import EvalPoint
from .base import lincomb, may_overwrite, nonzero, step_sizes
from .noise import Draw, StochasticDiffusionSolver, add_noise
from .registry import register


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
    return ancestral_between(grid.sigma[:-1], grid.sigma[1:], grid.alpha[1:], step_sizes(grid), eta)


def ancestral_between(sigma0: torch.Tensor, sigma1: torch.Tensor, alpha1: torch.Tensor,
                      h: torch.Tensor, eta: float) -> tuple[list, list, list]:
    """:func:`ancestral_coefficients` of steps from noise levels ``sigma0`` to ``(alpha1,
    sigma1)``, ``h`` their log-SNR increments (any pairs of points, not only a grid's steps)."""
    one_minus_e2h = -torch.expm1(-2.0 * h)
    cn = eta * sigma1 * torch.sqrt(one_minus_e2h)
    log_rho = 0.5 * torch.log1p(-(eta * eta) * one_minus_e2h)
    cx = torch.exp(log_rho) * sigma1 / sigma0
    cd = -alpha1 * torch.expm1(log_rho - h)
    return cx.tolist(), cd.tolist(), cn.tolist()


@dataclass(slots=True)
class DDIMRow:
    """``x1 = cx x + cm m + cn z``: the prediction's conversion ``x0 = a x + b m`` folded into
    ``cx`` and ``cm`` (``m`` the raw model output at ``point``)."""

    point: EvalPoint
    cx: float | None
    cm: float
    cn: float | None
    draw: Draw | None


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
    handles_pure_noise = True
    reuses_state_memory = True

    def __init__(self, eta: float = 0.0, s_noise: float = 1.0, noise: str = "normal") -> None:
        super().__init__(eta, s_noise, noise)

    def table(self, term, grid, points, x0):
        if self.is_stochastic:
            cx, cd, cn = ancestral_coefficients(grid, self.eta)
        else:
            (cx, cd), cn = first_order_coefficients(grid), [0.0] * grid.steps
        draws = self.noise_draws(term, grid, x0)
        return [DDIMRow(p, nonzero(c + d * p.a), d * p.b, n, z)
                for p, c, d, n, z in zip(points, cx, cd, self.noise_scales(cn), draws)]

    def advance(self, term, x, state, row):
        return self._advance(term, x, row, reuse_x=False), state, None, 1

    def step_into(self, term, t0, t1, x, state, row):
        return self._advance(term, x, row, reuse_x=True), state, None, 1

    def _advance(self, term, x: Tensor, row: DDIMRow, reuse_x: bool) -> Tensor:
        m = term.model_output(x, row.point)
        into = reuse_x and may_overwrite(x, m)
        return add_noise(lincomb(x, row.cx, ((row.cm, m),), into_x=into), x, row.cn, row.draw, x_owned=into)


register("ddim", DDIM, summary="DDIM (Song et al. 2021, eq. 12; eta > 0: eq. 16). Order 1.")
register("euler", DDIM, eta=0.0,
         summary="Euler's method on dy/ds = (y - D) / s (Karras et al. 2022, Algorithm 1 without "
                 "line 6; k-diffusion's sample_euler): DDIM's update in the state x. Order 1.")
register("ddpm", DDIM, eta=1.0,
         summary="DDPM ancestral sampling (Ho et al. 2020, Algorithm 2 on any grid): DDIM with "
                 "eta = 1. Order 1.")
register("euler-ancestral", DDIM, defaults={"eta": 1.0},
         summary="Euler ancestral (k-diffusion sample_euler_ancestral; diffusers "
                 "EulerAncestralDiscreteScheduler): the stochastic DDIM step. Order 1.")

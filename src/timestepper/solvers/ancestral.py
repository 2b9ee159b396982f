"""Ancestral samplers: DPM-Solver++(2S) ancestral and DPM-2 ancestral (DDPM and Euler ancestral
are DDIM with ``eta = 1``, registered in :mod:`timestepper.solvers.ddim`).

An ancestral step (Ho et al. 2020; Song et al. 2021 DDIM eq. 16; Karras et al. 2022 /
k-diffusion's ``get_ancestral_step``) splits the move from ``sigma_i`` to ``sigma_{i+1}`` into a
deterministic step to ``sigma_down`` and fresh noise of standard deviation ``sigma_up`` with
``sigma_down^2 + sigma_up^2 = sigma_{i+1}^2`` (in the scaled state ``x / alpha``). The coefficient
table is :func:`timestepper.solvers.ddim.ancestral_coefficients`; the three samplers differ only in
the deterministic part:

* ``ddpm``: the posterior mean ``E[x_{i+1} | x_i, x0_theta]`` (Ho et al. 2020, eqs. 6-7; DDIM eq. 16
  with ``eta = 1``), diffusers' ``DDPMScheduler`` with ``variance_type="fixed_small"``.
* ``euler-ancestral``: k-diffusion's ``sample_euler_ancestral`` (the Euler step to ``sigma_down``);
  algebraically the stochastic DDIM step with the same ``eta``.
* ``dpmpp-2s-ancestral``: the deterministic part is one DPM-Solver++(2S) step to ``sigma_down``
  (Lu et al. 2022b, Algorithm 1 with ``r = 1/2``): a model call at the log-SNR midpoint. Two model
  calls per step (one on a step to zero noise).
* ``dpm-2-ancestral``: the deterministic part is one DPM-2 step to ``sigma_down`` (Karras et al.
  2022's DPM-Solver-2 variant, k-diffusion's ``sample_dpm_2_ancestral``): the midpoint rule on
  ``dy/drho = eps`` with its stage at ``rho_mid = sqrt(rho_i rho_down)``, the log-SNR midpoint of
  the same sub-step. Two model calls per step (one on a step to zero noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.grids import SamplingGrid
from .base import nonzero, step_sizes, ve_sigmas
from .ddim import ancestral_coefficients
from .dpm2 import MidpointRow, midpoint_step
from .noise import Draw, StochasticDiffusionSolver, add_noise
from .registry import register


@dataclass(slots=True)
class AncestralRow(MidpointRow):
    """Step ``i`` of DPM-Solver++(2S) ancestral: the deterministic two-stage step in data
    prediction (``u = cm x + em x0(x)``, then ``cx x + ce x0(u at mid)``; ``mid=None``: the
    first-order step), then ``+ cn z``."""

    cn: float | None = None
    draw: Draw | None = None


@register("dpmpp-2s-ancestral")
class DPMSolverPP2SAncestral(StochasticDiffusionSolver):
    """DPM-Solver++(2S) ancestral (k-diffusion ``sample_dpmpp_2s_ancestral``).

    From ``x_i`` the step goes deterministically to ``sigma_down`` with DPM-Solver++(2S) (Lu et al.
    2022b, Algorithm 1, ``r = 1/2``): with ``h = lambda_down - lambda_i`` and the midpoint
    ``lambda_m = lambda_i + h / 2``,
    ``u = (sigma_m / sigma_i) x_i - alpha_m expm1(-h/2) x0(x_i, t_i)``, then
    ``x_{i+1} = cx x_i + cd x0(u, t_m) + cn z`` with the ancestral coefficients ``cx, cd, cn``.
    A step to zero noise is the first-order (Euler) step. Order 2 for ``eta = 0``.

    Args:
        eta: ancestral noise scale in ``[0, 1]`` (default 1).
        s_noise: multiplier of the added noise.
        noise: ``"normal"`` or ``"brownian"``.
    """

    order = 2
    nfe_per_step = 2
    prediction = "data"  # what the two-stage step combines

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, noise: str = "normal") -> None:
        super().__init__(eta, s_noise, noise)

    def table(self, term, grid, points, x0):
        cx, cd, cn = ancestral_coefficients(grid, self.eta)
        mid_grid, two_stage, cu_x, cu_d = _midpoints(grid, term.schedule, self.eta)
        mids = term.points(mid_grid, x0)
        draws = self.noise_draws(term, grid, x0)
        return [AncestralRow(points[i], mids[i] if two_stage[i] else None, cu_x[i], cu_d[i],
                             nonzero(cx[i]), cd[i], n, draws[i])
                for i, n in enumerate(self.noise_scales(cn))]

    def advance(self, term, x, state, row):
        x1, nfe = midpoint_step(term, x, row, self.prediction)
        return add_noise(x1, x, row.cn, row.draw), state, None, nfe


@register("dpm-2-ancestral")
class DPM2Ancestral(DPMSolverPP2SAncestral):
    """DPM-2 ancestral (k-diffusion ``sample_dpm_2_ancestral``; Karras et al. 2022, "Elucidating
    the Design Space of Diffusion-Based Generative Models", whose DPM-2 is DPM-Solver-2 of Lu et
    al. 2022a with ``r_1 = 1/2``, made ancestral).

    In the scaled state ``y = x / alpha`` with ``rho = sigma / alpha``: the ancestral split of
    ``rho_i -> rho_{i+1}`` gives ``rho_down`` and ``rho_up`` (``rho_down^2 + rho_up^2 =
    rho_{i+1}^2``); the midpoint rule on ``dy/drho = eps`` goes to ``rho_down`` with its stage
    at ``rho_mid = sqrt(rho_i rho_down)``:
    ``y_mid = y_i + (rho_mid - rho_i) eps(x_i)``, ``y_down = y_i + (rho_down - rho_i) eps(x_mid)``,
    then ``y_{i+1} = y_down + s_noise rho_up z``. A step to zero noise is the Euler step.
    ``eta = 0`` is ``dpm-2`` (order 2).

    Args:
        eta: ancestral noise scale in ``[0, 1]`` (default 1).
        s_noise: multiplier of the added noise.
        noise: ``"normal"`` or ``"brownian"``.
    """

    prediction = "noise"

    def table(self, term, grid, points, x0):
        _, _, cn = ancestral_coefficients(grid, self.eta)
        mid_grid, two_stage, _, _ = _midpoints(grid, term.schedule, self.eta)
        mids = term.points(mid_grid, x0)
        rho, a = ve_sigmas(grid).tolist(), grid.alpha.tolist()
        rho_m, a_m = ve_sigmas(mid_grid).tolist(), mid_grid.alpha.tolist()
        rho_down = _down_levels(grid, self.eta).tolist()
        draws = self.noise_draws(term, grid, x0)
        return [AncestralRow(points[i], mids[i] if two_stage[i] else None,
                             a_m[i] / a[i], a_m[i] * (rho_m[i] - rho[i]),
                             a[i + 1] / a[i], a[i + 1] * (rho_down[i] - rho[i]), n, draws[i])
                for i, n in enumerate(self.noise_scales(cn))]


def _log_down_ratio(grid: SamplingGrid, eta: float) -> torch.Tensor:
    """``log(sigma_down / sigma_{i+1})`` of each step's ancestral split
    (``0.5 log(1 - eta^2 (1 - e^{-2h}))``)."""
    return 0.5 * torch.log1p(-(eta * eta) * -torch.expm1(-2.0 * step_sizes(grid)))


def _down_levels(grid: SamplingGrid, eta: float) -> torch.Tensor:
    """``rho_down = sigma_down / alpha_{i+1}`` of each step's ancestral split (0 at zero noise)."""
    return ve_sigmas(grid)[1:] * torch.exp(_log_down_ratio(grid, eta))


def _midpoints(grid: SamplingGrid, schedule, eta: float) -> tuple[SamplingGrid, list, list, list]:
    """The log-SNR midpoints of the deterministic sub-steps (as a grid whose last entry, unused,
    repeats the final evaluation time), which steps have them, and the first-stage
    coefficients."""
    h = step_sizes(grid) - _log_down_ratio(grid, eta)  # lambda_down - lambda_i
    two_stage = torch.isfinite(h)
    lam_mid = torch.where(two_stage, grid.log_snr[:-1] + 0.5 * h, grid.log_snr[:-1])
    t_mid = torch.where(two_stage, schedule.t_from_log_snr(lam_mid), grid.t[:-1])
    mg = SamplingGrid.from_times(schedule, torch.cat([t_mid, grid.t[-2:-1]]))
    hm = mg.log_snr[:-1] - grid.log_snr[:-1]
    cu_x = mg.sigma[:-1] / grid.sigma[:-1]
    cu_d = -mg.alpha[:-1] * torch.expm1(-hm)
    return mg, two_stage.tolist(), cu_x.tolist(), cu_d.tolist()

"""Ancestral samplers: DPM-Solver++(2S) ancestral (DDPM and Euler ancestral are DDIM with
``eta = 1``, registered in :mod:`timestepper.solvers.ddim`).

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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.grids import SamplingGrid
from .base import nonzero, step_sizes
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
        x1, nfe = midpoint_step(term, x, row, "data")
        return add_noise(x1, x, row.cn, row.draw), state, None, nfe


def _midpoints(grid: SamplingGrid, schedule, eta: float) -> tuple[SamplingGrid, list, list, list]:
    """The log-SNR midpoints of the deterministic sub-steps (as a grid whose last entry, unused,
    repeats the final evaluation time), which steps have them, and the first-stage
    coefficients."""
    h1 = step_sizes(grid)
    log_rho = 0.5 * torch.log1p(-(eta * eta) * -torch.expm1(-2.0 * h1))
    h = h1 - log_rho  # lambda_down - lambda_i
    two_stage = torch.isfinite(h)
    lam_mid = torch.where(two_stage, grid.log_snr[:-1] + 0.5 * h, grid.log_snr[:-1])
    t_mid = torch.where(two_stage, schedule.t_from_log_snr(lam_mid), grid.t[:-1])
    mg = SamplingGrid.from_times(schedule, torch.cat([t_mid, grid.t[-2:-1]]))
    hm = mg.log_snr[:-1] - grid.log_snr[:-1]
    cu_x = mg.sigma[:-1] / grid.sigma[:-1]
    cu_d = -mg.alpha[:-1] * torch.expm1(-hm)
    return mg, two_stage.tolist(), cu_x.tolist(), cu_d.tolist()

"""DPM-2 (k-diffusion's ``sample_dpm_2``; Karras et al. 2022 name it after DPM-Solver-2).

The midpoint rule on ``dy/drho = eps`` for the scaled state ``y = x / alpha`` and
``rho = sigma / alpha``, with the stage at the geometric mean ``rho_mid = sqrt(rho_i rho_{i+1})``
(the log-SNR midpoint, as in DPM-Solver-2, Lu et al. 2022a, Algorithm 1 with ``r_1 = 1/2``):

``y_mid = y_i + (rho_mid - rho_i) eps(x_i)``, ``y_{i+1} = y_i + (rho_{i+1} - rho_i) eps(x_mid)``.

Two model calls per step; the step to zero noise is an Euler step (one call), as in k-diffusion.
The stage times are registered with the term once per grid.
"""

from __future__ import annotations

import torch

from ..core.solver import register
from ..diffusion.grids import SamplingGrid
from .base import DiffusionSolver, lincomb, ve_sigmas
from .expint import first_order_at


def log_snr_midpoints(schedule, grid: SamplingGrid) -> SamplingGrid:
    """The points at the log-SNR midpoint of every step that does not end at zero noise
    (a placeholder copy of the step start on those that do; it is never evaluated)."""
    lam = grid.log_snr
    mid = torch.where(torch.isfinite(lam[1:]), 0.5 * (lam[:-1] + lam[1:]), lam[:-1])
    return SamplingGrid.from_times(schedule, schedule.t_from_log_snr(mid))


@register("dpm-2")
class DPM2(DiffusionSolver):
    """k-diffusion's DPM-2 (``sample_dpm_2`` with ``s_churn = 0``). Order 2, two model calls per step."""

    order = 2
    nfe_per_step = 2

    def init(self, term, grid, x0):
        state = super().init(term, grid, x0)
        mids = log_snr_midpoints(term.schedule, grid)
        state.coeffs["stage"] = term.add_points(mids)
        rho_m, a_m = ve_sigmas(mids).tolist(), mids.alpha.tolist()
        state.coeffs["rho_mid"], state.coeffs["alpha_mid"] = rho_m, a_m
        return state

    def coefficients(self, grid):
        return {
            "rho": ve_sigmas(grid).tolist(),
            "alpha": grid.alpha.tolist(),
            "euler": [first_order_at(grid, i) for i in range(grid.steps)],
        }

    def step(self, term, t0, t1, x, state):
        i, c = state.i, state.coeffs
        r0, r1, a0, a1 = c["rho"][i], c["rho"][i + 1], c["alpha"][i], c["alpha"][i + 1]
        eps = term.noise_prediction(x, i)
        if not c["euler"][i]:
            rm, am = c["rho_mid"][i], c["alpha_mid"][i]
            x_mid = lincomb(x, am / a0, [(am * (rm - r0), eps)])
            eps = term.noise_prediction(x_mid, c["stage"] + i)
        return lincomb(x, a1 / a0, [(a1 * (r1 - r0), eps)]), state.advance(), None

"""Ancestral samplers: DDPM, Euler ancestral, DPM-Solver++(2S) ancestral.

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

import torch

from ..core.solver import register
from ..diffusion.grids import SamplingGrid
from ..diffusion.term import DiffusionTerm
from .base import lincomb, step_sizes
from .ddim import DDIM, ancestral_coefficients
from .noise import StochasticDiffusionSolver


@register("ddpm")
class DDPM(DDIM):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2 on any grid). Order 1, one model call
    per step.

    Args:
        noise: ``"normal"`` or ``"brownian"`` (:mod:`timestepper.solvers.noise`).
    """

    def __init__(self, noise: str = "normal") -> None:
        super().__init__(eta=1.0, noise=noise)


@register("euler-ancestral")
class EulerAncestral(DDIM):
    """Euler ancestral (k-diffusion ``sample_euler_ancestral``; diffusers
    ``EulerAncestralDiscreteScheduler``). Order 1, one model call per step.

    Args:
        eta: ancestral noise scale in ``[0, 1]`` (1 default; 0 is deterministic Euler = DDIM).
        s_noise: multiplier of the added noise.
        noise: ``"normal"`` or ``"brownian"``.
    """

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, noise: str = "normal") -> None:
        super().__init__(eta=eta, s_noise=s_noise, noise=noise)


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

    def init(self, term, grid, x0):
        state = super().init(term, grid, x0)
        mid_grid, table = _midpoints(grid, term.schedule, self.eta)
        state.coeffs.update(table)
        # The midpoint model calls go through a second term prepared on the grid of midpoints (its
        # last entry, unused, repeats the final evaluation time); they are counted on ``term``.
        mid = DiffusionTerm(term.denoiser)
        mid.prepare(mid_grid, x0)
        state.coeffs["mid"] = mid
        return state

    def coefficients(self, grid):
        cx, cd, cn = ancestral_coefficients(grid, self.eta)
        return {"cx": cx, "cd": cd, "cn": [self.s_noise * c for c in cn]}

    def step(self, term, t0, t1, x, state):
        i, c = state.i, state.coeffs
        d = term.data_prediction(x, i)
        if c["two_stage"][i]:
            u = lincomb(x, c["cu_x"][i], [(c["cu_d"][i], d)])
            d = c["mid"].data_prediction(u, i)
            term.nfe += 1
        x1 = lincomb(x, c["cx"][i], [(c["cd"][i], d)])
        return self.add_noise(x1, x, state), state.advance(), None


def _midpoints(grid: SamplingGrid, schedule, eta: float) -> tuple[SamplingGrid, dict[str, list]]:
    """The log-SNR midpoints of the deterministic sub-steps and the first-stage coefficients."""
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
    return mg, {"two_stage": two_stage.tolist(), "cu_x": cu_x.tolist(), "cu_d": cu_d.tolist()}

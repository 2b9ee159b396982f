"""Euler–Maruyama on the reverse-time SDE (Song et al. 2021, Score SDE, eq. 6 and Appendix D).

A schedule ``x_t = alpha(t) x0 + sigma(t) eps`` is the marginal law of the forward SDE
``dx = f(t) x dt + g(t) dw`` with ``f = dlog(alpha)/dt`` and
``g^2 = d(sigma^2)/dt - 2 f sigma^2 = -2 sigma^2 dlambda/dt`` (Kingma et al. 2021, VDM,
Appendix A.1; Song et al. 2021, eqs. 9, 11, 12: VE has ``f = 0``, VP ``g^2 = beta``, sub-VP
``g^2 = beta (1 - e^{-2 int beta})``). The reverse SDE (Song et al. 2021, eq. 6) is
``dx = [f x - g^2 score(x, t)] dt + g dw_bar`` with ``score = -(x - alpha x0_theta) / sigma^2``.
One Euler–Maruyama step from ``t_i`` to ``t_{i+1}`` (``dt < 0``):

``x_{i+1} = x_i + [f x_i + g^2 (x_i - alpha_i x0_i) / sigma_i^2] dt + g sqrt(-dt) z``.

So this one solver is Score SDE's VE, VP and sub-VP reverse-diffusion Euler–Maruyama predictor,
chosen by the schedule (:class:`~timestepper.VESchedule`, :class:`~timestepper.VPLinearSchedule`,
:class:`~timestepper.diffusion.subvp.SubVPSchedule`, or any other). A step that ends at zero noise
is the denoising step ``x = alpha x0_theta`` (Tweedie's formula; Score SDE's samplers end with a
noise-free step as well).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.term import EvalPoint
from .base import lincomb, nonzero
from .noise import Draw, StochasticDiffusionSolver, add_noise
from .registry import register


def reverse_sde_coefficients(schedule, grid) -> dict[str, list]:
    """``cx, cd, cn`` of the Euler–Maruyama step (float64 -> floats), from the schedule's
    derivatives at the step's start time."""
    t0, t1 = grid.t[:-1], grid.t[1:]
    a0, s0 = grid.alpha[:-1], grid.sigma[:-1]
    f = schedule.dalpha(t0) / a0
    g2 = -2.0 * s0 * s0 * (f - schedule.dsigma(t0) / s0)
    last = grid.sigma[1:] == 0
    dt = torch.where(last, torch.zeros_like(t1), t1 - t0)
    cx = torch.where(last, torch.zeros_like(dt), 1.0 + dt * (f + g2 / (s0 * s0)))
    cd = torch.where(last, grid.alpha[1:], -dt * g2 * a0 / (s0 * s0))
    cn = torch.where(last, torch.zeros_like(dt), torch.sqrt(g2 * -dt))
    if bool((g2 <= 0).any()):
        raise ValueError("the schedule's g^2 = -2 sigma^2 dlambda/dt must be > 0 on the grid "
                         "(log-SNR must decrease with time)")
    return {"cx": cx.tolist(), "cd": cd.tolist(), "cn": cn.tolist()}


@dataclass(slots=True)
class ReverseSDERow:
    """``x1 = cx x + cd x0(x) + cn z``."""

    point: EvalPoint
    cx: float | None
    cd: float
    cn: float | None
    draw: Draw | None


@register("euler-maruyama")
class ReverseSDEEulerMaruyama(StochasticDiffusionSolver):
    """Euler–Maruyama on the reverse SDE of the model's schedule (Song et al. 2021, eq. 6).
    Strong order 1/2, weak order 1; one model call per step.

    Args:
        s_noise: multiplier of the added noise (1 is the algorithm).
        noise: ``"normal"`` or ``"brownian"``.
    """

    order = 1
    nfe_per_step = 1

    def __init__(self, s_noise: float = 1.0, noise: str = "normal") -> None:
        super().__init__(1.0, s_noise, noise)  # the SDE's own noise: no eta

    def table(self, term, grid, points, x0):
        c = reverse_sde_coefficients(term.schedule, grid)
        draws = self.noise_draws(term, grid, x0)
        return [ReverseSDERow(p, nonzero(cx), cd, cn, z) for p, cx, cd, cn, z in
                zip(points, c["cx"], c["cd"], self.noise_scales(c["cn"]), draws)]

    def advance(self, term, x, state, row):
        d = term.data_prediction(x, row.point)
        x1 = lincomb(x, row.cx, ((row.cd, d),))
        return add_noise(x1, x, row.cn, row.draw), state, None, 1

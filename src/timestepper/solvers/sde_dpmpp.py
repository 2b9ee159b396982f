"""SDE-DPM-Solver++ multistep, 2M and 3M (Lu et al. 2022b, DPM-Solver++, Section 5 and Appendix).

The reverse SDE in data prediction, solved exactly in its linear part, gives the first-order step
``x_{i+1} = (sigma_{i+1}/sigma_i) e^{-eta h} x_i + alpha_{i+1} (1 - e^{-(1+eta) h}) x0_i
+ sigma_{i+1} sqrt(1 - e^{-2 eta h}) z`` with ``h = lambda_{i+1} - lambda_i``; ``eta = 1`` is the
SDE, ``eta = 0`` the probability-flow ODE (DPM-Solver++), intermediate values interpolate as in
k-diffusion's ``sample_dpmpp_2m_sde(eta=...)``. The multistep corrections are the exponential
integrator's Taylor weights of :func:`~timestepper.solvers.expint.taylor_weights` with
``H = (1 + eta) h`` on the polynomial through the last predictions: the same coefficient code as
DPM-Solver++ multistep (:class:`~timestepper.solvers.dpmpp.DPMSolverMultistep`, of which this is
the stochastic case), so with ``eta = 0`` the coefficients are dpmpp-2m's / dpmpp-3m's exactly.

* 2M, ``solver_type="midpoint"``: ``+ 0.5 alpha_{i+1} (1 - e^{-H}) (x0_i - x0_{i-1}) / r_1``
  (diffusers' ``sde-dpmsolver++`` and k-diffusion's default); ``"heun"``: the Taylor weight
  ``alpha_{i+1} (1 + expm1(-H)/H)``.
* 3M: the quadratic through the last three predictions with the Taylor weights (third order at
  ``eta = 0``); its second-order warm-up step uses the Taylor weight (``solver_type="heun"``, the
  default of ``"sde-dpmpp-3m"``, as k-diffusion). k-diffusion's ``sample_dpmpp_3m_sde`` and
  diffusers' third-order DPM-Solver++ put half the second-derivative weight (an ``O(h^3 x0'')``
  local error: a second-order method, measured slope ~2.2); ``variant="k-diffusion"`` reproduces
  it for parity.

Orders follow the multistep rules (warm-up; with ``lower_order_final`` and fewer than 15 steps
the last step is first order and the one before at most second order); a step to zero noise is
first order (it returns ``alpha x0``). All coefficients are float64, once per grid; the step is a
few fused adds and one noise draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.validation import check_choice
from .base import step_sizes
from .dpmpp import DPMSolverMultistep
from .multistep import MultistepRow
from .noise import Draw, StochasticDiffusionSolver, add_noise
from .registry import register

VARIANTS = {"taylor": "taylor", "k-diffusion": "published"}


@dataclass(slots=True)
class SDEMultistepRow(MultistepRow):
    """A multistep row plus the noise ``cn z`` the step adds (``cn=None``: none)."""

    cn: float | None = None
    draw: Draw | None = None


class SDEDPMSolverPP(DPMSolverMultistep, StochasticDiffusionSolver):
    """SDE-DPM-Solver++ multistep of order 2 or 3 (Lu et al. 2022b; diffusers
    ``algorithm_type="sde-dpmsolver++"``, k-diffusion ``sample_dpmpp_2m_sde`` / ``_3m_sde``).
    One model call per step; order 2 / 3 at ``eta = 0``.

    Args:
        order: 2 or 3.
        eta: 1 (default) the reverse SDE, 0 the ODE (DPM-Solver++ multistep), in between
            k-diffusion's interpolation.
        s_noise: multiplier of the added noise.
        noise: ``"normal"`` or ``"brownian"``.
        lower_order_final: lower orders on the last steps of grids with fewer than 15 steps.
        solver_type: ``"midpoint"`` (default) or ``"heun"``: the second-order weight.
        variant: ``"taylor"`` (default, third order) or ``"k-diffusion"`` (the peers' halved
            second-derivative term; see the module docstring).
    """

    stacks_rows = False  # a step draws noise: not the deterministic update
    reuses_state_memory = False  # a step of its own (advance)

    def __init__(self, order: int = 2, eta: float = 1.0, s_noise: float = 1.0,  # noqa: PLR0913
                 noise: str = "normal", lower_order_final: bool = True,
                 solver_type: str = "midpoint", variant: str = "taylor") -> None:
        check_choice(variant, tuple(VARIANTS), "variant")
        DPMSolverMultistep.__init__(self, order, "data", solver_type, lower_order_final,
                                    VARIANTS[variant])
        StochasticDiffusionSolver.__init__(self, eta, s_noise, noise)
        self.variant = variant

    @staticmethod
    def validate_eta(eta: float) -> float:
        eta = float(eta)
        if not eta >= 0.0:
            raise ValueError(f"eta must be >= 0 (1: the reverse SDE, 0: the probability-flow ODE), got {eta}")
        return eta

    def table(self, term, grid, points, x0):
        rows = super().table(term, grid, points, x0)
        cn = [0.0] * grid.steps
        if self.eta > 0:  # sigma_t sqrt(1 - e^{-2 eta h}); 0 on a step to zero noise
            h = step_sizes(grid)
            cn = (grid.sigma[1:] * torch.sqrt(-torch.expm1(-2.0 * self.eta * h))).tolist()
        draws = self.noise_draws(term, grid, x0)
        return [SDEMultistepRow(r.point, r.cx, r.weights, n, z)
                for r, n, z in zip(rows, self.noise_scales(cn), draws)]

    def advance(self, term, x, state, row):
        x1, state, err, nfe = super().advance(term, x, state, row)
        return add_noise(x1, x, row.cn, row.draw), state, err, nfe


register("sde-dpmpp-2m", SDEDPMSolverPP, order=2,
         summary="SDE-DPM-Solver++(2M) (Lu et al. 2022b; diffusers sde-dpmsolver++, k-diffusion "
                 "sample_dpmpp_2m_sde). Order 2 at eta = 0.")
register("sde-dpmpp-3m", SDEDPMSolverPP, order=3, defaults={"solver_type": "heun"},
         summary="SDE-DPM-Solver++(3M) (k-diffusion sample_dpmpp_3m_sde) with the Taylor weights. "
                 "Order 3 at eta = 0.")

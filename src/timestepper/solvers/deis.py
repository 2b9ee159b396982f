"""DEIS (Zhang & Chen 2022): exponential integrators with polynomial extrapolation.

tAB-DEIS (eq. 15 with the ``log rho`` time of diffusers' ``DEISMultistepScheduler``): in the
scaled state ``y = x / alpha`` and ``rho = sigma / alpha`` the probability-flow ODE is
``dy/drho = eps``. The last ``k`` noise predictions are interpolated by a polynomial in
``log rho`` (Lagrange basis ``L_j``) and integrated exactly over the step:
``x_{i+1} = alpha_{i+1} (x_i / alpha_i + sum_j eps_{i-j} int_{rho_i}^{rho_{i+1}} L_j(log rho) drho)``.
Order ``k`` with warm-up (step ``i`` uses at most ``i + 1`` predictions), diffusers'
``lower_order_final`` rule for grids of fewer than 15 steps, and first order on a step to zero noise.

rhoRK-DEIS (Zhang & Chen 2022, Section 4, Runge-Kutta in ``rho``) is a classical two-stage
Runge-Kutta method on ``dy/drho = eps``: ``method="rho-heun"`` is Heun's method (identical to
:class:`~timestepper.solvers.edm.EDMHeun`) and ``method="rho-midpoint"`` the midpoint rule with the
stage at the geometric mean of ``rho`` (identical to :class:`~timestepper.solvers.dpm2.DPM2`).
"""

from __future__ import annotations

import math

from ..core.validation import check_choice, check_order
from .dpm2 import DPM2
from .edm import EDMHeun
from .expint import PhiTable, grid_floats, lagrange_integral_weights, multistep_orders
from .multistep import LinearMultistep
from .registry import register

METHODS = ("tab", "rho-heun", "rho-midpoint")


class NoiseLevelMultistep(LinearMultistep):
    """Lagrange multistep on ``dy/drho = eps`` in the variable ``log rho`` (DEIS) or ``rho`` (LMS)."""

    prediction = "noise"
    log_variable = True

    def phi_table(self, grid):
        if not self.log_variable:
            return PhiTable([], 0)
        rho = grid_floats(grid).rho
        d = [-(math.log(rho[i + 1]) - math.log(rho[i])) for i in range(grid.steps) if rho[i + 1] > 0]
        return PhiTable(d, self.max_order)

    def weights(self, grid, i, k, phis):
        f = grid_floats(grid)
        rho, a1 = f.rho, f.alpha[i + 1]
        c = lagrange_integral_weights([rho[i - j] for j in range(k)], rho[i], rho[i + 1], self.log_variable, phis)
        return a1 / f.alpha[i], [a1 * cj for cj in c]


class DEIS(NoiseLevelMultistep):
    """tAB-DEIS of order 1-3 (Zhang & Chen 2022, eq. 15; the log-rho variant of diffusers).

    Args:
        order: 1, 2 or 3 (default 3).
        lower_order_final: lower orders on the last two steps of grids with fewer than 15 steps.
    """

    def __init__(self, order: int = 3, lower_order_final: bool = True) -> None:
        self.order = self.max_order = check_order(order, (1, 2, 3))
        self.lower_order_final = bool(lower_order_final)

    def orders(self, grid):
        return multistep_orders(grid.steps, self.max_order, self.lower_order_final)


def deis(order: int = 3, method: str = "tab", lower_order_final: bool = True):
    """Build a DEIS solver: ``method="tab"`` (default, :class:`DEIS`), ``"rho-heun"`` or
    ``"rho-midpoint"`` (rhoRK-DEIS, second order; ``order`` must then be 2)."""
    check_choice(method, METHODS, "method")
    if method == "tab":
        return DEIS(order, lower_order_final)
    if order != 2:
        raise ValueError(
            f"rhoRK-DEIS (method={method!r}) is second order: order must be 2, got {order!r}"
        )
    return EDMHeun() if method == "rho-heun" else DPM2()


register("deis", deis, family="diffusion",
         summary="DEIS (Zhang & Chen 2022): tAB-DEIS of order 1-3 (eq. 15, log-rho), or rhoRK-DEIS.")

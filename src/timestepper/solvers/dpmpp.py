"""DPM-Solver multistep: DPM-Solver++ 2M / 3M in data prediction (Lu et al. 2022b, Algorithms 2
and 3 of "DPM-Solver++"), and the noise-prediction multistep DPM-Solver of the same paper
(Appendix B), as in diffusers' ``DPMSolverMultistepScheduler``.

With ``h = lambda_{i+1} - lambda_i`` and ``r_j = (lambda_{i-j} - lambda_i) / h``, the predictions at
``i, i-1, i-2`` define the polynomial ``sum_k a_k u^k`` in ``u = (lambda - lambda_i) / h`` and the step
is the exponential integrator of :mod:`~timestepper.solvers.expint`:

* 2M: ``x_{i+1} = cx x_i + E_0 a_0 + c_1 a_1`` with ``c_1 = E_0 / 2`` (``solver_type="midpoint"``,
  Algorithm 2) or ``E_1 = alpha h phi_2(-h)`` (``"heun"``, the exact Taylor weight);
* 3M: ``x_{i+1} = cx x_i + E_0 a_0 + E_1 a_1 + E_2 a_2`` with the Taylor weight
  ``E_2 = 2 alpha h phi_3(-h)`` (data prediction).

A deliberate difference from the peers: the published 3M update (Lu et al. 2022b, Appendix B:
``D2 = (D1_0 - D1_1) / (r0 + r1)`` with weight ``phi_3``), which diffusers' and the official
DPM-Solver code implement, puts ``E_2 / 2`` on ``a_2`` -- half the Taylor weight. Its local error
is then ``O(h^3)`` and it converges at order 2, not 3 (measured on the exact Gaussian mixture in
``tests/solvers/test_convergence.py``: slope 2.1 against 3.1 with the Taylor weight).
``third_order_weight="published"`` reproduces the peers (the parity tests use it).

Order rules: the first steps use lower orders (warm-up, step ``i`` uses at most ``i + 1``
predictions); a step to zero noise (``h = inf``) is first order, since the higher terms have no
finite limit there; ``lower_order_final`` (default) makes the last step first order and the one
before at most second order when the grid has fewer than 15 steps (diffusers' rule, which
stabilises very short grids). Requesting 3M with 2 steps therefore runs DDIM + 2M, as documented.
"""

from __future__ import annotations

from ..core.validation import check_choice, check_order
from ..diffusion.grids import SamplingGrid
from .expint import (
    PREDICTIONS,
    PhiTable,
    combine,
    lambda_offsets,
    multistep_orders,
    polynomial_basis,
    step_phis,
    taylor_weights,
)
from .multistep import LinearMultistep
from .registry import register

SOLVER_TYPES = ("midpoint", "heun")
THIRD_ORDER_WEIGHTS = ("taylor", "published")


class DPMSolverMultistep(LinearMultistep):
    """Multistep DPM-Solver of order 1-3 in data (``"data"``: DPM-Solver++) or noise prediction.

    Args:
        order: 1, 2 or 3.
        prediction: ``"data"`` (DPM-Solver++, diffusers' ``algorithm_type="dpmsolver++"``) or
            ``"noise"`` (DPM-Solver, ``algorithm_type="dpmsolver"``).
        solver_type: ``"midpoint"`` (default, as diffusers) or ``"heun"``: the second-order weight.
        lower_order_final: lower orders on the last two steps of grids with fewer than 15 steps.
        third_order_weight: ``"taylor"`` (default, order 3) or ``"published"`` (the peers' 3M,
            order 2; see the module docstring).
    """

    def __init__(
        self,
        order: int = 2,
        prediction: str = "data",
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        third_order_weight: str = "taylor",
    ) -> None:
        self.order = self.max_order = check_order(order, (1, 2, 3))
        self.prediction = check_choice(prediction, PREDICTIONS, "prediction")
        self.solver_type = check_choice(solver_type, SOLVER_TYPES, "solver_type")
        self.lower_order_final = bool(lower_order_final)
        self.third_order_weight = check_choice(
            third_order_weight, THIRD_ORDER_WEIGHTS, "third_order_weight"
        )
        if self.order == 3 and self.third_order_weight == "published":
            self.order = 2

    eta = 0.0  # the SDE steps of sde-dpmpp-2m/3m set it (:mod:`timestepper.solvers.sde_dpmpp`)

    def orders(self, grid):
        return multistep_orders(grid.steps, self.max_order, self.lower_order_final)

    def phi_table(self, grid):
        return step_phis(grid, [(i, i + 1) for i in range(grid.steps)], self.max_order + 1,
                         scale=1.0 + self.eta)

    def weights(self, grid, i, k, phis):
        return dpm_multistep_weights(grid, i, k, phis, self.prediction, self.solver_type,
                                     self.third_order_weight, self.eta)


def dpm_multistep_weights(  # noqa: PLR0913 - the coefficient rule's parameters, all explicit
    grid: SamplingGrid, i: int, k: int, phis: PhiTable, prediction: str = "data",
    solver_type: str = "midpoint", third_order_weight: str = "taylor", eta: float = 0.0,
) -> tuple[float, list[float]]:
    """``(cx, [w_0, .., w_{k-1}])`` of the order-``k`` multistep DPM-Solver(++) step from grid point
    ``i`` to ``i + 1`` (``w_j`` on the prediction at point ``i - j``; module docstring). Shared by
    :class:`DPMSolverMultistep` and the per-step schedules of :mod:`timestepper.solvers.scheduled`."""
    midpoint = k == 2 and solver_type == "midpoint"  # then only E_0 is used
    cx, e = taylor_weights(grid, i, i + 1, prediction, 1 if midpoint else k, phis, eta=eta)
    if k == 1:
        return cx, e
    basis = polynomial_basis(lambda_offsets(grid, i, i + 1, [i - j for j in range(k)]))
    if k == 2:
        coeffs = [e[0], 0.5 * e[0] if midpoint else e[1]]
    else:
        coeffs = [e[0], e[1], e[2] if third_order_weight == "taylor" else 0.5 * e[2]]
    return cx, combine(coeffs, basis)


register("dpmpp-2m", DPMSolverMultistep, order=2, prediction="data",
         summary="DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2). Order 2, one model call per step.")
register("dpmpp-3m", DPMSolverMultistep, order=3, prediction="data",
         summary="DPM-Solver++(3M) (Lu et al. 2022b, Appendix B) with the Taylor third-order weight. "
                 "Order 3 (2 with third_order_weight='published').")
register("dpm-solver-2m", DPMSolverMultistep, order=2, prediction="noise",
         summary="Multistep DPM-Solver-2 in noise prediction (Lu et al. 2022b, Appendix B; diffusers' "
                 "algorithm_type='dpmsolver'). Order 2.")
register("dpm-solver-3m", DPMSolverMultistep, order=3, prediction="noise",
         summary="Multistep DPM-Solver-3 in noise prediction, Taylor third-order weight. Order 3.")

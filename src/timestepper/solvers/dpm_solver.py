"""Singlestep DPM-Solver (Lu et al. 2022a) and DPM-Solver++(2S) (Lu et al. 2022b).

A singlestep method of order ``k`` takes one step across ``k`` consecutive grid intervals: it
starts from the state ``x_s`` at the group's first point ``s``, evaluates the model at each grid
point inside the group (the intermediate points of Lu et al. 2022a, Algorithms 1-2, with
``r_1, r_2`` given by the grid: ``1/2`` and ``1/3, 2/3`` on a uniform log-SNR grid) and lands on
the group's last point with the exponential integrator of :mod:`~timestepper.solvers.expint`.
Every grid point is one model call, so the grid lists the model-evaluation times as for every
other solver; this is diffusers' ``DPMSolverSinglestepScheduler`` convention.

With ``u_j = (lambda_j - lambda_s) / h`` the offsets of the group's points:

* order 1: DDIM (in noise prediction: DPM-Solver-1, eq. 4.1);
* order 2: ``x_t = cx x_s + E_0 m_s + c_1 (m_1 - m_s) / u_1`` with ``c_1 = E_0 / 2``
  (``solver_type="midpoint"``: DPM-Solver-2, Algorithm 1 with ``r_1 = u_1``) or ``E_1``
  (``"heun"``);
* order 3: ``"midpoint"``: ``x_t = cx x_s + E_0 m_s + E_1 (m_2 - m_s) / u_2`` (DPM-Solver-3,
  Algorithm 2: third order when ``u_2 = 2/3``, i.e. on uniform log-SNR grids); ``"heun"``: the
  quadratic through all three predictions with the Taylor weights ``E_0, E_1, E_2``.

The intermediate states are lower-order singlestep updates from ``x_s``.

Grouping (diffusers' ``get_order_list``): with ``lower_order_final`` (default) the grid is split
into groups of ``order`` steps and the remainder is covered by lower orders (for order 3 and
``steps % 3 == 0`` the last group is split into orders ``[1, 2] + [1]``); without it ``steps`` must
be a multiple of ``order`` (a ``ValueError`` otherwise, where diffusers silently switches the option
on). A step to zero noise is first order.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.validation import check_choice, check_order
from ..diffusion.term import EvalPoint
from .base import DiffusionSolver, lincomb, nonzero
from .dpmpp import SOLVER_TYPES
from .expint import (
    PREDICTIONS,
    PhiTable,
    combine,
    first_order_at,
    lambda_offsets,
    polynomial_basis,
    step_phis,
    taylor_weights,
)
from .registry import register


@dataclass(slots=True)
class SinglestepRow:
    """Grid step ``i`` inside a group that started at point ``s``: evaluate at ``point``; the state
    at ``i + 1`` is ``cx x_s + sum_j w_j m_{s+j}`` over ``weights = ((j, w_j), ...)``. ``start``
    marks the first step of a group (``x_s`` is then the current state)."""

    point: EvalPoint
    start: bool
    cx: float | None
    weights: tuple[tuple[int, float], ...]


def singlestep_orders(steps: int, order: int, lower_order_final: bool) -> list[int]:
    """The per-step orders of diffusers' ``get_order_list`` (before the zero-noise rule)."""
    pattern = list(range(1, order + 1))
    if not lower_order_final:
        if steps % order:
            raise ValueError(
                f"steps={steps} must be a multiple of order={order} when lower_order_final=False; "
                "pass lower_order_final=True to finish with lower orders"
            )
        return pattern * (steps // order)
    q, r = divmod(steps, order)
    if order == 3 and r == 0:
        return pattern * (q - 1) + [1, 2] + [1]
    if order == 2 and r == 0:
        return pattern * (q - 1) + [1, 1]
    return pattern * q + list(range(1, r + 1))


class DPMSolverSinglestep(DiffusionSolver):
    """Singlestep DPM-Solver of order 1-3 in noise (``"noise"``) or data (``"data"``: DPM-Solver++)
    prediction.

    Args:
        order: 1, 2 or 3.
        prediction: ``"noise"`` (DPM-Solver) or ``"data"`` (DPM-Solver++).
        solver_type: ``"midpoint"`` (default, as diffusers and the papers) or ``"heun"``.
        lower_order_final: cover a remainder of the grid with lower orders (see the module docstring).
    """

    nfe_per_step = 1

    def __init__(
        self,
        order: int = 2,
        prediction: str = "noise",
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
    ) -> None:
        self.order = check_order(order, (1, 2, 3))
        self.prediction = check_choice(prediction, PREDICTIONS, "prediction")
        self.solver_type = check_choice(solver_type, SOLVER_TYPES, "solver_type")
        self.lower_order_final = bool(lower_order_final)

    def weights(  # noqa: PLR0913 - the step's points, its order and two overrides
        self, grid, s: int, k: int, t: int | None = None, phis: PhiTable | None = None,
        solver_type: str | None = None,
    ) -> tuple[float, list[float]]:
        """``(cx, w)``: the order-``k`` step from point ``s`` to ``t`` (default ``s + k``) using the
        predictions at ``s, s + 1, ..., s + k - 1`` (``w`` on those), in the form ``solver_type``
        (default: the solver's)."""
        t = s + k if t is None else t
        form = solver_type or self.solver_type
        cx, e = taylor_weights(grid, s, t, self.prediction, k, phis)
        if k == 1:
            return cx, e
        u = lambda_offsets(grid, s, t, range(s, s + k))
        if k == 2:
            c1 = 0.5 * e[0] if form == "midpoint" else e[1]
            return cx, combine([e[0], c1], polynomial_basis(u))
        if form == "heun":
            return cx, combine(e, polynomial_basis(u))
        w = combine(e[:2], polynomial_basis([u[0], u[2]]))
        return cx, [w[0], 0.0, w[1]]

    def table(self, term, grid, points, x0):
        orders = singlestep_orders(grid.steps, self.order, self.lower_order_final)
        orders = [1 if first_order_at(grid, i) else k for i, k in enumerate(orders)]
        phis = step_phis(grid, [(i - k + 1, i + 1) for i, k in enumerate(orders)], self.order)
        rows = []
        for i, k in enumerate(orders):
            cx, w = self.weights(grid, i - k + 1, k, phis=phis)
            terms = tuple((j, wj) for j, wj in enumerate(w) if wj != 0.0)
            rows.append(SinglestepRow(points[i], k == 1, nonzero(cx), terms))
        return rows

    def advance(self, term, x, state, row):
        m = term.prediction(x, row.point, self.prediction)
        # state = (x_s, m_s, m_{s+1}, ...): the group's starting state and its predictions
        hist = (x, m) if row.start else (*state, m)
        out = lincomb(hist[0], row.cx, tuple((w, hist[1 + j]) for j, w in row.weights))
        return out, hist, None, 1


register("dpm-solver-1", DPMSolverSinglestep, order=1, prediction="noise",
         summary="DPM-Solver-1 (Lu et al. 2022a, eq. 4.1): DDIM in noise prediction. Order 1.")
register("dpm-solver-2", DPMSolverSinglestep, order=2, prediction="noise",
         summary="DPM-Solver-2 (Lu et al. 2022a, Algorithm 1), singlestep, noise prediction. Order 2.")
register("dpm-solver-3", DPMSolverSinglestep, order=3, prediction="noise",
         summary="DPM-Solver-3 (Lu et al. 2022a, Algorithm 2), singlestep, noise prediction. Order 3 "
                 "on uniform log-SNR grids (solver_type='heun': on any grid).")
register("dpmpp-2s", DPMSolverSinglestep, order=2, prediction="data",
         summary="DPM-Solver++(2S) (Lu et al. 2022b, Algorithm 1), singlestep, data prediction. Order 2.")
register("dpmpp-3s", DPMSolverSinglestep, order=3, prediction="data",
         summary="Third-order singlestep DPM-Solver++ (diffusers' DPMSolverSinglestepScheduler with "
                 "solver_order=3). Order 3 on uniform log-SNR grids ('heun': on any grid).")

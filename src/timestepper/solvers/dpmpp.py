"""DPM-Solver++ multistep in data prediction (Lu et al. 2022b).

2M (Algorithm 2): with ``h_i = lambda_{i+1} - lambda_i`` and ``r_i = h_{i-1} / h_i``,
``D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1}`` and
``x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} expm1(-h_i) D_i``.
The first step is DDIM. A step to zero noise (``h = inf``) is always first order: the second-order
term has no finite limit there. ``lower_order_final`` also makes the last step first order when
the grid has fewer than 15 steps (diffusers' rule, which stabilises very short grids).
"""

from __future__ import annotations

import math

from ..core.solver import register
from .base import DiffusionSolver, lincomb, step_sizes
from .ddim import first_order_coefficients


@register("dpmpp-2m")
class DPMSolverPP2M(DiffusionSolver):
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2). Order 2, one model call per step.

    Args:
        lower_order_final: first order on the final step when there are fewer than 15 steps.
    """

    order = 2
    nfe_per_step = 1

    def __init__(self, lower_order_final: bool = True) -> None:
        self.lower_order_final = bool(lower_order_final)

    def coefficients(self, grid):
        n = grid.steps
        cx, cd = first_order_coefficients(grid)
        h = step_sizes(grid).tolist()
        w_new, w_old = [], []
        for i in range(n):
            first = (i == 0 or not math.isfinite(h[i])
                     or (self.lower_order_final and n < 15 and i == n - 1))
            if first:
                w_new.append(cd[i])
                w_old.append(0.0)
            else:
                half_inv_r = 0.5 * h[i] / h[i - 1]
                w_new.append(cd[i] * (1.0 + half_inv_r))
                w_old.append(-cd[i] * half_inv_r)
        return {"cx": cx, "w_new": w_new, "w_old": w_old}

    def step(self, term, t0, t1, x, state):
        i, c = state.i, state.coeffs
        d = term.data_prediction(x, i)
        terms = [(c["w_new"][i], d)]
        if state.history:
            terms.append((c["w_old"][i], state.history[-1]))
        return lincomb(x, c["cx"][i], terms), state.advance((d,)), None

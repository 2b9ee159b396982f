"""Euler and Heun in the EDM form (Karras et al. 2022, Algorithm 1).

The scaled state ``y = x / alpha`` obeys ``dy/ds = (y - D(x)) / s`` with ``s = sigma / alpha``
(eq. 4 with ``s(t) = 1``); k-diffusion's ``sample_euler`` and ``sample_heun`` are these steps with
``alpha = 1``. Heun's correction is skipped on a step that ends at ``s = 0`` (Algorithm 1, line 6),
decided from the grid, not from data.
"""

from __future__ import annotations

from ..core.solver import register
from .base import DiffusionSolver, ve_sigmas
from .ddim import DDIM


def _edm_table(grid) -> dict[str, list]:
    if bool((grid.alpha[:-1] <= 0).any()):
        raise ValueError(
            "heun (EDM form) needs alpha > 0 where each step starts; this grid starts at alpha = 0 "
            "(a flow model at t = 1): use a schedule with t_max < 1, or euler"
        )
    s = ve_sigmas(grid)
    return {"s": s.tolist(), "alpha": grid.alpha.tolist()}


def _slope(y, d0, s0):
    return (y - d0) / s0


@register("euler")
class Euler(DDIM):
    """Euler's method on ``dy/ds = (y - D) / s`` (Karras et al. 2022, Algorithm 1 without line 6;
    k-diffusion's ``sample_euler``). Order 1.

    Written out, ``y_{i+1} = y_i + (s_{i+1} - s_i)(y_i - D_i) / s_i`` is, in the state ``x``, exactly
    DDIM's update ``x_{i+1} = (sigma_{i+1}/sigma_i) x_i + (alpha_{i+1} - sigma_{i+1} alpha_i / sigma_i) D_i``,
    so it shares DDIM's coefficients; in that form it also starts from ``alpha = 0`` (a flow at
    ``t = 1``), where it is the flow-matching Euler step ``x + (t_{i+1} - t_i) v``.
    """


@register("heun")
class Heun(DiffusionSolver):
    """Heun's second-order step in the EDM form (Karras et al. 2022, Algorithm 1). Two model calls
    per step, one on a step to zero noise. Order 2."""

    order = 2
    nfe_per_step = 2

    def coefficients(self, grid):
        return _edm_table(grid)

    def step(self, term, t0, t1, x, state):
        i, c = state.i, state.coeffs
        s0, s1, a0, a1 = c["s"][i], c["s"][i + 1], c["alpha"][i], c["alpha"][i + 1]
        y = x / a0 if a0 != 1.0 else x
        d = _slope(y, term.data_prediction(x, i), s0)
        y1 = y + d * (s1 - s0)
        if s1 != 0.0:
            x1 = y1 * a1 if a1 != 1.0 else y1
            d1 = _slope(y1, term.data_prediction(x1, i + 1), s1)
            y1 = y + (d + d1) * (0.5 * (s1 - s0))
        return (y1 * a1 if a1 != 1.0 else y1), state.advance(), None

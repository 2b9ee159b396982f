"""Euler and Heun in the EDM form (Karras et al. 2022, Algorithm 1).

The scaled state ``y = x / alpha`` obeys ``dy/ds = (y - D(x)) / s`` with ``s = sigma / alpha``
(eq. 4 with ``s(t) = 1``); k-diffusion's ``sample_euler`` and ``sample_heun`` are these steps with
``alpha = 1``. Heun's correction is skipped on a step that ends at ``s = 0`` (Algorithm 1, line 6),
decided from the grid, not from data.
"""

from __future__ import annotations

from ..core.solver import register
from .base import DiffusionSolver, ve_sigmas


def _edm_table(grid) -> dict[str, list]:
    s = ve_sigmas(grid)
    return {"s": s.tolist(), "alpha": grid.alpha.tolist()}


def _slope(y, d0, s0):
    return (y - d0) / s0


@register("euler")
class Euler(DiffusionSolver):
    """Euler step in the EDM form (Karras et al. 2022, Algorithm 1 without line 6). Order 1."""

    order = 1
    nfe_per_step = 1

    def coefficients(self, grid):
        return _edm_table(grid)

    def step(self, term, t0, t1, x, state):
        i, c = state.i, state.coeffs
        s0, s1, a0, a1 = c["s"][i], c["s"][i + 1], c["alpha"][i], c["alpha"][i + 1]
        y = x / a0 if a0 != 1.0 else x
        d = _slope(y, term.data_prediction(x, i), s0)
        y1 = y + d * (s1 - s0)
        return (y1 * a1 if a1 != 1.0 else y1), state.advance(), None


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

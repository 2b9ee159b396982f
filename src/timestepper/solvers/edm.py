"""Heun in the EDM form (Karras et al. 2022, Algorithm 1). (EDM's Euler step is DDIM's update
in the state ``x``; it is registered as ``"euler"`` in :mod:`timestepper.solvers.ddim`.)

The scaled state ``y = x / alpha`` obeys ``dy/ds = (y - D(x)) / s`` with ``s = sigma / alpha``
(eq. 4 with ``s(t) = 1``); k-diffusion's ``sample_euler`` and ``sample_heun`` are these steps with
``alpha = 1``. Heun's correction is skipped on a step that ends at ``s = 0`` (Algorithm 1, line 6),
decided from the grid, not from data.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..diffusion.term import EvalPoint
from .base import DiffusionSolver, ve_sigmas
from .registry import register


@dataclass(slots=True)
class HeunRow:
    """Step ``i``: noise levels ``s0 -> s1`` of the scaled state, ``alpha`` at both ends, and the
    end point's evaluation (``None`` on a step to ``s = 0``: no correction there). ``unit_alpha``:
    ``alpha = 1`` at both ends (VE/EDM schedules), where the state needs no scaling."""

    point: EvalPoint
    end: EvalPoint | None
    s0: float
    s1: float
    a0: float
    a1: float
    unit_alpha: bool


@register("heun")
class EDMHeun(DiffusionSolver):
    """Heun's second-order step in the EDM form (Karras et al. 2022, Algorithm 1). Two model calls
    per step, one on a step to zero noise. Order 2."""

    order = 2
    nfe_per_step = 2

    def table(self, term, grid, points, x0):
        if bool((grid.alpha[:-1] <= 0).any()):
            raise ValueError(
                "heun (EDM form) needs alpha > 0 where each step starts; this grid starts at "
                "alpha = 0 (a flow model at t = 1): use a schedule with t_max < 1, or euler")
        s, a = ve_sigmas(grid).tolist(), grid.alpha.tolist()
        return [HeunRow(points[i], points[i + 1] if s[i + 1] != 0.0 else None, s[i], s[i + 1],
                        a[i], a[i + 1], a[i] == 1.0 and a[i + 1] == 1.0) for i in range(grid.steps)]

    def advance(self, term, x, state, row):
        y = x if row.unit_alpha else x / row.a0
        d = (y - term.data_prediction(x, row.point)) / row.s0
        y1 = y + d * (row.s1 - row.s0)
        nfe = 1
        if row.end is not None:
            x1 = y1 if row.unit_alpha else y1 * row.a1
            d1 = (y1 - term.data_prediction(x1, row.end)) / row.s1
            y1, nfe = y + (d + d1) * (0.5 * (row.s1 - row.s0)), 2
        return (y1 if row.unit_alpha else y1 * row.a1), state, None, nfe

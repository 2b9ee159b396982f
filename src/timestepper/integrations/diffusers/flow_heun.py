"""Heun's method on a rectified flow's ODE in the state ``x`` itself (diffusers'
``FlowMatchHeunDiscreteScheduler``).

For ``x = (1 - s) x0 + s eps`` the probability-flow ODE is ``dx/ds = (x - x0(x, s)) / s`` (the
velocity ``eps - x0``), defined at ``s = 1`` (pure noise) as well. Heun's method (Karras et al.
2022, Algorithm 1, deterministic) takes the Euler step ``x + (s1 - s0) d0`` and corrects it with
the mean of the slopes at both ends; a step to ``s = 0`` is the Euler step (one model call).

Our registry's ``heun`` (EDM form) runs the same algorithm in the scaled state ``x / alpha``
against ``sigma / alpha``, which is a different second-order method on a flow (it also cannot
start at ``alpha = 0``). This solver is the one diffusers' class runs; it is defined here, next to
the class it reproduces, and only used through :class:`~.scheduler.Scheduler`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...diffusion.schedules import RectifiedFlowSchedule
from ...diffusion.term import EvalPoint
from ...solvers.base import DiffusionSolver, lincomb


@dataclass(slots=True)
class FlowHeunRow:
    """A step from noise level ``s0`` to ``s1``: evaluate at ``point`` (and at ``end`` unless
    the step reaches ``s = 0``)."""

    point: EvalPoint
    end: EvalPoint | None
    s0: float
    s1: float


class FlowHeun(DiffusionSolver):
    """Heun's method on ``dx/ds = (x - x0) / s`` of a :class:`RectifiedFlowSchedule` (module
    docstring). Order 2; two model calls per step, one on the step to ``s = 0``."""

    order = 2
    nfe_per_step = 2
    handles_pure_noise = True  # the slope at s = 1 is the model's velocity
    registry_name = "flow-heun"

    def table(self, term, grid, points, x0):
        if not isinstance(term.schedule, RectifiedFlowSchedule):
            raise ValueError("flow-heun steps the state of a RectifiedFlowSchedule, got "
                             f"{type(term.schedule).__name__}")
        s = grid.sigma.tolist()
        return [FlowHeunRow(points[i], points[i + 1] if s[i + 1] != 0.0 else None, s[i], s[i + 1])
                for i in range(grid.steps)]

    def advance(self, term, x, state, row):
        h = row.s1 - row.s0
        d0 = lincomb(x, 1.0 / row.s0, ((-1.0 / row.s0, term.data_prediction(x, row.point)),))
        x1 = lincomb(x, 1.0, ((h, d0),))
        if row.end is None:
            return x1, state, None, 1
        d1 = lincomb(x1, 1.0 / row.s1, ((-1.0 / row.s1, term.data_prediction(x1, row.end)),))
        return lincomb(x, 1.0, ((0.5 * h, d0), (0.5 * h, d1))), state, None, 2

"""Step-size controllers for adaptive solves.

The error of a step is measured in the scaled RMS norm of Hairer, Nørsett & Wanner (1993,
Solving ODEs I, eq. II.4.11): ``sqrt(mean((err / (atol + rtol * max(|x0|, |x1|)))^2))``. The
controller accepts a step when that norm is <= 1 and proposes the next step size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class StepSizeController:
    """Base class: ``initial_step`` and ``adapt``."""

    def initial_step(self, term, solver, t0: float, t1: float, x0: Tensor) -> float:
        raise NotImplementedError

    def adapt(self, x0: Tensor, x1: Tensor, err: Tensor, dt: float, order: int) -> tuple[bool, float]:
        raise NotImplementedError


def rms_error_norm(x0: Tensor, x1: Tensor, err: Tensor, rtol: float, atol: float) -> float:
    """Hairer's scaled RMS error norm (a host sync: adaptive stepping needs the decision)."""
    scale = atol + rtol * torch.maximum(x0.abs(), x1.abs())
    return float(torch.sqrt(torch.mean((err / scale) ** 2)))


class IController(StepSizeController):
    """The elementary (integral) controller ``dt_new = dt * safety * norm^(-1/(order+1))``.

    Args:
        rtol, atol: relative and absolute tolerances.
        dt0: initial step; ``None`` picks one with Hairer's algorithm (HNW I, II.4).
        safety, factor_min, factor_max: the usual safeguards on the step-size ratio.
    """

    def __init__(self, rtol: float = 1e-6, atol: float = 1e-9, dt0: float | None = None,
                 safety: float = 0.9, factor_min: float = 0.2, factor_max: float = 10.0) -> None:
        if rtol <= 0 and atol <= 0:
            raise ValueError("rtol and atol cannot both be <= 0")
        self.rtol, self.atol, self.dt0 = float(rtol), float(atol), dt0
        self.safety, self.factor_min, self.factor_max = safety, factor_min, factor_max

    def initial_step(self, term, solver, t0, t1, x0):
        if self.dt0 is not None:
            return float(self.dt0)
        scale = self.atol + self.rtol * x0.abs()
        f0 = term.vf(t0, x0)
        d0 = float(torch.sqrt(torch.mean((x0 / scale) ** 2)))
        d1 = float(torch.sqrt(torch.mean((f0 / scale) ** 2)))
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, abs(t1 - t0))
        direction = 1.0 if t1 > t0 else -1.0
        f1 = term.vf(t0 + direction * h0, x0 + direction * h0 * f0)
        d2 = float(torch.sqrt(torch.mean(((f1 - f0) / scale) ** 2))) / h0
        if max(d1, d2) <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1.0 / (solver.order + 1))
        return min(100 * h0, h1, abs(t1 - t0))

    def adapt(self, x0, x1, err, dt, order):
        norm = rms_error_norm(x0, x1, err, self.rtol, self.atol)
        if not math.isfinite(norm):
            return False, dt * self.factor_min
        if norm == 0.0:
            factor = self.factor_max
        else:
            factor = min(self.factor_max, max(self.factor_min, self.safety * norm ** (-1.0 / (order + 1))))
        accept = norm <= 1.0
        return accept, dt * (factor if accept else min(1.0, factor))

"""Adaptive-step DPM-Solver-12 and DPM-Solver-23 (Lu et al. 2022a, Section 3.3 and Algorithm 4).

The step size is chosen in log-SNR ``lambda``. A step of size ``h`` evaluates the model at
``lambda_s + j h / k`` (``k = 2`` or ``3`` points) and forms two solutions that share these
evaluations: DPM-Solver-``k`` (``x_high``, the midpoint forms of :mod:`dpm_solver`) and
DPM-Solver-``(k-1)`` with ``r_1 = 1/k`` (``x_low``). The step is accepted when
``E = max over the batch of RMS((x_high - x_low) / delta) <= 1`` with
``delta = max(atol, rtol * max(|x_low|, |x_prev|))``, and the next size is
``theta h E^{-1/k}`` (``theta = 0.9``), capped by the remaining range; the solve continues from
``x_high``. Defaults follow the paper: ``rtol = 0.05``, ``atol = 0.0078`` (for data in [-1, 1]),
``h_init = 0.05``.

It runs on :func:`~timestepper.core.integrate.integrate`'s adaptive loop with the time variable
``lambda``; ``ts.sample(..., solver="dpm-adaptive")`` goes from the first to the last noisy point
of the grid (``steps`` only fixes those end points) and, when the grid ends at zero noise, takes
the final step there with the data prediction (one more model call). When the step size underflows
(e.g. a model that returns NaN from some time on) the solve raises ``RuntimeError`` naming the
log-SNR ``t`` reached. Being adaptive, the step synchronises with the host (the accept decision).
"""

from __future__ import annotations

import math

import torch

from ..core.controllers import StepSizeController
from ..core.solver import register
from ..diffusion.grids import SamplingGrid
from .base import lincomb
from .dpm_solver import DPMSolverSinglestep
from .expint import PREDICTIONS, check_choice, check_order
from .multistep import predict


class LuStepSizeController(StepSizeController):
    """The step-size rule of Lu et al. (2022a, Algorithm 4) on ``err = x_high - x_low``."""

    def __init__(
        self,
        rtol: float = 0.05,
        atol: float = 0.0078,
        h_init: float = 0.05,
        theta: float = 0.9,
        factor_max: float = 10.0,
    ) -> None:
        if rtol <= 0 and atol <= 0:
            raise ValueError("rtol and atol cannot both be <= 0")
        if h_init <= 0:
            raise ValueError(f"h_init must be > 0, got {h_init}")
        self.rtol, self.atol, self.h_init, self.theta, self.factor_max = (
            rtol,
            atol,
            h_init,
            theta,
            factor_max,
        )

    def initial_step(self, term, solver, t0, t1, x0):
        return self.h_init

    def adapt(self, x0, x1, err, dt, order):
        x_low = x1 - err
        delta = torch.clamp(self.rtol * torch.maximum(x_low.abs(), x0.abs()), min=self.atol)
        e = float(((err / delta) ** 2).reshape(err.shape[0], -1).mean(dim=1).sqrt().max())
        if not math.isfinite(e):
            return False, 0.5 * dt
        factor = (
            self.factor_max if e == 0.0 else min(self.factor_max, self.theta * e ** (-1.0 / order))
        )
        return e <= 1.0, dt * factor


@register("dpm-adaptive")
class DPMSolverAdaptive(DPMSolverSinglestep):
    """Adaptive DPM-Solver-23 (``order=3``, default) or -12 (``order=2``) (Lu et al. 2022a, Algorithm 4).

    Args:
        order: 3 (DPM-Solver-23) or 2 (DPM-Solver-12).
        rtol, atol: tolerances of the error estimate.
        h_init: first step size in log-SNR.
        prediction: ``"noise"`` (the paper) or ``"data"`` (the same pair in DPM-Solver++ form).
    """

    adaptive = True

    def __init__(
        self,
        order: int = 3,
        rtol: float = 0.05,
        atol: float = 0.0078,
        h_init: float = 0.05,
        prediction: str = "noise",
    ) -> None:
        self.order = self.nfe_per_step = check_order(order, (2, 3))
        self.prediction = check_choice(prediction, PREDICTIONS, "prediction")
        self.solver_type = "midpoint"
        self.lower_order_final = True
        self.controller = LuStepSizeController(rtol, atol, h_init)

    def log_snr_span(self, grid: SamplingGrid) -> tuple[float, float]:
        """``(lambda_start, lambda_end)``: the grid's first point and its last noisy point."""
        lam = grid.log_snr.tolist()
        end = lam[-1] if math.isfinite(lam[-1]) else lam[-2]
        return lam[0], end

    def init(self, term, grid, x0):
        if grid is not None:
            raise TypeError(
                "dpm-adaptive chooses its own steps: run it through ts.sample or integrate "
                "with its controller"
            )
        return None

    def step(self, term, t0, t1, x, state):
        k = self.order
        sch = term.schedule
        lam = torch.linspace(t0, t1, k + 1, dtype=torch.float64)
        pts = SamplingGrid.from_times(sch, sch.t_from_log_snr(lam))
        base = term.add_points(pts)
        preds = [predict(term, x, base, self.prediction)]
        for j in range(1, k):
            cx, w = self.weights(pts, 0, j)
            preds.append(
                predict(term, lincomb(x, cx, list(zip(w, preds))), base + j, self.prediction)
            )
        cx, w = self.weights(pts, 0, k)
        x_high = lincomb(x, cx, list(zip(w, preds)))
        cx, w = self.weights(pts, 0, k - 1, t=k)
        x_low = lincomb(x, cx, list(zip(w, preds)))
        return x_high, state, x_high - x_low

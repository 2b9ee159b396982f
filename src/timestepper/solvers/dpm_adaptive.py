"""Adaptive-step DPM-Solver-12 and DPM-Solver-23 (Lu et al. 2022a, Section 3.3 and Algorithm 4).

The step size is chosen in log-SNR ``lambda``, which is the time variable of the solve. A step
of size ``h`` evaluates the model at ``lambda_s + j h / k`` (``k = 2`` or ``3`` points) and forms
two solutions that share these evaluations: DPM-Solver-``k`` (``x_high``, Algorithms 1-2 of the
paper with ``r_1 = 1/3, r_2 = 2/3``: its second stage in the ``(e^h - 1)/h - 1`` form, its last
step in the midpoint form) and DPM-Solver-``(k-1)`` with ``r_1 = 1/k`` (``x_low``). The step is accepted
when ``E = max over the batch of RMS((x_high - x_low) / delta) <= 1`` with
``delta = max(atol, rtol * max(|x_low|, |x_prev|))``, and the next size is
``theta h E^{-1/k}`` (``theta = 0.9``), capped by the remaining range; the solve continues from
``x_high``. Defaults follow the paper: ``rtol = 0.05``, ``atol = 0.0078`` (for data in [-1, 1]),
``h_init = 0.05``.

It runs on :func:`timestepper.integrate`'s adaptive loop with its own controller
(:class:`LuStepSizeController`, from :meth:`DPMSolverAdaptive.default_controller`):
``ts.sample(..., solver="dpm-adaptive")`` goes from the first to the last noisy point of the grid
(``steps`` only fixes those end points). A grid that ends at zero noise (``lambda = +inf``) ends
with one more step there, the data prediction (one model call); a grid that starts at pure noise
(``lambda = -inf``, a flow at ``t = 1``) starts with the DDIM step to its second point. Both are
accepted without an error estimate. A model that returns NaN from some time on stops the solve
with :class:`~timestepper.NonFiniteError` naming the log-SNR ``t`` reached. Being adaptive, the step
synchronises with the host (the accept decision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..core.controllers import StepSizeController
from ..core.validation import check_choice, check_order
from ..diffusion.grids import SamplingGrid
from .base import lincomb
from .dpm_solver import DPMSolverSinglestep
from .expint import PREDICTIONS
from .registry import register


@dataclass(frozen=True)
class LuState:
    """The next step size ``h``, the solver's error order, ``x_prev`` (the low-order solution of
    the last accepted step, ``x_T`` at the start: the scale of the error test) and, for the
    k-diffusion rule, the inverse errors of the last two accepted steps."""

    h: float
    order: int
    x_prev: Any = None
    history: tuple[float, float] | None = None


STEP_RULES = ("lu", "k-diffusion")


class LuStepSizeController(StepSizeController):
    """The step-size rule of Lu et al. (2022a, Algorithm 4) on ``err = x_high - x_low``.

    ``E = RMS((x_high - x_low) / delta)`` with ``delta = max(atol, rtol max(|x_low|, |x_prev|))``
    (per sample, the largest over the batch). ``rule="lu"`` (the paper): accept when ``E <= 1``;
    the next step is ``theta h E^(-1/k)``. ``rule="k-diffusion"`` reproduces k-diffusion's
    ``sample_dpm_adaptive``: ``E`` over the whole batch, the PID factor
    ``E^(-b1) E_prev^(-b2) E_prev2^(-b3)`` through the limiter ``1 + atan(f - 1)``, accepted
    when the factor is at least ``accept_safety`` (Söderlind & Wang 2006, as k-diffusion).

    Args:
        rtol, atol: tolerances of the error estimate.
        h_init: first step size in log-SNR.
        theta: safety factor (``rule="lu"``).
        factor_max: largest growth of the step size (``rule="lu"``).
        first: the end of a first jump from ``lambda = -inf`` (``None``: the solve starts at a
            finite log-SNR).
        last: the last noisy log-SNR before a final jump to ``+inf`` (``None``: no final jump).
        rule: ``"lu"`` or ``"k-diffusion"``.
        pid: ``(pcoeff, icoeff, dcoeff)`` of the k-diffusion rule (its default ``(0, 1, 0)``).
        accept_safety: the k-diffusion rule's acceptance threshold on the limited factor.
    """

    def __init__(self, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05,  # noqa: PLR0913
                 theta: float = 0.9, factor_max: float = 10.0, first: float | None = None,
                 last: float | None = None, *, rule: str = "lu",
                 pid: tuple[float, float, float] = (0.0, 1.0, 0.0), accept_safety: float = 0.81) -> None:
        if rtol <= 0 and atol <= 0:
            raise ValueError("rtol and atol cannot both be <= 0")
        if h_init <= 0:
            raise ValueError(f"h_init must be > 0, got {h_init}")
        self.rtol, self.atol, self.h_init = rtol, atol, h_init
        self.theta, self.factor_max = theta, factor_max
        self.first, self.last = first, last
        self.rule = check_choice(rule, STEP_RULES, "rule")
        self.pid, self.accept_safety = tuple(pid), accept_safety

    def options(self) -> dict[str, Any]:
        """The keyword options that rebuild this rule (for copies over another range)."""
        return dict(rule=self.rule, pid=self.pid, accept_safety=self.accept_safety)

    def init(self, term, solver, t0, t1, x0, f0):
        return LuState(self.h_init, solver.error_order or solver.order, x0), 0

    def next_time(self, t, cstate):
        if t == -math.inf:
            return self.first
        if self.last is not None and t >= self.last:
            return math.inf
        t_next = t + cstate.h
        return t_next if self.last is None else min(t_next, self.last)

    def adapt(self, t0, t1, x0, x1, err, cstate):
        if not (math.isfinite(t0) and math.isfinite(t1)):
            return True, replace(cstate, x_prev=x1), False  # the jumps from pure noise / to zero noise
        x_low = x1 - err
        ref = cstate.x_prev if cstate.x_prev is not None else x0
        delta = torch.clamp(self.rtol * torch.maximum(x_low.abs(), ref.abs()), min=self.atol)
        r2 = (err / delta) ** 2
        taken = t1 - t0
        if self.rule == "lu":
            e = float(r2.reshape(err.shape[0], -1).mean(dim=1).sqrt().max())
            accept, h, history = self._lu(e, taken, cstate.order)
        else:
            e = float(r2.mean().sqrt())
            accept, h, history = self._k_diffusion(e, taken, cstate)
        new = replace(cstate, h=h, x_prev=x_low if accept else cstate.x_prev,
                      history=history if accept else cstate.history)
        return accept, new, not abs(h) >= 1e-14 * max(1.0, abs(t1))

    def _lu(self, e: float, taken: float, order: int) -> tuple[bool, float, None]:
        if not math.isfinite(e):
            return False, 0.5 * taken, None
        factor = self.factor_max if e == 0.0 else min(self.factor_max, self.theta * e ** (-1.0 / order))
        return e <= 1.0, taken * factor, None

    def _k_diffusion(self, e: float, taken: float, cs: LuState) -> tuple[bool, float, tuple[float, float]]:
        inv = 1.0 / (e + 1e-8) if math.isfinite(e) else 0.0
        prev, prev2 = cs.history if cs.history is not None else (inv, inv)
        p, i, d = self.pid
        b1, b2, b3 = (p + i + d) / cs.order, -(p + 2 * d) / cs.order, d / cs.order
        factor = 1.0 + math.atan(inv**b1 * prev**b2 * prev2**b3 - 1.0)
        # k-diffusion scales its proposed step, not the step taken (shorter at the end of the range)
        return factor >= self.accept_safety, cs.h * factor, (inv, prev)


@register("dpm-adaptive")
class DPMSolverAdaptive(DPMSolverSinglestep):
    """Adaptive DPM-Solver-23 (``order=3``, default) or -12 (``order=2``) (Lu et al. 2022a, Algorithm 4).

    Args:
        order: 3 (DPM-Solver-23) or 2 (DPM-Solver-12).
        rtol, atol: tolerances of the error estimate.
        h_init: first step size in log-SNR.
        prediction: ``"noise"`` (the paper) or ``"data"`` (the same pair in DPM-Solver++ form).
        rule: ``"lu"`` (the paper's step-size rule) or ``"k-diffusion"`` (k-diffusion's
            ``sample_dpm_adaptive``: the same steps and result; see :class:`LuStepSizeController`).
        accept_safety: the k-diffusion rule's acceptance threshold.
    """

    grid_type = None

    def __init__(  # noqa: PLR0913 - the paper's and k-diffusion's options
        self,
        order: int = 3,
        rtol: float = 0.05,
        atol: float = 0.0078,
        h_init: float = 0.05,
        prediction: str = "noise",
        rule: str = "lu",
        accept_safety: float = 0.81,
    ) -> None:
        self.order = self.nfe_per_step = self.error_order = check_order(order, (2, 3))
        self.prediction = check_choice(prediction, PREDICTIONS, "prediction")
        self.solver_type = "midpoint"
        self.lower_order_final = True
        self.controller = LuStepSizeController(rtol, atol, h_init, rule=rule, accept_safety=accept_safety)

    def default_controller(self, grid: SamplingGrid) -> LuStepSizeController:
        """:attr:`controller` over ``grid``'s log-SNR range, with the jumps its ends need."""
        lam = grid.log_snr.tolist()
        c = self.controller
        first = lam[1] if lam[0] == -math.inf else None
        last = lam[-2] if lam[-1] == math.inf else None
        return LuStepSizeController(c.rtol, c.atol, c.h_init, c.theta, c.factor_max, first, last, **c.options())

    def init(self, term, grid, x0):
        if grid is not None:
            raise TypeError("dpm-adaptive chooses its own steps: run it through ts.sample or "
                            "integrate with its default_controller(grid) over log-SNR")
        return None, None

    def step(self, term, t0, t1, x, state, row):
        sch = term.schedule
        if not (math.isfinite(t0) and math.isfinite(t1)):
            # a jump from lambda = -inf or to +inf: the first-order (DDIM) step, exact limit there
            pts = SamplingGrid.from_times(sch, sch.t_from_log_snr(torch.tensor([t0, t1], dtype=torch.float64)))
            p0 = term.points(pts, x)[0]
            cx, cd = float(pts.sigma[1] / pts.sigma[0]), float(pts.alpha[1])
            if math.isfinite(t0):
                cd = float(-pts.alpha[1] * math.expm1(-(t1 - t0)))
            d = term.data_prediction(x, p0)
            return lincomb(x, cx if cx != 0.0 else None, ((cd, d),)), state, None, 1
        k = self.order
        lam = torch.linspace(t0, t1, k + 1, dtype=torch.float64)
        pts = SamplingGrid.from_times(sch, sch.t_from_log_snr(lam))
        points = term.points(pts, x)
        preds = [term.prediction(x, points[0], self.prediction)]
        for j in range(1, k):
            # Lu et al.'s DPM-Solver-3 (Algorithm 2) reaches its second stage with the
            # (e^h - 1)/h - 1 form of the second-order step; its last step is the midpoint form
            cx, w = self.weights(pts, 0, j, solver_type="heun" if j == 2 else None)
            preds.append(term.prediction(lincomb(x, cx, tuple(zip(w, preds))), points[j], self.prediction))
        cx, w = self.weights(pts, 0, k)
        x_high = lincomb(x, cx, tuple(zip(w, preds)))
        cx, w = self.weights(pts, 0, k - 1, t=k)
        x_low = lincomb(x, cx, tuple(zip(w, preds)))
        return x_high, state, x_high - x_low, k

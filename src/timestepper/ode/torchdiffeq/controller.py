"""torchdiffeq's step-size control, as a controller of the loop.

The rule of torchdiffeq's adaptive Runge–Kutta solvers (itself Hairer, Nørsett & Wanner, Solving
ODEs I, II.4): the initial step of HNW I p. 169 (without the bound by the interval), the error
ratio ``norm(err / (atol + rtol max(|y0|, |y1|)))``, acceptance when it is <= 1 (always when the
step is at ``min_step``, never above ``max_step``), the next step
``dt * min(ifactor, max(safety / ratio^(1/p), dfactor))`` with ``dfactor = 1`` after an accepted
step, steps that end on the ``step_t`` times, and steps past the last output time (the outputs
come from dense output). The callbacks ``callback_step``, ``callback_accept_step`` and
``callback_reject_step`` of the user's ``func`` are called with ``(t0, y0, dt)`` for every
attempted, accepted and rejected step.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ...core.controllers import StepSizeController


@dataclass(frozen=True)
class StepRule:
    """torchdiffeq's options of the step-size rule (names as in torchdiffeq)."""

    rtol: float
    atol: float
    order: int
    norm: Callable[[Tensor], Any]  # of the flat state (a tuple state is split before the user's)
    first_step: float | None = None
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    min_step: float = 0.0
    max_step: float = math.inf


@dataclass(frozen=True)
class _State:
    dt: float  # magnitude of the next step


class TorchdiffeqController(StepSizeController):
    """torchdiffeq's adaptive step-size control (see the module docstring).

    Args:
        rule: the tolerances, order and safeguards.
        step_t: times the steps must end on (torchdiffeq's ``step_t``).
        callbacks: ``(callback_step, callback_accept_step, callback_reject_step)`` or ``None``s,
            each called as ``cb(t0, y0, dt)`` with tensors.
        as_time: float -> the 0-d time tensor handed to the callbacks.
        past_end: step past the last output time (torchdiffeq's behaviour, for a forward solve
            whose outputs come from dense output) instead of landing on it.
    """

    def __init__(self, rule: StepRule, step_t: Sequence[float] = (),  # noqa: PLR0913
                 callbacks: tuple[Any, Any, Any] = (None, None, None),
                 as_time: Callable[[float], Tensor] | None = None, past_end: bool = True,
                 unflatten: Callable[[Tensor], Any] | None = None) -> None:
        self.rule = rule
        self.step_t = sorted(float(s) for s in step_t)
        self.callbacks = callbacks
        self.as_time = as_time or (lambda t: torch.tensor(t, dtype=torch.float64))
        self.steps_past_end = past_end
        self.unflatten = unflatten or (lambda x: x)
        self.direction = 1.0
        self.end = math.inf
        self.last_dt: float | None = None  # the step proposed after the last step (for restarts)
        self._proposal: tuple[float, float, float] = (math.nan, math.nan, math.nan)

    # -- the protocol ---------------------------------------------------------------------------

    def init(self, term, solver, t0, t1, x0, f0):
        self.direction = 1.0 if t1 >= t0 else -1.0
        self.end = t1
        if self.rule.first_step is not None:
            return _State(abs(float(self.rule.first_step))), 0
        with torch.no_grad():
            return initial_step(term.vf, t0, self.direction, x0.detach(), f0, self.rule)

    def next_time(self, t, cstate):
        r, d = self.rule, self.direction
        dt = cstate.dt if math.isfinite(cstate.dt) else r.min_step
        dt = min(max(dt, r.min_step), r.max_step)
        t1 = t + d * dt
        s = self._next_step_t(t)
        if s is not None and d * (t1 - s) > 0:
            t1, dt = s, abs(s - t)
        if not self.steps_past_end and d * (t1 - self.end) > 0:  # a jump_t: land on it
            t1, dt = self.end, abs(self.end - t)
        self._proposal = (t, t1, dt)  # the step size as torchdiffeq holds it (not t1 - t0)
        return t1

    def adapt(self, t0, t1, x0, x1, err, cstate):
        r = self.rule
        dt = self._proposal[2] if self._proposal[:2] == (t0, t1) else abs(t1 - t0)
        self._call(0, t0, x0, dt)
        ratio = self.error_ratio(x0, x1, err)
        accept = ratio <= 1.0
        if dt > r.max_step:
            accept = False
        if dt <= r.min_step:
            accept = True
        self._call(1 if accept else 2, t0, x0, dt)
        nxt = min(max(optimal_step(dt, ratio, r, accept), r.min_step), r.max_step)
        self.last_dt = nxt
        underflow = not (t1 + self.direction * nxt != t1)
        return accept, replace(cstate, dt=nxt), underflow

    # -- the rule -------------------------------------------------------------------------------

    def error_ratio(self, x0: Tensor, x1: Tensor, err: Tensor) -> float:
        """``norm(err / (atol + rtol max(|y0|, |y1|)))`` (inf for a non-finite error)."""
        with torch.no_grad():
            tol = self.rule.atol + self.rule.rtol * torch.maximum(x0.detach().abs(), x1.detach().abs())
            v = float(self.rule.norm(err.detach() / tol))
        return v if math.isfinite(v) else math.inf

    def end_stage_time(self, t: Any, x: Tensor) -> Any:
        """The time ``func`` sees: a stage at the end ``t1`` of the step being taken is evaluated
        one floating point number inside the step, as torchdiffeq does (so that a discontinuity
        at a ``jump_t`` time is seen from the step's side)."""
        t0, t1, _ = self._proposal
        if isinstance(t, float) and t0 == t0 and abs(t - t1) <= 4 * math.ulp(t1) and t1 != t0:
            return math.nextafter(t1, t0)
        return t

    def _next_step_t(self, t: float) -> float | None:
        ts = self.step_t
        if not ts:
            return None
        if self.direction > 0:
            i = bisect.bisect_right(ts, t)
            return ts[i] if i < len(ts) else None
        i = bisect.bisect_left(ts, t)
        return ts[i - 1] if i > 0 else None

    def _call(self, which: int, t0: float, x0: Tensor, dt: float) -> None:
        cb = self.callbacks[which]
        if cb is not None:
            cb(self.as_time(t0), self.unflatten(x0), self.as_time(dt))


def optimal_step(dt: float, ratio: float, r: StepRule, accepted: bool) -> float:
    """torchdiffeq's next step size after a step of size ``dt`` with error ratio ``ratio``."""
    if ratio == 0.0:
        return dt * r.ifactor
    lo = 1.0 if ratio < 1.0 else r.dfactor
    if not math.isfinite(ratio):
        return dt * lo
    return dt * min(r.ifactor, max(r.safety / ratio ** (1.0 / r.order), lo))


def initial_step(vf: Callable[[Any, Tensor], Tensor], t0: float, direction: float, x0: Tensor,
                 f0: Tensor | None, r: StepRule) -> tuple[_State, int]:
    """HNW I's starting step (II.4, p. 169) in torchdiffeq's form: the probe step and the result
    are not bounded by the interval. Returns the state and the evaluations made."""
    nfe = 1
    if f0 is None:
        f0, nfe = vf(t0, x0), 2
    scale = r.atol + x0.abs() * r.rtol
    d0, d1 = float(r.norm(x0 / scale)), float(r.norm(f0 / scale))
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    f1 = vf(t0 + direction * h0, x0 + (direction * h0) * f0)
    d2 = abs(float(r.norm((f1 - f0) / scale)) / h0)
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / r.order)
    return _State(min(100 * h0, h1)), nfe


__all__ = ["StepRule", "TorchdiffeqController", "initial_step", "optimal_step"]

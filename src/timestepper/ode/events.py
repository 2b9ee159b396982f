"""Terminal events: integrate until ``event_fn(t, y)`` crosses zero, with the gradient through the
event time (torchdiffeq's ``odeint(..., event_fn=)`` and ``odeint_event``).

The forward solve runs on the one loop towards infinity; after every accepted step the event
function is evaluated at the step's end, and at the first change of sign the loop is left and the
event time is located by bisection on the step's dense output (linear or cubic interpolation for
the fixed-grid methods), to ``atol`` in time as torchdiffeq does. The state at the event is that
interpolant (direct backpropagation) or a solve to the event time (``odeint_adjoint``). Its
gradient accounts for the event time moving with the inputs, by the implicit function theorem
(Chen, Amos & Nickel 2021, "Learning neural event functions for ordinary differential equations",
eq. 4): from ``c(t*, y(t*)) = 0``, ``dt*/dθ = -(∂c/∂y · ∂y/∂θ) / (∂c/∂t + ∂c/∂y · f)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.terms import ODETerm
from ..loop import integrate
from ..loop.options import StepRecord
from .time_grad import needs_grad, shift_start
from .torchdiffeq.controller import StepRule, TorchdiffeqController
from .torchdiffeq.inputs import Field, State, check_times
from .torchdiffeq.methods import drives_adaptively, method_of, solver_of
from .torchdiffeq.options import Adaptive, Fixed
from .torchdiffeq.outputs import Gradient, flat_outputs

MAX_FIXED_STEPS = 20_000


def odeint_event(func, y0, t0, *, event_fn, reverse_time=False, odeint_interface=None, **kwargs):  # noqa: PLR0913 - torchdiffeq's
    """Integrate from ``t0`` until ``event_fn(t, y)`` crosses zero; returns ``(event_t,
    solution)`` with ``solution`` the states at ``t0`` and at the event, both differentiable
    (through the event time too). ``reverse_time`` integrates backwards; ``odeint_interface`` is
    :func:`~timestepper.odeint` (default) or :func:`~timestepper.odeint_adjoint`; ``kwargs`` are
    its keyword arguments (``rtol``, ``atol``, ``method``, ``options``, ...)."""
    t0 = torch.as_tensor(t0)
    step = -1.0 if reverse_time else 1.0
    t = torch.cat([t0.reshape(-1), t0.reshape(-1).detach() + step])
    if odeint_interface is not None:
        return odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)
    kw = dict(rtol=kwargs.pop("rtol", 1e-7), atol=kwargs.pop("atol", 1e-9),
              method=kwargs.pop("method", None), options=kwargs.pop("options", None))
    if kwargs:
        raise TypeError(f"odeint_event got unexpected keyword arguments {sorted(kwargs)}")
    return solve_until_event(func, y0, t, event_fn, kw, Gradient())


class _Crossed(Exception):
    """Leaves the loop at the first accepted step across the event."""

    def __init__(self, record: StepRecord) -> None:
        super().__init__("event")
        self.record = record


@dataclass
class _Detector:
    """``on_accept``: the sign of the event function at each accepted step's end."""

    event: Callable[[float, Tensor], Tensor]
    sign0: Tensor

    def __call__(self, rec: StepRecord) -> None:
        with torch.no_grad():
            if bool((torch.sign(self.event(rec.t1, rec.x1)) != self.sign0).any()):
                raise _Crossed(rec)


def solve_until_event(func, y0, t, event_fn, kw: dict, grad: Any):
    """The body of ``odeint(..., event_fn=)``: ``(event_t, solution)`` (see the module docstring)."""
    t = check_times(t)
    if t.numel() != 2:
        raise ValueError(f"event handling needs len(t) == 2 (t[0] and a second time giving the "
                         f"direction), got {t.numel()}")
    state = State.of(y0)
    field = Field(func, state)
    t_real = field.time(0.0).dtype
    t0 = float(t[0])
    direction = 1.0 if float(t[1]) > t0 else -1.0
    with torch.no_grad():
        sign0 = torch.sign(event_fn(field.time(t0), y0))

    def event(s: float, x: Tensor) -> Tensor:  # combined as torchdiffeq: min(c * sign(c0)) > 0
        return torch.min(event_fn(field.time(s), state.split(x)) * sign0).reshape(())

    if grad.mode == "direct":
        x0 = shift_start(field, t[0], state.x0) if needs_grad(t) else state.x0
        t_event, x_event = _locate(func, state, x0, (t0, direction), event, kw)
    else:
        with torch.no_grad():
            t_event, _ = _locate(func, state, state.x0, (t0, direction), event, kw)
        ts = torch.stack([t[0], torch.tensor(t_event, dtype=t.dtype, device=t.device)])
        x_event = flat_outputs(func, state, ts, kw["rtol"], kw["atol"], kw["method"],
                               kw["options"], grad)[-1]
    et = torch.tensor(t_event, dtype=t.dtype, device=t.device)
    et, x_event = _EventGradient.apply(field, event, et, x_event)
    x_first = state.x0
    return et.to(t_real) if t_real != t.dtype else et, state.split(torch.stack([x_first, x_event]), (2,))


def _locate(func, state: State, x0: Tensor, start: tuple[float, float], event,  # noqa: PLR0913
            kw: dict) -> tuple[float, Tensor]:
    """The event time (a float) and the state there (from the crossing step's interpolant), from
    ``x0`` at ``start = (t0, direction)``."""
    t0, direction = start
    name, m = method_of(kw.get("method"))
    solver = solver_of(m)
    opts = dict(kw.get("options") or {})
    field = Field(func, state)
    term = ODETerm(field)
    detector = _Detector(event, torch.ones(()))
    try:
        if drives_adaptively(m, solver):
            o = Adaptive.parse(opts, name, state)
            rule = StepRule(kw["rtol"], kw["atol"], m.order or solver.order, o.norm, o.first_step,
                            o.safety, o.ifactor, o.dfactor, o.min_step, o.max_step)
            ctrl = TorchdiffeqController(rule, o.step_t, as_time=field.time, past_end=True)
            integrate(term, solver, ctrl, x0, t_span=(t0, direction * math.inf),
                      max_steps=o.max_num_steps, on_accept=detector)
        else:
            f = Fixed.parse(opts, name, adams=m.registry.startswith("adams"))
            if f.step_size is None:
                raise ValueError("event handling with a fixed-grid method needs options['step_size']")
            grid = torch.tensor([t0 + direction * k * f.step_size for k in range(MAX_FIXED_STEPS + 1)],
                                dtype=torch.float64)
            integrate(term, solver, grid, x0, on_accept=detector)
    except _Crossed as hit:
        return _bisect(hit.record, solver, term, event, float(_scalar_atol(kw["atol"])),
                       opts.get("interp", "linear") if not drives_adaptively(m, solver) else None)
    raise RuntimeError("the event function did not change sign within the steps allowed")


def _scalar_atol(atol: Any) -> float:
    return float(torch.as_tensor(atol).max())


def _bisect(rec: StepRecord, solver, term, event, tol: float, interp: str | None) -> tuple[float, Tensor]:  # noqa: PLR0913
    """Bisection on the crossing step's interpolant until the bracket is below ``tol`` (as many
    halvings as torchdiffeq's ``find_event``)."""
    if interp is None:
        state, _ = solver.prepare_dense(term, rec.state)

        def at(theta: float) -> Tensor:
            return solver.interpolate(state, theta)
    else:
        h = rec.t1 - rec.t0
        f0 = term.vf(rec.t0, rec.x0) if interp == "cubic" else None
        f1 = term.vf(rec.t1, rec.x1) if interp == "cubic" else None

        def at(theta: float) -> Tensor:
            if interp == "linear" or f0 is None or f1 is None:
                return rec.x0 + theta * (rec.x1 - rec.x0)
            s = theta
            return ((1 + 2 * s) * (1 - s) ** 2 * rec.x0 + (s * (1 - s) ** 2 * h) * f0
                    + s * s * (3 - 2 * s) * rec.x1 + (s * s * (s - 1) * h) * f1)
    lo, hi = 0.0, 1.0
    span = abs(rec.t1 - rec.t0)
    n = max(0, math.ceil(math.log(span / tol) / math.log(2.0))) if tol > 0 else 60
    with torch.no_grad():
        sign0 = torch.sign(event(rec.t0, rec.x0))
        for _ in range(n):
            mid = 0.5 * (lo + hi)
            if bool(torch.sign(event(rec.t0 + mid * (rec.t1 - rec.t0), at(mid))) == sign0):
                lo = mid
            else:
                hi = mid
    theta = 0.5 * (lo + hi)
    return rec.t0 + theta * (rec.t1 - rec.t0), at(theta)


class _EventGradient(torch.autograd.Function):
    """Identity on ``(event_t, x_event)``; the backward pass adds the event time's dependence on
    the inputs (implicit function theorem, see the module docstring) to the state's gradient."""

    @staticmethod
    def forward(ctx, field, event, t_event: Tensor, x_event: Tensor):
        ctx.field, ctx.event = field, event
        ctx.save_for_backward(t_event, x_event)
        return t_event.detach().clone(), x_event.detach().clone()

    @staticmethod
    def backward(ctx, g_t: Tensor, g_x: Tensor):
        t_event, x_event = ctx.saved_tensors
        s = float(t_event)
        with torch.enable_grad():
            tt = torch.tensor(s, dtype=torch.float64, requires_grad=True)
            xx = x_event.detach().requires_grad_(True)
            c = ctx.event(tt, xx)
            dc_dt, dc_dx = torch.autograd.grad(c, (tt, xx), allow_unused=True)
        with torch.no_grad():
            f = ctx.field(s, x_event.detach())
            dc_dt = torch.zeros((), dtype=f.dtype) if dc_dt is None else dc_dt.to(f.dtype)
            dc_dx = torch.zeros_like(f) if dc_dx is None else dc_dx
            dcdt_total = dc_dt + (dc_dx * f).sum()
            gt_total = g_t.to(f.dtype) + (g_x * f).sum()
            g_state = g_x - dc_dx * (gt_total / dcdt_total)
        return None, None, None, g_state


__all__ = ["odeint_event", "solve_until_event"]

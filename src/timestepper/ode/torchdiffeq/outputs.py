"""The solves behind the torchdiffeq drop-in: the states at the output times for an adaptive
method (torchdiffeq's controller on the loop, restarting at ``jump_t``), a fixed-grid method
(stepping on its own grid, interpolating the outputs) or scipy, and how they are differentiated."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...core.solver import Solver
from ..solve import solve
from ..time_grad import needs_grad, shift_saved, shift_start
from .controller import StepRule, TorchdiffeqController
from .fixed import build_grid, interpolate
from .inputs import Field, GridStepTracker, State, check_times
from .methods import Method, drives_adaptively, method_of, solver_of
from .options import Adaptive, Fixed

CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")


@dataclass(frozen=True)
class Gradient:
    """How the solve is differentiated: ``"direct"`` (backpropagation through the steps) or
    ``"backsolve"`` (the continuous adjoint, with its parameters, tolerances, norm and solver)."""

    mode: str = "direct"
    params: Sequence[Tensor] | None = None
    rtol: Any = None
    atol: Any = None
    seminorm: bool = False
    solver: Solver | None = None

    def solve_options(self, func: Any) -> dict[str, Any]:
        """:func:`timestepper.solve`'s gradient options (the parameters default to ``func``'s,
        as torchdiffeq's ``adjoint_params``)."""
        params = self.params
        if params is None and self.mode != "direct":
            params = tuple(p for p in func.parameters() if p.requires_grad) \
                if isinstance(func, torch.nn.Module) else ()
        return dict(adjoint=self.mode, adjoint_params=params, adjoint_rtol=_scalar(self.rtol),
                    adjoint_atol=_scalar(self.atol), adjoint_seminorm=self.seminorm)


def integrate_outputs(func, y0, t, rtol, atol, method, options, grad: Gradient):  # noqa: PLR0913
    """The states at the times ``t`` in the user's structure (the body of :func:`odeint`)."""
    t = check_times(t)
    state = State.of(y0)
    return state.split(flat_outputs(func, state, t, rtol, atol, method, options, grad), (t.numel(),))


def flat_outputs(func, state: State, t: Tensor, rtol, atol, method, options,  # noqa: PLR0913
                 grad: Gradient) -> Tensor:
    """The flat states at the times ``t``, stacked along dim 0."""
    name, m = method_of(method)
    if t.numel() == 1:
        return state.x0.unsqueeze(0)
    opts = dict(options or {})
    if m.kind == "scipy":
        from .scipy_solver import solve_with_scipy

        ys = solve_with_scipy(func, state, t, rtol, atol, opts)
    else:
        solver = solver_of(m)
        if drives_adaptively(m, solver):
            ys = _adaptive(func, state, t, (rtol, atol), (name, m, solver), opts, grad)
        else:
            ys = _fixed(func, state, t, (name, m, solver), opts, grad)
    return ys


def _adaptive(func, state: State, t: Tensor, tols, method: tuple[str, Method, Solver],  # noqa: PLR0913
              options: dict, grad: Gradient) -> Tensor:
    name, m, solver = method
    o = Adaptive.parse(options, name, state)
    order = m.order if m.kind == "adaptive" else solver.order
    rule = StepRule(tols[0], tols[1], order, o.norm, o.first_step, o.safety, o.ifactor, o.dfactor,
                    o.min_step, o.max_step)
    field = Field(func, state)  # for the callbacks' times
    callbacks = callbacks_of(func)
    # torchdiffeq never stops a solve early for stiffness: neither does the drop-in
    run = dict(solver=solver, max_steps=o.max_num_steps, rtol=_scalar(tols[0]),
               atol=_scalar(tols[1]), stiffness_check=False, **grad.solve_options(func))
    segments = _segments(t, o.jumps)
    if len(segments) == 1:
        ctrl = TorchdiffeqController(rule, o.step_t, callbacks, field.time, grad.mode == "direct",
                                     state.split)
        sol = solve(Field(func, state, ctrl.end_stage_time), state.x0, t[0], t[-1], saveat=t,
                    controller=ctrl, **run)
        assert sol.ys is not None
        return sol.ys
    if needs_grad(t):
        raise ValueError("gradients with respect to t are not available with jump_t/grid_points")
    outs: dict[int, Tensor] = {}
    x = state.x0
    for i, (a, b, saves, where) in enumerate(segments):
        last = i == len(segments) - 1
        ctrl = TorchdiffeqController(rule, o.step_t, callbacks, field.time,
                                     last and grad.mode == "direct", state.split)
        seg_field = Field(func, state, _stage_times(ctrl, a, b, first=i == 0))
        sol = solve(seg_field, x, a, b, saveat=saves, controller=ctrl, **run)
        assert sol.ys is not None
        outs.update({k: sol.ys[j] for k, j in where.items()})
        x = sol.ys[-1]
        rule = _with_first(rule, ctrl.last_dt) if ctrl.last_dt is not None else rule
    return torch.stack([outs[k] for k in range(t.numel())])


def _segments(t: Tensor, jumps: list[tuple[float, float]]) -> list[tuple[Any, ...]]:
    """``(start, end, save times, {output index: save index})`` of the solves between the jumps
    inside ``t``'s interval (one solve over ``t`` when there is none)."""
    tl = [float(v) for v in t.detach().tolist()]
    sign = 1.0 if tl[-1] > tl[0] else -1.0
    inside = sorted((j for j in jumps if sign * (j[0] - tl[0]) > 0 and sign * (tl[-1] - j[1]) > 0),
                    reverse=sign < 0)
    if not inside:
        return [(t[0], t[-1], t, {})]
    bounds = [tl[0]] + [v for j in inside for v in (j if sign > 0 else j[::-1])] + [tl[-1]]
    out, taken = [], set()
    for a, b in zip(bounds[0::2], bounds[1::2]):
        ks = [k for k, s in enumerate(tl) if k not in taken and sign * (s - a) >= 0 >= sign * (s - b)]
        taken.update(ks)
        pts = sorted({a, b, *(tl[k] for k in ks)}, reverse=sign < 0)
        out.append((a, b, torch.tensor(pts, dtype=torch.float64), {k: pts.index(tl[k]) for k in ks}))
    missing = set(range(len(tl))) - taken
    if missing:
        raise ValueError(f"output time {tl[min(missing)]} lies inside a grid_points +- eps gap")
    return out


def _fixed(func, state: State, t: Tensor, method: tuple[str, Method, Solver], options: dict,
           grad: Gradient) -> Tensor:
    name, m, solver = method
    o = Fixed.parse(options, name, adams=m.registry.startswith("adams"))
    if o.solver_options:
        from ...solvers.registry import get

        solver = get(m.registry, **o.solver_options)
    grid = build_grid(func, state.split(state.x0), t, o)
    plain = Field(func, state)
    callback = getattr(func, "callback_step", None)
    for extra in CALLBACKS[1:]:
        if hasattr(func, extra):
            warnings.warn(f"method {name!r} steps on a fixed grid and never calls func.{extra}",
                          stacklevel=3)
    tracker = GridStepTracker(grid, m.stage_at_end, o.perturb, callback, plain.time)
    field = Field(func, state, tracker) if (o.perturb or callback is not None) else plain
    x0 = shift_start(plain, t[0], state.x0) if needs_grad(t) else state.x0
    sol = solve(field, x0, grid[0], grid[-1], solver=solver, dt=abs(grid[-1] - grid[0]),
                saveat=grid, **grad.solve_options(func))
    assert sol.ys is not None
    ys = interpolate(grid, sol.ys, [float(v) for v in t.detach().tolist()], o.interp, plain)
    return shift_saved(plain, t, ys) if needs_grad(t) else ys


def callbacks_of(func: Any) -> tuple[Any, Any, Any]:
    """``func``'s ``callback_step``, ``callback_accept_step``, ``callback_reject_step`` (or
    ``None``)."""
    step, accept, reject = (getattr(func, c, None) for c in CALLBACKS)
    return step, accept, reject


def _with_first(rule: StepRule, first: float) -> StepRule:
    from dataclasses import replace

    return replace(rule, first_step=first)


def _stage_times(ctrl: TorchdiffeqController, a: float, b: float, first: bool):
    """The times ``func`` sees in the segment ``[a, b]``: a stage at a step's end just inside the
    step; after a jump, the start ``a`` as the next floating point number towards ``b``
    (torchdiffeq evaluates ``f`` just after a jump)."""

    def nudge(t: Any, x: Tensor) -> Any:
        if t == a and not first:
            return math.nextafter(a, b)
        return ctrl.end_stage_time(t, x)

    return nudge


def _scalar(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, Tensor):
        return float(v.max()) if v.numel() else None
    try:
        return float(v)
    except TypeError:
        return float(max(v))


__all__ = ["CALLBACKS", "Gradient", "callbacks_of", "flat_outputs", "integrate_outputs"]

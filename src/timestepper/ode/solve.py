"""``solve``: the front for neural ODE users, on the one integrate loop.

``solve(f, y0, t0, t1, solver="tsit5", rtol=..., atol=..., saveat=..., adjoint=...)`` builds an
:class:`~timestepper.core.terms.ODETerm` from ``f(t, y, *args)`` (``y`` a tensor or a nested
tuple/dict of tensors), picks fixed steps (``dt=``) or a PID step-size controller, and calls
:func:`timestepper.integrate` (shared step) or the per-sample loop. Gradients flow by direct
backpropagation, by recursive checkpointing, or by the continuous adjoint
(:mod:`timestepper.ode.adjoint`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..core.batched import integrate_adaptive_batched
from ..core.controllers import StepSizeController, controller_from
from ..core.integrate import integrate
from ..core.solution import Solution
from ..core.solver import Solver, get
from ..core.terms import ODETerm
from .pytree import Flattener

ADJOINTS = ("direct", "checkpoint", "backsolve")
ERROR_CONTROLS = ("local", "global")


def fixed_grid(t0: float, t1: float, dt: float, saveat: Sequence[float] | None) -> Tensor:
    """Uniform steps of size ``dt`` from ``t0`` to ``t1`` (the last one shorter), with the save
    times inserted as grid points."""
    n = max(1, math.ceil(abs(t1 - t0) / abs(dt) - 1e-9))
    direction = 1.0 if t1 > t0 else -1.0
    pts = [t0 + direction * i * abs(dt) for i in range(n)] + [t1]
    if saveat is not None:
        pts = sorted(set(pts) | set(saveat), reverse=direction < 0)
    return torch.tensor(pts, dtype=torch.float64)


class _FlatField:
    """``f(t, y, *args)`` seen as a function of the flat state."""

    def __init__(self, f, flat: Flattener, args: tuple) -> None:
        self.f, self.flat, self.args = f, flat, args

    def __call__(self, t, x):
        return self.flat.flatten(self.f(t, self.flat.unflatten(x), *self.args))


def solve(
    f: Callable[..., Any],
    y0: Any,
    t0: float | Tensor,
    t1: float | Tensor,
    *,
    solver: str | Solver = "tsit5",
    rtol: float = 1e-6,
    atol: float = 1e-9,
    saveat: Sequence[float] | Tensor | None = None,
    adjoint: str = "direct",
    args: tuple = (),
    per_sample_steps: bool = False,
    controller: str | StepSizeController = "i",
    norm: str = "rms",
    dt0: float | None = None,
    dt: float | None = None,
    max_steps: int = 100_000,
    on_failure: str = "raise",
    adjoint_params: Sequence[Tensor] | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    regularise: bool = False,
    time_dtype: torch.dtype = torch.float64,
    adjoint_seminorm: bool = True,
    error_control: str = "local",
) -> Solution:
    """Solve ``dy/dt = f(t, y, *args)`` from ``t0`` to ``t1``.

    Args:
        f: the vector field; returns a structure like ``y``.
        y0: initial state: a tensor or a (nested) tuple/list/dict of tensors (one dtype).
        t0, t1: the interval (``t1 < t0`` integrates backwards). Per-sample mode also accepts
            ``(B,)`` tensors.
        solver: registry name (``"tsit5"``, ``"dopri5"``, ``"dopri8"``, ``"bosh3"``,
            ``"rk-heun"``, ``"rk4"``, ``"midpoint"``, ``"rk-euler"``, ...) or a solver.
        rtol, atol: tolerances of the adaptive controller.
        saveat: times at which to save; ``Solution.ts``/``ys`` hold them (dense output).
        adjoint: ``"direct"`` (backprop through the steps), ``"checkpoint"`` (recursive
            checkpointing of the accepted steps, O(log n) stored states) or ``"backsolve"`` (the
            continuous adjoint of Chen et al. 2018, with its own tolerances).
        args: extra positional arguments passed to ``f``.
        per_sample_steps: each sample of the batch (leading dim) gets its own step size,
            accept/reject and statistics (``Solution.stats`` fields are then ``(B,)`` tensors).
        controller: ``"i"``, ``"pi"``, ``"pid"`` or a :class:`StepSizeController`.
        norm: ``"rms"`` or ``"max"`` error norm.
        dt0: initial step (default: Hairer's selection).
        dt: fixed step size (required for solvers without an error estimate, e.g. ``"rk4"``).
        max_steps: bound on attempted steps.
        on_failure: ``"raise"`` or ``"return"`` (last state + ``extras["status"]``).
        adjoint_params: tensors to differentiate in the checkpoint/backsolve modes (default: the
            parameters of ``f`` when it is an ``nn.Module``).
        adjoint_rtol, adjoint_atol: tolerances of the backward solve (default: rtol, atol).
        adjoint_seminorm: measure the backsolve error on the state and adjoint only, not on
            the parameter-gradient integrals (Kidger et al. 2021; fewer backward steps).
        error_control: ``"local"`` (the controller bounds each step's error) or ``"global"``
            (solve again with tighter tolerances until the estimated error of the returned
            solution, at the end and at every ``saveat`` time, is within ``atol + rtol |y|``;
            :mod:`timestepper.ode.global_error`). ``stats`` then sum every solve and
            ``extras`` hold ``global_error``, ``tolerance_scale`` and ``rounds``.
        regularise: accumulate the solver heuristics of Pal et al. (2021) into
            ``extras["reg_error"]`` (``sum_j E_j |h_j|``, ``E_j`` the controller's scaled error
            norm) and ``extras["reg_stiffness"]`` (``sum_j S_j``, the RK stiffness estimate);
            differentiable; shared-step adaptive solves with ``adjoint="direct"``
            (:mod:`timestepper.ode.regularise`).
        time_dtype: per-sample mode only: dtype of the times and step sizes kept on the device
            (``torch.float32`` on devices without float64). Shared-step times are host floats.
    """
    if adjoint not in ADJOINTS:
        raise ValueError(f"adjoint must be one of {ADJOINTS}, got {adjoint!r}")
    if error_control not in ERROR_CONTROLS:
        raise ValueError(f"error_control must be one of {ERROR_CONTROLS}, got {error_control!r}")
    if error_control == "global":
        if dt is not None or regularise:
            raise ValueError("error_control='global' needs an adaptive solve without "
                             "regularise (it re-solves with tighter tolerances)")
        from .global_error import scaled_controller, solve_to_global_tolerance

        kw = dict(solver=solver, saveat=saveat, adjoint=adjoint, args=args,
                  per_sample_steps=per_sample_steps, norm=norm, dt0=dt0, max_steps=max_steps,
                  on_failure=on_failure, adjoint_params=adjoint_params,
                  adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol, time_dtype=time_dtype,
                  adjoint_seminorm=adjoint_seminorm)
        return solve_to_global_tolerance(
            lambda k: solve(f, y0, t0, t1, rtol=rtol * k, atol=atol * k,
                            controller=scaled_controller(controller, k), **kw), rtol, atol)
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    slv = get(solver)
    flat = Flattener(y0, batch=per_sample_steps)
    x0 = flat.flatten(y0)
    field = _FlatField(f, flat, args)
    fixed = dt is not None or not getattr(slv, "adaptive", True)
    if fixed and dt is None:
        raise ValueError(f"solver {getattr(slv, 'name', slv)!r} has no error estimate: give a "
                         "fixed step size dt=")
    ctrl = None if fixed else controller_from(controller, rtol, atol, norm=norm, dt0=dt0) \
        if isinstance(controller, str) else controller
    opts = dict(max_steps=max_steps, on_failure=on_failure)
    if per_sample_steps:
        if adjoint != "direct" or fixed:
            raise NotImplementedError("per_sample_steps supports adaptive solves with "
                                      "adjoint='direct' only")
        sol = integrate_adaptive_batched(ODETerm(field), slv, ctrl, x0, t0, t1, saveat=saveat,
                                         time_dtype=time_dtype, **opts)
    else:
        t0f, t1f = (float(t.detach()) if isinstance(t, Tensor) else float(t) for t in (t0, t1))
        st = None if saveat is None else torch.as_tensor(saveat, dtype=torch.float64).reshape(-1)
        if regularise:
            if adjoint != "direct" or ctrl is None:
                raise ValueError("regularise=True needs an adaptive solve with adjoint='direct'")
            if not all(hasattr(ctrl, a) for a in ("rtol", "atol", "norm")):
                raise ValueError("regularise=True needs a controller with rtol, atol and norm "
                                 "(a PIDController)")
            from ..core.adaptive import integrate_adaptive
            from .regularise import SolverHeuristics

            heur = SolverHeuristics(ctrl.rtol, ctrl.atol, ctrl.norm)
            sol = integrate_adaptive(ODETerm(field), slv, ctrl, x0, (t0f, t1f), saveat=st,
                                     collect=heur, **opts)
            sol.extras.update(reg_error=heur.error, reg_stiffness=heur.stiffness)
        elif adjoint == "direct":
            sol = _direct(field, slv, ctrl, x0, t0f, t1f, st, dt, opts)
        else:
            from .adjoint import adjoint_solve

            params = _params(f, adjoint_params)
            sol = adjoint_solve(adjoint, field, slv, ctrl, x0, t0f, t1f, st, dt, opts, params,
                                adjoint_rtol if adjoint_rtol is not None else rtol,
                                adjoint_atol if adjoint_atol is not None else atol, t0, t1,
                                adjoint_seminorm)
    return _restore(sol, flat, saveat is not None)


def _direct(field, slv, ctrl, x0, t0, t1, st, dt, opts) -> Solution:
    term = ODETerm(field)
    if ctrl is None:
        saves = None if st is None else st.tolist()
        grid = fixed_grid(t0, t1, dt, saves)
        sol = integrate(term, slv, grid, x0, save="all" if st is not None else "final")
        if st is not None:
            idx = [grid.tolist().index(s) for s in saves]
            sol = Solution(x=sol.x, ts=st, ys=sol.ys[idx], stats=sol.stats,
                           extras={"status": "success", "step_ts": grid})
        else:
            sol.extras.update(status="success", step_ts=grid)
        return sol
    return integrate(term, slv, ctrl, x0, t_span=(t0, t1), saveat=st, **opts)


def _params(f, given) -> tuple[Tensor, ...]:
    if given is not None:
        return tuple(given)
    if isinstance(f, torch.nn.Module):
        return tuple(p for p in f.parameters() if p.requires_grad)
    return ()


def _restore(sol: Solution, flat: Flattener, has_saveat: bool) -> Solution:
    if flat.is_tensor:
        return sol
    x = flat.unflatten(sol.x)
    ys = None if sol.ys is None else flat.unflatten(sol.ys, lead=(sol.ys.shape[0],))
    return Solution(x=x, ts=sol.ts, ys=ys, stats=sol.stats, extras=sol.extras)

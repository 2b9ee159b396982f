"""``solve``: the front for neural ODE users, on the one integrate loop.

``solve(f, y0, t0, t1, solver="tsit5", rtol=..., atol=..., saveat=..., adjoint=...)`` builds an
:class:`~timestepper.core.terms.ODETerm` from ``f(t, y, *args)`` (``y`` a tensor or a nested
tuple/dict of tensors), picks fixed steps (``dt=``) or a PID step-size controller, and calls
:func:`timestepper.integrate` (shared or per-sample steps). Gradients flow by direct
backpropagation, by recursive checkpointing, or by the continuous adjoint
(:mod:`timestepper.ode.adjoint`).

``error_control="global"`` wraps the solve in global error control by reintegration
(:mod:`timestepper.ode.global_error`): ``stats`` then sum every solve and ``extras`` hold
``global_error``, ``tolerance_scale`` and ``rounds``. ``regularise=True`` accumulates the solver
heuristics of Pal et al. (2021) over the accepted steps of a shared-step adaptive solve with
``adjoint="direct"`` (:mod:`timestepper.ode.regularise`): ``extras["reg_error"]`` is
``sum_j E_j |h_j|`` (``E_j`` the controller's scaled error norm) and ``extras["reg_stiffness"]``
``sum_j S_j`` (the RK stiffness estimate), both differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..core.controllers import StepSizeController, controller_from
from ..core.solution import Solution
from ..core.solver import Solver
from ..core.status import MaxStepsError, StiffnessError
from ..core.terms import ODETerm
from ..core.validation import check_choice, check_finite_state, check_positive, save_times
from ..loop import integrate
from ..solvers.implicit import ImplicitRK
from ..solvers.registry import get
from .adjoint import ADJOINTS, AdjointMethod, BacksolveAdjoint, CheckpointAdjoint, adjoint_method
from .pytree import Flattener
from .stiffness import StiffnessDetector, detects_stiffness, implicit_solvers
from .time_grad import needs_grad, shift_end, shift_saved, shift_start
from .tracked import describe, untracked_leaves

ERROR_CONTROLS = ("local", "global")
STIFFNESS_EVERY = 1000  # accepted steps between stiffness tests (DOPRI5's NSTIFF)


def fixed_grid(t0: float, t1: float, dt: float, saveat: Sequence[float] | None) -> Tensor:
    """Uniform steps of size ``dt`` from ``t0`` to ``t1`` (the last one shorter), with the save
    times inserted as grid points."""
    n = max(1, math.ceil(abs(t1 - t0) / abs(dt) - 1e-9))
    direction = 1.0 if t1 > t0 else -1.0
    pts = [t0 + direction * i * abs(dt) for i in range(n)] + [t1]
    if saveat is not None:
        pts = sorted(set(pts) | set(saveat), reverse=direction < 0)
    return torch.tensor(pts, dtype=torch.float64)


class FlatField:
    """``f(t, y, *args)`` seen as a function of the flat state."""

    def __init__(self, f: Callable[..., Any], flat: Flattener, args: tuple) -> None:
        self.f, self.flat, self.args = f, flat, args
        self.checked = False

    def __call__(self, t: Any, x: Tensor) -> Tensor:
        out = self.f(t, self.flat.unflatten(x), *self.args)
        if not self.checked:  # the first evaluation: structure, shapes and dtype like the state
            self.flat.check_like(out, "f(t, y)")
            self.checked = True
        return self.flat.flatten(out)


@dataclass(frozen=True)
class ODEProblem:
    """A flattened solve: the field on the flat state, the solver, fixed steps or a controller,
    the interval (floats; per-sample mode: floats or ``(B,)`` tensors) and the save times."""

    field: Callable[[Any, Tensor], Tensor]
    solver: Solver
    controller: StepSizeController | None
    dt: float | None
    t0: Any
    t1: Any
    saveat: Tensor | None
    max_steps: int = 100_000
    on_failure: str = "raise"
    per_sample: bool = False
    time_dtype: torch.dtype = torch.float64
    stiffness_every: int = 0
    compile: bool | dict = False

    def run(self, x0: Tensor, field: Callable | None = None, controller: StepSizeController | None = None,
            t_span: tuple[Any, Any] | None = None, saveat: Tensor | None | bool = True,
            on_accept: Callable | None = None) -> Solution:
        """Integrate from ``x0`` (optionally another field, controller, interval or save times:
        the backward solves of the adjoints reuse the problem's solver and options)."""
        term = ODETerm(field or self.field)
        t0, t1 = t_span if t_span is not None else (self.t0, self.t1)
        st = self.saveat if saveat is True else (saveat or None)
        ctrl = controller or self.controller
        if on_accept is None and self.stiffness_every and ctrl is not None and not self.per_sample:
            on_accept = StiffnessDetector(self.solver, self.stiffness_every)  # type: ignore[arg-type]
        opts: dict[str, Any] = dict(max_steps=self.max_steps, on_failure=self.on_failure,
                                    on_accept=on_accept, compile=self.compile)
        if ctrl is None:  # fixed steps of size dt, with the save times as grid points
            saves = None if st is None else st.tolist()
            grid = fixed_grid(float(t0), float(t1), self.dt, saves)  # type: ignore[arg-type]
            return integrate(term, self.solver, grid, x0, saveat=saves, **opts)
        if self.per_sample:
            return integrate(term, self.solver, ctrl, x0, t_span=(t0, t1), saveat=st,
                             per_sample=True, time_dtype=self.time_dtype, **opts)
        return integrate(term, self.solver, ctrl, x0, t_span=(t0, t1), saveat=st, **opts)


def solve(  # noqa: PLR0913 - keyword options of the front, all with defaults
    f: Callable[..., Any],
    y0: Any,
    t0: float | Tensor,
    t1: float | Tensor,
    *,
    solver: str | Solver = "tsit5",
    rtol: float = 1e-6,
    atol: float = 1e-9,
    saveat: Sequence[float] | Tensor | None = None,
    adjoint: str | AdjointMethod = "direct",
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
    stiffness_check: bool = True,
    compile: bool | dict = False,
) -> Solution:
    """Solve ``dy/dt = f(t, y, *args)`` from ``t0`` to ``t1``.

    Args:
        f: the vector field; returns a structure like ``y``.
        y0: initial state: a tensor or a (nested) tuple/list/dict of tensors (one dtype).
        t0, t1: the interval (``t1 < t0`` integrates backwards). Per-sample mode also accepts
            ``(B,)`` tensors.
        solver: registry name (``"tsit5"``, ``"dopri5"``, ``"dopri8"``, ``"bosh3"``,
            ``"rk-heun"``, ``"rk4"``, ``"midpoint"``, ``"rk-euler"``, ``"rosenbrock23"``, ...; see
            ``ts.solvers.available("ode")``) or a solver.
        rtol, atol: tolerances of the adaptive controller.
        saveat: times at which to save; ``Solution.ts``/``ys`` hold them (dense output).
        adjoint: ``"direct"`` (backprop through the steps), ``"checkpoint"`` (recursive
            checkpointing of the accepted steps, O(log n) stored states) or ``"backsolve"`` (the
            continuous adjoint of Chen et al. 2018, with its own tolerances), or an
            :class:`~timestepper.ode.adjoint.AdjointMethod`.
        args: extra positional arguments passed to ``f``.
        per_sample_steps: each sample of the batch (leading dim) gets its own step size,
            accept/reject and statistics (``Solution.stats`` fields are then ``(B,)`` tensors).
        controller: ``"i"``, ``"pi"``, ``"pid"`` or a :class:`StepSizeController`.
        norm: ``"rms"`` or ``"max"`` error norm.
        dt0: initial step (default: Hairer's selection).
        dt: fixed step size (required for solvers without an error estimate, e.g. ``"rk4"``).
        max_steps: bound on attempted steps.
        on_failure: ``"raise"`` or ``"return"`` (last state + ``Solution.status``).
        adjoint_params: tensors to differentiate in the checkpoint/backsolve modes (default: the
            parameters of ``f`` when it is an ``nn.Module``, plus every tensor requiring grad
            that ``f`` closes over, found with one evaluation of ``f`` before the solve; when
            given, a closure tensor missing from it is an error, never a silent zero gradient).
        adjoint_rtol, adjoint_atol, adjoint_seminorm: the backsolve's tolerances (default: rtol,
            atol) and whether its error norm skips the parameter-gradient integrals (Kidger et
            al. 2021; fewer backward steps).
        error_control: ``"local"`` (the controller bounds each step's error) or ``"global"``
            (re-solve with tighter tolerances until the estimated error of the result is within
            ``atol + rtol |y|``; see the module docstring).
        regularise: accumulate Pal et al.'s (2021) solver heuristics into ``extras["reg_error"]``
            and ``extras["reg_stiffness"]`` (see the module docstring).
        time_dtype: per-sample mode: dtype of the times and step sizes kept on the device
            (``torch.float32`` on devices without float64).
        stiffness_check: with ``dopri5``/``tsit5`` and ``on_failure="raise"``, run Hairer's
            stiffness test every 1000 accepted steps and stop with
            :class:`~timestepper.StiffnessError` (naming the implicit solvers) when the solver is
            held at its stability limit (:mod:`timestepper.ode.stiffness`), instead of
            crawling until ``max_steps``. A ``max_steps`` failure of an explicit solver names
            the implicit solvers too.
        compile: compile the steps with ``torch.compile`` (see :func:`timestepper.integrate`).
    """
    opts = SolveOptions(
        solver=solver, rtol=rtol, atol=atol, saveat=saveat, adjoint=adjoint, args=args,
        per_sample_steps=per_sample_steps, controller=controller, norm=norm, dt0=dt0, dt=dt,
        max_steps=max_steps, on_failure=on_failure, adjoint_params=adjoint_params,
        adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol, regularise=regularise,
        time_dtype=time_dtype, adjoint_seminorm=adjoint_seminorm, error_control=error_control,
        stiffness_check=stiffness_check, compile=compile)
    return _solve(f, y0, t0, t1, opts)


@dataclass(frozen=True)
class SolveOptions:
    """The keyword options of :func:`solve` (documented there), in one object."""

    solver: str | Solver
    rtol: float
    atol: float
    saveat: Any
    adjoint: str | AdjointMethod
    args: Any
    per_sample_steps: bool
    controller: str | StepSizeController
    norm: str
    dt0: float | None
    dt: float | None
    max_steps: int
    on_failure: str
    adjoint_params: Sequence[Tensor] | None
    adjoint_rtol: float | None
    adjoint_atol: float | None
    regularise: bool
    time_dtype: torch.dtype
    adjoint_seminorm: bool
    error_control: str
    stiffness_check: bool = True
    compile: bool | dict = False


def _solve(f: Callable[..., Any], y0: Any, t0: Any, t1: Any, o: SolveOptions) -> Solution:
    check_choice(o.error_control, ERROR_CONTROLS, "error_control")
    if not isinstance(o.adjoint, AdjointMethod):
        check_choice(o.adjoint, ADJOINTS, "adjoint")
    if o.error_control == "global":
        return _solve_globally(f, y0, t0, t1, o)
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    args = tuple(o.args) if isinstance(o.args, (tuple, list)) else (o.args,)
    flat = Flattener(y0, batch=o.per_sample_steps)
    problem = _problem(FlatField(f, flat, args), get(o.solver), t0, t1, o)
    method = adjoint_method(o.adjoint, f, o.adjoint_params,
                            o.adjoint_rtol if o.adjoint_rtol is not None else o.rtol,
                            o.adjoint_atol if o.adjoint_atol is not None else o.atol, o.adjoint_seminorm)
    x0 = flat.flatten(y0)
    check_finite_state(x0, "y0", locate=flat.is_tensor)
    times = _TimeGradients(problem, method.name, t0, t1, o.saveat)
    x0 = times.start(x0)
    if o.regularise:
        sol = _regularised(problem, method, x0)
    else:
        method.check(problem)
        method = _with_closure_params(method, problem, x0, explicit=o.adjoint_params is not None)
        sol = _run_with_hint(method, problem, x0, (t0, t1))
    return _restore(times.end(sol), flat)


@dataclass(frozen=True)
class _TimeGradients:
    """Gradients with respect to ``t0``, ``t1`` and ``saveat`` tensors that require them
    (:mod:`timestepper.ode.time_grad`): the checkpoint and backsolve adjoints compute those of
    ``t0``/``t1`` themselves; direct backpropagation gets them from value-preserving shifts."""

    problem: ODEProblem
    mode: str
    t0: Any
    t1: Any
    saveat: Any

    def start(self, x0: Tensor) -> Tensor:
        if self.problem.per_sample and any(needs_grad(t) for t in (self.t0, self.t1, self.saveat)):
            raise ValueError("gradients with respect to t0, t1 or saveat are not available with "
                             "per_sample_steps=True; pass detached times")
        if self.mode == "direct" and needs_grad(self.t0):
            return shift_start(self.problem.field, self.t0, x0)
        return x0

    def end(self, sol: Solution) -> Solution:
        field = self.problem.field
        if self.mode == "direct" and needs_grad(self.t1):
            sol.x = shift_end(field, self.t1, sol.x)
        if needs_grad(self.saveat) and sol.ys is not None:
            sol.ys = shift_saved(field, self.saveat.reshape(-1), sol.ys)
        return sol


def _run_with_hint(method: AdjointMethod, problem: ODEProblem, x0: Tensor, t_in: tuple) -> Solution:
    """``method.solve``; a ``max_steps`` failure of an explicit solver says that the problem may
    be stiff and names the implicit solvers."""
    try:
        return method.solve(problem, x0, t_in)
    except MaxStepsError as exc:
        if problem.solver.is_implicit or isinstance(exc, StiffnessError):
            raise
        names = ", ".join(implicit_solvers())
        raise MaxStepsError(f"{exc}. If the problem is stiff (fast decaying modes), the explicit solver "
                            f"{problem.solver.display_name!r} crawls at its stability limit: try an "
                            f"implicit solver ({names})") from exc


def _with_closure_params(method: AdjointMethod, problem: ODEProblem, x0: Tensor,
                         explicit: bool) -> AdjointMethod:
    """The checkpoint and backsolve adjoints differentiate a given list of tensors: find, with one
    evaluation of the field, the tensors requiring grad it also depends on (a closure), and add
    them (``adjoint_params`` not given) or refuse naming them (given)."""
    if not isinstance(method, (CheckpointAdjoint, BacksolveAdjoint)) or not torch.is_grad_enabled():
        return method
    t0 = problem.t0 if not isinstance(problem.t0, Tensor) else problem.t0.detach()
    missing = untracked_leaves(problem.field, t0, x0, method.params)
    if not missing:
        return method
    if explicit:
        raise ValueError(f"f depends on {describe(missing)} that require grad but are not in "
                         f"adjoint_params, so adjoint={method.name!r} would give them no gradient: add "
                         "them to adjoint_params (or detach them / set requires_grad=False)")
    return replace(method, params=tuple(method.params) + tuple(missing))


def _solve_globally(f: Callable[..., Any], y0: Any, t0: Any, t1: Any, o: SolveOptions) -> Solution:
    """``error_control="global"``: local solves with tighter tolerances until the estimated
    global error is within the tolerance (:mod:`timestepper.ode.global_error`)."""
    if o.dt is not None or o.regularise:
        raise ValueError("error_control='global' needs an adaptive solve without "
                         "regularise (it re-solves with tighter tolerances)")
    from .global_error import scaled_controller, solve_to_global_tolerance

    def run(k: float) -> Solution:
        scaled = replace(o, rtol=o.rtol * k, atol=o.atol * k, error_control="local",
                         controller=scaled_controller(o.controller, k))
        return _solve(f, y0, t0, t1, scaled)

    return solve_to_global_tolerance(run, o.rtol, o.atol)


def _problem(field: FlatField, slv: Solver, t0: Any, t1: Any, o: SolveOptions) -> ODEProblem:
    fixed = o.dt is not None or slv.error_order is None
    if fixed and o.dt is None:
        raise ValueError(f"solver {slv.display_name!r} has no error estimate: give a fixed step "
                         "size dt=")
    ctrl = None
    if not fixed:
        ctrl = controller_from(o.controller, o.rtol, o.atol, norm=o.norm, dt0=o.dt0) \
            if isinstance(o.controller, str) else o.controller
    if o.dt is not None:
        check_positive(o.dt, "dt")
    if isinstance(slv, ImplicitRK):  # Newton tolerances follow the solve's (solvers/implicit)
        slv = slv.with_tolerances(o.rtol, o.atol)
    if o.per_sample_steps:
        if fixed:
            raise ValueError("per_sample_steps needs an adaptive solve (no dt=)")
    else:
        t0, t1 = _interval(t0, t1)
    st = None if o.saveat is None else torch.as_tensor(o.saveat, dtype=torch.float64).reshape(-1)
    if st is not None and not o.per_sample_steps:
        save_times(st, t0, t1)  # inside [t0, t1] and monotone, for fixed steps as for adaptive
    detect = o.stiffness_check and o.on_failure == "raise" and detects_stiffness(slv)
    return ODEProblem(field, slv, ctrl, o.dt, t0, t1, st, o.max_steps, o.on_failure,
                      o.per_sample_steps, o.time_dtype, STIFFNESS_EVERY if detect else 0, o.compile)


def _interval(t0: Any, t1: Any) -> tuple[float, float]:
    """``t0``, ``t1`` as floats: finite and distinct."""
    out = []
    for name, t in (("t0", t0), ("t1", t1)):
        if isinstance(t, Tensor) and t.numel() != 1:
            raise ValueError(f"{name} must be a scalar (per-sample intervals need per_sample_steps=True)")
        try:
            v = float(t.detach()) if isinstance(t, Tensor) else float(t)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a number, got {type(t).__name__}") from exc
        if not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v}")
        out.append(v)
    if out[0] == out[1]:
        raise ValueError(f"t0 and t1 must differ, got t0 = t1 = {out[0]}")
    return out[0], out[1]


def _regularised(problem: ODEProblem, method: AdjointMethod, x0: Tensor) -> Solution:
    from ..core.controllers import PIDController
    from .regularise import SolverHeuristics

    ctrl = problem.controller
    if method.name != "direct" or ctrl is None or problem.per_sample:
        raise ValueError("regularise=True needs a shared-step adaptive solve with adjoint='direct'")
    if not isinstance(ctrl, PIDController):
        raise ValueError("regularise=True needs a controller with rtol, atol and norm "
                         "(a PIDController)")
    heur = SolverHeuristics(ctrl.rtol, ctrl.atol, ctrl.norm, problem.solver)
    sol = problem.run(x0, on_accept=heur)
    sol.extras.update(reg_error=heur.error, reg_stiffness=heur.stiffness)
    return sol


def _restore(sol: Solution, flat: Flattener) -> Solution:
    if flat.is_tensor:
        return sol
    sol.x = flat.unflatten(sol.x)
    if sol.ys is not None:
        sol.ys = flat.unflatten(sol.ys, lead=(sol.ys.shape[0],))
    return sol


__all__ = ["FlatField", "ODEProblem", "fixed_grid", "solve"]

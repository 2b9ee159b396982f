"""``integrate``: the one loop every front ends in.

It checks the combination of term, solver, stepping and saving once, with an error that names
what does not fit, and runs one of two code paths that share the controller protocol, the
``Solution``, the status codes and the saving object: one step size for the whole state
(fixed grids and adaptive stepping, :mod:`.shared`) or one per sample (:mod:`.per_sample`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..core.controllers import FixedGrid, StepSizeController
from ..core.solution import SaveAt, Solution
from ..core.solver import Solver, term_type_names
from ..core.status import ON_FAILURE
from ..core.validation import check_choice, check_finite_state, check_int, check_state
from ..solvers.registry import available, get
from .compiled import CompiledCall, compile_options
from .grid_device import applies as grid_on_device
from .grid_device import run_grid_on_device
from .options import LoopOptions, Problem, StepRecord
from .per_sample import run_per_sample
from .shared import run_shared
from .shared_device import applies as on_device
from .shared_device import run_shared_on_device


def integrate(  # noqa: PLR0913 - the loop's options, all keyword-only with defaults
    term: Any,
    solver: Solver | str,
    stepping: Any,
    x0: Tensor,
    *,
    t_span: tuple[Any, Any] | None = None,
    saveat: SaveAt | Sequence[float] | Tensor | None = None,
    check_finite: bool = True,
    progress: bool = False,
    callback: Callable[[int, float, Tensor], None] | None = None,
    max_steps: int = 100_000,
    on_failure: str = "raise",
    per_sample: bool = False,
    time_dtype: torch.dtype = torch.float64,
    on_accept: Callable[[StepRecord], None] | None = None,
    compile: bool | dict[str, Any] = False,
) -> Solution:
    """Advance ``x0`` with ``solver`` through ``term``.

    Args:
        term: what is integrated (:class:`~timestepper.ODETerm`, :class:`~timestepper.SemilinearTerm`,
            :class:`~timestepper.SDETerm`, a diffusion term, ...): it must be of the solver's
            declared ``term_type``.
        solver: a :class:`~timestepper.core.solver.Solver` or a registry name.
        stepping: a fixed grid (a 1-D tensor or list of times, increasing or decreasing, or a
            diffusion ``SamplingGrid``) or a :class:`~timestepper.core.controllers.StepSizeController`
            for adaptive stepping over ``t_span``.
        x0: the initial state.
        t_span: ``(t0, t1)``, required with a controller (per-sample mode: floats or ``(B,)``
            tensors).
        saveat: a :class:`~timestepper.SaveAt`, or the save times themselves; the final state is
            always ``Solution.x``.
        check_finite: refuse a NaN/inf ``x0``; on a fixed grid, report the first step whose state
            is NaN/inf (tracked on the device, checked once at the end). Adaptive solves reject
            such steps and retry smaller; when the proposals stay NaN/inf for several step sizes
            in a row (the field itself returns NaN/inf there), the solve stops with
            :class:`~timestepper.NonFiniteError` naming the time (per-sample: that sample stops
            with ``Status.NONFINITE``, the others go on).
        progress: show a tqdm bar.
        callback: ``callback(i, t, x)`` after every accepted step (shared step size).
        max_steps: bound on attempted steps.
        on_failure: ``"raise"`` (default) or ``"return"``: return the state reached with
            ``Solution.status`` set instead of raising.
        per_sample: one step size per sample of the batch (leading dim of ``x0``).
        time_dtype: per-sample mode: dtype of the times kept on the device.
        on_accept: ``on_accept(record)`` with a :class:`~timestepper.loop.options.StepRecord` of
            every accepted step (shared step size; e.g. regularisation statistics).
        compile: take steps with ``torch.compile(solver.step, dynamic=True)`` (a dict: options
            for ``torch.compile``, e.g. ``{"backend": "eager"}``). A step's coefficients and times
            change from step to step, so they are compiled as symbols: each kind of step (warm-up,
            regular, last) compiles once and any grid reuses it.

    Memory: an eager fixed-grid solve that saves no step and has no ``callback`` or
    ``on_accept`` lets a solver declaring ``reuses_state_memory`` (DPM-Solver(++) multistep,
    DEIS, LMS, DDIM, Euler, DDPM) write each state after the first into the memory of the one
    before, one pass over memory fewer per step. ``x0`` is never written and steps recorded by
    autograd stay out of place; a model that keeps a reference to its input across calls should
    keep a copy.
    """
    slv = get(solver)
    check_state("x0", x0)
    check_choice(on_failure, ON_FAILURE, "on_failure")
    check_int(max_steps, "max_steps", 1)
    _check_term(slv, term)
    save = saveat if isinstance(saveat, SaveAt) else SaveAt(ts=saveat) if saveat is not None else SaveAt()
    problem = _problem(term, slv, stepping, x0, t_span, per_sample)
    _check_saving(problem, save, per_sample)
    if check_finite:  # at once, naming where, not later as a step-size or step error
        check_finite_state(x0, "x0")
    options = compile_options(compile)
    opts = LoopOptions(step=_step_function(slv, options), saveat=save, check_finite=check_finite,
                       progress=progress, callback=callback, max_steps=max_steps,
                       on_failure=on_failure, on_accept=on_accept, time_dtype=time_dtype,
                       compile=options)
    if per_sample:
        return run_per_sample(problem, opts)
    if on_device(problem, opts):
        return run_shared_on_device(problem, opts)
    if grid_on_device(problem, opts):
        sol = run_grid_on_device(problem, opts)
        if sol is not None:
            return sol
    return run_shared(problem, opts)


def _check_term(solver: Solver, term: Any) -> None:
    if not solver.accepts_term(term):
        fit = [n for n in available() if get(n).accepts_term(term)]
        hint = f"; solvers for an {type(term).__name__}: {', '.join(fit)}" if fit else ""
        raise TypeError(f"solver {solver.display_name!r} ({solver.family}) advances a "
                        f"{term_type_names(solver)}, got {type(term).__name__}{hint}")


def _problem(term: Any, solver: Solver, stepping: Any, x0: Tensor, t_span: Any,  # noqa: PLR0913
             per_sample: bool) -> Problem:
    if isinstance(stepping, StepSizeController) and not stepping.fixed:
        if t_span is None:
            raise ValueError("t_span=(t0, t1) is required when stepping is a step-size controller")
        if solver.error_order is None:
            raise ValueError(f"solver {solver.display_name!r} has no error estimate, so it cannot "
                             "step adaptively: give a fixed grid of times instead of a controller")
        t0, t1 = t_span
        if per_sample:
            _check_per_sample(solver, x0)
        else:
            t0, t1 = _as_float(t0, "t_span[0]"), _as_float(t1, "t_span[1]")
            _check_adaptive_span(t0, t1)
        return Problem(term, solver, stepping, x0, t0, t1)
    if per_sample:
        raise ValueError("per-sample steps need an adaptive step-size controller, not a fixed grid")
    controller = stepping if isinstance(stepping, FixedGrid) else FixedGrid(stepping)
    grid = controller.grid
    if solver.grid_type is not None and not isinstance(grid, solver.grid_type):
        raise TypeError(f"solver {solver.display_name!r} steps on a {solver.grid_type.__name__}, "
                        f"got {type(grid).__name__}")
    if controller.steps < solver.min_steps:
        why = f" ({solver.min_steps_reason})" if solver.min_steps_reason else ""
        raise ValueError(f"solver {solver.display_name!r} needs at least {solver.min_steps} steps{why}, "
                         f"got a grid of {controller.steps}")
    t0, t1 = controller.t_span
    if t_span is not None and (_as_float(t_span[0], "t_span[0]"), _as_float(t_span[1], "t_span[1]")) != (t0, t1):
        raise ValueError(f"t_span {tuple(t_span)} differs from the grid's ends ({t0}, {t1}); omit it")
    return Problem(term, solver, controller, x0, t0, t1, grid=grid)


def _check_per_sample(solver: Solver, x0: Tensor) -> None:
    if not solver.per_sample:
        raise ValueError(f"solver {solver.display_name!r} does not support per-sample steps")
    if x0.ndim < 1:
        raise ValueError("per-sample steps need a leading batch dimension in x0")


def _check_saving(problem: Problem, save: SaveAt, per_sample: bool) -> None:
    if per_sample and (save.steps or save.dense):
        raise ValueError("per-sample mode saves at given times only (SaveAt(ts=...))")
    if per_sample and save.ts is not None and not problem.solver.has_dense_output:
        raise ValueError(f"per-sample save times need a solver with dense output; "
                         f"{problem.solver.display_name!r} has none")


def _check_adaptive_span(t0: float, t1: float) -> None:
    """An adaptive solve needs distinct end points that are not NaN (an infinite end is left to
    controllers that handle it, as dpm-adaptive's last step to zero noise; the fronts refuse it
    where it cannot be reached)."""
    for name, t in (("t_span[0]", t0), ("t_span[1]", t1)):
        if math.isnan(t):
            raise ValueError(f"{name} must be a number, got nan")
    if t0 == t1:
        raise ValueError("t_span must have t0 != t1")


def _as_float(t: Any, name: str) -> float:
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"{name} must be a scalar (per-sample intervals need per_sample=True)")
        return float(t.detach())
    try:
        return float(t)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a number, got {type(t).__name__}") from exc


def _step_function(solver: Solver, options: dict[str, Any] | None) -> Callable[..., Any]:
    if options is None:
        return solver.step
    return CompiledCall(solver.step, options, f"the step of {solver.display_name!r}")


__all__ = ["integrate"]

"""The loop's configuration objects: the problem being solved and how the loop runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..core.controllers import StepSizeController
from ..core.solution import SaveAt
from ..core.solver import Solver


@dataclass(frozen=True)
class Problem:
    """One solve: ``term`` advanced by ``solver`` from ``(t0, x0)`` to ``t1`` under ``controller``.

    ``grid`` is the fixed grid as the user gave it (handed to ``solver.init``), ``None`` for an
    adaptive solve. ``t0``/``t1`` are floats, or ``(B,)`` tensors in per-sample mode.
    """

    term: Any
    solver: Solver
    controller: StepSizeController
    x0: Tensor
    t0: Any
    t1: Any
    grid: Any = None


@dataclass(frozen=True)
class StepRecord:
    """An accepted step, as handed to ``on_accept``: from ``(t0, x0)`` to ``(t1, x1)`` with the
    solver's error estimate and state after the step."""

    t0: float
    t1: float
    x0: Tensor
    x1: Tensor
    err: Tensor | None
    state: Any


@dataclass(frozen=True)
class LoopOptions:
    """How the loop runs (see :func:`timestepper.integrate` for each option).

    ``step`` is the function that takes a step: the solver's own ``step``, or a compiled one;
    ``compile`` the ``torch.compile`` options of a compiled solve (``None``: eager).
    """

    step: Callable[..., Any]
    saveat: SaveAt = SaveAt()
    check_finite: bool = True
    progress: bool = False
    callback: Callable[[int, float, Tensor], None] | None = None
    max_steps: int = 100_000
    on_failure: str = "raise"
    on_accept: Callable[[StepRecord], None] | None = None
    time_dtype: Any = None
    compile: dict[str, Any] | None = None




def start_controller(p: Problem, state: Any, fixed: bool) -> tuple[Any, Any, int]:
    """The controller's state, the solver state and the evaluations made at the start of a
    solve: an adaptive solve with a solver that provides ``f(t0, x0)`` evaluates it once, for
    its first stage and for the controller's initial step selection."""
    f0, nfe = None, 0
    if not fixed and p.solver.provides_first_derivative:
        f0, state = p.solver.first_derivative(p.term, p.t0, p.x0, state)
        nfe = 1
    cstate, used = p.controller.init(p.term, p.solver, p.t0, p.t1, p.x0, f0)
    return cstate, state, nfe + used


__all__ = ["LoopOptions", "Problem", "StepRecord", "start_controller"]

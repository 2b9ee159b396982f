"""How a solve ended: one status code for every loop, and the errors raised for them.

``Solution.status`` is a :class:`Status` for a shared-step solve and a ``(B,)`` int64 tensor of
its values in per-sample mode (compile-friendly codes, as torchode's). With
``on_failure="raise"`` (the default) a failed solve raises the matching error instead.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """The end of a solve: ``SUCCESS`` reached the end time; the others stopped early."""

    SUCCESS = 0
    MAX_STEPS = 1
    DT_UNDERFLOW = 2
    NONFINITE = 3


class SolveError(RuntimeError):
    """A solve stopped before its end time; ``status`` says why."""

    status: Status = Status.SUCCESS


class MaxStepsError(SolveError):
    """The adaptive solve used up ``max_steps`` attempted steps."""

    status = Status.MAX_STEPS


class StepSizeUnderflowError(SolveError):
    """The adaptive step size fell below its minimum (a stiff problem or a blow-up)."""

    status = Status.DT_UNDERFLOW


class StiffnessError(SolveError):
    """An explicit solver was held at its stability limit: the problem looks stiff, and the solve
    stopped early instead of exhausting ``max_steps``; the message names the implicit solvers."""

    status = Status.MAX_STEPS


class NonFiniteError(SolveError, FloatingPointError):
    """The state became NaN or infinite; the message names the step and time."""

    status = Status.NONFINITE


ON_FAILURE = ("raise", "return")

__all__ = [
    "ON_FAILURE",
    "MaxStepsError",
    "NonFiniteError",
    "SolveError",
    "Status",
    "StepSizeUnderflowError",
    "StiffnessError",
]

"""The registry of schedule-search methods (issue 15).

A method is a function ``fn(denoiser, nfe, noise, objective, **budget) -> SolverSchedule``:
it searches a :class:`~timestepper.solvers.schedule.SolverSchedule` of ``nfe`` model calls for
``denoiser`` on the training ``noise``, scoring candidates with ``objective`` (an
:class:`~timestepper.tuning.objective.Objective`, which counts the model calls it spends). The
budget is the method's own keyword arguments (``generations=``, ``population=``, ...): their names
are read from ``fn``'s signature, so :func:`timestepper.tune` refuses a name the method does not
take. Method modules register themselves at import (``register_method("s3", search, "...")``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FIXED_ARGUMENTS = ("denoiser", "nfe", "noise", "objective")


@dataclass(frozen=True)
class Method:
    """A registered search method.

    Attributes:
        name: the name ``tune(..., method=name)`` takes.
        fn: ``fn(denoiser, nfe, noise, objective, **budget) -> SolverSchedule``.
        summary: one line naming the method and its paper.
    """

    name: str
    fn: Callable[..., Any]
    summary: str

    def budget_names(self) -> tuple[str, ...]:
        """The budget keywords ``fn`` accepts (every parameter after the four fixed ones)."""
        params = list(inspect.signature(self.fn).parameters.values())
        return tuple(p.name for p in params if p.name not in FIXED_ARGUMENTS
                     and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))

    def budget_defaults(self) -> dict[str, Any]:
        """The budget keywords with their default values."""
        params = inspect.signature(self.fn).parameters
        return {k: params[k].default for k in self.budget_names()
                if params[k].default is not inspect.Parameter.empty}

    def check_budget(self, budget: dict[str, Any]) -> None:
        """Refuse budget keywords that ``fn`` does not take, naming the allowed ones."""
        allowed = self.budget_names()
        unknown = sorted(set(budget) - set(allowed))
        if unknown:
            raise TypeError(f"method {self.name!r} takes no budget argument {', '.join(map(repr, unknown))}; "
                            f"allowed: {', '.join(allowed) or '(none)'}")


_METHODS: dict[str, Method] = {}


def register_method(name: str, fn: Callable[..., Any], summary: str) -> Callable[..., Any]:
    """Register the search ``fn`` under ``name`` with a one-line ``summary``; returns ``fn``.

    ``fn`` must take ``(denoiser, nfe, noise, objective)`` first; its other keyword arguments are
    the method's budget.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"method name must be a non-empty string, got {name!r}")
    if name in _METHODS:
        raise ValueError(f"search method {name!r} is already registered")
    if not callable(fn):
        raise TypeError(f"method {name!r}: fn must be callable, got {type(fn).__name__}")
    first = list(inspect.signature(fn).parameters)[:4]
    if tuple(first) != FIXED_ARGUMENTS:
        raise TypeError(f"method {name!r}: fn must take {FIXED_ARGUMENTS} first, got {tuple(first)}")
    _METHODS[name] = Method(name, fn, summary)
    return fn


def check_budget(**values: tuple[Any, float]) -> None:
    """Refuse budget values below their minimum: ``check_budget(population=(population, 2))``.
    An integer minimum asks for an integer."""
    for name, (value, low) in values.items():
        is_int = isinstance(low, int)
        if isinstance(value, bool) or (is_int and not isinstance(value, int)) \
                or not isinstance(value, (int, float)) or not value >= low:
            kind = "an integer" if is_int else "a number"
            raise ValueError(f"{name} must be {kind} >= {low}, got {value!r}")


def available_methods() -> list[str]:
    """The names of the registered search methods, sorted."""
    return sorted(_METHODS)


def get_method(name: str) -> Method:
    """The registered method ``name``; a clear error listing the others otherwise."""
    if name not in _METHODS:
        raise ValueError(f"unknown search method {name!r}; available: {', '.join(available_methods()) or '(none)'}")
    return _METHODS[name]


__all__ = ["Method", "available_methods", "check_budget", "get_method", "register_method"]

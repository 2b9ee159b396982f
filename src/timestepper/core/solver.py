"""The solver protocol and the registry of solvers by name.

A solver is a small class. ``init(term, grid, x0)`` prepares its state once per grid (this is
where coefficients are computed, in float64, and cast); ``step(term, t0, t1, x, state)`` advances
from ``t0`` to ``t1`` and returns ``(x1, state, err)`` where ``err`` is a local error estimate or
``None``. The state carries the step index and any history (multistep methods), never globals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor

_REGISTRY: dict[str, Callable[..., Solver]] = {}


class Solver:
    """Base class of every solver.

    Class attributes every solver declares:
        order: the order of convergence the solver claims (measured by the tests).
        nfe_per_step: model evaluations per regular step.
        is_stochastic: whether the step draws noise.
    """

    name: ClassVar[str] = ""
    order: int = 1
    nfe_per_step: int = 1
    is_stochastic: bool = False
    #: whether ``ts.sample`` can drive it (it advances a diffusion term on a sampling grid)
    samples_diffusion: ClassVar[bool] = False

    def init(self, term: Any, grid: Any, x0: Tensor) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def step(
        self, term: Any, t0: float, t1: float, x: Tensor, state: Any
    ) -> tuple[Tensor, Any, Tensor | None]:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"


def register(name: str, factory: Callable[..., Solver] | None = None):
    """Register a solver class (or factory) under a registry name, e.g. ``"dpmpp-2m"``.

    Usable as a decorator: ``@register("ddim")``.
    """

    def deco(obj):
        if name in _REGISTRY:
            raise ValueError(f"solver name {name!r} is already registered")
        _REGISTRY[name] = obj
        if isinstance(obj, type) and not getattr(obj, "name", ""):
            obj.name = name
        return obj

    return deco(factory) if factory is not None else deco


def available() -> list[str]:
    """The registry names of all solvers, sorted."""
    _load_builtin_solvers()
    return sorted(_REGISTRY)


def get(name: str | Solver, **options: Any) -> Solver:
    """Build a solver from its registry name and options (``get("dpmpp-3m")``, ``get("deis", order=2)``).

    A :class:`Solver` instance is returned as is (options must then be empty).
    """
    if isinstance(name, Solver):
        if options:
            raise TypeError("options cannot be given together with a solver instance")
        return name
    if not isinstance(name, str):
        raise TypeError(f"solver must be a registry name or a Solver instance, got {type(name).__name__}")
    _load_builtin_solvers()
    if name not in _REGISTRY:
        raise ValueError(f"unknown solver {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name](**options)
    except TypeError as exc:
        raise TypeError(f"bad options for solver {name!r}: {exc}") from exc


def _load_builtin_solvers() -> None:
    # Importing the package registers every built-in solver.
    from .. import solvers  # noqa: F401

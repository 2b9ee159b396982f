"""The registry of solvers by name.

An entry is a solver class (or a factory function) plus the options it fixes: ``"dpmpp-2m"`` is
:class:`~timestepper.solvers.dpmpp.DPMSolverMultistep` with ``order=2, prediction="data"``, not a
subclass. ``get(name, **options)`` builds one, refusing options the entry fixes; ``available()``
lists the names (every built-in solver is registered when :mod:`timestepper.solvers` is imported,
so the list does not depend on what else was imported).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.solver import Solver

FAMILIES = ("ode", "sde", "diffusion", "pde", "surrogate")


@dataclass(frozen=True)
class Entry:
    """A registry entry: ``factory(**options, **fixed)`` builds the solver.

    Attributes:
        name: the registry name (``"dpmpp-2m"``).
        factory: a :class:`Solver` subclass or a function returning a solver.
        fixed: options this entry sets (users cannot override them).
        defaults: options this entry sets unless the user gives them.
        family: ``"ode"``, ``"sde"``, ``"diffusion"``, ``"pde"`` or ``"surrogate"``.
        summary: one line naming the method and its paper.
    """

    name: str
    factory: Callable[..., Solver]
    fixed: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    family: str = "ode"
    summary: str = ""

    def build(self, **options: Any) -> Solver:
        clash = sorted(set(options) & set(self.fixed))
        if clash:
            raise TypeError(f"solver {self.name!r} fixes {', '.join(f'{k}={self.fixed[k]!r}' for k in clash)}; "
                            f"build {getattr(self.factory, '__name__', 'it')}(...) directly to change "
                            f"{'it' if len(clash) == 1 else 'them'}")
        try:
            solver = self.factory(**{**self.defaults, **options, **self.fixed})
        except TypeError as exc:
            raise TypeError(f"bad options for solver {self.name!r}: {exc}") from exc
        solver.registry_name = self.name
        return solver


_REGISTRY: dict[str, Entry] = {}


def register(name: str, factory: Callable[..., Solver] | None = None, *, family: str | None = None,
             summary: str = "", defaults: dict[str, Any] | None = None, **fixed: Any) -> Any:
    """Register ``factory`` (a :class:`Solver` class or a function) under ``name``, with the
    options ``fixed`` set and ``defaults`` for others. Usable as a class decorator:
    ``@register("ddim")``.

    ``family`` defaults to the class's declared ``family``; ``summary`` to the first line of its
    docstring.
    """

    def deco(obj: Any) -> Any:
        if name in _REGISTRY:
            raise ValueError(f"solver name {name!r} is already registered")
        fam = family or getattr(obj, "family", None)
        if fam not in FAMILIES:
            raise ValueError(f"solver {name!r}: family must be one of {FAMILIES}, got {fam!r}")
        doc = summary or (obj.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = Entry(name, obj, dict(fixed), dict(defaults or {}), fam, doc)
        return obj

    return deco(factory) if factory is not None else deco


def available(family: str | None = None) -> list[str]:
    """The registry names of all solvers (of one ``family``), sorted."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def entry(name: str) -> Entry:
    """The registry entry of ``name`` (its factory, fixed options, family and summary)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown solver {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get(name: str | Solver, **options: Any) -> Solver:
    """Build a solver from its registry name and options (``get("dpmpp-3m")``,
    ``get("deis", order=2)``). A :class:`Solver` instance is returned as is (options must then be
    empty)."""
    if isinstance(name, Solver):
        if options:
            raise TypeError("options cannot be given together with a solver instance")
        return name
    if not isinstance(name, str):
        raise TypeError(f"solver must be a registry name or a Solver instance, got {type(name).__name__}")
    return entry(name).build(**options)


__all__ = ["FAMILIES", "Entry", "available", "entry", "get", "register"]

"""torchdiffeq's method names and what each one runs here.

``kind`` is how the shim drives the solver: ``"adaptive"`` (the loop with torchdiffeq's
step-size controller, :mod:`.controller`), ``"fixed"`` (the loop on torchdiffeq's fixed grid,
then interpolation to the output times, :mod:`.fixed`), ``"scipy"`` (``scipy.integrate.solve_ivp``)
or ``"implicit"`` (the implicit solvers of :mod:`timestepper.solvers.implicit`: adaptive when the
solver has an error estimate, else fixed-grid).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.solver import Solver
from ...solvers.registry import available, get


@dataclass(frozen=True)
class Method:
    """A torchdiffeq method: the registry solver, how it is driven, the order of torchdiffeq's
    step-size rule (adaptive methods) and whether its step evaluates ``f`` at ``t1`` (for
    ``perturb``)."""

    registry: str
    kind: str
    order: int = 0
    stage_at_end: bool = False


METHODS: dict[str, Method] = {
    "dopri5": Method("dopri5-shampine", "adaptive", 5),
    "bosh3": Method("bosh3", "adaptive", 3),
    "fehlberg2": Method("fehlberg2", "adaptive", 2),
    "adaptive_heun": Method("adaptive-heun", "adaptive", 2),
    "dopri8": Method("dopri8", "adaptive", 8),
    "tsit5": Method("tsit5", "adaptive", 5),  # not in torchdiffeq; kept from earlier versions
    "euler": Method("rk-euler", "fixed"),
    "midpoint": Method("midpoint", "fixed"),
    "heun2": Method("rk-heun", "fixed", stage_at_end=True),
    "heun3": Method("heun3", "fixed"),
    "rk4": Method("rk4-38", "fixed", stage_at_end=True),
    "explicit_adams": Method("adams-bashforth", "fixed"),
    "implicit_adams": Method("adams-moulton", "fixed", stage_at_end=True),
    "fixed_adams": Method("adams-moulton", "fixed", stage_at_end=True),
    "scipy_solver": Method("", "scipy"),
    "implicit_euler": Method("implicit-euler", "implicit", 1, True),
    "implicit_midpoint": Method("implicit-midpoint", "implicit", 2),
    "trapezoid": Method("trapezoid", "implicit", 2, True),
    "radauIIA3": Method("radau-iia3", "implicit", 3, True),
    "radauIIA5": Method("radau-iia5", "implicit", 5, True),
    "gl4": Method("gl4", "implicit", 4),
    "gl6": Method("gl6", "implicit", 6),
    "sdirk2": Method("sdirk2", "implicit", 2, True),
    "trbdf2": Method("trbdf2", "implicit", 2, True),
}


def method_of(name: str | None) -> tuple[str, Method]:
    """The method named ``name`` (default ``"dopri5"``), refusing unknown names and methods
    whose solver this installation does not register."""
    name = "dopri5" if name is None else name
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    m = METHODS[name]
    if m.kind != "scipy" and m.registry not in available():
        raise ValueError(f"method {name!r} runs the solver {m.registry!r}, which is not registered "
                         "in this installation of timestepper")
    return name, m


def solver_of(m: Method) -> Solver:
    return get(m.registry)


def drives_adaptively(m: Method, solver: Solver) -> bool:
    """True when the shim runs ``m`` with torchdiffeq's step-size controller."""
    return m.kind == "adaptive" or (m.kind == "implicit" and solver.error_order is not None)


__all__ = ["METHODS", "Method", "drives_adaptively", "method_of", "solver_of"]

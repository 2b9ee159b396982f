"""The core: terms, solutions, the integrate loop, phi functions and the solver registry."""

from .integrate import integrate
from .phi import phi
from .solution import Solution, Stats
from .solver import Solver, available, get, register
from .terms import ODETerm, SemilinearTerm, Term

__all__ = [
    "ODETerm",
    "SemilinearTerm",
    "Solution",
    "Solver",
    "Stats",
    "Term",
    "available",
    "get",
    "integrate",
    "phi",
    "register",
]

"""Built-in solvers; importing this package registers them.

``available()`` lists the registry names, ``get(name, **options)`` builds one.
"""

from ..core.solver import available, get
from . import ddim, dpmpp, edm, rk, rk_tableaux, rosenbrock, sde  # noqa: F401  (registration)
from .ddim import DDIM
from .dpmpp import DPMSolverPP2M
from .edm import Euler, Heun
from .rk import ButcherTableau, ExplicitRK

__all__ = ["DDIM", "ButcherTableau", "DPMSolverPP2M", "Euler", "ExplicitRK", "Heun", "available", "get"]

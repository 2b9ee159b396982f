"""Built-in solvers; importing this package registers them.

``available()`` lists the registry names, ``get(name, **options)`` builds one.
"""

from ..core.solver import available, get
from . import ddim, dpmpp, edm, etd, rk  # noqa: F401  (registration)
from .ddim import DDIM
from .dpmpp import DPMSolverPP2M
from .edm import Euler, Heun
from .etd import ETD1, ETDRK2, ETDRK4, IMEXEuler
from .rk import ButcherTableau, ExplicitRK

__all__ = [
    "DDIM",
    "ETD1",
    "ETDRK2",
    "ETDRK4",
    "ButcherTableau",
    "DPMSolverPP2M",
    "Euler",
    "ExplicitRK",
    "Heun",
    "IMEXEuler",
    "available",
    "get",
]

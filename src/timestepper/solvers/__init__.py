"""Built-in solvers; importing this package registers them.

``available()`` lists the registry names, ``get(name, **options)`` builds one.
"""

from ..core.solver import available, get
from . import ancestral, ddim, dpmpp, edm, pc, reverse_sde, rk, sde_dpmpp  # noqa: F401  (registration)
from .ancestral import DDPM, DPMSolverPP2SAncestral, EulerAncestral
from .ddim import DDIM
from .dpmpp import DPMSolverPP2M
from .edm import Euler, Heun
from .noise import BrownianPath
from .pc import PredictorCorrector
from .reverse_sde import EulerMaruyama
from .rk import ButcherTableau, ExplicitRK
from .sde_dpmpp import SDEDPMSolverPP2M, SDEDPMSolverPP3M

__all__ = [
    "DDIM",
    "DDPM",
    "BrownianPath",
    "ButcherTableau",
    "DPMSolverPP2M",
    "DPMSolverPP2SAncestral",
    "Euler",
    "EulerAncestral",
    "EulerMaruyama",
    "ExplicitRK",
    "Heun",
    "PredictorCorrector",
    "SDEDPMSolverPP2M",
    "SDEDPMSolverPP3M",
    "available",
    "get",
]

"""Built-in solvers; importing this package registers them.

``available()`` lists the registry names, ``get(name, **options)`` builds one.
"""

from ..core.solver import available, get
from . import (  # noqa: F401  (registration)
    ddim,
    deis,
    dpm2,
    dpm_adaptive,
    dpm_solver,
    dpmpp,
    edm,
    etd,
    lms,
    pndm,
    rk,
    rk_tableaux,
    rosenbrock,
    sde,
    unipc,
)
from .ddim import DDIM
from .deis import DEIS
from .dpm2 import DPM2
from .dpm_solver import DPMSolverSinglestep
from .dpmpp import DPMSolverMultistep, DPMSolverPP2M, DPMSolverPP3M
from .edm import Euler, Heun
from .etd import ETD1, ETDRK2, ETDRK4, IMEXEuler
from .lms import LMS
from .pndm import PLMS, PNDM
from .rk import ButcherTableau, ExplicitRK
from .unipc import UniPC

__all__ = [
    "DDIM",
    "DEIS",
    "DPM2",
    "ETD1",
    "ETDRK2",
    "ETDRK4",
    "LMS",
    "PLMS",
    "PNDM",
    "ButcherTableau",
    "DPMSolverMultistep",
    "DPMSolverPP2M",
    "DPMSolverPP3M",
    "DPMSolverSinglestep",
    "Euler",
    "ExplicitRK",
    "Heun",
    "IMEXEuler",
    "UniPC",
    "available",
    "get",
]

"""Built-in solvers; importing this package registers them.

``available()`` lists the registry names, ``get(name, **options)`` builds one.
"""

from ..core.solver import available, get
from . import (  # noqa: F401  (registration)
    ancestral,
    ddim,
    deis,
    dpm2,
    dpm_adaptive,
    dpm_solver,
    dpmpp,
    edm,
    etd,
    lms,
    pc,
    pndm,
    reverse_sde,
    rk,
    rk_tableaux,
    rosenbrock,
    sde,
    sde_dpmpp,
    unipc,
)
from .ancestral import DDPM, DPMSolverPP2SAncestral, EulerAncestral
from .ddim import DDIM
from .deis import DEIS
from .dpm2 import DPM2
from .dpm_solver import DPMSolverSinglestep
from .dpmpp import DPMSolverMultistep, DPMSolverPP2M, DPMSolverPP3M
from .edm import Euler, Heun
from .etd import ETD1, ETDRK2, ETDRK4, IMEXEuler
from .lms import LMS
from .noise import BrownianPath
from .pc import PredictorCorrector
from .pndm import PLMS, PNDM
from .reverse_sde import EulerMaruyama
from .rk import ButcherTableau, ExplicitRK
from .sde_dpmpp import SDEDPMSolverPP2M, SDEDPMSolverPP3M
from .unipc import UniPC

__all__ = [
    "DDIM",
    "DDPM",
    "DEIS",
    "DPM2",
    "ETD1",
    "ETDRK2",
    "ETDRK4",
    "LMS",
    "PLMS",
    "PNDM",
    "BrownianPath",
    "ButcherTableau",
    "DPMSolverMultistep",
    "DPMSolverPP2M",
    "DPMSolverPP2SAncestral",
    "DPMSolverPP3M",
    "DPMSolverSinglestep",
    "Euler",
    "EulerAncestral",
    "EulerMaruyama",
    "ExplicitRK",
    "Heun",
    "IMEXEuler",
    "PredictorCorrector",
    "SDEDPMSolverPP2M",
    "SDEDPMSolverPP3M",
    "UniPC",
    "available",
    "get",
]

"""Built-in solvers, one module per method family; importing this package registers them all.

``available()`` lists the registry names (``available("diffusion")`` one family),
``get(name, **options)`` builds one, ``entry(name)`` tells what a name is.
"""

from . import (  # noqa: F401  (registration)
    adams,
    adams_variable,
    ancestral,
    autoregressive,
    bdia,
    bdia_edm,
    dc_unipc,
    ddim,
    deis,
    dpm2,
    dpm_adaptive,
    dpm_solver,
    dpm_v3,
    dpmpp,
    dpmpp_sde,
    edm,
    etd,
    implicit,
    lms,
    pc,
    pndm,
    reverse_sde,
    rk,
    rk_tableaux,
    rosenbrock,
    scheduled,
    sde,
    sde_dpmpp,
    time_shift,
    time_shift_unipc,
    unipc,
)
from .adams import AdamsBashforthMoulton
from .ancestral import DPM2Ancestral, DPMSolverPP2SAncestral
from .autoregressive import Autoregressive
from .base import DiffusionSolver
from .ddim import DDIM
from .deis import DEIS
from .dpm2 import DPM2
from .dpm_adaptive import DPMSolverAdaptive, LuStepSizeController
from .dpm_solver import DPMSolverSinglestep
from .dpmpp import DPMSolverMultistep
from .dpmpp_sde import DPMSolverPPSDE
from .edm import EDMHeun
from .etd import ETD1, ETDRK2, ETDRK4, IMEXEuler
from .inpaint import Inpaint
from .lms import LMS
from .noise import BrownianPath
from .pc import PredictorCorrector
from .pndm import PLMS, PNDM
from .registry import available, entry, get, register
from .reverse_sde import ReverseSDEEulerMaruyama
from .rk import ButcherTableau, ExplicitRK
from .rosenbrock import Rosenbrock23
from .schedule import ScheduledSolver, SolverSchedule, StepSpec, load_schedule
from .sde import SDEEulerMaruyama, SDEMilstein, SDEReversibleHeun
from .sde_dpmpp import SDEDPMSolverPP
from .smc import SMCInpaint
from .unipc import UniPC

__all__ = [
    "DDIM",
    "DEIS",
    "DPM2",
    "DPM2Ancestral",
    "DPMSolverPPSDE",
    "ETD1",
    "ETDRK2",
    "ETDRK4",
    "LMS",
    "PLMS",
    "PNDM",
    "AdamsBashforthMoulton",
    "Autoregressive",
    "BrownianPath",
    "ButcherTableau",
    "DPMSolverAdaptive",
    "DPMSolverMultistep",
    "DPMSolverPP2SAncestral",
    "DPMSolverSinglestep",
    "DiffusionSolver",
    "EDMHeun",
    "ExplicitRK",
    "IMEXEuler",
    "Inpaint",
    "LuStepSizeController",
    "PredictorCorrector",
    "ReverseSDEEulerMaruyama",
    "Rosenbrock23",
    "SDEDPMSolverPP",
    "SDEEulerMaruyama",
    "SDEMilstein",
    "SDEReversibleHeun",
    "SMCInpaint",
    "ScheduledSolver",
    "SolverSchedule",
    "StepSpec",
    "UniPC",
    "available",
    "entry",
    "get",
    "load_schedule",
    "register",
]

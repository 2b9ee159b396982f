"""timestepper: the time discretization of learned dynamics.

One integrate loop drives diffusion/flow sampling, neural ODE/SDE solving and spectral PDE
solvers. See the README for a tour.
"""

from . import guidance, integrations, solvers, train
from .core import ODETerm, SemilinearTerm, Solution, Stats, integrate, phi
from .core.integrate import NonFiniteError
from .diffusion import (
    Denoiser,
    EDMSchedule,
    RectifiedFlowSchedule,
    VESchedule,
    VPCosineSchedule,
    VPDiscreteSchedule,
    VPLinearSchedule,
    make_grid,
    sample,
)

__version__ = "0.1.0"

__all__ = [
    "Denoiser",
    "EDMSchedule",
    "NonFiniteError",
    "ODETerm",
    "RectifiedFlowSchedule",
    "SemilinearTerm",
    "Solution",
    "Stats",
    "VESchedule",
    "VPCosineSchedule",
    "VPDiscreteSchedule",
    "VPLinearSchedule",
    "integrate",
    "make_grid",
    "phi",
    "sample",
    "guidance",
    "integrations",
    "solvers",
    "train",
]

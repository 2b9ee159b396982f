"""timestepper: the time discretization of learned dynamics.

One integrate loop drives diffusion/flow sampling, neural ODE/SDE solving and spectral PDE
solvers. See the README for a tour.
"""

from . import guidance, integrations, pde, solvers, train
from .core import ODETerm, SemilinearTerm, Solution, Stats, integrate, phi
from .core.integrate import NonFiniteError
from .diffusion import (
    Denoiser,
    EDMSchedule,
    RectifiedFlowSchedule,
    SubVPSchedule,
    VESchedule,
    VPCosineSchedule,
    VPDiscreteSchedule,
    VPLinearSchedule,
    inpaint,
    likelihood,
    make_grid,
    sample,
)
from .ode import odeint, odeint_adjoint, solve

__version__ = "0.1.0"

__all__ = [
    "Denoiser",
    "EDMSchedule",
    "NonFiniteError",
    "ODETerm",
    "RectifiedFlowSchedule",
    "SemilinearTerm",
    "SubVPSchedule",
    "Solution",
    "Stats",
    "VESchedule",
    "VPCosineSchedule",
    "VPDiscreteSchedule",
    "VPLinearSchedule",
    "inpaint",
    "integrate",
    "likelihood",
    "make_grid",
    "odeint",
    "odeint_adjoint",
    "pde",
    "phi",
    "sample",
    "solve",
    "guidance",
    "integrations",
    "solvers",
    "train",
]

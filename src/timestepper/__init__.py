"""timestepper: the time discretization of learned dynamics.

One integrate loop drives diffusion/flow sampling, neural ODE/SDE solving and spectral PDE
solvers. See the README for a tour; the layers, from the bottom:

* :mod:`timestepper.core` and :mod:`timestepper.diffusion`: terms, the solver contract,
  controllers, solutions and status codes; schedules, predictions, grids and the diffusion term;
* :mod:`timestepper.solvers`: every solver and the registry;
* :mod:`timestepper.loop`: :func:`integrate`, the one loop;
* the fronts: :mod:`timestepper.sampling` (``sample``, ``inpaint``, ``likelihood``),
  :mod:`timestepper.ode` (``solve``, ``odeint``, ``sdeint``), :mod:`timestepper.cde` (neural
  CDEs and stable neural SDEs on irregular series, with :mod:`timestepper.data`),
  :mod:`timestepper.pde`, :mod:`timestepper.train`, :mod:`timestepper.tuning` (``tune``), and the interop of
  :mod:`timestepper.integrations`.
"""

from . import cde, data, guidance, integrations, pde, solvers, train, tuning
from ._version import __version__
from .core import (
    FixedGrid,
    IController,
    MaxStepsError,
    NonFiniteError,
    ODETerm,
    PIDController,
    SaveAt,
    SDETerm,
    SemilinearTerm,
    Solution,
    SolveError,
    Stats,
    Status,
    StepSizeUnderflowError,
    StiffnessError,
    phi,
)
from .diffusion import (
    Denoiser,
    EDMSchedule,
    RectifiedFlowSchedule,
    SubVPSchedule,
    VESchedule,
    VPCosineSchedule,
    VPDiscreteSchedule,
    VPLinearSchedule,
    make_grid,
)
from .loop import integrate
from .ode import odeint, odeint_adjoint, odeint_dense, odeint_event, sdeint, solve
from .sampling import inpaint, likelihood, sample
from .solvers.schedule import SolverSchedule, StepSpec, load_schedule
from .tuning import tune

__all__ = [
    "Denoiser",
    "EDMSchedule",
    "FixedGrid",
    "IController",
    "MaxStepsError",
    "NonFiniteError",
    "ODETerm",
    "PIDController",
    "RectifiedFlowSchedule",
    "SDETerm",
    "SaveAt",
    "SemilinearTerm",
    "SolveError",
    "Solution",
    "SolverSchedule",
    "Stats",
    "Status",
    "StepSizeUnderflowError",
    "StepSpec",
    "StiffnessError",
    "SubVPSchedule",
    "VESchedule",
    "VPCosineSchedule",
    "VPDiscreteSchedule",
    "VPLinearSchedule",
    "__version__",
    "cde",
    "data",
    "guidance",
    "inpaint",
    "integrate",
    "integrations",
    "likelihood",
    "load_schedule",
    "make_grid",
    "odeint",
    "odeint_adjoint",
    "odeint_dense",
    "odeint_event",
    "pde",
    "phi",
    "sample",
    "sdeint",
    "solve",
    "solvers",
    "train",
    "tune",
    "tuning",
]

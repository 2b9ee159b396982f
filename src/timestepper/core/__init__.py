"""Below the solvers: terms, the solver contract, controllers, solutions, status codes, phi
functions and validation. Nothing here imports a solver, the loop or a front."""

from .controllers import FixedGrid, IController, PIDController, StepSizeController
from .phi import phi
from .solution import SaveAt, Solution, Stats
from .solver import Solver
from .status import (
    MaxStepsError,
    NonFiniteError,
    SolveError,
    Status,
    StepSizeUnderflowError,
    StiffnessError,
)
from .terms import ODETerm, SDETerm, SemilinearTerm, SurrogateTerm, Term, VectorFieldTerm

__all__ = [
    "FixedGrid",
    "IController",
    "MaxStepsError",
    "NonFiniteError",
    "StiffnessError",
    "ODETerm",
    "PIDController",
    "SDETerm",
    "SaveAt",
    "SemilinearTerm",
    "Solution",
    "SolveError",
    "Solver",
    "Stats",
    "Status",
    "StepSizeController",
    "StepSizeUnderflowError",
    "SurrogateTerm",
    "Term",
    "VectorFieldTerm",
    "phi",
]

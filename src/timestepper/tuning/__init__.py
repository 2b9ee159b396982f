"""Tuning the sampler to the model (issue 15): search a solver schedule for a given NFE.

``tune(den, nfe=5, method="ays", noise=train_noise, **budget)`` returns a
:class:`~timestepper.solvers.schedule.SolverSchedule`. The objective needs no data
(:mod:`~timestepper.tuning.objective`); the methods register themselves with
:func:`~timestepper.tuning.methods.register_method` when imported here:

* ``fixed``: the best fixed grid x solver (the baseline every search starts from);
* ``autodiffusion``: AutoDiffusion's evolutionary search (Li et al. 2023);
* ``s3``: S^3's predictor-guided search of a USF schedule (Liu et al. 2023);
* ``ays``: Align Your Steps' KLUB-optimal levels (Sabour et al. 2024);
* ``ems``: DPM-Solver-v3 with empirical model statistics computed from the model (Zheng et al. 2023);
* ``dc``: DC-Solver's compensation ratios fitted on reference trajectories (Zhao et al. 2024);
* ``timeshift``: the Time-Shift Sampler's window and cutoff (Li et al. 2024).
"""

from . import autodiffusion, ays, dc, ems, fixed, s3, timeshift
from .methods import available_methods, check_budget, get_method, register_method
from .objective import Objective
from .tune import DEFAULT_METHOD, tune

__all__ = ["DEFAULT_METHOD", "Objective", "autodiffusion", "available_methods", "ays", "check_budget", "dc",
           "ems", "fixed", "get_method", "register_method", "s3", "timeshift", "tune"]

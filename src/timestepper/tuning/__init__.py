"""Tuning the sampler to the model (issue 15): search a solver schedule for a given NFE.

``tune(den, nfe=5, method="s3", noise=train_noise, **budget)`` returns a
:class:`~timestepper.solvers.schedule.SolverSchedule`. The objective needs no data
(:mod:`~timestepper.tuning.objective`); the methods register themselves with
:func:`~timestepper.tuning.methods.register_method` when imported here:

* ``fixed``: the best fixed grid x solver (the baseline every search starts from);
* ``autodiffusion``: AutoDiffusion's evolutionary search (Li et al. 2023);
* ``s3``: S^3's predictor-guided search of a USF schedule (Liu et al. 2023);
* ``ays``: Align Your Steps' KLUB-optimal levels (Sabour et al. 2024).
"""

from . import autodiffusion, ays, fixed, s3
from .methods import available_methods, check_budget, get_method, register_method
from .objective import Objective
from .tune import DEFAULT_METHOD, tune

__all__ = ["DEFAULT_METHOD", "Objective", "autodiffusion", "available_methods", "ays", "check_budget", "fixed",
           "get_method", "register_method", "s3", "tune"]

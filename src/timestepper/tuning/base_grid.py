"""The grid a fitted method runs on: a named spacing, the best named spacing, or Align-Your-Steps
levels searched for the method's own sampler (``grid="ays"``).

DPM-Solver-v3 (EMS), DC-Solver and the Time-Shift Sampler fit their own coefficients or
hyper-parameters on a given time grid; they say nothing about which grid. Their papers evaluate on
the usual fixed spacings and, in DPM-Solver-v3's and DC-Solver's comparisons, also on tuned
step schedules (DPM-Solver-v3's Appendix compares with optimised time steps; DC-Solver reports
on the samplers' own best settings). Here a fitted method first chooses its grid with
:func:`base_schedule`:

* a spacing name (``"logsnr"``, ``"karras"``, ``"uniform"``, ``"quadratic"``, ``"sigmoid"``):
  that grid;
* ``"best"``: every named spacing (with the flow shifts of :func:`~timestepper.tuning.fixed.grid_options`),
  the one whose ``make(times)`` has the smallest training objective;
* ``"ays"``: from that best spacing, the Align-Your-Steps refinement of the levels
  (:func:`~timestepper.tuning.ays.align_levels`, criterion: the protocol objective) for the
  method's **own** sampler ``make(times)`` -- the levels are searched for the solver that will run
  on them, not for another one.

The method then fits its coefficients on the chosen times (DC's ratios, Time-Shift's window and
cutoff, EMS's options), so the search and the fit compose: ``ts.tune(den, 5, "dc", grid="ays")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import SPACING_OPTIONS, make_grid
from ..solvers.schedule import SolverSchedule
from .ays import align_levels
from .fixed import grid_options
from .methods import check_budget
from .objective import Objective

Make = Callable[[tuple[float, ...]], SolverSchedule]
SEARCHED = ("ays", "best")


def check_grid(grid: str) -> str:
    """``grid`` when it is ``"ays"``, ``"best"`` or a spacing name; a clear error otherwise."""
    if not isinstance(grid, str) or (grid not in SEARCHED and grid not in SPACING_OPTIONS):
        raise ValueError(f"grid must be 'ays', 'best' or a spacing name ({', '.join(SPACING_OPTIONS)}), "
                         f"got {grid!r}")
    return grid


def named_times(denoiser: Denoiser, nfe: int, grid: str, shift: float | None = None) -> tuple[float, ...]:
    """The ``nfe + 1`` times of a named spacing, the last step to ``sigma = 0``."""
    return tuple(make_grid(denoiser.schedule, nfe, grid, final="zero", shift=shift).t.tolist())


def best_named(denoiser: Denoiser, nfe: int, objective: Objective, make: Make) -> SolverSchedule:
    """``make(times)`` on the named spacing with the smallest training objective."""
    best, best_value = None, math.inf
    for name, shift in grid_options(denoiser):
        sched = make(named_times(denoiser, nfe, name, shift))
        value = objective(sched)
        if value < best_value:
            best, best_value = sched, value
            best.provenance.update(grid=name, shift=shift)
    if best is None:
        raise ValueError(f"no named grid gives a finite objective at nfe={nfe}")
    return best


def base_schedule(denoiser: Denoiser, nfe: int, objective: Any, make: Make,  # noqa: PLR0913 - the search's knobs
                  grid: str = "ays", sweeps: int = 2, iters: int = 10) -> SolverSchedule:
    """``make(times)`` on the grid ``grid`` chooses (module docstring); its provenance records
    ``grid`` (the spacing, or ``"ays"`` with the spacing it started from as ``ays_start``).
    ``objective``: the search's :class:`~timestepper.tuning.objective.Objective` (a plain
    ``schedule -> float`` function does for ``"best"``; ``None`` only for a spacing name)."""
    check_grid(grid)
    if grid not in SEARCHED:
        sched = make(named_times(denoiser, nfe, grid))
        sched.provenance.update(grid=grid)
        return sched
    if objective is None:
        raise ValueError(f"grid={grid!r} searches the grid and needs the objective; pass a spacing name instead")
    check_budget(sweeps=(sweeps, 1), iters=(iters, 1))
    start = best_named(denoiser, nfe, objective, make)
    if grid == "best":
        return start
    found = align_levels(objective, start, make, sweeps=sweeps, iters=iters)
    if found is not start:
        found.provenance.update(grid="ays", ays_start=start.provenance.get("grid"), shift=None)
    return found


__all__ = ["SEARCHED", "base_schedule", "best_named", "check_grid", "named_times"]

"""The Time-Shift Sampler's hyper-parameters fitted to a model ("timeshift").

Li et al. (ICLR 2024, "Alleviating Exposure Bias in Diffusion Models through Sampling with Shifted
Time Steps") have two hyper-parameters, the window size ``w`` and the cutoff ``t_c``
(:mod:`timestepper.solvers.time_shift`), which the paper sets per model and step count by hand.
This method picks them on the training noise: first the base solver (by default the one of
``ddim``, ``dpmpp-2m``, ``dpm-solver-2m``, ``unipc-bh1`` and ``unipc-bh2`` whose best named
spacing has the smallest objective: the paper shifts DDIM and DPM-Solver, and the shifted UniPC,
:mod:`~timestepper.solvers.time_shift_unipc`, is the same rule on the solver that is often best
at few steps), then its grid (by default Align-Your-Steps levels searched for it,
:mod:`~timestepper.tuning.base_grid`), then every ``(window, cutoff)`` pair of the budget over
that grid; the pair with the smallest objective wins. Window 0 (the base solver itself) is
always a candidate, so on the training noise the result is never worse than its base.

The objective is the caller's: the default :class:`~timestepper.tuning.objective.Objective` is the
distance to the model's own probability-flow solution, which the shift leaves on purpose (it
corrects the drift of an *imperfect* model, exposure bias); a distance to data samples (a Fréchet
or sliced Wasserstein distance) measures what the paper optimises (FID). ``benchmarks/time_shift.py``
does that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..diffusion.denoiser import Denoiser
from ..solvers.schedule import SolverSchedule
from .base_grid import SEARCHED, base_schedule
from .methods import check_budget, register_method

BASES = {"ts-ddim": "ddim", "ts-dpmpp-2m": "dpmpp-2m", "ts-dpm-solver-2m": "dpm-solver-2m",
         "ts-unipc-bh1": "unipc-bh1", "ts-unipc-bh2": "unipc-bh2"}


def absolute_cutoff(denoiser: Denoiser, fraction: float) -> float:
    """The cutoff time ``t_min + fraction (t_max - t_min)`` of the model's schedule."""
    sch = denoiser.schedule
    return sch.t_min + fraction * (sch.t_max - sch.t_min)


def timeshift(  # noqa: PLR0913 - the protocol's four arguments and the method's budget
    denoiser: Denoiser,
    nfe: int,
    noise: torch.Tensor,
    objective: Callable[[SolverSchedule], float],
    solver: str = "best",
    grid: str | None = "ays",
    windows: Sequence[int] = (4, 10, 20, 40),
    cutoffs: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8),
    data_variance: float = 0.0,
    grid_sweeps: int = 2,
    grid_iters: int = 10,
) -> SolverSchedule:
    """Time-Shift Sampler hyper-parameters by grid search on the training noise.

    Args:
        denoiser, nfe, noise, objective: the search protocol (:mod:`timestepper.tuning.methods`).
        solver: ``"best"`` (default: the base whose best named spacing, or the spacing
            ``grid`` names, has the smallest objective), or one of ``"ts-ddim"``,
            ``"ts-dpmpp-2m"``, ``"ts-dpm-solver-2m"``, ``"ts-unipc-bh1"``, ``"ts-unipc-bh2"``.
        grid: the base grid (:func:`~timestepper.tuning.base_grid.base_schedule`): ``"ays"``
            (default), Align-Your-Steps levels searched for the base solver; ``"best"`` (or
            ``None``) the best named spacing for it; or a spacing name.
        windows: window sizes to try (training steps; window 0 is always tried as well).
        cutoffs: cutoffs to try, as fractions of ``[t_min, t_max]`` (0: every step but the
            first is shifted).
        data_variance: the ``v_data`` of the rule (0: the paper's).
        grid_sweeps, grid_iters: the AYS search's budget (``grid="ays"``).

    Returns:
        ``SolverSchedule(times=base grid, steps=(), solver=solver, solver_options={"window",
        "cutoff", "data_variance"})``; the provenance records the base grid, both objectives
        and the evaluations spent. Model calls: ``nfe`` per evaluation, ``1 + len(windows) *
        len(cutoffs)`` evaluations after the base grid's (5 named grids per base solver tried,
        more for flows, and the AYS refinement).
    """
    if solver != "best" and solver not in BASES:
        raise ValueError(f"solver must be 'best' or one of {', '.join(BASES)}, got {solver!r}")
    check_budget(data_variance=(data_variance, 0.0))
    for w in windows:
        check_budget(windows=(w, 1))
    for c in cutoffs:
        check_budget(cutoffs=(c, 0.0))
        if c > 1.0:
            raise ValueError(f"cutoffs are fractions of [t_min, t_max] in [0, 1], got {c!r}")
    grid = "best" if grid is None else grid
    if solver == "best":
        solver = best_base(denoiser, nfe, objective, grid)
    base = base_schedule(denoiser, nfe, objective, lambda times: SolverSchedule(times, solver=BASES[solver]),
                         grid, grid_sweeps, grid_iters)
    base_value = objective(base)
    candidates = [(0, absolute_cutoff(denoiser, 0.0))]
    candidates += [(w, absolute_cutoff(denoiser, c)) for w in windows for c in cutoffs]
    best, best_value = None, math.inf
    for window, cutoff in candidates:
        sched = SolverSchedule(base.times, solver=solver, solver_options={
            "window": int(window), "cutoff": float(cutoff), "data_variance": float(data_variance)})
        value = objective(sched)
        if value < best_value:
            best, best_value = sched, value
    if best is None:
        raise ValueError(f"no window/cutoff gives {solver!r} a finite objective at nfe={nfe}")
    best.provenance.update(
        method="timeshift", base_solver=BASES[solver], grid=base.provenance.get("grid"),
        shift=base.provenance.get("shift"), objective_base=base_value, objective_tuned=best_value,
        ays_start=base.provenance.get("ays_start"), evaluations=len(candidates), window=best.solver_options["window"],
        cutoff=best.solver_options["cutoff"])
    return best


def best_base(denoiser: Denoiser, nfe: int, objective: Callable[[SolverSchedule], float], grid: str) -> str:
    """The Time-Shift solver whose base has the smallest objective on its best named spacing (on
    the spacing ``grid`` names, when it names one)."""
    named = grid if grid not in SEARCHED else "best"
    values = {}
    for name, base in BASES.items():
        sched = base_schedule(denoiser, nfe, objective, lambda times, b=base: SolverSchedule(times, solver=b), named)
        values[name] = objective(sched)
    return min(values, key=lambda n: values[n] if math.isfinite(values[n]) else math.inf)


register_method("timeshift", timeshift,
                "Time-Shift Sampler (Li et al. 2024): base solver (DDIM, DPM-Solver(++), UniPC), window and "
                "cutoff chosen on the training noise")

__all__ = ["BASES", "absolute_cutoff", "best_base", "timeshift"]

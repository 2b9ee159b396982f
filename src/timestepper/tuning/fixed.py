"""The baseline: the best fixed grid x solver on the training noise ("fixed").

Every named spacing (log-SNR, Karras, uniform, quadratic, sigmoid; plus the flow time shift for
flow schedules) with every deterministic registered solver whose model calls equal its steps, run
at ``nfe`` steps with the last step to ``sigma = 0``; the configuration with the smallest training
objective wins. The searched methods start from it.
"""

from __future__ import annotations

import math

import torch

from ..core.solution import Solution
from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import default_spacing, make_grid
from ..diffusion.schedules import RectifiedFlowSchedule
from ..sampling.sample import sample
from ..solvers.registry import available, get
from ..solvers.schedule import SolverSchedule
from .methods import register_method
from .objective import Objective

GRIDS = ("logsnr", "karras", "uniform", "quadratic", "sigmoid")
FLOW_SHIFTS = (2.0, 3.0)


def fixed_solvers(denoiser: Denoiser, nfe: int) -> list[str]:
    """Deterministic fixed-grid diffusion solvers that evaluate the model on the grid and spend
    exactly one model call per step at ``nfe`` steps (counted on a zero model, one sample)."""
    probe = Denoiser(lambda x, t: torch.zeros_like(x), denoiser.schedule, denoiser.prediction)
    x = torch.zeros(1, 1, dtype=torch.float64)
    out = []
    for name in available("diffusion"):
        s = get(name)
        if s.is_stochastic or s.error_order is not None or not s.evaluates_on_grid or s.fitted_to_model:
            continue
        try:
            sol = sample(probe, x, name, steps=nfe, grid=default_spacing(denoiser.schedule), return_solution=True)
            if isinstance(sol, Solution) and sol.stats.nfe == nfe:
                out.append(name)
        except (ValueError, TypeError):
            continue
    return out


def grid_options(denoiser: Denoiser) -> list[tuple[str, float | None]]:
    """``(grid name, flow shift)`` pairs to try (the log-SNR and Karras spacings only where the
    log-SNR is finite at both ends of the schedule's range)."""
    grids = GRIDS if default_spacing(denoiser.schedule) == "logsnr" else tuple(
        g for g in GRIDS if g not in ("logsnr", "karras"))
    out: list[tuple[str, float | None]] = [(g, None) for g in grids]
    if isinstance(denoiser.schedule, RectifiedFlowSchedule):
        out += [(g, s) for g in grids for s in FLOW_SHIFTS]
    return out


def fixed_schedule(denoiser: Denoiser, nfe: int, solver: str, grid: str, shift: float | None = None) -> SolverSchedule:
    """The schedule of ``solver`` on the named grid: its per-step specs where USF expresses the
    solver (:meth:`SolverSchedule.from_solver`), else the registered solver run over the times."""
    sgrid = make_grid(denoiser.schedule, nfe, grid, final="zero", shift=shift)
    try:
        sched = SolverSchedule.from_solver(solver, sgrid)
    except ValueError:
        sched = SolverSchedule(tuple(sgrid.t.tolist()), solver=solver)
    sched.provenance.update(grid=grid, shift=shift, baseline_solver=solver)
    return sched


def best_fixed(denoiser: Denoiser, nfe: int, noise: torch.Tensor, objective: Objective,
               solvers: tuple[str, ...] | list[str] | None = None) -> SolverSchedule:
    """The fixed grid x solver with the smallest training objective (``solvers`` restricts the
    solvers tried; default every one that fits ``nfe`` exactly)."""
    names = list(solvers) if solvers else fixed_solvers(denoiser, nfe)
    best, best_value = None, math.inf
    for name in names:
        for grid, shift in grid_options(denoiser):
            sched = fixed_schedule(denoiser, nfe, name, grid, shift)
            value = objective(sched)
            if value < best_value:
                best, best_value = sched, value
    if best is None:
        raise ValueError(f"no fixed grid x solver gives a finite objective at nfe={nfe}")
    return best


def better_or_start(found: SolverSchedule, start: SolverSchedule, objective: Objective) -> SolverSchedule:
    """``found`` when its training objective beats the starting fixed grid's; else ``start``,
    marked ``fell_back_to_fixed`` with the objective the search reached."""
    value = objective(found)
    if math.isfinite(value) and value < objective(start):
        return found
    start.provenance.update(fell_back_to_fixed=True, searched_objective=value if math.isfinite(value) else None)
    return start


register_method("fixed", best_fixed, "best fixed grid x solver on the training noise (the baseline)")

__all__ = ["best_fixed", "better_or_start", "fixed_schedule", "fixed_solvers", "grid_options"]

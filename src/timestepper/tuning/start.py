"""Where the searches of time steps and solver schedules start, and the guarantee they keep.

AutoDiffusion and S^3 seed their first population with the best fixed grid x solver
(:mod:`~timestepper.tuning.fixed`) and, by default, with that candidate's times refined by a short
Align-Your-Steps descent on the objective (:func:`~timestepper.tuning.ays.align_levels`): a
random population rarely lands near a good grid at 8-10 steps, and a search that starts there
spends its budget improving it. The result of a search is kept only where it beats the fixed
start on the training objective (:func:`~timestepper.tuning.fixed.better_or_start`).
"""

from __future__ import annotations

from ..diffusion.denoiser import Denoiser
from ..solvers.schedule import SolverSchedule
from .ays import align_levels
from .fixed import best_fixed, better_or_start
from .methods import check_budget
from .objective import Objective
from .space import Candidate, Space, fit_steps


def starting_candidates(denoiser: Denoiser, nfe: int, noise, objective: Objective, space: Space,  # noqa: PLR0913
                        sweeps: int = 1, iters: int = 5) -> tuple[SolverSchedule, list[Candidate]]:
    """The best fixed grid x solver and the candidates it gives: its own per-step specs when it
    has them, its times with the space's default step, and (``sweeps > 0``) the first candidate's
    times refined by Align-Your-Steps (``sweeps`` of coordinate descent, ``iters`` golden-section
    iterations per level) for that candidate's own steps."""
    check_budget(start_sweeps=(sweeps, 0), start_iters=(iters, 1))
    start = best_fixed(denoiser, nfe, noise, objective)
    cands = [space.from_schedule(start)]
    if start.steps:
        cands.append(space.repair(Candidate(cands[0].u, (space.default_step,) * nfe)))
    if sweeps > 0:
        first = cands[0]

        def make(times: tuple[float, ...]) -> SolverSchedule:  # the first candidate's steps on these times
            if len(times) - 1 == nfe:
                return space.to_schedule(space.repair(Candidate(space.u_of_times(list(times)), first.steps)))
            return SolverSchedule(tuple(times), steps=fit_steps(first.steps[:len(times) - 1]))  # AYS's coarse stage

        refined = align_levels(objective, space.to_schedule(first), make, sweeps=sweeps, iters=iters)
        cands.insert(0, space.from_schedule(refined))
    return start, list(dict.fromkeys(cands))


__all__ = ["better_or_start", "starting_candidates"]

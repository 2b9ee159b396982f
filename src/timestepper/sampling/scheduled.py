"""How ``sample`` runs a solver schedule (``schedule=`` or ``grid="searched:PATH"``)."""

from __future__ import annotations

from typing import Any

from ..core.solver import Solver
from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import SamplingGrid
from ..solvers.schedule import SolverSchedule, load_schedule

SEARCHED = "searched:"


def searched_path(grid: object) -> str | None:
    """The path in ``grid="searched:PATH"``, else ``None``."""
    if isinstance(grid, str) and grid.startswith(SEARCHED):
        path = grid[len(SEARCHED):]
        if not path:
            raise ValueError('grid="searched:PATH" needs the path of a solver schedule JSON')
        return path
    return None


def check_no_contradiction(schedule: SolverSchedule, given: dict[str, Any]) -> None:
    """Refuse options that would contradict the schedule (it fixes the solver and the grid).
    ``steps`` equal to the schedule's step count is accepted."""
    n = len(schedule.times) - 1
    steps = given.pop("steps", None)
    if steps is not None and steps != n:
        raise ValueError(f"steps={steps} contradicts the schedule, which has {n} steps "
                         "(leave steps out when passing a schedule)")
    clash = sorted(k for k, v in given.items() if v is not None)
    if clash:
        raise ValueError(f"{', '.join(clash)} cannot be given together with a solver schedule: the "
                         "schedule fixes the solver and the times (leave them out)")


def resolve_schedule(denoiser: Denoiser, schedule: SolverSchedule | str, force: bool,
                     given: dict[str, Any]) -> tuple[Solver, SamplingGrid, SolverSchedule]:
    """The solver and grid that run ``schedule`` (or the JSON at that path) on ``denoiser``,
    after refusing contradicting options and, unless ``force``, a schedule made for another
    model's noise schedule or prediction type."""
    if isinstance(schedule, str):
        schedule = load_schedule(schedule)
    if not isinstance(schedule, SolverSchedule):
        raise TypeError(f"schedule must be a SolverSchedule or a JSON path, got {type(schedule).__name__}")
    check_no_contradiction(schedule, given)
    schedule.validate(denoiser, force=force)
    return schedule.build_solver(), schedule.grid(denoiser.schedule), schedule


def check_schedule_nfe(schedule: SolverSchedule, nfe: int) -> None:
    """Refuse a run whose model calls differ from the NFE the schedule records."""
    recorded = schedule.provenance.get("nfe")
    if recorded is not None and int(recorded) != nfe:
        raise ValueError(f"NFE mismatch: the schedule records nfe={recorded} but running it took {nfe} "
                         "model calls")


__all__ = ["SEARCHED", "check_schedule_nfe", "check_no_contradiction", "resolve_schedule", "searched_path"]

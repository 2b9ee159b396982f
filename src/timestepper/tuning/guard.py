"""The distribution guard of ``tune``: keep a searched schedule only if its samples are, as a
set, no farther from the model's own than the best fixed grid's.

The search objective is pathwise (mean L2 to the model's solution from the same noise). On an
image model a schedule can win on it and still lose on a set-level metric such as a Fréchet
distance: on the digits model at NFE 5, DPM-Solver-v3 with empirical model statistics had the
lowest training L2 (0.484 against 0.648 for the best fixed grid) and the largest Fréchet distance
to the data (3.01 against 2.36), its errors all pushing the samples' features one way. The
guard measures that on the training noise, without data: the squared Fréchet distance
(:func:`~timestepper.bench.metrics.frechet_distance`) between the features of the schedule's
samples and those of the reference samples, against the same distance for the best fixed grid
(:func:`~timestepper.tuning.fixed.best_fixed`, usually already evaluated by the search). When the
searched schedule is farther, ``tune`` returns the fixed grid, marked ``fell_back_to_fixed``.
The distances and the decision are in ``provenance["guard"]``.

A check against the model cannot see a gap between the model and the data: on the digits model at
NFE 5 the fixed grid's discretisation error happens to move its samples toward the data, and
schedules closer to the model's own solution (AutoDiffusion's, S^3's) are farther from the data.
With ``data`` (real samples, ``tune(..., guard_data=...)``) the reference set is the data's
features instead, as AutoDiffusion (Li et al. 2023) scores its candidates by FID against real
images; the search itself stays data-free.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from ..bench.metrics import frechet_distance
from ..solvers.schedule import SolverSchedule
from .fixed import best_fixed
from .objective import Objective, finite_sample

Guard = Callable[[Tensor], Tensor] | bool | None
#: the widest flattened sample ``guard=True`` accepts (its covariance is dims x dims float64)
MAX_PIXEL_DIMS = 4096


def guard_features(guard: Guard, noise: Tensor) -> Callable[[Tensor], Tensor] | None:
    """The feature extractor of ``guard`` (``None``: no guard). ``True``: the flattened samples
    (states of at most ``MAX_PIXEL_DIMS`` numbers); a callable: ``samples -> (n, k)`` features."""
    if guard is None or guard is False:
        return None
    if guard is True:
        dims = noise[0].numel()
        if dims > MAX_PIXEL_DIMS:
            raise ValueError(f"guard=True compares flattened samples, at most {MAX_PIXEL_DIMS} numbers each; "
                             f"these have {dims}: pass a feature extractor (samples -> (n, k)) as guard")
        return lambda x: x.reshape(x.shape[0], -1)
    if not callable(guard):
        raise TypeError(f"guard must be None, True or a feature extractor samples -> (n, k), "
                        f"got {type(guard).__name__}")
    return guard


def _set_distance(objective: Objective, schedule: SolverSchedule, features: Callable[[Tensor], Tensor],
                  reference: Tensor) -> float:
    x = finite_sample(objective.denoiser, objective.noise, schedule)
    if x is None:
        return float("inf")
    with torch.no_grad():
        return frechet_distance(features(x).double(), reference)


def check_guard_data(data: Tensor | None, features: Callable[[Tensor], Tensor] | None, noise: Tensor) -> None:
    """Refuse ``guard_data`` without a guard, or shaped unlike the samples."""
    if data is None:
        return
    if features is None:
        raise ValueError("guard_data needs a guard (a feature extractor, or True) to compare the samples with it")
    if not isinstance(data, Tensor) or data.ndim != noise.ndim or tuple(data.shape[1:]) != tuple(noise.shape[1:]) \
            or data.shape[0] < 2:
        raise ValueError(f"guard_data must be a tensor of at least 2 samples shaped like the noise's, "
                         f"(N, {', '.join(map(str, noise.shape[1:]))}); got "
                         f"{tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__}")
    if not bool(torch.isfinite(data).all()):
        raise ValueError("guard_data holds NaN or inf")


def guarded(found: SolverSchedule, nfe: int, objective: Objective,
            features: Callable[[Tensor], Tensor], data: Tensor | None = None) -> SolverSchedule:
    """``found``, or the best fixed grid when its samples' features are farther (squared Fréchet
    distance, on the training noise) from the reference set's than the fixed grid's.

    The reference set is the model's own reference samples for the training noise, or ``data``
    (real samples) when given. The model calls and seconds it spends are counted in the
    objective's search cost."""
    start = best_fixed(objective.denoiser, nfe, objective.noise, objective)
    if Objective.key(start) == Objective.key(found):
        found.provenance["guard"] = {"kept": True, "same_as_fixed": True}
        return found
    t0 = time.perf_counter()
    with torch.no_grad():
        reference = features(objective.reference if data is None else data).double()
    d_found = _set_distance(objective, found, features, reference)
    d_fixed = _set_distance(objective, start, features, reference)
    objective.seconds += time.perf_counter() - t0
    report = {"frechet_found": d_found, "frechet_fixed": d_fixed, "kept": d_found <= d_fixed,
              "reference": "model" if data is None else f"data ({data.shape[0]} samples)"}
    if report["kept"]:
        found.provenance["guard"] = report
        return found
    start.provenance.update(fell_back_to_fixed=True, guard=report, searched_solver=found.solver,
                            searched_objective=objective(found))
    return start


__all__ = ["MAX_PIXEL_DIMS", "check_guard_data", "guard_features", "guarded"]

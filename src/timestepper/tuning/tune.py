"""``tune``: search a solver schedule for a model and an NFE budget (issue 15)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from ..core.validation import check_int, check_state
from ..diffusion.denoiser import Denoiser
from ..solvers.schedule import SolverSchedule, model_provenance
from .guard import Guard, check_guard_data, guard_features, guarded
from .methods import get_method
from .objective import Objective, Reference, model_fingerprint

#: the method ``tune`` uses unless told otherwise: of benchmarks/results/tuning.md's methods, the one
#: whose worst ratio to the best fixed grid over every row (mixtures and digits) is the smallest, and
#: the cheapest search (``ems`` has the lowest mean on the mixtures but loses badly on digits)
DEFAULT_METHOD = "ays"


def tune(  # noqa: PLR0913 - the protocol's inputs, all keyword options with defaults
    denoiser: Denoiser,
    nfe: int = 5,
    method: str = DEFAULT_METHOD,
    *,
    noise: Tensor,
    reference: Reference = None,
    held_out: Tensor | None = None,
    seed: int = 0,
    progress: bool = False,
    journal: str | Path | None = None,
    reference_steps: int = 400,
    model_id: str | None = None,
    features: Callable[[Tensor], Tensor] | None = None,
    guard: Guard = None,
    guard_data: Tensor | None = None,
    **budget: Any,
) -> SolverSchedule:
    """Search a solver schedule of ``nfe`` model calls for ``denoiser``.

    The objective is the mean L2 distance at ``sigma = 0`` to the model's own tight PF-ODE
    solution from the same noise (:class:`~timestepper.tuning.objective.Objective`), on the
    training ``noise``; ``held_out`` noise, when given, is reported in the provenance.

    Args:
        denoiser: any :class:`~timestepper.Denoiser`.
        nfe: model calls of one sample with the returned schedule.
        method: a name of :func:`~timestepper.tuning.available_methods` (``"s3"``,
            ``"autodiffusion"``, ``"ays"``, ``"fixed"``, ...).
        noise: the training noise (a batch shaped like the samples).
        reference: exact samples for ``noise`` or a function ``noise -> samples`` (e.g. a
            mixture's ``reference_solution``); default a tight solve of the model.
        held_out: noise for the held-out objective.
        seed: seed of the search's random choices.
        progress: show a progress bar (one tick per evaluated schedule, the best objective).
        journal: a file memoising evaluations: a search interrupted and run again with the same
            arguments and journal replays what it did without model calls.
        reference_steps: steps of the default reference solve.
        model_id: a name for the provenance (default: a hash of the model).
        features: a feature extractor ``samples -> (n, k)`` for image models: the objective is
            then the mean L2 distance between the features of the sample and of the reference.
        guard: a set-level check after the search (:mod:`~timestepper.tuning.guard`): a feature
            extractor ``samples -> (n, k)`` (or ``True``: the flattened samples); the searched
            schedule is kept only if the Fréchet distance of its samples' features to the
            reference samples' is no larger than the best fixed grid's, on the training noise,
            else the fixed grid is returned (``fell_back_to_fixed``). For image models, whose
            pathwise L2 can disagree with a set metric; off by default.
        guard_data: real samples ``(N, *sample shape)`` for the guard to compare with instead of
            the model's reference samples: the schedule whose samples are closer to the data wins
            (the FID-based selection of AutoDiffusion, Li et al. 2023, as a check after the
            search). It sees what a check against the model cannot: a fixed grid whose
            discretisation error happens to move the samples toward the data. Use data the model
            was trained on and evaluate on other data; the search itself stays data-free.
        budget: the method's budget (e.g. ``generations=8, population=16``); names the method does
            not take are refused.

    Returns:
        a :class:`~timestepper.solvers.schedule.SolverSchedule` whose provenance records the model
        hash, noise schedule, prediction type, NFE, objective (training and held-out), seed,
        method, budget and search cost (model calls, seconds).
    """
    nfe = check_int(nfe, "nfe", 1)
    m = get_method(method)
    m.check_budget(budget)
    check_state("noise", noise)
    guard_fn = guard_features(guard, noise)
    check_guard_data(guard_data, guard_fn, noise)
    objective = Objective(denoiser, noise, reference, held_out=held_out, reference_steps=reference_steps,
                          seed=seed, journal=journal, features=features)
    bar = _progress_bar(objective, f"tune {method} nfe={nfe}") if progress else None
    try:
        sched = m.fn(objective.denoiser, nfe, noise, objective, **budget)
    finally:
        if bar is not None:
            bar.close()
    if sched.nfe != nfe:
        raise RuntimeError(f"method {method!r} returned a schedule of {sched.nfe} model calls, not nfe={nfe}")
    if guard_fn is not None and method != "fixed":
        sched = guarded(sched, nfe, objective, guard_fn, data=guard_data)
    train = objective(sched)
    cost = {"model_calls": objective.model_calls, "seconds": round(objective.seconds, 3),
            "evaluations": objective.evaluations}
    what = "mean L2 at sigma=0 vs tight PF-ODE" + ("" if features is None else " (features)")
    extra: dict[str, Any] = dict(method=method, nfe=nfe, seed=seed, objective=what,
                                 objective_train=train, budget={**m.budget_defaults(), **budget}, search_cost=cost)
    if held_out is not None:
        extra["objective_held_out"] = objective.held_out(sched)
    if "guard" in sched.provenance:
        extra["guard"] = sched.provenance["guard"]
    found = {k: v for k, v in sched.provenance.items() if k not in ("nfe", "guard")}
    sched.provenance = model_provenance(denoiser, model=model_id or model_fingerprint(denoiser, noise),
                                        found=found, **extra)
    return sched


def _progress_bar(objective: Objective, desc: str) -> Any:
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit="eval")
    best = [float("inf")]

    def tick(value: float) -> None:
        best[0] = min(best[0], value)
        bar.update(1)
        bar.set_postfix(best=f"{best[0]:.3e}", calls=objective.model_calls, refresh=False)

    objective.on_evaluate = tick
    return bar


__all__ = ["DEFAULT_METHOD", "tune"]

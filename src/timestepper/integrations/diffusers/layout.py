"""The list of model evaluations a pipeline iterates over: one entry of ``timesteps`` per model
call. A one-evaluation solver has one entry per step; a multi-evaluation solver (Heun, DPM-2,
PNDM's warm-up) lists every evaluation of a step, in order — diffusers' order-2 protocol, where
Heun's ``timesteps`` are ``t0, t1, t1, t2, t2, ...``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ...diffusion.schedules import NoiseSchedule, VPDiscreteSchedule
from .plans import Plan


@dataclass
class Layout:
    """Attributes:
    step, sub: the solver step of each entry and the evaluation's index within it.
    times: float64 time (our schedule's) of each evaluation.
    timesteps: what the pipeline hands the model at each entry.
    sigmas: ``sigma / alpha`` at each entry and at the end (float32), or ``None``.
    order: the most evaluations in one step (diffusers' ``order``).
    """

    step: list[int]
    sub: list[int]
    times: Tensor
    timesteps: Tensor
    sigmas: Tensor | None
    order: int


def single(plan: Plan) -> Layout:
    """One entry per step (the plan as it is)."""
    n = len(plan.timesteps)
    return Layout(list(range(n)), [0] * n, plan.start.clone(), plan.timesteps, plan.sigmas, 1)


def expanded(plan: Plan, per_step: list[list[float]], schedule: NoiseSchedule,
             num_train_timesteps: int) -> Layout:
    """Every evaluation of every step; an evaluation at a step's start gets that step's
    timestep, one elsewhere gets its own model time."""
    if all(len(times) == 1 for times in per_step):
        return single(plan)
    step = [i for i, times in enumerate(per_step) for _ in times]
    sub = [j for times in per_step for j in range(len(times))]
    times = torch.tensor([t for ts in per_step for t in ts], dtype=torch.float64)
    starts = plan.start.tolist()
    model = [_label(plan, schedule, t, i, j, starts, num_train_timesteps)
             for t, i, j in zip(times.tolist(), step, sub)]
    stamps = torch.tensor(model, dtype=torch.float64)
    integral = plan.timesteps.dtype == torch.int64 and bool((stamps == stamps.round()).all())
    floating = plan.timesteps.dtype if plan.timesteps.is_floating_point() else torch.float32
    exposed = stamps.to(torch.int64) if integral else stamps.to(floating)
    sigmas = None
    if plan.sigmas is not None:
        a, s = schedule.alpha_sigma(times)
        level = times if plan.space == "flow" else s / a  # a flow's sigma is its time
        sigmas = torch.cat([level.to(torch.float32), plan.sigmas[-1:]])
    return Layout(step, sub, times, exposed, sigmas, max(len(t) for t in per_step))


def _label(plan: Plan, schedule: NoiseSchedule, t: float, i: int, j: int,  # noqa: PLR0913 - one evaluation's context
           starts: list[float], num_train_timesteps: int) -> float:
    """The model timestep of evaluation ``j`` of step ``i`` at time ``t``: the class's own
    midpoint label (``plan.mid_timesteps``), the timestep of a grid point at ``t``, or
    :func:`_own_label`."""
    if j == 1 and plan.mid_timesteps is not None:
        return float(plan.mid_timesteps[i])
    if t in starts:
        return float(plan.timesteps[starts.index(t)])
    return _own_label(plan, schedule, t, num_train_timesteps)


def _own_label(plan: Plan, schedule: NoiseSchedule, t: float, num_train_timesteps: int) -> float:
    """The model timestep of an evaluation at time ``t`` between grid points: the class's rule
    of its noise level (``plan.label_of_sigma``), else our schedule's time (``1000 t`` for
    continuous schedules)."""
    if plan.label_of_sigma is not None:
        a, s = schedule.alpha_sigma(torch.tensor([t], dtype=torch.float64))
        level = np.asarray((s / a).to(torch.float32).numpy(), dtype=np.float64)
        return float(plan.label_of_sigma(level)[0])
    return t if isinstance(schedule, VPDiscreteSchedule) else t * num_train_timesteps

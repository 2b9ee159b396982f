"""The search space of a solver schedule for ``nfe`` model calls (USF, Liu et al. 2023).

A candidate holds the ``nfe`` model-evaluation times and one :class:`StepSpec` per step. The first
time is the schedule's ``t_max`` (where the noise is defined) and the last step goes to
``sigma = 0``; the other ``nfe - 1`` times are free. They are coded as ``u`` in ``(0, 1]``, the
position in log-SNR between ``t_max`` (``u = 0``) and ``t_min`` (``u = 1``), strictly
increasing. Where the log-SNR is infinite at an end of the range (a rectified flow reaching pure
noise and the data, :func:`~timestepper.diffusion.grids.default_spacing` ``"uniform"``) the
position is taken in ``r = sigma / (alpha + sigma)`` instead (the time itself for the linear
flow), which is finite over the whole range; ``u = 1`` is then ``r = r(t_max) / 1000`` where
``t_min`` is the data time, so the last model time stays short of ``sigma = 0``. A step's
order is capped by the history (step ``i`` has ``i + 1`` predictions), the
step to zero noise is first order and the last step has no corrector (it has no next model call
to reuse): :meth:`Space.repair` enforces these rules on every candidate the operators make.

The operators are those of an evolutionary search (AutoDiffusion, Li et al. 2023): random
candidates, per-gene mutation, uniform crossover; :meth:`Space.encode` is the feature vector
S^3's predictor reads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from random import Random

import torch

from ..diffusion.grids import default_spacing
from ..diffusion.schedules import NoiseSchedule
from ..solvers.schedule import SolverSchedule, StepSpec

ORDERS = (1, 2, 3)
PREDICTIONS = ("data", "noise")
VARIANTS = ("midpoint", "taylor", "bh1", "bh2")
F64 = torch.float64


def noise_fraction(schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
    """``r = sigma / (alpha + sigma)`` at ``t``: 1 at pure noise, 0 at the data, finite over a
    flow's whole range (its log-SNR is ``log((1 - r) / r)``)."""
    a, s = schedule.alpha(t), schedule.sigma(t)
    return s / (a + s)


@dataclass(frozen=True)
class Candidate:
    """``u``: the ``nfe - 1`` free times (log-SNR positions, increasing); ``steps``: ``nfe`` specs."""

    u: tuple[float, ...]
    steps: tuple[StepSpec, ...]


def fit_steps(steps: tuple[StepSpec, ...] | list[StepSpec]) -> tuple[StepSpec, ...]:
    """``steps`` made valid for their count: orders capped by the history, the last step first
    order and without corrector."""
    out = []
    for i, s in enumerate(steps):
        last = i == len(steps) - 1
        out.append(replace(s, order=1 if last else min(s.order, i + 1), corrector=s.corrector and not last))
    return tuple(out)


class Space:
    """Candidates of ``nfe`` steps for ``schedule``.

    Args:
        schedule: the model's noise schedule.
        nfe: model calls per sample (>= 2).
        step_choice: search the per-step solver choice too (``False``: times only, every step
            keeps the spec of the candidate it came from).
        default_step: the step of a candidate made from a schedule without per-step specs.
    """

    def __init__(self, schedule: NoiseSchedule, nfe: int, step_choice: bool = True,
                 default_step: StepSpec | None = None) -> None:
        if nfe < 2:
            raise ValueError(f"a searched schedule needs nfe >= 2, got {nfe}")
        self.schedule, self.nfe, self.step_choice = schedule, nfe, step_choice
        self.default_step = default_step or StepSpec(order=2, prediction="data", corrector=True, variant="bh2")
        self.in_log_snr = default_spacing(schedule) == "logsnr"
        # the positions of t_max (u = 0) and t_min (u = 1): log-SNR, or r where that is infinite
        position = schedule.log_snr if self.in_log_snr else (lambda t: noise_fraction(schedule, t))
        self.pos_hi = float(position(torch.tensor(schedule.t_max, dtype=F64)))
        self.pos_lo = float(position(torch.tensor(schedule.t_min, dtype=F64)))
        if not self.in_log_snr:
            self.pos_lo = max(self.pos_lo, 1e-3 * self.pos_hi)

    # -- times <-> u -----------------------------------------------------------------------------
    def times(self, c: Candidate) -> tuple[float, ...]:
        pos = torch.tensor([self.pos_hi + x * (self.pos_lo - self.pos_hi) for x in c.u], dtype=F64)
        lam = pos if self.in_log_snr else torch.log1p(-pos) - torch.log(pos)
        t = self.schedule.t_from_log_snr(lam).tolist() if len(c.u) else []
        return (float(self.schedule.t_max), *t, float(self.schedule.t_data))

    def u_of_times(self, times: tuple[float, ...] | list[float]) -> tuple[float, ...]:
        """``u`` of model-evaluation times ``times[1 : nfe]`` (``times[0]`` is ``t_max``)."""
        t = torch.tensor(list(times[1:self.nfe]), dtype=F64)
        pos = self.schedule.log_snr(t) if self.in_log_snr else noise_fraction(self.schedule, t)
        return tuple(float(x) for x in ((pos - self.pos_hi) / (self.pos_lo - self.pos_hi)).clamp(1e-6, 1.0))

    def to_schedule(self, c: Candidate) -> SolverSchedule:
        return SolverSchedule(times=self.times(c), steps=c.steps)

    def from_schedule(self, sched: SolverSchedule) -> Candidate:
        """The candidate with ``sched``'s times; its specs when it has per-step ones (else the
        default step)."""
        steps = tuple(sched.steps) if sched.steps else (self.default_step,) * self.nfe
        return self.repair(Candidate(self.u_of_times(list(sched.times)), steps))

    # -- rules -----------------------------------------------------------------------------------
    def repair(self, c: Candidate) -> Candidate:
        """Sort and separate the times, cap orders by the history, first order to zero noise, no
        corrector on the last step."""
        u = sorted(min(max(x, 1e-6), 1.0) for x in c.u)
        for i in range(1, len(u)):  # strictly increasing
            u[i] = max(u[i], u[i - 1] + 1e-6)
        u = [min(x, 1.0 - 1e-6 * (len(u) - 1 - i)) for i, x in enumerate(u)]
        return Candidate(tuple(u), fit_steps(c.steps))

    # -- operators -------------------------------------------------------------------------------
    def random_step(self, rng: Random) -> StepSpec:
        return StepSpec(order=rng.choice(ORDERS), prediction=rng.choice(PREDICTIONS),
                        corrector=rng.random() < 0.5, variant=rng.choice(VARIANTS))

    def random(self, rng: Random, template: Candidate | None = None, prob: float = 0.2) -> Candidate:
        """A random candidate: times uniform in log-SNR; specs uniform, or (with ``template``) the
        template's specs, each step mutated with probability ``prob``."""
        u = tuple(rng.random() for _ in range(self.nfe - 1))
        if template is None:
            steps = tuple(self.random_step(rng) for _ in range(self.nfe))
        else:
            steps = tuple(self._mutate_step(s, rng, prob) for s in template.steps)
        return self.repair(Candidate(u, steps))

    def mutate(self, c: Candidate, rng: Random, prob: float) -> Candidate:
        """Each gene mutates with probability ``prob``: a time is redrawn uniformly between its
        neighbours (so the order is kept), a step gets one field redrawn."""
        u = list(c.u)
        for i in range(len(u)):
            if rng.random() < prob:
                lo = u[i - 1] if i > 0 else 0.0
                hi = u[i + 1] if i + 1 < len(u) else 1.0
                u[i] = lo + (hi - lo) * rng.random()
        steps = [self._mutate_step(s, rng, prob) for s in c.steps]
        return self.repair(Candidate(tuple(u), tuple(steps)))

    def _mutate_step(self, s: StepSpec, rng: Random, prob: float) -> StepSpec:
        """With probability ``prob``, one field of the step (order, prediction, corrector or
        variant) redrawn."""
        if not self.step_choice or rng.random() >= prob:
            return s
        fresh = self.random_step(rng)
        name = rng.choice(("order", "prediction", "corrector", "variant"))
        return replace(s, **{name: getattr(fresh, name)})

    def crossover(self, a: Candidate, b: Candidate, rng: Random) -> Candidate:
        """Uniform crossover: each time and each step from either parent."""
        u = tuple(x if rng.random() < 0.5 else y for x, y in zip(a.u, b.u))
        steps = tuple(x if rng.random() < 0.5 else y for x, y in zip(a.steps, b.steps))
        return self.repair(Candidate(u, steps))

    def encode(self, c: Candidate) -> list[float]:
        """Features for a quality predictor: the times, then per step the order, prediction,
        corrector and a one-hot variant."""
        out = list(c.u)
        for s in c.steps:
            out += [s.order / 3.0, float(s.prediction == "data"), float(s.corrector)]
            out += [float(s.variant == v) for v in VARIANTS]
        return out


__all__ = ["Candidate", "Space", "fit_steps", "noise_fraction"]

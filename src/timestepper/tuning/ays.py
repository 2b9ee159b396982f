"""Align Your Steps: noise levels that minimise the KL-divergence upper bound of the discretised
sampler (Sabour, Fidler & Kreis 2024, "Align Your Steps: Optimizing Sampling Schedules in
Diffusion Models", ICML 2024, Sec. 3).

In the EDM parameterisation (``s = sigma / alpha``, ``y = x0 + s eps``, denoiser ``D(y, s)``) the
paper bounds the KL divergence between the true reverse SDE and its discretisation on the noise
levels ``s_0 > s_1 > ... > s_n`` by a sum over intervals (their Theorem 3.1, the KLUB):

``KLUB_i = E ∫_{s_{i+1}}^{s_i} s^-3 || D(y_s, s) - D(y_{s_i}, s_i) ||^2 ds``,

the expectation over data ``x0`` and the forward diffusion path ``y_s = x0 + W(s^2)``. Each
interior level is moved to minimise the two intervals it bounds, one at a time (coordinate
descent, here by golden-section search in ``log s``), and the schedule is refined by *iterative
subdivision*: optimise a coarse schedule, insert log-midpoints, optimise again.

How this implementation follows it and where it differs:

* the data are samples of the model itself (the tight PF-ODE solutions of the training noise the
  objective already holds), since no data set may be downloaded;
* the path is sampled exactly (``y_{s_i} = x0 + s_i eps`` and ``y_s`` from the Brownian bridge
  between ``x0`` and it), with fixed random numbers so the bound is a deterministic function of
  the levels; the integral is a 3-point Gauss-Legendre rule in ``log s`` per interval (the paper
  uses importance-sampled Monte Carlo);
* the ends are ``s(t_max)`` and the last model time of the best fixed grid (last step to
  ``sigma = 0``; the paper keeps the model's ``sigma_min`` and evaluates there); subdivision
  inserts midpoints in the intervals of largest KLUB until ``nfe`` levels are reached (the paper
  doubles from 10 steps), and the final stage starts from the better of that and the best fixed
  grid's levels;
* the ODE solver run over the optimised levels is the best fixed grid's solver (the paper pairs
  its schedules with the samplers of each model family).

The KLUB is ``criterion="klub"``. It is **not** the default: it rates the distribution of a
stochastic sampler, and on the benchmark mixtures its optimal levels take one very large first
step (from ``s = 157`` to ``s ~ 1`` at 5 levels), whose ODE sample lies far from the exact
solution of its own noise (4x the best fixed grid's error on the d = 2 mixture at NFE 5); the method
then falls back to the fixed grid. The default ``criterion="objective"`` keeps the paper's
procedure -- coordinate descent of one level at a time by golden-section search in ``log s``,
iterative subdivision from a coarse schedule -- but scores the whole schedule with the protocol
objective (the pathwise error to the model's exact PF-ODE solution), with the last level free
down to ``s(t_min)``. That is a difference from the paper, named here.

On a rectified flow whose range reaches pure noise and the data (``s`` runs from infinity to 0;
:func:`~timestepper.diffusion.grids.default_spacing` ``"uniform"``) the levels are taken in
``r = sigma / (alpha + sigma) = s / (1 + s)`` instead, finite over the whole range: the golden
sections, midpoints and coarse spacing are linear in ``r`` (:data:`LINEAR`) where they are in
``log s`` otherwise (:data:`LOG`). The KLUB, an integral in ``s`` up to the first level, needs a
finite ``s(t_max)`` and is refused there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import default_spacing
from ..diffusion.predictions import convert
from ..solvers.schedule import SolverSchedule
from .fixed import best_fixed, better_or_start
from .methods import check_budget, register_method
from .objective import Objective
from .space import noise_fraction

F64 = torch.float64
GOLDEN = (math.sqrt(5) - 1) / 2


class KLUB:
    """The KL-divergence upper bound of intervals of noise levels on samples ``x0`` of the model."""

    def __init__(self, denoiser: Denoiser, x0: Tensor, seed: int, nodes: int = 3) -> None:
        self.den, self.x0 = denoiser, x0.to(F64)
        g = torch.Generator().manual_seed(seed)
        self.eps = torch.randn(x0.shape, generator=g, dtype=F64)
        self.bridge = torch.randn((nodes, *x0.shape), generator=g, dtype=F64)
        z, w = np.polynomial.legendre.leggauss(nodes)
        self.z, self.w = z.tolist(), w.tolist()

    def denoise(self, y: Tensor, s: float) -> Tensor:
        """``D(y, s)``: the model's data prediction at the scaled state ``y``, noise level ``s``."""
        sch = self.den.schedule
        t = sch.t_from_log_snr(torch.tensor(-math.log(s), dtype=F64))
        a = float(sch.alpha(t))
        x = (a * y).to(self.x0.dtype)
        tb = t.reshape(1).expand(x.shape[0])
        with torch.no_grad():
            out = self.den(x, tb)
        return convert(out, x, tb.reshape(-1, *([1] * (x.ndim - 1))), sch, self.den.prediction, "sample").to(F64)

    def interval(self, lo: float, hi: float, d_hi: Tensor | None = None) -> float:
        """``KLUB`` of the interval ``(lo, hi)``, the step starting at ``hi``."""
        y_hi = self.x0 + hi * self.eps
        d_hi = self.denoise(y_hi, hi) if d_hi is None else d_hi
        a, b = math.log(lo), math.log(hi)
        total = 0.0
        for k, (z, w) in enumerate(zip(self.z, self.w)):
            s = math.exp(0.5 * (a + b) + 0.5 * (b - a) * z)
            r = (s / hi) ** 2  # Brownian bridge from x0 (variance 0) to y_hi (variance hi^2)
            y = self.x0 + r * (y_hi - self.x0) + math.sqrt(s * s * (1 - r)) * self.bridge[k]
            diff = (self.denoise(y, s) - d_hi).reshape(y.shape[0], -1)
            total += 0.5 * (b - a) * w * float((diff * diff).sum(1).mean()) / (s * s)
        return total

    def pair(self, levels: list[float], i: int, s: float) -> float:
        """The two intervals ``levels[i]`` bounds, with ``levels[i] = s``."""
        return self.interval(levels[i + 1], s) + self.interval(s, levels[i - 1])


@dataclass(frozen=True)
class LevelScale:
    """The variable the levels are searched in: ``to`` / ``back`` map a level to it and back,
    ``mid`` is the midpoint of two levels, ``spaced`` ``n`` levels evenly spaced from ``a`` to
    ``b``, ``width`` the length of an interval."""

    to: Callable[[float], float]
    back: Callable[[float], float]
    mid: Callable[[float, float], float]
    spaced: Callable[[float, float, int], list[float]]
    width: Callable[[float, float], float]


LOG = LevelScale(math.log, math.exp, lambda a, b: math.sqrt(a * b),
                 lambda a, b, n: np.exp(np.linspace(math.log(a), math.log(b), n)).tolist(),
                 lambda lo, hi: math.log(hi / lo))
"""Levels ``s = sigma / alpha`` searched in ``log s`` (the paper's)."""
LINEAR = LevelScale(float, float, lambda a, b: 0.5 * (a + b),
                    lambda a, b, n: np.linspace(a, b, n).tolist(), lambda lo, hi: hi - lo)
"""Levels ``r = sigma / (alpha + sigma)`` searched in ``r`` (a flow reaching pure noise and data)."""


def optimise_levels(cost: Callable[[list[float], int], float], levels: list[float], sweeps: int,  # noqa: PLR0913 - the refinement's knobs
                    iters: int, floor: float | None = None, scale: LevelScale = LOG) -> list[float]:
    """Coordinate descent: each level after the first, by golden-section search in ``log s``
    (in ``scale``) between its neighbours (the last between its neighbour and ``floor``; kept
    when ``floor`` is ``None``), ``sweeps`` times over the schedule; ``cost(levels, i)`` scores
    moving level ``i``."""
    levels = list(levels)
    last = len(levels) if floor is not None else len(levels) - 1
    for _ in range(sweeps):
        for i in range(1, last):
            lo = scale.to(levels[i + 1] if i + 1 < len(levels) else floor)  # type: ignore[arg-type]
            hi = scale.to(levels[i - 1])
            pad = 1e-3 * (hi - lo)

            def moved(v: float, i: int = i) -> float:
                return cost([*levels[:i], scale.back(v), *levels[i + 1:]], i)

            best = _golden(moved, lo + pad, hi - pad, iters)
            if moved(best) < cost(levels, i):
                levels[i] = scale.back(best)
    return levels


def _golden(f, a: float, b: float, iters: int) -> float:
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = f(d)
    return c if fc < fd else d


def subdivide(split: Callable[[float, float], float], levels: list[float], count: int,
              scale: LevelScale = LOG) -> list[float]:
    """Insert log-midpoints (``scale``'s) into the intervals of largest ``split(lo, hi)`` (the
    KLUB, or the width) until ``count`` levels."""
    levels = list(levels)
    while len(levels) < count:
        bounds = [split(levels[i + 1], levels[i]) for i in range(len(levels) - 1)]
        order = sorted(range(len(bounds)), key=lambda i: -bounds[i])[: count - len(levels)]
        for i in sorted(order, reverse=True):
            levels.insert(i + 1, scale.mid(levels[i], levels[i + 1]))
    return levels


CRITERIA = ("objective", "klub")


def ays(denoiser: Denoiser, nfe: int, noise, objective: Objective, *, criterion: str = "objective",  # noqa: PLR0913 - the method's knobs
        sweeps: int = 2, iters: int = 10, samples: int = 256) -> SolverSchedule:
    """Align-Your-Steps levels (Sabour et al. 2024) for ``nfe`` model calls, run with the best
    fixed-grid solver.

    ``criterion="klub"`` minimises the paper's KL upper bound; ``"objective"`` (default) runs the
    same coordinate descent and iterative subdivision on the protocol objective instead (the
    pathwise error to the model's exact PF-ODE solution), and frees the last level: the KLUB rates
    the distribution of an SDE sampler, and its levels take one huge first step that leaves an ODE
    solver's sample far from the exact solution of its own noise (benchmarks/results/tuning.md).
    Budget: ``sweeps`` of coordinate descent per subdivision stage, ``iters`` golden-section
    iterations per level, ``samples`` model samples in the bound (``klub`` only).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    check_budget(sweeps=(sweeps, 1), iters=(iters, 1), samples=(samples, 2))
    _check_klub(denoiser, criterion)
    start = best_fixed(denoiser, nfe, noise, objective)
    solver = start.provenance["baseline_solver"]
    return align_levels(objective, start, lambda times: SolverSchedule(times, solver=solver),
                        criterion=criterion, sweeps=sweeps, iters=iters, samples=samples)


def _check_klub(denoiser: Denoiser, criterion: str) -> None:
    if criterion == "klub" and default_spacing(denoiser.schedule) != "logsnr":
        raise ValueError("ays: criterion='klub' needs a finite noise level s = sigma/alpha at t_max and a "
                         "finite log-SNR at t_min; this schedule reaches pure noise or the data (a rectified "
                         "flow), use criterion='objective'")


def align_levels(objective: Objective, start: SolverSchedule,  # noqa: PLR0913 - the refinement's knobs
                 make: Callable[[tuple[float, ...]], SolverSchedule], *, criterion: str = "objective",
                 sweeps: int = 2, iters: int = 10, samples: int = 256) -> SolverSchedule:
    """The Align-Your-Steps refinement of the levels of ``start`` for the sampler ``make(times)``
    (a :class:`SolverSchedule` of those times: a registered solver, a fitted solver with its
    statistics, ...): iterative subdivision and coordinate descent by ``criterion``; returns
    ``make`` of the levels found, or ``start`` where that is not better on the training objective.
    ``start`` must run the same sampler as ``make`` on its own times, ending at ``sigma = 0``."""
    sch = objective.denoiser.schedule
    steps = len(start.times) - 1
    in_log = default_spacing(sch) == "logsnr"
    grid = start.grid(sch)
    if in_log:
        s, scale = (grid.sigma / grid.alpha).tolist(), LOG
        s_min = float(sch.sigma(sch.t_min) / sch.alpha(sch.t_min))
    else:
        s, scale = (grid.sigma / (grid.alpha + grid.sigma)).tolist(), LINEAR
        s_min = float(noise_fraction(sch, torch.tensor(sch.t_min, dtype=F64)))

    def schedule_of(levels: list[float]) -> SolverSchedule:
        lv = torch.tensor(levels[1:], dtype=F64)
        t = sch.t_from_log_snr(-torch.log(lv) if in_log else torch.log1p(-lv) - torch.log(lv)).tolist()
        return make((float(sch.t_max), *t, float(sch.t_data)))

    if criterion == "klub":
        x0 = objective.reference[:samples] / float(grid.alpha[-1])
        crit = klub_criterion(KLUB(objective.denoiser, x0, seed=objective.seed))
    else:
        crit = objective_criterion(lambda lv: objective(schedule_of(lv)), s_min, scale)
    levels = _refine(crit, s[:steps], sweeps, iters)
    return better_or_start(schedule_of(levels), start, objective)


@dataclass
class Criterion:
    """What the refinement minimises: ``cost(levels, i)`` for moving level ``i``, ``total(levels)``
    to compare schedules, ``split(lo, hi)`` to pick the intervals to subdivide, and the ``floor``
    of the last level (``None``: the last level is fixed)."""

    cost: Callable[[list[float], int], float]
    total: Callable[[list[float]], float]
    split: Callable[[float, float], float]
    floor: float | None
    scale: LevelScale = LOG


def klub_criterion(klub: KLUB) -> Criterion:
    """The paper's: the two intervals a level bounds, subdivide where the KLUB is largest."""
    def total(lv: list[float]) -> float:
        return sum(klub.interval(lv[i + 1], lv[i]) for i in range(len(lv) - 1))

    return Criterion(lambda lv, i: klub.pair(lv, i, lv[i]), total, klub.interval, None)


def objective_criterion(score: Callable[[list[float]], float], floor: float,
                        scale: LevelScale = LOG) -> Criterion:
    """The protocol objective of the whole schedule; subdivide the widest gaps (in ``scale``:
    log-gaps by default); the last level free down to ``floor``."""
    return Criterion(lambda lv, i: score(lv), score, scale.width, floor, scale)


def _refine(crit: Criterion, start: list[float], sweeps: int, iters: int) -> list[float]:
    """Iterative subdivision: optimise a coarse schedule of about half the levels (log-spaced
    between the ends of ``start``), insert midpoints where ``split(lo, hi)`` is largest, and
    optimise the full count from the better (by ``total``) of that and ``start`` (the best fixed
    grid's levels)."""
    nfe = len(start)
    coarse = max(2, (nfe + 1) // 2)
    levels = crit.scale.spaced(start[0], start[-1], coarse)
    if coarse < nfe:
        coarse_best = optimise_levels(crit.cost, levels, sweeps, iters, crit.floor, crit.scale)
        levels = min((subdivide(crit.split, coarse_best, nfe, crit.scale), start), key=crit.total)
    return optimise_levels(crit.cost, levels, sweeps, iters, crit.floor, crit.scale)


register_method("ays", ays, "Align Your Steps (Sabour et al. 2024): noise levels by coordinate descent and "
                "iterative subdivision (on the objective, or the paper's KLUB)")

__all__ = ["KLUB", "LINEAR", "LOG", "LevelScale", "align_levels", "ays", "optimise_levels", "subdivide"]

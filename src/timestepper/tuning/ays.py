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
* the ends are ``s(t_max)`` and the last model time of the log-SNR grid with the last step to
  ``sigma = 0`` (the paper keeps the model's ``sigma_min`` and evaluates there); subdivision
  inserts midpoints in the intervals of largest KLUB until ``nfe`` levels are reached (the paper
  doubles from 10 steps);
* the ODE solver run over the optimised levels is the fixed-grid solver with the best training
  objective (the paper pairs its schedules with the samplers of each model family).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import make_grid
from ..diffusion.predictions import convert
from ..solvers.schedule import SolverSchedule
from .fixed import fixed_solvers
from .methods import check_budget, register_method
from .objective import Objective

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


def optimise_levels(klub: KLUB, levels: list[float], sweeps: int, iters: int) -> list[float]:
    """Coordinate descent: each interior level by golden-section search in ``log s`` between its
    neighbours, ``sweeps`` times over the schedule."""
    levels = list(levels)
    for _ in range(sweeps):
        for i in range(1, len(levels) - 1):
            lo, hi = math.log(levels[i + 1]), math.log(levels[i - 1])
            pad = 1e-3 * (hi - lo)
            best = _golden(lambda v, i=i: klub.pair(levels, i, math.exp(v)), lo + pad, hi - pad, iters)
            if klub.pair(levels, i, math.exp(best)) < klub.pair(levels, i, levels[i]):
                levels[i] = math.exp(best)
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


def subdivide(klub: KLUB, levels: list[float], count: int) -> list[float]:
    """Insert log-midpoints into the intervals of largest KLUB until ``count`` levels."""
    levels = list(levels)
    while len(levels) < count:
        bounds = [klub.interval(levels[i + 1], levels[i]) for i in range(len(levels) - 1)]
        order = sorted(range(len(bounds)), key=lambda i: -bounds[i])[: count - len(levels)]
        for i in sorted(order, reverse=True):
            levels.insert(i + 1, math.sqrt(levels[i] * levels[i + 1]))
    return levels


def ays(denoiser: Denoiser, nfe: int, noise, objective: Objective, *, sweeps: int = 2, iters: int = 10,
        samples: int = 256) -> SolverSchedule:
    """Align-Your-Steps levels (Sabour et al. 2024) for ``nfe`` model calls, then the best
    fixed-grid solver over them.

    Budget: ``sweeps`` of coordinate descent per subdivision stage, ``iters`` golden-section
    iterations per level, ``samples`` model samples (the first of the objective's references) in
    the bound. Model calls: about ``sweeps * iters * 7 * nfe`` per stage plus one objective per
    solver tried.
    """
    check_budget(sweeps=(sweeps, 1), iters=(iters, 1), samples=(samples, 2))
    sch = denoiser.schedule
    grid = make_grid(sch, nfe, "logsnr", final="zero")
    s = (grid.sigma / grid.alpha).tolist()
    s_max, s_last = s[0], s[nfe - 1]
    x0 = objective.reference[:samples] / float(grid.alpha[-1])
    klub = KLUB(objective.denoiser, x0, seed=objective.seed)
    coarse = max(2, (nfe + 1) // 2)
    levels = np.exp(np.linspace(math.log(s_max), math.log(s_last), coarse)).tolist()
    levels = optimise_levels(klub, levels, sweeps, iters)
    if coarse < nfe:
        levels = optimise_levels(klub, subdivide(klub, levels, nfe), sweeps, iters)
    t = sch.t_from_log_snr(-torch.log(torch.tensor(levels[1:], dtype=F64))).tolist()
    times = (float(sch.t_max), *t, float(sch.t_data))
    cands = [SolverSchedule(times, solver=name) for name in fixed_solvers(denoiser, nfe)]
    return min(cands, key=objective)


register_method("ays", ays, "Align Your Steps (Sabour et al. 2024): KLUB-optimal noise levels, best solver over them")

__all__ = ["KLUB", "ays", "optimise_levels", "subdivide"]

"""Tuned schedules on the benchmark mixtures: the rows of ``timestepper bench gmm --tuned`` and of
``benchmarks/tuning.py``.

Each problem is an exact Gaussian mixture under the linear-beta discrete VP schedule with the
exact ``epsilon`` denoiser; the reference of a noise is the mixture's float64 Dormand-Prince
solution of the PF-ODE from it (:meth:`GaussianMixture.reference_solution`). A method tunes on
the training noise and is reported on held-out noise of the same size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ..bench.gmm import GaussianMixture
from ..diffusion.denoiser import Denoiser
from ..diffusion.schedules import VPDiscreteSchedule
from ..solvers.schedule import SolverSchedule
from .tune import tune

F64 = torch.float64


@dataclass
class MixtureProblem:
    """A mixture, its exact denoiser, training and held-out noise and the exact reference."""

    name: str
    gmm: GaussianMixture
    denoiser: Denoiser
    noise: Tensor
    held_out: Tensor
    reference: Callable[[Tensor], Tensor]


def mixture_problem(name: str, gmm: GaussianMixture, n_samples: int = 256, seed: int = 0) -> MixtureProblem:
    """The tuning problem of ``gmm`` (``n_samples`` training and as many held-out noises)."""
    sch = VPDiscreteSchedule.from_betas("linear")
    g = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn(n_samples, gmm.dim, generator=g, dtype=F64)
    held = torch.randn(n_samples, gmm.dim, generator=g, dtype=F64)
    a0, s0 = float(sch.alpha(sch.t_max)), float(sch.sigma(sch.t_max))

    def reference(n: Tensor) -> Tensor:
        return gmm.reference_solution(n / a0, s0 / a0, 0.0, rtol=1e-9, atol=1e-9)

    return MixtureProblem(name, gmm, gmm.denoiser(sch, "epsilon"), noise, held, reference)


def bench_mixtures(dims: tuple[int, ...] = (2, 64), full_dim: int | None = 8,
                   seed: int = 0) -> dict[str, GaussianMixture]:
    """The bench mixtures (8 components, diagonal) and one full-covariance mixture."""
    out = {f"d={d}": GaussianMixture.random(d, 8, seed=seed) for d in dims}
    if full_dim:
        out[f"d={full_dim} full"] = GaussianMixture.random(full_dim, 8, seed=seed, full=True)
    return out


@dataclass
class TunedRow:
    problem: str
    nfe: int
    method: str
    train: float
    held_out: float
    model_calls: int
    seconds: float
    config: str


def describe(sched: SolverSchedule) -> str:
    """A short label: the baseline's solver and grid, or the method's own solver."""
    found = sched.provenance.get("found", {})
    if "baseline_solver" in found:
        return f"{found['baseline_solver']} / {found.get('grid')}"
    return sched.solver or "usf per-step"


def tuned_row(problem: MixtureProblem, nfe: int, method: str, seed: int = 0,
              **budget: Any) -> tuple[TunedRow, SolverSchedule]:
    """Tune ``method`` on the problem's training noise; the row with held-out error and cost."""
    t0 = time.perf_counter()
    sched = tune(problem.denoiser, nfe, method, noise=problem.noise, reference=problem.reference,
                 held_out=problem.held_out, seed=seed, **budget)
    p = sched.provenance
    cost = p["search_cost"]
    row = TunedRow(problem.name, nfe, method, p["objective_train"], p["objective_held_out"], cost["model_calls"],
                   round(time.perf_counter() - t0, 2), describe(sched))
    return row, sched


def tuned_rows(problems: list[MixtureProblem], nfes: tuple[int, ...], methods: tuple[str, ...],
               budgets: dict[str, dict[str, Any]] | None = None, progress: bool = False) -> list[dict]:
    """Every ``(problem, nfe, method)`` row as a dict."""
    jobs = [(p, n, m) for p in problems for n in nfes for m in methods]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="tune", unit="search")
    rows = []
    for p, n, m in jobs:
        rows.append(asdict(tuned_row(p, n, m, **(budgets or {}).get(m, {}))[0]))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return rows


def format_tuned(rows: list[dict], problem: str) -> str:
    """Plain table: one line per method, ``held-out error (model calls)`` per NFE."""
    sel = [r for r in rows if r["problem"] == problem]
    nfes = list(dict.fromkeys(r["nfe"] for r in sel))
    by = {(r["method"], r["nfe"]): r for r in sel}
    head = ["method"] + [f"NFE {n}" for n in nfes]
    lines = [[m] + [_cell(by.get((m, n))) for n in nfes] for m in dict.fromkeys(r["method"] for r in sel)]
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    fmt = "  ".join("{:<" + str(w) + "}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*x) for x in lines])


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    e = r["held_out"]
    return (f"{e:.3e}" if math.isfinite(e) else "inf") + f" ({r['model_calls']} calls)"


__all__ = ["MixtureProblem", "TunedRow", "bench_mixtures", "format_tuned", "mixture_problem", "tuned_row",
           "tuned_rows"]

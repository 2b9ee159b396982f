"""Empirical model statistics (EMS) of DPM-Solver-v3, computed from the model ("ems" method).

Zheng, Lu, Chen & Zhu (NeurIPS 2023, "DPM-Solver-v3", Section 3.1, eq. 6-7) choose, at every
log-SNR ``lambda = log(alpha / sigma)`` and per dimension,

* ``l = argmin E || d(sigma eps - l x)/dx ||_F^2 = E[diag(sigma d eps / dx)]``,
* ``(s, b) = argmin E || f' - s f - b ||^2`` with ``f = (sigma eps - l x) / alpha`` and ``f'`` its
  derivative along the probability-flow trajectory (per-dimension least squares),

where the expectations are over the model's own trajectories ``x_lambda``. :func:`compute_ems`
estimates them the way the paper does, on a few hundred to a thousand samples:

1. trajectories: ``n_samples`` noises solved by ``dpmpp-3m`` through ``n_points`` log-SNR points
   uniform on the schedule's range (the states at those points are kept);
2. ``l``: at every state, one Jacobian-vector product of ``eps`` with a Rademacher vector ``v``
   (``E_v[v * J v] = diag(J)``); ``v`` is fixed along each trajectory, so the estimate is smooth
   in ``lambda``. ``J v`` by central differences (default: any model) or a forward-mode
   Jacobian-vector product (``jacobian="jvp"``);
3. ``f'``: differentiating ``f`` along each trajectory (second-order finite differences on the
   ``lambda`` points); the regression is accumulated as sums over samples, so memory does not grow
   with ``n_samples``.

The statistics are saved with the model's fingerprint (:class:`~timestepper.solvers.dpm_v3.EMS`
``save``/``load``) and refused for another model unless forced. The ``"ems"`` tuning method
computes them and returns a :class:`~timestepper.solvers.schedule.SolverSchedule` that runs
``"dpm-solver-v3"`` with them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core.validation import check_choice, check_int
from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import SamplingGrid
from ..diffusion.term import DiffusionTerm, EvalPoint
from ..sampling.sample import sample
from ..solvers.dpm_v3 import EMS, model_fingerprint

F64 = torch.float64
LAMBDA_FLOOR, LAMBDA_CEIL = -10.0, 10.0  # the range's ends where the schedule's are infinite (flows)
SUMS = ("u", "w", "du", "dw", "uu", "ww", "uw", "udu", "udw", "wdu", "wdw")


def ems_points(denoiser: Denoiser, n_points: int, lam_range: tuple[float, float] | None = None) -> Tensor:
    """The ``n_points`` log-SNR points, uniform on ``lam_range`` (default: the schedule's
    ``[t_max, t_min]`` range; an infinite end, as a flow's ``alpha = 0`` at ``t_max`` or
    ``sigma = 0`` at ``t_min``, is clipped to ``LAMBDA_FLOOR`` / ``LAMBDA_CEIL``)."""
    sch = denoiser.schedule
    if lam_range is None:
        ends = sch.log_snr(torch.tensor([sch.t_max, sch.t_min], dtype=F64)).tolist()
        lam_range = (max(ends[0], LAMBDA_FLOOR), min(ends[1], LAMBDA_CEIL))
    lo, hi = (float(v) for v in lam_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"lam_range must be two finite log-SNR values, low < high; got {lam_range}")
    return torch.linspace(lo, hi, check_int(n_points, "n_points", 3), dtype=F64)


def _trajectory_grid(denoiser: Denoiser, lam: Tensor) -> tuple[SamplingGrid, int]:
    """The grid through the points (preceded by ``t_max`` when the points start above it) and the
    index of the first point."""
    sch = denoiser.schedule
    t = sch.t_from_log_snr(lam).to(F64).clamp(min(sch.t_min, sch.t_max), max(sch.t_min, sch.t_max))
    lam_max = float(sch.log_snr(torch.tensor([sch.t_max], dtype=F64))[0])
    first = 0
    if float(lam[0]) > lam_max + 1e-9:
        t, first = torch.cat([torch.tensor([sch.t_max], dtype=F64), t]), 1
    return SamplingGrid.from_times(sch, t), first


JACOBIANS = ("difference", "jvp")


def _jacobian_probe(term: DiffusionTerm, x: Tensor, point: EvalPoint, v: Tensor,
                    jacobian: str) -> tuple[Tensor, Tensor]:
    """``(eps, J v)`` at ``x`` (``J = d eps / dx``): central differences (two extra model calls,
    step ``1e-4`` (float64) or ``3e-3`` (lower precision) times the state's RMS), or a forward-mode
    Jacobian-vector product (``"jvp"``: exact, for models forward-mode autodiff can differentiate;
    on CPU it costs far more than two calls)."""
    def eps(y: Tensor) -> Tensor:
        return term.noise_prediction(y, point)

    if jacobian == "jvp":
        return torch.func.jvp(eps, (x,), (v,))
    rel = 1e-4 if x.dtype == F64 else 3e-3
    delta = rel * float(x.detach().to(F64).pow(2).mean().sqrt().clamp_min(1e-3))
    return eps(x), (eps(x + delta * v) - eps(x - delta * v)) / (2 * delta)


def _batch_sums(term: DiffusionTerm, grid: SamplingGrid, first: int, states: Tensor,
                generator: torch.Generator | None, jacobian: str) -> tuple[dict[str, Tensor], Tensor, int]:
    """Sums over the batch of the products the regression needs, per point, and of ``v * sigma J v``."""
    points = term.points(grid, states[0])[first:]
    xs = states[first:].to(F64)
    al, si = grid.alpha[first:], grid.sigma[first:]
    v = (torch.randint(0, 2, xs.shape[1:], generator=generator, dtype=F64) * 2 - 1).to(xs.device)
    us, diag = [], []
    with torch.no_grad():
        for k, p in enumerate(points):
            e, jv = _jacobian_probe(term, states[first + k], p, v.to(states.dtype), jacobian)
            us.append(float(si[k]) / float(al[k]) * e.to(F64))
            diag.append((v * float(si[k]) * jv.to(F64)).sum(0))
    lam = grid.log_snr[first:].to(xs.device)
    u = torch.stack(us).flatten(2)
    w = xs.flatten(2) / al.to(xs.device)[:, None, None]
    du = torch.gradient(u, spacing=(lam,), dim=0, edge_order=2)[0]
    dw = torch.gradient(w, spacing=(lam,), dim=0, edge_order=2)[0]
    prods = {"u": u, "w": w, "du": du, "dw": dw, "uu": u * u, "ww": w * w, "uw": u * w, "udu": u * du,
             "udw": u * dw, "wdu": w * du, "wdw": w * dw}
    calls = (2 if jacobian == "jvp" else 3) * len(points)
    return {k: prods[k].sum(1) for k in SUMS}, torch.stack(diag).flatten(1), calls


def _fit(sums: dict[str, Tensor], diag: Tensor, n: int, lam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``l, s, b`` from the accumulated sums (``f = u - l w``, ``f' = u' - l' w - l w'``)."""
    m = {k: v / n for k, v in sums.items()}
    l_ = diag / n
    dl = torch.gradient(l_, spacing=(lam.to(l_.device),), dim=0, edge_order=2)[0]
    ef = m["u"] - l_ * m["w"]
    edf = m["du"] - dl * m["w"] - l_ * m["dw"]
    eff = m["uu"] - 2 * l_ * m["uw"] + l_ * l_ * m["ww"]
    efdf = (m["udu"] - dl * m["uw"] - l_ * m["udw"] - l_ * m["wdu"] + l_ * dl * m["ww"] + l_ * l_ * m["wdw"])
    var = eff - ef * ef
    cov = efdf - ef * edf
    # var is a difference of second moments of u and w: below ~1e-9 of their size it is rounding
    # (a dimension on which f is the same on every trajectory, e.g. a Gaussian's); s = 0 there
    tiny = 1e-9 * (m["uu"] + l_ * l_ * m["ww"]).clamp_min(1e-300)
    s = torch.where(var > tiny, cov / var.clamp_min(1e-300), torch.zeros_like(var))
    return l_, s, edf - s * ef


def compute_ems(  # noqa: PLR0913 - the estimation's options, all but the model with defaults
    denoiser: Denoiser,
    like: Tensor | tuple[int, ...] | torch.Size,
    n_samples: int = 1024,
    n_points: int = 128,
    generator: torch.Generator | int | None = None,
    lam_range: tuple[float, float] | None = None,
    batch_size: int = 256,
    jacobian: str = "difference",
) -> EMS:
    """Estimate DPM-Solver-v3's empirical model statistics of ``denoiser`` (module docstring).

    Args:
        denoiser: the model.
        like: the shape of one sample (the statistics have one value per dimension), or a batch of
            samples whose sample shape, dtype and device the trajectories use (default float64, CPU).
        n_samples: trajectories (the paper uses 1024-4096).
        n_points: log-SNR points of the statistics (uniform on ``lam_range``).
        generator: ``torch.Generator`` or seed for the noises and probe vectors.
        lam_range: ``(low, high)`` log-SNR range (default: the schedule's range).
        batch_size: samples per model call.
        jacobian: ``"difference"`` (central differences, any model) or ``"jvp"`` (forward-mode
            autodiff) for the Jacobian diagonal of ``l``.

    Returns:
        the :class:`EMS`, its header holding the model fingerprint, ``n_samples``, ``n_points``,
        the range, ``model_calls`` (batched calls; a JVP counted as two) and ``seconds``.
    """
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a timestepper Denoiser, got {type(denoiser).__name__}")
    n_samples, batch_size = check_int(n_samples, "n_samples", 2), check_int(batch_size, "batch_size", 1)
    check_choice(jacobian, JACOBIANS, "jacobian")
    gen = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
    shape = tuple(like.shape[1:]) if isinstance(like, Tensor) else tuple(int(n) for n in like)
    dtype, device = (like.dtype, like.device) if isinstance(like, Tensor) else (F64, torch.device("cpu"))
    lam = ems_points(denoiser, n_points, lam_range)
    grid, first = _trajectory_grid(denoiser, lam)
    term = DiffusionTerm(denoiser)
    t0, calls = time.perf_counter(), 0
    totals: dict[str, Tensor] = {}
    diag_total = torch.zeros(())
    for start in range(0, n_samples, batch_size):
        noise = torch.randn((min(batch_size, n_samples - start), *shape), generator=gen, dtype=F64)
        noise = noise.to(dtype=dtype, device=device)
        states = [noise * float(torch.sqrt(grid.alpha[0] ** 2 + grid.sigma[0] ** 2))]
        sample(denoiser, noise, "dpmpp-3m", grid=grid, callback=lambda i, t, x, keep=states.append: keep(x))
        sums, diag, c = _batch_sums(term, grid, first, torch.stack(states), gen, jacobian)
        calls += grid.steps + c
        totals = {k: totals.get(k, 0) + v for k, v in sums.items()}
        diag_total = diag_total + diag
    lam_used = grid.log_snr[first:]
    l_, s, b = _fit(totals, diag_total, n_samples, lam_used)
    header: dict[str, Any] = {**model_fingerprint(denoiser), "n_samples": n_samples, "n_points": int(lam.numel()),
                              "lam_range": [float(lam[0]), float(lam[-1])], "jacobian": jacobian,
                              "model_calls": int(calls), "seconds": round(time.perf_counter() - t0, 3)}
    return EMS(lam_used, *(v.reshape(-1, *shape).cpu() for v in (l_, s, b)), header=header)


# -- the "ems" tuning method ----------------------------------------------------------------------

def paper_options(nfe: int) -> dict[str, Any]:
    """The paper's configuration for an NFE (its CIFAR-10 scripts): the pseudo-order predictor
    and no lower order at the end at 5 NFE or fewer, the pseudo-corrector up to 8 NFE."""
    if nfe <= 5:
        return {"predictor_pseudo": True, "lower_order_final": False, "corrector": True}
    return {"predictor_pseudo": False, "lower_order_final": True, "corrector": nfe <= 8}


def ems_method(  # noqa: PLR0913 - the method's budget keywords after the four fixed arguments
    denoiser: Denoiser,
    nfe: int,
    noise: Tensor,
    objective: Any,
    n_samples: int = 1024,
    n_points: int = 128,
    statistics_path: str | None = None,
    seed: int = 0,
    grid: str = "ays",
    grid_sweeps: int = 1,
    grid_iters: int = 6,
) -> Any:
    """The "ems" method: compute the EMS of ``denoiser`` (on fresh noises, ``seed``), choose the
    grid (:func:`~timestepper.tuning.base_grid.base_schedule`: by default ``"ays"``,
    Align-Your-Steps levels searched for DPM-Solver-v3 itself with these statistics and the
    paper's options for ``nfe``; ``"best"`` the best named spacing; or a spacing name), then the
    DPM-Solver-v3 options on that grid by ``objective`` among the paper's configuration and its
    order-2 and no-corrector variants. ``grid_sweeps`` and ``grid_iters`` are the AYS search's
    budget (coordinate-descent sweeps, golden-section iterations per level; smaller than
    ``ays``'s defaults, since a DPM-Solver-v3 run integrates its statistics per grid, about ten
    times the cost of a DPM-Solver++ run on the benchmark mixtures). The statistics go to
    ``statistics_path`` (saved with the model's fingerprint) or inline into the schedule."""
    import tempfile

    from ..solvers.schedule import SolverSchedule
    from .base_grid import base_schedule

    ems = compute_ems(denoiser, noise, n_samples, n_points, generator=seed)
    if statistics_path is not None:
        ems.save(statistics_path)
    final: Any = str(Path(statistics_path)) if statistics_path is not None else ems.to_dict()
    base_opts = paper_options(nfe)
    with tempfile.TemporaryDirectory() as tmp:
        # the search reads the statistics from a file: the objective's memo key stays small
        path = str(Path(tmp) / "ems.pt")
        ems.save(path)

        def make(times: tuple[float, ...], opts: dict[str, Any] = base_opts) -> SolverSchedule:
            return SolverSchedule(times, (), solver="dpm-solver-v3", solver_options={"statistics": path, **opts})

        base = base_schedule(denoiser, nfe, objective, make, grid, grid_sweeps, grid_iters)
        candidates = [base_opts, {**base_opts, "order": 2}, {**base_opts, "corrector": not base_opts["corrector"]}]
        values = [objective(make(base.times, opts)) for opts in candidates]
    best_value = min(values)
    if not math.isfinite(best_value):
        raise ValueError(f"no DPM-Solver-v3 configuration gives a finite objective at nfe={nfe}")
    opts = candidates[values.index(best_value)]
    best = SolverSchedule(base.times, (), solver="dpm-solver-v3", solver_options={"statistics": final, **opts})
    best.provenance.update(method="ems", nfe=nfe, objective=best_value, seed=seed, grid=base.provenance.get("grid"),
                           ays_start=base.provenance.get("ays_start"),
                           ems={k: ems.header[k] for k in ("n_samples", "n_points", "model_calls", "seconds")})
    return best


def _register() -> None:
    from .methods import register_method

    register_method("ems", ems_method, "DPM-Solver-v3 on empirical model statistics computed from the model "
                                       "(Zheng et al. 2023)")


_register()

__all__ = ["EMS", "compute_ems", "ems_method", "ems_points", "paper_options"]

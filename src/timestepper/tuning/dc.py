"""DC-Solver's search of the compensation ratios and its cascade polynomial regression (Zhao, Wang,
Zhou & Lu, ECCV 2024, "DC-Solver: Improving Predictor-Corrector Diffusion Sampler via Dynamic
Compensation", Sec. 3.3 and 3.4), and the ``"dc"`` tuning method.

**Search** (:func:`fit_ratios`). The ratios of :class:`~timestepper.solvers.dc_unipc.DCUniPC` are
fitted one step at a time along the sampling of a few (~10) trajectories, pushing each corrected
state toward a ground-truth trajectory from the same noise: at step ``i`` the ratio ``rho_i``
minimises the mean squared distance between the state the sampler reaches at ``t_{i+1}`` (the
prediction from the compensated outputs, then the next step's model call and correction) and the
reference state at ``t_{i+1}``, by gradient descent through that model call (AdamW, learning rate
0.1, from ``rho_i = 1``, as the authors' implementation). The trajectory then continues with the
fitted ratio and the next one is searched. The reference comes from the caller (an exact solution)
or from :func:`reference_trajectory`, a high-NFE solve of the probability-flow ODE through the
coarse grid's points (the paper uses a 200 to 999-step DDIM).

**Cascade polynomial regression** (:class:`CascadePolynomialRegression`). The searched ratios of
several configurations are regressed as ``rho = sum_a c_a(NFE, CFG) x^a`` in the step position
``x = (i + 1) / NFE``, each ``c_a`` a quadratic in ``NFE / 50`` whose coefficients are quadratics in
``CFG / 12`` (the paper's normalisations): a polynomial with 27 coefficients, linear in them, fitted
by least squares. The degrees in NFE and CFG drop to what the distinct values fitted can determine
(one guidance scale: no CFG dependence). ``predict`` gives the ratios of an unseen NFE / scale
without any model call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..core.validation import check_choice, check_order
from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import SamplingGrid
from ..diffusion.term import DiffusionTerm
from ..sampling.sample import sample
from ..solvers.dc_unipc import DCRow, DCUniPC, compensation_weights
from ..solvers.unipc import VARIANTS, unic_correct, unip_predict
from .methods import register_method

F64 = torch.float64


@dataclass(frozen=True)
class RatioFit:
    """The result of :func:`fit_ratios`: one ratio per step (1 in the warm-up), the model calls
    spent (batched calls of the denoiser) and the wall time."""

    ratios: tuple[float, ...]
    model_calls: int
    seconds: float


def _start_scale(grid: SamplingGrid) -> float:
    """``sqrt(alpha^2 + sigma^2)`` at the grid's first time: ``timestepper.sample`` starts from
    ``noise`` times this."""
    return float(torch.sqrt(grid.alpha[0] ** 2 + grid.sigma[0] ** 2))


def counting(denoiser: Denoiser) -> tuple[Denoiser, list[int]]:
    """``denoiser`` wrapped to count its calls (the list grows by one per call)."""
    calls: list[int] = []

    def model_fn(x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        calls.append(1)
        return denoiser.model_fn(x, t, **kwargs)

    return Denoiser(model_fn, denoiser.schedule, denoiser.prediction, model_kwargs=denoiser.model_kwargs), calls


def _fine_times(grid: SamplingGrid, schedule: Any, substeps: int) -> tuple[Tensor, list[int]]:
    """The times of the reference solve and the index of each grid point among them:
    ``substeps`` steps per grid step, uniform in log-SNR where both ends are finite, else in
    ``t``; a step to zero noise is refined down to the schedule's ``t_min`` where that is short
    of the data (the last fine step then goes from there to ``sigma = 0``; a flow whose
    ``t_min`` is the data time is refined uniformly in ``t`` to it)."""
    u = torch.arange(substeps, dtype=F64) / substeps
    lam_min = float(schedule.log_snr(torch.tensor(schedule.t_min, dtype=F64)))
    pieces, idx = [], []
    for j in range(grid.steps):
        t0, t1 = float(grid.t[j]), float(grid.t[j + 1])
        l0, l1 = float(grid.log_snr[j]), float(grid.log_snr[j + 1])
        tail = []
        if math.isinf(l1) and math.isfinite(l0) and math.isfinite(lam_min) and lam_min > l0:
            t1, l1, tail = schedule.t_min, lam_min, [torch.tensor([schedule.t_min], dtype=F64)]
        if math.isfinite(l0) and math.isfinite(l1):
            seg = schedule.t_from_log_snr(l0 + u * (l1 - l0)).to(F64)
        else:
            seg = t0 + u * (t1 - t0)
        seg[0] = t0
        idx.append(sum(p.numel() for p in pieces))
        pieces += [seg, *tail]
    idx.append(sum(p.numel() for p in pieces))
    return torch.cat([*pieces, grid.t[-1:].to(F64)]), idx


def reference_trajectory(denoiser: Denoiser, x_start: Tensor, grid: SamplingGrid,
                         substeps: int = 20, solver: str = "unipc-bh2") -> Tensor:
    """The probability-flow ODE solution from ``x_start`` at every point of ``grid``, stacked
    (``N + 1`` states, the first is ``x_start``): one solve with ``substeps`` steps of ``solver``
    (UniPC-3 by default, without lower-order final steps) between consecutive grid points; a
    step to zero noise is refined down to the schedule's ``t_min``. Costs about
    ``substeps * N`` model calls."""
    times, idx = _fine_times(grid, denoiser.schedule, substeps)
    fgrid = SamplingGrid.from_times(denoiser.schedule, times)
    options = {"order": 3, "lower_order_final": False} if solver.startswith("unipc") else {}
    sol = sample(denoiser, x_start / _start_scale(fgrid), solver, grid=fgrid, solver_options=options,
                 save="all", return_solution=True)
    return sol.ys[idx].to(x_start.dtype)


LOSSES = ("l2", "mse")


def _distance(x: Tensor, target: Tensor, loss: str) -> Tensor:
    """``"l2"``: the mean over samples of the L2 distance (the protocol objective's metric);
    ``"mse"``: the mean squared difference over every entry (the authors')."""
    if loss == "mse":
        return (x - target).pow(2).mean()
    return (x - target).flatten(1).norm(dim=1).mean()


def _reached_error(term: DiffusionTerm, xc: Tensor, preds: tuple[Tensor, ...], rows: tuple[DCRow, Any],  # noqa: PLR0913 - the step's inputs and the loss
                   target: Tensor, ratio: Tensor, loss: str = "l2") -> Tensor:
    """Distance (``loss``) to ``target`` of the state at ``t_{i+1}`` reached from the corrected
    state ``xc`` of step ``i`` with the compensation at ``ratio``: the UniP prediction from the
    compensated outputs, then (unless step ``i`` is the last) the next step's model call and UniC
    correction, as :meth:`DCUniPC.advance` does them (differentiable in ``ratio``)."""
    row, nxt = rows
    weights = compensation_weights(row.basis, ratio)
    dc_preds = (sum(w * p for w, p in zip(weights, preds)), *preds[1:])
    x = unip_predict(xc, row, dc_preds)
    if nxt is not None:
        x = unic_correct(x, (xc,), nxt, (term.data_prediction(x, nxt.point), *dc_preds))
    return _distance(x, target, loss)


def _fit_step(  # noqa: PLR0913 - the step's inputs and the search's budget
    term: DiffusionTerm, x: Tensor, state: tuple, rows: tuple[DCRow, Any], target: Tensor, iters: int,
    lr: float, bound: float | None, loss: str = "l2",
) -> float:
    """The ratio of step ``rows[0]`` (from the predicted state ``x`` and the history ``state``)."""
    with torch.no_grad():
        preds = (term.data_prediction(x, rows[0].point), *state[1:])
        xc = unic_correct(x, state, rows[0], preds)
    param = torch.zeros((), dtype=F64, requires_grad=True)
    opt = torch.optim.AdamW([param], lr=lr)
    with torch.enable_grad():
        for _ in range(iters):
            opt.zero_grad()
            _reached_error(term, xc, preds, rows, target, bounded(param, bound), loss).backward()
            opt.step()
    return float(bounded(param.detach(), bound))


def bounded(param: Tensor, bound: float | None) -> Tensor:
    """The ratio of the search parameter: ``1 + bound tanh(param)`` (the authors' optional
    ``tanh`` bound, ``bound = 0.5``), or ``1 + param`` unbounded (``bound=None``)."""
    return 1.0 + (param if bound is None else bound * torch.tanh(param))


def fit_ratios(  # noqa: PLR0913 - the search's budget and the solver's options
    denoiser: Denoiser, noise: Tensor, grid: SamplingGrid, reference: Tensor, *, iters: int = 20,
    lr: float = 0.1, bound: float | None = 0.5, dc_order: int = 2, order: int = 2, variant: str = "bh2",
    loss: str = "l2",
) -> RatioFit:
    """Search the compensation ratios of ``dc-unipc`` on ``grid`` (DC-Solver, Sec. 3.3).

    Args:
        denoiser: the model; it must be differentiable in its input (gradients flow through one
            model call per iteration).
        noise: the training noises (the paper uses 10), shaped like a batch of samples.
        grid: the sampling grid the ratios are for.
        reference: the ground-truth states at every grid point, ``(N + 1, *noise.shape)``
            (:func:`reference_trajectory`, or an exact solution).
        iters, lr: AdamW iterations and learning rate per ratio (the authors': 20 and 0.1).
        dc_order, order, variant: the solver's options.
        loss: what each ratio minimises: ``"l2"`` (default), the mean over the noises of the L2
            distance to the reference state, the metric of the tuning objective; or ``"mse"``, the
            authors' mean squared error over every entry. On the benchmark mixtures the squared
            error is dominated by the few trajectories that end in another mixture component
            than their reference, and the ratios it picks made the final sample worse than plain
            UniPC's on the d = 64 mixture (benchmarks/results/tuning.md); ``"l2"`` does not.

    Returns:
        The fitted ratios (``solver_options={"ratios": fit.ratios}``), model calls and seconds.
    """
    check_choice(loss, LOSSES, "loss")
    t0 = time.perf_counter()
    den, calls = counting(denoiser)
    term = DiffusionTerm(den)
    solver = DCUniPC(dc_order=dc_order, order=order, variant=variant)
    x = noise * _start_scale(grid)
    if reference.shape != (grid.steps + 1, *x.shape):
        raise ValueError(f"reference must hold the state at each of the {grid.steps + 1} grid points: "
                         f"shape {(grid.steps + 1, *x.shape)}, got {tuple(reference.shape)}")
    state, rows = solver.init(term, grid, x)
    ratios = []
    for i, row in enumerate(rows):
        ratio = 1.0
        if type(row) is DCRow and row.basis is not None:
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            ratio = _fit_step(term, x, state, (row, nxt), reference[i + 1].to(x.dtype), iters, lr, bound, loss)
            row = replace(row, dcw=tuple(compensation_weights(row.basis, ratio)))
        ratios.append(ratio)
        with torch.no_grad():
            x, state, _, _ = solver.step(term, None, None, x, state, row)
    return RatioFit(tuple(ratios), len(calls), time.perf_counter() - t0)


SCALES = (50.0, 12.0)  # the paper's normalisations of NFE and of the guidance scale


@dataclass(frozen=True)
class CascadePolynomialRegression:
    """Ratios of unseen configurations from searched ones (DC-Solver, Sec. 3.4).

    ``rho(x, n, g) = sum_{a,b,c} C[a, b, c] x^a n^b g^c`` with ``x = (i + 1) / NFE``,
    ``n = NFE / 50``, ``g = CFG / 12``: the coefficients of the quadratic in ``x`` are quadratics in
    ``n`` whose coefficients are quadratics in ``g`` (the cascade). Steps before ``warmup`` keep
    ratio 1.
    """

    coeffs: tuple[tuple[tuple[float, ...], ...], ...]
    warmup: int

    @classmethod
    def fit(cls, searched: Sequence[tuple[int, float, Sequence[float]]], warmup: int = 2,
            degree: int = 2) -> CascadePolynomialRegression:
        """Least-squares fit on ``searched = [(nfe, guidance_scale, ratios), ...]``. The degrees in
        NFE and guidance drop to (number of distinct values - 1) when fewer than ``degree + 1``
        were searched."""
        if not searched:
            raise ValueError("searched must hold at least one (nfe, guidance_scale, ratios) entry")
        for nfe, _, ratios in searched:
            if len(ratios) != nfe:
                raise ValueError(f"searched ratios must have one entry per step: NFE {nfe}, got {len(ratios)}")
        dn = min(degree, len({s[0] for s in searched}) - 1)
        dg = min(degree, len({float(s[1]) for s in searched}) - 1)
        rows, values = [], []
        for nfe, scale, ratios in searched:
            for i in range(warmup, nfe):
                rows.append(_features(i, nfe, float(scale), degree, dn, dg))
                values.append(float(ratios[i]))
        sol = torch.linalg.lstsq(torch.tensor(rows, dtype=F64), torch.tensor(values, dtype=F64)[:, None],
                                 driver="gelsd").solution[:, 0].tolist()
        full = [[[0.0] * (degree + 1) for _ in range(degree + 1)] for _ in range(degree + 1)]
        for (a, b, c), v in zip(_exponents(degree, dn, dg), sol):
            full[a][b][c] = v
        return cls(tuple(tuple(map(tuple, m)) for m in full), warmup)

    def predict(self, nfe: int, guidance_scale: float = 1.0) -> list[float]:
        """The ratios of ``nfe`` steps at ``guidance_scale`` (no model call)."""
        if int(nfe) != nfe or nfe < 1:
            raise ValueError(f"nfe must be a positive integer, got {nfe}")
        degree = len(self.coeffs) - 1
        flat = [self.coeffs[a][b][c] for a, b, c in _exponents(degree, degree, degree)]
        out = []
        for i in range(int(nfe)):
            f = _features(i, int(nfe), float(guidance_scale), degree, degree, degree)
            out.append(1.0 if i < self.warmup else sum(w * v for w, v in zip(f, flat)))
        return out


def _exponents(degree: int, dn: int, dg: int) -> list[tuple[int, int, int]]:
    return [(a, b, c) for a in range(degree + 1) for b in range(dn + 1) for c in range(dg + 1)]


def _features(i: int, nfe: int, scale: float, degree: int, dn: int, dg: int) -> list[float]:
    x, n, g = (i + 1) / nfe, nfe / SCALES[0], scale / SCALES[1]
    return [x**a * n**b * g**c for a, b, c in _exponents(degree, dn, dg)]


def dc_search(  # noqa: PLR0913 - the registry's fixed arguments and the search's budget
    denoiser: Denoiser, nfe: int, noise: Tensor, objective: Any = None, grid: str = "ays",
    iters: int = 20, lr: float = 0.1, bound: float | None = 0.5, substeps: int = 20, dc_order: int = 2,
    loss: str = "l2", grid_sweeps: int = 2, grid_iters: int = 10,
    variants: Sequence[str] = ("bh2", "bh1"), orders: Sequence[int] = (2, 3),
) -> Any:
    """The ``"dc"`` tuning method: a ``dc-unipc`` schedule of ``nfe`` steps whose ratios are
    searched on ``noise`` (:func:`fit_ratios`) against :func:`reference_trajectory` (``substeps``
    fine steps per step), on the grid ``grid`` chooses
    (:func:`~timestepper.tuning.base_grid.base_schedule`): by default ``"ays"``, Align-Your-Steps
    levels searched for DC's base sampler (UniPC-bh2, ``dc-unipc`` with every ratio 1) by the
    ``objective``; ``"best"`` the best named spacing; or a spacing name (``objective`` may then
    be ``None``). With an ``objective``, the fitted ratios are kept only where they beat the base
    sampler on the training objective (else every ratio is 1 and the provenance says
    ``fell_back_to_base``), so the result is never worse than UniPC on its grid there.
    ``grid_sweeps``, ``grid_iters``: the AYS search's budget. ``variants`` and ``orders``: the
    UniPC bases (B(h) variant x predictor order) tried; each gets its grid, and the one with the
    smallest training objective is compensated (the paper compensates UniPC's predictor-corrector
    and leaves the variant to the base sampler's best setting; without an ``objective``, the first
    pair). The provenance records the base, the grid, the search's model calls and seconds."""
    from ..solvers.schedule import SolverSchedule  # issue-15 interface (the usf helper's module)
    from .base_grid import base_schedule

    t0 = time.perf_counter()
    check_choice(loss, LOSSES, "loss")

    pairs = [(check_choice(v, VARIANTS, "variants"), check_order(o, (1, 2, 3), "orders"))
             for v in variants for o in orders]
    if not pairs:
        raise ValueError("variants and orders must each name at least one UniPC base")

    def maker(variant: str, order: int):
        def make(times: tuple[float, ...]) -> SolverSchedule:
            return SolverSchedule(times, solver="dc-unipc",
                                  solver_options={"dc_order": dc_order, "variant": variant, "order": order})
        return make

    bases = [base_schedule(denoiser, nfe, objective, maker(v, o), grid, grid_sweeps, grid_iters)
             for v, o in (pairs if objective is not None else pairs[:1])]
    base = min(bases, key=objective) if objective is not None else bases[0]
    options = {k: v for k, v in base.solver_options.items() if k in ("variant", "order")}
    g = base.grid(denoiser.schedule)
    counted, calls = counting(denoiser)
    reference = reference_trajectory(counted, noise * _start_scale(g), g, substeps)
    fit = fit_ratios(denoiser, noise, g, reference, iters=iters, lr=lr, bound=bound, dc_order=dc_order, loss=loss,
                     **options)
    sched = SolverSchedule(times=base.times, steps=(), solver="dc-unipc",
                           solver_options={"ratios": list(fit.ratios), "dc_order": dc_order, **options})
    fell_back = objective is not None and not objective(sched) < objective(base)
    if fell_back:
        sched = SolverSchedule(base.times, solver="dc-unipc", solver_options={
            "ratios": [1.0] * (len(base.times) - 1), "dc_order": dc_order, **options})
    sched.provenance = {
        "method": "dc", "nfe": int(nfe), "grid": base.provenance.get("grid"), "ays_start": base.provenance.get(
            "ays_start"), "base": options, "schedule": type(denoiser.schedule).__name__,
        "prediction": denoiser.prediction,
        "train_samples": int(noise.shape[0]), "fitted_ratios": list(fit.ratios), "fell_back_to_base": fell_back,
        "search": {"iters": iters, "lr": lr, "bound": bound, "substeps": substeps, "loss": loss},
        "model_calls": len(calls) + fit.model_calls, "seconds": time.perf_counter() - t0,
    }
    return sched


register_method("dc", dc_search, "DC-Solver: compensation ratios of dc-unipc fitted on ~10 trajectories "
                "(Zhao et al., ECCV 2024)")

__all__ = ["CascadePolynomialRegression", "RatioFit", "counting", "dc_search", "fit_ratios",
           "reference_trajectory"]

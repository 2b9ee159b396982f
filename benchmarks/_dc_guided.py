"""The guidance-scale experiment of DC-Solver (Zhao et al., ECCV 2024, Sec. 3.4 and its CFG
experiments), the guided section of ``benchmarks/dc_solver.py``.

Model: the exact class-conditional mixture ``ConditionalMixture(GaussianMixture.random(d, 8,
seed=0))`` (label k: component k, null label: the whole mixture) under classifier-free guidance
``ts.guidance.cfg(den, scale, labels=..., null_label=8)``, epsilon prediction, linear-beta VP
schedule, uniform log-SNR grid. Labels are drawn with the mixture weights (training seed 2,
held-out seed 3).

* search: ``fit_ratios`` (bounded, L2) on 10 training noises (seed 0) against
  ``reference_trajectory(guided, train, grid, 20)``, at every guidance scale of ``FIT_SCALES`` and
  NFE of ``FIT_NFES``; ``CascadePolynomialRegression`` fitted on all of them;
* evaluation at unseen scales ``UNSEEN_SCALES`` and NFE ``EVAL_NFES``: mean L2 error at sigma = 0
  on 200 held-out noises (seed 1) against ``reference_trajectory(guided, test, grid, 80)`` (the
  same guided ODE, 80 UniPC-3 sub-steps per step) for UniPC-bh2 (every ratio 1), dc-unipc with
  ratios refitted at that scale (same search), and dc-unipc with the CPR-predicted ratios.
"""

from __future__ import annotations

import time

import torch

import timestepper as ts
from timestepper.bench import ConditionalMixture, GaussianMixture
from timestepper.diffusion.grids import SamplingGrid, make_grid
from timestepper.tuning.dc import CascadePolynomialRegression, fit_ratios, reference_trajectory

F64 = torch.float64
N_TRAIN, N_TEST, FIT_SUBSTEPS, EVAL_SUBSTEPS = 10, 200, 20, 80
FIT_SCALES, FIT_NFES = (1.5, 3.0, 5.0, 7.5), (5, 6, 8, 10)
UNSEEN_SCALES, EVAL_NFES = (2.0, 4.0, 6.0), (5, 8)


def _start_scale(grid: SamplingGrid) -> float:
    return float(torch.sqrt(grid.alpha[0] ** 2 + grid.sigma[0] ** 2))


class GuidedProblem:
    """One conditional mixture with its training and held-out noises and labels."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.model = ConditionalMixture(GaussianMixture.random(dim, 8, seed=0))
        self.schedule = ts.VPDiscreteSchedule.from_betas("linear")
        self.base = self.model.denoiser(self.schedule, "epsilon")
        gen = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731 - a local shorthand
        self.noise = {"train": torch.randn(N_TRAIN, dim, generator=gen(0), dtype=F64),
                      "test": torch.randn(N_TEST, dim, generator=gen(1), dtype=F64)}
        self.labels = {"train": self.model.sample_labels(N_TRAIN, gen(2)),
                       "test": self.model.sample_labels(N_TEST, gen(3))}

    def guided(self, scale: float, split: str) -> ts.Denoiser:
        return ts.guidance.cfg(self.base, scale, labels=self.labels[split], null_label=self.model.null_label)

    def reference(self, scale: float, nfe: int, split: str, substeps: int) -> torch.Tensor:
        grid = make_grid(self.schedule, nfe, "logsnr")
        return reference_trajectory(self.guided(scale, split), self.noise[split] * _start_scale(grid), grid, substeps)

    def fit(self, scale: float, nfe: int) -> list[float]:
        """The ratios searched on the training noises at ``scale`` and ``nfe``."""
        grid = make_grid(self.schedule, nfe, "logsnr")
        ref = self.reference(scale, nfe, "train", FIT_SUBSTEPS)
        return list(fit_ratios(self.guided(scale, "train"), self.noise["train"], grid, ref).ratios)

    def error(self, scale: float, nfe: int, ratios: list[float] | None, exact: torch.Tensor) -> float:
        """Held-out error of dc-unipc with ``ratios`` (``None``: DDIM, the first-order baseline)."""
        solver, options = ("ddim", {}) if ratios is None else ("dc-unipc", {"ratios": ratios})
        x = ts.sample(self.guided(scale, "test"), self.noise["test"], solver, steps=nfe, grid="logsnr",
                      solver_options=options)
        return float((x - exact).norm(dim=-1).mean())


def guided_rows(dim: int) -> dict:
    """Searched ratios on the fitting grid of (NFE, scale), then the three errors per unseen scale."""
    p = GuidedProblem(dim)
    t0 = time.perf_counter()
    searched = [(n, s, p.fit(s, n)) for n in FIT_NFES for s in FIT_SCALES]
    cpr = CascadePolynomialRegression.fit(searched)
    fit_seconds = time.perf_counter() - t0
    rows, ref_gap = [], 0.0
    for nfe in EVAL_NFES:
        for scale in UNSEEN_SCALES:
            exact = p.reference(scale, nfe, "test", EVAL_SUBSTEPS)[-1]
            coarse = p.reference(scale, nfe, "test", EVAL_SUBSTEPS // 2)[-1]
            ref_gap = max(ref_gap, float((exact - coarse).norm(dim=-1).mean()))
            refit, predicted = p.fit(scale, nfe), cpr.predict(nfe, scale)
            row = {"nfe": nfe, "scale": scale, "refit_ratios": refit, "predicted_ratios": predicted,
                   "ddim": p.error(scale, nfe, None, exact), "unipc-bh2": p.error(scale, nfe, [1.0] * nfe, exact),
                   "refit": p.error(scale, nfe, refit, exact), "predicted": p.error(scale, nfe, predicted, exact)}
            rows.append(row)
            print(f"guided d={dim} NFE {nfe} scale {scale}: unipc {row['unipc-bh2']:.4f}, refit "
                  f"{row['refit']:.4f}, CPR {row['predicted']:.4f}", flush=True)
    return {"searched": searched, "fit_seconds": fit_seconds, "reference_gap": ref_gap, "rows": rows}


def _ratios(r: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in r[2:])


def guided_section(results: dict) -> list[str]:
    """The markdown section of the guided experiment (``results``: dimension -> ``guided_rows``)."""
    if not results:
        return []
    gap = max(r["reference_gap"] for r in results.values())
    fits = len(FIT_NFES) * len(FIT_SCALES)
    intro = [
        "Exact class-conditional mixture `ConditionalMixture(GaussianMixture.random(d, 8, seed=0))` (label k:",
        "component k's exact denoiser; null label: the whole mixture's) under `ts.guidance.cfg(den, scale,",
        "labels=..., null_label=8)`, labels drawn with the mixture weights. The bounded L2 search (as above) on",
        f"{N_TRAIN} training noises at guidance scales {', '.join(map(str, FIT_SCALES))} and NFE",
        f"{', '.join(map(str, FIT_NFES))} ({fits} searches); the cascade polynomial regression (CPR) fitted on",
        "them predicts the ratios of the unseen scales without any model call. Cells: mean L2 error at sigma",
        f"= 0 on {N_TEST} held-out noises and labels against `reference_trajectory` of the same guided ODE with",
        f"{EVAL_SUBSTEPS} sub-steps per step (it differs from the {EVAL_SUBSTEPS // 2}-sub-step one by at most",
        f"{gap:.1e}). Refitted: the same search run at the unseen scale itself (the CPR's target). DDIM:",
        "the first-order baseline on the same grid.",
    ]
    lines = ["### Classifier-free guidance: CPR over the guidance scale, predicting unseen scales", "",
             " ".join(intro), "",
             "| d | NFE | scale | ddim | unipc-bh2 | dc-unipc, refitted at this scale | dc-unipc, CPR-predicted | "
             "CPR / unipc | search seconds (all fits) | predicted ratios from step 3 (refitted) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for dim, res in results.items():
        for r in res["rows"]:
            u = r["unipc-bh2"]
            lines.append(f"| {dim} | {r['nfe']} | {r['scale']:g} | {r['ddim']:.4f} | {u:.4f} | {r['refit']:.4f} | "
                         f"{r['predicted']:.4f} | {r['predicted'] / u:.2f} | {res['fit_seconds']:.1f} | "
                         f"{_ratios(r['predicted_ratios'])} ({_ratios(r['refit_ratios'])}) |")
    return [*lines, ""]

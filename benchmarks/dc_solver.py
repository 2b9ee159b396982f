"""DC-Solver (dc-unipc, fitted compensation ratios) against UniPC-bh2 on held-out noises
-> benchmarks/results/dc_solver.md (+ dc_solver.json).

Protocol of docs/dc_solver.md, on exact Gaussian mixtures ``GaussianMixture.random(d, 8, seed=0)``
for d = 2 and d = 64, the linear-beta discrete VP schedule (1000 steps), exact epsilon denoiser,
uniform log-SNR grids:

* search: at each NFE, ``fit_ratios`` on 10 training noises (seed 0) against
  ``reference_trajectory(den, train, grid, 20)``, once with the authors' tanh bound (``1 +- 0.5``)
  and once unbounded (``bound=None``); the fitting cost is the model calls and seconds of the
  reference plus the search (the reference is shared by both searches and counted in each);
* evaluation: mean L2 error at sigma = 0 on 200 held-out noises (seed 1) against the mixture's
  exact PF-ODE solution, for ``unipc-bh2`` and ``dc-unipc`` with each set of ratios;
* cascade polynomial regression (CPR): ``CascadePolynomialRegression`` fitted on the ratios searched
  at NFE 5, 6, 8, 10 predicts those of NFE 7 and 9 (no model call); their held-out error is
  reported next to that of the ratios searched at 7 and 9;
* classifier-free guidance (``benchmarks/_dc_guided.py``): on the exact class-conditional mixture,
  ratios searched at guidance scales 1.5, 3, 5, 7.5 and the CPR's prediction for unseen scales
  2, 4, 6 against UniPC and against ratios refitted at those scales.

Run:  PYTHONPATH=src python benchmarks/dc_solver.py [--threads 1] [--nfe 5 6 7 8 9 10] [--dims 2 64]
      [--guided-dims 2 64]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from _dc_guided import guided_rows, guided_section  # benchmarks/_dc_guided.py, beside this script

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.diffusion.grids import make_grid
from timestepper.tuning.dc import CascadePolynomialRegression, counting, fit_ratios, reference_trajectory

OUT = Path(__file__).resolve().parent / "results"
F64 = torch.float64
N_TRAIN, N_TEST, SUBSTEPS = 10, 200, 20
BOUNDS = {"bounded": 0.5, "unbounded": None}
CPR_FIT, CPR_PREDICT = (5, 6, 8, 10), (7, 9)


class Problem:
    """One mixture: its denoiser, the training noises, the held-out noises and their exact solution."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.gmm = GaussianMixture.random(dim, 8, seed=0)
        self.schedule = ts.VPDiscreteSchedule.from_betas("linear")
        self.den = self.gmm.denoiser(self.schedule, "epsilon")
        self.train = torch.randn(N_TRAIN, dim, generator=torch.Generator().manual_seed(0), dtype=F64)
        self.test = torch.randn(N_TEST, dim, generator=torch.Generator().manual_seed(1), dtype=F64)
        grid = make_grid(self.schedule, 5, "logsnr")
        al, si = float(grid.alpha[0]), float(grid.sigma[0])
        self.exact = self.gmm.reference_solution(self.test / al, si / al, 0.0)

    def error(self, solver: str, nfe: int, **options) -> float:
        x = ts.sample(self.den, self.test, solver, steps=nfe, grid="logsnr", solver_options=options)
        return float((x - self.exact).norm(dim=-1).mean())


def search(p: Problem, nfe: int) -> dict:
    """The reference and both searches at one NFE, with their costs."""
    grid = make_grid(p.schedule, nfe, "logsnr")
    t0 = time.perf_counter()
    counted, calls = counting(p.den)
    scale = float(torch.sqrt(grid.alpha[0] ** 2 + grid.sigma[0] ** 2))
    reference = reference_trajectory(counted, p.train * scale, grid, SUBSTEPS)
    ref_calls, ref_seconds = len(calls), time.perf_counter() - t0
    out: dict = {}
    for name, bound in BOUNDS.items():
        fit = fit_ratios(p.den, p.train, grid, reference, bound=bound)
        out[name] = {"ratios": list(fit.ratios), "model_calls": ref_calls + fit.model_calls,
                     "seconds": ref_seconds + fit.seconds}
    return out


def evaluate(p: Problem, nfes: list[int]) -> dict:
    """Searched ratios, costs and held-out errors per NFE, then the CPR check."""
    rows: dict = {}
    for nfe in nfes:
        fits = search(p, nfe)
        row = {"unipc-bh2": p.error("unipc-bh2", nfe)}
        for name, fit in fits.items():
            row[name] = {**fit, "error": p.error("dc-unipc", nfe, ratios=fit["ratios"])}
        rows[str(nfe)] = row
        print(f"d={p.dim} NFE {nfe}: unipc {row['unipc-bh2']:.4f}, bounded {row['bounded']['error']:.4f}, "
              f"unbounded {row['unbounded']['error']:.4f}", flush=True)
    return {"rows": rows, "cpr": cpr_check(p, rows)}


def cpr_check(p: Problem, rows: dict) -> list[dict]:
    """Ratios of NFE 7 and 9 predicted from those searched at 5, 6, 8, 10 (when all were run)."""
    if not all(str(n) in rows for n in (*CPR_FIT, *CPR_PREDICT)):
        return []
    out = []
    for name in BOUNDS:
        cpr = CascadePolynomialRegression.fit([(n, 1.0, rows[str(n)][name]["ratios"]) for n in CPR_FIT])
        for nfe in CPR_PREDICT:
            ratios = cpr.predict(nfe)
            out.append({"search": name, "nfe": nfe, "predicted_ratios": ratios,
                        "predicted": p.error("dc-unipc", nfe, ratios=ratios),
                        "searched": rows[str(nfe)][name]["error"], "unipc-bh2": rows[str(nfe)]["unipc-bh2"]})
    return out


def _ratios(r: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in r[2:])


def main_table(results: dict) -> list[str]:
    lines = ["| d | NFE | unipc-bh2 | dc-unipc (bounded) | dc-unipc (unbounded) | ratio bounded / unipc | "
             "ratio unbounded / unipc | fitting cost (calls, s) | searched ratios from step 3 (bounded; unbounded) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for dim, res in results.items():
        for nfe, r in res["rows"].items():
            u, b, ub = r["unipc-bh2"], r["bounded"], r["unbounded"]
            lines.append(f"| {dim} | {nfe} | {u:.4f} | {b['error']:.4f} | {ub['error']:.4f} | "
                         f"{b['error'] / u:.2f} | {ub['error'] / u:.2f} | "
                         f"{b['model_calls']}, {b['seconds']:.1f}; {ub['model_calls']}, {ub['seconds']:.1f} | "
                         f"{_ratios(b['ratios'])}; {_ratios(ub['ratios'])} |")
    return lines


def cpr_table(results: dict) -> list[str]:
    lines = ["| d | search | NFE | unipc-bh2 | dc-unipc, searched ratios | dc-unipc, CPR-predicted ratios | "
             "predicted ratios from step 3 |", "|---|---|---|---|---|---|---|"]
    for dim, res in results.items():
        for c in res["cpr"]:
            lines.append(f"| {dim} | {c['search']} | {c['nfe']} | {c['unipc-bh2']:.4f} | {c['searched']:.4f} | "
                         f"{c['predicted']:.4f} | {_ratios(c['predicted_ratios'])} |")
    return lines


def render(results: dict, guided: dict, command: str, total: float) -> str:
    machine = (f"{platform.machine()} {platform.system()}, torch {torch.__version__}, "
               f"{torch.get_num_threads()} thread(s)")
    intro = [f"Machine: {machine}; run time {total:.0f} s. Reproduce: `{command}`.",
             "Exact Gaussian mixtures `GaussianMixture.random(d, 8, seed=0)`, linear-beta discrete VP schedule,",
             "exact epsilon denoiser, uniform log-SNR grid. Ratios searched by `fit_ratios` (AdamW, lr 0.1,",
             f"20 iterations per step) on {N_TRAIN} training noises (seed 0) against",
             f"`reference_trajectory(den, train, grid, {SUBSTEPS})`; bounded: `1 + 0.5 tanh`, unbounded:",
             "`bound=None`. Cells: mean L2 error at sigma = 0 against the exact PF-ODE solution on",
             f"{N_TEST} held-out noises (seed 1). Fitting cost: batched model calls and seconds of the reference",
             "plus the search (seconds depend on the machine's load); ratios of the two warm-up steps are 1."]
    out = ["## DC-Solver (dc-unipc) against UniPC-bh2", "", " ".join(intro), "", *main_table(results), ""]
    if any(res["cpr"] for res in results.values()):
        out += ["### Cascade polynomial regression: fitted at NFE 5, 6, 8, 10, predicting 7 and 9", "",
                *cpr_table(results), ""]
    return "\n".join([*out, *guided_section(guided)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 6, 7, 8, 9, 10])
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 64])
    ap.add_argument("--guided-dims", type=int, nargs="*", default=[2, 64],
                    help="dimensions of the guided (CFG) experiment; none to skip it")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = {str(d): evaluate(Problem(d), args.nfe) for d in args.dims}
    guided = {str(d): guided_rows(d) for d in args.guided_dims}
    command = "PYTHONPATH=src python benchmarks/dc_solver.py " + " ".join(sys.argv[1:])
    text = render(results, guided, command.strip(), time.perf_counter() - t0)
    OUT.mkdir(exist_ok=True)
    (OUT / "dc_solver.md").write_text(text + "\n")
    (OUT / "dc_solver.json").write_text(json.dumps({"unguided": results, "guided": guided}, indent=1))
    print(text)


if __name__ == "__main__":
    main()

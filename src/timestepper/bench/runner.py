"""The GMM benchmark: every deterministic sampler at a range of NFE on exact mixtures.

For each mixture dimension, one float64 reference solution of the probability-flow ODE is solved
from fixed noise; each solver then samples from the same noise with the largest number of steps
whose model evaluations fit the NFE budget. Rows report the trajectory error against the
reference, the sliced W2 distance to exact mixture samples, the NFE actually used and the time.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import make_grid
from ..diffusion.schedules import VPDiscreteSchedule
from ..sampling.sample import sample
from ..solvers.registry import available, get
from .gmm import GaussianMixture
from .metrics import sliced_wasserstein, trajectory_error

DEFAULT_NFES = (5, 6, 8, 10, 15, 20)


@dataclass
class Row:
    dim: int
    solver: str
    nfe_budget: int
    nfe: int
    steps: int
    error: float
    sw2: float
    ms: float


def deterministic_solvers() -> list[str]:
    """Registry names of the deterministic fixed-grid diffusion solvers (adaptive ones choose
    their own steps and ignore an NFE budget; the Time-Shift Sampler's times depend on the data;
    solvers fitted to a model run a duplicate default without their data)."""
    out = []
    for name in available("diffusion"):
        s = get(name)
        if not (s.is_stochastic or s.error_order is not None or not s.evaluates_on_grid or s.fitted_to_model):
            out.append(name)
    return out


def steps_for_budget(solver: str, schedule, budget: int, grid: str, final: str) -> int | None:
    """The largest number of steps whose model evaluations fit ``budget``, found by counting
    evaluations of a zero model on one sample (no host sync in the real run); ``None`` when no
    number of steps the solver accepts fits (e.g. ``pndm`` below its warm-up)."""
    probe = Denoiser(lambda x, t: torch.zeros_like(x), schedule, "epsilon")
    x = torch.zeros(1, 1, dtype=torch.float64)
    best = None
    for steps in range(1, budget + 1):
        try:
            nfe = sample(probe, x, solver, steps=steps, grid=grid, final=final, return_solution=True).stats.nfe
        except ValueError:
            continue  # e.g. a multistep order the steps cannot support
        if nfe <= budget:
            best = steps
        else:
            break
    return best


def run_gmm_benchmark(dims=(2, 64), nfes=DEFAULT_NFES, solvers: list[str] | None = None, grid: str = "logsnr",  # noqa: PLR0913 - keyword options of the benchmark
                      final: str = "zero", n_samples: int = 2000, n_components: int = 8, seed: int = 0,
                      progress: bool = True) -> dict:
    """Run the benchmark and return ``{"rows": [...], "baseline_sw2": {dim: float}, "config": {...}}``."""
    solvers = solvers or deterministic_solvers()
    schedule = VPDiscreteSchedule.from_betas("linear")
    rows: list[Row] = []
    baselines = {}
    jobs = [(d, s, n) for d in dims for s in solvers for n in nfes]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs) + len(dims), desc="bench gmm", unit="run")
    budget_steps = {(s, n): steps_for_budget(s, schedule, n, grid, final) for s in solvers for n in nfes}
    for d in dims:
        gmm = GaussianMixture.random(d, n_components, seed=seed)
        g = torch.Generator().manual_seed(seed + 1)
        noise = torch.randn(n_samples, d, generator=g, dtype=torch.float64)
        exact_a = gmm.sample(n_samples, g)
        # SW2 between two exact sets fluctuates by ~30% from draw to draw: average 8 pairs
        baselines[d] = sum(sliced_wasserstein(gmm.sample(n_samples, g), gmm.sample(n_samples, g))
                           for _ in range(8)) / 8
        sgrid = make_grid(schedule, 2, grid, final=final)
        a0, s0 = float(sgrid.alpha[0]), float(sgrid.sigma[0])
        end_s = float(sgrid.sigma[-1] / sgrid.alpha[-1])
        ref = gmm.reference_solution(noise * math.sqrt(a0**2 + s0**2) / a0, s0 / a0, end_s, rtol=1e-8, atol=1e-8)
        ref = ref * float(sgrid.alpha[-1])
        den = gmm.denoiser(schedule, "epsilon")
        if bar is not None:
            bar.update(1)
        for name in solvers:
            for n in nfes:
                steps = budget_steps[(name, n)]
                if steps is None:
                    if bar is not None:
                        bar.update(1)
                    continue
                t0 = time.perf_counter()
                sol = sample(den, noise, name, steps=steps, grid=grid, final=final, return_solution=True)
                ms = 1e3 * (time.perf_counter() - t0)
                rows.append(Row(d, name, n, sol.stats.nfe, steps, trajectory_error(sol.x, ref),
                                sliced_wasserstein(sol.x, exact_a), ms))
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return {"rows": [asdict(r) for r in rows], "baseline_sw2": baselines,
            "config": dict(dims=list(dims), nfes=list(nfes), grid=grid, final=final, n_samples=n_samples,
                           n_components=n_components, seed=seed, schedule="VPDiscreteSchedule linear 1000")}


def format_table(result: dict, dim: int, markdown: bool = False) -> str:
    """A per-dimension table: one row per solver, error (and SW2) per NFE budget."""
    rows = [r for r in result["rows"] if r["dim"] == dim]
    head, lines = _pivot(rows, "solver", lambda r: f"{r['error']:.2e} / {r['sw2']:.3f} / {r['ms']:.0f}ms")
    return render_table(head, lines, markdown)


def _pivot(rows: list[dict], label: str, cell) -> tuple[list[str], list[list[str]]]:
    """One line per solver, one column per NFE budget; ``cell(row)`` formats a cell, followed by the
    NFE actually used when it is below the budget."""
    nfes = list(dict.fromkeys(r["nfe_budget"] for r in rows))
    by = {(r["solver"], r["nfe_budget"]): r for r in rows}
    lines = []
    for name in dict.fromkeys(r["solver"] for r in rows):
        cells = [name]
        for n in nfes:
            r = by.get((name, n))
            if r is None:  # no number of steps the solver accepts fits this budget
                cells.append("-")
                continue
            cells.append(cell(r) + ("" if r["nfe"] == n else f" ({r['nfe']})"))
        lines.append(cells)
    return [label] + [f"NFE {n}" for n in nfes], lines


def render_table(head: list[str], lines: list[list[str]], markdown: bool = False) -> str:
    """A Markdown table, or aligned plain-text columns for the terminal."""
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(out + ["| " + " | ".join(c) + " |" for c in lines])
    widths = [max(len(row[i]) for row in [head] + lines) for i in range(len(head))]
    fmt = "  ".join("{:<" + str(w) + "}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*c) for c in lines])


def timing_table(result: dict, dim: int) -> str:
    rows = [r for r in result["rows"] if r["dim"] == dim]
    out = ["| solver | NFE | steps | ms |", "|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['solver']} | {r['nfe']} | {r['steps']} | {r['ms']:.1f} |")
    return "\n".join(out)


def plot(result: dict, path: Path) -> Path:
    """Log-log plot of trajectory error vs NFE, one panel per dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = result["config"]["dims"]
    fig, axes = plt.subplots(1, len(dims), figsize=(6 * len(dims), 4.5), squeeze=False)
    colors = plt.get_cmap("tab20").colors
    styles = ["-", "--", ":", "-."]
    for ax, d in zip(axes[0], dims):
        rows = [r for r in result["rows"] if r["dim"] == d]
        for k, name in enumerate(dict.fromkeys(r["solver"] for r in rows)):
            rs = sorted((r for r in rows if r["solver"] == name), key=lambda r: r["nfe"])
            ax.loglog([r["nfe"] for r in rs], [r["error"] for r in rs], marker="o", ms=3, label=name,
                      color=colors[k % len(colors)], linestyle=styles[(k // len(colors)) % len(styles)])
        errs = sorted(r["error"] for r in rows)
        # keep the informative range visible: solvers that diverge at tiny NFE go off the top
        ax.set_ylim(errs[0] * 0.7, min(errs[-1] * 1.5, 3 * errs[int(0.9 * (len(errs) - 1))]))
        ax.set_xlabel("NFE")
        ax.set_ylabel("mean L2 error vs exact PF-ODE solution")
        ax.set_title(f"Gaussian mixture, d={d} ({result['config']['grid']} grid)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save(result: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    p = out_dir / "gmm.json"
    p.write_text(json.dumps(result, indent=1))
    return p


def stochastic_results(dims, nfes, n_samples: int, n_components: int = 8, seed: int = 0) -> dict:
    """Sliced W2 of the stochastic samplers on the same mixtures and schedule (``--stochastic``)."""
    from .stochastic import stochastic_rows

    schedule = VPDiscreteSchedule.from_betas("linear")
    return {d: stochastic_rows(GaussianMixture.random(d, n_components, seed=seed), nfes, schedule=schedule,
                               n_samples=n_samples, seed=seed) for d in dims}


def format_stochastic(rows: list[dict], markdown: bool = False) -> str:
    """Stochastic samplers: one row per sampler, ``SW2 (ratio to exact-vs-exact)`` per NFE budget."""
    base = rows[0]
    head, lines = _pivot(rows[1:], "sampler", lambda r: f"{r['sw2']:.3f} ({r['sw2_ratio']:.1f}x)")
    title = f"exact-vs-exact SW2 baseline: {base['sw2']:.3f}"
    return title + ("\n\n" if markdown else "\n") + render_table(head, lines, markdown)

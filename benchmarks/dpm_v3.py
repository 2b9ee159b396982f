"""DPM-Solver-v3 with empirical model statistics against DPM-Solver++ and UniPC
-> benchmarks/results/dpm_v3.md (+ dpm_v3.json).

Problems: exact Gaussian mixtures (``GaussianMixture.random(dim, 8, seed)``) under the VP linear
schedule with the exact epsilon denoiser. For each configuration ``DIM SEED N_SAMPLES``:

* the EMS are computed once (``compute_ems``, ``n_samples`` trajectories of noises drawn from
  generator 0, 128 log-SNR points); its cost (batched model calls, seconds) is reported;
* on 256 held-out noises (seed 123), the mean L2 error at sigma = 0 to the exact PF-ODE solution
  (``GaussianMixture.reference_solution``) at NFE 5, 6, 8, 10 of dpmpp-2m, dpmpp-3m, unipc-bh2 and
  dpm-solver-v3 without statistics, with them (defaults) and with ``paper_options(nfe)``; default
  log-SNR grid with the last step to zero noise;
* the gain: the best of dpmpp-2m / dpmpp-3m / unipc-bh2 divided by v3's error, per NFE.

Two further checks: a mixture where v3 does not win (``GaussianMixture.random(16, 6, seed=3)`` at
NFE 10 on 64 held-out noises, EMS from 256 and 1024 samples), and v3 on the first mixture with EMS
at 32, 64, 128 and 256 log-SNR points.

The errors are deterministic given the seeds; the seconds depend on the machine's load.

Run:  PYTHONPATH=src python benchmarks/dpm_v3.py [--config DIM SEED N_SAMPLES ...] [--threads 1]
(the default runs ``64 0 1024``, ``64 0 256``, ``64 1 1024``, ``16 3 1024`` and both checks; about
half a minute on one CPU thread).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.solvers.dpm_v3 import EMS
from timestepper.tuning.ems import compute_ems, paper_options

OUT = Path(__file__).resolve().parent / "results"
F64 = torch.float64
NFES = (5, 6, 8, 10)
N_POINTS = 128
N_TEST = 256
CONFIGS = [(64, 0, 1024), (64, 0, 256), (64, 1, 1024), (16, 3, 1024)]
SWEEP_POINTS = (32, 64, 128, 256)
BASELINES = ("dpmpp-2m", "dpmpp-3m", "unipc-bh2")
COLUMNS = (*BASELINES, "v3 (no EMS)", "v3", "v3 (paper options)")


class HeldOut:
    """A mixture's exact denoiser and ``n_test`` held-out noises (seed 123) with their exact solution."""

    def __init__(self, dim: int, components: int, seed: int, n_test: int = N_TEST) -> None:
        self.dim = dim
        self.gmm = GaussianMixture.random(dim, components, seed=seed)
        sched = ts.VPLinearSchedule()
        self.den = self.gmm.denoiser(sched, "epsilon")
        self.noise = torch.randn(n_test, dim, generator=torch.Generator().manual_seed(123), dtype=F64)
        al, si = sched.alpha_sigma(torch.tensor(sched.t_max, dtype=F64))
        self.ref = self.gmm.reference_solution(self.noise / al, float(si / al), 0.0)

    def ems(self, n_samples: int, n_points: int = N_POINTS) -> tuple[EMS, float]:
        """The statistics from ``n_samples`` trajectories (generator 0) and the seconds they took."""
        t0 = time.perf_counter()
        ems = compute_ems(self.den, (self.dim,), n_samples=n_samples, n_points=n_points, generator=0)
        return ems, time.perf_counter() - t0

    def error(self, name: str, nfe: int, **opts) -> float:
        x = ts.sample(self.den, self.noise, name, steps=nfe, solver_options=opts)
        return float((x - self.ref).norm(dim=-1).mean())


def run_config(dim: int, seed: int, n_samples: int) -> dict:
    """The EMS cost and the error table of one mixture / sample count."""
    p = HeldOut(dim, 8, seed)
    ems, seconds = p.ems(n_samples)
    rows = {}
    for nfe in NFES:
        errs = [p.error(b, nfe) for b in BASELINES]
        errs += [p.error("dpm-solver-v3", nfe), p.error("dpm-solver-v3", nfe, statistics=ems),
                 p.error("dpm-solver-v3", nfe, statistics=ems, **paper_options(nfe))]
        rows[str(nfe)] = dict(zip(COLUMNS, errs, strict=True))
    return {"dim": dim, "seed": seed, "n_samples": n_samples, "ems_model_calls": int(ems.header["model_calls"]),
            "ems_seconds": seconds, "errors": rows}


def weak_case() -> dict:
    """Where v3 does not win: ``GaussianMixture.random(16, 6, seed=3)`` at NFE 10, 64 held-out noises."""
    p = HeldOut(16, 6, 3, n_test=64)
    out = {"dpmpp-2m": p.error("dpmpp-2m", 10), "unipc-bh2": p.error("unipc-bh2", 10),
           "v3 order 2, no EMS": p.error("dpm-solver-v3", 10, order=2)}
    for n in (256, 1024):
        out[f"v3, EMS from {n} samples"] = p.error("dpm-solver-v3", 10, statistics=p.ems(n)[0])
    return out


def points_sweep() -> dict:
    """v3 (defaults) on the first mixture with EMS from 1024 samples at 32 to 256 log-SNR points."""
    p = HeldOut(64, 8, 0)
    out = {}
    for n_points in SWEEP_POINTS:
        ems = p.ems(1024, n_points)[0]
        out[str(n_points)] = {str(nfe): p.error("dpm-solver-v3", nfe, statistics=ems) for nfe in NFES}
    return out


def gains(res: dict, column: str) -> list[float]:
    """Best baseline error over ``column``'s error, per NFE."""
    return [min(r[b] for b in BASELINES) / r[column] for r in res["errors"].values()]


def config_section(res: dict) -> list[str]:
    title = (f"### d = {res['dim']}, 8 components, seed {res['seed']}, EMS from {res['n_samples']} samples "
             f"({res['ems_model_calls']} model calls, {res['ems_seconds']:.1f} s)")
    head = "| NFE | " + " | ".join(COLUMNS) + " | gain v3 | gain v3 (paper options) |"
    lines = [title, "", head, "|" + "---|" * (len(COLUMNS) + 3)]
    g_def, g_paper = gains(res, "v3"), gains(res, "v3 (paper options)")
    for (nfe, r), a, b in zip(res["errors"].items(), g_def, g_paper, strict=True):
        lines.append(f"| {nfe} | " + " | ".join(f"{r[c]:.4f}" for c in COLUMNS) + f" | {a:.2f}x | {b:.2f}x |")
    return lines


def cost_table(results: list[dict]) -> list[str]:
    head = "| mixture | EMS samples | EMS model calls | EMS seconds | " + \
        " | ".join(f"gain at NFE {n}" for n in NFES) + " |"
    lines = [head, "|" + "---|" * (4 + len(NFES))]
    for res in results:
        cells = " | ".join(f"{g:.2f}x" for g in gains(res, "v3"))
        lines.append(f"| d = {res['dim']}, seed {res['seed']} | {res['n_samples']} | {res['ems_model_calls']} | "
                     f"{res['ems_seconds']:.1f} | {cells} |")
    return lines


def checks_section(checks: dict) -> list[str]:
    if not checks:
        return []
    weak = checks["weak_case"]
    out = ["### Where v3 does not win: `GaussianMixture.random(16, 6, seed=3)`, NFE 10, 64 held-out noises", "",
           "| " + " | ".join(weak) + " |", "|" + "---|" * len(weak),
           "| " + " | ".join(f"{v:.4f}" for v in weak.values()) + " |", "",
           "### Number of statistics points: d = 64, seed 0, EMS from 1024 samples, v3 (defaults)", "",
           "| points | " + " | ".join(f"NFE {n}" for n in NFES) + " |", "|" + "---|" * (len(NFES) + 1)]
    for n_points, errs in checks["points_sweep"].items():
        out.append(f"| {n_points} | " + " | ".join(f"{v:.4f}" for v in errs.values()) + " |")
    return [*out, ""]


def render(results: list[dict], checks: dict, command: str, total: float) -> str:
    machine = (f"{platform.machine()} {platform.system()}, torch {torch.__version__}, "
               f"{torch.get_num_threads()} thread(s)")
    intro = [f"Machine: {machine}; run time {total:.0f} s. Reproduce: `{command}`.",
             "Exact Gaussian mixtures (8 components) under the VP linear schedule, exact epsilon denoiser.",
             f"EMS: `compute_ems(den, (d,), n_samples, n_points={N_POINTS}, generator=0)`; its cost is batched",
             "model calls and seconds (the seconds depend on the machine's load).",
             f"Cells: mean L2 error at sigma = 0 against the exact PF-ODE solution on {N_TEST} held-out noises",
             "(seed 123), default log-SNR grid with the last step to zero noise. `v3 (no EMS)`: DPM-Solver++(3M)",
             "with the pseudo-corrector; `v3`: the defaults with the statistics; `v3 (paper options)`:",
             "`paper_options(nfe)`. Gain: the best of dpmpp-2m, dpmpp-3m and unipc-bh2 divided by v3's error",
             "(above 1: v3 is better). For comparison, one sample at 10 NFE is 10 model calls."]
    out = ["## DPM-Solver-v3 with empirical model statistics", "", " ".join(intro), "",
           "### EMS cost and gain of v3 (defaults)", "", *cost_table(results), ""]
    for res in results:
        out += [*config_section(res), ""]
    return "\n".join(out + checks_section(checks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=int, nargs=3, action="append", metavar=("DIM", "SEED", "N_SAMPLES"),
                    help="one configuration (repeatable); replaces the default set and skips the two checks")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    configs = [tuple(c) for c in args.config] if args.config else CONFIGS
    t0 = time.perf_counter()
    results = []
    for dim, seed, n in configs:
        results.append(run_config(dim, seed, n))
        print(f"d={dim} seed={seed} n={n}: EMS {results[-1]['ems_seconds']:.1f} s", flush=True)
    checks = {} if args.config else {"weak_case": weak_case(), "points_sweep": points_sweep()}
    command = "PYTHONPATH=src python benchmarks/dpm_v3.py " + " ".join(sys.argv[1:])
    text = render(results, checks, command.strip(), time.perf_counter() - t0)
    OUT.mkdir(exist_ok=True)
    (OUT / "dpm_v3.md").write_text(text + "\n")
    (OUT / "dpm_v3.json").write_text(json.dumps({"configs": results, **checks}, indent=1))
    print(text)


if __name__ == "__main__":
    main()

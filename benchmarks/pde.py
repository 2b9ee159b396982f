"""PDE benchmarks -> benchmarks/results/pde.md (+ pde.json).

1. Solver speed: ETDRK4 steps per second for Kuramoto–Sivashinsky (length 64, N = 256, batch 64),
   timestepper (torch, float64 and float32) against a plain-NumPy ETDRK4 of the same scheme
   (:mod:`timestepper.pde.reference`, Kassam & Trefethen contour coefficients), run side by side
   in this process on one thread; the two float64 results are compared for parity.
2. Accuracy of ETDRK4 vs ETDRK2 / ETD1 / IMEX Euler / RK4 on KS against a fine reference.

PDE-Refiner vs the MSE U-Net on KS is benchmarks/pde_refiner.py (results/pde_refiner.md).

Run:  PYTHONPATH=src nice -n 10 python benchmarks/pde.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from timestepper import pde
from timestepper.pde.reference import NumpyKSETDRK4

RESULTS = Path(__file__).resolve().parent / "results"


def solver_speed(steps: int, repeats: int) -> dict:
    eq = pde.KuramotoSivashinsky(64.0, 256)
    u0 = pde.data.initial_conditions(eq, range(64), seed=0, stream=0)
    ref = NumpyKSETDRK4(64.0, 256, 0.2)
    t_end = steps * 0.2
    runs = {
        "NumPy ETDRK4 float64": lambda: ref.simulate(u0.numpy(), steps),
        "timestepper ETDRK4 float64": lambda: eq.simulate(
            u0, t_end=t_end, dt=0.2, check_finite=False
        ),
        "timestepper ETDRK4 float32": lambda: eq.simulate(
            u0.float(), t_end=t_end, dt=0.2, check_finite=False
        ),
    }
    best = dict.fromkeys(runs, math.inf)
    for _ in range(repeats):  # interleaved, so load changes hit all alike
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    ours = eq.simulate(u0, t_end=t_end, dt=0.2)
    diff = float((ours - torch.from_numpy(ref.simulate(u0.numpy(), steps))).abs().max())
    rates = {name: steps / s for name, s in best.items()}
    return {
        "steps_per_s": rates,
        "max_abs_diff_float64": diff,
        "steps": steps,
        "batch": 64,
        "n": 256,
    }


def solver_accuracy() -> list[dict]:
    eq = pde.KuramotoSivashinsky(64.0, 256)
    u0 = pde.data.initial_conditions(eq, range(4), seed=1, stream=0)
    u0 = eq.simulate(u0, t_end=20.0, dt=0.05)  # past the initial transient
    ref = eq.simulate(u0, t_end=4.0, dt=0.2 / 64)
    rows = []
    for solver in ("etdrk4", "etdrk2", "etd1", "imex-euler", "rk4"):
        for h in (0.2, 0.1, 0.05):
            try:
                err = float(
                    (eq.simulate(u0, t_end=4.0, dt=h, solver=solver) - ref).norm() / ref.norm()
                )
            except FloatingPointError:
                err = math.inf
            rows.append({"solver": solver, "h": h, "rel_l2_error": err})
    return rows


def markdown(res: dict) -> str:
    sp = res["speed"]
    lines = ["## PDEs: spectral ETDRK4 solvers and neural surrogates", ""]
    lines += [
        f"Machine: {res['machine']}; torch {torch.__version__}, "
        f"numpy {np.__version__}; one thread; "
        f"shared by other jobs, so absolute rates are noisy and ratios are measured side by side.",
        "",
    ]
    lines += [
        f"### ETDRK4 speed, KS (length 64, N = {sp['n']}, batch {sp['batch']}, h = 0.2, "
        f"{sp['steps']} steps, best of repeats)",
        "",
    ]
    base = sp["steps_per_s"]["NumPy ETDRK4 float64"]
    lines += ["| implementation | steps/s | ratio vs NumPy |", "|---|---:|---:|"]
    for name, rate in sp["steps_per_s"].items():
        lines.append(f"| {name} | {rate:.0f} | {rate / base:.2f} |")
    lines += [
        "",
        f"Parity: max |ours - NumPy| after {sp['steps']} float64 "
        f"steps = {sp['max_abs_diff_float64']:.2e} "
        "(NumPy uses Kassam–Trefethen contour-integral coefficients, ours float64 phi functions).",
        "",
    ]
    lines += [
        "### Accuracy on KS (length 64, N = 256, t = 4 after "
        "a burn-in, relative L2 vs h/64 ETDRK4)",
        "",
    ]
    acc = res["accuracy"]
    hs = sorted({r["h"] for r in acc}, reverse=True)
    lines += [
        "| solver | " + " | ".join(f"h = {h}" for h in hs) + " |",
        "|---|" + "---:|" * len(hs),
    ]
    for s in dict.fromkeys(r["solver"] for r in acc):
        vals = [
            next(r["rel_l2_error"] for r in acc if r["solver"] == s and r["h"] == h) for h in hs
        ]
        lines.append(
            f"| {s} | "
            + " | ".join("blow-up" if not math.isfinite(v) else f"{v:.2e}" for v in vals)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--speed-steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--render-only", action="store_true", help="rewrite pde.md from pde.json")
    args = p.parse_args()
    if args.render_only:
        res = json.loads((RESULTS / "pde.json").read_text())
        (RESULTS / "pde.md").write_text(markdown(res) + "\n")
        return
    torch.set_num_threads(1)
    res = {"machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores visible"}
    res["speed"] = solver_speed(args.speed_steps, args.repeats)
    print(res["speed"])
    res["accuracy"] = solver_accuracy()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pde.json").write_text(json.dumps(res, indent=1))
    (RESULTS / "pde.md").write_text(markdown(res) + "\n")
    print(markdown(res))


if __name__ == "__main__":
    main()

"""Inversion round trips, BDIA sample quality, and gradient modes -> benchmarks/results/inversion.md.

On the exact 2-D Gaussian mixture (``GaussianMixture.random(2, seed=0)``), all in one process:

(a) ``ts.invert`` round trip per method at NFE 10, 20, 50, float32 and float64 (VP linear-beta
    schedule, epsilon prediction, uniform log-SNR grid): naive DDIM inversion, fixed-point (5
    iterations per step), BDIA (gamma = 1) given the state before the last (a sample's exact
    round trip) and BDIA from the image alone (companion estimated). Reported: largest
    per-sample relative noise error, sample (reconstruction) error, and the model calls of the
    inversion.
(b) Sample quality at equal NFE: mean error to the exact probability-flow ODE solution
    (``reference_solution``; EDM schedule sigma in [0.002, 80]) of DDIM and BDIA-DDIM.
(c) Gradients of ``sum(sin(x))`` w.r.t. the noise, a model weight and a conditioning vector at
    10, 50, 200 steps: direct / checkpoint / adjoint, relative error to direct, the bytes held
    for backward after the forward pass (tensors saved by autograd, measured with
    ``torch.autograd.graph.saved_tensors_hooks``: what grows with the steps; CPU has no peak
    allocator statistic) and the wall time of forward + backward, side by side.

Run:  PYTHONPATH=src python benchmarks/inversion.py [--batch 4096]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

import timestepper as ts
from timestepper.bench import GaussianMixture

OUT = Path(__file__).parent / "results" / "inversion.md"
F64 = torch.float64


def round_trips(gmm, batch):
    den = gmm.denoiser(ts.VPLinearSchedule(), "epsilon")
    rows = ["| NFE | dtype | method | noise error | sample error | inversion model calls |",
            "|---|---|---|---|---|---|"]
    for steps in (10, 20, 50):
        for dtype in (torch.float32, F64):
            noise = torch.randn(batch, 2, generator=torch.Generator().manual_seed(0), dtype=F64).to(dtype)
            x = ts.sample(den, noise, "ddim", steps=steps)
            sol = ts.sample(den, noise, "bdia-ddim", steps=steps, save="all", return_solution=True)
            cases = [("naive DDIM", ts.invert(den, x, "ddim", steps=steps, true_noise=noise)),
                     ("fixed-point (5 it.)", ts.invert(den, x, "ddim", steps=steps, method="fixed-point",
                                                       iterations=5, true_noise=noise)),
                     ("BDIA, pair given", ts.invert(den, sol.x, "bdia-ddim", steps=steps,
                                                    previous=sol.ys[-2], true_noise=noise)),
                     ("BDIA, image only", ts.invert(den, sol.x, "bdia-ddim", steps=steps, true_noise=noise))]
            for name, r in cases:
                rows.append(f"| {steps} | {str(dtype)[6:]} | {name} | {r.noise_error:.1e} | "
                            f"{r.sample_error:.1e} | {r.nfe} |")
    return rows


def quality(gmm, batch):
    smax = 80.0
    den = gmm.denoiser(ts.EDMSchedule(0.002, smax), "sample")
    noise = torch.randn(batch, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    ref = gmm.reference_solution(noise * math.sqrt(1 + smax**2), s_start=smax, s_end=0.0)
    solvers = [("ddim", {}), ("bdia-ddim", {"gamma": 1.0}), ("bdia-ddim", {"gamma": 0.5}),
               ("bdia-ddim", {"gamma": 0.2})]
    rows = ["| NFE | ddim | bdia-ddim gamma=1 | bdia-ddim gamma=0.5 | bdia-ddim gamma=0.2 |",
            "|---|---|---|---|---|"]
    for steps in (5, 10, 20, 50):
        errs = [(ts.sample(den, noise, s, steps=steps, solver_options=o) - ref).norm(dim=-1).mean().item()
                for s, o in solvers]
        rows.append(f"| {steps} | " + " | ".join(f"{e:.4f}" for e in errs) + " |")
    return rows


class Scaled(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0, dtype=F64))
        self.fn = fn

    def forward(self, x, t, shift):
        return self.w * self.fn(x, t) + shift


def _run(den, inputs, noise0, solver, steps, mode):
    noise = noise0.clone().requires_grad_(True)
    for p in inputs:
        p.grad = None
    held = [0]

    def pack(t):
        held[0] += t.numel() * t.element_size()
        return t

    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        x = ts.sample(den, noise, solver, steps=steps, gradient=mode)
    x.sin().sum().backward()
    wall = time.perf_counter() - t0
    return torch.cat([noise.grad.flatten(), *[p.grad.flatten() for p in inputs]]), held[0], wall


def gradients(gmm, batch):
    sched = ts.VPLinearSchedule()
    shift = torch.zeros(2, dtype=F64, requires_grad=True)
    net = Scaled(gmm.denoiser(sched, "epsilon").model_fn)
    den = ts.Denoiser(net, sched, "epsilon", model_kwargs={"shift": shift})
    noise = torch.randn(batch, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    rows = ["| solver | steps | mode | rel. error to direct | held for backward (MB) | wall (s) |",
            "|---|---|---|---|---|---|"]
    for solver in ("ddim", "bdia-ddim"):
        for steps in (10, 50, 200):
            ref = None
            for mode in ("direct", "checkpoint", "adjoint"):
                g, held, wall = _run(den, [net.w, shift], noise, solver, steps, mode)
                ref = g if ref is None else ref
                err = ((g - ref).norm() / ref.norm()).item()
                rows.append(f"| {solver} | {steps} | {mode} | {err:.1e} | {held / 2**20:.2f} | {wall:.2f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gmm = GaussianMixture.random(2, seed=0)
    t0 = time.perf_counter()
    parts = ["# Inversion and gradients through sampling", "",
             f"Exact 2-D Gaussian mixture, batch {args.batch}, {args.threads} thread(s); "
             "`PYTHONPATH=src python benchmarks/inversion.py`.", "",
             "## (a) Round trip sample -> invert -> sample (VP linear, epsilon, log-SNR grid)", "",
             *round_trips(gmm, args.batch), "",
             "## (b) Error to the exact ODE solution at equal NFE (EDM schedule)", "",
             *quality(gmm, args.batch), "",
             "## (c) Gradients of sum(sin(x)) w.r.t. noise, weight, conditioning", "",
             *gradients(gmm, args.batch), ""]
    parts.append(f"Total run time {time.perf_counter() - t0:.0f} s.")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(parts) + "\n")
    print("\n".join(parts))


if __name__ == "__main__":
    main()

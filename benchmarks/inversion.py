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

With ``--digits`` (or ``--digits-checkpoint PATH``), and on the digits model:

(d) the round trips of (a) on a small digits flow model (``benchmarks/_digits.py``: trained
    here as ``timestepper train digits`` trains it, 800 steps of a 16/32-channel U-Net by
    default, or loaded from a ``timestepper train digits`` checkpoint), on its default grid
    (uniform for a flow), 128 images; float64 runs the network's weights and activations in float64.

Run:  PYTHONPATH=src python benchmarks/inversion.py [--batch 4096] [--digits | --digits-checkpoint PATH]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from _digits import SHAPE, in_dtype, load_digits, pretrain_digits  # benchmarks/_digits.py

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.diffusion.grids import default_spacing

OUT = Path(__file__).parent / "results" / "inversion.md"
F64 = torch.float64


def _inversions(den, noise, steps, grid):
    """(method, InversionResult) of every inversion method, from samples of ``noise``."""
    x = ts.sample(den, noise, "ddim", steps=steps, grid=grid)
    sol = ts.sample(den, noise, "bdia-ddim", steps=steps, grid=grid, save="all", return_solution=True)
    common = {"steps": steps, "grid": grid, "true_noise": noise}
    rows = [("naive DDIM", ts.invert(den, x, "ddim", **common)),
            ("fixed-point (5 it.)", ts.invert(den, x, "ddim", method="fixed-point", iterations=5, **common)),
            ("BDIA, pair given", ts.invert(den, sol.x, "bdia-ddim", previous=sol.ys[-2], **common)),
            ("BDIA, image only", ts.invert(den, sol.x, "bdia-ddim", **common))]
    if float(sol.extras["grid"].alpha[0]) > 0.0:  # BDIA-EDM has no exact inverse from pure noise
        edm = ts.sample(den, noise, "bdia-edm", steps=steps, grid=grid, save="all", return_solution=True)
        rows.append(("BDIA-EDM, pair given", ts.invert(den, edm.x, "bdia-edm", previous=edm.ys[-2], **common)))
    return rows


def round_trips(dens, shape, batch, grid="logsnr"):
    """Rows of (a)/(d): ``dens`` maps each dtype to the denoiser computing in it."""
    rows = ["| steps | dtype | method | noise error | sample error | inversion model calls |",
            "|---|---|---|---|---|---|"]
    for steps in (10, 20, 50):
        for dtype, den in dens.items():
            noise = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0), dtype=F64).to(dtype)
            for name, r in _inversions(den, noise, steps, grid):
                rows.append(f"| {steps} | {str(dtype)[6:]} | {name} | {r.noise_error:.1e} | "
                            f"{r.sample_error:.1e} | {r.nfe} |")
    return rows


def digits_model(args):
    """The digits denoiser of (d) (loaded from ``--digits-checkpoint`` or trained here) and how
    it was made, in words."""
    if args.digits_checkpoint:
        return load_digits(args.digits_checkpoint), f"checkpoint `{args.digits_checkpoint}`"
    den, info = pretrain_digits(args.digits_train_steps, args.digits_channels)
    return den, (f"U-Net {'/'.join(map(str, args.digits_channels))} channels trained here as "
                 f"`timestepper train digits` trains it ({info['train_steps']} Adam steps of batch 128, "
                 f"{info['train_s']:.0f} s, EMA weights)")


def digits_round_trips(den, what, batch):
    """(d): the round trips of (a) on the digits model."""
    t0 = time.perf_counter()
    grid = default_spacing(den.schedule)
    dens = {torch.float32: in_dtype(den, torch.float32), F64: in_dtype(den, F64)}
    rows = round_trips(dens, SHAPE, batch, grid)
    head = [f"Digits model: {what}; {den.prediction} prediction, {grid} grid, {batch} images of noise; "
            "float64 runs the network in float64 (its time embedding stays float32, the same map both "
            f"ways). Round trips {time.perf_counter() - t0:.0f} s.", ""]
    return head + rows


def _edm_problem(gmm, batch):
    """The EDM-schedule mixture denoiser, noise and exact ODE solutions of (b) and (b2)."""
    smax = 80.0
    den = gmm.denoiser(ts.EDMSchedule(0.002, smax), "sample")
    noise = torch.randn(batch, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    return den, noise, gmm.reference_solution(noise * math.sqrt(1 + smax**2), s_start=smax, s_end=0.0)


def _error_rows(gmm, batch, solvers, head, budgets, per_step: bool):
    """Rows of mean error to the exact ODE solution; ``per_step``: each budget is model calls, the
    steps are ``budget // nfe_per_step`` and the calls used are shown in brackets."""
    den, noise, ref = _edm_problem(gmm, batch)
    rows = [head, "|" + "---|" * (len(solvers) + 1)]
    for budget in budgets:
        cells = []
        for s, o in solvers:
            steps = budget // ts.solvers.get(s, **o).nfe_per_step if per_step else budget
            sol = ts.sample(den, noise, s, steps=steps, solver_options=o, return_solution=True)
            err = f"{(sol.x - ref).norm(dim=-1).mean().item():.4f}"
            cells.append(f"{err} ({sol.stats.nfe})" if per_step else err)
        rows.append(f"| {budget} | " + " | ".join(cells) + " |")
    return rows


def quality(gmm, batch):
    """(b): BDIA-DDIM's gamma next to DDIM at equal NFE, EDM schedule."""
    solvers = [("ddim", {}), ("bdia-ddim", {"gamma": 1.0}), ("bdia-ddim", {"gamma": 0.5}),
               ("bdia-ddim", {"gamma": 0.2})]
    head = "| NFE | ddim | bdia-ddim gamma=1 | bdia-ddim gamma=0.5 | bdia-ddim gamma=0.2 |"
    return _error_rows(gmm, batch, solvers, head, (5, 10, 20, 50), per_step=False)


def edm_quality(gmm, batch):
    """(b2): BDIA-EDM next to EDM Heun at (about) equal model calls, EDM schedule."""
    solvers = [("heun", {}), ("bdia-edm", {"gamma": 1.0}), ("bdia-edm", {"gamma": 0.5}),
               ("bdia-edm", {"gamma": 0.5, "backward": "euler"})]
    head = "| NFE budget | heun | bdia-edm gamma=1 | bdia-edm gamma=0.5 | bdia-edm gamma=0.5, Euler backward |"
    return _error_rows(gmm, batch, solvers, head, (12, 24, 48, 96), per_step=True)


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


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--digits", action="store_true", help="add (d): the round trips on a digits model")
    ap.add_argument("--digits-checkpoint", metavar="PATH", default=None,
                    help="a `timestepper train digits` checkpoint for (d) instead of training one (implies --digits)")
    ap.add_argument("--digits-train-steps", type=int, default=800)
    ap.add_argument("--digits-channels", type=lambda v: [int(c) for c in v.split(",")], default=[16, 32])
    ap.add_argument("--digits-batch", type=int, default=128, help="images per round trip on digits")
    args = ap.parse_args()
    args.digits = args.digits or args.digits_checkpoint is not None
    return args


def _command(args) -> str:
    cmd = f"PYTHONPATH=src python benchmarks/inversion.py --batch {args.batch} --threads {args.threads}"
    if args.digits_checkpoint:
        return cmd + f" --digits-checkpoint {args.digits_checkpoint} --digits-batch {args.digits_batch}"
    if args.digits:
        return cmd + (f" --digits --digits-train-steps {args.digits_train_steps} --digits-channels "
                      f"{','.join(map(str, args.digits_channels))} --digits-batch {args.digits_batch}")
    return cmd


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    gmm = GaussianMixture.random(2, seed=0)
    den = gmm.denoiser(ts.VPLinearSchedule(), "epsilon")
    t0 = time.perf_counter()
    digits = digits_model(args) if args.digits else None  # first: a bad checkpoint fails at once
    parts = ["# Inversion and gradients through sampling", "",
             f"Exact 2-D Gaussian mixture, batch {args.batch}, {args.threads} thread(s); `{_command(args)}`.", "",
             "## (a) Round trip sample -> invert -> sample (VP linear, epsilon, log-SNR grid)", "",
             *round_trips({torch.float32: den, F64: den}, (2,), args.batch), "",
             "## (b) Error to the exact ODE solution at equal NFE (EDM schedule)", "",
             *quality(gmm, args.batch), "",
             "## (b2) BDIA-EDM next to EDM Heun at about equal model calls (EDM schedule; "
             "error to the exact ODE solution, NFE used in brackets)", "",
             *edm_quality(gmm, args.batch), "",
             "## (c) Gradients of sum(sin(x)) w.r.t. noise, weight, conditioning", "",
             *gradients(gmm, args.batch), ""]
    if digits is not None:
        parts += ["## (d) Round trip on the digits model (as (a))", "", *digits_round_trips(*digits, args.digits_batch),
                  ""]
    parts.append(f"Total run time {time.perf_counter() - t0:.0f} s.")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(parts) + "\n")
    print("\n".join(parts))


if __name__ == "__main__":
    main()

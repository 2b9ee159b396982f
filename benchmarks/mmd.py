"""Benchmark of MMD-DDM (Aiello et al. 2023): a small digits flow model fine-tuned for a 5-step
DDIM budget; Fréchet distance at that budget and at others before and after, with the cost.

    PYTHONPATH=src python benchmarks/mmd.py --threads 1 --train-steps 3000 --iterations 150

Writes benchmarks/results/mmd.md (+ mmd.json). Every number in the Markdown is computed here.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import torch
from _digits import pretrain_digits, run_and_write  # benchmarks/_digits.py, beside this script

import timestepper as ts
from timestepper.train import flow_matching, make_model, mmd_finetune, toy_2d, train
from timestepper.train.data import digits
from timestepper.train.generate import generate
from timestepper.train.metrics import digits_report, split_half_distance
from timestepper.train.mmd import budget_mmd

CONTROL = "control: flow matching continued as long"
VARIANTS = {
    "cubic kernel on classifier features (paper's setup)": {"kernel": "polynomial",
                                                            "features": "digits"},
    "RBF mixture on raw pixels": {"kernel": "rbf", "features": "raw"},
}


def pretrain(args, log) -> tuple[ts.Denoiser, dict]:
    """The model `timestepper train digits` builds (unconditional flow matching, U-Net), with
    fewer steps (the CLI's default is 4000)."""
    den, info = pretrain_digits(args.train_steps, args.channels)
    log(f"pretrained: {info}")
    return den, info


def continued(den: ts.Denoiser, seconds: float, log) -> tuple[ts.Denoiser, dict]:
    """Control: flow-matching training continued from the pretrained weights for ``seconds``
    (the cost of a fine-tuning run), to separate MMD-DDM's effect from more training."""
    x, _ = digits("train")
    model = copy.deepcopy(den.model_fn).train().requires_grad_(True)
    t0 = time.perf_counter()
    res = train(model, flow_matching(), x, steps=10**9, batch_size=128, lr=2e-3, seed=1,
                progress=False, max_seconds=seconds)
    info = {"seconds": time.perf_counter() - t0, "steps": len(res.losses)}
    log(f"control: {info}")
    return ts.Denoiser(res.sampling_model, den.schedule, "velocity"), info


def frechet_row(den: ts.Denoiser, args) -> dict[int, float]:
    row = {}
    for nfe in args.budgets:
        s, _ = generate(den, args.n, (1, 8, 8), "ddim", nfe, "uniform", seed=1)
        row[nfe] = digits_report(s)["frechet"]
    return row


def gradient_costs(den: ts.Denoiser, args) -> dict[str, float]:
    """Seconds per fine-tuning iteration for each gradient mode (a few iterations each)."""
    x, _ = digits("train")
    out = {}
    for mode in ("direct", "checkpoint", "adjoint"):
        r = mmd_finetune(den, x, steps=args.steps, solver="ddim", iterations=3,
                         batch_size=args.batch_size, lr=args.lr, gradient=mode,
                         **VARIANTS[next(iter(VARIANTS))])
        out[mode] = r.seconds / 3
    return out


def moons(args, log) -> dict:
    """2-D moons: an MLP flow, fine-tuned at 2 steps with the RBF mixture on raw points; held-out
    MMD^2 (1000 samples vs 1000 new points) at 2 and 20 steps before and after."""
    rf = ts.RectifiedFlowSchedule()
    data = toy_2d("moons", 4000, seed=0)
    torch.manual_seed(0)
    model = make_model("mlp", {"dim": 2, "hidden": 64, "depth": 2}, rf)
    r = train(model, flow_matching(), data, steps=args.moons_steps, batch_size=256, lr=2e-3,
              seed=0, progress=False)
    den = ts.Denoiser(r.sampling_model, rf, "velocity")
    held = toy_2d("moons", 1000, seed=1)
    z = torch.randn(1000, 2, generator=torch.Generator().manual_seed(5))
    ft = mmd_finetune(den, data, steps=2, kernel="rbf", iterations=40, batch_size=256, lr=2e-3)
    out = {"train_steps": args.moons_steps, "seconds": ft.seconds}
    for name, d in (("pretrained", den), ("fine-tuned at 2 steps", ft.denoiser)):
        out[name] = {s: budget_mmd(d, held, z, s, kernel="rbf") for s in (2, 20)}
    log(f"moons {out}")
    return out


def run(args, log) -> dict:
    den, info = pretrain(args, log)
    out: dict = {"pretrain": info, "floor": split_half_distance(), "rows": {}}
    out["rows"]["pretrained"] = frechet_row(den, args)
    log(f"pretrained: {out['rows']['pretrained']}")
    x, _ = digits("train")
    out["finetune"] = {}
    for name, opts in VARIANTS.items():
        r = mmd_finetune(den, x, steps=args.steps, solver="ddim", iterations=args.iterations,
                         batch_size=args.batch_size, lr=args.lr, gradient="direct", seed=0, **opts)
        out["finetune"][name] = {"seconds": r.seconds, "first_loss": r.losses[0],
                                 "last_losses": r.losses[-10:]}
        out["rows"][name] = frechet_row(r.denoiser, args)
        log(f"{name}: {r.seconds:.0f}s {out['rows'][name]}")
    seconds = next(iter(out["finetune"].values()))["seconds"]
    ctl, out["control"] = continued(den, seconds, log)
    out["finetune"][CONTROL] = {"seconds": out["control"]["seconds"]}
    out["rows"][CONTROL] = frechet_row(ctl, args)
    log(f"control: {out['rows'][CONTROL]}")
    out["gradient_costs"] = gradient_costs(den, args)
    log(f"costs {out['gradient_costs']}")
    out["moons"] = moons(args, log)
    return out


def markdown(res: dict, args) -> str:
    p = res["pretrain"]
    budgets = args.budgets
    L = ["## MMD-DDM: fine-tuning digits for a 5-step budget", "",
         f"Run on {platform.processor() or platform.machine()}, torch {torch.__version__}, "
         f"{args.threads} thread(s), a CPU shared with other jobs. Command: `PYTHONPATH=src python "
         f"benchmarks/mmd.py --threads {args.threads} --train-steps {args.train_steps} "
         f"--iterations {args.iterations} --steps {args.steps} --batch-size {args.batch_size} "
         f"--lr {args.lr:g} --n {args.n} --channels {','.join(map(str, args.channels))} "
         f"--moons-steps {args.moons_steps}`.", "",
         f"Pretrained model: unconditional flow matching on the digits train split (U-Net "
         f"{'/'.join(map(str, args.channels))} channels, {p['train_steps']} Adam steps of batch "
         f"128, {p['train_s']:.0f} s, EMA weights). MMD-DDM fine-tunes a copy for DDIM with "
         f"{args.steps} steps (uniform grid): {args.iterations} Adam steps (lr {args.lr:g}, "
         f"gradient norm clipped at 0.5) of the unbiased MMD^2 between {args.batch_size} samples "
         f"and {args.batch_size} train images, backpropagated through the sampler "
         "(`gradient='direct'`).", "",
         f"Fréchet distance (digits classifier features, squared, like FID) of {args.n} DDIM "
         f"samples against the test split, per number of steps; real split-half floor "
         f"{res['floor']:.2f} (two halves of 270 images: a smaller sample, so a higher distance than "
         f"{args.n} samples against 540 would give). The first variant trains on the metric's own features (as the "
         "paper trains on Inception features and reports FID); the second does not. The control "
         "continues the pretraining (flow matching, lr 2e-3, batch 128) from the same weights "
         f"for as long as the first fine-tuning ran ({res['control']['steps']} steps).", "",
         "| model | fine-tuning time | " + " | ".join(f"{b} steps" for b in budgets) + " |",
         "|---|---|" + "---|" * len(budgets)]
    for name, row in res["rows"].items():
        cost = f"{res['finetune'][name]['seconds']:.0f} s" if name in res["finetune"] else "-"
        L.append(f"| {name} | {cost} | " + " | ".join(f"{row[b]:.2f}" for b in budgets) + " |")
    c = res["gradient_costs"]
    L += ["", "Seconds per fine-tuning iteration by gradient mode (cubic kernel on features, "
          f"batch {args.batch_size}, {args.steps} steps): "
          + ", ".join(f"{k} {v:.2f}" for k, v in c.items()) + ".", ""]
    m = res["moons"]
    L += [f"2-D moons (MLP flow, {m['train_steps']} steps; fine-tuned at 2 DDIM steps with the "
          f"RBF mixture on raw points, 40 Adam steps of batch 256, {m['seconds']:.0f} s): "
          "held-out MMD^2 (1000 samples against 1000 new points, same kernel)", "",
          "| model | 2 steps | 20 steps |", "|---|---|---|"]
    for name in ("pretrained", "fine-tuned at 2 steps"):
        L.append(f"| {name} | {m[name][2]:.4f} | {m[name][20]:.4f} |")
    return "\n".join(L) + "\n"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-steps", type=int, default=3000)
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--steps", type=int, default=5, help="the step budget fine-tuned for")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--n", type=int, default=1000, help="samples per Fréchet distance")
    p.add_argument("--budgets", default="2,5,10,20")
    p.add_argument("--channels", default="16,32")
    p.add_argument("--moons-steps", type=int, default=300)
    args = p.parse_args()
    args.budgets = [int(v) for v in args.budgets.split(",")]
    args.channels = [int(v) for v in args.channels.split(",")]
    return args


def main() -> None:
    args = parse_args()
    run_and_write("mmd", lambda log: run(args, log), lambda res: markdown(res, args), args.threads)


if __name__ == "__main__":
    main()

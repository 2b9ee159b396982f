"""Benchmark of distillation: BOOT (Gu et al. 2023) and Rectified Diffusion (Wang et al. 2024)
against the undistilled teacher at the same NFE, on a VP epsilon digits model and on an exact
Gaussian mixture.

    PYTHONPATH=src python benchmarks/distill.py            # default: a few minutes on one core
    PYTHONPATH=src python benchmarks/distill.py --full     # longer training, more samples

Writes benchmarks/results/distill.md (+ distill.json). Every number in the Markdown is computed
here; training is budgeted in iterations, wall times are measured in this one run.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable

import torch
from _digits import SHAPE, pretrain_digits, run_and_write  # benchmarks/_digits.py, beside this script

import timestepper as ts
from timestepper.bench import GaussianMixture, sliced_wasserstein
from timestepper.train import DenoisingObjective, make_model, train
from timestepper.train.boot import BootStudent, boot_distill, boot_sample
from timestepper.train.data import digits
from timestepper.train.metrics import digits_report, split_half_distance
from timestepper.train.networks import MLP, UNet
from timestepper.train.rectified import first_order_deviation, flow_straightness, rectified_pairs, rectify

NFES = (1, 2, 4, 8, 20)
DEFAULTS = {"train_steps": 2000, "boot_iterations": 600, "rectify_steps": 600, "pairs": 4000,
            "n": 1000, "gmm_iterations": 400}
FULL = {"train_steps": 8000, "boot_iterations": 4000, "rectify_steps": 4000, "pairs": 10000,
        "n": 2000, "gmm_iterations": 1500}


# --- digits ------------------------------------------------------------------------------------


def fd_row(draw: Callable[[int], torch.Tensor]) -> dict[int, float]:
    """Fréchet distance (digits classifier features, against the test split) at every NFE of
    ``draw(nfe) -> samples``."""
    return {nfe: digits_report(draw(nfe))["frechet"] for nfe in NFES}


def teacher_rows(teacher: ts.Denoiser, z: torch.Tensor) -> dict[str, dict[int, float]]:
    return {f"teacher, {solver}": fd_row(lambda k, s=solver: ts.sample(teacher, z, s, k))
            for solver in ("ddim", "dpmpp-2m")}


def run_boot(teacher: ts.Denoiser, z: torch.Tensor, args, log) -> tuple[dict, BootStudent]:
    torch.manual_seed(1)
    student = BootStudent(UNet(size=SHAPE[-1], channels=tuple(args.channels)), teacher.schedule)
    res = boot_distill(teacher, student, SHAPE, prediction="epsilon", iterations=args.boot_iterations,
                       batch_size=128, lr=args.boot_lr, intervals=args.boot_intervals, ema_decay=0.999,
                       seed=1)
    g = res.student
    row = fd_row(lambda k: boot_sample(g, z, teacher, k - 1))
    info = {"iterations": len(res.losses), "seconds": res.seconds, "first_loss": res.losses[0],
            "last_loss": statistics.fmean(res.losses[-50:]), "row": row}
    log(f"BOOT {info}")
    return info, g


def run_rectified(teacher: ts.Denoiser, z: torch.Tensor, args, log) -> tuple[dict, ts.Denoiser, ts.Denoiser]:
    """One round of Rectified Diffusion from the teacher's weights, and the control: the same
    number of steps of the teacher's own objective on the real data (independent noise)."""
    t0 = time.perf_counter()
    pairs = rectified_pairs(teacher, args.pairs, SHAPE, prediction="epsilon", solver="dpmpp-2m",
                            steps=args.pair_steps, seed=11)
    pair_s = time.perf_counter() - t0
    opts = {"steps": args.rectify_steps, "batch_size": 128, "lr": args.rectify_lr, "warmup": 50, "seed": 1,
            "progress": False}
    t0 = time.perf_counter()
    rd = rectify(teacher, _trainable(teacher), pairs, prediction="epsilon", **opts)
    rect_s = time.perf_counter() - t0
    x, _ = digits("train")
    t0 = time.perf_counter()
    ctl = train(_trainable(teacher), DenoisingObjective(teacher.schedule, "epsilon"), x, **opts)
    ctl_s = time.perf_counter() - t0
    control = ts.Denoiser(ctl.sampling_model, teacher.schedule, "epsilon")
    info = {"pairs": args.pairs, "pair_steps": args.pair_steps, "pair_s": pair_s, "steps": args.rectify_steps,
            "seconds": rect_s, "control_s": ctl_s,
            "row": fd_row(lambda k: ts.sample(rd.denoiser, z, "ddim", k)),
            "control_row": fd_row(lambda k: ts.sample(control, z, "ddim", k))}
    log(f"rectified {info}")
    return info, rd.denoiser, control


def _trainable(den: ts.Denoiser) -> torch.nn.Module:
    return copy.deepcopy(den.model_fn).train().requires_grad_(True)


def path_measures(models: dict[str, ts.Denoiser], z: torch.Tensor) -> dict[str, dict[str, float]]:
    return {name: {"first_order": first_order_deviation(d, z, 32), "straightness": flow_straightness(d, z, 32)}
            for name, d in models.items()}


def latency(models: dict[str, Callable[[torch.Tensor], torch.Tensor]], batch: int, repeats: int) -> dict[str, float]:
    """Median milliseconds of one evaluation on a batch of ``batch`` digits, the models timed in
    turn (round robin, so load on the machine falls on all alike)."""
    x = torch.randn(batch, *SHAPE)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for f in models.values():
            f(x)  # warm-up
        for _ in range(repeats):
            for name, f in models.items():
                t0 = time.perf_counter()
                f(x)
                times[name].append(1e3 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def sizes(modules: dict[str, torch.nn.Module]) -> dict[str, dict[str, int]]:
    out = {}
    for name, m in modules.items():
        ps = list(m.parameters())
        out[name] = {"params": sum(p.numel() for p in ps), "bytes": sum(p.numel() * p.element_size() for p in ps)}
    return out


def digits_section(args, log) -> dict:
    teacher, info = pretrain_digits(args.train_steps, args.channels, objective="eps")
    log(f"teacher {info}")
    z = torch.randn(args.n, *SHAPE, generator=torch.Generator().manual_seed(5))
    out: dict = {"teacher": info, "floor": split_half_distance(), "rows": teacher_rows(teacher, z)}
    log(f"teacher rows {out['rows']}")
    out["boot"], student = run_boot(teacher, z, args, log)
    out["rectified"], rect, control = run_rectified(teacher, z, args, log)
    zp = z[:500]
    out["paths"] = path_measures({"teacher": teacher, "Rectified Diffusion": rect, "control": control}, zp)
    log(f"paths {out['paths']}")
    tnet = teacher.model_fn
    t_max = torch.tensor(teacher.schedule.t_max, dtype=torch.float64)
    evals = {"teacher (= rectified, same network)": lambda x: tnet(x, t_max.to(torch.float32).expand(x.shape[0])),
             "BOOT student": lambda x: student(x, t_max)}
    out["latency"] = {b: latency(evals, b, args.latency_repeats) for b in (1, 256)}
    out["sizes"] = sizes({"teacher": tnet, "BOOT student": student, "Rectified Diffusion": rect.model_fn})
    log(f"latency {out['latency']} sizes {out['sizes']}")
    return out


# --- Gaussian mixture --------------------------------------------------------------------------


def gmm_section(args, log) -> dict:
    """BOOT and Rectified Diffusion with the exact mixture denoiser as the teacher (d = 2, eight
    components, DDPM's linear-beta VP schedule, epsilon prediction)."""
    gmm = GaussianMixture.random(2, 8, seed=0)
    vp = ts.VPDiscreteSchedule.from_betas()
    teacher = gmm.denoiser(vp, "epsilon", shared_time=False)
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(3))
    exact = gmm.sample(2000, torch.Generator().manual_seed(4))
    ref = ts.sample(teacher, z, "ddim", args.boot_intervals)
    torch.manual_seed(0)
    student = BootStudent(MLP(dim=2, hidden=64, depth=2), vp)
    init_err = _mse(boot_sample(student, z), ref)
    res = boot_distill(teacher, student, (2,), prediction="epsilon", iterations=args.gmm_iterations,
                       batch_size=256, lr=2e-3, intervals=args.boot_intervals, ema_decay=0.99)
    boot = {"iterations": len(res.losses), "seconds": res.seconds, "init_err": init_err,
            "err": _mse(boot_sample(res.student, z), ref),
            "sw2": sliced_wasserstein(boot_sample(res.student, z), exact),
            "teacher_err": {k: _mse(ts.sample(teacher, z, "ddim", k), ref) for k in (1, 2, 4)}}
    pairs = rectified_pairs(teacher, 4000, (2,), prediction="epsilon", steps=20)
    torch.manual_seed(0)
    model = make_model("mlp", {"dim": 2, "hidden": 64, "depth": 2}, vp)
    t0 = time.perf_counter()
    rd = rectify(teacher, model, pairs, prediction="epsilon", steps=args.gmm_iterations * 2, batch_size=256,
                 lr=2e-3, warmup=50, progress=False)
    rect: dict = {"steps": args.gmm_iterations * 2, "seconds": time.perf_counter() - t0, "models": {}}
    for name, d in (("exact teacher", teacher), ("Rectified Diffusion", rd.denoiser)):
        rect["models"][name] = {"first_order": first_order_deviation(d, z[:500], 32),
                                "straightness": flow_straightness(d, z[:500], 32),
                                "sw2": {k: sliced_wasserstein(ts.sample(d, z, "ddim", k), exact) for k in NFES}}
    rect["exact_sw2"] = sliced_wasserstein(gmm.sample(2000, torch.Generator().manual_seed(8)), exact)
    out = {"boot": boot, "rectified": rect}
    log(f"gmm {out}")
    return out


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).flatten(1).sum(1).mean())


# --- report ------------------------------------------------------------------------------------


def _cells(row: dict) -> str:
    return " | ".join(f"{row[k]:.2f}" for k in NFES)


def markdown(res: dict, args) -> str:
    d = res["digits"]
    cmd = "PYTHONPATH=src python benchmarks/distill.py" + (" --full" if args.full else "")
    L = ["## Distillation: BOOT and Rectified Diffusion against the teacher", "",
         f"Run on {platform.processor() or platform.machine()}, torch {torch.__version__}, one thread, a CPU "
         f"shared with other jobs. Command: `{cmd}` ({res['total_s']:.0f} s in all).", "",
         f"Teacher: a VP epsilon digits model as `timestepper train digits --objective eps --schedule "
         f"vp-discrete` trains it (U-Net {'/'.join(map(str, args.channels))} channels, "
         f"{d['teacher']['train_steps']} Adam steps of batch 128, {d['teacher']['train_s']:.0f} s, EMA weights; "
         "DDPM's linear betas, 1000 steps).", "",
         f"Fréchet distance (digits classifier features, squared, like FID) of {args.n} samples from the same "
         f"noise against the test split; real split-half floor {d['floor']:.2f}. "
         "BOOT at NFE 1 is the student alone, g(eps, t_data); at NFE n > 1 the student jumps to the second point "
         "of the teacher's n-point grid and the teacher finishes with n - 1 DDIM steps. Rectified Diffusion and "
         "the control are sampled with DDIM (first order). The control continues the teacher's own training (real "
         "data, independent noise) for as many steps as the rectification.", "",
         "| model | " + " | ".join(f"NFE {k}" for k in NFES) + " |", "|---|" + "---|" * len(NFES)]
    for name, row in d["rows"].items():
        L.append(f"| {name} | {_cells(row)} |")
    b, r = d["boot"], d["rectified"]
    L.append(f"| BOOT student (+ teacher DDIM for NFE > 1) | {_cells(b['row'])} |")
    L.append(f"| Rectified Diffusion, round 1, ddim | {_cells(r['row'])} |")
    L.append(f"| control: teacher trained as long, ddim | {_cells(r['control_row'])} |")
    L += ["", "First-order measures along the 32-step DDIM trajectory from 500 noises (flow coordinates "
          "z = x/(alpha+sigma), tau = sigma/(alpha+sigma); both 0 for a first-order path): the mean squared "
          "distance of the trajectory from the first-order path through its end points "
          "(`first_order_deviation`), and Liu et al.'s straightness (`flow_straightness`).", "",
          "| model | first-order deviation | straightness |", "|---|---|---|"]
    for name, m in d["paths"].items():
        L.append(f"| {name} | {m['first_order']:.5f} | {m['straightness']:.4f} |")
    L += ["", "Cost, size and CPU latency (median ms per network evaluation, one thread, the networks timed in "
          "turn in this run):", "",
          "| | iterations | wall time | parameters | float32 size | ms / eval (batch 1) | ms / eval (batch 256) |",
          "|---|---|---|---|---|---|---|"]
    lat, sz = d["latency"], d["sizes"]
    tkey = next(iter(lat[1]))
    L.append(f"| teacher training | {d['teacher']['train_steps']} | {d['teacher']['train_s']:.0f} s | "
             f"{sz['teacher']['params']} | {sz['teacher']['bytes'] / 1024:.0f} KiB | {lat[1][tkey]:.2f} | "
             f"{lat[256][tkey]:.2f} |")
    L.append(f"| BOOT distillation (no data) | {b['iterations']} | {b['seconds']:.0f} s | "
             f"{sz['BOOT student']['params']} | {sz['BOOT student']['bytes'] / 1024:.0f} KiB | "
             f"{lat[1]['BOOT student']:.2f} | {lat[256]['BOOT student']:.2f} |")
    L.append(f"| Rectified Diffusion: {r['pairs']} pairs (dpmpp-2m, {r['pair_steps']} NFE) + retraining | "
             f"{r['steps']} | {r['pair_s']:.0f} s + {r['seconds']:.0f} s | {sz['Rectified Diffusion']['params']} | "
             f"{sz['Rectified Diffusion']['bytes'] / 1024:.0f} KiB | {lat[1][tkey]:.2f} | {lat[256][tkey]:.2f} |")
    L.append(f"| control training | {r['steps']} | {r['control_s']:.0f} s | - | - | - | - |")
    L += ["", f"BOOT loss: {b['first_loss']:.4f} at the first iteration, {b['last_loss']:.4f} (mean of the last 50).",
          ""]
    L += gmm_markdown(res["gmm"], args)
    return "\n".join(L) + "\n"


def gmm_markdown(g: dict, args) -> list[str]:
    b, r = g["boot"], g["rectified"]
    L = ["### Exact Gaussian mixture (d = 2, 8 components, linear-beta VP, epsilon teacher)", "",
         f"BOOT: an MLP student (64 wide, 2 blocks) distilled for {b['iterations']} iterations of batch 256 "
         f"({b['seconds']:.1f} s) on a {args.boot_intervals}-step log-SNR grid. Mean squared distance of its "
         f"one-step samples to the teacher's {args.boot_intervals}-step DDIM endpoints from the same 2000 noises: "
         f"{b['init_err']:.3f} at initialisation, {b['err']:.4f} after; the teacher's own DDIM at 1 / 2 / 4 steps: "
         + " / ".join(f"{v:.4f}" for v in b["teacher_err"].values())
         + f". Sliced W2 of the one-step student to exact samples: {b['sw2']:.4f}.", "",
         f"Rectified Diffusion: an MLP epsilon model trained {r['steps']} steps ({r['seconds']:.1f} s) on 4000 "
         "pairs of the exact teacher (dpmpp-2m, 20 steps). Sliced W2 to 2000 exact samples by DDIM steps "
         f"(exact-vs-exact: {r['exact_sw2']:.4f}), and the first-order measures (32 DDIM steps):", "",
         "| model | " + " | ".join(f"NFE {k}" for k in NFES) + " | first-order deviation | straightness |",
         "|---|" + "---|" * (len(NFES) + 2)]
    for name, m in r["models"].items():
        L.append(f"| {name} | " + " | ".join(f"{m['sw2'][k]:.4f}" for k in NFES)
                 + f" | {m['first_order']:.5f} | {m['straightness']:.4f} |")
    return L


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="longer training and more samples")
    p.add_argument("--channels", default="16,32")
    p.add_argument("--boot-lr", type=float, default=1e-3)
    p.add_argument("--boot-intervals", type=int, default=32)
    p.add_argument("--rectify-lr", type=float, default=5e-4)
    p.add_argument("--pair-steps", type=int, default=20)
    p.add_argument("--latency-repeats", type=int, default=50)
    args = p.parse_args()
    for k, v in (FULL if args.full else DEFAULTS).items():
        setattr(args, k, v)
    args.channels = [int(v) for v in args.channels.split(",")]
    return args


def main() -> None:
    args = parse_args()
    run_and_write("distill", lambda log: {"gmm": gmm_section(args, log), "digits": digits_section(args, log)},
                  lambda res: markdown(res, args))


if __name__ == "__main__":
    main()

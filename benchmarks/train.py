"""Benchmark of the training area: a digits model trained on a stated CPU budget, its Fréchet
distance per solver and NFE against the real split-half floor, classifier-free guidance, and
one round of reflow on 2-D moons and on digits (1-NFE quality and straightness before/after).

    PYTHONPATH=src python benchmarks/train.py --threads 1 --digits-seconds 480 --reflow-seconds 240

Writes benchmarks/results/train.md (+ train.json, train_digits.png). Every number in the Markdown
is computed by this script.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

import timestepper as ts
from timestepper.train import flow_matching, make_model, reflow, toy_2d, train
from timestepper.train.cli import save_png
from timestepper.train.data import digits
from timestepper.train.generate import generate, reflow_pairs, straightness
from timestepper.train.metrics import (
    digit_features,
    digits_report,
    frechet_distance,
    reference_features,
    split_half_distance,
)

RESULTS = Path(__file__).parent / "results"


def w2_exact(a: torch.Tensor, b: torch.Tensor) -> float:
    """Exact 2-Wasserstein distance between two equal-size point clouds (optimal assignment)."""
    c = torch.cdist(a.double(), b.double()).pow(2).numpy()
    r, k = linear_sum_assignment(c)
    return float(np.sqrt(c[r, k].mean()))


def moons_reflow(args, log) -> dict:
    rf = ts.RectifiedFlowSchedule()
    data = toy_2d("moons", 10000, seed=0)
    test_a, test_b = toy_2d("moons", 1000, seed=1), toy_2d("moons", 1000, seed=2)
    torch.manual_seed(0)
    model = make_model("mlp", {"dim": 2, "hidden": 128, "depth": 3}, rf)
    t0 = time.perf_counter()
    r1 = train(
        model,
        flow_matching(),
        data,
        steps=args.moons_steps,
        batch_size=256,
        lr=2e-3,
        seed=0,
        progress=False,
    )
    t_train = time.perf_counter() - t0
    den1 = ts.Denoiser(r1.sampling_model, rf, "velocity")
    z_eval = torch.randn(1000, 2, generator=torch.Generator().manual_seed(7))

    def quality(den):
        row = {}
        for nfe in (1, 2, 20):
            x, _ = generate(den, 1000, (2,), "ddim", nfe, "uniform", noise=z_eval)
            row[f"w2_nfe{nfe}"] = w2_exact(x, test_a)
        row["straightness"] = straightness(den, z_eval[:500], steps=64)
        return row

    before = quality(den1)
    t0 = time.perf_counter()
    noise, pairs = reflow_pairs(den1, 10000, (2,), "ddim", 100, "uniform", seed=11)
    t_pairs = time.perf_counter() - t0
    model2 = (
        copy.deepcopy(r1.sampling_model).train().requires_grad_(True)
    )  # initialise from the 1-rectified flow
    t0 = time.perf_counter()
    r2 = train(
        model2,
        reflow(),
        pairs,
        noise=noise,
        steps=args.moons_steps,
        batch_size=256,
        lr=1e-3,
        seed=1,
        progress=False,
    )
    t_reflow = time.perf_counter() - t0
    after = quality(ts.Denoiser(r2.sampling_model, rf, "velocity"))
    floor = w2_exact(test_b, test_a)
    log(f"moons: before {before} after {after} floor {floor:.4f}")
    return {
        "before": before,
        "after": after,
        "w2_floor": floor,
        "train_s": t_train,
        "pairs_s": t_pairs,
        "reflow_s": t_reflow,
        "steps": args.moons_steps,
    }


def digits_bench(args, log) -> dict:
    out = {}
    rf = ts.RectifiedFlowSchedule()
    x, y = digits("train")
    torch.manual_seed(0)
    model = make_model("unet", {"size": 8, "channels": args.channels, "num_classes": 10}, rf)
    t0 = time.perf_counter()
    res = train(
        model,
        flow_matching(label_dropout=0.1, null_label=10),
        x,
        labels=y,
        steps=10**9,
        batch_size=args.batch_size,
        lr=2e-3,
        seed=0,
        progress=False,
        max_seconds=args.digits_seconds,
    )
    out["train_s"] = time.perf_counter() - t0
    out["train_steps"] = len(res.losses)
    log(f"digits: {out['train_steps']} steps in {out['train_s']:.0f}s")
    den = ts.Denoiser(res.sampling_model, rf, "velocity")
    n = args.n
    labels = torch.arange(n) % 10

    # Fréchet distance per solver and NFE (conditional samples, guidance scale 1)
    table = []
    for solver, per in (("ddim", 1), ("dpmpp-2m", 1)):
        for nfe in args.nfe:
            s, measured = generate(
                den, n, (1, 8, 8), solver, max(1, nfe // per), "uniform", seed=1, labels=labels
            )
            rep = digits_report(s, labels)
            table.append(
                {
                    "solver": solver,
                    "nfe": measured,
                    "frechet": rep["frechet"],
                    "accuracy": rep["accuracy"],
                    "confidence": rep["confidence"],
                }
            )
            log(f"  {solver} nfe={measured:g} fd={rep['frechet']:.3f}")
    out["table"] = table

    # headline: 20 NFE, equal sample sizes against one half of the test split
    feats = reference_features("test")
    perm = torch.randperm(feats.shape[0], generator=torch.Generator().manual_seed(0))
    h = feats.shape[0] // 2
    half_a, half_b = feats[perm[:h]], feats[perm[h : 2 * h]]
    head = []
    for seed in range(3):
        s, measured = generate(
            den,
            h,
            (1, 8, 8),
            "dpmpp-2m",
            20,
            "uniform",
            seed=100 + seed,
            labels=torch.arange(h) % 10,
        )
        head.append(frechet_distance(digit_features(s), half_a))
    out["headline"] = {
        "solver": "dpmpp-2m",
        "nfe": 20,
        "n": h,
        "model_vs_half_a": head,
        "half_b_vs_half_a": frechet_distance(half_b, half_a),
        "split_half_default": split_half_distance(),
    }
    s, _ = generate(
        den, 100, (1, 8, 8), "dpmpp-2m", 20, "uniform", seed=5, labels=torch.arange(100) % 10
    )
    save_png(s, str(RESULTS / "train_digits.png"))

    # classifier-free guidance
    cfg_rows = []
    for scale in (0.0, 1.0, 3.0):
        s, measured = generate(
            den,
            n,
            (1, 8, 8),
            "dpmpp-2m",
            20,
            "uniform",
            seed=2,
            labels=labels,
            cfg_scale=scale,
            null_label=10,
        )
        rep = digits_report(s, labels)
        cfg_rows.append(
            {
                "scale": scale,
                "accuracy": rep["accuracy"],
                "confidence": rep["confidence"],
                "frechet": rep["frechet"],
            }
        )
        log(f"  cfg {scale}: acc={rep['accuracy']:.3f}")
    out["cfg"] = cfg_rows

    # one round of reflow, initialised from the trained model
    if args.reflow_seconds > 0:
        t0 = time.perf_counter()
        pl = torch.arange(args.pairs) % 10
        noise, pairs = reflow_pairs(
            den, args.pairs, (1, 8, 8), "dpmpp-2m", 20, "uniform", seed=21, labels=pl
        )
        out["pairs_s"] = time.perf_counter() - t0
        m2 = copy.deepcopy(res.sampling_model).train().requires_grad_(True)
        t0 = time.perf_counter()
        r2 = train(
            m2,
            reflow(),
            pairs,
            labels=pl,
            noise=noise,
            steps=10**9,
            batch_size=args.batch_size,
            lr=5e-4,
            seed=3,
            progress=False,
            max_seconds=args.reflow_seconds,
        )
        out["reflow_s"] = time.perf_counter() - t0
        out["reflow_steps"] = len(r2.losses)
        den2 = ts.Denoiser(r2.sampling_model, rf, "velocity")
        rows = []
        z = torch.randn(200, 1, 8, 8, generator=torch.Generator().manual_seed(9))
        for name, d in (("1-rectified (trained)", den), ("2-rectified (reflow)", den2)):
            row = {"model": name}
            for nfe in (1, 2, 20):
                s, _ = generate(d, n, (1, 8, 8), "ddim", nfe, "uniform", seed=4, labels=labels)
                row[f"fd_nfe{nfe}"] = digits_report(s)["frechet"]
            lab = torch.arange(200) % 10
            dl = ts.Denoiser(d.model_fn, rf, "velocity", {"labels": lab})
            row["straightness"] = straightness(dl, z, steps=32)
            rows.append(row)
            log(f"  reflow {row}")
        out["reflow"] = rows
    return out


def markdown(res: dict, args) -> str:
    L = ["## Training: digits and reflow", ""]
    L.append(
        f"Run on {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, {args.threads} thread(s), a CPU shared with other jobs. "
        f"Command: `PYTHONPATH=src python benchmarks/train.py --threads {args.threads} "
        f"--digits-seconds {args.digits_seconds:g} --reflow-seconds {args.reflow_seconds:g} "
        f"--moons-steps {args.moons_steps} --n {args.n} --pairs {args.pairs} "
        f"--channels {','.join(map(str, args.channels))} --batch-size {args.batch_size} "
        f"--nfe {','.join(map(str, args.nfe))}`."
    )
    L.append("")
    if "digits" in res:
        d = res["digits"]
        hd = d["headline"]
        m = float(np.mean(hd["model_vs_half_a"]))
        L += [
            "**Digits model.** Class-conditional flow matching (U-Net "
            f"{'/'.join(map(str, args.channels))} channels, label dropout 0.1), "
            f"{d['train_steps']} Adam steps of batch {args.batch_size} in {d['train_s']:.0f} s "
            f"of wall time (budget {args.digits_seconds:g} s).",
            "",
            "Fréchet distance in the digits classifier's feature space (squared, like FID), "
            f"{hd['n']} samples at {hd['nfe']} NFE ({hd['solver']}, guidance scale 1) against "
            "half A of the test split, versus half B of the real test split against half A "
            "(the same sample sizes):",
            "",
            "| model vs half A (mean of 3 seeds) | seeds | real half B vs half A | ratio |",
            "|---|---|---|---|",
            f"| {m:.2f} | {', '.join(f'{v:.2f}' for v in hd['model_vs_half_a'])} | "
            f"{hd['half_b_vs_half_a']:.2f} | {m / hd['half_b_vs_half_a']:.2f} |",
            "",
            f"The issue's target is a ratio within 2x: "
            f"{'met' if m <= 2 * hd['half_b_vs_half_a'] else 'NOT met'} on this budget.",
            "",
            f"Per solver and NFE ({args.n} samples, balanced labels, guidance scale 1, uniform "
            "grid; Fréchet distance against the whole test split, accuracy on the requested "
            "label):",
            "",
            "| solver | NFE | Fréchet | accuracy | confidence |",
            "|---|---|---|---|---|",
        ]
        for r in d["table"]:
            L.append(
                f"| {r['solver']} | {r['nfe']:g} | {r['frechet']:.2f} | {r['accuracy']:.3f} "
                f"| {r['confidence']:.3f} |"
            )
        L += [
            "",
            "Classifier-free guidance (dpmpp-2m, 20 NFE; scale 0 = unconditional, 1 = "
            "conditional):",
            "",
            "| scale | accuracy on requested label | confidence | Fréchet |",
            "|---|---|---|---|",
        ]
        for r in d["cfg"]:
            L.append(
                f"| {r['scale']:g} | {r['accuracy']:.3f} | {r['confidence']:.3f} | "
                f"{r['frechet']:.2f} |"
            )
        if "reflow" in d:
            L += [
                "",
                f"**Reflow on digits.** {args.pairs} (noise, sample) pairs from the model "
                f"(dpmpp-2m, 20 NFE) in {d['pairs_s']:.0f} s; the 2-rectified flow starts "
                f"from the trained weights and trains {d['reflow_steps']} steps "
                f"({d['reflow_s']:.0f} s; U-shaped t, MSE). Euler (= DDIM on the linear "
                "interpolant) Fréchet distance vs NFE, and straightness (Liu et al. 2022, "
                "eq. 7, per dimension, 32 Euler steps):",
                "",
                "| model | NFE 1 | NFE 2 | NFE 20 | straightness |",
                "|---|---|---|---|---|",
            ]
            for r in d["reflow"]:
                L.append(
                    f"| {r['model']} | {r['fd_nfe1']:.2f} | {r['fd_nfe2']:.2f} | "
                    f"{r['fd_nfe20']:.2f} | {r['straightness']:.4f} |"
                )
        L += ["", "![digits samples](train_digits.png)", ""]
    if "moons" in res:
        mo = res["moons"]
        L += [
            "",
            f"**Reflow on 2-D moons.** MLP flow matching, {mo['steps']} steps "
            f"({mo['train_s']:.0f} s); 10000 pairs (Euler, 100 steps, {mo['pairs_s']:.0f} s); "
            f"reflow {mo['steps']} steps from the trained weights ({mo['reflow_s']:.0f} s). "
            "Exact W2 (optimal assignment) of 1000 samples against 1000 held-out points; the "
            f"floor (two independent data samples) is {mo['w2_floor']:.3f}.",
            "",
            "| model | W2 at NFE 1 | NFE 2 | NFE 20 | straightness |",
            "|---|---|---|---|---|",
        ]
        for name, r in (("1-rectified", mo["before"]), ("2-rectified", mo["after"])):
            L.append(
                f"| {name} | {r['w2_nfe1']:.3f} | {r['w2_nfe2']:.3f} | {r['w2_nfe20']:.3f} | "
                f"{r['straightness']:.4f} |"
            )
    return "\n".join(L) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--digits-seconds", type=float, default=480)
    p.add_argument("--reflow-seconds", type=float, default=240)
    p.add_argument("--moons-steps", type=int, default=3000)
    p.add_argument("--n", type=int, default=1000, help="samples per evaluation")
    p.add_argument("--pairs", type=int, default=4000, help="reflow pairs on digits")
    p.add_argument("--nfe", default="5,10,20")
    p.add_argument("--channels", default="32,64", help="U-Net widths for digits")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--skip", default="", help="comma list: moons,digits")
    args = p.parse_args()
    args.nfe = [int(v) for v in args.nfe.split(",")]
    args.channels = [int(v) for v in args.channels.split(",")]
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    res = {}
    skip = set(args.skip.split(","))
    if "moons" not in skip:
        res["moons"] = moons_reflow(args, log)
    if "digits" not in skip:
        res["digits"] = digits_bench(args, log)
    res["total_s"] = time.perf_counter() - t0
    (RESULTS / "train.json").write_text(json.dumps(res, indent=2))
    (RESULTS / "train.md").write_text(markdown(res, args))
    log("wrote benchmarks/results/train.md")


if __name__ == "__main__":
    main()

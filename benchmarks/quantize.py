"""Benchmark of 8-bit post-training quantization on the digits model: PTQ4DM (W8A8, NDTC
calibration), weight-only int8, TFMQ-DM and Temporal Feature Matters, against the full-precision
teacher at NFE 1, 2, 4, 8, 20: Fréchet distance, model size, CPU latency per evaluation (one
thread, all variants side by side in one run) and calibration cost.

    PYTHONPATH=src python benchmarks/quantize.py            # default: a few minutes under load
    PYTHONPATH=src python benchmarks/quantize.py --full     # the CLI's model, 1024 calibration inputs

Writes benchmarks/results/quantize.md (+ quantize.json). Every number in the Markdown is computed here.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from _digits import SHAPE, load_digits, pretrain_digits  # benchmarks/_digits.py, beside this script

import timestepper as ts
from timestepper import quantize as tq
from timestepper.train.generate import generate
from timestepper.train.metrics import digits_report, split_half_distance

RESULTS = Path(__file__).parent / "results"
NAMES = {"teacher": "full precision (float32)", "ptq4dm": "PTQ4DM W8A8", "weight-only": "weight-only int8",
         "tfmq": "TFMQ-DM W8A8", "tfm": "Temporal Feature Matters W8A8"}


def sampler(nfe: int, solver: str) -> tuple[str, int]:
    """The deterministic solver and steps of an NFE: DDIM (first order) at NFE 1, else ``solver``."""
    return ("ddim", 1) if nfe == 1 else (solver, nfe)


def state_bytes(den: ts.Denoiser) -> int:
    buffer = io.BytesIO()
    torch.save(den.model_fn.state_dict(), buffer)
    return len(buffer.getvalue())


@torch.no_grad()
def latencies(models: dict[str, ts.Denoiser], batch: int, rounds: int) -> dict[str, float]:
    """Median seconds per evaluation of a ``batch`` (one thread), the variants interleaved round by
    round so that load affects them alike."""
    x = torch.randn((batch, *SHAPE), generator=torch.Generator().manual_seed(7))
    t = torch.full((batch,), 0.5)
    for q in models.values():  # temporal caches need the time on their grid
        if getattr(q.model_fn, "quantization", {}).get("method") in ("tfmq", "tfm"):
            tq.add_times(q, t[:1])
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for name, den in models.items():
            t0 = time.perf_counter()
            den(x, t)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v[1:]) for k, v in times.items()}


def frechet(models: dict[str, ts.Denoiser], args, log) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {k: {} for k in models}
    for nfe in args.nfes:
        solver, steps = sampler(nfe, args.solver)
        for name, den in models.items():
            if name in ("tfmq", "tfm"):
                tq.add_grid(den, SHAPE, solver, steps)
            x, _ = generate(den, args.n, SHAPE, solver, steps, seed=args.seed, batch_size=500)
            out[name][nfe] = digits_report(x)["frechet"]
        log(f"NFE {nfe}: " + ", ".join(f"{k} {v[nfe]:.2f}" for k, v in out.items()))
    return out


def run(args, log) -> dict:
    if args.checkpoint:
        teacher, info = load_digits(args.checkpoint), {"checkpoint": args.checkpoint}
    else:
        teacher, info = pretrain_digits(args.train_steps, args.channels)
    log(f"teacher: {info}")
    cal = tq.Calibration(solver=args.solver, steps=args.calibration_steps, samples=args.calibration_samples)
    models: dict[str, ts.Denoiser] = {"teacher": teacher}
    for method in tq.METHODS:
        models[method] = tq.quantize(teacher, method, SHAPE, calibration=cal, tiar_iters=args.tiar_iters)
        log(f"{method}: calibrated in {models[method].model_fn.quantization['calibration_s']:.1f} s")
    lat = latencies(models, args.batch, args.rounds)
    fd = frechet(models, args, log)
    return {
        "teacher": info, "frechet": fd, "latency_s": lat, "bytes": {k: state_bytes(v) for k, v in models.items()},
        "calibration_s": {k: v.model_fn.quantization["calibration_s"] for k, v in models.items() if k != "teacher"},
        "temporal": {k: {"modes": models[k].model_fn.quantization["modes"],
                         "disturbance": models[k].model_fn.quantization["disturbance"]} for k in ("tfmq", "tfm")},
        "floor": split_half_distance("test"),
        "cache_rows": int(tq.cached_temporal_features(models["tfm"])[0].numel()),
    }


def markdown(res: dict, args) -> str:
    nfes = args.nfes
    cmd = "PYTHONPATH=src python benchmarks/quantize.py" + (" --full" if args.full else "")
    lines = [
        "# 8-bit post-training quantization of the digits model", "",
        f"`{cmd}` (torch {torch.__version__}, {platform.machine()}, engine x86, {args.threads} thread). "
        f"Teacher: {_teacher(res, args)}. Calibration: NDTC (mean 0.4, std 0.4 of the trajectory), "
        f"{args.calibration_samples} inputs from the full-precision {args.solver} trajectory of "
        f"{args.calibration_steps} steps; TFMQ/TFM: TIAR {args.tiar_iters} AdaRound iterations, FSC per time step. "
        f"Sampling: {args.solver} (NFE 1: ddim) on the default uniform grid, {args.n} samples (seed {args.seed}), "
        f"Fréchet distance to the test split in the digits classifier's features "
        f"(noise floor, two halves of the test split: {res['floor']:.2f}).", "",
        "## Fréchet distance (lower is better)", "",
        "| model | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|" + "---:|" * len(nfes),
    ]
    for k, row in res["frechet"].items():
        lines.append(f"| {NAMES[k]} | " + " | ".join(f"{row[str(n)]:.2f}" for n in nfes) + " |")
    base_lat, base_bytes = res["latency_s"]["teacher"], res["bytes"]["teacher"]
    lines += ["", "## Size, latency, calibration", "",
              f"Latency: median of {args.rounds - 1} evaluations of a batch of {args.batch} at t = 0.5 on one "
              "thread, all models interleaved in one run (ratios are the measurement; the machine was shared). "
              "State bytes: `torch.save` of the state dict, the temporal caches holding every grid of the table "
              f"({res['cache_rows']} times).", "",
              "| model | state bytes | size vs float | latency / evaluation vs float | calibration (s) | "
              "calibration in float evaluations |", "|---|---:|---:|---:|---:|---:|"]
    for k in res["bytes"]:
        cal = res["calibration_s"].get(k)
        lines.append(
            f"| {NAMES[k]} | {res['bytes'][k]:,} | {res['bytes'][k] / base_bytes:.2f} | "
            f"{res['latency_s'][k] / base_lat:.2f} | {'-' if cal is None else f'{cal:.1f}'} | "
            f"{'-' if cal is None else f'{cal / base_lat:.0f}'} |")
    lines += ["", "## Temporal features", "",
              "Relative squared error of the TIAR + FSC block's temporal feature against full precision on the "
              "calibration grid, and what each method caches (tib: the quantized block's feature, fp: the "
              "full-precision feature).", "", "| feature | disturbance | TFMQ | TFM |", "|---|---:|---|---|"]
    t = res["temporal"]
    for i, (name, d) in enumerate(t["tfmq"]["disturbance"].items()):
        lines.append(f"| {name} | {d:.2e} | {t['tfmq']['modes'][i]} | {t['tfm']['modes'][i]} |")
    return "\n".join(lines) + "\n"


def _teacher(res: dict, args) -> str:
    if args.checkpoint:
        return f"checkpoint {args.checkpoint}"
    return (f"flow-matching U-Net (channels {','.join(map(str, args.channels))}), {args.train_steps} Adam steps "
            "as `timestepper train digits` trains it")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the CLI's model (4000 steps, channels 32,64), 1024 "
                   "calibration inputs (PTQ4DM's), 2000 samples per distance")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint", default=None, help="a `timestepper train digits` checkpoint instead of training")
    p.add_argument("--train-steps", type=int, default=1500)
    p.add_argument("--channels", default="16,32")
    p.add_argument("--solver", default="dpmpp-2m")
    p.add_argument("--nfes", default="1,2,4,8,20")
    p.add_argument("--n", type=int, default=500, help="samples per Fréchet distance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibration-samples", type=int, default=256)
    p.add_argument("--calibration-steps", type=int, default=20)
    p.add_argument("--tiar-iters", type=int, default=500)
    p.add_argument("--batch", type=int, default=256, help="batch of the latency measurement")
    p.add_argument("--rounds", type=int, default=21)
    args = p.parse_args()
    if args.full:
        args.train_steps, args.channels, args.n = 4000, "32,64", 2000
        args.calibration_samples, args.tiar_iters = 1024, 1000
    args.channels = [int(c) for c in str(args.channels).split(",")]
    args.nfes = [int(n) for n in args.nfes.split(",")]
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    res = run(args, lambda msg: print(f"[{time.perf_counter() - start:7.1f}s] {msg}", flush=True))
    RESULTS.mkdir(exist_ok=True)
    res = json.loads(json.dumps(res))  # int keys become strings, as in the JSON file
    for name, text in (("quantize.json", json.dumps(res, indent=2)), ("quantize.md", markdown(res, args))):
        (RESULTS / name).write_text(text)
    print("wrote benchmarks/results/quantize.md")


if __name__ == "__main__":
    main()

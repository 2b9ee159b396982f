"""Per-step overhead of our samplers vs the peer's scheduler step -> benchmarks/results/overhead.md.

Model cost is excluded: the "model" returns a precomputed tensor. Each measurement is a whole
sampling run (grid set-up included: diffusers' ``set_timesteps`` and our ``make_grid`` plus the
coefficient table) divided by the number of steps. Float32, one thread, shapes (1, 4, 64, 64) and
(16, 4, 64, 64); ours and the peer alternate in the same process and the median of repeats is
reported with the ratio ours / peer (goal <= 0.5).

Run:  python benchmarks/overhead.py
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from _heap import keep_freed_memory  # benchmarks/_heap.py, beside this script

import timestepper as ts

HERE = Path(__file__).resolve().parent
STEPS = 20


def _peer_factories():
    import diffusers

    return {
        "ddim": lambda: diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False, timestep_spacing="trailing"),
        "euler": lambda: diffusers.EulerDiscreteScheduler(beta_schedule="linear", timestep_spacing="trailing"),
        "dpmpp-2m": lambda: diffusers.DPMSolverMultistepScheduler(beta_schedule="linear",
                                                                  algorithm_type="dpmsolver++", solver_order=2),
    }


def time_peer(make, out, noise, steps):
    sched = make()
    t0 = time.perf_counter()
    sched.set_timesteps(steps)
    x = noise
    for t in sched.timesteps:
        x = sched.step(out, t, sched.scale_model_input(x, t)).prev_sample
    return (time.perf_counter() - t0) / steps, sched.timesteps


def time_ours(solver, den, noise, grid, steps):
    t0 = time.perf_counter()
    ts.sample(den, noise, solver, grid=grid)
    return (time.perf_counter() - t0) / steps


def measure(shapes=((1, 4, 64, 64), (16, 4, 64, 64)), repeats=15) -> list[dict]:
    torch.set_num_threads(1)
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    rows = []
    for name, make in _peer_factories().items():
        for shape in shapes:
            g = torch.Generator().manual_seed(0)
            noise = torch.randn(shape, generator=g)
            out = torch.randn(shape, generator=g) * 0.1
            den = ts.Denoiser(lambda x, t, out=out: out, sched, "epsilon")
            _, timesteps = time_peer(make, out, noise, STEPS)  # warm-up, and the peer's grid
            grid = timesteps.to(torch.float64)
            time_ours(name, den, noise, grid, STEPS)
            ours, peer = [], []
            for _ in range(repeats):
                peer.append(time_peer(make, out, noise, STEPS)[0])
                ours.append(time_ours(name, den, noise, grid, STEPS))
            o, p = statistics.median(ours), statistics.median(peer)
            rows.append(dict(solver=name, shape=list(shape), ours_us=1e6 * o, peer_us=1e6 * p, ratio=o / p))
            print(f"{name:10s} {str(shape):18s} ours {1e6 * o:9.1f} us  peer {1e6 * p:9.1f} us  ratio {o / p:.2f}")
    return rows


def render(rows: list[dict], heap: bool = False) -> str:
    out = ["## Per-step overhead vs diffusers (model cost excluded)", "",
           f"Machine: {platform.machine()} {platform.system()}, torch {torch.__version__}, one thread, float32, "
           f"{STEPS} steps per run (grid set-up included), median of repeats, ours and peer alternating in one "
           "process. Peer: the diffusers scheduler's `set_timesteps` + `scale_model_input` + `step` loop."
           + (" Freed memory stays in the process heap for both sides (glibc mallopt)." if heap else ""), "",
           "| solver | shape | ours (us/step) | diffusers (us/step) | ratio ours/peer |", "|---|---|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['solver']} | {tuple(r['shape'])} | {r['ours_us']:.1f} | {r['peer_us']:.1f} | "
                   f"{r['ratio']:.2f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    heap = keep_freed_memory()
    rows = measure(repeats=args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(rows, indent=1))
    (args.out / "overhead.md").write_text(render(rows, heap))
    print(f"wrote {args.out / 'overhead.md'}")


if __name__ == "__main__":
    main()

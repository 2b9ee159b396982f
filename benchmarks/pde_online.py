"""Online training from running solvers on Ray vs offline training -> benchmarks/results/pde_online.md

Meyer, Kenesei, Raffin et al. 2023 ("Training Deep Surrogate Models with Large Scale Online
Learning") train while the solvers run instead of generating a data set first. Here, on
Kuramoto-Sivashinsky (length 64, N = 128, ETDRK4 at a fine solver step dt = 0.01, a frame every
0.2, 20 time units per trajectory) with a small FNO one-step surrogate:

1. Validation error (relative L2 of one step on held-out test trajectories) vs iterations and vs
   wall time: offline (generate all trajectories in this process, then ``train_surrogate``) against
   online (``train_online``: Ray solver tasks feed a reservoir buffer while the trainer runs), the
   same unique trajectories (same seeds), the same iterations, batch and learning-rate schedule,
   run side by side in one process. Ray's start-up and its workers' first import are excluded
   (measured once, reported apart); validation time is excluded from both clocks.
2. Solver throughput (trajectories and windows per second) of the Ray stream alone vs the number
   of workers (1, 2 here), and Amdahl's law fitted to it.

Budgets are in iterations, so results do not depend on the machine's load; wall times are ratios
measured in one run. Run:  PYTHONPATH=src python benchmarks/pde_online.py  [--full]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from timestepper import pde
from timestepper.pde.buffer import make_buffer
from timestepper.pde.data import GenerationConfig, _simulate_batch, generate
from timestepper.pde.models import FNO1d
from timestepper.pde.online import OnlineConfig, _SolverStream, train_online

RESULTS = Path(__file__).resolve().parent / "results"


def problem(duration: float = 20.0):
    eq = pde.KuramotoSivashinsky(64.0, 128)
    data = GenerationConfig(dt=0.01, save_every=20, duration=duration, t_burn_in=10.0, batch_size=4)
    return eq, data


def model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return pde.OneStepSurrogate(FNO1d(width=24, modes=16, layers=3), residual=True)


class Recorder:
    """Validation error every ``every`` iterations; its own time is kept off the run's clock."""

    def __init__(self, test: torch.Tensor, every: int) -> None:
        self.u0, self.u1 = test[:, :-1].flatten(0, 1), test[:, 1:].flatten(0, 1)
        self.every = every
        self.rows: list[dict] = []
        self.start = 0.0
        self.excluded = 0.0

    def error(self, m: torch.nn.Module) -> float:
        m.eval()
        with torch.no_grad():
            pred = m.predict(self.u0)
        m.train()
        return float(((pred - self.u1).norm(dim=-1) / self.u1.norm(dim=-1)).mean())

    def __call__(self, it: int, m: torch.nn.Module) -> None:
        if it % self.every:
            return
        t = time.perf_counter()
        wall = t - self.start - self.excluded
        self.rows.append({"iteration": it, "wall_s": wall, "val": self.error(m)})
        self.excluded += time.perf_counter() - t


def offline(eq, data, train, n_traj: int, test, every: int) -> dict:
    rec = Recorder(test, every)
    rec.start = time.perf_counter()
    traj = generate(eq, n_traj, data)
    gen_s = time.perf_counter() - rec.start
    pde.train_surrogate(model(0), traj, train, callback=rec)
    return {"generation_s": gen_s, "curve": rec.rows}


def online(eq, data, train, n_traj: int, test, every: int, workers: int, policy: str) -> dict:
    rec = Recorder(test, every)
    windows_per_traj = data.frames - train.frames_per_step * (train.unroll + 1)
    cfg = OnlineConfig(
        workers=workers,
        trajectories=n_traj,
        buffer=policy,
        buffer_size=max(windows_per_traj * n_traj // 2, 2 * train.batch_size),
        threshold=4 * train.batch_size,
        trajectories_per_task=2,
    )
    rec.start = time.perf_counter()
    res = train_online(eq, model(0), train, data, cfg, callback=rec)
    return {
        "curve": rec.rows,
        "trajectories": res.trajectories,
        "windows": res.windows,
        "served": res.served,
        "evicted": res.evicted,
        "wait_s": res.wait_s,
        "iterations": res.iterations,
        "buffer_size": cfg.buffer_size,
    }


def warm_up(ray, eq, data, workers: int) -> float:
    """Start the Ray workers and their imports once (excluded from the timed runs)."""
    t = time.perf_counter()
    tiny = GenerationConfig(dt=data.dt, save_every=1, duration=data.dt)
    task = ray.remote(num_cpus=1)(_simulate_batch)
    ray.get([task.remote(eq, tiny, range(1), 0) for _ in range(2 * workers)])
    return time.perf_counter() - t


def throughput(eq, data, workers: int, n_traj: int) -> dict:
    """The Ray stream alone, drained into an unbounded FIFO: trajectories and windows per second."""
    cfg = OnlineConfig(workers=workers, trajectories=n_traj, buffer="fifo", trajectories_per_task=2)
    buf = make_buffer("fifo", 10**7)
    t = time.perf_counter()
    stream = _SolverStream(eq, data, cfg, (1, 2))
    while not stream.exhausted:
        stream.pump(buf, block=True)
    wall = time.perf_counter() - t
    return {"workers": workers, "trajectories_per_s": n_traj / wall, "windows_per_s": buf.received / wall}


def best_rates(eq, data, workers: list[int], n_traj: int, repeats: int) -> list[dict]:
    """Best of ``repeats`` interleaved runs per worker count (load changes hit all alike)."""
    best: dict[int, dict] = {}
    for _ in range(repeats):
        for w in workers:
            r = throughput(eq, data, w, n_traj)
            if w not in best or r["trajectories_per_s"] > best[w]["trajectories_per_s"]:
                best[w] = r
    return [best[w] for w in workers]


def at_wall_time(curve: list[dict], wall: float) -> float | None:
    """Validation error of a curve at ``wall`` seconds (linear between records; None outside)."""
    for a, b in zip(curve, curve[1:]):
        if a["wall_s"] <= wall <= b["wall_s"]:
            f = (wall - a["wall_s"]) / (b["wall_s"] - a["wall_s"])
            return a["val"] + f * (b["val"] - a["val"])
    return None


def amdahl(rates: list[dict]) -> dict:
    """Serial fraction s of Amdahl's law S(w) = 1 / (s + (1 - s) / w) from the 1- and 2-worker rates."""
    r1 = rates[0]["trajectories_per_s"]
    r2 = next(r["trajectories_per_s"] for r in rates if r["workers"] == 2)
    speedup = r2 / r1
    s = min(max(2.0 / speedup - 1.0, 0.0), 1.0)
    return {"speedup_2": speedup, "serial_fraction": s, "r1": r1}


def run(args) -> dict:
    import ray

    eq, data = problem(args.duration)
    train = pde.TrainConfig(iterations=args.iterations, batch_size=args.batch_size, lr=2e-3, seed=0)
    test = generate(eq, args.n_test, data, split="test")
    ray_dir = tempfile.mkdtemp(prefix="tsray")
    t = time.perf_counter()
    ray.init(num_cpus=max(args.workers) + 1, include_dashboard=False, log_to_driver=False, _temp_dir=ray_dir)
    res: dict = {"ray_init_s": time.perf_counter() - t}
    try:
        res["warm_up_s"] = warm_up(ray, eq, data, max(args.workers))
        res["rates"] = best_rates(eq, data, args.workers, args.rate_trajectories, args.repeats)
        res["offline"] = offline(eq, data, train, args.trajectories, test, args.every)
        res["online"] = {
            policy: online(eq, data, train, args.trajectories, test, args.every, max(args.workers), policy)
            for policy in args.policies
        }
    finally:
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
    res["amdahl"] = amdahl(res["rates"]) if 2 in args.workers and 1 in args.workers else None
    return res


def markdown(res: dict, args) -> str:
    eq_line = (
        "KS, length 64, N = 128, ETDRK4 dt = 0.01, frame 0.2, burn-in 10, "
        f"{args.duration:g} time units ({int(args.duration / 0.2) + 1} frames) per trajectory"
    )
    lines = [
        "## Online training from running solvers (Ray) vs offline",
        "",
        f"Machine: {res['machine']}; torch {torch.__version__}, ray {res['ray_version']}; one thread per process; "
        "shared by other jobs, so wall times are ratios measured side by side in one run.",
        "",
        f"Problem: {eq_line}. Surrogate: FNO (width 24, 16 modes, 3 layers), residual one-step MSE, "
        f"AdamW lr 2e-3 cosine, batch {args.batch_size}, {args.iterations} iterations. "
        f"{args.trajectories} unique trajectories for both (same seeds); validation: mean relative L2 error "
        f"of one step over {args.n_test} held-out test trajectories.",
        "",
        f"Ray start-up {res['ray_init_s']:.1f} s and worker warm-up {res['warm_up_s']:.1f} s are excluded "
        "(paid once per session); offline wall time includes generating its data set "
        f"({res['offline']['generation_s']:.1f} s, in this process).",
        "",
        "### Validation error vs iterations and wall time",
        "",
    ]
    policies = list(res["online"])
    head = "| iteration | offline wall s | offline val |" + "".join(
        f" online {p} wall s | online {p} val |" for p in policies
    )
    lines += [head, "|" + "---:|" * (3 + 2 * len(policies))]
    for k, row in enumerate(res["offline"]["curve"]):
        cells = [f"{row['iteration']}", f"{row['wall_s']:.1f}", f"{row['val']:.4f}"]
        for p in policies:
            curve = res["online"][p]["curve"]
            cells += [f"{curve[k]['wall_s']:.1f}", f"{curve[k]['val']:.4f}"] if k < len(curve) else ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    off_end = res["offline"]["curve"][-1]
    for p in policies:
        o = res["online"][p]
        end = o["curve"][-1]
        lines.append(
            f"- online {p}: {o['trajectories']} trajectories received, {o['windows']} windows buffered "
            f"(capacity {o['buffer_size']}), {o['served']} served, {o['evicted']} evicted; trainer waited "
            f"{o['wait_s']:.1f} s for solvers; final wall time ratio online/offline = "
            f"{end['wall_s'] / off_end['wall_s']:.2f}, "
            f"final validation error ratio = {end['val'] / off_end['val']:.2f}."
        )
        wall = min(end["wall_s"], off_end["wall_s"])  # the later run, read at the earlier one's end
        val_off = at_wall_time(res["offline"]["curve"], wall)
        val_on = at_wall_time(o["curve"], wall)
        if val_off is not None and val_on is not None:
            lines.append(
                f"- at the same wall time ({wall:.1f} s): validation error offline {val_off:.4f}, online {p} "
                f"{val_on:.4f} (ratio online/offline {val_on / val_off:.2f})."
            )
    lines += ["", "### Solver throughput vs workers (Ray stream alone)", ""]
    lines += [
        f"{args.rate_trajectories} trajectories per run, best of {args.repeats} interleaved runs.",
        "",
        "| workers | trajectories/s | windows/s |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {r['workers']} | {r['trajectories_per_s']:.2f} | {r['windows_per_s']:.0f} |" for r in res["rates"]]
    a = res["amdahl"]
    if a:
        lines += [
            "",
            f"Scaling law: Amdahl's law fitted to the two points, rate(w) = r1 * w / (1 + s (w - 1)) "
            f"with r1 = {a['r1']:.2f} trajectories/s and serial fraction s = {a['serial_fraction']:.2f} "
            f"(measured speed-up at 2 workers {a['speedup_2']:.2f}). Extrapolated: "
            + ", ".join(
                f"{w} workers -> {a['r1'] * w / (1 + a['serial_fraction'] * (w - 1)):.1f}/s" for w in (4, 8, 16, 64)
            )
            + (
                f"; ceiling r1 / s = {a['r1'] / a['serial_fraction']:.1f}/s."
                if a["serial_fraction"] > 0
                else "; no serial part measured (linear scaling)."
            )
            + " With 2 cores shared by other jobs here, s mixes the trainer process's share of the cores with "
            "the stream's own serial part (the driver collecting results); on a cluster the solver tasks run "
            "on their own cores and s is the driver's part alone.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--trajectories", type=int, default=32)
    p.add_argument("--n-test", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--rate-trajectories", type=int, default=12)
    p.add_argument("--repeats", type=int, default=2, help="interleaved throughput runs per worker count")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--policies", nargs="+", default=["reservoir"])
    p.add_argument("--full", action="store_true", help="3000 iterations, 128 trajectories, all three buffers")
    p.add_argument("--render-only", action="store_true", help="rewrite pde_online.md from pde_online.json")
    args = p.parse_args()
    if args.full:
        args.iterations, args.trajectories, args.every = 3000, 128, 300
        args.policies = ["reservoir", "firo", "fifo"]
    if args.render_only:
        res = json.loads((RESULTS / "pde_online.json").read_text())
        (RESULTS / "pde_online.md").write_text(markdown(res, argparse.Namespace(**res["args"])))
        return
    torch.set_num_threads(1)
    import ray

    res = run(args)
    res["machine"] = f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores visible"
    res["ray_version"] = ray.__version__
    res["args"] = vars(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pde_online.json").write_text(json.dumps(res, indent=1))
    text = markdown(res, args)
    (RESULTS / "pde_online.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

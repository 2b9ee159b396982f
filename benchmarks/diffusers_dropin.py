"""diffusers' default schedulers vs our solvers through the drop-in Scheduler
-> benchmarks/results/diffusers_dropin.md.

Accuracy at equal NFE (model calls) against a high-NFE reference, for the loop a pipeline runs
(``set_timesteps``, ``scale_model_input``, ``step``), with Stable Diffusion 1.5's scheduler config
(scaled-linear betas, ``leading`` spacing, ``steps_offset=1``) and the classes pipelines ship with
it (PNDM/PLMS as in SD 1.5, Euler, DPM-Solver++ 2M, UniPC), each with its own config defaults,
against ours: ``Scheduler.from_config(cfg, solver=..., grid="logsnr")``.

1. Exact Gaussian mixture (8-D, 4 components, epsilon model, float32 states): error = mean L2
   distance of the samples to the exact probability-flow ODE solution from the same noise taken
   at ``t = 999`` (Dormand-Prince at tolerance 1e-10). A scheduler that starts lower (``leading``
   spacing starts at ``t = 901``) pays for it: that is what a pipeline gets.
2. A tiny random Stable Diffusion pipeline (UNet2DConditionModel, 8x8x4 latents, prompt
   embeddings, no guidance): error = relative L2 distance of the final latents to the same
   pipeline run with our DPM-Solver++ 3M on 400 uniform log-SNR steps (diffusers' DPM-Solver++ 2M
   with trailing spacing at 400 steps agrees with it to the printed level).

The SD 1.5 config's ``leading`` spacing starts sampling at ``t = 901`` (10 steps) from noise that
belongs at ``t = 999``; the "trailing" rows show the same classes started at ``t = 999``, which
separates that effect from the solver and grid.

3. Scheduler overhead per step, model cost excluded (the model returns a precomputed tensor):
   a 20-step loop including ``set_timesteps``, float32 latents (1, 4, 64, 64), one thread,
   diffusers' scheduler and ours reproducing it alternating in one process, median of repeats.

Run:  python benchmarks/diffusers_dropin.py  [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
warnings.filterwarnings("ignore")

import diffusers  # noqa: E402

from tests.integrations import _tiny_pipelines as tp  # noqa: E402
from timestepper.bench import GaussianMixture  # noqa: E402
from timestepper.integrations.diffusers import Scheduler  # noqa: E402

NFES = (6, 8, 10, 15, 20)
PEERS = ("PNDMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
         "UniPCMultistepScheduler")
OURS = ("dpmpp-2m", "dpmpp-3m", "unipc-bh2")


def sd_config(name: str, **overrides):
    base = diffusers.PNDMScheduler(skip_prk_steps=True, **tp.SD_SCHEDULE)
    return getattr(diffusers, name).from_config(base.config, **overrides)


class Counted:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


def loop(sched, model, noise, steps):
    """The pipeline loop; returns the sample and the number of model calls."""
    counted = Counted(model)
    sched.set_timesteps(steps)
    x = noise * sched.init_noise_sigma
    for t in sched.timesteps:
        x = sched.step(counted(sched.scale_model_input(x, t), t), t, x).prev_sample
    return x, counted.calls


def steps_for(make, nfe: int) -> int | None:
    """The step count giving exactly ``nfe`` model calls (None if none does)."""
    for steps in range(1, nfe + 1):
        sched = make()
        sched.set_timesteps(steps)
        if len(sched.timesteps) == nfe:
            return steps
    return None


def methods():
    out = {f"diffusers {n.replace('Scheduler', '')}": (lambda n=n: sd_config(n)) for n in PEERS}
    for n in PEERS[1:]:  # the same classes with trailing spacing: they start at t = 999
        out[f"diffusers {n.replace('Scheduler', '')}, trailing"] = (
            lambda n=n: sd_config(n, timestep_spacing="trailing"))
    cfg = sd_config("PNDMScheduler")
    for s in OURS:
        out[f"ours {s}, log-SNR grid"] = lambda s=s: Scheduler.from_config(cfg, solver=s, grid="logsnr")
    return out


def gmm_errors(nfes):
    gmm = GaussianMixture.random(8, 4, seed=1, full=True)
    schedule = Scheduler.from_config(sd_config("PNDMScheduler"), solver="ddim").schedule
    den = gmm.denoiser(schedule, "epsilon")

    def model(x, t):
        return den.model_fn(x, torch.as_tensor(t, dtype=torch.float64).reshape(1))

    noise = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    s_max = float(schedule.sigma(999) / schedule.alpha(999))
    ref = gmm.reference_solution(noise.double() * s_max, s_max).float()
    table = {}
    for name, make in methods().items():
        row = []
        for nfe in nfes:
            steps = steps_for(make, nfe)
            if steps is None:
                row.append(None)
                continue
            x, calls = loop(make(), model, noise, steps)
            assert calls == nfe
            row.append(float((x - ref).norm(dim=1).mean()))
        table[name] = row
    return table


def pipeline_errors(nfes, ref_steps):
    torch.set_num_threads(1)
    cond = tp.prompt()
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    def run(sched, steps):
        pipe = tp.sd(scheduler=sched)
        return pipe(**cond, latents=noise.clone(), num_inference_steps=steps, guidance_scale=1.0,
                    height=16, width=16, output_type="latent").images

    cfg = sd_config("PNDMScheduler")
    ref = run(Scheduler.from_config(cfg, solver="dpmpp-3m", grid="logsnr"), ref_steps)
    check = run(sd_config("DPMSolverMultistepScheduler", timestep_spacing="trailing"), ref_steps)
    table = {}
    for name, make in methods().items():
        row = []
        for nfe in nfes:
            steps = steps_for(make, nfe)
            row.append(None if steps is None else float((run(make(), steps) - ref).norm() / ref.norm()))
        table[name] = row
    return table, float((check - ref).norm() / ref.norm())


def overhead(repeats: int) -> dict[str, tuple[float, float]]:
    """Milliseconds per step (diffusers, ours) of a 20-step loop with a free model."""
    torch.set_num_threads(1)
    x0 = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    out = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(1)) * 0.1

    def one(sched):
        t0 = time.perf_counter()
        sched.set_timesteps(20)
        x = x0 * sched.init_noise_sigma
        for t in sched.timesteps:
            x = sched.step(out, t, sched.scale_model_input(x, t)).prev_sample
        return (time.perf_counter() - t0) / 20 * 1e3

    result = {}
    for name in ("EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"):
        peer, ours = [], []
        for _ in range(repeats):
            peer.append(one(sd_config(name)))
            ours.append(one(Scheduler.from_config(sd_config(name))))
        result[name.replace("Scheduler", "")] = (statistics.median(peer), statistics.median(ours))
    return result


def markdown(title, table, nfes, note=""):
    lines = [f"### {title}", "", "| method | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---|" + "---|" * len(nfes)]
    for name, row in table.items():
        cells = ["-" if v is None else f"{v:.2e}" for v in row]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def best_ratio(table, nfe_index):
    peers = [r[nfe_index] for k, r in table.items() if k.startswith("diffusers") and r[nfe_index]]
    ours = [r[nfe_index] for k, r in table.items() if k.startswith("ours") and r[nfe_index]]
    return min(peers) / min(ours) if peers and ours else math.nan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    nfes = (8, 10) if args.quick else NFES
    gmm = gmm_errors(nfes)
    pipe, check = pipeline_errors(nfes, 100 if args.quick else 400)
    text = ["# diffusers drop-in: accuracy at equal NFE", "",
            "Generated by `benchmarks/diffusers_dropin.py` (see its docstring for the setup). "
            "Each row is the pipeline loop with that scheduler; `-`: no step count gives that NFE. "
            "Ratio = best diffusers error / best ours error at the same NFE.", "",
            markdown("Gaussian mixture: mean L2 error to the exact PF-ODE solution", gmm, nfes,
                     "Ratio: " + ", ".join(f"NFE {n}: {best_ratio(gmm, i):.1f}x" for i, n in enumerate(nfes))),
            markdown("Tiny random SD pipeline: relative L2 error of the latents", pipe, nfes,
                     f"Reference check: diffusers DPM-Solver++ 2M (trailing) at the reference step count differs "
                     f"from the reference by {check:.1e}. Ratio: "
                     + ", ".join(f"NFE {n}: {best_ratio(pipe, i):.1f}x" for i, n in enumerate(nfes)))]
    cost = overhead(3 if args.quick else 15)
    text += ["### Scheduler overhead per step (ms, model excluded)", "",
             "| class | diffusers | ours (reproducing) | ratio ours / diffusers |", "|---|---|---|---|"]
    text += [f"| {k} | {p:.3f} | {o:.3f} | {o / p:.2f} |" for k, (p, o) in cost.items()]
    out = HERE / "results" / "diffusers_dropin.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()

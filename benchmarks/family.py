"""The training-free solver family against its peers -> benchmarks/results/family.md (+ .json).

1. Accuracy per NFE in {5, 6, 8, 10, 15, 20} on one exact Gaussian-mixture problem (VP linear-beta
   schedule of 1000 steps, float64): mean L2 distance of the sample to the exact probability-flow
   ODE solution from the same noise. Each of our solvers runs with its defaults (uniform log-SNR
   grid, final step to sigma = 0); the matching peer runs the same algorithm and order with the
   peer's own defaults (timestep spacing, final step, initial noise scale), as a pipeline would use
   it. NFE is the number of model calls; a peer whose step count cannot hit an NFE shows "-".
2. Per-step overhead, model cost excluded (the model returns a precomputed tensor): a whole
   20-step sampling run divided by 20 (grid set-up included: diffusers' ``set_timesteps`` and our
   grid + coefficient table), float32, one thread, shapes (1, 4, 64, 64) and (16, 4, 64, 64); ours
   runs on the peer's timesteps; ours and the peer alternate in one process, median of repeats,
   ratio ours / peer (goal <= 0.5).

Run:  python benchmarks/family.py  [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.diffusion.grids import SamplingGrid

HERE = Path(__file__).resolve().parent
NFES = (5, 6, 8, 10, 15, 20)
BETAS = dict(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000)
F64 = torch.float64


def _nfe_default(n):
    return n


# our solver (name, options), NFE as a function of steps
OURS = {
    "dpmpp-2m": ({}, _nfe_default), "dpmpp-3m": ({}, _nfe_default), "dpmpp-2s": ({}, _nfe_default),
    "dpmpp-3s": ({}, _nfe_default), "dpm-solver-2": ({}, _nfe_default), "dpm-solver-3": ({}, _nfe_default),
    "dpm-solver-2m": ({}, _nfe_default), "dpm-solver-3m": ({}, _nfe_default), "deis": ({}, _nfe_default),
    "unipc-bh1": ({}, _nfe_default), "unipc-bh2": ({}, _nfe_default), "plms": ({}, lambda n: n + 1),
    "pndm": ({}, lambda n: n + 9 if n >= 4 else n), "lms": ({}, _nfe_default), "dpm-2": ({}, lambda n: 2 * n - 1),
}


def _diffusers(cls, **kw):
    def make():
        import diffusers

        return getattr(diffusers, cls)(**BETAS, **kw)

    return make


# our solver -> (peer label, "diffusers" scheduler factory | "k-diffusion" sampler name)
PEERS = {
    "dpmpp-2m": ("diffusers DPMSolverMultistep", _diffusers("DPMSolverMultistepScheduler")),
    "dpmpp-3m": ("diffusers DPMSolverMultistep order 3", _diffusers("DPMSolverMultistepScheduler", solver_order=3)),
    "dpmpp-2s": ("diffusers DPMSolverSinglestep", _diffusers("DPMSolverSinglestepScheduler")),
    "dpmpp-3s": ("diffusers DPMSolverSinglestep order 3", _diffusers("DPMSolverSinglestepScheduler", solver_order=3)),
    "dpm-solver-2": ("diffusers DPMSolverSinglestep dpmsolver", _diffusers(
        "DPMSolverSinglestepScheduler", algorithm_type="dpmsolver", final_sigmas_type="sigma_min")),
    "dpm-solver-3": ("diffusers DPMSolverSinglestep dpmsolver order 3", _diffusers(
        "DPMSolverSinglestepScheduler", solver_order=3, algorithm_type="dpmsolver", final_sigmas_type="sigma_min")),
    "dpm-solver-2m": ("diffusers DPMSolverMultistep dpmsolver", _diffusers(
        "DPMSolverMultistepScheduler", algorithm_type="dpmsolver", final_sigmas_type="sigma_min")),
    "dpm-solver-3m": ("diffusers DPMSolverMultistep dpmsolver order 3", _diffusers(
        "DPMSolverMultistepScheduler", solver_order=3, algorithm_type="dpmsolver", final_sigmas_type="sigma_min")),
    "deis": ("diffusers DEISMultistep order 3", _diffusers("DEISMultistepScheduler", solver_order=3)),
    "unipc-bh1": ("diffusers UniPCMultistep bh1", _diffusers("UniPCMultistepScheduler", solver_type="bh1")),
    "unipc-bh2": ("diffusers UniPCMultistep bh2", _diffusers("UniPCMultistepScheduler", solver_type="bh2")),
    "plms": ("diffusers PNDM skip_prk_steps", _diffusers("PNDMScheduler", skip_prk_steps=True)),
    "pndm": ("diffusers PNDM", _diffusers("PNDMScheduler")),
    "lms": ("diffusers LMSDiscrete", _diffusers("LMSDiscreteScheduler")),
    "lms/k": ("k-diffusion sample_lms", "sample_lms"),
    "dpm-2": ("k-diffusion sample_dpm_2", "sample_dpm_2"),
}


def _peer_nfe(key, n):
    return OURS[key.split("/")[0]][1](n)


def _steps_for(nfe_of, nfe, max_steps=40):
    for n in range(1, max_steps):
        if nfe_of(n) == nfe:
            return n
    return None


def _k_sampling():
    sys.path.insert(0, str(HERE.parent))
    from tests.conftest import _load_k_diffusion_sampling

    return _load_k_diffusion_sampling()


# ----------------------------------------------------------------------------------------------
# 1. accuracy
# ----------------------------------------------------------------------------------------------
def accuracy(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    gmm = GaussianMixture.random(8, 6, seed=0, full=True)
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    den = gmm.denoiser(sched, "epsilon")
    noise = torch.randn(128 if quick else 512, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    t_max = sched.t_max
    a_t, s_t = float(sched.alpha(t_max)), float(sched.sigma(t_max))
    ref = gmm.reference_solution(noise / a_t, s_start=s_t / a_t, s_end=0.0)

    def err(x):
        e = (x - ref).norm(dim=-1).mean().item()
        return e if math.isfinite(e) else float("nan")

    ksamp = _k_sampling()
    rows = {}
    for key, (label, peer) in PEERS.items():
        ours_name = key.split("/")[0]
        opts, nfe_of = OURS[ours_name]
        row = {"peer": label, "ours": {}, "peer_err": {}}
        for nfe in NFES:
            n = _steps_for(nfe_of, nfe)
            row["ours"][nfe] = err(ts.sample(den, noise, ours_name, steps=n, solver_options=opts)) if n else None
            pn = _steps_for(lambda m, key=key: _peer_nfe(key, m), nfe)
            if pn is None:
                row["peer_err"][nfe] = None
            elif isinstance(peer, str):
                row["peer_err"][nfe] = err(_run_k(ksamp, peer, gmm, sched, noise, pn))
            else:
                row["peer_err"][nfe] = err(_run_diffusers(peer(), den, noise, pn))
        rows[key] = row
        print(f"{key:14s} ours " + " ".join(_fmt(row['ours'][n]) for n in NFES) + "   peer "
              + " ".join(_fmt(row['peer_err'][n]) for n in NFES), flush=True)
    return {"problem": "GaussianMixture.random(8, 6, seed=0, full=True), VP linear betas (1000 steps)",
            "samples": noise.shape[0], "rows": rows}


def _run_diffusers(sched, den, noise, steps):
    sched.set_timesteps(steps)
    x = noise * sched.init_noise_sigma
    for t in sched.timesteps:
        m = den.model_fn(sched.scale_model_input(x, t), t.reshape(1).expand(x.shape[0]))
        x = sched.step(m, t, x).prev_sample
    return x


def _run_k(ksamp, sampler, gmm, sched, noise, steps):
    """k-diffusion as its users run it: Karras sigmas over the model's range, x = noise * sigma_max."""
    s_min = float(sched.sigma(sched.t_min) / sched.alpha(sched.t_min))
    s_max = float(sched.sigma(sched.t_max) / sched.alpha(sched.t_max))
    sigmas = ksamp.get_sigmas_karras(steps, s_min, s_max, rho=7.0, device="cpu").to(F64)

    def model(x, sigma):
        return gmm.posterior_mean(x, sigma)

    return getattr(ksamp, sampler)(model, noise * sigmas[0], sigmas, disable=True)


# ----------------------------------------------------------------------------------------------
# 2. per-step overhead
# ----------------------------------------------------------------------------------------------
OVERHEAD = ["dpmpp-3m", "dpmpp-2s", "dpm-solver-3", "dpm-solver-2m", "deis", "unipc-bh1", "unipc-bh2", "plms",
            "pndm", "lms"]


def _peer_grid(key, sched, schedule):
    if key == "lms":
        sig = ((1 - sched.alphas_cumprod.double()) / sched.alphas_cumprod.double()).sqrt()
        body = np.interp(sched.timesteps.double().numpy(), np.arange(len(sig)), sig.numpy())
        s = torch.cat([torch.from_numpy(body), torch.zeros(1, dtype=F64)])
        return SamplingGrid.with_model_times(schedule, s, sched.timesteps)
    if hasattr(sched, "_timesteps"):
        return torch.from_numpy(sched._timesteps[::-1].copy()).to(F64)
    return sched.timesteps.to(F64)


def _final(make):
    """Where the peer's last step ends: sigma_min for PNDM, DEIS and ``final_sigmas_type="sigma_min"``."""
    sched = make()
    ends_at_min = sched.config.get("final_sigmas_type", "zero") == "sigma_min"
    return "sigma_min" if ends_at_min or type(sched).__name__ in ("PNDMScheduler", "DEISMultistepScheduler") else "zero"


def overhead(quick: bool = False, steps: int = 20) -> list[dict]:
    torch.set_num_threads(1)
    schedule = ts.VPDiscreteSchedule.from_betas("linear")
    repeats = 3 if quick else 9
    rows = []
    for key in OVERHEAD:
        make = PEERS[key][1]
        final = _final(make)
        for shape in ((1, 4, 64, 64), (16, 4, 64, 64)):
            g = torch.Generator().manual_seed(0)
            noise = torch.randn(shape, generator=g)
            out = torch.randn(shape, generator=g) * 0.1
            den = ts.Denoiser(lambda x, t, out=out: out, schedule, "epsilon")

            def peer_run(make=make, noise=noise, out=out):
                sched = make()
                t0 = time.perf_counter()
                sched.set_timesteps(steps)
                x = noise
                for t in sched.timesteps:
                    x = sched.step(out, t, sched.scale_model_input(x, t)).prev_sample
                return (time.perf_counter() - t0) / steps, sched

            _, sched = peer_run()
            grid = _peer_grid(key, sched, schedule)

            def ours_run(check=True, den=den, noise=noise, key=key, grid=grid, final=final):
                t0 = time.perf_counter()
                ts.sample(den, noise, key, grid=grid, final=final, check_finite=check)
                return (time.perf_counter() - t0) / steps

            ours_run()
            o, oc, p = [], [], []
            for _ in range(repeats):
                p.append(peer_run()[0])
                o.append(ours_run())
                oc.append(ours_run(check=False))
            om, ocm, pm = statistics.median(o), statistics.median(oc), statistics.median(p)
            rows.append(dict(solver=key, peer=PEERS[key][0], shape=list(shape), ours_us=1e6 * om, peer_us=1e6 * pm,
                             ratio=om / pm, ours_nocheck_us=1e6 * ocm, ratio_nocheck=ocm / pm))
            print(f"{key:14s} {str(shape):18s} ours {1e6 * om:9.1f} us  (no NaN check {1e6 * ocm:9.1f} us)  "
                  f"peer {1e6 * pm:9.1f} us  ratio {om / pm:.2f} ({ocm / pm:.2f})", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------
def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    return f"{v:.2e}"


def render(acc: dict, over: list[dict]) -> str:
    out = ["## The solver family vs its peers", "",
           f"Accuracy: {acc['problem']}, {acc['samples']} samples, float64; mean L2 distance to the exact "
           "probability-flow ODE solution from the same noise. Ours: defaults (uniform log-SNR grid, final step to "
           "sigma = 0). Peer: the same algorithm and order with the peer's own defaults (timestep spacing, final "
           "step, initial noise scale). Columns are NFE (model calls); '-' = that NFE is not reachable by the "
           "method's step count.", ""]
    head = "| ours | peer | " + " | ".join(f"NFE {n} ours / peer" for n in NFES) + " |"
    out += [head, "|---|---|" + "---:|" * len(NFES)]
    for key, r in acc["rows"].items():
        cells = [f"{_fmt(r['ours'][n])} / {_fmt(r['peer_err'][n])}" for n in NFES]
        out.append(f"| {key.split('/')[0]} | {r['peer']} | " + " | ".join(cells) + " |")
    out += ["", "Per-step overhead, model cost excluded: "
            f"{platform.machine()} {platform.system()}, torch {torch.__version__}, one thread, float32, 20 steps per "
            "run (grid set-up included), ours on the peer's timesteps, median of repeats, ours and peer alternating "
            "in one process. Peer: the diffusers scheduler's `set_timesteps` + `scale_model_input` + `step` loop. "
            "'no NaN check': ours with `check_finite=False` (the default check costs one reduction of the state per "
            "step, kept on the device and checked once at the end).", "",
            "| solver | peer | shape | ours (us/step) | ours, no NaN check | peer (us/step) | ratio ours/peer "
            "| ratio, no NaN check |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in over:
        out.append(f"| {r['solver']} | {r['peer']} | {tuple(r['shape'])} | {r['ours_us']:.1f} | "
                   f"{r['ours_nocheck_us']:.1f} | {r['peer_us']:.1f} | {r['ratio']:.2f} | {r['ratio_nocheck']:.2f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--quick", action="store_true", help="fewer samples and repeats (a smoke run)")
    args = ap.parse_args()
    acc = accuracy(args.quick)
    over = overhead(args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "family.json").write_text(json.dumps({"accuracy": acc, "overhead": over}, indent=1))
    (args.out / "family.md").write_text(render(acc, over))
    print(f"wrote {args.out / 'family.md'}")


if __name__ == "__main__":
    main()

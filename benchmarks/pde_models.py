"""Neural PDE surrogates side by side -> benchmarks/results/pde_models.md.

On Kuramoto–Sivashinsky (1-D) and Kolmogorov-forced 2-D Navier–Stokes, data from
:func:`timestepper.pde.generate`, every model trained with the SAME number of optimizer
iterations (batch, AdamW lr 1e-3 with cosine decay, seed 0) and measured the same way:

* FNO (Li et al. 2021), U-Net (Gupta & Brandstetter 2022) and PDE-Refiner (Lippe et al. 2023;
  the existing class, K = 3, sigma_min = 4e-7) as baselines;
* SineNet (Zhang et al. 2024): K = 4 sequential waves;
* T1 (Poli et al. 2022): transform once, reduced-order modes, variance-preserving blocks (the
  head starts small, ``head_gain=1e-3``, as a residual surrogate trains better that way);
* ST-FNO (Cao et al. 2024) trained with MSE for all iterations, and Spectral-Refiner: the same
  ST-FNO (same initial weights) trained with MSE for 80 % of the iterations, then only its final
  spectral layer, untruncated, fine-tuned for the remaining 20 % on the H^{-1} loss.

One-step models advance one model step; the ST-FNO advances a block of ``k`` steps from the ``k``
previous frames. Every model gets the first ``k`` test frames and predicts the same later frames.
Metrics: one-step nRMSE (the next frame from true history, averaged over the test set),
rollout nRMSE at fixed horizons, high-correlation time (first drop of the Pearson correlation
below 0.8), parameters (complex counted twice), and seconds per training iteration and per
rollout as ratios to the FNO, best of 3 interleaved rounds (one thread, shared machine).

Run:  PYTHONPATH=src python benchmarks/pde_models.py            (a few minutes)
      PYTHONPATH=src python benchmarks/pde_models.py --full     (10x the iterations, 4x data)
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from timestepper import pde
from timestepper.pde import metrics
from timestepper.pde.models import FNO, T1, SineNet, SpaceTimeFNO, UNet
from timestepper.pde.models.fno_st import freeze_for_spectral_refinement

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 4  # frames per ST-FNO block
FINE_TUNE_SHARE = 0.2  # Spectral-Refiner: share of the iterations spent on H^{-s} fine-tuning


@dataclass
class Setting:
    """One equation's data and evaluation plan."""

    name: str
    eq: pde.SpectralEquation
    train_cfg: pde.GenerationConfig
    test_cfg: pde.GenerationConfig
    frames_per_step: int  # training frames per model step
    model_dt: float
    horizons: tuple[int, ...]  # rollout horizons in model steps
    rollout_steps: int
    modes: int
    description: str

    @property
    def dim(self) -> int:
        return self.eq.space_dims

    @property
    def grid(self) -> int:
        return self.eq.shape[-1]


def settings(full: bool) -> list[Setting]:
    ks = pde.KuramotoSivashinsky(64.0, 128)
    ns = pde.NavierStokes2D(2 * math.pi, 32, nu=1e-2, drag=0.1, forcing_amplitude=1.0,
                            forcing_wavenumber=4)
    return [
        Setting(
            "KS", ks,
            pde.GenerationConfig(dt=0.2, save_every=1, duration=28.0, seed=0, batch_size=64),
            pde.GenerationConfig(dt=0.2, save_every=4, duration=64.0, seed=0, batch_size=64),
            frames_per_step=4, model_dt=0.8, horizons=(1, 10, 40), rollout_steps=76, modes=16,
            description="Kuramoto–Sivashinsky, length 64, N = 128, ETDRK4 h = 0.2, model step 0.8",
        ),
        Setting(
            "NS", ns,
            pde.GenerationConfig(dt=0.05, save_every=4, duration=10.0, t_burn_in=5.0, seed=0,
                                 batch_size=32),
            pde.GenerationConfig(dt=0.05, save_every=4, duration=10.0, t_burn_in=5.0, seed=0,
                                 batch_size=32),
            frames_per_step=1, model_dt=0.2, horizons=(1, 10, 40), rollout_steps=44, modes=8,
            description="2-D Navier–Stokes (vorticity), Kolmogorov forcing k_f = 4, nu = 0.01, "
            "drag 0.1, 32 x 32, ETDRK4 h = 0.05, model step 0.2, after a 5 s burn-in",
        ),
    ]


def build_models(s: Setting) -> dict[str, nn.Module]:
    """The surrogates, each built under the same seed."""
    d, g, m = s.dim, s.grid, s.modes
    makers: dict[str, Callable[[], nn.Module]] = {
        "FNO": lambda: pde.OneStepSurrogate(FNO(width=24, modes=m, layers=4, dim=d),
                                            residual=True),
        "U-Net": lambda: pde.OneStepSurrogate(UNet(hidden=16, channel_mults=(1, 2, 2), dim=d),
                                              residual=True),
        "PDE-Refiner": lambda: pde.PDERefiner(
            UNet(2, 1, hidden=16, channel_mults=(1, 2, 2), dim=d, conditioned=True),
            num_steps=3, min_noise_std=4e-7,
        ),
        "SineNet": lambda: pde.OneStepSurrogate(
            SineNet(hidden=8, waves=4, levels=2, mult=1.5, dim=d), residual=True
        ),
        "T1": lambda: pde.OneStepSurrogate(
            T1(width=24, modes=m, layers=4, dim=d, grid=g, head_gain=1e-3), residual=True
        ),
        "ST-FNO (MSE)": lambda: pde.BlockSurrogate(
            SpaceTimeFNO(BLOCK, BLOCK, grid=g, width=16 if d == 1 else 12, modes=m,
                         modes_t=BLOCK // 2, layers=4, dim=d),
            BLOCK, residual=True,
        ),
    }
    models = {}
    for name, make in makers.items():
        torch.manual_seed(0)
        models[name] = make()
    models["Spectral-Refiner"] = copy.deepcopy(models["ST-FNO (MSE)"])
    return models


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def training_data(model: nn.Module, s: Setting, data: Tensor) -> tuple[Tensor, int]:
    """The tensor ``train_surrogate`` samples from and its frames per model step."""
    if isinstance(model, pde.BlockSurrogate):
        return pde.frame_blocks(data, BLOCK, s.frames_per_step), s.frames_per_step * BLOCK
    return data, s.frames_per_step


def train(name: str, model: nn.Module, s: Setting, data: Tensor, iterations: int,
          batch: int) -> float:
    """Train ``model`` for ``iterations`` steps; returns the wall time."""
    traj, fps = training_data(model, s, data)

    def cfg(n: int) -> pde.TrainConfig:
        return pde.TrainConfig(iterations=n, batch_size=batch, lr=1e-3, frames_per_step=fps,
                               seed=0)

    t = time.perf_counter()
    if name == "Spectral-Refiner":
        fine = max(1, round(FINE_TUNE_SHARE * iterations))
        pde.train_surrogate(model, traj, cfg(iterations - fine))
        freeze_for_spectral_refinement(model)
        length = float(s.eq.length)
        model.objective = pde.NegativeSobolevLoss(1.0, dim=s.dim, length=length)
        pde.train_surrogate(model, traj, cfg(fine))
    else:
        pde.train_surrogate(model, traj, cfg(iterations))
    return time.perf_counter() - t


def roll(model: nn.Module, test: Tensor, steps: int) -> Tensor:
    """Predictions of frames ``BLOCK - 1 .. BLOCK - 1 + steps`` from the first BLOCK frames."""
    g = torch.Generator().manual_seed(1)
    if isinstance(model, pde.BlockSurrogate):
        blocks = pde.rollout(model, test[:, :BLOCK], math.ceil(steps / BLOCK), generator=g)
        return pde.unblock(blocks)[:, BLOCK - 1 : BLOCK + steps]
    return pde.rollout(model, test[:, BLOCK - 1], steps, generator=g)


@torch.no_grad()
def one_step_nrmse(model: nn.Module, test: Tensor) -> float:
    """Next-frame nRMSE from true history, over every position of the test set."""
    g = torch.Generator().manual_seed(2)
    t = test.shape[1]
    if isinstance(model, pde.BlockSurrogate):
        hist = pde.frame_blocks(test[:, : t - 1], BLOCK)  # (B, T', BLOCK, *space)
        flat = hist.reshape(-1, *hist.shape[2:])
        pred = model.predict(flat, g)[:, 0]
    else:
        flat = test[:, BLOCK - 1 : t - 1].reshape(-1, *test.shape[2:])
        pred = model.predict(flat, g)
    ref = test[:, BLOCK:].reshape(-1, *test.shape[2:])
    return float(metrics.nrmse_per_step(pred[:, None], ref[:, None]).mean())


def evaluate(model: nn.Module, s: Setting, test: Tensor) -> dict:
    model.eval()
    t = time.perf_counter()
    pred = roll(model, test, s.rollout_steps)
    infer_s = time.perf_counter() - t
    ref = test[:, BLOCK - 1 : BLOCK + s.rollout_steps]
    nrmse = metrics.nrmse_per_step(pred, ref)  # (B, steps + 1)
    corr = metrics.pearson_per_step(pred, ref)
    return {
        "one_step": one_step_nrmse(model, test),
        "horizon": {h: float(nrmse[:, h].nanmean()) for h in s.horizons},
        "hct": float(pde.high_correlation_time(corr, s.model_dt).mean()),
        "infer_s": infer_s,
    }


def interleaved_times(models: dict[str, nn.Module], s: Setting, data: Tensor, test: Tensor,
                      batch: int, repeats: int = 3) -> dict[str, tuple[float, float]]:
    """Seconds per training iteration and per rollout of ``2 * BLOCK`` model steps, each the
    best of ``repeats`` rounds that visit every model in turn (so load changes hit all alike);
    training is timed on copies."""
    best = {name: (math.inf, math.inf) for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            clone = copy.deepcopy(model)
            traj, fps = training_data(clone, s, data)
            t = time.perf_counter()
            pde.train_surrogate(clone, traj, pde.TrainConfig(iterations=5, batch_size=batch,
                                                             frames_per_step=fps))
            step = (time.perf_counter() - t) / 5
            t = time.perf_counter()
            roll(model, test, 2 * BLOCK)
            infer = time.perf_counter() - t
            best[name] = (min(best[name][0], step), min(best[name][1], infer))
    return best


def run_setting(s: Setting, n_train: int, n_test: int, iterations: int, batch: int) -> dict:
    t = time.perf_counter()
    train_data = pde.generate(s.eq, n_train, s.train_cfg)
    test = pde.generate(s.eq, n_test, s.test_cfg, split="test")
    if s.test_cfg.save_every != s.train_cfg.save_every * s.frames_per_step:
        raise ValueError("test frames must be one model step apart")
    need = BLOCK + s.rollout_steps
    if test.shape[1] < need:
        raise ValueError(f"test trajectories have {test.shape[1]} frames, need {need}")
    out: dict = {"generate_s": time.perf_counter() - t, "models": {}}
    models = build_models(s)
    for name, model in models.items():
        train_s = train(name, model, s, train_data, iterations, batch)
        row = evaluate(model, s, test)
        row.update(params=parameter_count(model), train_s=train_s)
        out["models"][name] = row
        print(s.name, name, {k: v for k, v in row.items() if k != "horizon"}, row["horizon"],
              flush=True)
    for name, (step, infer) in interleaved_times(models, s, train_data, test, batch).items():
        out["models"][name].update(step_s=step, roll_s=infer)
    return out


def table(s: Setting, res: dict) -> list[str]:
    base = res["models"]["FNO"]
    hs = s.horizons
    head = (
        "| model | params | one-step nRMSE | "
        + " | ".join(f"nRMSE @ {h} ({h * s.model_dt:g} s)" for h in hs)
        + " | high-corr. time (s) | train s/iteration / FNO | rollout time / FNO |"
    )
    lines = [head, "|---|---:|---:|" + "---:|" * len(hs) + "---:|---:|---:|"]
    for name, r in res["models"].items():
        lines.append(
            f"| {name} | {r['params']:,} | {r['one_step']:.3g} | "
            + " | ".join(f"{r['horizon'][h]:.3g}" for h in hs)
            + f" | {r['hct']:.1f} | {r['step_s'] / base['step_s']:.2f} | "
            f"{r['roll_s'] / base['roll_s']:.2f} |"
        )
    return lines


def markdown(results: dict, args: argparse.Namespace, plans: list[Setting]) -> str:
    lines = [
        "## Neural PDE surrogates: FNO, U-Net, PDE-Refiner, SineNet, T1, ST-FNO, Spectral-Refiner",
        "",
        f"Machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cores visible; "
        f"torch {torch.__version__}; one thread, shared with other jobs. Times are ratios to "
        f"the FNO: seconds per training iteration and per rollout of {2 * BLOCK} model steps, "
        "each the best of 3 rounds that visit every model in turn.",
        "",
        f"**Same budget for every model: {args.iterations} AdamW iterations, batch "
        f"{args.batch_size}**, lr 1e-3 cosine, seed 0; {args.n_train} training and "
        f"{args.n_test} test trajectories per equation. Spectral-Refiner = ST-FNO trained with "
        f"MSE for {1 - FINE_TUNE_SHARE:.0%} of the iterations, then its final spectral layer "
        f"alone, untruncated, fine-tuned on the H^-1 loss for {FINE_TUNE_SHARE:.0%}. The ST-FNO "
        f"predicts blocks of {BLOCK} model steps from the {BLOCK} previous frames (each of its "
        f"iterations sees {BLOCK} target frames per sample). nRMSE = ||pred - ref|| / ||ref|| "
        "per frame; high-correlation time = first drop of the Pearson correlation below 0.8 "
        "(mean over test trajectories); rollouts start from the same true frames for all models. "
        "Spectral-Refiner's time per iteration is that of its fine-tuning phase (only the final "
        "layer trains); its MSE phase costs what the ST-FNO's iterations cost.",
        "",
    ]
    for s in plans:
        lines += [f"### {s.name}: {s.description}", ""]
        lines += table(s, results[s.name])
        lines += [""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="10x the iterations, 4x the data")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--only", choices=("KS", "NS"), default=None)
    p.add_argument("--out", type=Path, default=RESULTS / "pde_models.md")
    args = p.parse_args()
    args.iterations = args.iterations or (2000 if args.full else 200)
    args.n_train = args.n_train or (128 if args.full else 32)
    args.n_test = args.n_test or (16 if args.full else 8)
    torch.set_num_threads(1)
    plans = [s for s in settings(args.full) if args.only in (None, s.name)]
    results = {s.name: run_setting(s, args.n_train, args.n_test, args.iterations,
                                   args.batch_size) for s in plans}
    text = markdown(results, args, plans)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

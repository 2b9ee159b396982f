"""Training one-step surrogates on trajectories: random ``(u_t, u_{t+dt})`` pairs, AdamW with a
cosine learning-rate decay, optional pushforward (Brandstetter, Worrall & Welling 2022, "Message
Passing Neural PDE Solvers"): the input is first advanced ``unroll`` model steps by the
model itself without gradient, so the model learns to correct its own error distribution.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class TrainConfig:
    """Optimisation settings.

    Attributes:
        iterations: optimizer steps (the run also stops at ``time_budget_s`` if given).
        batch_size: pairs per step.
        lr, weight_decay: AdamW; the learning rate decays to 0 on a cosine over ``iterations``
            (or over ``time_budget_s`` if that runs out first).
        frames_per_step: saved frames per model step (model dt / frame dt).
        unroll: pushforward steps (0: plain one-step training).
        seed: seeds pair sampling and the objective's noise.
        time_budget_s: wall-clock limit in seconds (``None``: no limit).
    """

    iterations: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    frames_per_step: int = 1
    unroll: int = 0
    seed: int = 0
    time_budget_s: float | None = None


def sample_windows(
    traj: Tensor, count: int, frames_per_step: int, length: int, generator: torch.Generator
) -> Tensor:
    """``count`` random windows ``u(s), u(s + k), ..., u(s + (length-1) k)``.

    Returns ``(length, count, *space)``.
    """
    n, t = traj.shape[:2]
    span = (length - 1) * frames_per_step
    if span >= t:
        raise ValueError(
            f"trajectories of {t} frames are too short for windows spanning {span + 1}"
        )
    i = torch.randint(0, n, (count,), generator=generator)
    s = torch.randint(0, t - span, (count,), generator=generator)
    return torch.stack([traj[i, s + j * frames_per_step] for j in range(length)])


@dataclass
class _SurrogateTraining:
    """State of one :func:`train_surrogate` run."""

    surrogate: nn.Module
    traj: Tensor
    cfg: TrainConfig
    generator: torch.Generator
    opt: torch.optim.Optimizer
    device: torch.device
    bar: Any = None
    losses: list[float] = field(default_factory=list)
    start: float = 0.0


def train_surrogate(
    surrogate: nn.Module,
    traj: Tensor,
    cfg: TrainConfig,
    *,
    progress: bool = False,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> list[float]:
    """Train ``surrogate`` (anything with ``loss(u_prev, u_next, generator)`` and ``predict``) on
    trajectories ``traj`` of shape ``(N, T, *space)``; returns the loss of every iteration.

    ``callback(iteration, surrogate)``, if given, runs after each optimizer step (1-based count),
    e.g. to record a validation error during training."""
    if cfg.iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {cfg.iterations!r}")
    run = _setup(surrogate, traj, cfg, progress)
    surrogate.train()
    for it in range(cfg.iterations):
        _set_learning_rate(run, it)
        _iteration(run)
        if callback is not None:
            callback(it + 1, surrogate)
        if _out_of_time(run):
            break
    if run.bar is not None:
        run.bar.close()
    surrogate.eval()
    return run.losses


def _setup(
    surrogate: nn.Module, traj: Tensor, cfg: TrainConfig, progress: bool
) -> _SurrogateTraining:
    """Seeded generator, AdamW on the trainable parameters, progress bar, clock."""
    g = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in surrogate.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    device = next(iter(params)).device
    run = _SurrogateTraining(surrogate, traj, cfg, g, opt, device)
    if progress:
        from tqdm.auto import tqdm

        run.bar = tqdm(total=cfg.iterations, desc="train", unit="it")
    run.start = time.perf_counter()
    return run


def _set_learning_rate(run: _SurrogateTraining, it: int) -> None:
    """Cosine decay over the iterations, or over the time budget if that ends first."""
    cfg = run.cfg
    frac = it / cfg.iterations
    if cfg.time_budget_s is not None:
        frac = max(frac, (time.perf_counter() - run.start) / cfg.time_budget_s)
    for group in run.opt.param_groups:
        group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def _iteration(run: _SurrogateTraining) -> None:
    """One optimizer step on a batch of (pushed-forward) pairs; records and shows the loss."""
    cfg = run.cfg
    win = sample_windows(run.traj, cfg.batch_size, cfg.frames_per_step, cfg.unroll + 2, run.generator)
    _step_on_windows(run, win)


def _step_on_windows(run: _SurrogateTraining, win: Tensor) -> None:
    """One optimizer step on windows ``(unroll + 2, batch, *space)`` (also the online trainer's)."""
    cfg, g, surrogate = run.cfg, run.generator, run.surrogate
    win = win.to(run.device)
    u_prev = _pushforward(surrogate, win[0], cfg.unroll, g)
    loss = surrogate.loss(u_prev, win[-1], g)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    run.losses.append(float(loss.detach()))
    if run.bar is not None:
        run.bar.update(1)
        run.bar.set_postfix(loss=f"{run.losses[-1]:.3g}")


def _pushforward(surrogate: nn.Module, u: Tensor, unroll: int, g: torch.Generator) -> Tensor:
    """``u`` advanced ``unroll`` steps by the model's ``predict`` (in eval mode) for pushforward."""
    if unroll:
        surrogate.eval()
        for _ in range(unroll):
            u = surrogate.predict(u, g)
        surrogate.train()
    return u


def _out_of_time(run: _SurrogateTraining) -> bool:
    budget = run.cfg.time_budget_s
    return budget is not None and time.perf_counter() - run.start > budget


__all__ = ["TrainConfig", "sample_windows", "train_surrogate"]

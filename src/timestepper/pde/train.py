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

from ..train import distributed as ddp


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
    generator: torch.Generator  # the windows (the same global batches on every rank)
    noise: torch.Generator  # the surrogate's own draws (the same as ``generator`` in one process)
    opt: torch.optim.Optimizer
    device: torch.device
    ranks: ddp.Ranks = field(default_factory=ddp.Ranks)
    rows: slice | None = None
    loss_fn: nn.Module | None = None
    bar: Any = None
    losses: list[float] = field(default_factory=list)
    first: int = 0
    start: float = 0.0


class _Loss(nn.Module):
    """``surrogate.loss`` as a module's ``forward``, so that ``DistributedDataParallel`` (which
    averages the gradients of what its ``forward`` computes) can wrap it."""

    def __init__(self, surrogate: nn.Module) -> None:
        super().__init__()
        self.surrogate: Any = surrogate  # any module with a ``loss`` method

    def forward(self, u_prev: Tensor, u_next: Tensor, generator: torch.Generator) -> Tensor:
        return self.surrogate.loss(u_prev, u_next, generator)


def train_surrogate(  # noqa: PLR0913 - keyword options of the front, all with defaults
    surrogate: nn.Module,
    traj: Tensor,
    cfg: TrainConfig,
    *,
    progress: bool = False,
    state: dict[str, Any] | None = None,
    save_every: int = 0,
    save: Callable[[dict[str, Any]], None] | None = None,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> list[float]:
    """Train ``surrogate`` (anything with ``loss(u_prev, u_next, generator)`` and ``predict``) on
    trajectories ``traj`` of shape ``(N, T, *space)``; returns the loss of every iteration.

    Args:
        progress: a tqdm bar with the loss (rank 0 only under ``torchrun``).
        state: resume and record: a dict from an earlier run (keys ``iteration``, ``optimizer``,
            ``generator``, ``losses``) continues it up to ``cfg.iterations``; the dict is updated in
            place with the state at the end (pass ``{}`` to start afresh and receive it). The
            returned losses are those of this call.
        save_every, save: call ``save(state)`` with the state of the run (the dict ``state``
            receives) every ``save_every`` iterations before the last (``0``: never), e.g. to
            write a checkpoint; a run resumed from such a state with the same ``cfg`` continues
            exactly as if uninterrupted (for a surrogate without noise of its own under DDP).
        callback: ``callback(iteration, surrogate)`` runs after each optimizer step (1-based
            count), e.g. to record a validation error during training.

    Under ``torchrun`` (an initialised ``torch.distributed`` group; see
    :func:`timestepper.train.distributed.process_group`) the surrogate's loss is computed through
    ``DistributedDataParallel`` and ``cfg.batch_size`` is the global batch: every rank draws the
    same seeded windows and trains on its share of them (``batch_size`` must be a multiple of the
    number of processes). For a deterministic loss (:class:`OneStepSurrogate`) ``W`` processes
    take the same steps as one, up to floating-point reassociation; a surrogate that draws its own
    noise (:class:`PDERefiner`) draws it from a stream per rank
    (:func:`~timestepper.train.distributed.rank_generator`), which is statistically, not bitwise,
    the single-process run. The recorded losses are the global batch's.
    """
    if cfg.iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {cfg.iterations!r}")
    run = _setup(surrogate, traj, cfg, progress, state)
    surrogate.train()
    for it in range(run.first, cfg.iterations):
        _set_learning_rate(run, it)
        _iteration(run)
        if callback is not None:
            callback(it + 1, surrogate)
        if _out_of_time(run):
            break
        if save is not None and save_every and (it + 1) % save_every == 0 and it + 1 < cfg.iterations:
            save(_final_state(run))
    if run.bar is not None:
        run.bar.close()
    surrogate.eval()
    if state is not None:
        state.update(_final_state(run))
    return run.losses[run.first :]


def _setup(
    surrogate: nn.Module, traj: Tensor, cfg: TrainConfig, progress: bool, state: dict | None
) -> _SurrogateTraining:
    """Seeded generators, AdamW on the trainable parameters, DDP, the resumed state, progress bar
    and clock."""
    g = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in surrogate.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    device = next(iter(params)).device
    ranks = ddp.current_ranks()
    run = _SurrogateTraining(surrogate, traj, cfg, g, g, opt, device, ranks)
    if state:
        _restore(run, state)
    if ranks.distributed:
        run.rows = ddp.batch_rows(cfg.batch_size, ranks)
        run.noise = ddp.rank_generator(cfg.seed, ranks.rank, run.first)
        run.loss_fn = ddp.data_parallel(_Loss(surrogate), device)
    if progress and ranks.rank == 0:
        from tqdm.auto import tqdm

        run.bar = tqdm(total=cfg.iterations, initial=run.first, desc="train", unit="it")
    run.start = time.perf_counter()
    return run


def _restore(run: _SurrogateTraining, state: dict[str, Any]) -> None:
    """Continue the run recorded in ``state`` (see :func:`train_surrogate`)."""
    first = int(state["iteration"])
    if first > run.cfg.iterations:
        raise ValueError(
            f"iterations={run.cfg.iterations} is below the {first} iterations already trained: "
            f"pass iterations >= {first} to continue"
        )
    run.opt.load_state_dict(state["optimizer"])
    run.generator.set_state(state["generator"])
    run.first, run.losses = first, list(state.get("losses", []))


def _final_state(run: _SurrogateTraining) -> dict[str, Any]:
    return {
        "iteration": len(run.losses),
        "optimizer": run.opt.state_dict(),
        "generator": run.generator.get_state(),
        "losses": list(run.losses),
    }


def _set_learning_rate(run: _SurrogateTraining, it: int) -> None:
    """Cosine decay over the iterations, or over the time budget if that ends first (rank 0's
    clock under DDP, so that every rank steps with the same rate)."""
    cfg = run.cfg
    frac = it / cfg.iterations
    if cfg.time_budget_s is not None:
        elapsed = ddp.from_rank_zero(time.perf_counter() - run.start, run.ranks, run.device)
        frac = max(frac, elapsed / cfg.time_budget_s)
    for group in run.opt.param_groups:
        group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def _iteration(run: _SurrogateTraining) -> None:
    """One optimizer step on a batch of (pushed-forward) pairs; records and shows the loss (of
    the global batch: under DDP this rank trains on ``run.rows`` of it)."""
    cfg = run.cfg
    win = sample_windows(run.traj, cfg.batch_size, cfg.frames_per_step, cfg.unroll + 2, run.generator)
    if run.rows is not None:
        win = win[:, run.rows]
    _step_on_windows(run, win)


def _step_on_windows(run: _SurrogateTraining, win: Tensor) -> None:
    """One optimizer step on windows ``(unroll + 2, batch, *space)`` (also the online trainer's)."""
    cfg, surrogate = run.cfg, run.surrogate
    win = win.to(run.device)
    u_prev = _pushforward(surrogate, win[0], cfg.unroll, run.noise)
    loss_fn: Any = run.loss_fn if run.loss_fn is not None else surrogate.loss
    loss = loss_fn(u_prev, win[-1], run.noise)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    run.losses.append(ddp.mean_over_ranks(loss.detach(), run.ranks))
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
    """Past the time budget (rank 0's decision under DDP: all ranks stop at the same step)."""
    budget = run.cfg.time_budget_s
    if budget is None:
        return False
    late = time.perf_counter() - run.start > budget
    return bool(ddp.from_rank_zero(float(late), run.ranks, run.device))


__all__ = ["TrainConfig", "sample_windows", "train_surrogate"]

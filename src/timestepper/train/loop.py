"""The training loop: Adam, EMA, gradient clipping, tqdm progress with the loss, seeded,
checkpointed and resumable.

:func:`train` is a thin front: it gathers its keyword options into a :class:`_TrainConfig`,
validates them, builds (or resumes) a :class:`_LoopState` and then runs one optimisation step
after another (:func:`_optimisation_step`), each followed by the bookkeeping of
:func:`_after_step` (running loss, progress bar, periodic checkpoint, time budget).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import RAW, TRAIN_STATE, model_config, save_checkpoint
from .ema import EMA
from .model import DenoisingModel
from .objectives import DenoisingObjective


@dataclass
class TrainResult:
    """The trained model, its EMA copy (``None`` without EMA), and the loss of every step."""

    model: DenoisingModel
    ema: DenoisingModel | None
    losses: list[float] = field(default_factory=list)

    @property
    def sampling_model(self) -> DenoisingModel:
        """The model to sample with: the EMA copy when there is one."""
        return self.ema if self.ema is not None else self.model


@dataclass(frozen=True)
class _TrainConfig:
    """The options of one :func:`train` call (see its docstring), as given."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 100
    ema_decay: float | None = 0.999
    grad_clip: float | None = 1.0
    seed: int = 0
    out: str | os.PathLike | None = None
    save_every: int | None = None
    resume: bool = False
    progress: bool = True
    extra_config: dict[str, Any] | None = None
    max_seconds: float | None = None

    def training_record(self, step: int) -> dict[str, Any]:
        """The ``training`` entry of ``config.json`` for a checkpoint written after ``step``."""
        return {
            "step": step,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "warmup": self.warmup,
            "ema_decay": self.ema_decay,
            "grad_clip": self.grad_clip,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class _TrainJob:
    """What is trained on what: the model, the objective, the data and the options."""

    model: DenoisingModel
    objective: DenoisingObjective
    data: Tensor
    labels: Tensor | None
    noise: Tensor | None
    config: _TrainConfig


@dataclass
class _LoopState:
    """Everything the loop changes: optimiser, schedule, EMA, random stream, losses, progress."""

    rank: int
    world: int
    gen: torch.Generator
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    start: int = 0
    losses: list[float] = field(default_factory=list)
    device: torch.device | None = None
    net: nn.Module | None = None
    bar: Any = None
    show: bool = False
    avg: float | None = None
    t_start: float = 0.0


def _objective_config(objective: DenoisingObjective) -> dict[str, Any]:
    return {
        f.name: getattr(objective, f.name)
        for f in dataclasses.fields(objective)
        if f.name != "schedule"
    }


def train(  # noqa: PLR0913 - keyword options of the front, all with defaults
    model: DenoisingModel,
    objective: DenoisingObjective,
    data: Tensor,
    *,
    labels: Tensor | None = None,
    noise: Tensor | None = None,
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 2e-3,
    warmup: int = 100,
    ema_decay: float | None = 0.999,
    grad_clip: float | None = 1.0,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    save_every: int | None = None,
    resume: bool = False,
    progress: bool = True,
    extra_config: dict[str, Any] | None = None,
    max_seconds: float | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` with ``objective`` for ``steps`` optimiser steps.

    Args:
        model: a :class:`DenoisingModel` (built with
            :func:`~timestepper.train.checkpoint.make_model`
            if it is to be checkpointed).
        objective: a :class:`DenoisingObjective` on the model's schedule.
        data: training set ``(N, ...)``; batches are drawn with replacement by a seeded generator.
        labels: class labels ``(N,)`` for a class-conditional model.
        noise: paired noise ``(N, ...)`` for reflow (row ``i`` is the noise that produced
            ``data[i]``).
        steps: total number of optimiser steps (a resumed run continues up to it).
        batch_size, lr, warmup: Adam with a linear warm-up over ``warmup`` steps.
        ema_decay: EMA decay (``None``: no EMA).
        grad_clip: max gradient norm (``None``: no clipping).
        seed: seeds the batch, time, noise and label-dropout draws (initial weights are the
            caller's).
        out: checkpoint directory; written at the end and every ``save_every`` steps.
        resume: continue from the checkpoint in ``out`` (weights, EMA, optimiser, random state).
        progress: show a tqdm bar with the running loss.
        extra_config: more entries for ``config.json`` (e.g. the data set's name).
        max_seconds: wall-clock budget; training stops after the step that exceeds it (the
            checkpoint and ``len(losses)`` record how many steps were taken).

    Under ``torchrun`` (an initialised ``torch.distributed`` group) the model is wrapped in
    ``DistributedDataParallel``; each rank draws its own batches of ``batch_size`` (seed
    ``seed + rank``), and rank 0 shows progress and writes checkpoints. A resumed multi-process run
    continues rank 0's random stream exactly; the other ranks are re-seeded.
    """
    config = _TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        ema_decay=ema_decay,
        grad_clip=grad_clip,
        seed=seed,
        out=out,
        save_every=save_every,
        resume=resume,
        progress=progress,
        extra_config=extra_config,
        max_seconds=max_seconds,
    )
    job = _TrainJob(model, objective, data, labels, noise, config)
    _validate(job)
    state = _build_state(job)
    _start(job, state)
    done = _run_steps(job, state)
    return _finish(job, state, done)


# --- validation -------------------------------------------------------------------------------


def _validate(job: _TrainJob) -> None:
    """Raise on inconsistent arguments (checked in a fixed order: the first problem is named)."""
    _check_model_and_objective(job.model, job.objective)
    _check_data_and_options(job)


def _check_model_and_objective(model: Any, objective: Any) -> None:
    if not isinstance(model, DenoisingModel):
        raise TypeError(f"model must be a DenoisingModel, got {type(model).__name__}")
    if not isinstance(objective, DenoisingObjective):
        raise TypeError(f"objective must be a DenoisingObjective, got {type(objective).__name__}")
    if type(objective.schedule) is not type(model.schedule):
        raise ValueError(
            f"objective schedule {objective.schedule!r} differs from the model's {model.schedule!r}"
        )


def _check_data_and_options(job: _TrainJob) -> None:
    steps, data = job.config.steps, job.data
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    for name, t in (("labels", job.labels), ("noise", job.noise)):
        if t is not None and t.shape[0] != data.shape[0]:
            raise ValueError(f"{name} has {t.shape[0]} rows but data has {data.shape[0]}")
    if not any(p.requires_grad for p in job.model.parameters()):
        raise ValueError(
            "the model has no parameters that require grad (an EMA copy? call "
            "model.requires_grad_(True) first)"
        )
    if job.config.resume and job.config.out is None:
        raise ValueError("resume=True needs out= (the checkpoint directory)")


# --- state: build or resume, then prepare for the loop ----------------------------------------


def _build_state(job: _TrainJob) -> _LoopState:
    """Generator, Adam with linear warm-up, EMA; restored from ``out`` when resuming."""
    cfg, model = job.config, job.model
    rank, world = _distributed()
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    warmup = cfg.warmup
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    state = _LoopState(rank=rank, world=world, gen=gen, opt=opt, sched=sched, ema=ema)
    if cfg.resume:
        state.start, state.losses = _restore(Path(cfg.out), model, state)
        if rank > 0:  # only rank 0's stream is saved; give the others fresh, distinct ones
            gen.manual_seed(cfg.seed + rank + 1_000_003 * state.start)
    return state


def _start(job: _TrainJob, state: _LoopState) -> None:
    """Training mode, the (DDP-wrapped) network to call, the progress bar and the clock."""
    model, cfg = job.model, job.config
    model.train()
    dev = next(model.parameters()).device
    net: nn.Module = model
    if state.world:  # an initialised group (even of one process) trains through DDP
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    state.device, state.net = dev, net
    state.show = cfg.progress and state.rank == 0
    state.bar = tqdm(
        range(state.start, cfg.steps),
        initial=state.start,
        total=cfg.steps,
        disable=not state.show,
        desc="train",
    )
    state.avg = None
    state.t_start = time.perf_counter()


# --- the loop ---------------------------------------------------------------------------------


def _run_steps(job: _TrainJob, state: _LoopState) -> int:
    """Run the steps left; the number of steps taken in all (``steps`` unless out of time)."""
    for step in state.bar:
        loss = _optimisation_step(job, state)
        if _after_step(job, state, step, loss):
            return step + 1
    return job.config.steps


def _optimisation_step(job: _TrainJob, state: _LoopState) -> float:
    """Draw a batch, one Adam step (with clipping and the warm-up), update the EMA; the loss."""
    dev, gen = state.device, state.gen
    idx = torch.randint(0, job.data.shape[0], (job.config.batch_size,), generator=gen)
    x0 = job.data[idx].to(dev)
    nz = job.noise[idx].to(dev) if job.noise is not None else None
    lb = job.labels[idx].to(dev) if job.labels is not None else None
    loss = job.objective(state.net, x0, noise=nz, labels=lb, generator=gen)
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    if job.config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(job.model.parameters(), job.config.grad_clip)
    state.opt.step()
    state.sched.step()
    if state.ema is not None:
        state.ema.update(job.model)
    return loss.item()  # training loop, not a sampling step: one sync per step is fine


def _after_step(job: _TrainJob, state: _LoopState, step: int, loss: float) -> bool:
    """Record the loss, show it, write a periodic checkpoint; whether to stop (out of time)."""
    _record_loss(job, state, loss)
    if _periodic_save_due(job, state, step):
        _save(job, state, step + 1)
    return _out_of_time(job, state)


def _record_loss(job: _TrainJob, state: _LoopState, loss: float) -> None:
    state.losses.append(loss)
    state.avg = loss if state.avg is None else 0.98 * state.avg + 0.02 * loss
    if state.show:
        state.bar.set_postfix(loss=f"{state.avg:.4f}")


def _periodic_save_due(job: _TrainJob, state: _LoopState, step: int) -> bool:
    cfg = job.config
    saving = cfg.out is not None and state.rank == 0
    due = saving and cfg.save_every and (step + 1) % cfg.save_every == 0
    return bool(due and step + 1 < cfg.steps)


def _out_of_time(job: _TrainJob, state: _LoopState) -> bool:
    if job.config.max_seconds is None:
        return False
    local = time.perf_counter() - state.t_start > job.config.max_seconds
    return _stop(local, state.world, state.device)


def _finish(job: _TrainJob, state: _LoopState, done: int) -> TrainResult:
    """Close the bar, evaluation mode, the final checkpoint (after ``done`` steps); the result."""
    state.bar.close()
    job.model.eval()
    if job.config.out is not None and state.rank == 0:
        _save(job, state, done)
    ema = state.ema
    return TrainResult(job.model, ema.module if ema is not None else None, state.losses)


# --- checkpoints ------------------------------------------------------------------------------


def _save(job: _TrainJob, state: _LoopState, step: int) -> None:
    """Write the checkpoint of ``step`` (sampling weights, raw weights and the resume state)."""
    ema = state.ema
    save_checkpoint(
        job.config.out,
        _checkpoint_config(job, step),
        ema.module if ema is not None else job.model,
        raw=job.model,
        train_state=_train_state(state, step),
    )


def _checkpoint_config(job: _TrainJob, step: int) -> dict[str, Any]:
    model = job.model
    return model_config(
        model,
        job.objective.prediction,
        objective=_objective_config(job.objective),
        data={
            "shape": list(job.data.shape[1:]),
            "num_classes": getattr(getattr(model.net, "cond", None), "num_classes", 0),
        },
        training=job.config.training_record(step),
        **(job.config.extra_config or {}),
    )


def _train_state(state: _LoopState, step: int) -> dict[str, Any]:
    return {
        "step": step,
        "losses": state.losses,
        "optimizer": state.opt.state_dict(),
        "lr_scheduler": state.sched.state_dict(),
        "generator": state.gen.get_state(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
    }


def _restore(d: Path, model: DenoisingModel, state: _LoopState) -> tuple[int, list[float]]:
    """Load weights, optimiser, schedule, random state and EMA from ``d``; ``(step, losses)``."""
    from safetensors.torch import load_file

    from .checkpoint import WEIGHTS

    if not (d / TRAIN_STATE).is_file() or not (d / RAW).is_file():
        raise FileNotFoundError(f"cannot resume: {d} has no {RAW} / {TRAIN_STATE}")
    dev = next(model.parameters()).device
    model.load_state_dict(load_file(str(d / RAW), device=str(dev)))
    saved = torch.load(d / TRAIN_STATE, map_location="cpu", weights_only=True)
    state.opt.load_state_dict(saved["optimizer"])
    state.sched.load_state_dict(saved["lr_scheduler"])
    state.gen.set_state(saved["generator"])
    ema = state.ema
    if ema is not None:
        if saved["ema"] is None:
            raise ValueError(
                "the checkpoint was trained without EMA; pass ema_decay=None to resume it"
            )
        ema.module.load_state_dict(load_file(str(d / WEIGHTS), device=str(dev)))
        ema.load_state_dict(saved["ema"])
    return int(saved["step"]), list(saved["losses"])


# --- torch.distributed ------------------------------------------------------------------------


def _distributed() -> tuple[int, int]:
    """``(rank, world_size)`` of an initialised ``torch.distributed`` group, else ``(0, 0)``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 0


def _stop(local: bool, world: int, device: torch.device) -> bool:
    """Rank 0's decision, shared so that all ranks leave the loop at the same step."""
    if world == 0:
        return local
    flag = torch.tensor([1.0 if local else 0.0], device=device)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())

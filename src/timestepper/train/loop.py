"""The training loop: Adam, EMA, gradient clipping, tqdm progress with the loss, seeded,
checkpointed and resumable.

:func:`train` is a thin front: it gathers its keyword options into a :class:`_TrainConfig`,
validates them, builds (or resumes) a :class:`_LoopState` and then runs one optimisation step
after another (:func:`_optimisation_step`), each followed by the bookkeeping of
:func:`_after_step` (running loss, progress bar, periodic checkpoint, time budget).

Checkpoints are written atomically (:mod:`timestepper.train.checkpoint`) every ``save_every``
steps and every ``save_seconds`` of wall time (default ten minutes), and at the end, so a process
killed at any moment loses at most one save interval; ``resume=True`` continues from the last
complete save, after checking that it was made with the same settings and data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import (
    RAW,
    WEIGHTS,
    has_checkpoint,
    load_tensors,
    load_train_state,
    load_weights,
    model_config,
    read_config,
    save_checkpoint,
)
from .distributed import (
    Ranks,
    batch_rows,
    current_ranks,
    data_parallel,
    from_rank_zero,
    mean_over_ranks,
)
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
    save_seconds: float | None = 600.0
    resume: bool = False
    overwrite: bool = False
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
    fingerprint: str = ""


@dataclass
class _LoopState:
    """Everything the loop changes: optimiser, schedule, EMA, random stream, losses, progress."""

    ranks: Ranks
    gen: torch.Generator
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    start: int = 0
    losses: list[float] = field(default_factory=list)
    device: torch.device | None = None
    net: nn.Module | None = None
    rows: slice | None = None
    bar: Any = None
    show: bool = False
    avg: float | None = None
    t_start: float = 0.0
    last_save: float = 0.0


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
    save_seconds: float | None = 600.0,
    resume: bool = False,
    overwrite: bool = False,
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
        ema_decay: EMA decay in ``[0, 1)`` (``None``: no EMA).
        grad_clip: max gradient norm (``None``: no clipping).
        seed: seeds the batch, time, noise and label-dropout draws (initial weights are the
            caller's).
        out: checkpoint directory; written atomically at the end, every ``save_every`` steps and
            every ``save_seconds`` of wall time.
        save_every: steps between periodic checkpoints (``None`` or 0: by wall time only).
        save_seconds: wall-clock seconds between periodic checkpoints (default 600; ``None``: by
            steps only). A process killed at any moment loses at most one such interval.
        resume: continue from the checkpoint in ``out`` (weights, EMA, optimiser, random state).
            Refused when the checkpoint was made with other settings (objective, schedule,
            network, data, optimiser options; the message names the differing keys) or when
            ``steps`` is below its step.
        overwrite: train afresh into an ``out`` that already holds a checkpoint (it is replaced at
            the first save); without it, or ``resume``, such an ``out`` is refused.
        progress: show a tqdm bar with the running loss.
        extra_config: more entries for ``config.json`` (e.g. the data set's name).
        max_seconds: wall-clock budget; training stops after the step that exceeds it (the
            checkpoint and ``len(losses)`` record how many steps were taken).

    Raises:
        FileExistsError: ``out`` holds a checkpoint and neither ``resume`` nor ``overwrite``.
        FileNotFoundError: ``resume`` and ``out`` holds no checkpoint.
        NotADirectoryError: ``out`` is a file.
        ValueError: an invalid option, or a checkpoint that does not match (see ``resume``);
            :class:`~timestepper.train.store.CheckpointError` (a ``ValueError``) for a corrupt,
            truncated or mixed checkpoint file, named in the message.

    Under ``torchrun`` (an initialised ``torch.distributed`` group, see
    :func:`timestepper.train.distributed.process_group`) the model is wrapped in
    ``DistributedDataParallel`` and ``batch_size`` is the global batch: every rank draws the same
    seeded batch with its times, noise and label dropout, and trains on its share of the rows
    (``batch_size`` must be a multiple of the number of processes), so ``W`` processes take the same
    steps as one process, up to floating-point reassociation. The recorded losses are the global
    batch's; rank 0 shows progress and writes checkpoints, and a resumed run continues exactly.
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
        save_seconds=save_seconds,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        extra_config=extra_config,
        max_seconds=max_seconds,
    )
    job = _TrainJob(model, objective, data, labels, noise, config)
    _validate(job)
    job = dataclasses.replace(job, fingerprint=data_fingerprint(data, labels, noise))
    state = _build_state(job)
    _start(job, state)
    done = _run_steps(job, state)
    return _finish(job, state, done)


# --- validation -------------------------------------------------------------------------------


def _validate(job: _TrainJob) -> None:
    """Raise on inconsistent arguments (checked in a fixed order: the first problem is named)."""
    _check_model_and_objective(job.model, job.objective)
    _check_counts(job.config)
    _check_rates(job.config)
    _check_data(job)
    _check_out(job.config)


def _check_model_and_objective(model: Any, objective: Any) -> None:
    if not isinstance(model, DenoisingModel):
        raise TypeError(f"model must be a DenoisingModel, got {type(model).__name__}")
    if not isinstance(objective, DenoisingObjective):
        raise TypeError(f"objective must be a DenoisingObjective, got {type(objective).__name__}")
    if type(objective.schedule) is not type(model.schedule):
        raise ValueError(
            f"objective schedule {objective.schedule!r} differs from the model's {model.schedule!r}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_counts(cfg: _TrainConfig) -> None:
    """The integer options: ``steps``, ``batch_size`` >= 1; ``warmup``, ``seed``, ``save_every``
    >= 0."""
    for name, value, low in (
        ("steps", cfg.steps, 1),
        ("batch_size", cfg.batch_size, 1),
        ("warmup", cfg.warmup, 0),
        ("seed", cfg.seed, 0),
    ):
        if not _is_int(value) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if cfg.save_every is not None and (not _is_int(cfg.save_every) or cfg.save_every < 0):
        raise ValueError(
            f"save_every must be an integer >= 0 (0: no step-based saves) or None, got "
            f"{cfg.save_every!r}"
        )


def _check_rates(cfg: _TrainConfig) -> None:
    """The real options: ``lr`` > 0, ``ema_decay`` in [0, 1), positive limits (``max_seconds``
    may be 0: one step)."""
    if not _is_real(cfg.lr) or cfg.lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {cfg.lr!r}")
    if cfg.ema_decay is not None and not (_is_real(cfg.ema_decay) and 0 <= cfg.ema_decay < 1):
        raise ValueError(f"ema_decay must be in [0, 1) or None, got {cfg.ema_decay!r}")
    for name, value in (("grad_clip", cfg.grad_clip), ("save_seconds", cfg.save_seconds)):
        if value is not None and not (_is_real(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0 or None, got {value!r}")
    budget = cfg.max_seconds
    if budget is not None and not (_is_real(budget) and budget >= 0):
        raise ValueError(f"max_seconds must be a finite number >= 0 or None, got {budget!r}")


def _check_data(job: _TrainJob) -> None:
    data = job.data
    if not isinstance(data, Tensor) or data.ndim < 1 or data.shape[0] < 1:
        raise ValueError("data must be a tensor (N, ...) with N >= 1")
    for name, t in (("labels", job.labels), ("noise", job.noise)):
        if t is not None and t.shape[0] != data.shape[0]:
            raise ValueError(f"{name} has {t.shape[0]} rows but data has {data.shape[0]}")
    if not any(p.requires_grad for p in job.model.parameters()):
        raise ValueError(
            "the model has no parameters that require grad (an EMA copy? call "
            "model.requires_grad_(True) first)"
        )


def _check_out(cfg: _TrainConfig) -> None:
    """``out`` is a folder (or nothing yet); an existing checkpoint needs ``resume`` or
    ``overwrite``, and ``resume`` needs one."""
    if cfg.out is None:
        if cfg.resume:
            raise ValueError("resume=True needs out= (the checkpoint directory)")
        return
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out={str(out)!r} is a file; the checkpoint needs a directory")
    if cfg.resume and cfg.overwrite:
        raise ValueError("resume=True and overwrite=True exclude each other")
    if cfg.resume and not has_checkpoint(out):
        raise FileNotFoundError(f"cannot resume: {out} holds no checkpoint (no config.json)")
    if not cfg.resume and not cfg.overwrite and has_checkpoint(out):
        raise FileExistsError(
            f"{out} already holds a checkpoint: pass resume=True (--resume) to continue it, "
            f"overwrite=True (--overwrite) to replace it, or choose another out"
        )


def data_fingerprint(*tensors: Tensor | None) -> str:
    """A short SHA-256 of the training tensors (shape, dtype and values; for tensors over
    64 MiB, 4096 evenly spaced rows), recorded in checkpoints to refuse resuming on other data."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none;")
            continue
        h.update(f"{tuple(t.shape)}{t.dtype};".encode())
        t = t.detach()
        if t.numel() * t.element_size() > 64 << 20:
            t = t[torch.linspace(0, t.shape[0] - 1, 4096).round().long().to(t.device)]
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# --- state: build or resume, then prepare for the loop ----------------------------------------


def _build_state(job: _TrainJob) -> _LoopState:
    """Generator, Adam with linear warm-up, EMA; restored from ``out`` when resuming."""
    cfg, model = job.config, job.model
    ranks = current_ranks()
    gen = torch.Generator().manual_seed(cfg.seed)  # the same global batches on every rank
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    warmup = cfg.warmup
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    state = _LoopState(ranks=ranks, gen=gen, opt=opt, sched=sched, ema=ema)
    if ranks.distributed:
        state.rows = batch_rows(cfg.batch_size, ranks)
    if cfg.resume:
        state.start, state.losses = _restore(job, state)
    return state


def _start(job: _TrainJob, state: _LoopState) -> None:
    """Training mode, the (DDP-wrapped) network to call, the progress bar and the clock."""
    model, cfg = job.model, job.config
    model.train()
    dev = next(model.parameters()).device
    net: nn.Module = model
    if state.ranks.distributed:  # an initialised group (even of one process) trains through DDP
        net = data_parallel(model, dev)
    state.device, state.net = dev, net
    state.show = cfg.progress and state.ranks.rank == 0
    state.bar = tqdm(
        range(state.start, cfg.steps),
        initial=state.start,
        total=cfg.steps,
        disable=not state.show,
        desc="train",
    )
    state.avg = None
    state.t_start = state.last_save = time.perf_counter()


# --- the loop ---------------------------------------------------------------------------------


def _run_steps(job: _TrainJob, state: _LoopState) -> int:
    """Run the steps left; the number of steps taken in all (``steps`` unless out of time)."""
    for step in state.bar:
        loss = _optimisation_step(job, state)
        if _after_step(job, state, step, loss):
            return step + 1
    return job.config.steps


def _optimisation_step(job: _TrainJob, state: _LoopState) -> float:
    """Draw a batch, one Adam step (with clipping and the warm-up), update the EMA; the loss (of
    the global batch under DDP: this rank trains on ``state.rows`` of it)."""
    dev, gen = state.device, state.gen
    idx = torch.randint(0, job.data.shape[0], (job.config.batch_size,), generator=gen)
    x0 = job.data[idx].to(dev)
    nz = job.noise[idx].to(dev) if job.noise is not None else None
    lb = job.labels[idx].to(dev) if job.labels is not None else None
    share = {} if state.rows is None else {"rows": state.rows}  # DDP: this rank's rows
    loss = job.objective(state.net, x0, noise=nz, labels=lb, generator=gen, **share)
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    if job.config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(job.model.parameters(), job.config.grad_clip)
    state.opt.step()
    state.sched.step()
    if state.ema is not None:
        state.ema.update(job.model)
    # training loop, not a sampling step: one sync per step is fine
    return mean_over_ranks(loss, state.ranks)


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
    """Every ``save_every`` steps and every ``save_seconds`` since the last save (rank 0; not at
    the last step, whose checkpoint :func:`_finish` writes)."""
    cfg = job.config
    if cfg.out is None or state.ranks.rank != 0 or step + 1 >= cfg.steps:
        return False
    by_steps = bool(cfg.save_every) and (step + 1) % (cfg.save_every or 1) == 0
    by_time = (
        cfg.save_seconds is not None
        and time.perf_counter() - state.last_save >= cfg.save_seconds
    )
    return by_steps or by_time


def _out_of_time(job: _TrainJob, state: _LoopState) -> bool:
    if job.config.max_seconds is None:
        return False
    local = time.perf_counter() - state.t_start > job.config.max_seconds
    return bool(from_rank_zero(float(local), state.ranks, state.device))  # all stop at one step


def _finish(job: _TrainJob, state: _LoopState, done: int) -> TrainResult:
    """Close the bar, evaluation mode, the final checkpoint (after ``done`` steps); the result."""
    state.bar.close()
    job.model.eval()
    if job.config.out is not None and state.ranks.rank == 0:
        _save(job, state, done)
    ema = state.ema
    return TrainResult(job.model, ema.module if ema is not None else None, state.losses)


# --- checkpoints ------------------------------------------------------------------------------


def _save(job: _TrainJob, state: _LoopState, step: int) -> None:
    """Write the checkpoint of ``step`` (sampling weights, raw weights and the resume state)."""
    state.last_save = time.perf_counter()
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
            "rows": int(job.data.shape[0]),
            "fingerprint": job.fingerprint,
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


def _restore(job: _TrainJob, state: _LoopState) -> tuple[int, list[float]]:
    """Check that the checkpoint in ``out`` belongs to this job, then load weights, optimiser,
    schedule, random state and EMA from it; ``(step, losses)``."""
    d = Path(job.config.out or "")
    saved_cfg = read_config(d)
    _check_same_job(d, saved_cfg, _checkpoint_config(job, 0))
    saved_step = saved_cfg.get("training", {}).get("step", 0)
    if job.config.steps < saved_step:
        raise ValueError(
            f"steps={job.config.steps} is below the step {saved_step} of the checkpoint in {d}: "
            f"pass steps >= {saved_step} to continue it"
        )
    dev = str(next(job.model.parameters()).device)
    load_weights(job.model, load_tensors(d, saved_cfg, RAW, dev), f"{d} ({RAW})")
    saved = load_train_state(d, saved_cfg)
    state.opt.load_state_dict(saved["optimizer"])
    state.sched.load_state_dict(saved["lr_scheduler"])
    state.gen.set_state(saved["generator"])
    ema = state.ema
    if ema is not None:
        if saved["ema"] is None:
            raise ValueError(
                "the checkpoint was trained without EMA; pass ema_decay=None to resume it"
            )
        load_weights(ema.module, load_tensors(d, saved_cfg, WEIGHTS, dev), f"{d} ({WEIGHTS})")
        ema.load_state_dict(saved["ema"])
    return int(saved["step"]), list(saved["losses"])


# Entries of config.json that may differ between a checkpoint and the run resuming it.
_MAY_DIFFER = {"checkpoint", "format", "version", "training.step", "training.steps"}
# Entries that version-1 checkpoints do not record (nothing to compare).
_NEW_IN_VERSION_2 = {"data.fingerprint", "data.rows"}
_ABSENT = "<absent>"


def _check_same_job(d: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint written with other settings, naming the differing keys."""
    now = json.loads(json.dumps(now))  # the values as config.json stores them (lists, floats)
    diffs = [
        f"{key} (checkpoint {_short(a)}, now {_short(b)})"
        for key, a, b in _differences(saved, now)
        if key not in _MAY_DIFFER and not (a == _ABSENT and key in _NEW_IN_VERSION_2)
    ]
    if diffs:
        raise ValueError(
            f"cannot resume {d}: it was trained with other settings: {'; '.join(diffs)}. Use the "
            f"same settings, or train afresh (another out, or overwrite=True / --overwrite)"
        )


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, value in a, value in b)`` for every leaf where two JSON objects differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            name = f"{prefix}.{key}" if prefix else str(key)
            out.extend(_differences(a.get(key, _ABSENT), b.get(key, _ABSENT), name))
        return out
    return [] if a == b else [(prefix, a, b)]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

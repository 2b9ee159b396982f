"""The training loop: Adam, EMA, gradient clipping, tqdm progress with the loss, seeded,
checkpointed and resumable."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
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
        return self.ema if self.ema is not None else self.model


def _objective_config(objective: DenoisingObjective) -> dict[str, Any]:
    return {
        f.name: getattr(objective, f.name)
        for f in dataclasses.fields(objective)
        if f.name != "schedule"
    }


def train(
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
    if not isinstance(model, DenoisingModel):
        raise TypeError(f"model must be a DenoisingModel, got {type(model).__name__}")
    if not isinstance(objective, DenoisingObjective):
        raise TypeError(f"objective must be a DenoisingObjective, got {type(objective).__name__}")
    if type(objective.schedule) is not type(model.schedule):
        raise ValueError(
            f"objective schedule {objective.schedule!r} differs from the model's {model.schedule!r}"
        )
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    for name, t in (("labels", labels), ("noise", noise)):
        if t is not None and t.shape[0] != data.shape[0]:
            raise ValueError(f"{name} has {t.shape[0]} rows but data has {data.shape[0]}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            "the model has no parameters that require grad (an EMA copy? call "
            "model.requires_grad_(True) first)"
        )
    if resume and out is None:
        raise ValueError("resume=True needs out= (the checkpoint directory)")

    rank, world = _distributed()
    gen = torch.Generator().manual_seed(seed + rank)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    ema = EMA(model, ema_decay) if ema_decay is not None else None
    start, losses = 0, []
    if resume:
        start, losses = _restore(Path(out), model, ema, opt, sched, gen)
        if rank > 0:  # only rank 0's stream is saved; give the others fresh, distinct ones
            gen.manual_seed(seed + rank + 1_000_003 * start)

    def save(step: int) -> None:
        cfg = model_config(
            model,
            objective.prediction,
            objective=_objective_config(objective),
            data={
                "shape": list(data.shape[1:]),
                "num_classes": getattr(getattr(model.net, "cond", None), "num_classes", 0),
            },
            training={
                "step": step,
                "steps": steps,
                "batch_size": batch_size,
                "lr": lr,
                "warmup": warmup,
                "ema_decay": ema_decay,
                "grad_clip": grad_clip,
                "seed": seed,
            },
            **(extra_config or {}),
        )
        state = {
            "step": step,
            "losses": losses,
            "optimizer": opt.state_dict(),
            "lr_scheduler": sched.state_dict(),
            "generator": gen.get_state(),
            "ema": ema.state_dict() if ema is not None else None,
        }
        save_checkpoint(
            out, cfg, ema.module if ema is not None else model, raw=model, train_state=state
        )

    model.train()
    dev = next(model.parameters()).device
    net = model
    if world:  # an initialised group (even of one process) trains through DDP
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    show = progress and rank == 0
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not show, desc="train")
    avg = None
    t_start = time.perf_counter()
    done = steps
    for step in bar:
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
        x0 = data[idx].to(dev)
        nz = noise[idx].to(dev) if noise is not None else None
        lb = labels[idx].to(dev) if labels is not None else None
        loss = objective(net, x0, noise=nz, labels=lb, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        lv = loss.item()  # training loop, not a sampling step: one sync per step is fine
        losses.append(lv)
        avg = lv if avg is None else 0.98 * avg + 0.02 * lv
        if show:
            bar.set_postfix(loss=f"{avg:.4f}")
        saving = out is not None and rank == 0
        if saving and save_every and (step + 1) % save_every == 0 and step + 1 < steps:
            save(step + 1)
        if max_seconds is not None and _stop(
            time.perf_counter() - t_start > max_seconds, world, dev
        ):
            done = step + 1
            break
    bar.close()
    model.eval()
    if out is not None and rank == 0:
        save(done)
    return TrainResult(model, ema.module if ema is not None else None, losses)


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


def _restore(d: Path, model, ema, opt, sched, gen) -> tuple[int, list[float]]:
    from safetensors.torch import load_file

    from .checkpoint import WEIGHTS

    if not (d / TRAIN_STATE).is_file() or not (d / RAW).is_file():
        raise FileNotFoundError(f"cannot resume: {d} has no {RAW} / {TRAIN_STATE}")
    dev = next(model.parameters()).device
    model.load_state_dict(load_file(str(d / RAW), device=str(dev)))
    state = torch.load(d / TRAIN_STATE, map_location="cpu", weights_only=True)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["lr_scheduler"])
    gen.set_state(state["generator"])
    if ema is not None:
        if state["ema"] is None:
            raise ValueError(
                "the checkpoint was trained without EMA; pass ema_decay=None to resume it"
            )
        ema.module.load_state_dict(load_file(str(d / WEIGHTS), device=str(dev)))
        ema.load_state_dict(state["ema"])
    return int(state["step"]), list(state["losses"])

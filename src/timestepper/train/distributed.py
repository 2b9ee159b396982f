"""Data-parallel training under ``torchrun``: the plumbing shared by the two training fronts
(:func:`timestepper.train.train` for diffusion models, :func:`timestepper.pde.train_surrogate`
for PDE surrogates).

The convention is that of PyTorch's ``DistributedDataParallel`` (Li et al. 2020, "PyTorch
Distributed: Experiences on Accelerating Data Parallel Training"): every process holds a replica
of the model, gradients are averaged across processes in the backward pass, and the optimiser
steps are identical. Here each step's **global** batch is drawn by a generator seeded the same on
every rank, and rank ``r`` of ``W`` takes rows ``[r B / W, (r + 1) B / W)`` of it
(:func:`batch_rows`). Since the loss is a mean over the rows and DDP averages the gradients of the
``W`` equal shares, a ``W``-process run takes the same optimiser steps as one process on the same
global batch, up to floating-point reassociation.

:func:`process_group` initialises the group from ``torchrun``'s environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), with ``gloo`` on CPU and
``nccl`` on CUDA, and destroys it on exit::

    torchrun --nproc_per_node 2 -m timestepper.cli pde train ks.h5 --out runs/ks-unet

Only rank 0 shows progress and writes checkpoints (:func:`is_main_process`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: ``rank`` of ``world`` (``world == 0``: no group)."""

    rank: int = 0
    world: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 0


def launched_by_torchrun() -> bool:
    """Whether ``torchrun`` (or ``torch.distributed.run``) started this process: its ``RANK``,
    ``WORLD_SIZE`` and ``LOCAL_RANK`` variables are set."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def current_ranks() -> Ranks:
    """The rank and size of the initialised ``torch.distributed`` group, else ``Ranks(0, 0)``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def is_main_process() -> bool:
    """Rank 0 of the group, or the only process: the one that prints and writes files."""
    return current_ranks().rank == 0


def local_device() -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@contextmanager
def process_group(backend: str | None = None, *, required: bool = False) -> Iterator[Ranks]:
    """Initialise ``torch.distributed`` from ``torchrun``'s environment for the ``with`` block.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default ``nccl`` when CUDA is available, else ``gloo``.
        required: raise when the process was not started by ``torchrun`` (default: run as a
            single process, yielding ``Ranks(0, 0)``).

    A group that is already initialised is used as it is and left alive; a group initialised here
    is destroyed on exit, also after an exception.

    Raises:
        RuntimeError: ``required`` and the torchrun variables are missing, or ``torch.distributed``
            is not available in this build of PyTorch.
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        yield current_ranks()
        return
    if not launched_by_torchrun():
        if required:
            missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
            raise RuntimeError(
                f"distributed training needs the variables {', '.join(missing)} that torchrun "
                f"sets: launch with `torchrun --nproc_per_node N ...`"
            )
        yield Ranks()
        return
    if not dist.is_available():
        raise RuntimeError("this build of PyTorch has no torch.distributed")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend, init_method="env://")
    try:
        yield current_ranks()
    finally:
        dist.destroy_process_group()


def batch_rows(batch_size: int, ranks: Ranks) -> slice:
    """The rows of a global batch of ``batch_size`` that rank ``ranks.rank`` trains on.

    Raises:
        ValueError: ``batch_size`` is not a multiple of the number of processes.
    """
    world = max(ranks.world, 1)
    if batch_size % world:
        raise ValueError(
            f"batch_size={batch_size} must be a multiple of the number of processes ({world}): "
            f"each process takes an equal share of the global batch"
        )
    share = batch_size // world
    return slice(ranks.rank * share, (ranks.rank + 1) * share)


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` (which also copies rank 0's parameters
    and buffers to every rank)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def mean_over_ranks(value: torch.Tensor, ranks: Ranks) -> float:
    """The mean of a scalar tensor over the ranks (the value itself without a group)."""
    if not ranks.distributed:
        return float(value.detach())
    total = value.detach().reshape(1).clone()
    torch.distributed.all_reduce(total)
    return float(total) / ranks.world


def from_rank_zero(value: float, ranks: Ranks, device: torch.device | None = None) -> float:
    """Rank 0's ``value`` on every rank (e.g. a wall-clock decision that must be shared so the
    ranks stay in step); the value itself without a group."""
    if not ranks.distributed:
        return value
    flag = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.broadcast(flag, src=0)
    return float(flag.item())


def rank_generator(seed: int, rank: int, start: int = 0) -> torch.Generator:
    """A CPU generator for randomness that must differ between ranks (a surrogate's own noise),
    seeded from ``(seed, rank, start)`` (``start``: the step a resumed run starts at) so that
    streams of different seeds, ranks or starts do not overlap."""
    entropy = [int(seed), int(rank), int(start), 0x0DDB]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


__all__ = [
    "Ranks",
    "batch_rows",
    "current_ranks",
    "data_parallel",
    "from_rank_zero",
    "is_main_process",
    "launched_by_torchrun",
    "local_device",
    "mean_over_ranks",
    "process_group",
    "rank_generator",
]

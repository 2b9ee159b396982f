"""Data-parallel training under torchrun's environment: two CPU processes (gloo) train a PDE
surrogate and a diffusion model; the weights agree across ranks and with one process trained on
the same global batches."""

from __future__ import annotations

import os
import socket

import pytest
import torch

from timestepper import RectifiedFlowSchedule, pde
from timestepper.pde.models import FNO1d
from timestepper.train import flow_matching, make_model, train
from timestepper.train.distributed import Ranks, batch_rows, process_group, rank_generator

STEPS = 5


def _traj() -> torch.Tensor:
    return torch.randn(6, 7, 32, generator=torch.Generator().manual_seed(3))


def _points() -> torch.Tensor:
    return torch.randn(64, 2, generator=torch.Generator().manual_seed(4))


def _surrogate(seed: int) -> pde.OneStepSurrogate:
    torch.manual_seed(seed)
    # An FNO rather than the U-Net: a bias followed by a GroupNorm has a zero gradient in exact
    # arithmetic, and Adam turns the rounding noise of such a gradient into full-size steps.
    return pde.OneStepSurrogate(FNO1d(width=8, modes=6, layers=2), residual=True)


def _denoiser(seed: int):
    torch.manual_seed(seed)
    return make_model("mlp", {"dim": 2, "hidden": 16, "depth": 2}, RectifiedFlowSchedule())


# The (never reached) time budgets make the ranks share rank 0's clock every step.
PDE_CONFIG = pde.TrainConfig(iterations=STEPS, batch_size=8, lr=3e-3, unroll=1, seed=5, time_budget_s=1e6)
DIFFUSION = dict(steps=STEPS, batch_size=16, lr=3e-3, warmup=2, ema_decay=0.9, seed=6, progress=False,
                 max_seconds=1e6)


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with process_group() as ranks:
        assert ranks == Ranks(rank, world)
        # Different initial weights per rank: DDP must start every rank from rank 0's.
        surrogate = _surrogate(seed=rank)
        rows: list[int] = []  # each rank computes on its half of every global batch
        surrogate.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
        losses = pde.train_surrogate(surrogate, _traj(), PDE_CONFIG)
        # 2 calls per step: the pushforward (unroll=1) and the loss
        assert rows == [PDE_CONFIG.batch_size // world] * (2 * STEPS), rows
        torch.save({"weights": surrogate.state_dict(), "losses": losses},
                   os.path.join(folder, f"pde-{rank}.pt"))
        model = _denoiser(seed=rank)
        rows.clear()
        model.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
        res = train(model, flow_matching(), _points(), out=os.path.join(folder, "ckpt"), **DIFFUSION)
        assert rows == [DIFFUSION["batch_size"] // world] * STEPS, rows
        torch.save({"weights": res.model.state_dict(), "ema": res.ema.state_dict(), "losses": res.losses},
                   os.path.join(folder, f"diffusion-{rank}.pt"))
    assert not torch.distributed.is_initialized()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_same(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


@pytest.mark.slow
def test_two_cpu_processes_train_like_one_on_the_same_global_batch(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    runs = {(kind, r): torch.load(tmp_path / f"{kind}-{r}.pt") for kind in ("pde", "diffusion") for r in (0, 1)}

    # The ranks agree exactly: the same averaged gradients, the same optimiser steps.
    for kind in ("pde", "diffusion"):
        _assert_same(runs[kind, 0]["weights"], runs[kind, 1]["weights"], atol=0)
        assert runs[kind, 0]["losses"] == runs[kind, 1]["losses"]

    # One process on the same global batches, from rank 0's initial weights.
    surrogate = _surrogate(seed=0)
    losses = pde.train_surrogate(surrogate, _traj(), PDE_CONFIG)
    start = _surrogate(seed=0).state_dict()
    moved = max(float((surrogate.state_dict()[k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-3  # the comparison below is not between untrained weights
    _assert_same(runs["pde", 0]["weights"], surrogate.state_dict(), atol=1e-6)
    torch.testing.assert_close(torch.tensor(runs["pde", 0]["losses"]), torch.tensor(losses), rtol=1e-5, atol=0)

    res = train(_denoiser(seed=0), flow_matching(), _points(), **DIFFUSION)
    _assert_same(runs["diffusion", 0]["weights"], res.model.state_dict(), atol=1e-6)
    _assert_same(runs["diffusion", 0]["ema"], res.ema.state_dict(), atol=1e-6)
    torch.testing.assert_close(torch.tensor(runs["diffusion", 0]["losses"]), torch.tensor(res.losses),
                               rtol=1e-5, atol=0)
    # Rank 0 wrote the checkpoint of the last step.
    assert (tmp_path / "ckpt" / f"step-{STEPS:08d}" / "model.safetensors").is_file()


def test_batch_rows_split_the_global_batch_evenly():
    assert [batch_rows(12, Ranks(r, 3)) for r in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 12)]
    assert batch_rows(5, Ranks()) == slice(0, 5)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        batch_rows(10, Ranks(0, 3))


def test_process_group_without_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with process_group() as ranks:
        assert ranks == Ranks(0, 0) and not ranks.distributed
    with pytest.raises(RuntimeError, match="torchrun"):
        with process_group(required=True):
            pass


def test_rank_generators_differ_by_rank_and_start():
    draws = {(r, s): torch.rand(3, generator=rank_generator(0, r, s)) for r in (0, 1) for s in (0, 7)}
    assert len({tuple(v.tolist()) for v in draws.values()}) == 4
    torch.testing.assert_close(torch.rand(3, generator=rank_generator(0, 1, 7)), draws[1, 7], rtol=0, atol=0)

"""Neural surrogates: ``u(t + dt) ~ model(u(t))`` trained with MSE (or another objective).

A surrogate maps states to states and exposes ``loss(u_prev, u_next)`` (the training objective)
and ``predict(u_prev, generator=None)`` (one model step), so training, rollout and metrics treat
the MSE baseline, PDE-Refiner and block models alike. :class:`OneStepSurrogate`'s state is one
field ``(B, *space)``; :class:`BlockSurrogate`'s is a block of ``k`` frames ``(B, k, *space)``
(train it on :func:`frame_blocks` of the trajectories, and flatten its rollouts with
:func:`unblock`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

Objective = Callable[[Tensor, Tensor], Tensor]


def _objective_loss(objective: Objective | None, pred: Tensor, target: Tensor) -> Tensor:
    return nn.functional.mse_loss(pred, target) if objective is None else objective(pred, target)


class _TrainedOnObjective(nn.Module):
    """``loss`` = ``objective(self(u_prev), u_next)`` (MSE when ``objective`` is None); ``predict``
    = one model step without gradient."""

    objective: Objective | None

    def loss(
        self, u_prev: Tensor, u_next: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """The training loss of one model step, ``objective(model(u_prev), u_next)``."""
        return _objective_loss(self.objective, self(u_prev), u_next)

    @torch.no_grad()
    def predict(self, u_prev: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self(u_prev)


class OneStepSurrogate(_TrainedOnObjective):
    """Wrap a network on ``(B, C, *space)`` into a one-step model trained with MSE.

    Args:
        net: network with one input and one output channel (``net(x, cond=None)``).
        residual: predict ``u_prev + net(u_prev)`` instead of ``net(u_prev)``.
        objective: ``objective(pred, target)`` -> scalar training loss (``None``: MSE), e.g. a
            :class:`~timestepper.pde.losses.NegativeSobolevLoss`; may be reassigned between
            training phases.
    """

    def __init__(
        self, net: nn.Module, *, residual: bool = False, objective: Objective | None = None
    ) -> None:
        super().__init__()
        self.net = net
        self.residual = bool(residual)
        self.objective = objective

    def forward(self, u_prev: Tensor) -> Tensor:
        out = self.net(u_prev.unsqueeze(1)).squeeze(1)
        return u_prev + out if self.residual else out


class BlockSurrogate(_TrainedOnObjective):
    """Wrap a block network ``(B, k, *space) -> (B, k, *space)`` (e.g.
    :class:`~timestepper.pde.models.SpaceTimeFNO`) into a model step that advances ``k`` frames.

    Args:
        net: the block network (``net(x)``).
        frames: ``k``, frames per block.
        residual: predict ``u_prev[:, -1:] + net(u_prev)`` (the last known frame plus a change).
        objective: as in :class:`OneStepSurrogate`.
    """

    def __init__(
        self,
        net: nn.Module,
        frames: int,
        *,
        residual: bool = False,
        objective: Objective | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(frames, int) or frames < 1:
            raise ValueError(f"frames must be an integer >= 1, got {frames!r}")
        self.net, self.frames = net, frames
        self.residual, self.objective = bool(residual), objective

    def forward(self, u_prev: Tensor) -> Tensor:
        if u_prev.ndim < 3 or u_prev.shape[1] != self.frames:
            raise ValueError(
                f"u_prev must be a block (batch, frames={self.frames}, *space), "
                f"got shape {tuple(u_prev.shape)}"
            )
        out = self.net(u_prev)
        return u_prev[:, -1:] + out if self.residual else out


def frame_blocks(traj: Tensor, frames: int, stride: int = 1) -> Tensor:
    """Overlapping blocks of ``frames`` frames ``stride`` apart: ``(N, T, *space)`` ->
    ``(N, T - (frames - 1) stride, frames, *space)`` (a view). Consecutive blocks of a
    :class:`BlockSurrogate` are ``frames * stride`` apart along axis 1, so train with
    ``TrainConfig(frames_per_step=frames * stride)``."""
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be an integer >= 1, got {frames!r}")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    span = (frames - 1) * stride + 1
    if traj.ndim < 3 or traj.shape[1] < span:
        raise ValueError(
            f"traj must be (N, T, *space) with T >= {span} for {frames} frames {stride} apart, "
            f"got shape {tuple(traj.shape)}"
        )
    win = traj.unfold(1, span, 1)[..., ::stride]  # (N, T', *space, frames)
    return win.movedim(-1, 2)


def unblock(blocks: Tensor) -> Tensor:
    """A block rollout ``(B, S, k, *space)`` as frames ``(B, S * k, *space)``."""
    return blocks.reshape(blocks.shape[0], -1, *blocks.shape[3:])


__all__ = ["BlockSurrogate", "OneStepSurrogate", "frame_blocks", "unblock"]

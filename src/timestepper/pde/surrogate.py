"""One-step neural surrogates: ``u(t + dt) ~ model(u(t))`` trained with MSE.

A surrogate maps fields ``(B, *space)`` to fields and exposes ``loss(u_prev, u_next)`` (the
training objective) and ``predict(u_prev, generator=None)`` (one model step), so training,
rollout and metrics treat the MSE baseline and PDE-Refiner alike.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class OneStepSurrogate(nn.Module):
    """Wrap a network on ``(B, C, *space)`` into a one-step model trained with MSE.

    Args:
        net: network with one input and one output channel (``net(x, cond=None)``).
        residual: predict ``u_prev + net(u_prev)`` instead of ``net(u_prev)``.
    """

    def __init__(self, net: nn.Module, *, residual: bool = False) -> None:
        super().__init__()
        self.net = net
        self.residual = bool(residual)

    def forward(self, u_prev: Tensor) -> Tensor:
        out = self.net(u_prev.unsqueeze(1)).squeeze(1)
        return u_prev + out if self.residual else out

    def loss(
        self, u_prev: Tensor, u_next: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """The one-step MSE ``mean |model(u_prev) - u_next|^2``."""
        return nn.functional.mse_loss(self(u_prev), u_next)

    @torch.no_grad()
    def predict(self, u_prev: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self(u_prev)


__all__ = ["OneStepSurrogate"]

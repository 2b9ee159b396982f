"""Exponential moving average of weights (Polyak & Juditsky 1992; as used for diffusion models by
Ho et al. 2020, Sec. 4, and Song & Ermon 2020)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``theta_ema <- decay theta_ema + (1 - decay) theta`` after every optimiser step.

    The effective decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the
    warm-up of TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``) so short runs are not
    dominated by the initial weights. Buffers are copied.

    Args:
        model: the trained module.
        decay: the target decay in ``[0, 1)``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One averaging step towards ``model``'s parameters; buffers are copied."""
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for pe, p in zip(self.module.parameters(), model.parameters(), strict=False):
            pe.lerp_(p.detach(), 1.0 - d)
        for be, b in zip(self.module.buffers(), model.buffers(), strict=False):
            be.copy_(b)

    def state_dict(self) -> dict:
        """Decay and update count (the averaged weights are ``self.module``'s)."""
        return {"decay": self.decay, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore decay and update count saved by :meth:`state_dict`."""
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])

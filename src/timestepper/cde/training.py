"""A small classification training loop for the models of :mod:`timestepper.cde.models`.

:func:`fit_classifier` trains with Adam on minibatches and records, per epoch, the wall time and
the number of vector-field evaluations (the models' ``nfe`` after each forward pass, summed over
the batches; the backward pass of ``adjoint="direct"`` adds none).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class History:
    """Per-epoch training record."""

    loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    nfe: list[int] = field(default_factory=list)


def fit_classifier(  # noqa: PLR0913 - the usual knobs of a training loop
    model: nn.Module,
    batch: Callable[[Tensor], tuple[Any, ...]],
    labels: Tensor,
    *,
    epochs: int = 10,
    batch_size: int = 10,
    lr: float = 1e-2,
    seed: int = 0,
    extra_loss: Callable[[nn.Module], Tensor] | None = None,
) -> History:
    """Train ``model(*batch(index))`` to predict ``labels[index]`` by cross-entropy.

    Args:
        model: a classifier returning logits (with an ``nfe`` attribute, or 0 is recorded).
        batch: ``index -> model inputs`` for a 1-D index tensor (e.g. a path built for those
            series).
        labels: ``(N,)`` class indices.
        epochs, batch_size, lr, seed: the loop (shuffled with ``seed``).
        extra_loss: added to the loss after each forward pass (a regulariser).
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    hist = History()
    for _ in range(epochs):
        start, nfe, total = time.perf_counter(), 0, 0.0
        for index in torch.randperm(len(labels), generator=gen).split(batch_size):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(*batch(index)), labels[index])
            nfe += int(getattr(model, "nfe", 0))
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(index)
        hist.seconds.append(time.perf_counter() - start)
        hist.nfe.append(nfe)
        hist.loss.append(total / len(labels))
    return hist


@torch.no_grad()
def accuracy(model: nn.Module, inputs: tuple[Any, ...], labels: Tensor) -> float:
    """Fraction of ``labels`` predicted by ``model(*inputs)``."""
    return float((model(*inputs).argmax(-1) == labels).float().mean())


__all__ = ["History", "accuracy", "fit_classifier"]

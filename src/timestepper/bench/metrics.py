"""Metrics of sample quality against references."""

from __future__ import annotations

import torch
from torch import Tensor


def trajectory_error(x: Tensor, reference: Tensor) -> float:
    """Mean over samples of the L2 distance to the reference solution from the same noise."""
    if x.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(reference.shape)}")
    diff = (x.to(torch.float64) - reference.to(torch.float64)).reshape(x.shape[0], -1)
    return float(diff.norm(dim=1).mean())


def sliced_wasserstein(a: Tensor, b: Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between two equally sized point sets (Rabin et al. 2011).

    Projections are drawn once from a seeded generator (uniform on the sphere), so two calls on
    the same sets agree. ``SW2^2 = mean_projections mean_i (sort(a u)_i - sort(b u)_i)^2``.
    """
    a = a.reshape(a.shape[0], -1).to(torch.float64)
    b = b.reshape(b.shape[0], -1).to(torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"point sets must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(a.shape[1], n_projections, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ u, dim=0)
    pb, _ = torch.sort(b @ u, dim=0)
    return float(((pa - pb) ** 2).mean().sqrt())

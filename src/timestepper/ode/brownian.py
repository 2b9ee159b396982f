"""Brownian motion that can be queried at any time, reproducibly.

:class:`VirtualBrownianTree` (Gaines & Lyons 1997, "Variable step size control in the numerical
solution of stochastic differential equations"; Li et al. 2020, "Scalable gradients for
stochastic differential equations", sec. 5) stores nothing but a seed: ``W(t)`` is found by
bisecting ``[t0, t1]`` and sampling each midpoint from the Brownian bridge

    W(m) | W(s), W(u) ~ N((W(s) + W(u)) / 2, (u - s) / 4),

with the noise of every node drawn from a generator seeded by the node's own seed (the children
of seed ``k`` have seeds derived from ``k``), until the interval is shorter than ``tol``; there
``W`` is interpolated linearly. The same query always returns the same value, so an adjoint or a
second pass reconstructs the same path. A small cache of visited nodes makes the sequential
queries of a solve cheap.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MASK = (1 << 63) - 1


def _child_seed(seed: int, side: int) -> int:
    # SplitMix64-style mixing: deterministic, well spread child seeds.
    z = (seed * 0x9E3779B97F4A7C15 + side * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK
    z = ((z ^ (z >> 31)) * 0xBF58476D1CE4E5B9) & _MASK
    return (z ^ (z >> 29)) & _MASK


class VirtualBrownianTree:
    """Brownian motion on ``[t0, t1]`` queried by ``bm(ta, tb) = W(tb) - W(ta)``.

    Args:
        t0, t1: the interval.
        shape: the shape of ``W`` (e.g. ``(batch, m)``).
        seed: the path; the same seed gives the same path.
        tol: time resolution of the bisection (below it, linear interpolation).
        dtype, device: of the returned increments (the noise is drawn in float64 on the CPU).
        cache_size: number of tree nodes kept.
    """

    def __init__(self, t0: float, t1: float, shape, *, seed: int = 0, tol: float = 1e-6,  # noqa: PLR0913
                 dtype: torch.dtype = torch.float32, device=None, cache_size: int = 4096) -> None:
        if not t1 > t0:
            raise ValueError(f"need t1 > t0, got t0={t0}, t1={t1}")
        if tol <= 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        self.t0, self.t1 = float(t0), float(t1)
        self.shape = tuple(shape)
        self.seed, self.tol = int(seed) & _MASK, float(tol)
        self.dtype, self.device = dtype, device
        self._cache: dict[tuple[float, float], tuple[Tensor, int]] = {}
        self._cache_size = cache_size
        self._w1 = self._normal(_child_seed(self.seed, 0)) * math.sqrt(self.t1 - self.t0)

    def _normal(self, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(self.shape, generator=g, dtype=torch.float64)

    def _w(self, t: float) -> Tensor:
        if not self.t0 - 1e-12 <= t <= self.t1 + 1e-12:
            raise ValueError(f"time {t} outside the Brownian interval [{self.t0}, {self.t1}]")
        s, u = self.t0, self.t1
        ws, wu = torch.zeros(self.shape, dtype=torch.float64), self._w1
        seed = self.seed
        while u - s > self.tol:
            if t == s:
                return ws
            if t == u:
                return wu
            m = 0.5 * (s + u)
            key = (s, u)
            hit = self._cache.get(key)
            if hit is None:
                wm = 0.5 * (ws + wu) + math.sqrt((u - s) / 4) * self._normal(seed)
                if len(self._cache) >= self._cache_size:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = (wm, seed)
            else:
                wm = hit[0]
            if t < m:
                u, wu, seed = m, wm, _child_seed(seed, 1)
            else:
                s, ws, seed = m, wm, _child_seed(seed, 2)
        return ws + (wu - ws) * ((t - s) / (u - s))

    def __call__(self, ta: float, tb: float | None = None) -> Tensor:
        """``W(tb) - W(ta)``; with one argument, ``W(ta) - W(t0)``."""
        ta = float(ta)
        if tb is None:
            out = self._w(ta)
        else:
            out = self._w(float(tb)) - self._w(ta)
        return out.to(dtype=self.dtype, device=self.device)

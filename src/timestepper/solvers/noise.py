"""Noise sources of the stochastic diffusion solvers.

A stochastic step draws a standard Gaussian tensor shaped like the state from the ``draw`` of its
table row (``draws(kind, term, grid, x0)`` gives one per step). Two sources exist:

* ``"normal"`` (default): one ``torch.randn`` per call from the term's ``torch.Generator``
  (``ts.sample(..., generator=...)``). Bit-reproducible for a given seed, shape, dtype and device;
  the draws are those of ``torch.randn(x.shape, generator=g, dtype=x.dtype)``, so a peer given the
  same generator (diffusers) or a ``noise_sampler`` wrapping it (k-diffusion) sees the same numbers.
* ``"brownian"``: the normalised increment ``(W(s_i) - W(s_{i+1})) / sqrt(s_i - s_{i+1})`` of one
  Brownian path ``W`` indexed by the noise level ``s = sigma / alpha`` (k-diffusion's convention
  for its Brownian-tree noise sampler). The path is a *virtual Brownian tree* (Li et al. 2020,
  "Scalable Gradients for Stochastic Differential Equations", Section 4, Algorithm 3): ``W(s)`` is
  found by Brownian-bridge bisection of ``[0, s_max]`` whose midpoint draws are seeded by the
  position of the node in the tree, so any query returns the same value in any order, on any grid.
  Two grids that share times share the increments between them, which is what adjoint
  recomputation and strong-convergence studies need. It costs ``O(log2(s_max / tol))`` draws per
  query (fewer when consecutive queries share a branch; the last branch is cached).

A third source is any object with ``increment(s0, s1, like)`` returning a standard normal tensor
shaped like ``like`` for the move from noise level ``s0`` to ``s1`` (:class:`LevelNoise`; a peer's
noise sampler, e.g. diffusers' torchsde Brownian tree in :mod:`timestepper.integrations.diffusers`).

Nothing here synchronises with the device: seeds and tree positions are Python integers and floats.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..core.ops import add_scaled, add_scaled_
from ..core.validation import check_choice, check_in_range
from .base import DiffusionSolver

NOISE_KINDS = ("normal", "brownian")
_MASK = (1 << 63) - 1

Draw = Callable[[Tensor], Tensor]


@runtime_checkable
class LevelNoise(Protocol):
    """A noise source queried by noise levels: ``increment(s0, s1, like)`` is a standard normal
    tensor shaped like ``like`` for the move from ``s = s0`` to ``s1`` (``s = sigma / alpha``)."""

    def increment(self, s0: float, s1: float, like: Tensor) -> Tensor: ...


def check_noise(noise: Any) -> Any:
    """``"normal"``, ``"brownian"`` or a :class:`LevelNoise` object."""
    if not isinstance(noise, str) and isinstance(noise, LevelNoise):
        return noise
    return check_choice(noise, NOISE_KINDS, "noise")


class GeneratorNoise:
    """Independent standard normal draws from ``generator`` (``None``: torch's global RNG)."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator

    def draw(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=self.generator, dtype=like.dtype,
                           device=like.device)


def _child(seed: int, side: int) -> int:
    """Seed of the left (0) or right (1) child of a tree node: one round of SplitMix64."""
    z = (seed + 0x9E3779B97F4A7C15 * (2 + side)) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & _MASK


class BrownianPath:
    """A reproducible Brownian motion ``W`` on ``[t0, t1]``, ``W(t0) = 0`` (virtual Brownian tree).

    Args:
        t0, t1: the interval (``t0 < t1``).
        shape, dtype, device: of ``W(t)``.
        seed: the path's seed (a Python int).
        tol: bisection stops on intervals shorter than ``tol * (t1 - t0)``; inside such a leaf
            ``W(t)`` is a Brownian-bridge sample between the leaf's end values, seeded by the leaf
            and ``t`` (so points in different leaves have the exact joint law of Brownian motion;
            two distinct points closer than the leaf width are not jointly exact).
    """

    def __init__(self, t0: float, t1: float, shape, dtype: torch.dtype, device, seed: int,
                 tol: float = 2.0**-20) -> None:
        if not t1 > t0:
            raise ValueError(f"BrownianPath needs t0 < t1, got {t0}, {t1}")
        if not 0 < tol < 1:
            raise ValueError(f"tol must be in (0, 1), got {tol}")
        self.t0, self.t1 = float(t0), float(t1)
        self.shape, self.dtype, self.device = tuple(shape), dtype, device
        self.seed = int(seed) & _MASK
        self.min_width = tol * (self.t1 - self.t0)
        self._gen = torch.Generator(device=device)
        w1 = math.sqrt(self.t1 - self.t0) * self._normal(self.seed)
        # the cached branch: (a, b, W(a), W(b), seed) from the root down
        self._branch = [(self.t0, self.t1, torch.zeros_like(w1), w1, _child(self.seed, 0))]
        self.draws = 1

    def _normal(self, seed: int) -> Tensor:
        self._gen.manual_seed(seed)
        return torch.randn(self.shape, generator=self._gen, dtype=self.dtype, device=self.device)

    def __call__(self, t: float) -> Tensor:
        """``W(t)``."""
        t = float(t)
        if not self.t0 <= t <= self.t1:
            raise ValueError(f"t={t} is outside the path's interval [{self.t0}, {self.t1}]")
        br = self._branch
        while len(br) > 1 and not br[-1][0] <= t <= br[-1][1]:
            br.pop()
        a, b, wa, wb, seed = br[-1]
        while b - a > self.min_width:
            m = 0.5 * (a + b)
            wm = 0.5 * (wa + wb) + (0.5 * math.sqrt(b - a)) * self._normal(seed)
            self.draws += 1
            if t <= m:
                a, b, wb, seed = a, m, wm, _child(seed, 0)
            else:
                a, b, wa, seed = m, b, wm, _child(seed, 1)
            br.append((a, b, wa, wb, seed))
        if t == a:
            return wa
        if t == b:
            return wb
        f = (t - a) / (b - a)
        leaf_seed = _child(seed ^ (struct.unpack("<q", struct.pack("<d", t))[0] & _MASK), 1)
        self.draws += 1
        return wa + f * (wb - wa) + math.sqrt(f * (b - t)) * self._normal(leaf_seed)


class BrownianNoise:
    """Normalised increments of one :class:`BrownianPath` in ``s = sigma / alpha``."""

    def __init__(self, s_max: float, like: Tensor, seed: int, tol: float = 2.0**-20) -> None:
        self.path = BrownianPath(0.0, s_max, like.shape, like.dtype, like.device, seed, tol)

    def increment(self, s0: float, s1: float) -> Tensor:
        """``(W(s0) - W(s1)) / sqrt(s0 - s1)`` for ``s0 > s1``: a standard normal draw."""
        return (self.path(s0) - self.path(s1)) * (1.0 / math.sqrt(s0 - s1))


def draws(kind: Any, term: Any, grid: Any, x0: Tensor) -> list[Draw]:
    """One noise draw per step of ``grid``: ``kind`` is ``"normal"`` or ``"brownian"``.

    The Brownian path's seed is the term generator's ``initial_seed()`` (so a seeded generator
    gives a reproducible path), or a fresh seed from torch's global RNG without a generator.
    """
    s = (grid.sigma / grid.alpha).tolist()
    return draws_between(kind, term, x0, max(s), [(s[i], s[i + 1]) for i in range(grid.steps)])


def draws_between(kind: Any, term: Any, x0: Tensor, s_max: float,
                  levels: list[tuple[float, float]]) -> list[Draw]:
    """One draw per pair ``(s0, s1)`` of noise levels ``s = sigma / alpha`` (``s0 > s1``), in
    order: independent generator draws (``"normal"``), or the normalised increments of one
    Brownian path on ``[0, s_max]`` between those levels (``"brownian"``; two pairs that share a
    level share the path there, as a sampler with several noisy stages per step needs)."""
    if not isinstance(check_noise(kind), str):
        return [functools.partial(_level_draw, kind, s0, s1) for s0, s1 in levels]
    gen = term.generator
    if kind == "normal":
        draw = GeneratorNoise(gen).draw
        return [draw] * len(levels)
    seed = gen.initial_seed() if gen is not None else int(torch.randint(0, 2**62, (1,)))
    source = BrownianNoise(s_max, x0, seed)
    return [functools.partial(_brownian_draw, source, s0, s1) for s0, s1 in levels]


def _level_draw(source: LevelNoise, s0: float, s1: float, like: Tensor) -> Tensor:
    return source.increment(s0, s1, like)


def _brownian_draw(source: BrownianNoise, s0: float, s1: float, like: Tensor) -> Tensor:
    return source.increment(s0, s1)


def add_noise(x1: Tensor, x: Tensor, cn: float | None, draw: Draw | None, x_owned: bool = False) -> Tensor:
    """``x1 + cn z`` with ``z = draw(x)`` (nothing when ``cn`` is ``None``: a step without noise).

    ``x1`` is updated in place when it is a fresh result of the step (not ``x`` itself, unless
    ``x_owned``: the step may write into ``x``) and autograd does not track it, saving one
    allocation per step."""
    if cn is None or draw is None:
        return x1
    z = draw(x)
    if (x1 is not x or x_owned) and not x1.requires_grad:
        return add_scaled_(x1, z, cn)
    return add_scaled(x1, z, cn)


class StochasticDiffusionSolver(DiffusionSolver):
    """Base of the diffusion solvers that add noise ``cn * z`` to a step.

    Subclasses put the per-step noise scale (``None`` where a step adds none) and a draw from
    :meth:`noise_draws` in their rows and call :func:`add_noise`. ``eta = 0`` makes the solver
    deterministic (no noise source).

    Args:
        eta: the noise scale of the method (validated by :meth:`validate_eta`).
        s_noise: multiplier of the added noise (k-diffusion's ``s_noise``; 1 is the algorithm).
        noise: ``"normal"``, ``"brownian"`` or a :class:`LevelNoise` (see the module docstring).
    """

    def __init__(self, eta: float, s_noise: float = 1.0, noise: Any = "normal") -> None:
        self.eta = self.validate_eta(eta)
        self.s_noise = float(s_noise)
        self.noise = check_noise(noise)
        self.is_stochastic = self.eta > 0.0

    @staticmethod
    def validate_eta(eta: float) -> float:
        return check_in_range(eta, "eta", 0.0, 1.0)

    def noise_draws(self, term: Any, grid: Any, x0: Tensor) -> list[Draw | None]:
        """One draw per step (``None`` everywhere for a deterministic solver)."""
        if not self.is_stochastic:
            return [None] * grid.steps
        return list(draws(self.noise, term, grid, x0))

    def noise_scales(self, cn: list[float]) -> list[float | None]:
        """``s_noise * cn`` per step, ``None`` where it is 0 (or the solver is deterministic)."""
        if not self.is_stochastic:
            return [None] * len(cn)
        return [None if c == 0.0 else self.s_noise * c for c in cn]

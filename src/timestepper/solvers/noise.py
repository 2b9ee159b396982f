"""Noise sources of the stochastic diffusion solvers.

A stochastic step asks its noise source for a standard Gaussian tensor shaped like the state:
``source.draw(i, x)`` for step ``i``. Two sources exist:

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

Nothing here synchronises with the device: seeds and tree positions are Python integers and floats.
"""

from __future__ import annotations

import math
import struct

import torch
from torch import Tensor

from .base import DiffusionSolver

NOISE_KINDS = ("normal", "brownian")
_MASK = (1 << 63) - 1


def check_noise_kind(noise: str) -> str:
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {', '.join(NOISE_KINDS)}, got {noise!r}")
    return noise


class GeneratorNoise:
    """Independent standard normal draws from ``generator`` (``None``: torch's global RNG)."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator

    def draw(self, i: int, like: Tensor) -> Tensor:
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
    """Normalised increments of one :class:`BrownianPath` in ``s = sigma / alpha`` along a grid."""

    def __init__(self, s: list[float], like: Tensor, seed: int, tol: float = 2.0**-20) -> None:
        self.s = s
        self.path = BrownianPath(0.0, max(s), like.shape, like.dtype, like.device, seed, tol)

    def draw(self, i: int, like: Tensor) -> Tensor:
        s0, s1 = self.s[i], self.s[i + 1]
        return (self.path(s0) - self.path(s1)) * (1.0 / math.sqrt(s0 - s1))


def make_noise(kind: str, term, grid, x0: Tensor):
    """The noise source for one solve: ``kind`` is ``"normal"`` or ``"brownian"``.

    The Brownian path's seed is the term generator's ``initial_seed()`` (so a seeded generator
    gives a reproducible path), or a fresh seed from torch's global RNG without a generator.
    """
    check_noise_kind(kind)
    gen = getattr(term, "generator", None)
    if kind == "normal":
        return GeneratorNoise(gen)
    seed = gen.initial_seed() if gen is not None else int(torch.randint(0, 2**62, (1,)))
    s = (grid.sigma / grid.alpha).tolist()
    return BrownianNoise(s, x0, seed)


class StochasticDiffusionSolver(DiffusionSolver):
    """Base of the diffusion solvers that add noise ``cn[i] * z`` to a step.

    Subclasses put the per-step noise scale ``cn`` (float64 -> floats) in their coefficient table
    and call :meth:`add_noise`. ``eta = 0`` makes the solver deterministic (no noise source).

    Args:
        eta: the noise scale of the method (validated by :meth:`validate_eta`).
        s_noise: multiplier of the added noise (k-diffusion's ``s_noise``; 1 is the algorithm).
        noise: ``"normal"`` or ``"brownian"`` (see the module docstring).
    """

    def __init__(self, eta: float, s_noise: float = 1.0, noise: str = "normal") -> None:
        self.eta = self.validate_eta(float(eta))
        self.s_noise = float(s_noise)
        self.noise = check_noise_kind(noise)
        self.is_stochastic = self.eta > 0.0

    @staticmethod
    def validate_eta(eta: float) -> float:
        if not 0.0 <= eta <= 1.0:
            raise ValueError(
                f"eta must be in [0, 1] (0: deterministic, 1: the full noise), got {eta}")
        return eta

    def init(self, term, grid, x0):
        state = super().init(term, grid, x0)
        if self.is_stochastic:
            state.coeffs["noise"] = make_noise(self.noise, term, grid, x0)
        return state

    def add_noise(self, x1: Tensor, x: Tensor, state) -> Tensor:
        """``x1 + cn[i] z`` with ``z`` shaped like ``x`` (nothing on a step without noise).

        ``x1`` is updated in place when it is a fresh result of the step (not ``x`` itself) and
        autograd does not track it, saving one allocation per step."""
        i, c = state.i, state.coeffs
        if self.is_stochastic and c["cn"][i] != 0.0:
            z = c["noise"].draw(i, x)
            if x1 is not x and not x1.requires_grad:
                return x1.add_(z, alpha=c["cn"][i])
            x1 = torch.add(x1, z, alpha=c["cn"][i])
        return x1

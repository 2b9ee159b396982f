"""The noise of diffusers' ``DPMSolverSDEScheduler``: a torchsde Brownian interval.

The class draws no noise from the pipeline's generator: at its first ``step`` after
``set_timesteps`` it builds one ``torchsde.BrownianInterval`` over ``[min sigma > 0, max sigma]``
of its float32 sigmas, shaped like the sample, seeded by the config's ``noise_sampler_seed``
(``None``: a seed from torch's global RNG), and each stage of a step adds the normalised increment
``(W(s_b) - W(s_a)) / sqrt(s_a - s_b)`` between float32 levels it computes from its sigmas
(``exp(-t)`` with ``t = -log sigma``, the stage at ``t + (t_next - t) / 2``; Li et al. 2020's
Brownian tree, via torchsde). :class:`ClassBrownianNoise` is that source as a
:class:`~timestepper.solvers.noise.LevelNoise` for our ``dpmpp-sde``: our float64 levels are
mapped to the class's float32 ones, so the same increments come out. torchsde is imported here
only (diffusers' class needs it too).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor


class ClassBrownianNoise:
    """``DPMSolverSDEScheduler``'s Brownian noise (module docstring), rebuilt by :meth:`reset`
    at every ``set_timesteps``.

    Args:
        seed: the config's ``noise_sampler_seed`` (``None``: drawn from torch's global RNG when the
            first increment is asked for, as the class does at its first ``step``).
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self.levels = torch.zeros(0, dtype=torch.float32)
        self.bounds = (0.0, 1.0)
        self.trees: dict[Any, Any] = {}

    def reset(self, sigmas: Tensor) -> None:
        """A new schedule: the class's float32 ``sigmas`` (every step's start, the final 0)."""
        s = sigmas.to(torch.float32)
        positive = s[s > 0]
        self.bounds = (float(positive.min()), float(s.max()))
        t = -positive.log()
        mid = t[:-1] + (t[1:] - t[:-1]) * 0.5
        self.levels = torch.cat([(-t).exp(), (-mid).exp()])
        self.trees = {}
        self._seed: int | None = self.seed

    def _level(self, s: float) -> Tensor:
        return self.levels[torch.argmin((self.levels.double() - s).abs())]

    def _tree(self, like: Tensor) -> Any:
        key = (tuple(like.shape), like.dtype, like.device)
        if key not in self.trees:
            import torchsde

            if self._seed is None:
                self._seed = int(torch.randint(0, 2**63 - 1, []).item())
            lo, hi = (torch.as_tensor(b) for b in self.bounds)
            self.trees[key] = torchsde.BrownianInterval(
                t0=lo, t1=hi, size=like.shape, dtype=like.dtype, device=like.device,
                entropy=self._seed, tol=1e-6, pool_size=24, halfway_tree=True)
        return self.trees[key]

    def increment(self, s0: float, s1: float, like: Tensor) -> Tensor:
        a, b = self._level(s0), self._level(s1)  # a > b
        tree = self._tree(like)
        with warnings.catch_warnings():
            # the class's float32 exp(-(-log s_max)) can exceed the interval's end by an ulp;
            # torchsde warns on every such query (diffusers' own loop prints the same warnings)
            warnings.filterwarnings("ignore", message="Should have", category=UserWarning)
            w = tree(b, a)
        return -w / (b - a).abs().sqrt()

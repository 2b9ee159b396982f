"""SDE solvers on fixed grids: Euler–Maruyama, Milstein (diagonal noise) and reversible Heun.

Each step draws its Brownian increment from the term (``term.increment(t0, t1)``), so the path
is the term's Brownian motion object, queryable again at the same times. A step's evaluation
count is that of the drift plus the diffusion.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..core.solver import Solver
from ..core.terms import SDETerm
from .registry import register


class SDESolver(Solver):
    """Base of the fixed-step SDE solvers: ``strong_order`` and the calculus (``sde_type``)
    they converge in, the noise types they handle."""

    family = "sde"
    term_type = SDETerm
    order = 1
    strong_order: ClassVar[float] = 0.5
    nfe_per_step = 2
    is_stochastic = True
    sde_type: ClassVar[str] = "ito"
    noise_types: ClassVar[tuple[str, ...]] = ("diagonal", "general")

    def init(self, term, grid, x0):
        if term.noise not in self.noise_types:
            raise ValueError(f"{self.display_name} supports noise in {self.noise_types}, "
                             f"got {term.noise!r}")
        if term.sde_type != self.sde_type:
            raise ValueError(f"{self.display_name} solves {self.sde_type} SDEs; the term is "
                             f"{term.sde_type!r}")
        return None, None


@register("sde-euler")
class SDEEulerMaruyama(SDESolver):
    """Euler–Maruyama: ``X1 = X0 + mu(t0, X0) h + sigma(t0, X0) dW`` (Kloeden & Platen 1992,
    eq. 10.2.2); Itô, strong order 0.5 (1.0 for additive noise)."""

    def step(self, term, t0, t1, x: Tensor, state, row):
        dw = term.increment(t0, t1)
        x1 = x + (t1 - t0) * term.drift(t0, x) + term.noise_term(term.diffusion(t0, x), dw)
        return x1, state, None, 2


@register("milstein")
class SDEMilstein(SDESolver):
    """Itô Milstein for diagonal noise (Kloeden & Platen 1992, eq. 10.3.3):
    ``X1 = X0 + mu h + sigma dW + 1/2 sigma sigma' (dW^2 - h)`` with ``sigma' = d sigma_i / d x_i``
    by automatic differentiation (exact for diagonal noise). Strong order 1.0."""

    strong_order = 1.0
    noise_types = ("diagonal",)
    nfe_per_step = 3

    def step(self, term, t0, t1, x: Tensor, state, row):
        h = t1 - t0
        dw = term.increment(t0, t1)
        # For diagonal noise d sigma_i / d x_i is the gradient of sum(sigma) (one reverse pass,
        # kept in the graph when the state itself carries gradients).
        if x.requires_grad and torch.is_grad_enabled():
            g = term.diffusion(t0, x)
            (dg,) = torch.autograd.grad(g.sum(), x, create_graph=True)
            n = 2
        else:
            g = term.diffusion(t0, x)
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                (dg,) = torch.autograd.grad(term.diffusion(t0, xr).sum(), xr)
            n = 3
        x1 = x + h * term.drift(t0, x) + g * dw + 0.5 * g * dg * (dw * dw - h)
        return x1, state, None, n


@register("reversible-heun")
class SDEReversibleHeun(SDESolver):
    """Reversible Heun (Kidger, Foster, Li & Lyons 2021, "Efficient and accurate gradients for
    neural SDEs", Algorithm 1 / eq. 4): with an auxiliary state ``z``,

        z1 = 2 x0 - z0 + mu(t0, z0) h + sigma(t0, z0) dW
        x1 = x0 + (mu(t0, z0) + mu(t1, z1)) h / 2 + (sigma(t0, z0) + sigma(t1, z1)) dW / 2.

    One drift and one diffusion evaluation per step (two more on the first); Stratonovich;
    strong order 0.5 (1.0 for additive noise); algebraically reversible (:meth:`reverse_step`
    recovers the step exactly), which is what makes its adjoint exact."""

    sde_type = "stratonovich"

    def start(self, term: Any, t0: float, x0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The auxiliary state at the start: ``(z0, mu(t0, z0), sigma(t0, z0))`` with ``z0 = x0``."""
        return (x0, term.drift(t0, x0), term.diffusion(t0, x0))

    def step(self, term, t0, t1, x: Tensor, state, row):
        n = 2
        if state is None:
            state, n = self.start(term, t0, x), 4
        z0, mu0, g0 = state
        h = t1 - t0
        dw = term.increment(t0, t1)
        z1 = 2 * x - z0 + mu0 * h + term.noise_term(g0, dw)
        mu1, g1 = term.drift(t1, z1), term.diffusion(t1, z1)
        x1 = x + 0.5 * (mu0 + mu1) * h + term.noise_term(0.5 * (g0 + g1), dw)
        return x1, (z1, mu1, g1), None, n

    def reverse_step(self, term, t0, t1, x1: Tensor, state):
        """From ``(x1, state at t1)`` back to ``(x0, state at t0)``: the inverse of :meth:`step`."""
        z1, mu1, g1 = state
        h = t1 - t0
        dw = term.increment(t0, t1)
        z0 = 2 * x1 - z1 - mu1 * h - term.noise_term(g1, dw)
        mu0, g0 = term.drift(t0, z0), term.diffusion(t0, z0)
        x0 = x1 - 0.5 * (mu0 + mu1) * h - term.noise_term(0.5 * (g0 + g1), dw)
        return x0, (z0, mu0, g0)

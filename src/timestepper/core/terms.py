"""Terms: what is integrated.

A term holds the dynamics and nothing else: no counters, no caches, no Python state that changes
during a solve, so a step that calls it traces into one graph under ``torch.compile``. Each
solver declares the term type it advances (``Solver.term_type``) and ``integrate`` refuses any
other. Evaluations are counted by the steps themselves (``Solver.step`` returns its count).

* :class:`ODETerm`: ``dx/dt = f(t, x)``.
* :class:`SemilinearTerm`: ``dx/dt = L x + N(t, x)`` with a diagonal ``L`` (stiff PDEs in
  Fourier space; exponential integrators treat ``L`` exactly).
* :class:`SDETerm`: ``dX = mu(t, X) dt + sigma(t, X) dW`` with a queryable Brownian motion.
* :class:`SurrogateTerm`: a learned one-step map ``u(t + dt) = predict(u(t))``.
* The diffusion term (a denoiser seen through a sampling grid) lives with the schedules in
  :mod:`timestepper.diffusion.term`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .validation import check_choice

NOISE_TYPES = ("diagonal", "general")
SDE_TYPES = ("ito", "stratonovich")


class Term:
    """Base class of everything ``integrate`` can advance."""


class VectorFieldTerm(Term):
    """A term with a time derivative ``vf(t, x)``: what explicit Runge–Kutta methods, Rosenbrock
    methods and the initial step-size selection of adaptive solves evaluate."""

    def vf(self, t: float | Tensor, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class ODETerm(VectorFieldTerm):
    """``dx/dt = f(t, x)``.

    Args:
        vector_field: callable ``f(t, x) -> dx/dt`` with the shape and dtype of ``x``.
    """

    def __init__(self, vector_field: Callable[[Any, Tensor], Tensor]) -> None:
        if not callable(vector_field):
            raise TypeError(f"vector_field must be callable, got {type(vector_field).__name__}")
        self.vector_field = vector_field

    def vf(self, t: float | Tensor, x: Tensor) -> Tensor:
        return self.vector_field(t, x)


class SemilinearTerm(VectorFieldTerm):
    """``dx/dt = L * x + N(t, x)`` with a diagonal linear part ``L``.

    This is the structure shared by stiff PDEs in Fourier space (``L`` the symbol of the linear
    operator) and by the diffusion probability-flow ODE in log-SNR time; exponential integrators
    treat ``L`` exactly through the phi functions (:func:`timestepper.core.phi.phi`).

    Args:
        linear: tensor broadcastable against the state: the diagonal of ``L``.
        nonlinear: callable ``N(t, x)`` returning a tensor shaped like ``x``.
        nonlinear_real_view: optional, for complex states: the same ``N`` on real views, taking
            and returning ``torch.view_as_real`` of complex tensors (trailing ``(re, im)``
            axis). Solvers that combine complex states through their real views (ETDRK4 on a
            real ``L``) call it, so a compiled step stays in real arithmetic from one evaluation
            to the next: a ``view_as_real(view_as_complex(a))`` round trip between the solver's
            arithmetic and the term's is a boundary ``torch.compile`` does not fuse across.
    """

    def __init__(self, linear: Tensor, nonlinear: Callable[[Any, Tensor], Tensor], *,
                 nonlinear_real_view: Callable[[Any, Tensor], Tensor] | None = None) -> None:
        if not isinstance(linear, Tensor):
            raise TypeError(f"linear must be a tensor (the diagonal of L), got {type(linear).__name__}")
        if not callable(nonlinear):
            raise TypeError(f"nonlinear must be callable, got {type(nonlinear).__name__}")
        if nonlinear_real_view is not None and not callable(nonlinear_real_view):
            raise TypeError(f"nonlinear_real_view must be callable or None, got {type(nonlinear_real_view).__name__}")
        self.linear = linear
        self.nonlinear_fn = nonlinear
        self.nonlinear_real_view_fn = nonlinear_real_view

    def nonlinear(self, t: float | Tensor, x: Tensor) -> Tensor:
        """``N(t, x)``."""
        return self.nonlinear_fn(t, x)

    def nonlinear_real_view(self, t: float | Tensor, xr: Tensor) -> Tensor:
        """``view_as_real(N(t, view_as_complex(xr)))`` for the real view ``xr`` of a complex state."""
        if self.nonlinear_real_view_fn is not None:
            return self.nonlinear_real_view_fn(t, xr)
        return torch.view_as_real(self.nonlinear_fn(t, torch.view_as_complex(xr)))

    def vf(self, t: float | Tensor, x: Tensor) -> Tensor:
        return self.linear * x + self.nonlinear_fn(t, x)


class SDETerm(Term):
    """``dX = drift(t, X) dt + diffusion(t, X) dW``.

    Args:
        drift: ``mu(t, x)`` shaped like ``x``.
        diffusion: ``sigma(t, x)``: shaped like ``x`` for ``noise="diagonal"``, ``(..., d, m)``
            for ``noise="general"`` (then ``dW`` has shape ``(..., m)``).
        bm: ``bm(ta, tb)`` returning the Brownian increment ``W(tb) - W(ta)`` (``ta < tb``), e.g.
            a :class:`~timestepper.ode.brownian.VirtualBrownianTree` or torchsde's
            ``BrownianInterval``, so the same path can be queried again.
        noise: ``"diagonal"`` or ``"general"``.
        sde_type: ``"ito"`` or ``"stratonovich"`` (the calculus the solver must match).
    """

    def __init__(self, drift: Callable, diffusion: Callable, bm: Callable, *,
                 noise: str = "diagonal", sde_type: str = "ito") -> None:
        for name, fn in (("drift", drift), ("diffusion", diffusion), ("bm", bm)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        self.drift_fn, self.diffusion_fn, self.bm = drift, diffusion, bm
        self.noise = check_choice(noise, NOISE_TYPES, "noise")
        self.sde_type = check_choice(sde_type, SDE_TYPES, "sde_type")

    def drift(self, t: Any, x: Tensor) -> Tensor:
        return self.drift_fn(t, x)

    def diffusion(self, t: Any, x: Tensor) -> Tensor:
        return self.diffusion_fn(t, x)

    def increment(self, t0: float, t1: float) -> Tensor:
        """``W(t1) - W(t0)`` (also for ``t1 < t0``)."""
        if t1 >= t0:
            return self.bm(t0, t1)
        return -self.bm(t1, t0)

    def noise_term(self, g: Tensor, dw: Tensor) -> Tensor:
        """``sigma dW``: elementwise (diagonal) or a matrix-vector product (general)."""
        if self.noise == "diagonal":
            return g * dw
        return (g @ dw.unsqueeze(-1)).squeeze(-1)


class SurrogateTerm(Term):
    """A learned one-step map ``u(t + dt) = predict(u(t))`` (a neural PDE surrogate).

    Args:
        surrogate: anything with ``predict(u, generator)``, e.g.
            :class:`~timestepper.pde.surrogate.OneStepSurrogate` or
            :class:`~timestepper.pde.refiner.PDERefiner`.
        generator: noise source for stochastic surrogates (PDE-Refiner).
    """

    def __init__(self, surrogate: Any, generator: Any = None) -> None:
        predict = getattr(surrogate, "predict", None)
        if not callable(predict):
            raise TypeError(
                f"surrogate needs a predict(u, generator) method, got {type(surrogate).__name__}")
        self.surrogate = surrogate
        self.generator = generator

    def advance(self, x: Tensor) -> Tensor:
        return self.surrogate.predict(x, self.generator)


__all__ = ["NOISE_TYPES", "SDE_TYPES", "ODETerm", "SDETerm", "SemilinearTerm", "SurrogateTerm", "Term",
           "VectorFieldTerm"]

"""Terms: what is integrated.

A term owns the vector field and counts its evaluations (``nfe``) with a plain Python integer, so
counting never touches the device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class Term:
    """Base class of everything ``integrate`` can advance.

    Subclasses define ``vf(t, x)``, the time derivative of the state. ``nfe`` counts calls of the
    underlying function (the model, for learned dynamics).
    """

    def __init__(self) -> None:
        self.nfe = 0

    def vf(self, t: float | Tensor, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class ODETerm(Term):
    """``dx/dt = f(t, x)``.

    Args:
        vector_field: callable ``f(t, x) -> dx/dt`` with the shape and dtype of ``x``.
    """

    def __init__(self, vector_field: Callable[[float | Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        if not callable(vector_field):
            raise TypeError(f"vector_field must be callable, got {type(vector_field).__name__}")
        self.vector_field = vector_field

    def vf(self, t: float | Tensor, x: Tensor) -> Tensor:
        self.nfe += 1
        return self.vector_field(t, x)


class SemilinearTerm(Term):
    """``dx/dt = L * x + N(t, x)`` with a diagonal linear part ``L``.

    This is the structure shared by stiff PDEs in Fourier space (``L`` the symbol of the linear
    operator) and by the diffusion probability-flow ODE in log-SNR time; exponential integrators
    treat ``L`` exactly through the phi functions (:func:`timestepper.core.phi`).

    Args:
        linear: tensor broadcastable against the state: the diagonal of ``L``.
        nonlinear: callable ``N(t, x)`` returning a tensor shaped like ``x``.
    """

    def __init__(self, linear: Tensor, nonlinear: Callable[[float | Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        if not isinstance(linear, Tensor):
            raise TypeError(f"linear must be a tensor (the diagonal of L), got {type(linear).__name__}")
        if not callable(nonlinear):
            raise TypeError(f"nonlinear must be callable, got {type(nonlinear).__name__}")
        self.linear = linear
        self.nonlinear_fn = nonlinear

    def nonlinear(self, t: float | Tensor, x: Tensor) -> Tensor:
        """Evaluate ``N(t, x)`` (counted as one function evaluation)."""
        self.nfe += 1
        return self.nonlinear_fn(t, x)

    def vf(self, t: float | Tensor, x: Tensor) -> Tensor:
        return self.linear * x + self.nonlinear(t, x)


def check_state(name: str, x: object) -> Tensor:
    """Raise a clear error unless ``x`` is a floating-point (or complex) tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must have a floating or complex dtype, got {x.dtype}")
    return x


__all__ = ["ODETerm", "SemilinearTerm", "Term", "check_state", "torch"]

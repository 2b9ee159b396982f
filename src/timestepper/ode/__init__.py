"""Neural differential equations: ``solve`` (adaptive ODE solving with adjoints), the
torchdiffeq-compatible ``odeint``, and SDE solving."""

from .odeint import odeint, odeint_adjoint
from .solve import solve

__all__ = ["odeint", "odeint_adjoint", "solve"]

"""Neural differential equations: ``solve`` (adaptive ODE solving with adjoints), the
torchdiffeq-compatible ``odeint``, and SDE solving."""

from .brownian import VirtualBrownianTree
from .odeint import odeint, odeint_adjoint, odeint_dense, odeint_event
from .sde import SDETerm, sdeint
from .solve import solve

__all__ = ["SDETerm", "VirtualBrownianTree", "odeint", "odeint_adjoint", "odeint_dense", "odeint_event", "sdeint",
           "solve"]

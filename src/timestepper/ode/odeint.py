"""The torchdiffeq drop-in (kept importable here; it lives in :mod:`timestepper.ode.torchdiffeq`)."""

from .torchdiffeq import METHODS, odeint, odeint_adjoint, odeint_dense, odeint_event

__all__ = ["METHODS", "odeint", "odeint_adjoint", "odeint_dense", "odeint_event"]

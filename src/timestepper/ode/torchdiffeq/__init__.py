"""A torchdiffeq drop-in: ``odeint``, ``odeint_adjoint``, ``odeint_event``, ``odeint_dense``.

Existing code switches by changing an import. The shim reproduces torchdiffeq's semantics, not
only its interface: ``func`` receives ``t`` as a 0-d tensor; tuple states; decreasing ``t``;
gradients with respect to ``t``; the adaptive methods take torchdiffeq's steps (its initial step,
error ratio, step-size rule, ``step_t``/``jump_t``, steps past the last output time with dense
output, so the evaluation count is torchdiffeq's); the fixed-grid methods step on their own grid
and interpolate (``interp``, ``grid_constructor``, ``perturb``); step callbacks; events with the
gradient through the event time. Every solve runs on the one loop (:func:`timestepper.integrate`)
through :func:`timestepper.solve`. docs/torchdiffeq.md has the option table and the deliberate
differences.
"""

from ..events import odeint_event
from .dense import odeint_dense
from .methods import METHODS
from .odeint import odeint, odeint_adjoint

__all__ = ["METHODS", "odeint", "odeint_adjoint", "odeint_dense", "odeint_event"]

"""``odeint`` and ``odeint_adjoint`` with torchdiffeq's signature and semantics, on the one loop.

See :mod:`timestepper.ode.torchdiffeq` for what is reproduced and docs/torchdiffeq.md for the
option table and where the shim differs on purpose.
"""

from __future__ import annotations

from ..events import solve_until_event
from .methods import drives_adaptively, method_of, solver_of
from .outputs import CALLBACKS, Gradient, integrate_outputs


def odeint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None):  # noqa: PLR0913 - torchdiffeq's
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0`` and return ``y`` at every time of ``t``
    (torchdiffeq's ``odeint``).

    Args:
        func: ``func(t, y)`` with ``t`` a 0-d tensor and ``y`` shaped like ``y0``; it may define
            ``callback_step``, ``callback_accept_step``, ``callback_reject_step``.
        y0: a tensor or a tuple of tensors.
        t: 1-D tensor of times, strictly increasing or decreasing (may require grad).
        rtol, atol: tolerances (floats or tensors broadcasting against the state).
        method: a torchdiffeq method name (default ``"dopri5"``; see ``METHODS``).
        options: the method's options (see docs/torchdiffeq.md); unknown ones raise.
        event_fn: ``event_fn(t, y)``; when given, integrate from ``t[0]`` until it crosses zero
            and return ``(event_t, solution)`` (see :func:`timestepper.ode.events.odeint_event`).

    Returns:
        ``y`` of shape ``(len(t), *y0.shape)`` (a tuple of such for a tuple ``y0``).
    """
    if event_fn is not None:
        return solve_until_event(func, y0, t, event_fn, dict(rtol=rtol, atol=atol, method=method,
                                                             options=options), Gradient())
    return integrate_outputs(func, y0, t, rtol, atol, method, options, Gradient())


def odeint_adjoint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None,  # noqa: PLR0913 - torchdiffeq's
                   event_fn=None, adjoint_rtol=None, adjoint_atol=None, adjoint_method=None,
                   adjoint_options=None, adjoint_params=None):
    """:func:`odeint` differentiated by the continuous adjoint (torchdiffeq's
    ``odeint_adjoint``): the backward solve uses ``adjoint_method`` (default ``method``) with
    ``adjoint_rtol``/``adjoint_atol`` (default ``rtol``/``atol``); ``adjoint_options`` may set
    ``norm="seminorm"`` (Kidger, Chen & Lyons 2021) or ``norm="default"``; ``adjoint_params``
    are the tensors to differentiate (default: ``func``'s parameters when it is an
    ``nn.Module``)."""
    grad = adjoint_gradient(func, method, adjoint_rtol, adjoint_atol, adjoint_method,
                            adjoint_options, adjoint_params, rtol, atol)
    if event_fn is not None:
        return solve_until_event(func, y0, t, event_fn, dict(rtol=rtol, atol=atol, method=method,
                                                             options=options), grad)
    return integrate_outputs(func, y0, t, rtol, atol, method, options, grad)


def adjoint_gradient(func, method, adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options,  # noqa: PLR0913
                     adjoint_params, rtol, atol) -> Gradient:
    """The :class:`Gradient` of ``odeint_adjoint``'s arguments, refusing what it cannot honour."""
    for name in CALLBACKS:
        if hasattr(func, name + "_adjoint"):
            raise ValueError(f"func.{name}_adjoint is not supported (the backward solve runs "
                             "without callbacks)")
    opts = dict(adjoint_options or {})
    norm = opts.pop("norm", "default")
    if opts or norm not in ("default", "seminorm"):
        raise ValueError("adjoint_options supports only norm='seminorm' or norm='default'; got "
                         f"{dict(adjoint_options or {})}")
    solver = None
    if adjoint_method is not None and adjoint_method != method:
        name, m = method_of(adjoint_method)
        solver = solver_of(m)
        if not drives_adaptively(m, solver):
            raise ValueError(f"adjoint_method must be an adaptive method, got {name!r}")
    return Gradient("backsolve", adjoint_params, rtol if adjoint_rtol is None else adjoint_rtol,
                    atol if adjoint_atol is None else adjoint_atol, norm == "seminorm", solver)


__all__ = ["adjoint_gradient", "odeint", "odeint_adjoint"]

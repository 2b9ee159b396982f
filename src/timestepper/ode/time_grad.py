"""Gradients with respect to the integration times, in every gradient mode.

A solve sees its times as numbers; their gradients follow from the flow's derivatives
(Chen et al. 2018, "Neural Ordinary Differential Equations", appendix B):

* ``dy(s)/ds = f(s, y(s))`` for an output time ``s``, so ``dL/ds = f(s, y(s)) . g_s``;
* ``dy(s)/dt0 = -Phi(s, t0) f(t0, y0)``, so ``dL/dt0 = -f(t0, y0) . a(t0)`` with ``a(t0)`` the
  adjoint (the gradient of ``L`` with respect to ``y0`` through the solve).

Both are attached without changing a value: with ``d = t - t.detach()`` (zero, carrying ``t``'s
graph) the solve starts from ``y0 - d0 f(t0, y0)`` and returns ``y(s) + ds f(s, y(s))``. The
chain rule then gives exactly the two formulas above, whichever way the gradient of the solve
itself is computed (backpropagation, checkpointing or the continuous adjoint). Each shift costs
one evaluation of ``f``, made only when a time requires a gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def needs_grad(t: Any) -> bool:
    """True when ``t`` is a tensor that requires a gradient (and autograd is recording)."""
    return isinstance(t, Tensor) and t.requires_grad and torch.is_grad_enabled()


def shift_start(field: Callable[[Any, Tensor], Tensor], t0: Tensor, x0: Tensor) -> Tensor:
    """``x0 - (t0 - t0.detach()) f(t0, x0)``: the value of ``x0``, with ``dL/dt0`` attached."""
    d = (t0 - t0.detach()).reshape(()).to(x0.dtype)
    return x0 - d * field(float(t0.detach()), x0)


def shift_end(field: Callable[[Any, Tensor], Tensor], t: Tensor, x: Tensor) -> Tensor:
    """``x + (t - t.detach()) f(t, x)``: the state at an output time ``t``, with ``dL/dt``."""
    d = (t - t.detach()).reshape(()).to(x.dtype)
    return x + d * field(float(t.detach()), x)


def shift_saved(field: Callable[[Any, Tensor], Tensor], ts: Tensor, ys: Tensor) -> Tensor:
    """:func:`shift_end` for every saved state ``ys[k]`` at ``ts[k]`` (stacked along dim 0)."""
    return torch.stack([shift_end(field, ts[k], ys[k]) for k in range(ys.shape[0])])


__all__ = ["needs_grad", "shift_end", "shift_saved", "shift_start"]

"""Which tensors a vector field differentiates through: the closure check of the adjoints.

The checkpoint and backsolve adjoints compute parameter gradients for an explicit list of tensors
(``adjoint_params``, by default the parameters of an ``nn.Module`` field). A plain function that
closes over a tensor requiring grad (``lambda t, y: -w * y``) would otherwise get no gradient for
it without a word. :func:`untracked_leaves` evaluates the field once with autograd on and walks
its graph back to the leaf tensors that require grad; those not in the list are either collected
(``adjoint_params`` not given) or refused with an error naming them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor


def graph_leaves(out: Tensor) -> list[Tensor]:
    """The leaf tensors requiring grad that ``out`` was computed from (graph order, no repeats)."""
    if out.grad_fn is None:
        return [out] if out.requires_grad else []
    seen: set[int] = set()
    leaves: list[Tensor] = []
    stack = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # AccumulateGrad: the leaf itself
        if isinstance(variable, Tensor):
            leaves.append(variable)
        stack.extend(fn for fn, _ in node.next_functions)
    return leaves


def untracked_leaves(field: Callable[[Any, Tensor], Tensor], t0: float, x0: Tensor,
                     params: Sequence[Tensor]) -> list[Tensor]:
    """The leaves requiring grad that ``field(t0, x0)`` depends on besides ``x0`` and ``params``
    (one evaluation of the field, outside the solve's statistics)."""
    with torch.enable_grad():
        out = field(t0, x0.detach())
    known = {id(p) for p in params}
    return [leaf for leaf in graph_leaves(out) if id(leaf) not in known]


def describe(tensors: Sequence[Tensor]) -> str:
    """``"2 tensors of shapes (3,), (4, 4)"``: for error messages."""
    shapes = ", ".join(str(tuple(t.shape)) for t in tensors[:5]) + (", ..." if len(tensors) > 5 else "")
    plural = "s" if len(tensors) != 1 else ""
    return f"{len(tensors)} tensor{plural} of shape{plural} {shapes}"


__all__ = ["describe", "graph_leaves", "untracked_leaves"]

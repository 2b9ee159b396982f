"""The fused arithmetic of a step, written once for eager and compiled execution.

In eager mode ``out + c * y`` with a Python float ``c`` is one kernel with ``alpha=c``. Under
``torch.compile`` a step's coefficients are symbols (they change from step to step) and an
``alpha=`` argument would be specialised on its value, compiling one graph per step; there the
product is written out instead, and the compiler fuses it anyway.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: whether the code runs under ``torch.compile`` tracing (eager fusions are not used there: the
#: compiler fuses plain arithmetic itself)
compiling = getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling


def add_scaled_(out: Tensor, y: Tensor, c: float) -> Tensor:
    """``out += c * y`` in place (``out`` must be a fresh tensor of the step)."""
    if compiling():
        return out.add_(y * c)
    return out.add_(y, alpha=c)


def add_scaled(x: Tensor, y: Tensor, c: float) -> Tensor:
    """``x + c * y`` as a new tensor."""
    if compiling():
        return x + y * c
    return torch.add(x, y, alpha=c)


__all__ = ["add_scaled", "add_scaled_", "compiling"]

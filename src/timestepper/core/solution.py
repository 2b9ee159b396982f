"""The result of a solve: final state, saved states and statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Stats:
    """Counters of a solve.

    Attributes:
        nfe: evaluations of the vector field / model actually made.
        steps: steps attempted.
        accepted: steps accepted (equal to ``steps`` on a fixed grid).
        rejected: steps rejected by an adaptive controller.
    """

    nfe: int = 0
    steps: int = 0
    accepted: int = 0
    rejected: int = 0


@dataclass
class Solution:
    """What ``integrate`` (and the fronts ``sample`` / ``solve``) return.

    Attributes:
        x: the final state.
        ts: float64 tensor of the times of the grid that was used (for an adaptive solve, the
            accepted times).
        ys: the saved states stacked along dim 0 (``None`` unless saving was requested).
        stats: :class:`Stats`.
        extras: solver-specific diagnostics (e.g. accumulated error estimates).
    """

    x: Tensor
    ts: Tensor
    ys: Tensor | None = None
    stats: Stats = field(default_factory=Stats)
    extras: dict = field(default_factory=dict)

"""What a solve returns (``Solution``, ``Stats``) and what it is asked to keep (``SaveAt``)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .status import Status


@dataclass
class Stats:
    """Counters of a solve: plain ints for a shared-step solve, ``(B,)`` int64 tensors per sample.

    Attributes:
        nfe: evaluations of the vector field / model actually made (each step reports its own).
        steps: steps attempted.
        accepted: steps accepted (equal to ``steps`` on a fixed grid).
        rejected: steps rejected by an adaptive controller.
    """

    nfe: Any = 0
    steps: Any = 0
    accepted: Any = 0
    rejected: Any = 0

    def __add__(self, other: Stats) -> Stats:
        return Stats(self.nfe + other.nfe, self.steps + other.steps,
                     self.accepted + other.accepted, self.rejected + other.rejected)


@dataclass(frozen=True)
class SaveAt:
    """What a solve keeps besides the final state (``Solution.x``, always kept).

    Attributes:
        ts: times at which to save the state (``Solution.ts``/``ys`` then hold them). On a fixed
            grid they must be grid points; adaptive solves use the solver's dense output when it
            has one and otherwise shorten steps to land on them.
        steps: save the state after every accepted step (and the initial one); ``Solution.ts``
            holds the step times.
        dense: keep every accepted step's dense-output information: ``Solution.interpolation(t)``
            then evaluates the solution anywhere in the interval (solvers with dense output).
    """

    ts: Sequence[float] | Tensor | None = None
    steps: bool = False
    dense: bool = False

    def __post_init__(self) -> None:
        if self.ts is not None and self.steps:
            raise ValueError("SaveAt: give either ts= or steps=True, not both")


class DenseInterpolation:
    """The continuous solution of a shared-step solve, from each accepted step's dense output.

    ``interp(t)`` evaluates it at a float time inside the solved interval; between the ends of a
    step it is the solver's own interpolant (HNW I, II.6), so its accuracy is the solver's.
    """

    def __init__(self, t0: float, direction: float,
                 evaluate_step: Callable[[Any, float], Tensor]) -> None:
        self._t0, self._direction = t0, direction
        self._ends: list[float] = []  # step end times, in the direction of integration
        self._steps: list[tuple[float, float, Any]] = []
        self._evaluate_step = evaluate_step

    def add(self, t0: float, t1: float, step_state: Any) -> None:
        self._ends.append(self._direction * t1)
        self._steps.append((t0, t1, step_state))

    def __call__(self, t: float) -> Tensor:
        t = float(t)
        if not self._steps:
            raise ValueError("the solve took no step; there is nothing to interpolate")
        lo, hi = sorted((self._t0, self._steps[-1][1]))
        if not lo <= t <= hi:
            raise ValueError(f"t={t:.6g} is outside the solved interval [{lo:.6g}, {hi:.6g}]")
        k = min(bisect.bisect_left(self._ends, self._direction * t), len(self._steps) - 1)
        a, b, st = self._steps[k]
        return self._evaluate_step(st, (t - a) / (b - a))


@dataclass
class Solution:
    """What ``integrate`` (and the fronts ``sample`` / ``solve``) return.

    Attributes:
        x: the final state (per-sample mode: each sample's state where it stopped).
        ts: float64 times of ``ys`` (the grid used, the accepted step times or the save times).
        ys: the saved states stacked along dim 0 (``None`` unless saving was requested).
        stats: :class:`Stats`.
        status: :class:`Status` (per-sample mode: a ``(B,)`` int64 tensor of its values).
        extras: front- or solver-specific diagnostics (e.g. the sampling grid, global error
            estimates); ``extras["t"]`` is where the solve stopped and ``extras["step_ts"]`` the
            accepted step times of a shared-step solve.
        interpolation: :class:`DenseInterpolation` when ``SaveAt(dense=True)`` was asked for.
    """

    x: Any
    ts: Tensor
    ys: Any = None
    stats: Stats = field(default_factory=Stats)
    status: Status | Tensor = Status.SUCCESS
    extras: dict = field(default_factory=dict)
    interpolation: DenseInterpolation | None = None

    @property
    def succeeded(self) -> bool:
        """Whether every sample reached the end time."""
        if isinstance(self.status, Tensor):
            return not bool((self.status != int(Status.SUCCESS)).any())
        return self.status == Status.SUCCESS


__all__ = ["DenseInterpolation", "SaveAt", "Solution", "Stats"]

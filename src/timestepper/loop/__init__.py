"""The one loop: :func:`integrate` (fixed grids, adaptive and per-sample stepping)."""

from .integrate import integrate
from .options import LoopOptions, Problem, StepRecord

__all__ = ["LoopOptions", "Problem", "StepRecord", "integrate"]

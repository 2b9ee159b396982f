"""What one step of a solver schedule does (:class:`StepSpec`), and the checks of a list of them.

A solver schedule (USF, the unified sampling framework of Liu et al. 2023, "A Unified Sampling
Framework for Solver Searching of Diffusion Probabilistic Models") chooses per step the order of
the multistep exponential-integrator predictor, its prediction type (data ``x0`` or noise
``eps``), the coefficient variant and whether a UniC corrector follows. The runner is
:class:`~timestepper.solvers.scheduled.ScheduledSolver`; the schedule as data (times, steps,
provenance, JSON) is :class:`~timestepper.solvers.schedule.SolverSchedule`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .expint import PREDICTIONS

ORDERS = (1, 2, 3)
#: ``midpoint``/``taylor``: the DPM-Solver(++) multistep weights (second-order weight ``E_0 / 2``
#: or the exact Taylor weight; the third order always uses the Taylor weight); ``bh1``/``bh2``:
#: UniPC's UniP with ``B(h) = h`` / ``e^h - 1``; ``ddim`` (order 1 only): the first-order step
#: with the model output's conversion folded into its coefficients, as DDIM computes it (the same
#: step as order 1 of the others up to rounding; DDIM bit for bit).
VARIANTS = ("midpoint", "taylor", "bh1", "bh2", "ddim")
#: B(h) of the UniC corrector after a step of each variant (the DPM-Solver variants take bh2).
CORRECTOR_VARIANT = {"midpoint": "bh2", "taylor": "bh2", "bh1": "bh1", "bh2": "bh2", "ddim": "bh2"}
FIELDS = ("order", "prediction", "corrector", "variant")


@dataclass(frozen=True)
class StepSpec:
    """What one step of a solver schedule does (USF, Liu et al. 2023; S^3's search space).

    Attributes:
        order: predictor order 1..3: the step combines the predictions at its start and the
            ``order - 1`` points before it (refused where the history is shorter).
        prediction: ``"data"`` (``x0``) or ``"noise"`` (``eps``): the prediction the multistep
            predictor (and the corrector) interpolates.
        corrector: correct this step's result with UniC (Zhao et al. 2023), reusing the next
            step's model call (no extra evaluation; impossible on the last step).
        variant: coefficient variant, one of :data:`VARIANTS`.
    """

    order: int = 2
    prediction: str = "data"
    corrector: bool = False
    variant: str = "bh2"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spec_from(i: int, value: StepSpec | Mapping[str, Any]) -> StepSpec:
    """A :class:`StepSpec` from itself or a dict of its fields (JSON), checked (step ``i``)."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(FIELDS))
        if unknown:
            raise ValueError(f"step {i}: unknown fields {unknown}; a step has {', '.join(FIELDS)}")
        value = StepSpec(**value)
    if not isinstance(value, StepSpec):
        raise TypeError(f"step {i} must be a StepSpec or a dict of its fields, got {type(value).__name__}")
    check_spec(i, value)
    return value


def check_spec(i: int, spec: StepSpec) -> None:
    """Refuse an unknown order, prediction or variant, naming step ``i``."""
    if type(spec.order) is not int or spec.order not in ORDERS:
        raise ValueError(f"step {i}: order must be one of {ORDERS}, got {spec.order!r}")
    if spec.prediction not in PREDICTIONS:
        raise ValueError(f"step {i}: prediction must be one of {PREDICTIONS}, got {spec.prediction!r}")
    if spec.variant not in VARIANTS:
        raise ValueError(f"step {i}: variant must be one of {VARIANTS}, got {spec.variant!r}")
    if spec.variant == "ddim" and spec.order != 1:
        raise ValueError(f"step {i}: variant 'ddim' is a first-order step, got order {spec.order}")
    if not isinstance(spec.corrector, bool):
        raise ValueError(f"step {i}: corrector must be True or False, got {spec.corrector!r}")


def check_history(specs: Sequence[StepSpec], first_with_history: int = 0,
                  final_zero: bool = False) -> None:
    """Refuse orders above the history and impossible correctors, naming the step.

    Step ``i`` has the predictions of points ``first_with_history .. i`` (``first_with_history =
    1`` on a grid from pure noise, whose first step is the DDIM step and leaves no history). The
    last step has no next model call to correct with; a step to zero noise (``final_zero``) is
    first order (the higher terms have no finite limit at ``h = inf``)."""
    n = len(specs)
    for i, s in enumerate(specs):
        available = max(i + 1 - first_with_history, 1)
        if s.order > available:
            raise ValueError(f"step {i}: order {s.order} exceeds the history available there "
                             f"({available} prediction{'s' if available > 1 else ''})")
        if s.corrector and i == n - 1:
            raise ValueError(f"step {i}: the last step cannot be corrected (the corrector reuses the "
                             "next step's model call)")
        if s.corrector and i < first_with_history:
            raise ValueError(f"step {i}: the first step from pure noise (alpha = 0) is the DDIM step "
                             "and cannot be corrected")
    if final_zero and n and specs[-1].order != 1:
        raise ValueError(f"step {n - 1}: a step to zero noise must be first order, got order "
                         f"{specs[-1].order}")


__all__ = ["CORRECTOR_VARIANT", "ORDERS", "VARIANTS", "StepSpec", "check_history", "check_spec", "spec_from"]

"""The solver contract: what every solver declares and the methods the loop may call.

A solver advances a state by one step. The loop (:func:`timestepper.integrate`) calls

* ``init(term, grid, x0) -> (state, table)`` once per solve. ``grid`` is the fixed grid (a
  float64 tensor of times, or a diffusion ``SamplingGrid``) or ``None`` for an adaptive solve.
  ``table`` is ``None`` or a sequence with one entry per step of the fixed grid: the step's
  coefficients, computed here once in float64 and handed back to ``step`` (Python floats, bools
  and tensors whose structure is the same on every step of a kind, so that a compiled step is
  reused from step to step). ``state`` is what a step carries to the next (history, FSAL
  derivative); the initial state always comes from here.
* ``step(term, t0, t1, x, state, row) -> (x1, state, err, nfe)`` advances ``x`` from ``t0`` to
  ``t1`` (floats; per-sample mode ``(B,)`` tensors). ``row`` is ``table[i]`` on a fixed grid and
  ``None`` otherwise; ``err`` is the local error estimate (``None`` for solvers without one) and
  ``nfe`` the number of evaluations of the term the step made (a Python int fixed by the code
  path, never read from data), which the loop sums into ``Solution.stats.nfe``.

A step makes no host synchronisation and no data-dependent Python branch, and mutates no Python
state, so it can be captured by ``torch.compile``.

Capabilities are declared as class attributes (set per instance in ``__init__`` where they depend
on options) and checked once by the loop, which refuses a bad combination with an error naming it;
nothing is probed with ``hasattr``:

* ``order``: the order of convergence (measured by the tests).
* ``error_order``: the exponent denominator of an adaptive controller (``q + 1`` for a local
  error ``O(h^(q+1))``), or ``None``: no error estimate, fixed steps only.
* ``nfe_per_step``: evaluations of a regular step.
* ``is_stochastic``: whether a step draws noise.
* ``term_type``: the term class (or tuple of classes) the solver advances.
* ``grid_type``: the class a fixed grid must be (``None``: a 1-D tensor of times).
* ``has_dense_output``: ``interpolate`` is defined (``SaveAt(ts=...)`` between steps, ``dense``).
* ``provides_first_derivative``: ``first_derivative`` is defined: ``f(t0, x0)`` is shared
  between the initial step-size selection and the first stage.
* ``per_sample``: ``step`` takes ``(B,)`` times and ``merge`` picks per-sample states.
* ``stacks_rows``: ``stacked_rows`` turns a fixed-grid table into one row of tensors per step, so
  a compiled loop takes every step in one graph (the multistep diffusion solvers).
* ``reuses_state_memory``: ``step_into`` may write the new state into the memory of ``x``. The
  loop calls it instead of ``step`` only where it owns ``x`` and nothing else sees it: a fixed-grid
  eager solve, ``x`` an earlier step's output (never the caller's ``x0``), nothing saved or
  watched along the way. The solver still takes the out-of-place step where autograd records it
  or the term's output shares ``x``'s memory (DDIM and the linear multistep diffusion solvers:
  one pass over the state fewer per step).
* ``min_steps`` (and ``min_steps_reason``): the fewest steps of a fixed grid the method is
  defined on (``pndm``: its warm-up); the loop refuses shorter grids.
* ``is_implicit``: each step solves (or linearises) an implicit equation with the Jacobian, so
  the solver suits stiff problems (listed in the errors that detect stiffness).
* ``family``: ``"ode"``, ``"sde"``, ``"diffusion"``, ``"pde"`` or ``"surrogate"`` (for listings
  and error messages).
* ``carries_state``: a step depends on more than its start ``(t0, x0)`` (a multistep history, or
  a reused evaluation that is not ``f(t0, x0)``), so it cannot be replayed from a stored state
  alone (recursive checkpointing refuses it).
* ``variable_order``: the method's order changes from step to step, chosen by the step-size
  controller from the errors the solver estimates for neighbouring orders (variable-order Adams).
  On an adaptive solve ``step`` then receives as ``row`` the order ``k`` of this step (a Python
  int, ``controller.next_order(cstate)``; the first is ``error_order - 1``), and returns as
  ``err`` an :class:`OrderErrors`: the local error estimate at order ``k`` (``O(h^(k+1))``,
  which decides acceptance) and at the neighbouring orders it can estimate, from which the
  controller picks the next order and step size with that order's exponent ``1/(q+1)``. The
  choice is data dependent, so it is made where the loop already reads the error norm on the
  host (the controller), not in the step. Fixed-order solvers are unaffected (``row`` stays
  ``None`` on an adaptive solve).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .terms import Term


@dataclass(frozen=True)
class OrderErrors:
    """The error a variable-order step returns (see ``variable_order`` in the module docstring).

    Attributes:
        order: the order ``k`` of the formula whose error the step controls (the ``row`` it was
            given); its local error is ``O(h^(k+1))``.
        errors: order ``q`` -> the estimated local error of the step had it used order ``q``:
            ``k`` itself and the neighbours the solver can estimate (``k - 1``, ``k + 1``).
    """

    order: int
    errors: dict[int, Tensor]


StepResult = tuple[Tensor, Any, "Tensor | None", int]
"""What ``step`` returns (a variable-order solver's ``err`` is an :class:`OrderErrors` instead)."""


class Solver:
    """Base class of every solver (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    registry_name: str = ""
    family: ClassVar[str] = "ode"
    order: int = 1
    error_order: int | None = None
    nfe_per_step: int = 1
    is_stochastic: bool = False
    term_type: ClassVar[type | tuple[type, ...]] = Term
    grid_type: ClassVar[type | None] = None
    has_dense_output: bool = False
    provides_first_derivative: ClassVar[bool] = False
    per_sample: ClassVar[bool] = False
    stacks_rows: ClassVar[bool] = False
    reuses_state_memory: ClassVar[bool] = False
    is_implicit: ClassVar[bool] = False
    min_steps: ClassVar[int] = 1
    min_steps_reason: ClassVar[str] = ""
    carries_state: bool = False
    variable_order: ClassVar[bool] = False

    def init(self, term: Any, grid: Any, x0: Tensor) -> tuple[Any, Any]:
        """``(state, table)`` for a solve from ``x0`` (see the module docstring)."""
        return None, None

    def step(self, term: Any, t0: Any, t1: Any, x: Tensor, state: Any,
             row: Any) -> StepResult:  # pragma: no cover - interface
        """One step from ``t0`` to ``t1``: ``(x1, state, err, nfe)``."""
        raise NotImplementedError

    def step_into(self, term: Any, t0: Any, t1: Any, x: Tensor, state: Any, row: Any) -> StepResult:
        """``step``, allowed to write the new state into the memory of ``x`` (which the loop owns
        and nothing else holds; see ``reuses_state_memory``). Default: ``step``."""
        return self.step(term, t0, t1, x, state, row)

    def merge(self, accept: Tensor, new: Any, old: Any) -> Any:
        """Per-sample mode: the state after a step in which only the samples where ``accept``
        (shaped to broadcast against the state) took their new step."""
        raise NotImplementedError(f"{self.display_name} does not support per-sample steps")

    def interpolate(self, state: Any, theta: float | Tensor) -> Tensor:
        """Dense output inside the last step: the state at ``t0 + theta (t1 - t0)``."""
        raise NotImplementedError(f"{self.display_name} has no dense output")

    def prepare_dense(self, term: Any, state: Any) -> tuple[Any, int]:
        """Evaluate what ``interpolate`` needs beyond the step itself (extra stages); returns the
        state and the evaluations made. Called at most once per accepted step."""
        return state, 0

    def prepare(self, x0: Tensor, time_dtype: torch.dtype) -> None:
        """Fill the caches a step keys on the state's dtype and device (constant tensors) before
        a compiled loop traces the step: filled while tracing, they would be a side effect (a
        recompile on the next solve) or constants inside the loop graph. Default: none."""

    def stacked_rows(self, table: list, x0: Tensor) -> tuple[Any, Any] | None:
        """The rows of a fixed-grid ``table`` as one row of the same type whose entries are
        tensors with the step as leading dimension, and the solver state to start from, such
        that every step is the same code on the row's entry (no warm-up branch, one state
        structure): a compiled loop then takes all the steps in one graph. ``None`` (default):
        the rows differ in kind; the loop takes one compiled call per step."""
        return None

    def first_derivative(self, term: Any, t0: Any, x0: Tensor, state: Any) -> tuple[Tensor, Any]:
        """``f(t0, x0)`` and the state that reuses it as the first stage (one evaluation)."""
        raise NotImplementedError(f"{self.display_name} does not provide a first derivative")

    def default_controller(self, grid: Any) -> Any:
        """The step-size controller of a solver that chooses its own steps on a sampling grid's
        range (adaptive diffusion samplers), else ``None``."""
        return None

    @property
    def display_name(self) -> str:
        """The registry name when built from the registry, else the class name."""
        return self.registry_name or self.name or type(self).__name__

    def accepts_term(self, term: Any) -> bool:
        return isinstance(term, self.term_type)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_")
                         and k != "registry_name")
        return f"{type(self).__name__}({opts})"


def term_type_names(solver: Solver) -> str:
    """The names of the term classes a solver advances, for error messages."""
    kinds = solver.term_type if isinstance(solver.term_type, tuple) else (solver.term_type,)
    return " or ".join(k.__name__ for k in kinds)


__all__ = ["OrderErrors", "Solver", "StepResult", "term_type_names"]

"""How gradients flow through an ODE solve: strategy objects for direct backpropagation,
recursive checkpointing and the continuous adjoint.

* :class:`DirectAdjoint` (``"direct"``): autograd records every step.
* :class:`CheckpointAdjoint` (``"checkpoint"``): the forward solve runs without a graph and records
  its accepted step times. The backward pass replays the steps with the solver's own ``init`` and
  ``step`` and recursive bisection: to differentiate steps ``[i, j)`` it recomputes the state at
  the midpoint without a graph, differentiates the right half, then the left half. At most
  ``O(log n)`` states are held and each step is recomputed ``O(log n)`` times (the recursive
  schedule of Griewank & Walther 2000, "Algorithm 799: revolve", in its simplest bisection form).
  The gradient equals direct backpropagation through the same steps (the discretise-then-optimise
  gradient; Kidger 2021, "On Neural Differential Equations", sec. 5.1).
* :class:`BacksolveAdjoint` (``"backsolve"``): the continuous adjoint (Chen et al. 2018, "Neural
  Ordinary Differential Equations", Algorithm 1): the augmented system ``[y, a, g]`` with
  ``dy/dt = f``, ``da/dt = -a^T df/dy``, ``dg/dt = -a^T df/dtheta`` is solved backwards from
  ``t1`` through the same loop and solver, with its own tolerances;
  ``dL/dt1 = a(t1) . f(t1, y1)`` and ``dL/dt0 = -a(t0) . f(t0, y0)``. The augmented field is
  differentiable, so an implicit solver (``rosenbrock23``) gets its Jacobian.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from ..core.controllers import PIDController, StepSizeController
from ..core.solution import Solution
from ..core.solver import Solver
from ..core.terms import ODETerm

if TYPE_CHECKING:  # pragma: no cover
    from .solve import ODEProblem

ADJOINTS = ("direct", "checkpoint", "backsolve")


class AdjointMethod:
    """How the gradient of a solve is computed (a strategy object, as diffrax's adjoints)."""

    name: ClassVar[str] = ""

    def check(self, problem: ODEProblem) -> None:
        """Refuse a problem this method cannot differentiate, with a clear error."""
        if problem.per_sample and self.name != "direct":
            raise ValueError(f"per_sample_steps supports adjoint='direct' only, got {self.name!r}")

    def solve(self, problem: ODEProblem, x0: Tensor, t_in: tuple[Any, Any]) -> Solution:  # pragma: no cover
        raise NotImplementedError


class DirectAdjoint(AdjointMethod):
    """Backpropagation through every step (memory grows with the number of steps)."""

    name = "direct"

    def solve(self, problem, x0, t_in):
        return problem.run(x0)


@dataclass
class CheckpointAdjoint(AdjointMethod):
    """Recursive checkpointing of the accepted steps (see the module docstring).

    Attributes:
        params: the tensors whose gradients the backward pass accumulates.
    """

    params: tuple[Tensor, ...] = ()
    name: ClassVar[str] = "checkpoint"

    def check(self, problem):
        super().check(problem)
        if problem.solver.carries_state:
            raise ValueError(f"adjoint='checkpoint' replays steps from stored states, but a step of "
                             f"{problem.solver.display_name!r} depends on its history; use "
                             "adjoint='direct' or 'backsolve'")

    def solve(self, problem, x0, t_in):
        run = _Run(problem, self, t_in)
        x1, ys = _Checkpoint.apply(run, x0, *run.time_inputs, *self.params)
        return run.result(x1, ys)


@dataclass
class BacksolveAdjoint(AdjointMethod):
    """The continuous adjoint solved backwards (see the module docstring).

    Attributes:
        params: the tensors whose gradients are integrated.
        rtol, atol: tolerances of the backward solve.
        seminorm: measure the backward error on the state and adjoint only, not on the
            parameter-gradient integrals (Kidger, Chen & Lyons 2021, "'Hey, that's not an ODE':
            faster ODE adjoints via seminorms"; fewer backward steps).
        solver: the solver of the backward solve (default: the forward solve's).
    """

    params: tuple[Tensor, ...] = ()
    rtol: float = 1e-6
    atol: float = 1e-9
    seminorm: bool = True
    solver: Solver | None = None
    name: ClassVar[str] = "backsolve"

    def solve(self, problem, x0, t_in):
        run = _Run(problem, self, t_in)
        x1, ys = _Backsolve.apply(run, x0, *run.time_inputs, *self.params)
        return run.result(x1, ys)


def adjoint_method(spec: str | AdjointMethod, f: Any, params: Sequence[Tensor] | None,  # noqa: PLR0913
                   rtol: float, atol: float, seminorm: bool) -> AdjointMethod:
    """The :class:`AdjointMethod` named by ``spec`` (``params`` default to the parameters of
    ``f`` when it is an ``nn.Module``)."""
    if isinstance(spec, AdjointMethod):
        return spec
    ps = tuple(params) if params is not None else (
        tuple(p for p in f.parameters() if p.requires_grad) if isinstance(f, torch.nn.Module) else ())
    if spec == "direct":
        return DirectAdjoint()
    if spec == "checkpoint":
        return CheckpointAdjoint(ps)
    if spec == "backsolve":
        return BacksolveAdjoint(ps, rtol, atol, seminorm)
    raise ValueError(f"adjoint must be one of {ADJOINTS}, got {spec!r}")


@dataclass
class _Run:
    """One differentiated solve: the problem, the method, the user's ``t0``/``t1`` (tensors get
    gradients) and, after the forward pass, its solution."""

    problem: ODEProblem
    method: AdjointMethod
    t_in: tuple[Any, Any]
    solution: Solution | None = None

    @property
    def extras(self) -> dict:
        """The forward solution's extras, shared with the returned :class:`Solution` (the
        backward pass adds its diagnostics there)."""
        assert self.solution is not None
        return self.solution.extras

    @property
    def time_inputs(self) -> tuple[Tensor, ...]:
        return tuple(t for t in self.t_in if isinstance(t, Tensor))

    def forward(self, x0: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            self.solution = self.problem.run(x0.detach())
        sol = self.solution
        ys = sol.ys if sol.ys is not None else x0.new_zeros((0,) + tuple(x0.shape))
        return sol.x, ys

    def result(self, x1: Tensor, ys: Tensor) -> Solution:
        sol = self.solution
        assert sol is not None
        return Solution(x=x1, ts=sol.ts, ys=ys if self.problem.saveat is not None else None,
                        stats=sol.stats, status=sol.status, extras=sol.extras)

    def time_gradients(self, a0: Tensor, a1: Tensor, x0: Tensor, x1: Tensor) -> list[Tensor]:
        """``dL/dt0 = -a(t0) . f(t0, y0)``, ``dL/dt1 = a(t1) . f(t1, y1)`` for tensor times."""
        p, out = self.problem, []
        with torch.no_grad():
            for t_user, t, a, x, sign in ((self.t_in[0], p.t0, a0, x0, -1.0), (self.t_in[1], p.t1, a1, x1, 1.0)):
                if isinstance(t_user, Tensor):
                    g = sign * (a * p.field(t, x)).sum()
                    out.append(g.to(t_user.dtype).reshape(t_user.shape))
        return out


class _Checkpoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: _Run, x0: Tensor, *rest: Tensor):  # type: ignore[override]
        ctx.save_for_backward(x0)
        ctx.run = run
        return run.forward(x0)

    @staticmethod
    def backward(ctx, g_x: Tensor, g_ys: Tensor):  # type: ignore[override]
        (x0,) = ctx.saved_tensors
        run: _Run = ctx.run
        replay = _Replay(run, g_ys)
        n = len(replay.times) - 1
        g = replay.back(0, n, x0.detach(), g_x) if n > 0 else g_x
        run.extras["checkpoint_depth"] = replay.depth
        for k, _s in replay.saves.get(-1, []):
            g = g + g_ys[k]
        assert run.solution is not None
        tg = run.time_gradients(g, g_x, x0, run.solution.x)
        return (None, g, *tg, *replay.pgrads)


class _Replay:
    """The backward pass of :class:`CheckpointAdjoint`: replays the recorded steps by bisection."""

    def __init__(self, run: _Run, g_ys: Tensor) -> None:
        assert run.solution is not None
        p = run.problem
        self.solver, self.term = p.solver, ODETerm(p.field)
        self.times: list[float] = run.solution.extras["step_ts"].tolist()
        self.fixed = p.controller is None
        self.params = tuple(run.method.params)  # type: ignore[attr-defined]
        self.pgrads = [torch.zeros_like(q) for q in self.params]
        self.g_ys = g_ys
        self.depth = 0
        # Save times -> the step that contains them (-1: the initial time itself).
        self.saves: dict[int, list[tuple[int, float]]] = {}
        if p.saveat is not None:
            t, n = self.times, len(self.times) - 1
            for k, s in enumerate(p.saveat.tolist()):
                j = next((i for i in range(n) if (s - t[i]) * (s - t[i + 1]) <= 0 and s != t[i]), -1)
                self.saves.setdefault(j, []).append((k, s))

    def step(self, i: int, x: Tensor) -> tuple[Tensor, Any]:
        grid = torch.tensor(self.times, dtype=torch.float64) if self.fixed else None
        state, table = self.solver.init(self.term, grid, x)
        row = table[i] if table is not None else None
        x1, state, _, _ = self.solver.step(self.term, self.times[i], self.times[i + 1], x, state, row)
        return x1, state

    def advance(self, i: int, j: int, x: Tensor) -> Tensor:
        with torch.no_grad():
            for k in range(i, j):
                x = self.step(k, x)[0]
        return x

    def leaf(self, i: int, x: Tensor, g_out: Tensor) -> Tensor:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            x1, state = self.step(i, xr)
            outs, gos = [x1], [g_out]
            saves = self.saves.get(i, [])
            if any(s != self.times[i + 1] for _, s in saves):
                state, _ = self.solver.prepare_dense(self.term, state)
            for k, s in saves:
                theta = (s - self.times[i]) / (self.times[i + 1] - self.times[i])
                outs.append(x1 if theta == 1.0 else self.solver.interpolate(state, theta))
                gos.append(self.g_ys[k])
            got = torch.autograd.grad(outs, (xr, *self.params), gos, allow_unused=True)
        for acc, gp in zip(self.pgrads, got[1:]):
            if gp is not None:
                acc.add_(gp)
        return got[0]

    def back(self, i: int, j: int, x_i: Tensor, g_j: Tensor, d: int = 1) -> Tensor:
        # Each level of the recursion holds one state: the memory is O(depth) = O(log n).
        self.depth = max(self.depth, d)
        if j - i == 1:
            return self.leaf(i, x_i, g_j)
        mid = (i + j) // 2
        g_mid = self.back(mid, j, self.advance(i, mid, x_i), g_j, d + 1)
        return self.back(i, mid, x_i, g_mid, d + 1)


class SeminormController(PIDController):
    """A controller whose error norm sees only the first ``n_state`` components of the state: the
    augmented backward system's ``[y, a]``, not the parameter-gradient integrals, which never feed
    back into the dynamics (Kidger, Chen & Lyons 2021)."""

    def __init__(self, rtol: float, atol: float, norm: str, n_state: int) -> None:
        super().__init__(rtol, atol, norm=norm)
        self.n_state = n_state

    def error_norm(self, x0, x1, err, batched=False):
        n = self.n_state
        return super().error_norm(x0[:n], x1[:n], err[:n], batched)


class _AugmentedField:
    """``[y, a, g] -> [f, -a^T df/dy, -a^T df/dtheta]`` on the flat augmented state. When the
    augmented state itself requires grad (an implicit solver taking its Jacobian) the vector-Jacobian
    products are built with a graph."""

    def __init__(self, field: Callable, shape: torch.Size, params: tuple[Tensor, ...]) -> None:
        self.field, self.shape, self.params = field, shape, params
        self.n = shape.numel()
        self.sizes = [q.numel() for q in params]

    def __call__(self, t: Any, z: Tensor) -> Tensor:
        n = self.n
        differentiate = z.requires_grad and torch.is_grad_enabled()
        with torch.enable_grad():
            x = z[:n].reshape(self.shape)
            xr = x if differentiate else x.detach().requires_grad_(True)
            a = z[n: 2 * n].reshape(self.shape)
            fx = self.field(t, xr)
            vj: tuple[Tensor | None, ...] = (None,) * (1 + len(self.params))
            if fx.requires_grad:  # else f depends on neither the state nor the parameters
                vj = torch.autograd.grad(fx, (xr, *self.params), -a, allow_unused=True,
                                         create_graph=differentiate)
        parts = [fx.reshape(-1), torch.zeros_like(a).reshape(-1) if vj[0] is None else vj[0].reshape(-1)]
        parts += [z.new_zeros(s) if v is None else v.reshape(-1).to(z.dtype)
                  for v, s in zip(vj[1:], self.sizes)]
        out = torch.cat(parts)
        return out if differentiate else out.detach()


class _Backsolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: _Run, x0: Tensor, *rest: Tensor):  # type: ignore[override]
        ctx.save_for_backward(x0)
        ctx.run = run
        return run.forward(x0)

    @staticmethod
    def backward(ctx, g_x: Tensor, g_ys: Tensor):  # type: ignore[override]
        (x0,) = ctx.saved_tensors
        run: _Run = ctx.run
        method: BacksolveAdjoint = run.method  # type: ignore[assignment]
        p, sol = run.problem, run.solution
        assert sol is not None
        n_x = x0.numel()
        aug = _AugmentedField(p.field, x0.shape, method.params)
        adds = _save_gradients(p, g_ys)
        a1 = g_x + adds.get(p.t1, 0)
        z = torch.cat([sol.x.reshape(-1), a1.reshape(-1)] +
                      [x0.new_zeros(s) for s in aug.sizes])
        actrl = _backward_controller(p.controller, method, 2 * n_x)
        back = p if method.solver is None else replace(p, solver=method.solver)
        nfe = 0
        for ta, tb in _segments(p, adds):
            bsol = back.run(z, field=aug, controller=actrl, t_span=(ta, tb), saveat=False)
            nfe += bsol.stats.nfe
            z = bsol.x
            if tb in adds and tb != p.t0:
                z = torch.cat([z[:n_x], z[n_x: 2 * n_x] + adds[tb].reshape(-1), z[2 * n_x:]])
        run.extras["backward_nfe"] = nfe
        a0 = z[n_x: 2 * n_x].reshape(x0.shape) + (adds.get(p.t0, 0) if p.t0 != p.t1 else 0)
        pg, off = [], 2 * n_x
        for q, s in zip(method.params, aug.sizes):
            pg.append(z[off: off + s].reshape(q.shape))
            off += s
        tg = run.time_gradients(a0, g_x, x0, sol.x)  # a save at t1 stays put when t1 moves
        return (None, a0, *tg, *pg)


def _save_gradients(p: ODEProblem, g_ys: Tensor) -> dict[float, Any]:
    """``dL/dy(s_k)`` summed per save time."""
    adds: dict[float, Any] = {}
    if p.saveat is not None:
        for k, s in enumerate(p.saveat.tolist()):
            adds[s] = adds.get(s, 0) + g_ys[k]
    return adds


def _segments(p: ODEProblem, adds: dict[float, Any]) -> list[tuple[float, float]]:
    """The backward segments between the save times (``t1 -> ... -> t0``)."""
    points = [p.t1]
    for s in sorted(adds, reverse=p.t1 > p.t0):
        if s != p.t1 and s != p.t0:
            points.append(s)
    points.append(p.t0)
    return [(a, b) for a, b in zip(points[:-1], points[1:]) if a != b]


def _backward_controller(forward: StepSizeController | None, method: BacksolveAdjoint,
                         n_state: int) -> StepSizeController | None:
    if forward is None:
        return None  # fixed steps: the backward solve takes the same step size
    norm = forward.norm if isinstance(forward, PIDController) else "rms"
    if method.seminorm:
        return SeminormController(method.rtol, method.atol, norm, n_state)
    return PIDController(method.rtol, method.atol, norm=norm)


__all__ = ["ADJOINTS", "AdjointMethod", "BacksolveAdjoint", "CheckpointAdjoint", "DirectAdjoint",
           "SeminormController", "adjoint_method"]

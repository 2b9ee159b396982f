"""The simplified Newton iteration for the stage equations of an implicit Runge–Kutta step
(Hairer & Wanner, *Solving ODEs II*, IV.8, "Implementation of implicit Runge–Kutta methods").

The stages ``Y`` (``(B, s, m)``: blocks, stages, unknowns per block) solve

    G(Y) = Y - base - h (C kron I) F(Y) = 0,      F(Y)_i = f(t0 + c_i h, Y_i),

(``C = A`` for a fully implicit method; ``C = [[a_ii]]`` for one stage of a diagonally implicit
one). Each iteration evaluates ``F`` once (``s`` evaluations) and solves ``(I - h C kron J) D = G``:

* ``jacobian="dense"``: ``J`` is the autograd Jacobian of ``f`` (one evaluation of ``f`` and ``m``
  reverse passes, :func:`~timestepper.solvers.rosenbrock.jacobians`), one block per sample. It is
  reused across stages and steps and recomputed only when the iteration converged slowly
  (contraction rate above ``recompute_rate``) or failed with an old ``J``; the LU factors are
  reused while the step size stays within ``[1, 1.2]`` of the factorised one (HW IV.8).
* ``jacobian="krylov"``: an inexact Newton–Krylov iteration: GMRES on the matrix-free operator
  ``V -> V - h (C kron I) [J(Y_j) V_j]``, each product one ``torch.func.jvp`` of ``f`` (one
  evaluation). Nothing is stored: ``J`` is always the current one.

Convergence (HW IV.8, eq. 8.10–8.13): with ``theta_k = |D_k| / |D_{k-1}|`` and
``eta_k = theta_k / (1 - theta_k)``, stop when ``eta_k |D_k| <= 1`` in the norm scaled by
``atol + rtol |Y|``; give up when ``theta_k >= 1``, when the rate predicts no convergence within
``max_iter`` iterations, or after ``max_iter`` iterations. The loop then rejects the step
(``err = inf``) and retries with a smaller one; ``max_failures`` consecutive failures raise
:class:`NewtonError`.

Gradients: the iteration runs without a graph; the converged stages get the gradient of the
implicit function theorem (as deep equilibrium models, Bai et al. 2019): one more evaluation of
``Phi(Y) = base + h (C kron I) F(Y)`` at the solution, with a hook that solves
``(I - dPhi/dY)^T lambda = g`` (preconditioned by the Newton matrix, or by GMRES in Krylov mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ...core.validation import check_choice, check_int, check_positive
from ..rosenbrock import jacobians
from .linear import gmres, jvp, kron_iteration_matrix

JACOBIANS = ("dense", "krylov")
KAPPA = 0.03  # Newton tolerance / integration tolerance (HW IV.8; SciPy's Radau)
FALLBACK_RTOL, FALLBACK_ATOL = 1e-8, 1e-10


class NewtonError(RuntimeError):
    """The Newton iteration of an implicit step failed repeatedly (the loop's step-size
    reduction did not help, or a fixed step cannot be reduced)."""


@dataclass(frozen=True)
class NewtonOptions:
    """Options of the stage solver (see the module docstring).

    Attributes:
        jacobian: ``"dense"`` (autograd Jacobian, LU; small states) or ``"krylov"`` (GMRES on
            Jacobian–vector products; large states).
        rtol, atol: the scale ``atol + rtol |Y|`` of the Newton increments; the iteration stops
            when the estimated remaining error is below it. ``None``: ``KAPPA`` (0.03) times the
            tolerances of the solve (``ts.solve`` passes them; as SciPy's Radau and Hairer's
            RADAU5), or ``1e-8`` and ``1e-10`` when the solver is used without them.
        max_iter: Newton iterations per stage solve.
        recompute_rate: recompute the dense Jacobian at the next step when the contraction rate
            exceeded this (``None``: the method's default, 1e-3 for Radau IIA 5 as in Hairer's
            RADAU5, whose error estimate needs a current ``J``; 0.05 otherwise).
        max_failures: consecutive failed steps before :class:`NewtonError`.
        krylov_rtol, krylov_max_iter: GMRES's relative residual and iteration bound.
    """

    jacobian: str = "dense"
    rtol: float | None = None
    atol: float | None = None
    max_iter: int = 10
    recompute_rate: float | None = None
    max_failures: int = 10
    krylov_rtol: float = 1e-6
    krylov_max_iter: int = 100

    def __post_init__(self) -> None:
        check_choice(self.jacobian, JACOBIANS, "jacobian")
        for name in ("rtol", "atol", "krylov_rtol"):
            if getattr(self, name) is not None:
                check_positive(getattr(self, name), f"newton {name}")
        if self.recompute_rate is not None:
            check_positive(self.recompute_rate, "newton recompute_rate")
        check_int(self.max_iter, "newton max_iter", 1)
        check_int(self.max_failures, "newton max_failures", 1)
        check_int(self.krylov_max_iter, "krylov_max_iter", 1)


def new_counters() -> dict[str, int]:
    return {"jacobians": 0, "factorizations": 0, "newton_iterations": 0, "jvps": 0,
            "newton_failures": 0}


@dataclass
class Workspace:
    """What the Newton iteration carries from step to step, including across rejected attempts
    (a Jacobian computed in a rejected attempt is still the Jacobian at the same point): the
    dense Jacobian and where it was taken, the cached LU factors, the last contraction rate and
    ``eta``, the count of consecutive failures, the start of the last attempt (a shared step that
    starts there again follows a rejection) and the counters of the solve."""

    fixed: bool = False
    jac: Tensor | None = None
    jac_x: Tensor | None = None
    jac_version: int = 0
    recompute: bool = False
    lus: dict[Any, tuple[Any, int, Tensor, Tensor]] = field(default_factory=dict)
    eta: float = 1.0
    theta: float = 0.0
    failures: int = 0
    double_vjp: bool = False
    last_t0: float | None = None
    retry: bool = False
    counters: dict[str, int] = field(default_factory=new_counters)


@dataclass
class StageSystem:
    """One stage solve: ``G(Y) = Y - base - h (C kron I) F(Y)`` (see the module docstring)."""

    term: Any
    x: Tensor
    times: tuple[Any, ...]
    h: float | Tensor
    coef: tuple[tuple[float, ...], ...]
    base: Tensor
    blocks: int

    def __post_init__(self) -> None:
        self.coef_t = torch.tensor(self.coef, dtype=self.x.dtype, device=self.x.device)
        h = self.h
        self.hb = h.reshape(-1, 1, 1).to(self.x.dtype) if isinstance(h, Tensor) else h

    @property
    def stages(self) -> int:
        return len(self.coef)

    def stage_field(self, i: int):
        """``y -> f(t_i, y)`` on ``(B, m)`` blocks."""
        t, shape, b = self.times[i], self.x.shape, self.blocks
        return lambda y: self.term.vf(t, y.reshape(shape)).reshape(b, -1)

    def evaluate(self, y: Tensor) -> Tensor:
        """``F(Y)``: ``s`` evaluations."""
        return torch.stack([self.stage_field(i)(y[:, i]) for i in range(self.stages)], dim=1)

    def phi(self, fy: Tensor) -> Tensor:
        """``base + h (C kron I) F``."""
        return self.base + self.hb * torch.einsum("ij,bjm->bim", self.coef_t, fy)


def scaled_norm(d: Tensor, y: Tensor, opts: NewtonOptions) -> Tensor:
    """RMS of ``d / (atol + rtol |y|)`` per block: ``(B,)``; ``rtol`` is at least ten rounding
    units of the dtype (a float32 state cannot be resolved below that; as SciPy's Radau)."""
    assert opts.atol is not None and opts.rtol is not None  # resolved by the solver
    rtol = max(opts.rtol, 10 * torch.finfo(y.dtype).eps)
    r = d / (opts.atol + rtol * y.abs())
    return torch.linalg.vector_norm(r.reshape(r.shape[0], -1), dim=1) / math.sqrt(r[0].numel())


# -- linear solvers ------------------------------------------------------------------------------

class DenseLinear:
    """The dense path: the autograd Jacobian, reused, and LU factors of ``I - h C kron J``."""

    def __init__(self, opts: NewtonOptions) -> None:
        self.opts = opts

    def begin_step(self, ws: Workspace, term: Any, t0: Any, x: Tensor, blocks: int) -> int:
        """Make sure a Jacobian is available; returns the evaluations made (1 when computed)."""
        if ws.jac is not None and not ws.recompute:
            return 0
        return self.compute_jacobian(ws, term, t0, x, blocks)

    def compute_jacobian(self, ws: Workspace, term: Any, t0: Any, x: Tensor, blocks: int) -> int:
        t = t0 if blocks > 1 or not isinstance(t0, Tensor) else t0.reshape(-1)[0]
        jac, _ = jacobians(term, t, x)
        ws.jac, ws.jac_x, ws.recompute = jac, x, False
        ws.jac_version += 1
        ws.counters["jacobians"] += 1
        return 1

    def factors(self, ws: Workspace, coef: tuple, h: float | Tensor) -> tuple[Tensor, Tensor]:
        """LU of ``I - h C kron J``, reused while ``h`` stays within ``[1, 1.2]`` of the
        factorised step and ``J`` is unchanged (a shared step; per-sample steps refactorise)."""
        assert ws.jac is not None
        cached = ws.lus.get(coef)
        if cached is not None and cached[1] == ws.jac_version and not isinstance(h, Tensor) \
                and not isinstance(cached[0], Tensor) and 1.0 - 1e-9 <= h / cached[0] <= 1.2:
            return cached[2], cached[3]
        coef_t = torch.tensor(coef, dtype=ws.jac.dtype, device=ws.jac.device)
        lu, piv = torch.linalg.lu_factor(kron_iteration_matrix(coef_t, h, ws.jac))
        ws.lus[coef] = (h, ws.jac_version, lu, piv)
        ws.counters["factorizations"] += 1
        return lu, piv

    def solve(self, ws: Workspace, sys: StageSystem, y: Tensor, g: Tensor) -> tuple[Tensor, int]:
        lu, piv = self.factors(ws, sys.coef, sys.h)
        b = g.shape[0]
        return torch.linalg.lu_solve(lu, piv, g.reshape(b, -1, 1)).reshape(g.shape), 0

    def adjoint_solver(self, ws: Workspace, sys: StageSystem):
        """``r -> (I - h C kron J)^-T r``: the preconditioner of the gradient's linear solve."""
        lu, piv = self.factors(ws, sys.coef, sys.h)

        def solve_t(r: Tensor) -> Tensor:
            return torch.linalg.lu_solve(lu, piv, r.reshape(r.shape[0], -1, 1), adjoint=True).reshape(r.shape)

        return solve_t


class KrylovLinear:
    """The matrix-free path: GMRES on Jacobian–vector products at the current iterate."""

    def __init__(self, opts: NewtonOptions) -> None:
        self.opts = opts

    def begin_step(self, ws: Workspace, term: Any, t0: Any, x: Tensor, blocks: int) -> int:
        return 0

    def operator(self, ws: Workspace, sys: StageSystem, y: Tensor):
        """``V -> V - h (C kron I) [J(Y_j) V_j]`` on flat ``(B, s m)`` vectors; the number of
        evaluations per product."""
        s, b = sys.stages, sys.blocks
        used = [j for j in range(s) if any(sys.coef[i][j] != 0.0 for i in range(s))]

        def matvec(v: Tensor) -> Tensor:
            vs = v.reshape(b, s, -1)
            jv = torch.zeros_like(vs)
            for j in used:
                jv[:, j] = self._jvp(ws, sys.stage_field(j), y[:, j], vs[:, j])
            return (vs - sys.hb * torch.einsum("ij,bjm->bim", sys.coef_t, jv)).reshape(b, -1)

        return matvec, len(used)

    def _jvp(self, ws: Workspace, fn, y: Tensor, v: Tensor) -> Tensor:
        ws.counters["jvps"] += 1
        if not ws.double_vjp:
            try:
                return jvp(fn, y, v, False)
            except RuntimeError:
                ws.double_vjp = True  # the field differentiates itself: use two reverse passes
        return jvp(fn, y, v, True)

    def solve(self, ws: Workspace, sys: StageSystem, y: Tensor, g: Tensor) -> tuple[Tensor, int]:
        matvec, per = self.operator(ws, sys, y)
        d, used = gmres(matvec, g.reshape(g.shape[0], -1), self.opts.krylov_rtol, self.opts.krylov_max_iter)
        return d.reshape(g.shape), used * per

    def adjoint_solver(self, ws: Workspace, sys: StageSystem):
        return None


def linear_solver(opts: NewtonOptions) -> DenseLinear | KrylovLinear:
    return DenseLinear(opts) if opts.jacobian == "dense" else KrylovLinear(opts)


# -- the iteration ---------------------------------------------------------------------------------

@dataclass
class NewtonResult:
    """The stages, which blocks converged (``(B,)`` bool), and the evaluations made."""

    y: Tensor
    ok: Tensor
    nfe: int


def _needs_graph(sys: StageSystem, fy: Tensor) -> bool:
    return torch.is_grad_enabled() and (sys.base.requires_grad or fy.requires_grad
                                        or (isinstance(sys.h, Tensor) and sys.h.requires_grad))


def newton_solve(sys: StageSystem, guess: Tensor, lin: DenseLinear | KrylovLinear, ws: Workspace,
                 opts: NewtonOptions) -> NewtonResult:
    """Solve ``G(Y) = 0`` from ``guess`` (see the module docstring); differentiable in ``base``
    and in the parameters of ``f`` through the implicit function theorem."""
    y = guess.detach()
    base = sys.base
    fy = sys.evaluate(y)
    graph = _needs_graph(sys, fy)
    sys_d = StageSystem(sys.term, sys.x, sys.times, sys.h, sys.coef, base.detach(), sys.blocks)
    nfe = sys.stages
    with torch.no_grad():
        y, ok, n = _iterate(sys_d, y, fy.detach(), lin, ws, opts)
    nfe += n
    if graph:  # blocks that failed restart from the guess (finite); their step is rejected
        y = torch.where(ok.reshape(-1, *([1] * (y.ndim - 1))), y, guess.detach())
        y = _attach_gradient(sys, y, lin.adjoint_solver(ws, sys), lin, ws)
        nfe += sys.stages
    return NewtonResult(y, ok, nfe)


def _iterate(sys: StageSystem, y: Tensor, fy: Tensor, lin, ws: Workspace, opts: NewtonOptions):
    """The iteration proper (no graph): returns the stages, the converged blocks and the
    evaluations made after the first residual."""
    b = y.shape[0]
    active = torch.ones(b, dtype=torch.bool, device=y.device)
    ok = torch.zeros_like(active)
    prev: Tensor | None = None
    eta = y.new_full((b,), ws.eta)  # the last rate's eta (HW: relaxed once per step)
    nfe, theta_max = 0, 0.0
    for k in range(opts.max_iter):
        if k > 0:
            fy = sys.evaluate(y)
            nfe += sys.stages
        g = y - sys.phi(fy)
        d, n_lin = lin.solve(ws, sys, y, g)
        nfe += n_lin
        ws.counters["newton_iterations"] += 1
        dn = scaled_norm(d, y, opts)
        bad = ~torch.isfinite(dn)
        if prev is not None:
            theta = dn / prev.clamp_min(1e-300)
            eta = theta / (1 - theta).clamp_min(1e-300)
            slow = theta.pow(opts.max_iter - 1 - k) / (1 - theta).clamp_min(1e-300) * dn > 1.0
            bad = bad | (theta >= 1.0) | slow
            theta_max = max(theta_max, float(torch.where(active, theta, 0.0).max()))
        mask = active.reshape(-1, *([1] * (y.ndim - 1)))
        y = torch.where(mask, y - d, y)
        conv = active & ~bad & (eta * dn <= 1.0)
        ok = ok | conv
        active = active & ~conv & ~bad
        prev = dn
        if not bool(active.any()):
            break
    ws.theta = max(ws.theta, theta_max)  # the slowest stage solve of the step
    ws.eta = float(eta.max()) if bool(torch.isfinite(eta).all()) else 1.0
    return y, ok, nfe


def _attach_gradient(sys: StageSystem, y: Tensor, precond_t, lin, ws: Workspace) -> Tensor:
    """The converged stages with the implicit-function gradient (one more evaluation of ``F``)."""
    with torch.enable_grad():
        leaf = y.detach().requires_grad_(True)
        phi = sys.phi(sys.evaluate(leaf))
    out = y.detach() + (phi - phi.detach())

    def vjp(v: Tensor) -> Tensor:
        (g,) = torch.autograd.grad(phi, leaf, v, retain_graph=True)
        return g

    def hook(g: Tensor) -> Tensor:
        return adjoint_solve(g, vjp, precond_t, lin.opts)

    out.register_hook(hook)
    return out


def adjoint_solve(g: Tensor, vjp, precond_t, opts: NewtonOptions, max_iter: int = 50) -> Tensor:
    """``lambda`` with ``lambda - (dPhi/dY)^T lambda = g``: preconditioned Richardson iteration
    with the transposed Newton matrix (dense), or GMRES on the transposed operator (Krylov)."""
    b = g.shape[0]
    if precond_t is None:
        def matvec(v: Tensor) -> Tensor:
            vv = v.reshape(g.shape)
            return (vv - vjp(vv)).reshape(b, -1)

        lam, _ = gmres(matvec, g.reshape(b, -1), 1e-12, max(opts.krylov_max_iter, 200))
        return lam.reshape(g.shape)
    lam = precond_t(g)
    scale = float(g.abs().max()) or 1.0
    for _ in range(max_iter):
        r = g - lam + vjp(lam)
        if float(r.abs().max()) <= 1e-13 * scale:
            break
        lam = lam + precond_t(r)
    return lam


__all__ = ["JACOBIANS", "DenseLinear", "KrylovLinear", "NewtonError", "NewtonOptions", "NewtonResult",
           "StageSystem", "Workspace", "linear_solver", "newton_solve"]

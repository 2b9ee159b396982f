"""Memory-saving gradients of an ODE solve: recursive checkpointing and the continuous adjoint.

* ``"checkpoint"``: the forward solve runs without a graph and records its accepted step times.
  The backward pass replays the steps with recursive bisection: to differentiate steps
  ``[i, j)`` it recomputes the state at the midpoint without a graph, differentiates the right
  half, then the left half. At most ``O(log n)`` states are held and each step is recomputed
  ``O(log n)`` times (the recursive schedule of Griewank & Walther 2000, "Algorithm 799:
  revolve", in its simplest bisection form). The gradient equals direct backpropagation through
  the same steps (the discretise-then-optimise gradient; Kidger 2021, "On Neural Differential
  Equations", sec. 5.1).
* ``"backsolve"``: the continuous adjoint (Chen et al. 2018, "Neural Ordinary Differential
  Equations", Algorithm 1): the augmented system ``[y, a, g]`` with ``dy/dt = f``,
  ``da/dt = -a^T df/dy``, ``dg/dt = -a^T df/dtheta`` is solved backwards from ``t1`` with its
  own tolerances; ``dL/dt1 = a(t1) . f(t1, y1)`` and ``dL/dt0 = -a(t0) . f(t0, y0)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.controllers import PIDController
from ..core.solution import Solution, Stats
from ..core.terms import ODETerm
from ..solvers.rk import RKState


def adjoint_solve(mode, field, slv, ctrl, x0, t0, t1, st, dt, opts, params, artol, aatol,
                  t0_in, t1_in, seminorm: bool = True) -> Solution:
    """Run the forward solve under a custom autograd function for ``mode``."""
    from .solve import _direct

    box: dict = {"seminorm": seminorm}
    t_in = tuple(t for t in (t0_in, t1_in) if isinstance(t, Tensor))
    fn = _Checkpoint if mode == "checkpoint" else _Backsolve
    x_final, ys = fn.apply(box, (field, slv, ctrl, t0, t1, st, dt, opts, params, artol, aatol,
                                 t0_in, t1_in, _direct), x0, *t_in, *params)
    sol = box["sol"]
    return Solution(x=x_final, ts=sol.ts, ys=ys if st is not None else None, stats=sol.stats,
                    extras=sol.extras)


def _forward(ctx, box, cfg, x0):
    field, slv, ctrl, t0, t1, st, dt, opts, _params, _r, _a, _t0, _t1, direct = cfg
    with torch.no_grad():
        sol = direct(field, slv, ctrl, x0.detach(), t0, t1, st, dt, opts)
    box["sol"] = sol
    ctx.cfg, ctx.sol = cfg, sol
    ys = sol.ys if sol.ys is not None else x0.new_zeros((0,) + tuple(x0.shape))
    return sol.x, ys


def _grads_t(ctx, field, a0, a1, x0, x1, t0, t1):
    _, _, _, _, _, _, _, _, _, _, _, t0_in, t1_in, _ = ctx.cfg
    out = []
    with torch.no_grad():
        if isinstance(t0_in, Tensor):
            out.append((-(a0 * field(t0, x0)).sum()).to(t0_in.dtype).reshape(t0_in.shape))
        if isinstance(t1_in, Tensor):
            out.append(((a1 * field(t1, x1)).sum()).to(t1_in.dtype).reshape(t1_in.shape))
    return out


class _Checkpoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, box, cfg, x0, *rest):
        ctx.save_for_backward(x0)
        return _forward(ctx, box, cfg, x0)

    @staticmethod
    def backward(ctx, g_x, g_ys):
        (x0,) = ctx.saved_tensors
        field, slv, _c, t0, t1, st, _dt, _o, params, _r, _a, t0_in, t1_in, _d = ctx.cfg
        times = ctx.sol.extras["step_ts"].tolist()
        n = len(times) - 1
        term = ODETerm(field)
        # Save times -> the step that contains them (-1: the initial time itself).
        saves: dict[int, list[tuple[int, float]]] = {}
        if st is not None:
            for k, s in enumerate(st.tolist()):
                j = next((i for i in range(n) if (s - times[i]) * (s - times[i + 1]) <= 0
                          and s != times[i]), -1)
                saves.setdefault(j, []).append((k, s))
        pgrads = [torch.zeros_like(p) for p in params]

        def step(i, x, state=None):
            return slv.step(term, times[i], times[i + 1], x, RKState() if state is None else state)

        def advance(i, j, x):
            with torch.no_grad():
                for k in range(i, j):
                    x = step(k, x)[0]
            return x

        def leaf(i, x, g_out):
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                x1, state, _ = step(i, xr)
                outs, gos = [x1], [g_out]
                for k, s in saves.get(i, []):
                    theta = (s - times[i]) / (times[i + 1] - times[i])
                    outs.append(x1 if theta == 1.0 else slv.interpolate(state, theta))
                    gos.append(g_ys[k])
                got = torch.autograd.grad(outs, (xr, *params), gos, allow_unused=True)
            for acc, gp in zip(pgrads, got[1:]):
                if gp is not None:
                    acc.add_(gp)
            return got[0]

        depth = [0]

        def back(i, j, x_i, g_j, d=1):
            # Each level of the recursion holds one state: the memory is O(depth) = O(log n).
            depth[0] = max(depth[0], d)
            if j - i == 1:
                return leaf(i, x_i, g_j)
            mid = (i + j) // 2
            g_mid = back(mid, j, advance(i, mid, x_i), g_j, d + 1)
            return back(i, mid, x_i, g_mid, d + 1)

        g = back(0, n, x0.detach(), g_x) if n > 0 else g_x
        ctx.sol.extras["checkpoint_depth"] = depth[0]
        for k, _s in saves.get(-1, []):
            g = g + g_ys[k]
        tg = _grads_t(ctx, field, g, g_x, x0, ctx.sol.x, t0, t1)
        return (None, None, g, *tg, *pgrads)


class _Seminorm(PIDController):
    """A controller whose error norm ignores the parameter-gradient part of the augmented state
    (Kidger, Chen & Lyons 2021, "'Hey, that's not an ODE': faster ODE adjoints via seminorms"):
    those components are integrals that never feed back into the dynamics."""

    def __init__(self, rtol: float, atol: float, norm: str, n_state: int) -> None:
        super().__init__(rtol, atol, norm=norm)
        self.n = n_state

    def error_norm(self, x0, x1, err, batched=False):
        return super().error_norm(x0[: self.n], x1[: self.n], err[: self.n], batched)


class _Backsolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, box, cfg, x0, *rest):
        ctx.save_for_backward(x0)
        ctx.seminorm = box.get("seminorm", True)
        return _forward(ctx, box, cfg, x0)

    @staticmethod
    def backward(ctx, g_x, g_ys):
        (x0,) = ctx.saved_tensors
        field, slv, ctrl, t0, t1, st, dt, opts, params, artol, aatol, *_ = ctx.cfg
        seminorm = ctx.seminorm
        n_x = x0.numel()
        shapes = [p.shape for p in params]
        sizes = [p.numel() for p in params]

        def aug(t, z):
            x = z[:n_x].reshape(x0.shape)
            a = z[n_x: 2 * n_x].reshape(x0.shape)
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                fx = field(t, xr)
                vj = torch.autograd.grad(fx, (xr, *params), -a, allow_unused=True)
            parts = [fx.reshape(-1), vj[0].reshape(-1)]
            parts += [(torch.zeros(s, dtype=z.dtype) if v is None else v.reshape(-1).to(z.dtype))
                      for v, s in zip(vj[1:], sizes)]
            return torch.cat(parts)

        # Backward segments between the save times (and t1 -> t0), adding dL/dy(s_k) on arrival.
        points = [t1]
        adds: dict[float, Tensor] = {}
        if st is not None:
            for k, s in enumerate(st.tolist()):
                adds[s] = adds.get(s, 0) + g_ys[k]
        for s in sorted(adds, reverse=t1 > t0):
            if s != t1 and s != t0:
                points.append(s)
        points.append(t0)
        x1 = ctx.sol.x
        a = g_x + adds.get(t1, 0)
        a1 = a
        z = torch.cat([x1.reshape(-1), a.reshape(-1)] +
                      [torch.zeros(s, dtype=x0.dtype, device=x0.device) for s in sizes])
        term = ODETerm(aug)
        from .solve import _direct

        actrl = None
        if ctrl is not None:
            actrl = (_Seminorm(artol, aatol, ctrl.norm, 2 * n_x) if seminorm
                     else PIDController(artol, aatol, norm=ctrl.norm))
        nfe = 0
        for ta, tb in zip(points[:-1], points[1:]):
            if ta == tb:
                continue
            sol = _direct(aug, slv, actrl, z, ta, tb, None, dt, opts)
            nfe += sol.stats.nfe
            z = sol.x
            if tb in adds and tb != t0:
                z = torch.cat([z[:n_x], z[n_x: 2 * n_x] + adds[tb].reshape(-1), z[2 * n_x:]])
        ctx.sol.extras["backward_nfe"] = nfe
        del term
        a0 = z[n_x: 2 * n_x].reshape(x0.shape) + (adds.get(t0, 0) if t0 != t1 else 0)
        pg, off = [], 2 * n_x
        for shp, s in zip(shapes, sizes):
            pg.append(z[off: off + s].reshape(shp))
            off += s
        tg = _grads_t(ctx, field, a0, a1, x0, x1, t0, t1)
        return (None, None, a0, *tg, *pg)


__all__ = ["Stats", "adjoint_solve"]

"""The linear algebra of the Newton iteration: a batched GMRES and the Jacobian–vector products
it runs on, and the Kronecker-structured iteration matrix of the dense path.

Vectors are ``(B, n)``: ``B`` independent blocks (one per sample in per-sample mode, one for a
shared step) of ``n`` unknowns each. GMRES (Saad & Schultz 1986) runs the Arnoldi process on
every block at once, with one inner product per block, and stops when every block's residual is
below ``rtol`` times its right-hand side (one host read per iteration).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def gmres(matvec: Callable[[Tensor], Tensor], rhs: Tensor, rtol: float, max_iter: int) -> tuple[Tensor, int]:
    """Solve ``A x = rhs`` for ``(B, n)`` blocks (``A`` block diagonal, applied by ``matvec``),
    from ``x = 0``, without restarts. The Arnoldi basis is orthogonalised by classical
    Gram–Schmidt applied twice (two matrix products per iteration; as stable as modified
    Gram–Schmidt, Giraud et al. 2005). Returns the solution and the number of products made."""
    beta = torch.linalg.vector_norm(rhs, dim=1)
    if not bool((beta > 0).any()):
        return torch.zeros_like(rhs), 0
    b, n = rhs.shape
    steps = min(max_iter, n)
    tiny = torch.finfo(rhs.dtype).tiny
    basis = rhs.new_zeros((b, steps + 1, n))
    basis[:, 0] = rhs / beta.clamp_min(tiny)[:, None]
    hess = rhs.new_zeros((b, steps + 1, steps))
    e1 = rhs.new_zeros((b, steps + 1, 1))
    e1[:, 0, 0] = beta
    y = rhs.new_zeros((b, 0, 1))
    used = 0
    for j in range(steps):
        w = matvec(basis[:, j])
        used += 1
        v = basis[:, : j + 1]
        hj = torch.einsum("bkn,bn->bk", v, w)
        w = w - torch.einsum("bk,bkn->bn", hj, v)
        h2 = torch.einsum("bkn,bn->bk", v, w)  # the second pass
        w = w - torch.einsum("bk,bkn->bn", h2, v)
        hess[:, : j + 1, j] = hj + h2
        hn = torch.linalg.vector_norm(w, dim=1)
        # a block whose Krylov space is exhausted (breakdown: its solution is exact) gets a zero
        # direction, so that its least-squares problem ignores the further columns
        live = hn > 1e-13 * beta
        hn = torch.where(live, hn, 0.0)
        hess[:, j + 1, j] = hn
        basis[:, j + 1] = torch.where(live[:, None], w / hn.clamp_min(tiny)[:, None], 0.0)
        h = hess[:, : j + 2, : j + 1]
        # the small least-squares problem on the CPU (LAPACK's gelsy handles the rank deficiency
        # of a block that broke down; the CUDA driver does not)
        y = torch.linalg.lstsq(h.cpu(), e1[:, : j + 2].cpu()).solution.to(rhs.device)
        res = torch.linalg.vector_norm(h @ y - e1[:, : j + 2], dim=(1, 2))
        if bool((res <= rtol * beta).all()):
            break
    return torch.einsum("bk,bkn->bn", y[:, :, 0], basis[:, : y.shape[1]]), used


def jvp(fn: Callable[[Tensor], Tensor], x: Tensor, v: Tensor, double_vjp: bool) -> Tensor:
    """``J(x) v`` of ``fn`` by forward-mode AD (``torch.func.jvp``: one call of ``fn``).

    ``double_vjp`` computes it instead from two reverse passes through one call
    (``J v = d/du (J^T u . v)``), for fields that call ``torch.autograd.grad`` themselves (the
    augmented field of the backsolve adjoint), which forward-mode AD cannot trace."""
    if not double_vjp:
        return torch.func.jvp(fn, (x.detach(),), (v,))[1]
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        fx = fn(xr)
        u = torch.zeros_like(fx, requires_grad=True)
        (g,) = torch.autograd.grad(fx, xr, u, create_graph=True)
        (out,) = torch.autograd.grad(g, u, v)
    return out.detach()


def kron_iteration_matrix(coef: Tensor, h: float | Tensor, jac: Tensor) -> Tensor:
    """``I - h (C kron J_b)`` for every block ``b``: ``(B, s m, s m)`` from the ``(s, s)`` stage
    coefficients ``C``, the step (a float or ``(B,)``) and ``(B, m, m)`` Jacobians."""
    b, m, _ = jac.shape
    s = coef.shape[0]
    k = torch.einsum("ij,bpq->bipjq", coef.to(jac.dtype), jac).reshape(b, s * m, s * m)
    hb = h.reshape(-1, 1, 1).to(jac.dtype) if isinstance(h, Tensor) else h
    return torch.eye(s * m, dtype=jac.dtype, device=jac.device) - hb * k


__all__ = ["gmres", "jvp", "kron_iteration_matrix"]

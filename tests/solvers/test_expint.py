"""The coefficient helpers every multistep diffusion solver builds its table with, against exact
rational arithmetic (their fast paths for 2 and 3 nodes included)."""

from fractions import Fraction

import pytest
import torch

import timestepper as ts
from timestepper.solvers.expint import combine, polynomial_basis, solve_small


def _exact_inverse_vandermonde(nodes):
    """``B[k][j]``: the monomial coefficients of the Lagrange basis polynomial ``L_j``, exactly."""
    u = [Fraction(v) for v in nodes]
    cols = []
    for j, uj in enumerate(u):
        poly = [Fraction(1)]
        for m, um in enumerate(u):
            if m != j:
                poly = [(poly[k - 1] if k else 0) - um * (poly[k] if k < len(poly) else 0)
                        for k in range(len(poly) + 1)]
                poly = [c / (uj - um) for c in poly]
        cols.append(poly)
    return [[cols[j][k] for j in range(len(u))] for k in range(len(u))]


@pytest.mark.parametrize("nodes", [[0.0], [0.0, -1.0], [0.0, -0.7, -1.9], [1.0, 0.0, -0.4],
                                   [0.0, -1.0, -2.5, -3.1], [0.2, -0.5, 1.5, -2.0, 3.0]])
def test_polynomial_basis_is_the_inverse_vandermonde_matrix(nodes):
    basis = polynomial_basis(nodes)
    exact = _exact_inverse_vandermonde(nodes)
    for row, ref in zip(basis, exact):
        assert row == pytest.approx([float(v) for v in ref], rel=1e-13, abs=1e-13)
    coeffs = [0.3, -1.2, 0.8, 2.0, -0.1][: len(nodes)]
    values = [sum(c * u**k for k, c in enumerate(coeffs)) for u in nodes]  # p(u) at the nodes
    # a_k = sum_j B[k][j] p(u_j) recovers the coefficients; combine applies B^T to given coefficients
    assert [sum(b * v for b, v in zip(row, values)) for row in basis] == pytest.approx(coeffs, abs=1e-12)
    w = combine(coeffs, basis)
    assert w == pytest.approx([sum(c * float(exact[k][j]) for k, c in enumerate(coeffs))
                               for j in range(len(nodes))], rel=1e-12, abs=1e-13)


def test_solve_small_pivots_and_refuses_singular_systems():
    a = [[1e-14, 1.0, 2.0], [1.0, 1.0, 1.0], [2.0, -1.0, 0.5]]
    b = [1.0, 2.0, 3.0]
    ref = torch.linalg.solve(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    assert solve_small(a, b) == pytest.approx(ref.tolist(), rel=1e-12)
    with pytest.raises(ZeroDivisionError, match="singular system"):
        solve_small([[1.0, 1.0], [1.0, 1.0]], [1.0, 2.0])


def test_multistep_weights_are_cached_per_grid_and_configuration():
    """The float64 weights are built once per grid and solver configuration: a second solve on
    the same grid reuses them, and a solver configured otherwise gets its own."""
    from timestepper.solvers.dpmpp import DPMSolverMultistep

    sched = ts.VPDiscreteSchedule.from_betas("linear")
    grid = ts.make_grid(sched, 8, "karras")
    a, a2 = DPMSolverMultistep(order=3), DPMSolverMultistep(order=3)
    b = DPMSolverMultistep(order=3, lower_order_final=False)
    rows = a.grid_weights(grid)
    assert a2.grid_weights(grid) is rows  # same configuration: the cached list
    other = b.grid_weights(grid)
    assert other is not rows and other[-2] != rows[-2]  # the step before the last: order 3, not 2
    fresh = ts.make_grid(sched, 8, "karras")
    assert a.grid_weights(fresh) == rows and a.grid_weights(fresh) is not rows

"""SDE solvers: strong order on geometric Brownian motion on a shared Brownian path, the
Brownian tree's consistency, reversibility of reversible Heun, and parity with torchsde."""

import math

import pytest
import torch

from timestepper.ode import SDETerm, VirtualBrownianTree, sdeint
from timestepper.solvers import get

MU, SIG, T = 0.5, 0.8, 1.0


def strong_errors(solver, stratonovich, levels=(16, 32, 64)):
    n_paths = 2000
    bm = VirtualBrownianTree(0.0, T, (n_paths,), seed=3, dtype=torch.float64, tol=1e-4)
    x0 = torch.ones(n_paths, dtype=torch.float64)
    # GBM: Ito exact exp((mu - sig^2/2) T + sig W_T); Stratonovich exact exp(mu T + sig W_T).
    exact = torch.exp((MU - (0.0 if stratonovich else 0.5) * SIG**2) * T + SIG * bm(0.0, T))
    errs = []
    for n in levels:
        sol = sdeint(lambda t, x: MU * x, lambda t, x: SIG * x, x0, [0.0, T], solver=solver,
                     dt=T / n, bm=bm)
        errs.append(float((sol.x - exact).abs().mean()))
    return errs


@pytest.mark.parametrize("solver,strat,order", [
    ("sde-euler", False, 0.5),
    ("milstein", False, 1.0),
    # Scalar (hence commutative) noise: reversible Heun reaches order 1 here.
    ("reversible-heun", True, 1.0),
])
def test_strong_order_gbm(solver, strat, order):
    errs = strong_errors(solver, strat)
    slope = math.log2(errs[0] / errs[-1]) / (len(errs) - 1)
    assert abs(slope - order) < 0.3, (solver, errs, slope)


def test_brownian_tree_is_reproducible_and_additive():
    bm = VirtualBrownianTree(0.0, 1.0, (3,), seed=7, dtype=torch.float64)
    a = bm(0.2, 0.7)
    again = VirtualBrownianTree(0.0, 1.0, (3,), seed=7, dtype=torch.float64)(0.2, 0.7)
    assert torch.equal(a, again)
    assert torch.allclose(bm(0.2, 0.45) + bm(0.45, 0.7), a, atol=1e-12)
    assert not torch.equal(VirtualBrownianTree(0.0, 1.0, (3,), seed=8)(0.2, 0.7), a.float())


def test_brownian_tree_statistics():
    bm = VirtualBrownianTree(0.0, 1.0, (20000,), seed=1, dtype=torch.float64)
    d1, d2 = bm(0.1, 0.35), bm(0.35, 0.9)
    assert abs(float(d1.var()) - 0.25) < 0.02 and abs(float(d2.var()) - 0.55) < 0.03
    assert abs(float((d1 * d2).mean())) < 0.01


def test_reversible_heun_reverses_exactly():
    bm = VirtualBrownianTree(0.0, 1.0, (4,), seed=2, dtype=torch.float64)
    term = SDETerm(lambda t, x: torch.sin(x), lambda t, x: 0.3 * torch.cos(x), bm,
                   sde_type="stratonovich")
    solver = get("reversible-heun")
    grid = torch.linspace(0, 1, 21, dtype=torch.float64)
    x0 = torch.tensor([0.1, -0.5, 1.0, 2.0], dtype=torch.float64)
    state, _ = solver.init(term, grid, x0)
    x, states = x0, []
    for a, b in zip(grid[:-1].tolist(), grid[1:].tolist()):
        x, state, _, _ = solver.step(term, a, b, x, state, None)
    for a, b in reversed(list(zip(grid[:-1].tolist(), grid[1:].tolist()))):
        x, state = solver.reverse_step(term, a, b, x, state)
    assert float((x - x0).abs().max()) < 1e-12
    del states


def test_wrong_calculus_is_an_error():
    with pytest.raises(ValueError, match="stratonovich"):
        sdeint(lambda t, x: x, lambda t, x: x, torch.ones(2), [0.0, 1.0],
               solver="reversible-heun", sde_type="ito")


torchsde = pytest.importorskip("torchsde")


class _GBM(torch.nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def f(self, t, y):
        return MU * y - 0.1 * y**2

    def g(self, t, y):
        return SIG * torch.sin(y)


@pytest.mark.parametrize("method,ours", [("euler", "sde-euler"), ("milstein", "milstein")])
def test_parity_torchsde(method, ours):
    sde = _GBM()
    y0 = torch.full((8, 2), 0.7, dtype=torch.float64)
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(8, 2), dtype=torch.float64,
                                   entropy=5, levy_area_approximation="none")
    ref = torchsde.sdeint(sde, y0, ts, bm=bm, method=method, dt=0.01)
    sol = sdeint(sde.f, sde.g, y0, ts, solver=ours, dt=0.01, bm=bm)
    assert float((sol.ys - ref.detach()).abs().max()) < 1e-6


def test_reversible_adjoint_matches_direct_backprop():
    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 2).double()
    sig = torch.tensor([0.3, 0.2], dtype=torch.float64, requires_grad=True)

    def drift(t, x):
        return torch.tanh(lin(x))

    def diffusion(t, x):
        return sig * torch.cos(x)

    y0 = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64)
    bm = VirtualBrownianTree(0.0, 1.0, (2, 2), seed=4, dtype=torch.float64)
    params = (lin.weight, lin.bias, sig)
    grads = []
    for adjoint in ("direct", "reversible"):
        x0 = y0.clone().requires_grad_(True)
        sol = sdeint(drift, diffusion, x0, [0.0, 0.5, 1.0], solver="reversible-heun", dt=0.05,
                     bm=bm, adjoint=adjoint, adjoint_params=params)
        loss = sol.ys.pow(2).sum()
        grads.append(torch.autograd.grad(loss, (x0, *params)))
    for a, b in zip(*grads):
        assert float((a - b).abs().max()) < 1e-10


def test_general_noise_matches_diagonal_when_diffusion_is_diagonal():
    bm = VirtualBrownianTree(0.0, 1.0, (5, 2), seed=9, dtype=torch.float64)
    y0 = torch.full((5, 2), 0.5, dtype=torch.float64)

    def drift(t, x):
        return -x

    diag = sdeint(drift, lambda t, x: 0.3 * torch.sin(x), y0, [0.0, 1.0], dt=0.1, bm=bm)
    gen = sdeint(drift, lambda t, x: torch.diag_embed(0.3 * torch.sin(x)), y0, [0.0, 1.0],
                 dt=0.1, bm=bm, noise="general")
    assert torch.allclose(diag.x, gen.x, atol=1e-14)

"""torchdiffeq's documented examples run through both libraries: the ODE demo (a neural ODE
fitted to a cubic spiral, trained a few iterations from the same weights), a latent-ODE style
batched decoder, scipy_solver, and the implicit method names."""

import pytest
import torch

import timestepper as ts

torchdiffeq = pytest.importorskip("torchdiffeq")
F64 = torch.float64


class ODEFunc(torch.nn.Module):
    """ode_demo.py's model: a small MLP on y**3, counting its evaluations."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.Tanh(),
                                       torch.nn.Linear(50, 2)).double()
        for m in self.net.modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, mean=0, std=0.1)
                torch.nn.init.constant_(m.bias, val=0)
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.net(y**3)


def spiral(odeint):
    true_A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=F64)
    t = torch.linspace(0.0, 5.0, 200, dtype=F64)
    y0 = torch.tensor([[2.0, 0.0]], dtype=F64)
    with torch.no_grad():
        true_y = odeint(lambda t, y: torch.mm(y**3, true_A), y0, t, method="dopri5")
    return t, y0, true_y


@pytest.mark.parametrize("adjoint", [False, True])
def test_ode_demo_spiral_trains_identically(adjoint):
    runs = []
    for lib in (ts, torchdiffeq):
        odeint = lib.odeint_adjoint if adjoint else lib.odeint
        t, y0, true_y = spiral(lib.odeint)
        func = ODEFunc()
        opt = torch.optim.RMSprop(func.parameters(), lr=1e-3)
        losses, nfes = [], []
        for itr in range(3):  # ode_demo's get_batch with fixed indices
            s = torch.arange(itr * 10, itr * 10 + 16)
            batch_y0, batch_t = true_y[s], t[:10]  # (16, 1, 2)
            batch_y = torch.stack([true_y[s + i] for i in range(10)], dim=0)  # (10, 16, 1, 2)
            opt.zero_grad()
            func.nfe = 0
            pred = odeint(func, batch_y0, batch_t)
            loss = (pred - batch_y).abs().mean()
            nfes.append(func.nfe)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        runs.append((true_y, losses, nfes))
    (ty_a, la, na), (ty_b, lb, nb) = runs
    assert float((ty_a - ty_b).abs().max()) < 1e-5
    assert la == pytest.approx(lb, rel=1e-6)
    if not adjoint:  # the forward solves take torchdiffeq's steps
        assert na == nb


def test_latent_ode_style_batched_decoder():
    torch.manual_seed(1)
    latent = torch.nn.Sequential(torch.nn.Linear(4, 20), torch.nn.ELU(), torch.nn.Linear(20, 4)).double()
    z0 = torch.randn(8, 4, dtype=F64, requires_grad=True)
    t = torch.linspace(0, 2.0, 11, dtype=F64)
    outs = []
    for lib in (ts, torchdiffeq):
        pred_z = lib.odeint(lambda t, z: latent(z), z0, t, rtol=1e-6, atol=1e-7).permute(1, 0, 2)
        g = torch.autograd.grad(pred_z.pow(2).sum(), [z0, *latent.parameters()])
        outs.append((pred_z.detach(), torch.cat([x.reshape(-1) for x in g])))
    assert outs[0][0].shape == (8, 11, 4)
    assert float((outs[0][0] - outs[1][0]).abs().max()) < 1e-9
    scale = float(outs[1][1].abs().max())  # backpropagation through different interpolants
    assert float((outs[0][1] - outs[1][1]).abs().max()) < 1e-6 * scale


@pytest.mark.parametrize("solver", ["RK45", "LSODA"])
def test_scipy_solver(solver):
    pytest.importorskip("scipy")
    f = lambda t, y: -0.5 * y * torch.cos(t)  # noqa: E731
    y0 = torch.tensor([[1.0, 2.0]], dtype=F64)
    t = torch.linspace(0, 3, 4, dtype=F64)
    kw = dict(rtol=1e-8, atol=1e-10, method="scipy_solver", options=dict(solver=solver))
    ours, ref = ts.odeint(f, y0, t, **kw), torchdiffeq.odeint(f, y0, t, **kw)
    assert ours.shape == ref.shape == (4, 1, 2)
    # the same scipy call; LSODA's finite-difference Jacobian rounds differently between runs
    assert float((ours - ref).abs().max()) < (1e-12 if solver == "RK45" else 1e-7)
    exact = y0 * torch.exp(-0.5 * torch.sin(t)).reshape(4, 1, 1)
    assert float((ours - exact).abs().max()) < 1e-6


IMPLICIT = ["implicit_euler", "implicit_midpoint", "trapezoid", "radauIIA3", "radauIIA5", "gl4", "gl6",
            "sdirk2", "trbdf2"]


@pytest.mark.parametrize("method", IMPLICIT)
def test_implicit_method_names(method):
    registry = ts.ode.torchdiffeq.METHODS[method].registry
    f = lambda t, y: -y  # noqa: E731
    y0 = torch.ones(2, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    if registry not in ts.solvers.available():
        with pytest.raises(ValueError, match=f"{registry!r}, which is not registered"):
            ts.odeint(f, y0, t, method=method, options=dict(step_size=0.01))
        return
    solver = ts.solvers.get(registry)
    opts = {} if solver.error_order is not None else dict(step_size=0.001)
    ys = ts.odeint(f, y0, t, method=method, options=opts, rtol=1e-6, atol=1e-8)
    assert float((ys - torch.exp(-t)[:, None]).abs().max()) < 1e-3

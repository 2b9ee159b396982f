"""Gradients of a small neural ODE (float64): direct backprop, recursive checkpointing and the
backsolve adjoint agree with each other and with central finite differences."""

import pytest
import torch

import timestepper as ts


class Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin1 = torch.nn.Linear(2, 6).double()
        self.lin2 = torch.nn.Linear(6, 2).double()

    def forward(self, t, y):
        return self.lin2(torch.tanh(self.lin1(y))) * (1 + 0.2 * t)


Y0 = torch.tensor([[0.4, -0.2], [0.1, 0.3]], dtype=torch.float64)
SAVE = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)


def loss_and_grads(f, mode, y0=Y0):
    y0 = y0.clone().requires_grad_(True)
    f.zero_grad()
    sol = ts.solve(f, y0, 0.0, 1.0, solver="dopri5", rtol=1e-10, atol=1e-10, saveat=SAVE,
                   adjoint=mode)
    loss = (sol.ys**2).sum() + sol.x.sum()
    loss.backward()
    grads = [y0.grad.reshape(-1)] + [p.grad.reshape(-1) for p in f.parameters()]
    return loss.detach(), torch.cat(grads)


@pytest.mark.parametrize("mode", ["checkpoint", "backsolve"])
def test_adjoint_matches_direct(mode):
    f = Field()
    _, g_direct = loss_and_grads(f, "direct")
    _, g = loss_and_grads(f, mode)
    tol = 1e-12 if mode == "checkpoint" else 1e-7
    assert float((g - g_direct).abs().max()) < tol


def test_direct_matches_finite_differences():
    f = Field()
    _, g = loss_and_grads(f, "direct")
    p = f.lin1.weight
    eps = 1e-6
    for idx in [(0, 0), (3, 1)]:
        with torch.no_grad():
            p[idx] += eps
        lp, _ = loss_and_grads(f, "direct")
        with torch.no_grad():
            p[idx] -= 2 * eps
        lm, _ = loss_and_grads(f, "direct")
        with torch.no_grad():
            p[idx] += eps
        fd = (lp - lm) / (2 * eps)
        flat_index = Y0.numel() + idx[0] * p.shape[1] + idx[1]
        assert abs(float(fd) - float(g[flat_index])) < 1e-6


@pytest.mark.parametrize("mode", ["backsolve", "checkpoint"])
def test_time_gradients(mode):
    """dL/dt1 = a(t1) . f(t1, y1) and dL/dt0 = -a(t0) . f(t0, y0) for L = sum(y(t1)), against
    central finite differences."""
    f = Field()
    y0 = Y0[:1]
    t0 = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    t1 = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    sol = ts.solve(f, y0, t0, t1, solver="dopri5", rtol=1e-10, atol=1e-10, adjoint=mode)
    sol.x.sum().backward()
    eps = 1e-5

    def end(a, b):
        return float(ts.solve(f, y0, a, b, rtol=1e-11, atol=1e-11).x.sum().detach())

    fd1 = (end(0.1, 1.0 + eps) - end(0.1, 1.0 - eps)) / (2 * eps)
    fd0 = (end(0.1 + eps, 1.0) - end(0.1 - eps, 1.0)) / (2 * eps)
    assert abs(float(t1.grad) - fd1) < 1e-6
    assert abs(float(t0.grad) - fd0) < 1e-6


def test_checkpoint_with_fixed_steps():
    f = Field()
    outs = []
    for mode in ("direct", "checkpoint"):
        y0 = Y0.clone().requires_grad_(True)
        ts.solve(f, y0, 0.0, 1.0, solver="rk4", dt=0.05, adjoint=mode).x.pow(2).sum().backward()
        outs.append(y0.grad)
    assert float((outs[0] - outs[1]).abs().max()) < 1e-12


def test_backsolve_seminorm_saves_backward_steps():
    f = Field()

    class Count(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f, self.n = f, 0

        def forward(self, t, y):
            self.n += 1
            return self.f(t, y)

    c = Count()
    grads, nfe = [], []
    for semi in (False, True):
        c.zero_grad()
        sol = ts.solve(c, Y0, 0.0, 3.0, solver="dopri5", rtol=1e-8, atol=1e-8,
                       adjoint="backsolve", adjoint_seminorm=semi)
        n = c.n
        sol.x.pow(2).sum().backward()
        nfe.append(c.n - n)
        grads.append(torch.cat([p.grad.reshape(-1) for p in c.parameters()]))
    assert nfe[1] <= nfe[0]
    assert float((grads[0] - grads[1]).abs().max()) < 1e-6


def test_checkpoint_recursion_depth_is_logarithmic():
    f = Field()
    y0 = Y0.clone().requires_grad_(True)
    sol = ts.solve(f, y0, 0.0, 1.0, solver="rk4", dt=1 / 64, adjoint="checkpoint")
    sol.x.sum().backward()
    assert sol.extras["checkpoint_depth"] == 7  # 64 steps: 6 bisections + the leaf

"""Gradients of the odeint shim against torchdiffeq's: with respect to the parameters, ``y0`` and
the times ``t`` (direct and adjoint), the adjoint of a field that ignores ``y``, the seminorm,
``adjoint_method``, events (through the event time) and ``odeint_dense``."""

import math

import pytest
import torch

import timestepper as ts

torchdiffeq = pytest.importorskip("torchdiffeq")
F64 = torch.float64


class Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(2, 2, generator=g, dtype=F64) * 0.5)

    def forward(self, t, y):
        return torch.tanh(y @ self.w) + 0.1 * torch.cos(torch.as_tensor(t, dtype=y.dtype))


def grads(odeint, **kw):
    f = Field()
    y0 = torch.tensor([[0.5, -0.3]], dtype=F64, requires_grad=True)
    t = torch.tensor([0.2, 0.7, 1.5], dtype=F64, requires_grad=True)
    loss = odeint(f, y0, t, rtol=1e-10, atol=1e-10, **kw).pow(2).sum()
    return torch.autograd.grad(loss, (f.w, y0, t))


@pytest.mark.parametrize("adjoint", [False, True])
def test_gradients_wrt_parameters_y0_and_t_match_torchdiffeq(adjoint):
    ours = grads(ts.odeint_adjoint if adjoint else ts.odeint)
    ref = grads(torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint)
    for a, b in zip(ours, ref):
        assert float((a - b).abs().max()) < 1e-6, (a, b)


def test_time_gradient_in_solve_matches_finite_differences():
    f = Field()
    y0 = torch.tensor([[0.5, -0.3]], dtype=F64)

    def loss(t0, t1, mode):
        return ts.solve(f, y0, t0, t1, rtol=1e-11, atol=1e-11, adjoint=mode).x.pow(2).sum()

    for mode in ("direct", "checkpoint", "backsolve"):
        t0 = torch.tensor(0.2, dtype=F64, requires_grad=True)
        t1 = torch.tensor(1.3, dtype=F64, requires_grad=True)
        g0, g1 = torch.autograd.grad(loss(t0, t1, mode), (t0, t1))
        e = 1e-5
        fd0 = (loss(0.2 + e, 1.3, mode) - loss(0.2 - e, 1.3, mode)) / (2 * e)
        fd1 = (loss(0.2, 1.3 + e, mode) - loss(0.2, 1.3 - e, mode)) / (2 * e)
        assert float(g0) == pytest.approx(float(fd0), rel=1e-5), mode
        assert float(g1) == pytest.approx(float(fd1), rel=1e-5), mode


def test_per_sample_time_gradients_are_refused():
    t0 = torch.zeros(2, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="per_sample_steps"):
        ts.solve(lambda t, y: -y, torch.ones(2, 1, dtype=F64), t0, torch.ones(2, dtype=F64),
                 per_sample_steps=True)


def test_adjoint_of_a_field_independent_of_y_without_parameters():
    def f(t, y):
        return torch.cos(t) * torch.ones_like(y)

    out = []
    for odeint in (ts.odeint_adjoint, torchdiffeq.odeint_adjoint):
        y0 = torch.ones(3, dtype=F64, requires_grad=True)
        t = torch.tensor([0.0, 1.0, 2.0], dtype=F64, requires_grad=True)
        out.append(torch.autograd.grad(odeint(f, y0, t, adjoint_params=()).sum(), (y0, t)))
    # L = sum_i sum(y0 + sin t_i - sin t_0): dL/dy0 = 3, dL/dt = (-6 cos t0, 3 cos t1, 3 cos t2)
    exact_t = torch.tensor([-6.0, 3 * math.cos(1.0), 3 * math.cos(2.0)], dtype=F64)
    for g, tol in zip(out, (1e-12, 1e-5)):  # torchdiffeq integrates dL/dt0 with its tolerance
        assert float((g[0] - 3).abs().max()) < 1e-12
        assert float((g[1] - exact_t).abs().max()) < tol


@pytest.mark.parametrize("kw", [dict(adjoint_options=dict(norm="seminorm")),
                                dict(adjoint_method="bosh3", adjoint_rtol=1e-9, adjoint_atol=1e-9)])
def test_adjoint_options_and_method(kw):
    ours = grads(ts.odeint_adjoint, **kw)
    ref = grads(torchdiffeq.odeint_adjoint, **kw)
    for a, b in zip(ours, ref):  # the backward solves take different steps (tolerance 1e-9)
        assert float((a - b).abs().max()) < 1e-4


class BouncingBall(torch.nn.Module):
    """torchdiffeq's bouncing-ball example: height and velocity under gravity, an event when the
    ball reaches the ground, the velocity reflected with a restitution coefficient."""

    def __init__(self):
        super().__init__()
        self.gravity = torch.nn.Parameter(torch.tensor([9.8], dtype=F64))
        self.t0 = torch.nn.Parameter(torch.tensor([0.0], dtype=F64))
        self.init_pos = torch.nn.Parameter(torch.tensor([10.0], dtype=F64))
        self.absorption = torch.nn.Parameter(torch.tensor([0.2], dtype=F64))

    def forward(self, t, state):
        pos, vel, log_radius = state
        return vel, -self.gravity, torch.zeros_like(log_radius)

    def event_fn(self, t, state):
        pos, _, log_radius = state
        return pos - torch.exp(log_radius)

    def bounces(self, odeint_event, odeint, n=3):
        state = (self.init_pos, torch.tensor([0.0], dtype=F64), torch.tensor([math.log(0.2)], dtype=F64))
        t0, times = self.t0, []
        for _ in range(n):
            t0, sol = odeint_event(self, state, t0, event_fn=self.event_fn, odeint_interface=odeint,
                                   atol=1e-8, rtol=1e-8)
            pos, vel, log_radius = (s[-1] for s in sol)
            state = (pos + 1e-7, -vel * (1 - self.absorption), log_radius)
            times.append(t0)
        return torch.stack([s.reshape(()) for s in times])


@pytest.mark.parametrize("adjoint", [False, True])
def test_bouncing_ball_event_times_and_gradients(adjoint):
    out = []
    for lib in (ts, torchdiffeq):
        ball = BouncingBall()
        times = ball.bounces(lib.odeint_event, lib.odeint_adjoint if adjoint else lib.odeint)
        g = torch.autograd.grad(times.sum(), [ball.gravity, ball.init_pos, ball.absorption, ball.t0])
        out.append((times.detach(), torch.cat(g)))
    exact = math.sqrt(2 * (10 - 0.2) / 9.8)
    assert float(out[0][0][0]) == pytest.approx(exact, rel=1e-7)
    assert float((out[0][0] - out[1][0]).abs().max()) < 1e-6
    assert float((out[0][1] - out[1][1]).abs().max()) < 1e-5, (out[0][1], out[1][1])


def test_odeint_dense_matches_torchdiffeq():
    f = Field()
    y0 = torch.tensor([[0.5, -0.3]], dtype=F64)
    t0, t1 = torch.tensor(0.0, dtype=F64), torch.tensor(2.0, dtype=F64)
    ours = ts.odeint_dense(f, y0, t0, t1, rtol=1e-9, atol=1e-9)
    ref = torchdiffeq.odeint_dense(f, y0, t0, t1, rtol=1e-9, atol=1e-9)
    for s in (0.3, 1.1, 1.9):
        tt = torch.tensor(s, dtype=F64)
        assert float((ours(tt) - ref(tt)).abs().max()) < 1e-8

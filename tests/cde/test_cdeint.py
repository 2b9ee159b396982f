"""The CDE term on the one loop: exact solutions, parity with torchcde, every gradient mode."""

from __future__ import annotations

import pytest
import torch

from timestepper.cde import CDETerm, KnotController, cdeint, control_path
from timestepper.core.controllers import PIDState

torchcde = pytest.importorskip("torchcde")


class Field(torch.nn.Module):
    """``f(z) = tanh(W z + b)`` reshaped to ``(hidden, channels)``."""

    def __init__(self, hidden=5, channels=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.hidden, self.channels = hidden, channels
        self.lin = torch.nn.Linear(hidden, hidden * channels).double()

    def forward(self, t, z):
        return torch.tanh(self.lin(z)).view(*z.shape[:-1], self.hidden, self.channels)


def _smooth_series(b=3, n=15, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 3, n, dtype=torch.float64) + 0.05 * torch.rand(n, generator=g, dtype=torch.float64)
    x = torch.cumsum(0.3 * torch.randn(b, n, c, generator=g, dtype=torch.float64), dim=1)
    return t, x


@pytest.mark.parametrize("kind", ["linear", "hermite-cubic", "natural-cubic"])
def test_linear_cde_on_one_channel_is_a_matrix_exponential(kind):
    """``dZ = M Z dX`` with one channel: ``Z(T) = expm(M (X(T) - X(t0))) Z0`` for any path."""
    t, x = _smooth_series(c=1)
    m = torch.tensor([[0.0, -1.0], [1.0, -0.2]], dtype=torch.float64)
    path = control_path(t, x, kind=kind, time_channel=False)
    z0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64).expand(3, 2)
    sol = cdeint(path, lambda s, z: (z @ m.T).unsqueeze(-1), z0, solver="tsit5", rtol=1e-10, atol=1e-12)
    dx = (x[:, -1, 0] - x[:, 0, 0]).view(-1, 1, 1)
    exact = (torch.linalg.matrix_exp(m * dx) @ z0.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(sol.x, exact, rtol=1e-8, atol=1e-8)


def test_knot_controller_steps_onto_every_knot_of_a_linear_path():
    t, x = _smooth_series()
    path = control_path(t, x, kind="linear", time_channel=False)
    sol = cdeint(path, Field(), torch.zeros(3, 5, dtype=torch.float64), rtol=1e-3, atol=1e-3)
    steps = set(sol.extras["step_ts"].tolist())
    assert set(t.tolist()) <= steps
    free = cdeint(path, Field(), torch.zeros(3, 5, dtype=torch.float64), rtol=1e-3, atol=1e-3,
                  step_to_knots=False)
    assert not set(t[1:-1].tolist()) <= set(free.extras["step_ts"].tolist())
    ctrl = KnotController([0.0, 1.0, 2.0], 1e-3, 1e-3)
    assert ctrl.next_time(0.5, PIDState(dt=2.0)) == 1.0
    assert ctrl.next_time(1.0, PIDState(dt=0.5)) == 1.5
    assert ctrl.next_time(1.5, PIDState(dt=-2.0)) == 1.0
    f64 = torch.float64
    got = ctrl.next_time(torch.tensor([0.5, 1.0, 1.5], dtype=f64),
                         PIDState(dt=torch.tensor([2.0, 0.5, -2.0], dtype=f64)))
    assert got.tolist() == [1.0, 1.5, 1.0]


@pytest.mark.parametrize("kind", ["linear", "hermite-cubic", "natural-cubic"])
def test_solved_z_matches_torchcde(kind):
    t, x = _smooth_series(seed=1)
    path = control_path(t, x, kind=kind, time_channel=False)
    if kind == "linear":
        ref_path = torchcde.LinearInterpolation(torchcde.linear_interpolation_coeffs(x, t), t)
        options = {"jump_t": ref_path.grid_points}
    else:
        coeffs = (torchcde.natural_cubic_coeffs if kind == "natural-cubic"
                  else torchcde.hermite_cubic_coefficients_with_backward_differences)(x, t)
        ref_path, options = torchcde.CubicSpline(coeffs, t), {}
    f = Field()
    z0 = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tq = torch.linspace(float(t[0]), float(t[-1]), 6, dtype=torch.float64)
    with torch.no_grad():
        ref = torchcde.cdeint(ref_path, f, z0, tq, method="dopri5", rtol=1e-10, atol=1e-10, options=options)
        sol = cdeint(path, f, z0, tq, solver="dopri5", rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(sol.ys.transpose(0, 1), ref, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
def test_every_gradient_mode_gives_the_direct_gradient(adjoint):
    t, x = _smooth_series(seed=2)
    path = control_path(t, x, kind="hermite-cubic", time_channel=False)
    grads = {}
    for mode in ("direct", adjoint):
        f = Field(seed=3)
        z0 = torch.full((3, 5), 0.1, dtype=torch.float64, requires_grad=True)
        sol = cdeint(path, f, z0, solver="tsit5", rtol=1e-9, atol=1e-9, adjoint=mode)
        sol.x.square().sum().backward()
        grads[mode] = [z0.grad] + [p.grad for p in f.parameters()]
    for a, b in zip(grads["direct"], grads[adjoint]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_with_respect_to_the_data_matches_torchcde():
    t, x = _smooth_series(seed=4)
    x = x.clone().requires_grad_(True)
    f = Field(seed=5)
    z0 = torch.zeros(3, 5, dtype=torch.float64)
    path = control_path(t, x, kind="natural-cubic", time_channel=False)
    cdeint(path, f, z0, solver="dopri5", rtol=1e-8, atol=1e-8).x.sum().backward()
    ours = x.grad.clone()
    x.grad = None
    ref_path = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x, t), t)
    torchcde.cdeint(ref_path, f, z0, ref_path.interval, adjoint=False, method="dopri5", rtol=1e-8,
                   atol=1e-8)[:, -1].sum().backward()
    # discretise-then-optimise gradients of two step sequences: equal to O(tolerance)
    torch.testing.assert_close(ours, x.grad, rtol=1e-4, atol=5e-5)


def test_channel_mismatch_names_the_shapes():
    t, x = _smooth_series()
    path = control_path(t, x, kind="linear", time_channel=True)  # 5 channels
    with pytest.raises(ValueError, match=r"func must return \(\.\.\., hidden=5, channels=5\)"):
        cdeint(path, Field(channels=4), torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="t must lie in the path's interval"):
        cdeint(path, Field(channels=5), torch.zeros(3, 5, dtype=torch.float64), t=[0.0, 99.0])
    with pytest.raises(ValueError, match="t must hold at least two strictly increasing"):
        cdeint(path, Field(channels=5), torch.zeros(3, 5, dtype=torch.float64), t=[1.0, 0.5])
    with pytest.raises(TypeError, match="path needs a derivative"):
        CDETerm(Field(), object())  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["hermite-cubic", "linear"])
def test_per_sample_steps_agree_with_shared_steps(kind):
    t, x = _smooth_series(seed=6)
    path = control_path(t, x, kind=kind, time_channel=False)
    f = Field(seed=7)
    z0 = torch.zeros(3, 5, dtype=torch.float64)
    with torch.no_grad():
        shared = cdeint(path, f, z0, rtol=1e-9, atol=1e-9)
        per = cdeint(path, f, z0, rtol=1e-9, atol=1e-9, per_sample_steps=True)
    torch.testing.assert_close(per.x, shared.x, rtol=1e-5, atol=2e-6)  # global error ~ 100 tol
    assert per.stats.nfe.shape == (3,)

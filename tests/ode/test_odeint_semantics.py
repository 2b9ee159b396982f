"""The odeint shim against torchdiffeq itself: same values, same shapes and dtypes, the same
number of evaluations for the methods whose controller is reproduced, the same options."""

import pytest
import torch

import timestepper as ts

torchdiffeq = pytest.importorskip("torchdiffeq")
F64 = torch.float64


class Counter:
    """A field counting its calls and checking that ``t`` is a 0-d tensor like ``y``'s dtype."""

    def __init__(self, f):
        self.f, self.n = f, 0

    def __call__(self, t, y):
        self.n += 1
        first = y[0] if isinstance(y, tuple) else y
        assert isinstance(t, torch.Tensor) and t.ndim == 0 and t.dtype == first.real.dtype
        return self.f(t, y)


def vdp(t, y):
    return torch.stack([y[1], 2 * (1 - y[0] ** 2) * y[1] - y[0]]) * (1 + 0.1 * torch.sin(t))


Y0 = torch.tensor([2.0, 0.0], dtype=F64)
T = torch.linspace(0, 6, 5, dtype=F64)


def both(f, y0, t, **kw):
    a, b = Counter(f), Counter(f)
    ours = ts.odeint(a, y0, t, **kw)
    ref = torchdiffeq.odeint(b, y0, t, **kw)
    return ours, ref, a.n, b.n


def close(a, b, tol):
    if isinstance(a, tuple):
        return all(close(x, y, tol) for x, y in zip(a, b))
    assert a.shape == b.shape and a.dtype == b.dtype
    return float((a - b).abs().max()) <= tol


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "fehlberg2", "adaptive_heun"])
@pytest.mark.parametrize("reverse", [False, True])
def test_adaptive_methods_take_torchdiffeqs_steps(method, reverse):
    t = T.flip(0) if reverse else T
    ours, ref, n_ours, n_ref = both(vdp, Y0, t, rtol=1e-6, atol=1e-8, method=method)
    assert n_ours == n_ref
    # the same steps; the outputs differ by the interpolants (ours: the method's own dense output,
    # torchdiffeq's: a quartic fit), both within the global error of the solve
    assert close(ours, ref, 1e-12 if method == "dopri5" else 2e-3)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun2", "heun3", "rk4"])
@pytest.mark.parametrize("interp", ["linear", "cubic"])
def test_fixed_grid_methods_step_on_their_grid_and_interpolate(method, interp):
    ours, ref, n_ours, n_ref = both(vdp, Y0, T, method=method,
                                    options=dict(step_size=0.07, interp=interp))
    assert close(ours, ref, 1e-12)
    assert n_ours == n_ref if interp == "linear" else n_ours <= n_ref + len(T)


def test_grid_constructor_and_output_grid():
    def grid(func, y0, t):
        return torch.linspace(float(t[0]), float(t[-1]), 37, dtype=t.dtype)

    t = torch.linspace(0, 6, 41, dtype=F64)
    for opts in (dict(grid_constructor=grid), {}):
        ours, ref, n_ours, n_ref = both(vdp, Y0, t, method="rk4", options=opts)
        assert close(ours, ref, 1e-12) and n_ours == n_ref


def test_perturb_sees_a_discontinuity_from_the_correct_side():
    def step(t, y):  # jumps at t = 1, a grid point
        return torch.where(t < 1.0, torch.ones_like(y), -torch.ones_like(y))

    y0 = torch.zeros(1, dtype=F64)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    for perturb in (False, True):
        ours, ref, _, _ = both(step, y0, t, method="rk4", options=dict(step_size=0.5, perturb=perturb))
        assert close(ours, ref, 1e-14)
    assert float(ours[1]) == pytest.approx(1.0)  # with perturb, f at t1 = 1 is taken from the left


def test_tuple_state_float32_and_one_point_t():
    def f(t, y):
        return (-y[0] * torch.cos(t), y[0].sum() * y[1])

    y0 = (torch.tensor([1.0, 2.0]), torch.tensor([[0.5]]))
    t = torch.linspace(0, 1, 3)
    ours, ref, n_ours, n_ref = both(f, y0, t, rtol=1e-5, atol=1e-6)
    assert close(ours, ref, 1e-5) and n_ours == n_ref
    assert ours[0].dtype == torch.float32 and ours[1].shape == (3, 1, 1)
    one = ts.odeint(f, y0, t[:1])
    assert close(one, torchdiffeq.odeint(f, y0, t[:1]), 0.0)


OPTIONS = [dict(first_step=0.01), dict(safety=0.8, ifactor=5.0, dfactor=0.3), dict(max_step=0.05),
           dict(min_step=0.02), dict(step_t=torch.tensor([0.33, 2.71], dtype=F64)),
           dict(jump_t=torch.tensor([1.234, 4.5], dtype=F64)),
           dict(norm=lambda v: v.abs().max()), dict(max_num_steps=10_000)]


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: next(iter(o)))
def test_adaptive_options_like_torchdiffeq(opts):
    ours, ref, n_ours, n_ref = both(vdp, Y0, T, rtol=1e-6, atol=1e-8, method="dopri5", options=opts)
    assert n_ours == n_ref
    assert close(ours, ref, 1e-10)


def test_callbacks_are_called_like_torchdiffeq():
    class F(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = {"step": [], "accept": [], "reject": []}

        def forward(self, t, y):
            return vdp(t, y)

        def callback_step(self, t0, y0, dt):
            self.calls["step"].append(float(t0))

        def callback_accept_step(self, t0, y0, dt):
            self.calls["accept"].append(float(dt))

        def callback_reject_step(self, t0, y0, dt):
            self.calls["reject"].append(float(dt))

    a, b = F(), F()
    ts.odeint(a, Y0, T, rtol=1e-8, atol=1e-8)
    torchdiffeq.odeint(b, Y0, T, rtol=1e-8, atol=1e-8)
    for k in a.calls:
        assert len(a.calls[k]) == len(b.calls[k]) > 0 or k == "reject"
        assert a.calls[k] == pytest.approx(b.calls[k], rel=1e-9)


def test_options_that_cannot_be_honoured_raise():
    with pytest.raises(ValueError, match="not supported by method 'dopri5'"):
        ts.odeint(vdp, Y0, T, options=dict(step_size=0.1))
    with pytest.raises(ValueError, match="dtype"):
        ts.odeint(vdp, Y0, T, options=dict(dtype=torch.float32))
    with pytest.raises(ValueError, match="interp"):
        ts.odeint(vdp, Y0, T, method="rk4", options=dict(interp="quintic"))
    with pytest.raises(ValueError, match="method must be one of"):
        ts.odeint(vdp, Y0, T, method="rk45")
    with pytest.raises(ValueError, match="adjoint_options"):
        ts.odeint_adjoint(vdp, Y0, T, adjoint_options=dict(max_num_steps=3))


def test_fixed_grid_callback_step_and_event():
    class F(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.starts = []

        def forward(self, t, y):
            return torch.stack([y[1], -9.8 * torch.ones_like(y[0])])

        def callback_step(self, t0, y0, dt):
            self.starts += [float(t0), float(dt)]

    a, b = F(), F()
    y0 = torch.tensor([10.0, 0.0], dtype=F64)
    ts.odeint(a, y0, T, method="rk4", options=dict(step_size=0.25))
    torchdiffeq.odeint(b, y0, T, method="rk4", options=dict(step_size=0.25))
    assert a.starts == pytest.approx(b.starts, rel=1e-12)
    times = []
    for lib in (ts, torchdiffeq):
        t0 = torch.tensor(0.0, dtype=F64)
        et, sol = lib.odeint(F(), y0, torch.stack([t0, t0 + 1]), method="rk4",
                             options=dict(step_size=0.1, interp="cubic"),
                             event_fn=lambda t, y: y[0] - 1.0, atol=1e-10)
        times.append(float(et))
        assert sol.shape == (2, 2)
    assert times[0] == pytest.approx(times[1], abs=1e-9)
    # rk4 and the cubic Hermite interpolant are exact on a parabola
    assert times[0] == pytest.approx((2 * 9.0 / 9.8) ** 0.5, abs=1e-9)


def test_grid_points_with_eps_restart_around_a_jump():
    def f(t, y):  # a kink at t = 2
        return torch.where(t < 2.0, torch.ones_like(y), -2 * torch.ones_like(y))

    y0 = torch.zeros(1, dtype=F64)
    t = torch.tensor([0.0, 1.0, 3.0], dtype=F64)
    ys = ts.odeint(f, y0, t, rtol=1e-9, atol=1e-9, options=dict(grid_points=torch.tensor([2.0], dtype=F64),
                                                                  eps=1e-6))
    assert float(ys[1]) == pytest.approx(1.0, abs=1e-9)
    assert float(ys[2]) == pytest.approx(2.0 - 2.0, abs=1e-5)  # the state is carried over the gap
    jumped = ts.odeint(f, y0, t, rtol=1e-9, atol=1e-9, options=dict(jump_t=torch.tensor([2.0], dtype=F64)))
    ref = torchdiffeq.odeint(f, y0, t, rtol=1e-9, atol=1e-9, options=dict(jump_t=torch.tensor([2.0], dtype=F64)))
    assert float(jumped[2]) == pytest.approx(0.0, abs=1e-12) and float(ref[2]) == pytest.approx(0.0, abs=1e-12)

"""``integrate(..., compile=True)``: compiled and eager agree to float rounding for one solver of
every family, a field that cannot be captured falls back to eager with a warning naming the
reason, and the per-sample compiled loop does not recompile for each batch size.

The dynamo-only ``aot_eager`` backend traces what inductor would compile (same graphs, same
guards, same fallbacks) without generating code, so these tests stay fast; the one inductor test
is marked slow. Compiled speed is measured in ``benchmarks/speed.py`` and ``benchmarks/compiled.py``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import timestepper as ts
from timestepper.loop.compiled import CompileFallbackWarning, compile_stats

F64 = torch.float64
FAST = {"backend": "aot_eager"}


def _vdp(mu: torch.Tensor):
    def f(t, y):
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], dim=1)

    return f


def _vdp_problem(b: int = 6):
    mu = torch.linspace(0.5, 3.0, b, dtype=F64)
    y0 = torch.zeros(b, 2, dtype=F64)
    y0[:, 0] = 2.0
    return ts.ODETerm(_vdp(mu)), y0


def _no_fallback(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        return fn()


@pytest.mark.parametrize("per_sample,compile", [
    (False, FAST), (True, FAST), pytest.param(True, True, marks=pytest.mark.slow, id="per-sample-inductor")],
    ids=["shared", "per-sample", "per-sample-inductor"])
def test_adaptive_rk_compiled_matches_eager(per_sample, compile):
    term, y0 = _vdp_problem()
    ctrl = ts.PIDController(rtol=1e-6, atol=1e-6)

    def run(compile):
        return ts.integrate(term, "tsit5", ctrl, y0, t_span=(0.0, 3.0), per_sample=per_sample, compile=compile)

    eager = run(False)
    compiled = _no_fallback(lambda: run(compile))
    assert torch.allclose(compiled.x, eager.x, rtol=1e-10, atol=1e-10)
    # the same steps: the accept/reject decisions were the same
    assert torch.equal(torch.as_tensor(compiled.stats.accepted), torch.as_tensor(eager.stats.accepted))
    assert torch.equal(torch.as_tensor(compiled.stats.nfe), torch.as_tensor(eager.stats.nfe))


def test_fixed_grid_rk_compiled_matches_eager():
    term, y0 = _vdp_problem()
    grid = torch.linspace(0.0, 1.0, 21, dtype=F64)
    eager = ts.integrate(term, "rk4", grid, y0).x
    compiled = _no_fallback(lambda: ts.integrate(term, "rk4", grid, y0, compile=FAST).x)
    assert torch.allclose(compiled, eager, rtol=1e-12, atol=1e-12)
    assert compile_stats()["graphs"] <= 2  # one graph for every step of the grid (not one per step)


def test_rosenbrock_falls_back_to_eager_and_agrees():
    """Rosenbrock's Jacobian comes from autograd inside the step, which dynamo does not capture:
    the step runs eagerly after a warning naming the reason."""
    term, y0 = _vdp_problem()
    grid = torch.linspace(0.0, 1.0, 11, dtype=F64)
    eager = ts.integrate(term, "rosenbrock23", grid, y0).x
    with pytest.warns(CompileFallbackWarning, match="rosenbrock23"):
        compiled = ts.integrate(term, "rosenbrock23", grid, y0, compile=FAST).x
    assert torch.equal(compiled, eager)


def test_diffusion_multistep_compiled_matches_eager():
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2)).double()
    den = ts.Denoiser(lambda x, t: net(torch.cat([x, (t / 1000)[:, None].to(x.dtype)], 1)), sched, "epsilon")
    noise = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad():
        eager = ts.sample(den, noise, "dpmpp-2m", steps=8)
        compiled = _no_fallback(lambda: ts.sample(den, noise, "dpmpp-2m", steps=8, compile=FAST))
    assert torch.allclose(compiled, eager, rtol=1e-12, atol=1e-12)


def test_stochastic_sampler_compiled_matches_eager_with_the_same_generator():
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    den = ts.Denoiser(lambda x, t: 0.3 * x, sched, "epsilon")
    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", CompileFallbackWarning)  # a generator may not be capturable
        eager = ts.sample(den, noise, "sde-dpmpp-2m", steps=6, generator=7)
        compiled = ts.sample(den, noise, "sde-dpmpp-2m", steps=6, generator=7, compile=FAST)
    assert torch.allclose(compiled, eager, rtol=1e-12, atol=1e-12)


def test_pde_simulate_compiled_matches_eager():
    eq = ts.pde.KuramotoSivashinsky(length=32.0, n=64)
    u0 = ts.pde.data.initial_conditions(eq, range(3), seed=0, stream=0).to(F64)
    eager = eq.simulate(u0, t_end=1.0, dt=0.25)
    compiled = _no_fallback(lambda: eq.simulate(u0, t_end=1.0, dt=0.25, compile=FAST))
    assert torch.allclose(compiled, eager, rtol=1e-12, atol=1e-12)


def test_solve_front_passes_compile_through():
    def f(t, y):
        return -y * (1 + t)

    y0 = torch.ones(3, dtype=F64)
    eager = ts.solve(f, y0, 0.0, 1.0, rtol=1e-8, atol=1e-8).x
    compiled = _no_fallback(lambda: ts.solve(f, y0, 0.0, 1.0, rtol=1e-8, atol=1e-8, compile=FAST).x)
    assert torch.allclose(compiled, eager, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per-sample"])
def test_uncapturable_field_falls_back_with_a_warning(per_sample):
    def f(t, y):
        if float(y.abs().max().item()) > 1e6:  # a host read: dynamo cannot keep this in one graph
            raise RuntimeError("blow-up")
        return -y

    y0 = torch.ones(4, 2, dtype=F64)
    ctrl = ts.PIDController(rtol=1e-6, atol=1e-6)
    eager = ts.integrate(ts.ODETerm(f), "tsit5", ctrl, y0, t_span=(0.0, 1.0), per_sample=per_sample)
    with pytest.warns(CompileFallbackWarning, match="could not be compiled .*running it eagerly"):
        compiled = ts.integrate(ts.ODETerm(f), "tsit5", ctrl, y0, t_span=(0.0, 1.0), per_sample=per_sample,
                                compile=FAST)
    # eager after the fallback, with the times as 0-d tensors (the last bit may differ)
    assert torch.allclose(compiled.x, eager.x, rtol=1e-13, atol=1e-13)


def test_recompiling_every_step_falls_back_instead_of_failing():
    """With static shapes (``dynamic=False``) the float coefficients of a step compiled one call
    per step (PLMS: its warm-up rows differ in kind) are specialised: a new graph for each step,
    until dynamo's recompile limit; then the solve goes on eagerly, with a warning, instead of
    failing. In the multistep loop (DPM-Solver++, UniPC) the coefficients are tensors: no
    recompile, no warning."""
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    den = ts.Denoiser(lambda x, t: 0.3 * x, sched, "epsilon")
    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    steps = torch._dynamo.config.recompile_limit + 4
    static = {**FAST, "dynamic": False}
    with torch.no_grad():
        eager = ts.sample(den, noise, "plms", steps=steps)
        with pytest.warns(CompileFallbackWarning, match="plms"):
            compiled = ts.sample(den, noise, "plms", steps=steps, compile=static)
        assert torch.allclose(compiled, eager, rtol=1e-12, atol=1e-12)
        for solver in ("dpmpp-2m", "unipc-bh2"):
            looped = _no_fallback(lambda solver=solver: ts.sample(den, noise, solver, steps=steps, compile=static))
            assert torch.allclose(looped, ts.sample(den, noise, solver, steps=steps), rtol=1e-12, atol=1e-12)


def test_compile_option_must_be_bool_or_dict():
    term, y0 = _vdp_problem()
    with pytest.raises(TypeError, match="compile must be a bool or a dict"):
        ts.integrate(term, "rk4", [0.0, 0.1], y0, compile="yes")


def test_per_sample_recompiles_are_bounded_across_batch_sizes():
    ctrl = ts.PIDController(rtol=1e-5, atol=1e-5)
    graphs = []
    for b in (3, 5, 9, 17):
        term, y0 = _vdp_problem(b)
        _no_fallback(lambda term=term, y0=y0: ts.integrate(term, "tsit5", ctrl, y0, t_span=(0.0, 1.0),
                                                           per_sample=True, compile=FAST))
        graphs.append(compile_stats()["graphs"])
    # a new field closure per batch size is a new guard, but not a new graph per step
    assert graphs[-1] - graphs[0] <= 3 * 2, graphs

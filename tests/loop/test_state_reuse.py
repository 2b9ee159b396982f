"""Eager fixed-grid solves write each new state into the memory of the previous one where the
loop owns it (``Solver.reuses_state_memory``, ``step_into``): same numbers as the out-of-place
step, the caller's ``x0`` untouched, and no reuse where something else may hold a state."""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from timestepper.diffusion.term import DiffusionTerm

F64 = torch.float64
REUSING = [n for n in ts.solvers.available("diffusion") if ts.solvers.get(n).reuses_state_memory]


def _recording_denoiser(gmm, schedule, kind):
    """The mixture's exact denoiser, recording the address of every input it receives."""
    den = gmm.denoiser(schedule, kind)
    ptrs: list[int] = []
    return ts.Denoiser(lambda x, t: ptrs.append(x.data_ptr()) or den.model_fn(x, t), schedule, kind), ptrs


def test_the_linear_diffusion_steps_declare_reuse():
    assert {"dpmpp-2m", "dpmpp-3m", "deis", "lms", "ddim", "euler", "ddpm"} <= set(REUSING)
    for name in ("pndm", "plms", "dpmpp-2m-sde", "time-shift", "unipc"):
        if name in ts.solvers.available():
            assert not ts.solvers.get(name).reuses_state_memory, name


@pytest.mark.parametrize("name", REUSING)
@pytest.mark.parametrize("kind", ["epsilon", "sample"])
def test_reuse_gives_the_numbers_of_the_out_of_place_step(gmm2, name, kind):
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    den, ptrs = _recording_denoiser(gmm2, sched, kind)
    noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    kept = noise.clone()
    grid = ts.make_grid(sched, 8, "logsnr")

    def solve(**kw):  # the same noise draws for a stochastic solver
        term = DiffusionTerm(den, generator=torch.Generator().manual_seed(1))
        return ts.integrate(term, name, grid, noise, **kw).x

    with torch.no_grad():
        reused = solve()
        first, rest = ptrs[0], ptrs[1:]
        # a callback sees every state, so the loop keeps them apart (the out-of-place step)
        apart = solve(callback=lambda i, t, x: None)
    assert torch.equal(noise, kept)  # x0 is never written
    assert torch.equal(reused, apart)
    assert first == noise.data_ptr() and len(set(rest)) == 1 and rest[0] != first  # one buffer after x0


def test_sample_reuses_the_state(gmm2):
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    den, ptrs = _recording_denoiser(gmm2, sched, "epsilon")
    ts.sample(den, torch.randn(4, 2, dtype=F64), "dpmpp-2m", steps=6)
    assert len(set(ptrs[1:])) == 1


def test_a_model_returning_its_input_is_not_overwritten():
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    den = ts.Denoiser(lambda x, t: x, sched, "sample")  # the data prediction is the state itself
    x0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    grid = ts.make_grid(sched, 6, "logsnr")
    with torch.no_grad():
        reused = ts.integrate(DiffusionTerm(den), "dpmpp-2m", grid, x0).x
        apart = ts.integrate(DiffusionTerm(den), "dpmpp-2m", grid, x0, callback=lambda i, t, x: None).x
    assert torch.equal(reused, apart)


def test_no_reuse_where_autograd_records_the_steps(gmm2):
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    den = gmm2.denoiser(sched, "epsilon")
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(2), dtype=F64, requires_grad=True)
    grid = ts.make_grid(sched, 6, "logsnr")
    out = ts.integrate(DiffusionTerm(den), "dpmpp-2m", grid, x0).x
    (g,) = torch.autograd.grad(out.square().sum(), x0)  # an in-place step would break the backward pass
    with torch.no_grad():
        eps = 1e-6
        e = torch.zeros_like(x0)
        e[0, 0] = eps
        plus = ts.integrate(DiffusionTerm(den), "dpmpp-2m", grid, x0 + e).x.square().sum()
        minus = ts.integrate(DiffusionTerm(den), "dpmpp-2m", grid, x0 - e).x.square().sum()
    assert float(g[0, 0]) == pytest.approx(float(plus - minus) / (2 * eps), rel=1e-5)


def test_saved_steps_keep_their_values(gmm2):
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    den = gmm2.denoiser(sched, "epsilon")
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    grid = ts.make_grid(sched, 5, "logsnr")
    with torch.no_grad():
        sol = ts.integrate(DiffusionTerm(den), "dpmpp-2m", grid, x0, saveat=ts.SaveAt(steps=True))
        ends = [ts.integrate(DiffusionTerm(den), "dpmpp-2m", ts.make_grid(sched, 5, "logsnr"), x0).x]
    assert torch.equal(sol.ys[-1], ends[0])
    # each saved state is the one reached at its step: recompute them on shorter grids
    for k in range(1, 5):
        with torch.no_grad():
            part = ts.integrate(DiffusionTerm(den), "dpmpp-2m", grid, x0, saveat=ts.SaveAt(steps=True)).ys[k]
        assert torch.equal(sol.ys[k], part)

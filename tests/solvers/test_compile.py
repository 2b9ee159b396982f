"""The hot path compiles: a step traces into one graph under ``torch.compile`` (no host sync, no
data-dependent Python branch, no Python state mutated), and a compiled step is reused from step to
step and from grid to grid (no recompile per step).

The dynamo-only ``eager`` backend checks the capture (a graph break raises under
``fullgraph=True``); ``aot_eager`` also traces the graphs through AOTAutograd as inductor does, so a
Python float that a kernel argument would specialise (an ``alpha=`` of a step coefficient: one
graph per step) shows up in the counter. Neither generates code, so the tests stay fast on CPU.
Compiled speed is measured in ``benchmarks/compiled.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import timestepper as ts
from timestepper.diffusion.term import DiffusionTerm

torch.set_num_threads(1)

# One solver per step implementation: the linear multistep step (DPM-Solver multistep, DEIS,
# LMS), the singlestep step, UniPC, PLMS, PNDM, DPM-2, Heun, DDIM.
FULLGRAPH = [
    ("dpmpp-3m", {}),
    ("dpm-solver-3", {}),
    ("unipc-bh1", {"order": 3}),
    ("plms", {}),
    ("pndm", {}),
    ("dpm-2", {}),
    ("heun", {}),
    ("ddim", {}),
]


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2)
        )

    def forward(self, x, t):
        return self.net(torch.cat([x, (t / 1000.0)[:, None].to(x.dtype)], dim=1))


@pytest.fixture(scope="module")
def denoiser():
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available")
    torch.manual_seed(0)
    # float64: the compiled graph writes c * y where eager fuses it into one op (a last-bit
    # difference), so compiled and eager agree to roundoff, checked tightly
    return ts.Denoiser(TinyNet().double().eval(), ts.VPDiscreteSchedule.from_betas("linear"), "epsilon")


@pytest.mark.parametrize("name,options", FULLGRAPH, ids=[s[0] for s in FULLGRAPH])
def test_fixed_grid_loop_compiles_fullgraph(denoiser, name, options):
    grid = ts.make_grid(denoiser.schedule, 6, "logsnr")
    solver = ts.solvers.get(name, **options)
    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    times = grid.t.tolist()

    def run(x, compiled):
        term = DiffusionTerm(denoiser)
        state, table = solver.init(term, grid, x)  # once per grid: coefficients, outside the graph

        def loop(x):
            st = state
            for i in range(grid.steps):
                x, st, _, _ = solver.step(term, times[i], times[i + 1], x, st, table[i])
            return x

        return (torch.compile(loop, fullgraph=True, backend="eager") if compiled else loop)(x)

    torch._dynamo.reset()
    with torch.no_grad():
        expected = run(x0, compiled=False)
        got = run(x0, compiled=True)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def _graphs_per_step(run_steps):
    """Run ``run_steps(step_fn)`` with a compiled step; the captured-graph count after each step."""
    seen = []

    def on_step(i, t, x):
        seen.append(counters["stats"]["unique_graphs"])

    run_steps(on_step)
    return seen


@pytest.mark.parametrize("name", ["dpmpp-2m", "unipc-bh2"])
def test_compiled_sampling_step_does_not_recompile_per_step(denoiser, name):
    """20 steps compile one graph per kind of step (first, warm-up, regular, last: at most 4),
    none in the 15 regular steps, and a second grid of another length compiles nothing new."""
    torch._dynamo.reset()
    counters.clear()
    solver = ts.solvers.get(name)
    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    runs = []
    for steps in (20, 23):
        grid = ts.make_grid(denoiser.schedule, steps, "logsnr")

        def run_steps(cb, grid=grid):
            with torch.no_grad():
                sol = ts.integrate(DiffusionTerm(denoiser), solver, grid, x0, callback=cb,
                                   compile={"backend": "aot_eager"})
            eager = ts.integrate(DiffusionTerm(denoiser), solver, grid, x0)
            torch.testing.assert_close(sol.x, eager.x, rtol=1e-12, atol=1e-12)

        runs.append(_graphs_per_step(run_steps))
    first, second = runs
    assert first[-1] <= 4 and first[3:-1] == [first[3]] * len(first[3:-1]), first
    assert second == [first[-1]] * len(second), runs


def test_compiled_etdrk4_step_does_not_recompile_per_step():
    torch._dynamo.reset()
    counters.clear()
    ks = ts.pde.KuramotoSivashinsky(length=22.0, n=32)
    u0 = torch.randn(2, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0 = ks.to_spectral(u0)
    term = ks.term(torch.float64)
    runs = []
    for dt in (0.1, 0.05):
        grid = dt * torch.arange(21, dtype=torch.float64)

        def run_steps(cb, grid=grid):
            sol = ts.integrate(term, "etdrk4", grid, x0, callback=cb, compile={"backend": "aot_eager"})
            torch.testing.assert_close(sol.x, ts.integrate(term, "etdrk4", grid, x0).x)

        runs.append(_graphs_per_step(run_steps))
    assert runs[0] == [1] * 20 and runs[1] == [1] * 20, runs

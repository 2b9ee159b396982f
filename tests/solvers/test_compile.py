"""A fixed-grid sampling loop traces into one graph under ``torch.compile(fullgraph=True)``: no
host sync or data-dependent Python branch inside a step. One solver per step implementation
(the linear multistep step shared by DPM-Solver multistep, DEIS and LMS; the singlestep step;
UniPC; PLMS; PNDM; DPM-2).

The dynamo-only ``eager`` backend checks exactly that (a graph break raises under
``fullgraph=True``) without paying for code generation, so the test stays fast on CPU.
"""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from timestepper.diffusion.grids import make_grid
from timestepper.diffusion.term import DiffusionTerm

torch.set_num_threads(1)

SOLVERS = [
    ("dpmpp-3m", {}),
    ("dpm-solver-3", {}),
    ("unipc-bh1", {"order": 3}),
    ("plms", {}),
    ("pndm", {}),
    ("dpm-2", {}),
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
def setup():
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available")
    torch.manual_seed(0)
    schedule = ts.VPDiscreteSchedule.from_betas("linear")
    den = ts.Denoiser(TinyNet().eval(), schedule, "epsilon")
    return den, make_grid(schedule, 6, "logsnr")


@pytest.mark.parametrize("name,options", SOLVERS, ids=[s[0] for s in SOLVERS])
def test_fixed_grid_loop_compiles_fullgraph(setup, name, options):
    den, grid = setup
    solver = ts.solvers.get(name, **options)
    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    times = grid.t.tolist()

    def run(x, compiled):
        term = DiffusionTerm(den)
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
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)

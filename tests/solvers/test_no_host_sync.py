"""No host synchronisation inside a stochastic sampling step.

Every device-to-host read (``.item()``, ``float(t)``, ``bool(t)``, data-dependent Python branching)
goes through ``aten::_local_scalar_dense``; a dispatch mode records it while the steps run (the
per-grid ``init`` is outside, as it may read coefficients once).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import timestepper as ts
from timestepper.diffusion.term import DiffusionTerm
from timestepper.solvers.inpaint import Inpaint
from timestepper.solvers.smc import SMCInpaint


class _SyncRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.syncs += 1
        return func(*args, **(kwargs or {}))


def _run_steps(den, solver, grid, x):
    """Run every step of ``solver`` (``init`` outside the recorder); the syncs and the result."""
    term = DiffusionTerm(den, generator=torch.Generator().manual_seed(1))
    state, table = solver.init(term, grid, x)
    times = grid.t.tolist()
    rec = _SyncRecorder()
    y = x
    with rec:
        for i in range(grid.steps):
            y, state, _, _ = solver.step(term, times[i], times[i + 1], y, state, table[i])
    return rec.syncs, y


SOLVERS = [
    ("ddpm", {}), ("ddim", {"eta": 0.5}), ("euler-ancestral", {}), ("dpmpp-2s-ancestral", {}),
    ("sde-dpmpp-2m", {}), ("sde-dpmpp-3m", {}), ("euler-maruyama", {}), ("pc", {"n_corrector": 2}),
    ("sde-dpmpp-2m", {"noise": "brownian"}), ("dpm-2-ancestral", {}), ("dpmpp-sde", {}),
    ("dpmpp-sde", {"noise": "brownian"}),
]


@pytest.mark.parametrize("name,opts", SOLVERS)
def test_steps_do_not_sync(gmm2, name, opts):
    den = gmm2.denoiser(ts.VPLinearSchedule(), "epsilon")
    grid = ts.make_grid(den.schedule, 6, "logsnr")
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for solver in (ts.solvers.get(name, **opts),
                   Inpaint(name, torch.zeros(2, dtype=torch.float64), torch.tensor([True, False]),
                           solver_options=opts)):
        syncs, y = _run_steps(den, solver, grid, x)
        assert syncs == 0
        assert torch.isfinite(y).all()


def test_smc_inpaint_steps_do_not_sync(gmm2):
    # The SMC weights, ESS test, resampling and final selection run without host reads.
    den = gmm2.denoiser(ts.VPLinearSchedule(), "epsilon")
    grid = ts.make_grid(den.schedule, 6, "logsnr")
    k = 4
    x = torch.randn(8 * k, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    solver = SMCInpaint(torch.full((2,), 0.3, dtype=torch.float64), torch.tensor([True, False]),
                        particles=k, ess_threshold=0.9)
    syncs, y = _run_steps(den, solver, grid, x)
    assert syncs == 0
    assert torch.isfinite(y).all()
    assert torch.equal(y.view(8, k, 2), y.view(8, k, 2)[:, :1].expand(8, k, 2))

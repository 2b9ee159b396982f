"""DPM-Solver-v3 (Zheng et al. 2023): its special cases, its order, its gain from the statistics.

* With ``l = 1, s = b = 0`` (the paper's data-prediction case, Section 3.1; also what the solver
  runs without statistics) the predictor is DPM-Solver++ with exact Taylor weights: ``dpmpp-2m``
  with ``solver_type="heun"`` at order 2, ``dpmpp-3m`` (Taylor third-order weight; heun weight in
  its second-order warm-up step) at order 3, DDIM at order 1, to float64 rounding; with
  ``l = 0, s = -1, b = 0`` it is the noise-prediction multistep DPM-Solver.
* Empirical order on the exact Gaussian mixture equals the declared predictor order, with and
  without statistics computed from the mixture.
* With statistics computed from the mixture, v3 beats DPM-Solver++(2M/3M) at 5-10 NFE on held-out
  noises (the paper's claim).
"""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.solvers.dpm_v3 import EMS, DPMSolverV3, derivative_weights
from timestepper.tuning.ems import compute_ems

from .test_dpm_adaptive import problem  # noqa: F401 - the exact mixture problem (a fixture) shared here
from .test_no_host_sync import _run_steps as run_steps_recording_syncs

F64 = torch.float64

SCHEDULES = {
    "vp-eps": (ts.VPLinearSchedule, "epsilon", "logsnr"),
    "edm-x0": (lambda: ts.EDMSchedule(0.002, 80.0), "sample", "karras"),
    "flow-v": (ts.RectifiedFlowSchedule, "velocity", "uniform"),
}
PEERS = [(1, "ddim", {}), (2, "dpmpp-2m", {"solver_type": "heun"}), (3, "dpmpp-3m", {"solver_type": "heun"})]


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("steps", [2, 5, 9, 16])
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
def test_unit_statistics_are_dpm_solver_pp(gmm2, schedule, steps, final):
    make, kind, grid = SCHEDULES[schedule]
    den = gmm2.denoiser(make(), kind)
    noise = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    for order, peer, opts in PEERS:
        ref = ts.sample(den, noise, peer, steps=steps, grid=grid, final=final, solver_options=opts)
        for stats in (None, EMS.constant((2,))):
            ours = ts.sample(den, noise, "dpm-solver-v3", steps=steps, grid=grid, final=final,
                             solver_options={"statistics": stats, "order": order, "corrector": False})
            assert (ours - ref).abs().max() <= 1e-12 * max(1.0, float(ref.abs().max())), (order, peer)


@pytest.mark.parametrize("order", [2, 3])
def test_noise_prediction_statistics_are_dpm_solver(gmm2, order):
    den = gmm2.denoiser(ts.VPLinearSchedule(), "epsilon")
    noise = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = ts.sample(den, noise, f"dpm-solver-{order}m", steps=7, solver_options={"solver_type": "heun"})
    ours = ts.sample(den, noise, "dpm-solver-v3", steps=7, solver_options={
        "statistics": EMS.constant((2,), l=0.0, s=-1.0), "order": order, "corrector": False})
    assert (ours - ref).abs().max() <= 1e-12 * float(ref.abs().max())


def test_pseudo_order_derivatives_are_divided_differences():
    # g = 1 + 2u + 3u^2 at u = 0, -0.5, -1.2: the full estimate is exact (g' = 2, g'' = 6); the
    # pseudo estimate of g' is the two-point difference (2 + 3 * (-0.5)) = 0.5.
    nodes = [0.0, -0.5, -1.2]
    g = [1 + 2 * u + 3 * u * u for u in nodes]
    full = derivative_weights(nodes, pseudo=False)
    pseudo = derivative_weights(nodes, pseudo=True)
    assert [sum(w * v for w, v in zip(row, g)) for row in full] == pytest.approx([1.0, 2.0, 6.0], abs=1e-12)
    assert [sum(w * v for w, v in zip(row, g)) for row in pseudo] == pytest.approx([1.0, 0.5, 6.0], abs=1e-12)


# -- order ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def edm_problem(problem):  # noqa: F811 - the imported fixture
    den, noise, ref = problem
    return den, noise, ref, compute_ems(den, (2,), n_samples=128, n_points=96, generator=0)


# (solver, options, declared order, steps (coarse, fine)); "ems" marks statistics from the mixture
CASES = [
    ("dpm-solver-v3", {"order": 1}, 1, (32, 64)),
    ("dpm-solver-v3", {"order": 1, "statistics": "ems"}, 1, (32, 64)),
    ("dpm-solver-v3", {"order": 2, "corrector": False}, 2, (32, 64)),
    ("dpm-solver-v3", {"order": 2, "corrector": False, "statistics": "ems"}, 2, (32, 64)),
    ("dpm-solver-v3", {"order": 3, "corrector": False}, 3, (32, 64)),
    ("dpm-solver-v3", {"order": 3, "corrector": False, "statistics": "ems"}, 3, (32, 64)),
    ("dpm-solver-v3", {"order": 3, "corrector": False, "predictor_pseudo": True}, 2, (32, 64)),
    ("dpm-solver-v3", {"order": 3, "corrector": False, "predictor_pseudo": True, "statistics": "ems"}, 2, (32, 64)),
    ("dpm-solver-v3", {"order": 3, "corrector_pseudo": True}, 2, (64, 128)),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{'-'.join(f'{k}={v}' for k, v in c[1].items())}" for c in CASES])
def test_convergence_order(edm_problem, case):
    name, options, order, (n0, n1) = case
    den, noise, ref, ems = edm_problem
    opts = {**options, "lower_order_final": False}
    if opts.get("statistics") == "ems":
        opts["statistics"] = ems
    assert ts.solvers.get(name, **opts).order == order

    def error(n):
        x = ts.sample(den, noise, name, steps=n, final="sigma_min", solver_options=opts)
        return float((x - ref).norm(dim=-1).mean())

    slope = math.log(error(n0) / error(n1)) / math.log(n1 / n0)
    assert abs(slope - order) <= 0.3, f"{options}: measured order {slope:.2f}, declared {order}"


def test_corrector_does_not_lower_the_order(edm_problem):
    den, noise, ref, ems = edm_problem
    for stats in (None, ems):
        e = [float((ts.sample(den, noise, "dpm-solver-v3", steps=n, final="sigma_min",
                              solver_options={"statistics": stats, "lower_order_final": False})
                    - ref).norm(dim=-1).mean()) for n in (16, 32)]
        assert math.log2(e[0] / e[1]) >= 2.7


# -- the gain from the statistics ---------------------------------------------------------------------

@pytest.mark.slow
def test_statistics_beat_dpm_solver_pp_on_held_out_noise():
    # the d = 64 mixture of docs/dpm_solver_v3.md (measured there: 2.7x to 6.7x lower error)
    gmm = GaussianMixture.random(64, 8, seed=0)
    sched = ts.VPLinearSchedule()
    den = gmm.denoiser(sched, "epsilon")
    ems = compute_ems(den, (64,), n_samples=256, n_points=64, generator=0)
    noise = torch.randn(64, 64, generator=torch.Generator().manual_seed(123), dtype=F64)  # held out
    al, si = sched.alpha_sigma(torch.tensor(sched.t_max, dtype=F64))
    ref = gmm.reference_solution(noise / al, float(si / al), 0.0)

    def error(name, nfe, **opts):
        return float((ts.sample(den, noise, name, steps=nfe, solver_options=opts) - ref).norm(dim=-1).mean())

    for nfe in (5, 6, 8, 10):
        best_pp = min(error("dpmpp-2m", nfe), error("dpmpp-3m", nfe))
        v3 = error("dpm-solver-v3", nfe, statistics=ems)
        assert v3 < 0.5 * best_pp, (nfe, v3, best_pp)


# -- contract details -------------------------------------------------------------------------------

def test_steps_do_not_sync(gmm2):
    den = gmm2.denoiser(ts.VPLinearSchedule(), "epsilon")
    grid = ts.make_grid(den.schedule, 6, "logsnr")
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ems = EMS.constant((2,), l=0.9, s=0.2, b=0.1)
    for solver in (DPMSolverV3(ems), DPMSolverV3(ems, predictor_pseudo=True, corrector_pseudo=True)):
        syncs, y = run_steps_recording_syncs(den, solver, grid, x)
        assert syncs == 0 and torch.isfinite(y).all()


def test_float32_state_gets_float32_coefficients(gmm2):
    den = gmm2.denoiser(ts.VPLinearSchedule(), "epsilon")
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    out = ts.sample(den, noise, "dpm-solver-v3", steps=6, solver_options={"statistics": EMS.constant((2,), l=0.8)})
    ref = ts.sample(den, noise.double(), "dpm-solver-v3", steps=6,
                    solver_options={"statistics": EMS.constant((2,), l=0.8)})
    assert out.dtype == torch.float32 and torch.allclose(out.double(), ref, atol=1e-4)


def test_bad_input_is_refused(gmm2):
    den = gmm2.denoiser(ts.VPLinearSchedule(), "epsilon")
    noise = torch.randn(4, 2, dtype=F64)
    with pytest.raises(TypeError, match="statistics must be an EMS"):
        DPMSolverV3(statistics=3.0)
    with pytest.raises(ValueError, match="order"):
        DPMSolverV3(order=4)
    with pytest.raises(ValueError, match=r"statistics are for samples shaped \(3,\)"):
        ts.sample(den, noise, "dpm-solver-v3", steps=5, solver_options={"statistics": EMS.constant((3,))})
    with pytest.raises(ValueError, match="strictly increasing"):
        EMS(torch.tensor([0.0, 0.0]), torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="one row per log_snr point"):
        EMS(torch.tensor([0.0, 1.0]), torch.zeros(3, 2), torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="EMS.to_dict"):
        ts.sample(den, noise, "dpm-solver-v3", steps=5, solver_options={"statistics": {"l": 1}})

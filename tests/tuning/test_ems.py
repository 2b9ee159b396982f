"""Empirical model statistics (DPM-Solver-v3): estimated from the model, saved and reloaded with it.

* On a Gaussian the statistics are closed form: ``sigma eps = l (x - alpha mu)`` with
  ``l = 1 / (1 + c e^{2 lambda})``, so ``f = -l mu`` is the same on every trajectory: ``s = 0`` and
  ``b = f' = -mu dl/dlambda``. :func:`compute_ems` must recover them, and with them ``g`` is
  constant, so DPM-Solver-v3 is exact up to the interpolation of the statistics.
* Save/load round trip; statistics of another model, schedule or prediction type are refused
  unless forced, by :meth:`EMS.load`, by the solver and through a saved solver schedule.
* The ``"ems"`` tuning method returns a schedule that runs DPM-Solver-v3 with the statistics.
"""

from __future__ import annotations

import json

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.solvers.dpm_v3 import EMS, model_fingerprint
from timestepper.solvers.schedule import SolverSchedule
from timestepper.tuning import ems as ems_module
from timestepper.tuning.ems import compute_ems, paper_options

F64 = torch.float64
MU = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
C = torch.tensor([0.3, 1.5, 0.05], dtype=F64)


@pytest.fixture(scope="module")
def gaussian():
    gmm = GaussianMixture(torch.ones(1, dtype=F64), MU[None], C[None])
    den = gmm.denoiser(ts.VPLinearSchedule(), "epsilon")
    return gmm, den, compute_ems(den, (3,), n_samples=16, n_points=257, generator=0)


def test_gaussian_statistics_are_recovered(gaussian):
    _, _, ems = gaussian
    e2 = torch.exp(2 * ems.log_snr)[:, None]
    l_exact = 1 / (1 + C * e2)
    dl_exact = -2 * C * e2 / (1 + C * e2) ** 2
    assert torch.allclose(ems.l, l_exact, atol=1e-6)
    assert ems.s.abs().max() == 0.0
    assert torch.allclose(ems.b[1:-1], -MU * dl_exact[1:-1], atol=2e-3 * float(dl_exact.abs().max()))


def test_gaussian_statistics_make_v3_nearly_exact(gaussian):
    gmm, den, ems = gaussian
    sched = den.schedule
    noise = torch.randn(32, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    al, si = sched.alpha_sigma(torch.tensor(sched.t_max, dtype=F64))
    lam_end = float(ems.log_snr[-1])
    ref = gmm.reference_solution(noise / al, float(si / al), float(torch.exp(torch.tensor(-lam_end))))

    def error(name, **opts):
        x = ts.sample(den, noise, name, steps=5, final="sigma_min", solver_options=opts)
        return float((x / sched.alpha_sigma(torch.tensor(sched.t_min, dtype=F64))[0] - ref).norm(dim=-1).mean())

    v3 = error("dpm-solver-v3", statistics=ems, order=1)
    assert v3 < 5e-3 * error("dpmpp-2m") and v3 < 5e-3 * error("dpmpp-3m")


def test_header_records_model_and_cost(gaussian):
    _, den, ems = gaussian
    fp = model_fingerprint(den)
    assert {k: ems.header[k] for k in fp} == json.loads(json.dumps(fp))
    assert ems.header["n_samples"] == 16 and ems.header["n_points"] == 257
    # trajectory (256 steps) + 3 calls per point for the Jacobian probe, one batch
    assert ems.header["model_calls"] == 256 + 3 * 257 and ems.header["seconds"] > 0


def test_save_load_round_trip_and_refusals(gaussian, tmp_path):
    _, den, ems = gaussian
    path = tmp_path / "ems.pt"
    ems.save(path)
    back = EMS.load(path, den)
    for name in ("log_snr", "l", "s", "b"):
        assert torch.equal(getattr(back, name), getattr(ems, name))
    assert back.header == json.loads(json.dumps(ems.header))
    other = GaussianMixture(torch.ones(1, dtype=F64), MU[None] + 0.1, C[None]).denoiser(ts.VPLinearSchedule(),
                                                                                         "epsilon")
    with pytest.raises(ValueError, match="computed for another model"):
        EMS.load(path, other)
    assert EMS.load(path, other, force=True).header == back.header
    edm = GaussianMixture(torch.ones(1, dtype=F64), MU[None], C[None]).denoiser(ts.EDMSchedule(0.002, 80.0), "epsilon")
    with pytest.raises(ValueError, match="computed for another schedule"):
        EMS.load(path, edm)
    x0 = GaussianMixture(torch.ones(1, dtype=F64), MU[None], C[None]).denoiser(ts.VPLinearSchedule(), "sample")
    with pytest.raises(ValueError, match="computed for another prediction"):
        EMS.load(path, x0)
    noise = torch.randn(4, 3, dtype=F64)
    with pytest.raises(ValueError, match="computed for another model"):
        ts.sample(other, noise, "dpm-solver-v3", steps=5, solver_options={"statistics": str(path)})
    ts.sample(other, noise, "dpm-solver-v3", steps=5, solver_options={"statistics": str(path), "force": True})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EMS.load(tmp_path / "missing.pt")
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a DPM-Solver-v3 statistics file"):
        EMS.load(tmp_path / "bad.pt")


def test_inline_statistics_survive_the_schedule_json(gaussian, tmp_path):
    _, den, ems = gaussian
    times = tuple(ts.make_grid(den.schedule, 6, "logsnr").t.tolist())
    sched = SolverSchedule(times, (), solver="dpm-solver-v3", solver_options={"statistics": ems.to_dict()})
    sched.save(tmp_path / "s.json")
    loaded = ts.load_schedule(tmp_path / "s.json") if hasattr(ts, "load_schedule") else SolverSchedule.load(
        tmp_path / "s.json")
    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    grid = torch.tensor(times, dtype=F64)
    a = ts.sample(den, noise, sched.build_solver(), grid=grid)
    b = ts.sample(den, noise, loaded.build_solver(), grid=grid)
    c = ts.sample(den, noise, "dpm-solver-v3", grid=grid, solver_options={"statistics": ems})
    assert torch.equal(a, b) and torch.equal(a, c)


def test_bad_arguments_are_refused(gaussian):
    _, den, _ = gaussian
    with pytest.raises(TypeError, match="denoiser must be a timestepper Denoiser"):
        compute_ems(lambda x, t: x, (3,))
    with pytest.raises(ValueError, match="jacobian"):
        compute_ems(den, (3,), n_samples=4, n_points=8, jacobian="exact")
    with pytest.raises(ValueError, match="lam_range"):
        compute_ems(den, (3,), n_samples=4, n_points=8, lam_range=(2.0, -1.0))


def test_jvp_and_differences_agree(gaussian):
    _, den, _ = gaussian
    a = compute_ems(den, (3,), n_samples=8, n_points=17, generator=1)
    b = compute_ems(den, (3,), n_samples=8, n_points=17, generator=1, jacobian="jvp")
    assert torch.allclose(a.l, b.l, atol=1e-7) and b.header["jacobian"] == "jvp"


def test_paper_options_follow_the_nfe():
    assert paper_options(5) == {"predictor_pseudo": True, "lower_order_final": False, "corrector": True}
    assert paper_options(8)["corrector"] and not paper_options(8)["predictor_pseudo"]
    assert not paper_options(10)["corrector"]


def test_ems_method_returns_a_runnable_schedule(tmp_path):
    gmm = GaussianMixture.random(4, 3, seed=0)
    den = gmm.denoiser(ts.VPLinearSchedule(), "epsilon")
    noise = torch.randn(16, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    path = str(tmp_path / "ems.pt")
    sched = ts.tuning.tune(den, nfe=5, method="ems", noise=noise,
                           reference_steps=200, n_samples=64, n_points=48, statistics_path=path)
    assert ems_module.ems_method.__name__ == "ems_method"
    assert sched.solver == "dpm-solver-v3" and sched.steps == () and sched.nfe == 5
    assert sched.solver_options["statistics"] == path
    found = sched.provenance["found"]
    assert found["method"] == "ems" and found["ems"]["n_samples"] == 64 and found["ems"]["model_calls"] > 0
    grid = torch.tensor(sched.times, dtype=F64)
    sol = ts.sample(den, noise, sched.build_solver(), grid=grid, return_solution=True)
    assert sol.stats.nfe == 5
    dpmpp = ts.sample(den, noise, "dpmpp-2m", grid=grid)
    ref = ts.sample(den, noise, "dpmpp-3m", steps=200)
    assert (sol.x - ref).norm(dim=-1).mean() < (dpmpp - ref).norm(dim=-1).mean()

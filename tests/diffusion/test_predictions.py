"""Prediction types convert exactly into one another."""

import pytest
import torch

import timestepper as ts
from timestepper.diffusion.predictions import PREDICTIONS, canonical_prediction, convert

F64 = torch.float64


@pytest.mark.parametrize("sched", [ts.VPDiscreteSchedule.from_betas("linear"), ts.VPCosineSchedule(),
                                   ts.EDMSchedule(), ts.RectifiedFlowSchedule(), ts.VESchedule()],
                         ids=repr)
def test_round_trip_through_every_prediction(sched):
    g = torch.Generator().manual_seed(0)
    t = torch.tensor(sched.t_min + 0.37 * (sched.t_max - sched.t_min), dtype=F64)
    x0 = torch.randn(4, 3, generator=g, dtype=F64)
    eps = torch.randn(4, 3, generator=g, dtype=F64)
    x = sched.alpha(t) * x0 + sched.sigma(t) * eps
    truth = {"sample": x0, "epsilon": eps}
    for src in PREDICTIONS:
        m = convert(x0, x, t, sched, "sample", src)
        for dst in ("sample", "epsilon"):
            assert torch.allclose(convert(m, x, t, sched, src, dst), truth[dst], atol=1e-9), (src, dst)


def test_velocity_is_the_time_derivative_of_the_interpolant():
    rf = ts.RectifiedFlowSchedule()
    x0, eps = torch.randn(5, 2, dtype=F64), torch.randn(5, 2, dtype=F64)
    t = torch.tensor(0.3, dtype=F64)
    x = (1 - t) * x0 + t * eps
    assert torch.allclose(convert(x0, x, t, rf, "sample", "velocity"), eps - x0, atol=1e-12)


def test_unknown_prediction_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown prediction 'mu'.*epsilon.*velocity"):
        canonical_prediction("mu")
    with pytest.raises(ValueError, match="unknown prediction"):
        ts.Denoiser(lambda x, t: x, ts.EDMSchedule(), "mu")


@pytest.mark.parametrize("sched", [ts.VPDiscreteSchedule.from_betas("linear"), ts.EDMSchedule(),
                                   ts.RectifiedFlowSchedule()], ids=repr)
def test_conversion_coefficients_convert_the_network_output(sched):
    """The diffusion term's per-grid table: ``x0 = a x + b m`` and ``eps = c x + d m`` recover the
    truth from every prediction type, and equal the separate data/noise coefficient functions."""
    from timestepper.diffusion.predictions import (
        conversion_coefficients,
        data_coefficients,
        noise_coefficients,
    )

    g = torch.Generator().manual_seed(1)
    t = sched.t_min + torch.tensor([0.1, 0.5, 0.9], dtype=F64) * (sched.t_max - sched.t_min)
    x0, eps = torch.randn(3, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)
    x = sched.alpha(t) * x0 + sched.sigma(t) * eps
    for kind in PREDICTIONS:
        m = convert(x0, x, t, sched, "sample", kind)
        a, b, c, d = conversion_coefficients(kind, sched, t)
        assert torch.allclose(a * x + b * m, x0, atol=1e-9), kind
        assert torch.allclose(c * x + d * m, eps, atol=1e-9), kind
        assert all(torch.equal(u, v) for u, v in zip((a, b, c, d), (*data_coefficients(kind, sched, t),
                                                                    *noise_coefficients(kind, sched, t)))), kind


def test_conversion_coefficients_cached_on_a_grid_follow_the_schedule_and_kind():
    """The per-grid cache of ``DiffusionTerm.points`` is keyed by prediction kind and schedule:
    one grid used with another schedule or kind gets that one's coefficients."""
    from timestepper.diffusion.term import DiffusionTerm

    vp, cos = ts.VPDiscreteSchedule.from_betas("linear"), ts.VPDiscreteSchedule.from_betas("scaled_linear")
    grid = ts.make_grid(vp, 5, "logsnr")
    x = torch.zeros(3, 2, dtype=torch.float64)
    for sched in (vp, cos, vp):
        for kind in ("epsilon", "sample", "velocity"):
            term = DiffusionTerm(ts.Denoiser(lambda x, t: x, sched, kind))
            got = term.points(grid, x)
            fresh = grid.__dict__.pop("_conversion_coefficients")
            want = term.points(grid, x)
            grid.__dict__["_conversion_coefficients"] = fresh
            for p, q in zip(got, want):
                assert (p.a, p.b, p.c, p.d) == (q.a, q.b, q.c, q.d)
                assert torch.equal(p.t, q.t) and p.t is not q.t

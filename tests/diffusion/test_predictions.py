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

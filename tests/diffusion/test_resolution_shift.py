"""The resolution-aware flow time shift (SD3's sqrt(m / n)) and the time-shift map (SD3's, and
Lumina-Next's in its own time convention) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from timestepper.diffusion.grids import make_grid, resolution_shift


def test_resolution_shift_is_the_square_root_of_the_token_ratio():
    assert resolution_shift(4096, 1024) == 2.0  # 1024^2 vs 512^2 px at 16 px per token
    assert resolution_shift(16384, 1024) == 4.0
    assert resolution_shift(1024, 4096) == 0.5
    with pytest.raises(ValueError, match="tokens must be a number > 0"):
        resolution_shift(0, 1024)


def test_resolution_shift_on_a_flow_grid_by_hand():
    """4 uniform steps on [0, 1], shift 2: t' = 2t / (1 + t) -> 1, 6/7 (t=.75), 2/3, 2/5, 0."""
    flow = ts.RectifiedFlowSchedule()
    g = make_grid(flow, 4, "uniform", shift="resolution", tokens=4096, base_tokens=1024)
    want = [1.0, 1.5 / 1.75, 1.0 / 1.5, 0.5 / 1.25, 0.0]
    assert g.t.tolist() == pytest.approx(want, abs=1e-15)
    assert torch.equal(g.t, make_grid(flow, 4, "uniform", shift=2.0).t)
    # Lumina-Next's form in its own time s = 1 - t (0 = noise): s' = s / (s + k - k s)
    s = 0.25
    assert 1 - want[1] == pytest.approx(s / (s + 2.0 - 2.0 * s), abs=1e-15)
    # ... which is a logistic function of logit time: s' = sigmoid(logit(s) - log k), at every time
    lumina_s = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)  # 1 - t of the interior times
    shifted = torch.sigmoid(torch.logit(lumina_s) - math.log(2.0))
    torch.testing.assert_close(1 - g.t[1:-1], shifted, rtol=0, atol=1e-15)


def test_resolution_shift_needs_both_token_counts_and_nothing_else():
    flow = ts.RectifiedFlowSchedule()
    with pytest.raises(ValueError, match=r"needs grid_options \['base_tokens'\]"):
        make_grid(flow, 4, "uniform", shift="resolution", tokens=4096)
    with pytest.raises(ValueError, match=r"grid options \['tokens'\] are not used"):
        make_grid(flow, 4, "uniform", tokens=4096)
    with pytest.raises(ValueError, match='shift must be a number > 0 or "resolution"'):
        make_grid(flow, 4, "uniform", shift="auto")
    x = ts.sample(ts.Denoiser(lambda x, t: -x, flow, "velocity"), torch.ones(2, dtype=torch.float64),
                  "euler", 4, "uniform", shift="resolution", grid_options={"tokens": 64, "base_tokens": 16},
                  return_solution=True)
    assert x.extras["grid"].t.tolist() == pytest.approx(make_grid(flow, 4, "uniform", shift=2.0).t.tolist())
    assert math.isfinite(float(x.x.sum()))

"""Fixtures shared by the solver tests."""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts


@pytest.fixture(scope="module")
def problem(gmm2):
    """The 2-D mixture's sample-prediction denoiser on an EDM schedule (sigma 0.1 to 80), 16
    noises and their exact probability-flow solutions at sigma = 0.1 (the BDIA order tests)."""
    smin, smax = 0.1, 80.0
    den = gmm2.denoiser(ts.EDMSchedule(smin, smax), "sample")
    noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = gmm2.reference_solution(noise * math.sqrt(1 + smax**2), s_start=smax, s_end=smin)
    return den, noise, ref

"""Tiny models for the quantization tests: a random 8x8 U-Net (flow matching, velocity) whose
output layer is not zero, quantized once per module by each method with a quick calibration."""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from timestepper import quantize as tq
from timestepper.train import make_model

SHAPE = (1, 8, 8)
CAL = tq.Calibration(steps=6, samples=48, grid="uniform")


def tiny(schedule=None, channels=(8, 16), seed: int = 0):
    torch.manual_seed(seed)
    schedule = schedule or ts.RectifiedFlowSchedule()
    model = make_model("unet", {"size": 8, "channels": list(channels), "emb_dim": 8}, schedule).eval()
    torch.nn.init.normal_(model.net.out[-1].weight, std=0.1)
    return model


@pytest.fixture(scope="module")
def teacher():
    return ts.Denoiser(tiny(), ts.RectifiedFlowSchedule(), "velocity")


@pytest.fixture(scope="module")
def quantized(teacher):
    return {m: tq.quantize(teacher, m, SHAPE, calibration=CAL, tiar_iters=100) for m in tq.METHODS}


def noise(n: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(seed))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())

"""A tiny float64 U-Net (one down, one up level, a skip and a time channel) for exactness tests
of inversion and gradients on a convolutional model."""

from __future__ import annotations

import torch
from torch import nn

import timestepper as ts


class TinyUNet(nn.Module):
    def __init__(self, channels: int = 1, width: int = 8, classes: int = 0) -> None:
        super().__init__()
        self.inp = nn.Conv2d(channels + 1, width, 3, padding=1)
        self.down = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(width, width, 2, stride=2)
        self.out = nn.Conv2d(2 * width, channels, 3, padding=1)
        self.label = nn.Embedding(classes, width) if classes else None

    def forward(self, x, t, cond=None):
        tt = t.to(x.dtype).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        h = torch.nn.functional.silu(self.inp(torch.cat([x, tt], 1)))
        if cond is not None:
            h = h + cond.reshape(1, -1, 1, 1)
        u = self.up(torch.nn.functional.silu(self.down(h)))
        return self.out(torch.cat([h, u], 1))


def tiny_unet_denoiser(seed: int = 0, cond=None) -> ts.Denoiser:
    torch.manual_seed(seed)
    net = TinyUNet().double()
    return ts.Denoiser(net, ts.VPLinearSchedule(), "epsilon",
                       model_kwargs=None if cond is None else {"cond": cond})

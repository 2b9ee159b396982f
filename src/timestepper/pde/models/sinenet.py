"""SineNet (Zhang, Helwig, Yu & Ji 2024, "SineNet: Learning Temporal Dynamics in Time-Dependent
Partial Differential Equations", ICLR), in 1-D and 2-D with circular padding for periodic domains.

A U-Net's skip connection joins features of the encoder (the input's time) with features of the
decoder (which have already been evolved towards the output's time): the two are temporally
misaligned (sec. 3 of the paper). SineNet splits the evolution into ``K`` sequential *waves*, each
a small U-Net that advances the latent state by a fraction of the step, so the misalignment inside
each wave is small:

* ``x_0 = P(u)`` (a 3-point circular convolution), ``x_k = x_{k-1} + W_k(x_{k-1})`` (the residual
  between waves), ``output = Q(x_K)``;
* inside a wave the skip connections carry the features of *that* wave's down path only;
* disentangled down path: at every level below the first, the wave's input downsampled to that
  level is concatenated to the features (the paper's separation of the parallel, multi-scale
  processing from the sequential evolution);
* average-pool down-sampling, periodic (circularly padded) linear interpolation up-sampling,
  blocks of two circular convolutions with GroupNorm(1) and GELU, and a 1x1 residual shortcut.

The paper's 2-D model interpolates bicubically; here linear / bilinear interpolation is used so
1-D and 2-D share one code path. Shifting the input by a multiple of ``2 ** levels`` grid points
shifts the output by the same amount (all operations are periodic and pooling is aligned).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ._checks import check_architecture


def _conv(dim: int):
    return nn.Conv1d if dim == 1 else nn.Conv2d


class ConvBlock(nn.Module):
    """``gelu(norm(conv(gelu(norm(conv(x)))))) + shortcut(x)``, circular 3-point convolutions."""

    def __init__(self, cin: int, cout: int, dim: int) -> None:
        super().__init__()
        conv = _conv(dim)
        self.conv1 = conv(cin, cout, 3, padding=1, padding_mode="circular")
        self.norm1 = nn.GroupNorm(1, cout)
        self.conv2 = conv(cout, cout, 3, padding=1, padding_mode="circular")
        self.norm2 = nn.GroupNorm(1, cout)
        self.shortcut = conv(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.norm1(self.conv1(x)))
        h = F.gelu(self.norm2(self.conv2(h)))
        return h + self.shortcut(x)


def periodic_upsample(x: Tensor) -> Tensor:
    """Linear (1-D) or bilinear (2-D) interpolation by 2 of a periodic field: pad one cell
    circularly, interpolate, crop, so the ends see their periodic neighbours."""
    dim = x.ndim - 2
    pad = (1, 1) * dim
    mode = "linear" if dim == 1 else "bilinear"
    up = F.interpolate(F.pad(x, pad, mode="circular"), scale_factor=2, mode=mode,
                       align_corners=False)
    return up[..., 2:-2] if dim == 1 else up[..., 2:-2, 2:-2]


def _pool(x: Tensor) -> Tensor:
    return F.avg_pool1d(x, 2) if x.ndim == 3 else F.avg_pool2d(x, 2)


class Wave(nn.Module):
    """One wave: a U-Net with ``levels`` down-samplings whose skips come from its own down path.

    Args:
        chans: channels per level, ``chans[0]`` at full resolution.
        dim: spatial dimensions.
        disentangle: concatenate the wave input, downsampled, at every level below the first.
    """

    def __init__(self, chans: list[int], dim: int, disentangle: bool) -> None:
        super().__init__()
        self.disentangle = disentangle
        base = chans[0]
        self.down = nn.ModuleList(
            ConvBlock(chans[i] + (base if disentangle and i > 0 else 0), chans[i + 1], dim)
            for i in range(len(chans) - 1)
        )
        self.up = nn.ModuleList(
            ConvBlock(chans[i + 1] + chans[i], chans[i], dim)
            for i in reversed(range(len(chans) - 1))
        )

    def forward(self, x: Tensor) -> Tensor:
        skips = [x]
        dx, h = x, x
        for i, block in enumerate(self.down):
            dx, h = _pool(dx), _pool(h)
            if self.disentangle and i > 0:
                h = torch.cat([h, dx], dim=1)
            h = block(h)
            skips.append(h)
        h = skips.pop()
        for block in self.up:
            h = block(torch.cat([skips.pop(), periodic_upsample(h)], dim=1))
        return h


class SineNet(nn.Module):
    """SineNet on ``(batch, channels, *space)``, ``dim`` 1 or 2.

    Args:
        in_channels, out_channels: field channels.
        hidden: channels at full resolution.
        waves: ``K``, the number of sequential waves (the paper reports accuracy improving
            monotonically with ``K`` at a fixed parameter budget).
        levels: down-samplings per wave; the grid must be divisible by ``2 ** levels``.
        mult: channel multiplier between levels (chosen to meet a parameter budget).
        dim: spatial dimensions.
        disentangle: the paper's disentangled down path (see the module docstring).
        wave_residual: ``x_k = x_{k-1} + W_k(x_{k-1})`` (else ``x_k = W_k(x_{k-1})``).
    """

    def __init__(  # noqa: PLR0913 - the paper's architecture options, all keyword
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        hidden: int = 16,
        waves: int = 4,
        levels: int = 3,
        mult: float = 1.5,
        dim: int = 1,
        disentangle: bool = True,
        wave_residual: bool = True,
    ) -> None:
        super().__init__()
        check_architecture(dim, hidden=hidden, waves=waves, levels=levels)
        if not mult > 0:
            raise ValueError(f"mult must be positive, got {mult!r}")
        self.dim, self.levels, self.wave_residual = dim, levels, bool(wave_residual)
        chans = [max(1, round(hidden * mult**i)) for i in range(levels + 1)]
        conv = _conv(dim)
        self.inp = conv(in_channels, hidden, 3, padding=1, padding_mode="circular")
        self.waves = nn.ModuleList(Wave(chans, dim, disentangle) for _ in range(waves))
        self.out = conv(hidden, out_channels, 3, padding=1, padding_mode="circular")

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != self.dim + 2:
            raise ValueError(
                f"x must be (batch, channels, *space), {self.dim} space dims; got {tuple(x.shape)}"
            )
        factor = 2**self.levels
        if any(s % factor or s < factor for s in x.shape[2:]):
            raise ValueError(
                f"spatial size {tuple(x.shape[2:])} must be a positive multiple of "
                f"2 ** levels = {factor} (levels={self.levels})"
            )
        h = self.inp(x)
        for wave in self.waves:
            h = h + wave(h) if self.wave_residual else wave(h)
        return self.out(h)


__all__ = ["ConvBlock", "SineNet", "Wave", "periodic_upsample"]

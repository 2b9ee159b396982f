"""A modern U-Net for periodic fields in 1-D or 2-D (the "U-Net_mod" of Gupta & Brandstetter 2022,
"Towards Multi-spatiotemporal-scale Generalized PDE Modeling"; the backbone
of PDE-Refiner, Lippe et al. 2023).

Pre-norm residual blocks (GroupNorm, GELU, circular 3-point convolutions) at each resolution,
strided-convolution down-sampling, transposed-convolution up-sampling, skip concatenation, and an
optional scalar conditioning (a time or a refinement step) injected into every block as a
scale and shift (FiLM; Perez et al. 2018) from a sinusoidal embedding (Vaswani et al. 2017).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _conv(dim: int):
    return nn.Conv1d if dim == 1 else nn.Conv2d


def sinusoidal_embedding(c: Tensor, width: int, max_period: float = 1000.0) -> Tensor:
    """``[cos(c w_j), sin(c w_j)]``, ``w_j = max_period^(-j / (width/2))``; ``c`` is ``(B,)``."""
    half = width // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=c.device, dtype=torch.float32) / half
    )
    arg = c.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


class ResidualBlock(nn.Module):
    """``x + conv(gelu(film(norm(conv(gelu(norm(x)))))))`` with a 1x1 skip when channels change."""

    def __init__(self, cin: int, cout: int, dim: int, emb_dim: int | None, groups: int) -> None:
        super().__init__()
        conv = _conv(dim)
        self.norm1 = nn.GroupNorm(math.gcd(groups, cin), cin)
        self.conv1 = conv(cin, cout, 3, padding=1, padding_mode="circular")
        self.norm2 = nn.GroupNorm(math.gcd(groups, cout), cout)
        self.conv2 = conv(cout, cout, 3, padding=1, padding_mode="circular")
        self.film = nn.Linear(emb_dim, 2 * cout) if emb_dim else None
        self.skip = conv(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.norm2(self.conv1(nn.functional.gelu(self.norm1(x))))
        if self.film is not None and emb is not None:
            scale, shift = self.film(emb).chunk(2, dim=1)
            extra = (1,) * (h.ndim - 2)
            h = h * (1 + scale.view(*scale.shape, *extra)) + shift.view(*shift.shape, *extra)
        return self.skip(x) + self.conv2(nn.functional.gelu(h))


class UNet(nn.Module):
    """Modern U-Net on ``(batch, channels, *space)``.

    Args:
        in_channels, out_channels: field channels.
        hidden: channels at the finest level.
        channel_mults: channel multiplier per level (the grid halves between levels, so the
            size must be divisible by ``2 ** (len(channel_mults) - 1)``).
        dim: spatial dimensions, 1 or 2.
        conditioned: accept a scalar ``cond`` of shape ``(B,)`` (time or refinement step).
        groups: GroupNorm groups.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        hidden: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        dim: int = 1,
        conditioned: bool = False,
        groups: int = 8,
    ) -> None:
        super().__init__()
        if dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2, got {dim!r}")
        conv = _conv(dim)
        convT = nn.ConvTranspose1d if dim == 1 else nn.ConvTranspose2d
        self.dim, self.levels, self.hidden = dim, len(channel_mults), hidden
        emb_dim = 4 * hidden if conditioned else None
        self.embed = (
            nn.Sequential(nn.Linear(hidden, emb_dim), nn.GELU(), nn.Linear(emb_dim, emb_dim))
            if conditioned
            else None
        )
        self.inp = conv(in_channels, hidden, 3, padding=1, padding_mode="circular")
        chans = [hidden * m for m in channel_mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = hidden
        for i, ch in enumerate(chans):
            self.down.append(ResidualBlock(c, ch, dim, emb_dim, groups))
            c = ch
            if i < len(chans) - 1:
                self.downsample.append(conv(c, c, 3, stride=2, padding=1, padding_mode="circular"))
        self.mid = nn.ModuleList([ResidualBlock(c, c, dim, emb_dim, groups) for _ in range(2)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chans))):
            self.up.append(ResidualBlock(c + ch, ch, dim, emb_dim, groups))
            c = ch
            if i > 0:
                self.upsample.append(convT(c, c, 2, stride=2))
        self.out_norm = nn.GroupNorm(math.gcd(groups, c), c)
        self.out = conv(c, out_channels, 3, padding=1, padding_mode="circular")

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != self.dim + 2:
            raise ValueError(
                f"x must be (batch, channels, *space), {self.dim} space dims; got {tuple(x.shape)}"
            )
        factor = 2 ** (self.levels - 1)
        if any(s % factor for s in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be divisible by {factor}")
        emb = None
        if self.embed is not None:
            if cond is None:
                raise ValueError("this UNet is conditioned: pass cond of shape (batch,)")
            emb = self.embed(sinusoidal_embedding(cond.expand(x.shape[0]), self.hidden))
        h = self.inp(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        for block in self.mid:
            h = block(h, emb)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.out(nn.functional.gelu(self.out_norm(h)))


__all__ = ["ResidualBlock", "UNet", "sinusoidal_embedding"]

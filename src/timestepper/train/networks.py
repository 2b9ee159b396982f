"""Small reference networks that train on a laptop CPU.

* :class:`MLP`: a residual MLP with a sinusoidal time embedding, for low-dimensional data.
* :class:`UNet`: a small U-Net (Ronneberger et al. 2015; in the form of Ho et al. 2020, with
  residual blocks, GroupNorm and an added time embedding) for 8x8 to 28x28 images.

Both take ``(x, c_noise, labels=None)``: ``c_noise`` is a scalar per sample (the network never
sees the schedule; :class:`~timestepper.train.model.DenoisingModel` maps the schedule's time to it).
With ``num_classes > 0`` a class embedding is added to the time embedding; index ``num_classes``
is the "no label" token used by label dropout and classifier-free guidance (Ho & Salimans 2022).

Networks are registered by name in :data:`NETWORKS` so a checkpoint's JSON config rebuilds them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def timestep_embedding(c: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of a scalar per sample (Vaswani et al. 2017, Sec. 3.5; as used for
    diffusion time by Ho et al. 2020): ``[cos(c w_k), sin(c w_k)]`` with
    ``w_k = max_period^(-k / (dim/2))``."""
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=c.device, dtype=torch.float32) / half
    )
    args = c.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class _Conditioning(nn.Module):
    """Time (and optional class) embedding shared by both networks."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_classes = num_classes
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, 4 * dim))
        self.label = nn.Embedding(num_classes + 1, 4 * dim) if num_classes > 0 else None

    def forward(self, c_noise: Tensor, labels: Tensor | None, batch: int) -> Tensor:
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(batch)
        emb = self.mlp(timestep_embedding(c_noise, self.dim))
        if self.label is not None:
            if labels is None:
                labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=emb.device)
            emb = emb + self.label(labels)
        elif labels is not None:
            raise ValueError("labels were given to a network built with num_classes=0")
        return emb


class MLP(nn.Module):
    """Residual MLP ``x (B, dim) -> (B, dim)`` conditioned on a time embedding.

    Args:
        dim: data dimension.
        hidden: width.
        depth: number of residual blocks.
        emb_dim: sinusoidal embedding size.
        num_classes: number of classes for conditioning (0: unconditional).
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 128,
        depth: int = 3,
        emb_dim: int = 32,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.cond = _Conditioning(emb_dim, num_classes)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "emb": nn.Linear(4 * emb_dim, hidden),
                    "net": nn.Sequential(
                        nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
                    ),
                }
            )
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        """Output ``(B, dim)`` for inputs ``(B, dim)``, time inputs and optional labels."""
        emb = self.cond(c_noise, labels, x.shape[0])
        h = self.inp(x)
        for blk in self.blocks:
            h = h + blk["net"](h + blk["emb"](emb))
        return self.out(h)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int) -> None:
        super().__init__()
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.c1(nn.functional.silu(self.n1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.c2(nn.functional.silu(self.n2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """Small U-Net ``(B, C, H, W) -> (B, C, H, W)``; one residual block per level on the way
    down, two on the way up (one per skip), stride-2 convolutions down and nearest upsampling.

    Args:
        in_channels: image channels.
        size: image side (``H = W``); must be divisible by ``2^(len(channels) - 1)``.
        channels: width per level, e.g. ``(32, 64)`` for 8x8, ``(32, 64, 64)`` for 16x16/28x28.
        emb_dim: sinusoidal embedding size.
        num_classes: number of classes for conditioning (0: unconditional).
    """

    def __init__(
        self,
        in_channels: int = 1,
        size: int = 8,
        channels: tuple[int, ...] = (32, 64),
        emb_dim: int = 32,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels:
            raise ValueError("channels must name at least one level")
        if size % (2 ** (len(channels) - 1)):
            raise ValueError(
                f"size={size} must be divisible by 2^(levels-1)={2 ** (len(channels) - 1)} "
                f"for channels={channels}"
            )
        self.size = size
        e = 4 * emb_dim
        self.cond = _Conditioning(emb_dim, num_classes)
        self.inp = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        prev = channels[0]
        for i, ch in enumerate(channels):
            self.down.append(_ResBlock(prev, ch, e))
            self.pool.append(
                nn.Conv2d(ch, ch, 3, stride=2, padding=1)
                if i < len(channels) - 1
                else nn.Identity()
            )
            prev = ch
        self.mid = _ResBlock(prev, prev, e)
        self.up = nn.ModuleList()
        for ch in reversed(channels):
            self.up.append(_ResBlock(prev + ch, ch, e))
            prev = ch
        self.out = nn.Sequential(_norm(prev), nn.SiLU(), nn.Conv2d(prev, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        """Output shaped like ``x`` ``(B, C, size, size)`` for time inputs and optional labels."""
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            raise ValueError(
                f"UNet built for {self.size}x{self.size} images, got {tuple(x.shape[-2:])}"
            )
        emb = self.cond(c_noise, labels, x.shape[0])
        h = self.inp(x)
        skips = []
        for blk, pool in zip(self.down, self.pool, strict=False):
            h = blk(h, emb)
            skips.append(h)
            h = pool(h)
        h = self.mid(h, emb)
        for blk in self.up:
            s = skips.pop()
            if h.shape[-1] != s.shape[-1]:
                h = nn.functional.interpolate(h, size=s.shape[-2:], mode="nearest")
            h = blk(torch.cat([h, s], dim=1), emb)
        return self.out(h)


NETWORKS: dict[str, type[nn.Module]] = {"mlp": MLP, "unet": UNet}


def build_network(name: str, **kwargs) -> nn.Module:
    """Build a registered network by name (``mlp``, ``unet``) from its hyper-parameters."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose from {', '.join(NETWORKS)}")
    if "channels" in kwargs:
        kwargs["channels"] = tuple(kwargs["channels"])
    return NETWORKS[name](**kwargs)

"""Fourier Neural Operators in 1-D and 2-D (Li et al. 2021, "Fourier Neural Operator for
Parametric Partial Differential Equations", eqs. 2 and 4).

Each layer is ``v <- gelu(W v + K v)`` with ``K v = IFFT(R * FFT(v)[:modes])``: a learned complex
matrix ``R`` per retained Fourier mode (eq. 4) plus a pointwise linear map ``W``. A lifting ``P``
and a two-layer projection ``Q`` map between field channels and the hidden width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SpectralConv1d(nn.Module):
    """``K v`` of eq. 4 in 1-D: the lowest ``modes`` rfft modes mixed by complex weights."""

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(
            scale * torch.randn(in_channels, out_channels, modes, dtype=torch.cfloat)
        )

    def forward(self, v: Tensor) -> Tensor:
        n = v.shape[-1]
        if self.modes > n // 2 + 1:
            raise ValueError(f"modes={self.modes} exceeds the {n // 2 + 1} rfft modes of n={n}")
        vh = torch.fft.rfft(v, dim=-1)
        out = torch.zeros(
            v.shape[0], self.weight.shape[1], n // 2 + 1, dtype=vh.dtype, device=v.device
        )
        out[..., : self.modes] = torch.einsum("bim,iom->bom", vh[..., : self.modes], self.weight)
        return torch.fft.irfft(out, n=n, dim=-1)


class SpectralConv2d(nn.Module):
    """``K v`` of eq. 4 in 2-D: modes ``|k_y| < modes`` (both signs) and ``k_x < modes``."""

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / (in_channels * out_channels)
        shape = (in_channels, out_channels, modes, modes)
        self.w_pos = nn.Parameter(scale * torch.randn(*shape, dtype=torch.cfloat))
        self.w_neg = nn.Parameter(scale * torch.randn(*shape, dtype=torch.cfloat))

    def forward(self, v: Tensor) -> Tensor:
        ny, nx = v.shape[-2:]
        m = self.modes
        if 2 * m > ny or m > nx // 2 + 1:
            raise ValueError(f"modes={m} too large for a {ny}x{nx} grid")
        vh = torch.fft.rfft2(v, dim=(-2, -1))
        out = torch.zeros(
            v.shape[0], self.w_pos.shape[1], ny, nx // 2 + 1, dtype=vh.dtype, device=v.device
        )
        out[..., :m, :m] = torch.einsum("bixy,ioxy->boxy", vh[..., :m, :m], self.w_pos)
        out[..., -m:, :m] = torch.einsum("bixy,ioxy->boxy", vh[..., -m:, :m], self.w_neg)
        return torch.fft.irfft2(out, s=(ny, nx), dim=(-2, -1))


class FNO(nn.Module):
    """An FNO on fields of shape ``(batch, channels, *space)``, ``dim`` 1 or 2.

    Args:
        in_channels, out_channels: field channels in and out.
        width: hidden channels.
        modes: retained Fourier modes per dimension.
        layers: Fourier layers.
        dim: spatial dimensions (1 or 2).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        width: int = 32,
        modes: int = 16,
        layers: int = 4,
        dim: int = 1,
    ) -> None:
        super().__init__()
        if dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2, got {dim!r}")
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        spectral = SpectralConv1d if dim == 1 else SpectralConv2d
        self.dim = dim
        self.lift = conv(in_channels, width, 1)
        self.spectral = nn.ModuleList(spectral(width, width, modes) for _ in range(layers))
        self.pointwise = nn.ModuleList(conv(width, width, 1) for _ in range(layers))
        self.project = nn.Sequential(
            conv(width, 2 * width, 1), nn.GELU(), conv(2 * width, out_channels, 1)
        )

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != self.dim + 2:
            raise ValueError(
                f"x must be (batch, channels, *space), {self.dim} space dims; got {tuple(x.shape)}"
            )
        v = self.lift(x)
        for i, (k, w) in enumerate(zip(self.spectral, self.pointwise)):
            v = k(v) + w(v)
            if i < len(self.spectral) - 1:
                v = nn.functional.gelu(v)
        return self.project(v)


def FNO1d(in_channels: int = 1, out_channels: int = 1, **kwargs) -> FNO:
    """A 1-D :class:`FNO`."""
    return FNO(in_channels, out_channels, dim=1, **kwargs)


def FNO2d(in_channels: int = 1, out_channels: int = 1, **kwargs) -> FNO:
    """A 2-D :class:`FNO`."""
    return FNO(in_channels, out_channels, dim=2, **kwargs)


__all__ = ["FNO", "FNO1d", "FNO2d", "SpectralConv1d", "SpectralConv2d"]

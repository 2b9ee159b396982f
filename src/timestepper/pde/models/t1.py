"""Transform Once (T1; Poli, Massaroli, Berto, Park, Dao, Ré & Ermon 2022, "Transform Once:
Efficient Operator Learning in Frequency Domain", NeurIPS), 1-D and 2-D, with the rFFT.

A frequency-domain model (FDM) such as the FNO pays a forward and an inverse transform in every
layer. T1 transforms once: a pointwise lift in physical space, one orthonormal rFFT, truncation
to a reduced set of low modes, ``layers`` blocks that compute directly on the retained spectrum,
a per-mode head, and one inverse rFFT (the dropped modes are zero). Each block is

    z <- (z + M(phi(C z))) / sqrt(2)

with ``C`` a complex channel mixing per retained mode, ``phi`` the activation applied to the real
and imaginary parts, and ``M`` a complex mixing *across modes* per channel (along each axis in
2-D: first ``k_y``, then ``k_x``, a separable form that keeps the parameter count linear in the
number of modes). Mode mixing makes T1 position-aware: unlike an FNO it is not equivariant to
periodic shifts, by design.

Variance-preserving initialisation (the paper's scheme for reduced-order FDMs): with an
orthonormal transform, keeping ``m`` of ``N`` coefficients of a white input keeps ``m / N`` of its
energy, so a reduced-order FDM collapses its output variance unless the weights before the
inverse transform have variance ``N / (m d_in)`` instead of ``1 / d_in``. Here every block keeps
the per-mode second moment (``E|C|^2 = gain / width`` with the activation's gain,
``E|M|^2 = 1 / modes`` per axis, and the ``1 / sqrt(2)`` residual), and the head carries the
paper's factor, ``E|head|^2 = N / (m_eff * width)``, where ``m_eff`` (:func:`retained_energy`)
counts the coefficients of the full two-sided spectrum that the retained modes fill. The output
variance at initialisation then equals the input's at every depth for white inputs (the paper's
assumption). The activation is ``relu`` by default, whose gain (2) is exact at every input scale;
``gelu`` (gain about 2) and ``sin`` (the paper's choice; small-signal gain 1) only approximately
preserve it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ._checks import check_architecture

ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], float]] = {
    "relu": (F.relu, 2.0),
    "sin": (torch.sin, 1.0),
    "gelu": (F.gelu, 2.0),
}


def _complex_normal(shape: tuple[int, ...], variance: float) -> Tensor:
    """Complex Gaussian with ``E|w|^2 = variance`` (real and imaginary parts each half)."""
    return torch.randn(*shape, dtype=torch.cfloat) * math.sqrt(variance)


def _check_modes(modes: int, space: tuple[int, ...]) -> None:
    if any(2 * modes > n for n in space):
        raise ValueError(
            f"modes={modes} needs a grid of at least {2 * modes} points per dimension "
            f"(2 * modes), got {tuple(space)}"
        )


def retained_energy(modes: int, dim: int) -> float:
    """``m_eff``: the expected energy ``E ||irfft(h)||^2`` (orthonormal, zero outside the retained
    modes) of unit-variance complex coefficients ``h`` on T1's retained modes, i.e. how many
    coefficients of the full two-sided spectrum they fill. 1-D: ``2 m - 3/2`` (``+-k`` for
    ``0 < k < m``, and only the real part of the DC term survives); 2-D: ``m (4 m - 3)`` (the
    ``k_x = 0`` column keeps only its Hermitian part)."""
    return 2 * modes - 1.5 if dim == 1 else float(modes * (4 * modes - 3))


class T1Block(nn.Module):
    """``z <- (z + M(phi(C z))) / sqrt(2)`` on the retained spectrum ``(B, width, *kept)``."""

    def __init__(self, width: int, kept: tuple[int, ...], activation: str) -> None:
        super().__init__()
        self.act, gain = ACTIVATIONS[activation]
        self.channel = nn.Parameter(_complex_normal((width, width, *kept), gain / width))
        self.mode_mix = nn.ParameterList(
            nn.Parameter(_complex_normal((n, n, width), 1.0 / n)) for n in kept
        )

    def forward(self, z: Tensor) -> Tensor:
        spec = "bixy,ioxy->boxy" if z.ndim == 4 else "bix,iox->box"
        h = torch.einsum(spec, z, self.channel.to(z.dtype))
        h = torch.complex(self.act(h.real), self.act(h.imag))
        if h.ndim == 3:
            h = torch.einsum("bix,xzi->biz", h, self.mode_mix[0].to(h.dtype))
        else:
            h = torch.einsum("biyx,yzi->bizx", h, self.mode_mix[0].to(h.dtype))
            h = torch.einsum("biyx,xzi->biyz", h, self.mode_mix[1].to(h.dtype))
        return (z + h) / math.sqrt(2.0)


class T1(nn.Module):
    """Transform Once on ``(batch, channels, *space)``, ``dim`` 1 or 2.

    Args:
        in_channels, out_channels: field channels.
        width: hidden channels.
        modes: retained rFFT modes per dimension (2-D: ``|k_y| < modes``, ``k_x < modes``); the
            grid needs at least ``2 * modes`` points per dimension.
        layers: frequency-domain blocks.
        dim: spatial dimensions.
        activation: ``"relu"`` (default), ``"gelu"`` or ``"sin"``, on real and imaginary parts.
        grid: grid points per dimension (the paper's signal resolution ``N``, which sets the
            variance-preserving head; the model runs on other grids, without that guarantee).
        head_gain: multiplies the head's initial standard deviation; 1 is variance preserving.
            A residual surrogate ``u + T1(u)`` trains better from a small head (the authors'
            code starts its output head near zero), e.g. ``head_gain=1e-3``.
    """

    def __init__(  # noqa: PLR0913 - the paper's architecture options, all keyword
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        width: int = 32,
        modes: int = 16,
        layers: int = 4,
        dim: int = 1,
        activation: str = "relu",
        grid: int,
        head_gain: float = 1.0,
    ) -> None:
        super().__init__()
        check_architecture(dim, width=width, modes=modes, layers=layers, grid=grid)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not head_gain >= 0:
            raise ValueError(f"head_gain must be >= 0, got {head_gain!r}")
        self.dim, self.modes, self.width = dim, modes, width
        _check_modes(modes, (grid,) * dim)
        kept = (modes,) if dim == 1 else (2 * modes, modes)
        self.lift = nn.Parameter(torch.randn(width, in_channels) / math.sqrt(in_channels))
        self.lift_bias = nn.Parameter(torch.zeros(width))
        self.blocks = nn.ModuleList(T1Block(width, kept, activation) for _ in range(layers))
        n_total = grid**dim
        self.head = nn.Parameter(
            _complex_normal(
                (width, out_channels, *kept),
                head_gain**2 * n_total / (width * retained_energy(modes, dim)),
            )
        )

    def _truncate(self, vh: Tensor) -> Tensor:
        m = self.modes
        if self.dim == 1:
            return vh[..., :m]
        return torch.cat([vh[..., :m, :m], vh[..., -m:, :m]], dim=-2)

    def _pad(self, z: Tensor, space: tuple[int, ...]) -> Tensor:
        m, nx = self.modes, space[-1] // 2 + 1
        if self.dim == 1:
            return F.pad(z, (0, nx - m))
        ny = space[0]
        out = z.new_zeros(*z.shape[:-2], ny, nx)
        out[..., :m, :m] = z[..., :m, :]
        out[..., ny - m :, :m] = z[..., m:, :]
        return out

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != self.dim + 2:
            raise ValueError(
                f"x must be (batch, channels, *space), {self.dim} space dims; got {tuple(x.shape)}"
            )
        space = tuple(x.shape[2:])
        _check_modes(self.modes, space)
        dims = tuple(range(2, x.ndim))
        v = torch.einsum("bi...,oi->bo...", x, self.lift.to(x.dtype))
        v = v + self.lift_bias.view(-1, *([1] * self.dim))
        z = self._truncate(torch.fft.rfftn(v, dim=dims, norm="ortho"))
        for block in self.blocks:
            z = block(z)
        spec = "bixy,ioxy->boxy" if self.dim == 2 else "bix,iox->box"
        out = torch.einsum(spec, z, self.head.to(z.dtype))
        return torch.fft.irfftn(self._pad(out, space), s=space, dim=dims, norm="ortho")


__all__ = ["T1", "T1Block", "retained_energy"]

"""Spatiotemporal FNO (ST-FNO) of Spectral-Refiner (Cao, Brarda, Li & Xi 2024, "Spectral-Refiner:
Accurate Fine-Tuning of Spatiotemporal Fourier Neural Operator for Turbulent Flows", its
fig. 3), 1-D or 2-D in space.

A trajectory-to-trajectory learner: a block of ``in_frames`` past frames ``(B, T_in, *space)`` to
the block of the next ``out_frames`` frames ``(B, T_out, *space)``. Space and time are one
Fourier domain:

* lift ``P`` (pointwise) to ``width`` channels on the ``(T_in, *space)`` grid;
* the first spatiotemporal spectral convolution keeps ``modes_t`` time and ``modes`` space modes
  and resamples time to ``T_out`` by its inverse FFT (the paper's latent time dimension), which
  is why it has no pointwise path; then ``layers - 1`` FNO layers ``v <- gelu(K v + W v)``;
* projection ``Q`` to one channel, then the final *linear* spatiotemporal spectral layer
  ``y = q + IFFT(R * FFT(q))`` on the whole space-time spectrum. During training ``R`` is
  truncated to the retained modes like every other layer; Spectral-Refiner fine-tunes ``R`` alone
  *without* truncation (:meth:`SpaceTimeFNO.untruncate`, :meth:`SpaceTimeFNO.fine_tune_parameters`),
  a convex problem for a quadratic loss.

Transforms use ``norm="forward"``, so resampling time keeps amplitudes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ._checks import check_architecture


def _kept(n: int, m: int, full: bool) -> Tensor:
    """Indices of the ``m`` lowest modes along an axis of ``n`` points: ``[0, m)`` for the rFFT
    axis, ``[0, m) u [n - m, n)`` for a full FFT axis."""
    if not full:
        return torch.arange(m)
    return torch.cat([torch.arange(m), torch.arange(n - m, n)])


def check_space_time_modes(modes_t: int, modes: int, time: int, space: tuple[int, ...]) -> None:
    """``2 * modes_t <= time`` and ``2 * modes <= n`` for every space axis, else ValueError."""
    if 2 * modes_t > time:
        raise ValueError(f"modes_t={modes_t} needs at least {2 * modes_t} frames, got {time}")
    if any(2 * modes > n for n in space):
        raise ValueError(
            f"modes={modes} needs a grid of at least {2 * modes} points per dimension "
            f"(2 * modes), got {tuple(space)}"
        )


class SpaceTimeSpectralConv(nn.Module):
    """``K v = IFFT_{T_out}(R * FFT(v)[kept])`` over the axes ``(t, *space)`` of ``(B, C, t,
    *space)``; keeps ``+-modes_t`` time modes, ``+-modes`` (``k_x < modes`` on the last axis)
    space modes, and writes them into a spectrum of ``out_frames`` time points (``None``: the
    input's)."""

    def __init__(self, cin: int, cout: int, modes_t: int, modes: int, dim: int,
                 out_frames: int | None = None) -> None:
        super().__init__()
        self.modes_t, self.modes, self.dim, self.out_frames = modes_t, modes, dim, out_frames
        shape = (cin, cout, 2 * modes_t, *([2 * modes] * (dim - 1)), modes)
        self.weight = nn.Parameter(
            torch.randn(*shape, dtype=torch.cfloat) / (cin * cout)
        )

    def forward(self, v: Tensor) -> Tensor:
        t, space = v.shape[2], tuple(v.shape[3:])
        check_space_time_modes(self.modes_t, self.modes, t, space)
        t_out = self.out_frames or t
        dims = tuple(range(2, v.ndim))
        vh = torch.fft.rfftn(v, dim=dims, norm="forward")
        sizes = (t, *space[:-1], space[-1] // 2 + 1)
        out_sizes = (t_out, *space[:-1], space[-1] // 2 + 1)
        modes = (self.modes_t, *([self.modes] * self.dim))
        for axis, (n, m) in enumerate(zip(sizes, modes), start=2):
            vh = vh.index_select(axis, _kept(n, m, axis < v.ndim - 1).to(v.device))
        letters = "xyz"[: self.dim + 1]
        out = torch.einsum(f"bi{letters},io{letters}->bo{letters}", vh, self.weight.to(vh.dtype))
        for axis, (n, m) in enumerate(zip(out_sizes, modes), start=2):
            full = out.new_zeros(*out.shape[:axis], n, *out.shape[axis + 1 :])
            out = full.index_copy(axis, _kept(n, m, axis < v.ndim - 1).to(v.device), out)
        return torch.fft.irfftn(out, s=(t_out, *space), dim=dims, norm="forward")


class SpectralFilter(nn.Module):
    """The final linear layer ``y = q + IFFT(R * FFT(q))`` over ``(t, *space)`` of ``(B, t,
    *space)``, ``R`` on the full spectrum (zero at initialisation) behind a truncation mask."""

    def __init__(self, frames: int, modes_t: int, modes: int, space: tuple[int, ...]) -> None:
        super().__init__()
        self.frames, self.modes_t, self.modes, self.dim = frames, modes_t, modes, len(space)
        sizes = (frames, *space[:-1], space[-1] // 2 + 1)
        self.weight = nn.Parameter(torch.zeros(*sizes, dtype=torch.cfloat))
        self.truncated = True

    def mask(self, space: tuple[int, ...], device) -> Tensor:
        """1 on the retained modes (all modes once :attr:`truncated` is False), else 0."""
        sizes = (self.frames, *space[:-1], space[-1] // 2 + 1)
        if not self.truncated:
            return torch.ones(sizes, device=device)
        keep = torch.zeros(sizes, device=device)
        modes = (self.modes_t, *([self.modes] * self.dim))
        index = torch.meshgrid(
            *[_kept(n, m, i < len(sizes) - 1) for i, (n, m) in enumerate(zip(sizes, modes))],
            indexing="ij",
        )
        keep[index] = 1.0
        return keep

    def forward(self, q: Tensor) -> Tensor:
        space = tuple(q.shape[2:])
        if q.shape[1] != self.frames or tuple(self.weight.shape[1:-1]) != space[:-1]:
            raise ValueError(
                f"the final spectral layer was built for {self.frames} frames on grid "
                f"{tuple(self.weight.shape[1:])} (rfft), got input {tuple(q.shape[1:])}"
            )
        dims = tuple(range(1, q.ndim))
        qh = torch.fft.rfftn(q, dim=dims, norm="forward")
        r = self.weight.to(qh.dtype) * self.mask(space, q.device)
        return q + torch.fft.irfftn(r * qh, s=(self.frames, *space), dim=dims, norm="forward")


class SpaceTimeFNO(nn.Module):
    """ST-FNO on blocks ``(B, in_frames, *space)`` -> ``(B, out_frames, *space)``.

    Args:
        in_frames, out_frames: frames in and out.
        grid: grid points per space dimension (sizes the untruncated final layer).
        width: hidden channels.
        modes: retained space modes per dimension.
        modes_t: retained time modes (both signs); at most ``min(in_frames, out_frames) // 2``.
        layers: spectral layers before the final one (>= 1; the first resamples time).
        dim: space dimensions, 1 or 2.
    """

    def __init__(  # noqa: PLR0913 - the paper's architecture options, all keyword
        self,
        in_frames: int,
        out_frames: int,
        *,
        grid: int,
        width: int = 16,
        modes: int = 12,
        modes_t: int = 2,
        layers: int = 4,
        dim: int = 1,
    ) -> None:
        super().__init__()
        check_architecture(dim, in_frames=in_frames, out_frames=out_frames, grid=grid,
                           width=width, modes=modes, modes_t=modes_t, layers=layers)
        check_space_time_modes(modes_t, modes, min(in_frames, out_frames), (grid,) * dim)
        conv = nn.Conv2d if dim == 1 else nn.Conv3d
        self.dim, self.in_frames, self.out_frames = dim, in_frames, out_frames
        self.lift = conv(1, width, 1)
        self.first = SpaceTimeSpectralConv(width, width, modes_t, modes, dim, out_frames)
        self.spectral = nn.ModuleList(
            SpaceTimeSpectralConv(width, width, modes_t, modes, dim) for _ in range(layers - 1)
        )
        self.pointwise = nn.ModuleList(conv(width, width, 1) for _ in range(layers - 1))
        self.project = nn.Sequential(conv(width, 2 * width, 1), nn.GELU(), conv(2 * width, 1, 1))
        self.final = SpectralFilter(out_frames, modes_t, modes, (grid,) * dim)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != self.dim + 2 or x.shape[1] != self.in_frames:
            raise ValueError(
                f"x must be (batch, in_frames={self.in_frames}, *space) with {self.dim} space "
                f"dims; got {tuple(x.shape)}"
            )
        v = F.gelu(self.first(self.lift(x.unsqueeze(1))))
        for i, (k, w) in enumerate(zip(self.spectral, self.pointwise)):
            v = k(v) + w(v)
            if i < len(self.spectral) - 1:
                v = F.gelu(v)
        return self.final(self.project(v).squeeze(1))

    def untruncate(self) -> None:
        """Lift the final layer's frequency truncation (Spectral-Refiner's fine-tuning)."""
        self.final.truncated = False

    def fine_tune_parameters(self) -> list[nn.Parameter]:
        """The parameters Spectral-Refiner fine-tunes: the final spectral layer's ``R``."""
        return [self.final.weight]


def freeze_for_spectral_refinement(model: nn.Module) -> SpaceTimeFNO:
    """Spectral-Refiner's fine-tuning set-up on ``model`` (a :class:`SpaceTimeFNO`, or a
    surrogate whose ``net`` is one): untruncate the final layer and make its ``R`` the only
    trainable parameter. Returns the network."""
    net = getattr(model, "net", model)
    if not isinstance(net, SpaceTimeFNO):
        raise TypeError(f"model must be a SpaceTimeFNO or wrap one as .net, got {type(net).__name__}")
    for p in model.parameters():
        p.requires_grad_(False)
    net.untruncate()
    for p in net.fine_tune_parameters():
        p.requires_grad_(True)
    return net


__all__ = [
    "SpaceTimeFNO",
    "SpaceTimeSpectralConv",
    "SpectralFilter",
    "check_space_time_modes",
    "freeze_for_spectral_refinement",
]

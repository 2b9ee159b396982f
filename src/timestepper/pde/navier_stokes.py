"""Two-dimensional incompressible Navier–Stokes in vorticity form with Kolmogorov forcing.

``w_t + u . grad w = nu lap w - alpha w + f``, ``u = (psi_y, -psi_x)``, ``-lap psi = w`` on the
periodic square ``[0, length)^2`` (``x`` the last array axis), with the Kolmogorov forcing
``f = A sin(2 pi k_f y / length)`` (Chandler & Kerswell 2013; Kochkov et al. 2021 use
``A = 1``, ``k_f = 4``, ``alpha = 0.1`` on ``[0, 2 pi)``). The advection is taken in the
conservative form ``div(u w)`` (``div u = 0``), de-aliased by the 2/3 rule.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .equation import SpectralEquation
from .spectral import check_grid, dealias_mask_2d, wavenumbers_fft, wavenumbers_rfft


class NavierStokes2D(SpectralEquation):
    """Vorticity-form 2-D Navier–Stokes; state: vorticity ``w`` of shape ``(*batch, n, n)``.

    Args:
        length: side of the periodic square.
        n: grid points per side (even).
        nu: kinematic viscosity (> 0).
        drag: linear drag ``alpha`` (>= 0).
        forcing_amplitude, forcing_wavenumber: Kolmogorov forcing ``A sin(2 pi k_f y / length)``.
    """

    space_dims = 2

    def __init__(
        self,
        length: float = 2 * math.pi,
        n: int = 64,
        *,
        nu: float = 1e-3,
        drag: float = 0.0,
        forcing_amplitude: float = 0.0,
        forcing_wavenumber: int = 4,
        dealias: bool = True,
    ) -> None:
        check_grid(length, n)
        if not nu > 0:
            raise ValueError(f"nu (viscosity) must be positive, got {nu!r}")
        if drag < 0:
            raise ValueError(f"drag must be >= 0, got {drag!r}")
        self.length, self.n, self.nu, self.drag = float(length), int(n), float(nu), float(drag)
        self.forcing_amplitude, self.forcing_wavenumber = (
            float(forcing_amplitude),
            int(forcing_wavenumber),
        )
        self.dealias = bool(dealias)
        self.kx = wavenumbers_rfft(self.length, n)[None, :]
        self.ky = wavenumbers_fft(self.length, n)[:, None]
        self.kx_odd = wavenumbers_rfft(self.length, n, odd=True)[None, :]
        self.ky_odd = wavenumbers_fft(self.length, n, odd=True)[:, None]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, self.n)

    @property
    def xy(self) -> tuple[Tensor, Tensor]:
        """Float64 coordinates ``(x, y)``, each ``(n, n)`` (``x`` varies along the last axis)."""
        g = torch.arange(self.n, dtype=torch.float64) * (self.length / self.n)
        y, x = torch.meshgrid(g, g, indexing="ij")
        return x, y

    def to_spectral(self, w: Tensor) -> Tensor:
        return torch.fft.rfft2(w, dim=(-2, -1))

    def to_physical(self, w_hat: Tensor) -> Tensor:
        return torch.fft.irfft2(w_hat, s=(self.n, self.n), dim=(-2, -1))

    def symbol(self) -> Tensor:
        return -self.nu * (self.kx**2 + self.ky**2) - self.drag

    def forcing(self) -> Tensor:
        """The forcing field ``f(x, y)`` in float64."""
        _, y = self.xy
        return self.forcing_amplitude * torch.sin(
            2 * math.pi * self.forcing_wavenumber * y / self.length
        )

    def nonlinear_fn(self, cdtype, device):
        n = self.n
        k2 = self.kx**2 + self.ky**2
        inv_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
        ikx = (1j * self.kx_odd).to(device=device, dtype=cdtype)
        iky = (1j * self.ky_odd).to(device=device, dtype=cdtype)
        # u = psi_y, v = -psi_x with psi_hat = w_hat / |k|^2.
        u_op = (1j * self.ky_odd * inv_k2).to(device=device, dtype=cdtype)
        v_op = (-1j * self.kx_odd * inv_k2).to(device=device, dtype=cdtype)
        rdtype = torch.empty((), dtype=cdtype).real.dtype
        mask = dealias_mask_2d(n).to(device=device, dtype=rdtype) if self.dealias else None
        f_hat = None
        if self.forcing_amplitude != 0.0:
            f_hat = torch.fft.rfft2(self.forcing()).to(device=device, dtype=cdtype)
        if mask is not None:
            ikx, iky = ikx * mask, iky * mask
        # The inverse transforms skip their 1/n^2 (norm="forward": one pass over each field
        # fewer); the products then carry n^4, taken out with the advection's sign in the
        # derivative symbols (exact for a power-of-two n).
        ikx, iky = ikx * (-1.0 / n**4), iky * (-1.0 / n**4)

        def nonlinear(t, w_hat: Tensor) -> Tensor:
            if mask is not None:
                w_hat = w_hat * mask
            w = torch.fft.irfft2(w_hat, s=(n, n), dim=(-2, -1), norm="forward")
            u = torch.fft.irfft2(u_op * w_hat, s=(n, n), dim=(-2, -1), norm="forward")
            v = torch.fft.irfft2(v_op * w_hat, s=(n, n), dim=(-2, -1), norm="forward")
            minus_adv = ikx * torch.fft.rfft2(u * w, dim=(-2, -1)) + iky * torch.fft.rfft2(
                v * w, dim=(-2, -1)
            )
            return minus_adv if f_hat is None else minus_adv + f_hat

        return nonlinear

    def taylor_green(self, t: float, amplitude: float = 1.0, wavenumber: int = 1) -> Tensor:
        """Taylor–Green vorticity ``w = A sin(q x) sin(q y) exp(-(2 nu q^2 + alpha) t)``,
        ``q = 2 pi m / length``; an exact steady-shape solution without forcing (Taylor & Green
        1937): ``w`` is proportional to ``psi``, so the advection vanishes identically."""
        x, y = self.xy
        q = 2 * math.pi * wavenumber / self.length
        decay = math.exp(-(2 * self.nu * q * q + self.drag) * t)
        return amplitude * decay * torch.sin(q * x) * torch.sin(q * y)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not isinstance(v, Tensor))
        return f"{type(self).__name__}({params})"


__all__ = ["NavierStokes2D"]

"""One-dimensional periodic PDEs with a quadratic flux: KS, Burgers, KdV, heat/advection-diffusion.

Each is ``u_t = L u - g (u^2)_x`` with a diagonal linear operator ``L`` and flux coefficient ``g``
(``u u_x = (u^2)_x / 2``). In Fourier space (``rfft`` on ``[0, length)`` with ``n`` points)
the nonlinear term is ``N(u_hat) = -g i k FFT(IFFT(u_hat)^2)``, de-aliased by the 2/3 rule on the
input and the output unless ``dealias=False``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .equation import SpectralEquation
from .spectral import check_grid, dealias_mask_1d, wavenumbers_rfft


class QuadraticFluxEquation1D(SpectralEquation):
    """``u_t = L u - g (u^2)_x`` on ``[0, length)`` with ``n`` points (the 1-D base class)."""

    space_dims = 1
    flux: float = 0.0

    def __init__(self, length: float, n: int, *, dealias: bool = True) -> None:
        check_grid(length, n)
        self.length, self.n, self.dealias = float(length), int(n), bool(dealias)
        self.k = wavenumbers_rfft(self.length, self.n)
        self.k_odd = wavenumbers_rfft(self.length, self.n, odd=True)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,)

    @property
    def x(self) -> Tensor:
        """The float64 grid points ``j * length / n``."""
        return torch.arange(self.n, dtype=torch.float64) * (self.length / self.n)

    def to_spectral(self, u: Tensor) -> Tensor:
        return torch.fft.rfft(u, dim=-1)

    def to_physical(self, u_hat: Tensor) -> Tensor:
        return torch.fft.irfft(u_hat, n=self.n, dim=-1)

    def nonlinear_fn(self, cdtype, device):
        on_real_view = self.nonlinear_real_view_fn(cdtype, device)
        return lambda t, u_hat: torch.view_as_complex(on_real_view(t, torch.view_as_real(u_hat)))

    def nonlinear_real_view_fn(self, cdtype, device):
        """``N`` on the real view ``(..., n//2 + 1, 2)`` of the spectrum: the 2/3 mask multiplies
        the view (a real product, fused with the arithmetic that made the spectrum when
        compiled), the transforms take and give complex tensors."""
        n = self.n
        if self.flux == 0.0:
            return lambda t, ur: torch.zeros_like(ur)
        g = (-self.flux * 1j) * self.k_odd.to(torch.complex128)
        pairs = None
        if self.dealias:
            mask = dealias_mask_1d(n)
            g = g * mask
            # the mask repeated over (real, imaginary): a mask broadcast over the pair would
            # leave two of each vector's lanes busy
            pairs = mask.to(device=device, dtype=cdtype.to_real())[:, None].expand(-1, 2).contiguous()
        # The inverse transform skips its 1/n (norm="forward": one pass over u fewer); the
        # square then carries n^2, taken out in g (exact for a power-of-two n).
        g = (g / n**2).to(device=device, dtype=cdtype)

        def nonlinear(t, ur: Tensor) -> Tensor:
            if pairs is not None:
                ur = ur * pairs
            u = torch.fft.irfft(torch.view_as_complex(ur), n=n, dim=-1, norm="forward")
            return torch.view_as_real(g * torch.fft.rfft(u * u, dim=-1))

        return nonlinear

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not isinstance(v, Tensor))
        return f"{type(self).__name__}({params})"


class KuramotoSivashinsky(QuadraticFluxEquation1D):
    """``u_t + u u_x + u_xx + u_xxxx = 0``; ``L = k^2 - k^4`` (Kassam & Trefethen 2005;
    the setting of Lippe et al. 2023 with length ~64 and 256 points)."""

    flux = 0.5

    def symbol(self) -> Tensor:
        return self.k**2 - self.k**4


class Burgers(QuadraticFluxEquation1D):
    """Viscous Burgers ``u_t + u u_x = nu u_xx``; ``L = -nu k^2``.

    Exact periodic solutions come from the Cole–Hopf transform ``u = -2 nu (log phi)_x`` with
    ``phi`` solving the heat equation (Whitham 1974, ch. 4); see :meth:`cole_hopf`.
    """

    flux = 0.5

    def __init__(self, length: float, n: int, *, nu: float = 0.01, dealias: bool = True) -> None:
        if not nu > 0:
            raise ValueError(f"nu (viscosity) must be positive, got {nu!r}")
        super().__init__(length, n, dealias=dealias)
        self.nu = float(nu)

    def symbol(self) -> Tensor:
        return -self.nu * self.k**2

    def cole_hopf(
        self, t: float, x: Tensor, a: float = 1.5, modes: tuple[int, ...] = (1,)
    ) -> Tensor:
        """The exact solution for ``phi = a + sum_m exp(-nu q_m^2 t) cos(q_m x)``,
        ``q_m = 2 pi m / length``.

        ``a`` must exceed ``len(modes)`` so that ``phi > 0``.
        """
        if a <= len(modes):
            raise ValueError(
                f"a must exceed the number of modes ({len(modes)}) so that phi > 0, got {a!r}"
            )
        x = torch.as_tensor(x, dtype=torch.float64)
        phi = torch.full_like(x, a)
        dphi = torch.zeros_like(x)
        for m in modes:
            q = 2 * math.pi * m / self.length
            decay = math.exp(-self.nu * q * q * t)
            phi = phi + decay * torch.cos(q * x)
            dphi = dphi - decay * q * torch.sin(q * x)
        return -2 * self.nu * dphi / phi


class KdV(QuadraticFluxEquation1D):
    """Korteweg–de Vries ``u_t + 6 u u_x + u_xxx = 0``; ``L = i k^3`` (purely dispersive).

    :meth:`two_soliton` is the exact two-soliton solution (Hirota 1971).
    """

    flux = 3.0

    def symbol(self) -> Tensor:
        return 1j * self.k_odd.to(torch.complex128) ** 3

    @staticmethod
    def two_soliton(t: float, x: Tensor, k1: float, k2: float, x1: float, x2: float) -> Tensor:
        """Hirota's solution ``u = 2 (log F)_xx``,
        ``F = 1 + e^{eta1} + e^{eta2} + A e^{eta1+eta2}``,
        ``eta_i = k_i (x - x_i) - k_i^3 t``, ``A = ((k1 - k2) / (k1 + k2))^2`` on the real line."""
        x = torch.as_tensor(x, dtype=torch.float64)
        a12 = ((k1 - k2) / (k1 + k2)) ** 2
        e1 = torch.exp(k1 * (x - x1) - k1**3 * t)
        e2 = torch.exp(k2 * (x - x2) - k2**3 * t)
        e12 = a12 * e1 * e2
        f = 1 + e1 + e2 + e12
        fx = k1 * e1 + k2 * e2 + (k1 + k2) * e12
        fxx = k1**2 * e1 + k2**2 * e2 + (k1 + k2) ** 2 * e12
        return 2 * (f * fxx - fx * fx) / (f * f)


class Heat(QuadraticFluxEquation1D):
    """Advection–diffusion ``u_t + c u_x = nu u_xx`` (heat equation for ``c = 0``); linear, so
    ``N = 0`` and exponential integrators are exact: ``u_hat(t) = exp(t L) u_hat(0)`` with
    ``L = -nu k^2 - i c k``."""

    flux = 0.0

    def __init__(self, length: float, n: int, *, nu: float = 0.1, c: float = 0.0) -> None:
        if nu < 0:
            raise ValueError(f"nu (diffusivity) must be >= 0, got {nu!r}")
        super().__init__(length, n, dealias=False)
        self.nu, self.c = float(nu), float(c)

    def symbol(self) -> Tensor:
        lin = -self.nu * self.k**2
        if self.c == 0.0:
            return lin
        return lin - 1j * self.c * self.k_odd.to(torch.complex128)


__all__ = ["Burgers", "Heat", "KdV", "KuramotoSivashinsky", "QuadraticFluxEquation1D"]

"""A plain-NumPy ETDRK4 for Kuramoto–Sivashinsky, independent of the torch path.

It follows Kassam & Trefethen (2005) and their program ``kursiv.m``: the ETDRK4
coefficients are evaluated by the contour-integral average over ``M`` points on a circle of
radius 1 around each ``hL`` instead of phi functions, and the step is Cox &
Matthews (2002), eqs. (26)-(29). It is the peer for the parity test and the speed benchmark.
"""

from __future__ import annotations

import numpy as np


class NumpyKSETDRK4:
    """ETDRK4 for ``u_t + u u_x + u_xx + u_xxxx = 0`` on ``[0, length)``, ``n`` points, step ``h``.

    Args:
        dealias: apply the 2/3 rule to the input and output of the nonlinear term (as
            :class:`timestepper.pde.KuramotoSivashinsky` does); ``False`` is ``kursiv.m``.
        contour_points: ``M`` of the contour integral (Kassam & Trefethen use 32... 64).
    """

    def __init__(
        self, length: float, n: int, h: float, *, dealias: bool = True, contour_points: int = 64
    ) -> None:
        self.n, self.h = n, h
        k = 2 * np.pi / length * np.arange(n // 2 + 1)
        k_odd = k.copy()
        k_odd[-1] = 0.0
        lin = k**2 - k**4
        self.e = np.exp(h * lin)
        self.e2 = np.exp(h * lin / 2)
        r = np.exp(1j * np.pi * (np.arange(1, contour_points + 1) - 0.5) / contour_points)
        lr = h * lin[:, None] + r[None, :]
        self.q = h * np.real(np.mean((np.exp(lr / 2) - 1) / lr, axis=1))
        self.f1 = h * np.real(
            np.mean((-4 - lr + np.exp(lr) * (4 - 3 * lr + lr**2)) / lr**3, axis=1)
        )
        self.f2 = h * np.real(np.mean((2 + lr + np.exp(lr) * (-2 + lr)) / lr**3, axis=1))
        self.f3 = h * np.real(
            np.mean((-4 - 3 * lr - lr**2 + np.exp(lr) * (4 - lr)) / lr**3, axis=1)
        )
        self.mask = (
            (np.arange(n // 2 + 1) <= n // 3) if dealias else np.ones(n // 2 + 1, dtype=bool)
        )
        self.g = -0.5j * k_odd * self.mask

    def nonlinear(self, v: np.ndarray) -> np.ndarray:
        u = np.fft.irfft(v * self.mask, n=self.n, axis=-1)
        return self.g * np.fft.rfft(u * u, axis=-1)

    def step(self, v: np.ndarray) -> np.ndarray:
        """One step on Fourier coefficients ``v`` (``rfft`` of the field, any leading shape)."""
        nv = self.nonlinear(v)
        a = self.e2 * v + self.q * nv
        na = self.nonlinear(a)
        b = self.e2 * v + self.q * na
        nb = self.nonlinear(b)
        c = self.e2 * a + self.q * (2 * nb - nv)
        nc = self.nonlinear(c)
        return self.e * v + self.f1 * nv + 2 * self.f2 * (na + nb) + self.f3 * nc

    def simulate(self, u0: np.ndarray, steps: int) -> np.ndarray:
        v = np.fft.rfft(u0, axis=-1)
        for _ in range(steps):
            v = self.step(v)
        return np.fft.irfft(v, n=self.n, axis=-1)


__all__ = ["NumpyKSETDRK4"]

"""The base of every spectral equation: ``simulate`` through the one ``integrate`` loop.

An equation knows its spatial grid, the diagonal symbol ``L`` of its linear operator and its
nonlinear term ``N`` in Fourier space; ``simulate`` transforms the initial field, builds a
:class:`~timestepper.core.terms.SemilinearTerm` and calls :func:`timestepper.integrate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..core.solver import Solver
from ..core.status import NonFiniteError
from ..core.terms import SemilinearTerm
from ..core.validation import check_int
from ..loop import integrate
from .spectral import complex_dtype_for


def uniform_grid(t_end: float, dt: float, t0: float = 0.0) -> Tensor:
    """The float64 grid ``t0, t0 + dt, ..., t0 + t_end``; ``t_end`` must be a multiple of ``dt``."""
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be a positive finite number, got {dt!r}")
    if not (t_end > 0 and math.isfinite(t_end)):
        raise ValueError(f"t_end must be a positive finite number, got {t_end!r}")
    steps = round(t_end / dt)
    if steps < 1 or abs(steps * dt - t_end) > 1e-9 * max(1.0, t_end):
        raise ValueError(f"t_end={t_end!r} must be a whole multiple of dt={dt!r}")
    return t0 + dt * torch.arange(steps + 1, dtype=torch.float64)


class SpectralEquation:
    """A semilinear PDE ``u_t = L u + N(u)`` on a periodic domain, stepped in Fourier space.

    Subclasses set ``space_dims`` (1 or 2) and implement :meth:`to_spectral`,
    :meth:`to_physical`, :meth:`symbol` (float64/complex128 diagonal of ``L``) and
    :meth:`nonlinear_fn` (returns ``N(t, u_hat)`` for a given dtype/device).
    """

    space_dims: int = 1

    def to_spectral(self, u: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def to_physical(self, u_hat: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def symbol(self) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def nonlinear_fn(
        self, cdtype: torch.dtype, device: torch.device
    ) -> Callable[[float, Tensor], Tensor]:  # pragma: no cover
        raise NotImplementedError

    def nonlinear_real_view_fn(
        self, cdtype: torch.dtype, device: torch.device
    ) -> Callable[[float, Tensor], Tensor] | None:
        """``N`` on real views of spectra (see :class:`SemilinearTerm`), or ``None`` where the
        equation has no real-arithmetic form of its own."""
        return None

    @property
    def shape(self) -> tuple[int, ...]:  # pragma: no cover - interface
        raise NotImplementedError

    def term(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
    ) -> SemilinearTerm:
        """The :class:`SemilinearTerm` in Fourier space for real fields of ``dtype``."""
        cdtype = complex_dtype_for(dtype)
        lin = self.symbol()
        lin = lin.to(device=device, dtype=cdtype if lin.is_complex() else dtype)
        device = torch.device(device)
        return SemilinearTerm(lin, self.nonlinear_fn(cdtype, device),
                              nonlinear_real_view=self.nonlinear_real_view_fn(cdtype, device))

    def check_field(self, name: str, u: Tensor) -> None:
        if not isinstance(u, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(u).__name__}")
        if tuple(u.shape[u.ndim - self.space_dims :]) != self.shape or u.ndim < self.space_dims:
            raise ValueError(
                f"{name} must end with the spatial shape {self.shape}, got shape {tuple(u.shape)}"
            )
        complex_dtype_for(u.dtype)

    def simulate(  # noqa: PLR0913 - keyword options of the front
        self,
        u0: Tensor,
        *,
        t_end: float,
        dt: float,
        solver: str | Solver = "etdrk4",
        save_every: int | None = None,
        t0: float = 0.0,
        progress: bool = False,
        check_finite: bool = True,
        compile: bool | dict = False,
    ) -> Tensor:
        """Advance the real field ``u0`` (shape ``(*batch, *space)``) to ``t0 + t_end``.

        Args:
            u0: initial field, float32 or float64; batch dimensions are kept.
            t_end: duration (a whole multiple of ``dt``).
            dt: solver step.
            solver: registry name or :class:`Solver` (``"etdrk4"``, ``"etdrk2"``, ``"etd1"``,
                ``"imex-euler"``, ``"rk4"``).
            save_every: ``None`` returns the final field; ``k`` returns the trajectory saved every
                ``k`` steps, shape ``(*batch, 1 + steps // k, *space)``, starting with ``u0``.
            progress: tqdm bar over the steps.
            check_finite: raise :class:`~timestepper.NonFiniteError` naming the step of a blow-up.
            compile: compile the steps with ``torch.compile`` (see :func:`timestepper.integrate`).
        """
        self.check_field("u0", u0)
        grid = uniform_grid(t_end, dt, t0)
        if save_every is not None:
            save_every = check_int(save_every, "save_every", 1)
        term = self.term(u0.dtype, u0.device)
        x0 = self.to_spectral(u0)
        saved: list[Tensor] = [x0]
        callback = None
        if save_every is not None:

            def callback(i: int, t: float, x: Tensor) -> None:
                if (i + 1) % save_every == 0:
                    saved.append(x)

        try:
            sol = integrate(
                term, solver, grid, x0, check_finite=check_finite, progress=progress, callback=callback,
                compile=compile,
            )
        except NonFiniteError as exc:
            raise NonFiniteError(f"{exc}; {_stability_hint(solver, dt)}") from exc
        out = self.to_physical(sol.x)
        if check_finite:
            _check_growth(u0, out, solver, dt)
        if save_every is None:
            return out
        traj = torch.stack(saved, dim=x0.ndim - self.space_dims)
        return self.to_physical(traj)


GROWTH_LIMIT = 1e6
"""``simulate(check_finite=True)`` refuses a final field whose largest value exceeds the initial
one by this factor (at least 1 in absolute value): the equations of this package dissipate or
conserve energy, so such growth is a numerical instability, not physics."""


def _stability_hint(solver: str | Solver, dt: float) -> str:
    name = solver if isinstance(solver, str) else solver.display_name
    if name.startswith("etd"):
        return f"solver {name!r} is likely unstable at dt={dt:g}: use a smaller dt"
    return (f"solver {name!r} is likely unstable at dt={dt:g} on this stiff equation: use an "
            "exponential integrator ('etdrk4', 'etdrk2') or a smaller dt")


def _check_growth(u0: Tensor, u1: Tensor, solver: str | Solver, dt: float) -> None:
    """Refuse a blow-up that stayed finite (one host read, after the solve)."""
    start, end = float(u0.detach().abs().max()), float(u1.detach().abs().max())
    if end > GROWTH_LIMIT * max(1.0, start):
        raise NonFiniteError(f"the field grew from max |u| = {start:.3g} to {end:.3g}; "
                             f"{_stability_hint(solver, dt)} (check_finite=False returns it)")


__all__ = ["SpectralEquation", "uniform_grid"]

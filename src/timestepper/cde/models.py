"""Models for irregular time series classification, driven by a control path.

* :class:`NeuralCDE` (Kidger et al. 2020): ``z0 = W X(t0)``, ``dz = f(z) dX``, logits from
  ``z(T)``; solved by :func:`~timestepper.cde.cdeint` (any solver and gradient mode).
* :class:`ODERNN` (Rubanova, Chen & Duvenaud 2019, "Latent ODEs for Irregularly-Sampled Time
  Series"): a GRU update at every time with an observation, the hidden state evolved by a neural
  ODE (:func:`timestepper.solve`) between them: the GRU-ODE / ODE-RNN style baseline.
* :class:`StableNeuralSDE` (Oh, Lim & Kim 2024, "Stable Neural Stochastic Differential Equations
  in Analyzing Irregular Time Series Data", ICLR, sec. 3): the Langevin-type SDE
  ``dz = g(z̄) dt + sigma(t) dW``, the linear-noise SDE ``dz = g(t, z̄) dt + sigma(t) z dW`` and the
  geometric SDE ``dz = z g(t, z̄) dt + z sigma(t) dW``, where ``z̄ = zeta(t, z, X(t))`` feeds the
  control path into the drift. The stability conditions of the paper's theorems (drift and
  diffusion Lipschitz with at most linear growth; diffusion a bounded function of time only;
  for the geometric SDE a bounded drift coefficient, so ``z`` keeps its sign and its moments
  stay bounded) are built in: Lipschitz activations, a tanh-bounded drift for the geometric
  class, ``sigma(t) = sigma_max * sigmoid(MLP(t))``. Solved by :func:`timestepper.sdeint`
  (Euler–Maruyama by default) on the path's knots refined to ``dt``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..ode.regularise import local_error_estimate, step_at
from ..ode.sde import refined_grid, sdeint
from ..ode.solve import solve
from ..solvers.registry import get
from .paths import ControlPath
from .solve import cdeint
from .term import CDETerm

SDE_KINDS = ("langevin", "linear-noise", "geometric")
REGULARISERS = (None, "error", "stiffness", "local-error")


def mlp(n_in: int, width: int, n_out: int, depth: int = 2, final: nn.Module | None = None) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` with SiLU (Lipschitz), then ``final`` if given."""
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.SiLU()]
        d = width
    layers.append(nn.Linear(d, n_out))
    if final is not None:
        layers.append(final)
    return nn.Sequential(*layers)


class CDEField(nn.Module):
    """``f(z) = tanh(MLP(z))`` reshaped to ``(hidden, channels)`` (Kidger et al. 2020, sec. 4)."""

    def __init__(self, hidden: int, channels: int, width: int = 32) -> None:
        super().__init__()
        self.hidden, self.channels = hidden, channels
        self.net = mlp(hidden, width, hidden * channels, final=nn.Tanh())
        self.calls = 0

    def forward(self, t: Any, z: Tensor) -> Tensor:
        self.calls += 1
        return self.net(z).view(*z.shape[:-1], self.hidden, self.channels)


class NeuralCDE(nn.Module):
    """Neural CDE classifier (Kidger et al. 2020).

    Args:
        channels: channels of the control path.
        hidden: size of ``z``.
        classes: number of classes.
        width: width of the vector field's MLP.
        regulariser: during training, put in ``self.reg`` (add ``lam * model.reg`` to the loss)
            ``"error"``: the accumulated error estimate ``R_E`` of Pal et al. (2021, ERNODE;
            ``adjoint="direct"`` only), ``"stiffness"``: their accumulated stiffness estimate
            ``R_S`` (SRNODE; same restriction), or ``"local-error"``: the local estimate at a random time
            of Pal, Edelman & Rackauckas (2023; any adjoint). Adaptive solvers only.
        local_samples: random times per forward pass for ``"local-error"`` (the paper: 1).
        solve_options: keyword options of :func:`~timestepper.cde.cdeint` (solver, rtol, atol,
            dt, adjoint, ...).
    """

    def __init__(self, channels: int, hidden: int, classes: int, width: int = 32,
                 regulariser: str | None = None, local_samples: int = 1, **solve_options: Any) -> None:
        super().__init__()
        if regulariser not in REGULARISERS:
            raise ValueError(f"regulariser must be one of {REGULARISERS}, got {regulariser!r}")
        self.initial = nn.Linear(channels, hidden)
        self.func = CDEField(hidden, channels, width)
        self.readout = nn.Linear(hidden, classes)
        self.solve_options = solve_options
        self.regulariser, self.local_samples = regulariser, int(local_samples)
        self.generator = torch.Generator().manual_seed(0)
        self.nfe = 0
        self.reg: Tensor = torch.zeros(())

    def forward(self, path: ControlPath) -> Tensor:
        z0 = self.initial(path.evaluate(path.interval[0]))
        if self.training and self.regulariser == "local-error":
            return self.readout(self._locally_regularised(path, z0))
        opts = dict(self.solve_options)
        if self.training and self.regulariser in ("error", "stiffness"):
            opts["regularise"] = True
        sol = cdeint(path, self.func, z0, **opts)
        self.nfe = int(sol.stats.nfe)
        if "reg_error" in sol.extras:
            self.reg = sol.extras["reg_error" if self.regulariser == "error" else "reg_stiffness"]
        return self.readout(sol.x)

    def _locally_regularised(self, path: ControlPath, z0: Tensor) -> Tensor:
        """Pal et al. (2023): the solve also saves ``z(t_r)`` at ``local_samples`` uniform random
        times ``t_r``; one more step from each gives its local error estimate (averaged)."""
        t0, t1 = path.interval
        u = torch.rand(self.local_samples, generator=self.generator, dtype=torch.float64)
        trs = sorted({min(max(t0 + (t1 - t0) * float(v), t0 + 1e-9 * (t1 - t0)), t1 - 1e-9 * (t1 - t0))
                      for v in u})
        sol = cdeint(path, self.func, z0, t=[t0, *trs, t1], **self.solve_options)
        o = self.solve_options
        solver = get(o.get("solver", "tsit5"))
        before = self.func.calls
        vf = CDETerm(self.func, path).vf
        errs = [local_error_estimate(vf, tr, sol.ys[k + 1], min(step_at(sol.extras["step_ts"], tr), t1 - tr),
                                     solver, o.get("rtol", 1e-4), o.get("atol", 1e-6))
                for k, tr in enumerate(trs)]
        self.reg = (t1 - t0) * torch.stack(errs).mean()
        self.nfe = int(sol.stats.nfe) + self.func.calls - before
        return sol.x


class ODERNN(nn.Module):
    """ODE-RNN (Rubanova et al. 2019): between observation times the hidden state follows
    ``dh/dt = MLP(h)`` (one :func:`timestepper.solve` per gap), at each time a GRU cell reads the
    observed values and the mask; series with nothing observed at a time keep their state.

    Args:
        channels: value channels (without mask).
        hidden, classes, width: sizes.
        solve_options: options of :func:`timestepper.solve` for the gaps (default one RK4 step).
    """

    def __init__(self, channels: int, hidden: int, classes: int, width: int = 32,
                 **solve_options: Any) -> None:
        super().__init__()
        self.ode = mlp(hidden, width, hidden, final=nn.Tanh())
        self.cell = nn.GRUCell(2 * channels, hidden)
        self.readout = nn.Linear(hidden, classes)
        self.hidden = hidden
        self.solve_options = solve_options or {"solver": "rk4", "dt": float("inf")}
        self.nfe = 0

    def forward(self, times: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        h = values.new_zeros(values.shape[0], self.hidden)
        tl = times.tolist()
        self.nfe = 0
        opts = dict(self.solve_options)
        for i, t in enumerate(tl):
            if i:
                if opts.get("dt") == float("inf"):
                    opts["dt"] = tl[i] - tl[i - 1]
                sol = solve(lambda s, y: self.ode(y), h, tl[i - 1], t, **opts)
                h, self.nfe = sol.x, self.nfe + int(sol.stats.nfe)
                opts = dict(self.solve_options)
            m = mask[:, i].to(values.dtype)
            new = self.cell(torch.cat([values[:, i] * m, m], -1), h)
            h = torch.where(mask[:, i].any(-1, keepdim=True), new, h)
        return self.readout(h)


class GridBrownian:
    """Brownian increments on a fixed grid, drawn once: ``bm(ta, tb)`` for grid points
    ``ta < tb`` (what a fixed-grid SDE solve queries)."""

    def __init__(self, grid: list[float], shape: tuple[int, ...], generator: torch.Generator | None,
                 dtype: torch.dtype) -> None:
        steps = torch.tensor(grid, dtype=torch.float64).diff().clamp(min=0).sqrt().to(dtype)
        noise = torch.randn((len(grid) - 1, *shape), generator=generator, dtype=dtype)
        w = torch.cat([torch.zeros((1, *shape), dtype=dtype),
                       (noise * steps.view(-1, *([1] * len(shape)))).cumsum(0)])
        self.index = {t: i for i, t in enumerate(grid)}
        self.w = w

    def __call__(self, ta: float, tb: float) -> Tensor:
        return self.w[self.index[tb]] - self.w[self.index[ta]]


class StableNeuralSDE(nn.Module):
    """The stable neural SDE classes of Oh et al. (2024) as classifiers (module docstring).

    Args:
        channels: channels of the control path.
        hidden, classes, width: sizes.
        kind: ``"langevin"``, ``"linear-noise"`` or ``"geometric"``.
        sigma_max: bound of the diffusion ``sigma(t)``.
        dt: Euler–Maruyama step (the path's knots refined to at most ``dt``).
        solver: an SDE solver of the registry (Itô: ``"sde-euler"``, ``"milstein"``;
            ``"reversible-heun"`` reads the SDE in Stratonovich form, the same SDE for the
            Langevin class, whose noise is additive).
        adjoint: ``"direct"`` or ``"reversible"`` (with ``"reversible-heun"``: O(1) memory,
            :func:`timestepper.sdeint`).
    """

    def __init__(self, channels: int, hidden: int, classes: int, width: int = 32, *,  # noqa: PLR0913
                 kind: str = "langevin", sigma_max: float = 0.5, dt: float | None = None,
                 solver: str = "sde-euler", adjoint: str = "direct") -> None:
        super().__init__()
        if kind not in SDE_KINDS:
            raise ValueError(f"kind must be one of {SDE_KINDS}, got {kind!r}")
        self.kind, self.sigma_max, self.dt, self.solver = kind, float(sigma_max), dt, solver
        self.adjoint = adjoint
        self.initial = nn.Linear(channels, hidden)
        self.embed = nn.Linear(1 + hidden + channels, hidden)  # zeta(t, z, X(t))
        self.drift_net = mlp(hidden, width, hidden, final=nn.Tanh())
        self.sigma_net = mlp(1, width // 2 or 1, hidden, depth=1)
        self.readout = nn.Linear(hidden, classes)
        self.generator: torch.Generator | None = None
        self.nfe = 0
        self.calls = 0  # drift and diffusion evaluations, backward passes included
        self._path: ControlPath | None = None

    def sigma(self, t: Any, like: Tensor) -> Tensor:
        """``sigma(t) = sigma_max * sigmoid(MLP(t))``: bounded, a function of time only."""
        tt = torch.full((1, 1), float(t), dtype=like.dtype, device=like.device)
        return self.sigma_max * torch.sigmoid(self.sigma_net(tt))[0]

    def drift(self, t: Any, z: Tensor) -> Tensor:
        assert self._path is not None
        self.calls += 1
        x = self._path.evaluate(t).to(z.dtype)
        tt = torch.full((*z.shape[:-1], 1), float(t), dtype=z.dtype, device=z.device)
        zbar = torch.tanh(self.embed(torch.cat([tt, z, x], -1)))
        g = self.drift_net(zbar)
        return z * g if self.kind == "geometric" else g

    def diffusion(self, t: Any, z: Tensor) -> Tensor:
        self.calls += 1
        s = self.sigma(t, z)
        return s.expand_as(z) if self.kind == "langevin" else s * z

    def initial_state(self, path: ControlPath) -> Tensor:
        """``z(t0)`` from the path's first value (positive for the geometric class, whose state
        keeps the sign it starts with)."""
        z0 = self.initial(path.evaluate(path.interval[0]))
        return torch.nn.functional.softplus(z0) + 1e-3 if self.kind == "geometric" else z0

    def forward(self, path: ControlPath, bm: Any = None) -> Tensor:
        """Logits from ``z(T)``; ``bm(ta, tb)`` is the Brownian motion (default: increments on
        the solver's grid drawn from ``self.generator``)."""
        self._path = path
        z0 = self.initial_state(path)
        if bm is None:
            grid, _ = refined_grid(path.knots, self.dt)
            bm = GridBrownian(grid, tuple(z0.shape), self.generator, z0.dtype)
        params = tuple(p for p in self.parameters() if p.requires_grad)
        sol = sdeint(self.drift, self.diffusion, z0, path.knots, solver=self.solver, dt=self.dt, bm=bm,
                     adjoint=self.adjoint, adjoint_params=params if self.adjoint != "direct" else ())
        self.nfe = int(sol.stats.nfe)
        return self.readout(sol.x)


__all__ = ["SDE_KINDS", "CDEField", "GridBrownian", "NeuralCDE", "ODERNN", "StableNeuralSDE", "mlp"]

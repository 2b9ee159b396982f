"""The irregular-series models: they train, and the SDE classes keep the paper's structure."""

from __future__ import annotations

import pytest
import torch

from timestepper.cde import control_path
from timestepper.cde.models import ODERNN, GridBrownian, NeuralCDE, StableNeuralSDE
from timestepper.cde.training import accuracy, fit_classifier


def _task(n=24, length=10, seed=0):
    """Two classes: a rising or a falling series, 40 % of the time points dropped."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, length, dtype=torch.float64)
    labels = torch.arange(n) % 2
    sign = (2 * labels - 1).to(torch.float64).view(-1, 1, 1)
    x = sign * t.view(1, -1, 1) + 0.1 * torch.randn(n, length, 1, generator=g, dtype=torch.float64)
    mask = torch.rand(n, length, 1, generator=g) > 0.4
    return t, x, mask, labels


@pytest.mark.parametrize("make", [
    lambda c: NeuralCDE(c, 8, 2, width=16, solver="rk4", dt=1 / 9 * 1.000001),
    lambda c: NeuralCDE(c, 8, 2, width=16, solver="tsit5", rtol=1e-3, atol=1e-5, adjoint="backsolve"),
    lambda c: StableNeuralSDE(c, 8, 2, width=16, kind="langevin"),
    lambda c: StableNeuralSDE(c, 8, 2, width=16, kind="linear-noise"),
    lambda c: StableNeuralSDE(c, 8, 2, width=16, kind="geometric"),
])
def test_path_models_learn_a_separable_task(make):
    t, x, mask, labels = _task()
    path = control_path(t, x, mask, kind="hermite-cubic", intensity=True)
    torch.manual_seed(0)
    model = make(path.channels).double()
    before = torch.nn.functional.cross_entropy(model(path), labels).item()
    hist = fit_classifier(model, lambda i: (path.select(i),), labels, epochs=8, batch_size=8, lr=2e-2)
    assert len(hist.loss) == len(hist.seconds) == len(hist.nfe) == 8 and min(hist.nfe) > 0
    assert hist.loss[-1] < 0.5 * before
    assert accuracy(model, (path,), labels) >= 0.9


def test_odernn_learns_and_skips_unobserved_times():
    t, x, mask, labels = _task()
    torch.manual_seed(0)
    model = ODERNN(1, 8, 2, width=16).double()
    fit_classifier(model, lambda i: (t, x[i], mask[i]), labels, epochs=8, batch_size=8, lr=2e-2)
    assert accuracy(model, (t, x, mask), labels) >= 0.9
    assert model.nfe == 4 * 9  # one RK4 step per gap
    # values at unobserved times are never read: the GRU updates only where something was observed
    other = torch.where(mask, x, torch.randn_like(x))
    with torch.no_grad():
        torch.testing.assert_close(model(t, other, mask), model(t, x, mask))
        assert not torch.allclose(model(t, other, torch.ones_like(mask)), model(t, x, torch.ones_like(mask)))


def test_sde_classes_have_the_papers_structure():
    z = torch.randn(4, 6, dtype=torch.float64)
    kinds = {k: StableNeuralSDE(3, 6, 2, kind=k, sigma_max=0.3).double()
             for k in ("langevin", "linear-noise", "geometric")}
    for m in kinds.values():
        m._path = control_path(torch.linspace(0, 1, 5, dtype=torch.float64), torch.zeros(4, 5, 2, dtype=torch.float64))
        s = m.sigma(0.4, z)
        assert bool((s > 0).all() and (s < 0.3).all())  # bounded, a function of time only
    torch.testing.assert_close(kinds["langevin"].diffusion(0.4, z), kinds["langevin"].diffusion(0.4, 5 * z))
    torch.testing.assert_close(kinds["linear-noise"].diffusion(0.4, 2 * z), 2 * kinds["linear-noise"].diffusion(0.4, z))
    zero = torch.zeros_like(z)
    assert bool((kinds["geometric"].drift(0.4, zero) == 0).all())  # 0 is an equilibrium: no sign change
    assert bool((kinds["geometric"].diffusion(0.4, zero) == 0).all())
    assert bool((kinds["geometric"].drift(0.4, z).abs() <= z.abs()).all())  # |z g| <= |z| (g = tanh)
    with pytest.raises(ValueError, match="kind must be one of"):
        StableNeuralSDE(3, 6, 2, kind="ou")


def test_grid_brownian_increments_are_consistent_and_scaled():
    grid = [0.0, 0.25, 0.5, 1.0]
    bm = GridBrownian(grid, (20000,), torch.Generator().manual_seed(0), torch.float64)
    torch.testing.assert_close(bm(0.0, 1.0), bm(0.0, 0.25) + bm(0.25, 0.5) + bm(0.5, 1.0))
    assert abs(float(bm(0.5, 1.0).var()) - 0.5) < 0.03


def test_langevin_sde_reversible_adjoint_gives_the_backprop_gradient():
    import copy

    t = torch.linspace(0, 1, 12, dtype=torch.float64)
    x = torch.randn(4, 12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    path = control_path(t, x)
    torch.manual_seed(0)
    direct = StableNeuralSDE(path.channels, 6, 2, kind="langevin", solver="reversible-heun").double()
    reversible = copy.deepcopy(direct)
    reversible.adjoint = "reversible"
    for m in (direct, reversible):
        m.generator = torch.Generator().manual_seed(3)  # the same Brownian increments
        m(path).square().sum().backward()
    for p, q in zip(direct.parameters(), reversible.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12)
    assert reversible.calls > direct.calls  # the backward pass evaluates the field again

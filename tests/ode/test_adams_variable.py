"""Variable-order Adams (``vode-adams``): empirical order with the order capped, convergence to
exact solutions in proportion to the tolerance, the orders it actually chooses, dense output,
gradients, the controller's order selection, and refusals."""

import math

import pytest
import torch

import timestepper as ts
from timestepper.bench.detest import PROBLEMS
from timestepper.core.controllers import PIDController, StepSizeController, select_order
from timestepper.core.solver import OrderErrors

F64 = torch.float64


def a3(t, y):  # DETEST A3: y = exp(sin t)
    return y * torch.cos(torch.as_tensor(t, dtype=y.dtype))


def run(problem, tol, solver="vode-adams"):
    """The solve and the orders of its accepted steps (none for a fixed-order solver)."""
    orders: list[int] = []

    def record(step):
        if isinstance(step.err, OrderErrors):
            orders.append(step.err.order)

    sol = ts.integrate(ts.ODETerm(problem.f), solver, PIDController(tol, tol), problem.initial(),
                       t_span=(0.0, problem.t1), on_accept=record)
    return sol, orders


@pytest.mark.parametrize("name", ["vode-adams"])
@pytest.mark.parametrize("max_order", [2, 3, 4])
def test_order_with_the_order_capped(name, max_order):
    """With the order capped at ``q`` the steps settle at order ``q`` and the result (the order-
    ``q + 1`` corrector) converges like ``NFE^-(q+1)``: the global error against the evaluations
    between two tight tolerances."""
    solver = ts.solvers.get(name, max_order=max_order)
    runs = []
    for tol in (1e-6, 1e-9):
        sol = ts.integrate(ts.ODETerm(a3), solver, PIDController(tol, tol), torch.ones(1, dtype=F64),
                           t_span=(0.0, 10.0))
        runs.append((sol.stats.nfe, abs(float(sol.x[0]) - math.exp(math.sin(10.0)))))
    slope = -math.log(runs[1][1] / runs[0][1]) / math.log(runs[1][0] / runs[0][0])
    assert abs(slope - solver.order) < 0.4, (max_order, slope, runs)
    assert solver.order == max_order + 1


EXACT = ["A1", "A3", "B2", "C1"]


@pytest.mark.parametrize("name", EXACT)
def test_converges_in_proportion_to_the_tolerance(name):
    """On DETEST problems with exact solutions the end error stays within 100x the tolerance and
    falls by at least 100x when the tolerance does by 1000x."""
    p = PROBLEMS[name]
    assert p.exact is not None
    errs = []
    for tol in (1e-6, 1e-9):
        sol, _ = run(p, tol)
        errs.append(float((sol.x - p.exact(p.t1)).abs().max()))
        assert errs[-1] < 100 * tol, (name, tol, errs)
    assert errs[0] / errs[1] > 100, (name, errs)


def test_the_order_varies_up_and_down():
    """From order 1 it climbs to high orders on a smooth problem at a tight tolerance, and comes
    down again where the solution changes character (the eccentric orbit D3 at pericentre)."""
    _, orders = run(PROBLEMS["D3"], 1e-9)
    assert orders[0] == 1 and max(orders) >= 10
    assert len(set(orders)) >= 8
    assert any(b < a for a, b in zip(orders, orders[1:]))
    _, loose = run(PROBLEMS["D3"], 1e-5)
    assert max(loose) < max(orders)  # a looser tolerance settles at lower orders


@pytest.mark.parametrize("name", ["B5", "D1"])
def test_far_fewer_evaluations_than_dopri5_at_a_tight_tolerance(name):
    """The point of a high-order multistep method: on a smooth problem at rtol = atol = 1e-9 it
    needs under half of dopri5's evaluations (and under a quarter of the fixed-order abm's) for
    an end error within 10x of dopri5's (on the orbit D1 the phase error makes every solver's
    end error ~100x the tolerance)."""
    p = PROBLEMS[name]
    ours, _ = run(p, 1e-9)
    ref = ts.integrate(ts.ODETerm(p.f), "dopri8", PIDController(1e-13, 1e-13), p.initial(),
                       t_span=(0.0, p.t1)).x
    dopri, _ = run(p, 1e-9, solver="dopri5")
    abm, _ = run(p, 1e-9, solver="abm")
    assert ours.stats.nfe < 0.5 * dopri.stats.nfe and ours.stats.nfe < 0.25 * abm.stats.nfe
    assert float((ours.x - ref).abs().max()) < 10 * float((dopri.x - ref).abs().max()) + 1e-9


def test_dense_output_at_save_times():
    t = torch.linspace(0, 10, 23, dtype=F64)
    sol = ts.solve(a3, torch.ones(1, dtype=F64), 0.0, 10.0, solver="vode-adams", rtol=1e-9, atol=1e-9,
                   saveat=t)
    err = float((sol.ys[:, 0] - torch.exp(torch.sin(t))).abs().max())
    assert err < 1e-7
    plain = ts.solve(a3, torch.ones(1, dtype=F64), 0.0, 10.0, solver="vode-adams", rtol=1e-9, atol=1e-9)
    assert sol.stats.nfe == plain.stats.nfe  # served between steps, not by stopping at save times


@pytest.mark.parametrize("adjoint", ["direct", "backsolve"])
def test_gradients_match_the_exact_derivative(adjoint):
    """y' = -a y: dy(T)/dy0 = exp(-a T) and dy(T)/da = -T y0 exp(-a T)."""
    a = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.3], dtype=F64, requires_grad=True)
    sol = ts.solve(lambda t, y: -a * y, y0, 0.0, 2.0, solver="vode-adams", rtol=1e-9, atol=1e-9,
                   adjoint=adjoint, adjoint_params=[a] if adjoint != "direct" else None)
    gy0, ga = torch.autograd.grad(sol.x.sum(), (y0, a))
    e = math.exp(-0.7 * 2.0)
    assert abs(float(gy0) - e) < 1e-6 and abs(float(ga) + 2.0 * 1.3 * e) < 1e-6


def test_select_order_prefers_the_largest_step_and_never_raises_after_a_rejection():
    assert select_order({5: 0.5, 4: 0.5, 6: 1e-4}, 5, True) == 6  # raising lets the step grow most
    assert select_order({5: 0.5, 4: 0.5, 6: 0.4}, 5, True) == 5  # biased against raising
    assert select_order({5: 0.9, 4: 1e-3, 6: 0.5}, 5, True) == 4
    assert select_order({5: 3.0, 4: 5.0, 6: 1e-6}, 5, False) == 5  # rejected: k or k - 1 only
    assert select_order({5: 3.0, 4: math.inf}, 5, False) == 5


def test_controller_restarts_its_memory_on_an_order_change():
    """The PI memory holds errors of the next step's order: kept when the order stays, restarted
    from this step's estimate at the new order when it changes; the exponent is 1/(q+1)."""
    c = PIDController(1.0, 1.0, pcoeff=0.4, icoeff=0.3)
    x = torch.zeros(1, dtype=F64)
    cs = ts.core.controllers.PIDState(dt=0.1, prev=2.0, prev2=3.0, error_order=5, order=4)
    errs = {4: torch.tensor([0.5], dtype=F64), 3: torch.tensor([0.6], dtype=F64)}
    accept, kept, _ = c.adapt(0.0, 0.1, x, x, OrderErrors(4, errs), cs)
    assert accept and kept.order == 4 and kept.prev == pytest.approx(2.0) and kept.prev2 == 2.0
    expected = 0.9 * 2.0 ** (0.7 / 5) * 2.0 ** (-0.4 / 5)
    assert kept.dt == pytest.approx(0.1 * expected)
    errs = {4: torch.tensor([0.5], dtype=F64), 3: torch.tensor([1e-4], dtype=F64)}
    _, changed, _ = c.adapt(0.0, 0.1, x, x, OrderErrors(4, errs), cs)
    assert changed.order == 3 and changed.error_order == 4
    assert changed.prev == pytest.approx(1e4) and changed.prev2 == 1.0
    assert changed.dt == pytest.approx(0.1 * min(10.0, 0.9 * 1e4 ** (0.7 / 4)))


def test_refuses_bad_options_and_modes():
    with pytest.raises(ValueError, match="max_order must be an integer >= 1"):
        ts.solvers.get("vode-adams", max_order=0)
    with pytest.raises(ValueError, match="max_order must be <= 12"):
        ts.solvers.get("vode-adams", max_order=13)
    y0 = torch.ones(1, dtype=F64)
    with pytest.raises(ValueError, match="not a fixed grid"):
        ts.integrate(ts.ODETerm(a3), "vode-adams", torch.linspace(0, 1, 5, dtype=F64), y0)
    with pytest.raises(ValueError, match="does not support per-sample"):
        ts.solve(a3, torch.ones(2, 1, dtype=F64), 0.0, 1.0, solver="vode-adams", per_sample_steps=True)
    with pytest.raises(ValueError, match="depends on its history"):
        ts.solve(lambda t, y: -y, y0, 0.0, 1.0, solver="vode-adams", adjoint="checkpoint",
                 adjoint_params=[torch.ones(1, requires_grad=True)])

    class Halving(StepSizeController):  # a controller that does not choose orders
        def init(self, term, solver, t0, t1, x0, f0):
            return 0.1, 0

        def next_time(self, t, dt):
            return t + dt

        def adapt(self, t0, t1, x0, x1, err, dt):
            return True, dt, False

    with pytest.raises(TypeError, match="chooses the order of each step"):
        ts.integrate(ts.ODETerm(a3), "vode-adams", Halving(), y0, t_span=(0.0, 1.0))

"""The stiff solver (Rosenbrock 2(3)) on Robertson's chemical kinetics and Van der Pol with
mu = 1000, against stored SciPy Radau references; its convergence order on fixed steps."""

import math

import torch

import timestepper as ts


def robertson(t, y):
    return torch.stack([-0.04 * y[0] + 1e4 * y[1] * y[2],
                        0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                        3e7 * y[1] ** 2])


def vdp1000(t, y):
    return torch.stack([y[1], 1000.0 * (1 - y[0] ** 2) * y[1] - y[0]])


# References at t = 1000: SciPy Radau at rtol = 1e-12 with the analytic Jacobian; SciPy BDF and
# LSODA at rtol = 1e-10 agree to 1e-10 (Robertson) and 3e-12 (Van der Pol).
ROBERTSON_1000 = (0.3368745306609986, 2.0137023182639944e-06, 0.6631234556366818)
VDP1000_1000 = (-1.8636462548081227, 0.0007535430865435517)


def test_robertson():
    y0 = [1.0, 0.0, 0.0]
    sol = ts.solve(robertson, torch.tensor(y0, dtype=torch.float64), 0.0, 1e3,
                   solver="rosenbrock23", rtol=1e-5, atol=1e-9)
    ref = torch.tensor(ROBERTSON_1000, dtype=torch.float64)
    assert float(((sol.x - ref).abs() / (1e-9 + 1e-5 * ref.abs())).max()) < 10
    assert abs(float(sol.x.sum()) - 1.0) < 1e-10  # mass conservation
    assert sol.stats.accepted < 1000  # an explicit method needs ~1e6 steps here


def test_van_der_pol_mu_1000():
    y0 = [2.0, 0.0]
    sol = ts.solve(vdp1000, torch.tensor(y0, dtype=torch.float64), 0.0, 1000.0,
                   solver="rosenbrock23", rtol=1e-4, atol=1e-6)
    ref = torch.tensor(VDP1000_1000, dtype=torch.float64)
    assert float((sol.x - ref).abs().max()) < 1e-2
    # An explicit method cannot: it hits max_steps and reports it.
    out = ts.solve(vdp1000, torch.tensor(y0, dtype=torch.float64), 0.0, 1000.0,
                   solver="tsit5", rtol=1e-4, atol=1e-6, max_steps=500, on_failure="return")
    assert out.status == ts.Status.MAX_STEPS


def test_rosenbrock_order():
    def f(t, y):
        return -y + torch.sin(torch.as_tensor(t, dtype=y.dtype)) * torch.ones_like(y)

    def exact(t):  # y' = -y + sin t, y(0) = 1
        return 1.5 * math.exp(-t) + 0.5 * (math.sin(t) - math.cos(t))

    errs = []
    for n in (20, 40):
        grid = torch.linspace(0, 2, n + 1, dtype=torch.float64)
        x = ts.integrate(ts.ODETerm(f), "rosenbrock23", grid,
                         torch.ones(1, dtype=torch.float64)).x
        errs.append(abs(float(x[0]) - exact(2.0)))
    assert abs(math.log2(errs[0] / errs[1]) - 2) < 0.3

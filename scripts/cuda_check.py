"""The loop's contracts on a CUDA device, as one short run (scripts/device_check.sh calls it).

CI has no GPU, so what only a device can show is checked here:

1. every deterministic diffusion solver samples on the device (float64) to the CPU's result, and
   every stochastic one samples there (finite results);
2. no sampling step synchronises with the host: the steps of dpmpp-2m, unipc-bh2, heun and ddpm run
   under ``torch.cuda.set_sync_debug_mode("error")``;
3. adaptive solves run on the device, shared and per-sample (float64 and float32 times), to the
   CPU's result, with per-sample statistics on the device;
4. ``integrate(..., compile=True)`` compiles one graph per kind of step on the device (dpmpp-2m,
   ETDRK4) and agrees with eager;
5. the implicit solvers (dense and Krylov Newton) solve a stiff problem on the device to the
   CPU's result with the same NFE;
6. the torchdiffeq drop-in hands ``t`` on the device and differentiates it there; control paths
   of the neural CDE are built on the device to the CPU's values.

Prints one PASS/FAIL line per check and exits non-zero if any failed. ``--device cpu`` runs the
same checks on the CPU (without the sync check), to try the script where there is no GPU.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

import torch
from torch._dynamo.utils import counters

import timestepper as ts
from timestepper.diffusion.term import DiffusionTerm

F64 = torch.float64
RESULTS: list[tuple[str, bool, str]] = []


def check(name: str) -> Callable[[Callable[[torch.device], str]], Callable[[torch.device], None]]:
    def wrap(fn: Callable[[torch.device], str]) -> Callable[[torch.device], None]:
        def run(dev: torch.device) -> None:
            try:
                RESULTS.append((name, True, fn(dev)))
            except Exception as exc:  # report and go on: every check runs
                RESULTS.append((name, False, f"{type(exc).__name__}: {exc}"))
                traceback.print_exc()
        return run
    return wrap


def _denoiser(dev: torch.device) -> ts.Denoiser:
    """A small random epsilon-predicting network (float64) on ``dev``; the same weights everywhere."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(), torch.nn.Linear(32, 2)).double().to(dev)

    def model(x, t):
        return net(torch.cat([x, (t / 1000.0)[:, None].to(x.dtype)], dim=1))

    return ts.Denoiser(model, ts.VPDiscreteSchedule.from_betas("linear"), "epsilon")


@check("deterministic diffusion solvers: device = CPU (float64)")
def sampling_matches_cpu(dev: torch.device) -> str:
    den, den_cpu = _denoiser(dev), _denoiser(torch.device("cpu"))
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    worst = 0.0
    for name in ts.solvers.available("diffusion"):
        if ts.solvers.get(name).is_stochastic:
            continue
        cpu = ts.sample(den_cpu, noise, name, steps=10)
        on_dev = ts.sample(den, noise.to(dev), name, steps=10)
        assert on_dev.device.type == dev.type, name
        err = float((on_dev.cpu() - cpu).abs().max())
        assert err < 1e-8, (name, err)
        worst = max(worst, err)
    return f"max |device - cpu| = {worst:.1e}"


@check("stochastic solvers sample on the device")
def stochastic_runs(dev: torch.device) -> str:
    den = _denoiser(dev)
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64).to(dev)
    names = [n for n in ts.solvers.available("diffusion") if ts.solvers.get(n).is_stochastic]
    for name in names:
        x = ts.sample(den, noise, name, steps=8, generator=torch.Generator(device=dev).manual_seed(0))
        assert x.device.type == dev.type and bool(torch.isfinite(x).all()), name
    return ", ".join(names)


@check("sampling steps make no host synchronisation")
def no_sync(dev: torch.device) -> str:
    if dev.type != "cuda":
        return "skipped (not a CUDA device)"
    den = _denoiser(dev)
    grid = ts.make_grid(den.schedule, 12, "logsnr")
    x0 = torch.randn(64, 2, dtype=F64, device=dev)
    for name in ("dpmpp-2m", "unipc-bh2", "heun", "ddpm"):
        term = DiffusionTerm(den, generator=torch.Generator(device=dev).manual_seed(0))
        solver = ts.solvers.get(name)
        state, table = solver.init(term, grid, x0)
        times, x = grid.t.tolist(), x0
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for i in range(grid.steps):
                x, state, _, _ = solver.step(term, times[i], times[i + 1], x, state, table[i])
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return "dpmpp-2m, unipc-bh2, heun, ddpm: 12 steps each under set_sync_debug_mode('error')"


@check("adaptive solves (shared and per-sample) on the device = CPU")
def adaptive_matches_cpu(dev: torch.device) -> str:
    mu = torch.linspace(0.5, 3.0, 16, dtype=F64)[:, None]

    def vdp(t, y):
        x, v = y[:, :1], y[:, 1:]
        return torch.cat([v, mu.to(y) * (1 - x * x) * v - x], dim=1)

    y0 = torch.cat([torch.full((16, 1), 2.0, dtype=F64), torch.zeros(16, 1, dtype=F64)], 1)
    out = []
    for per_sample, tdt in ((False, F64), (True, F64), (True, torch.float32)):
        kw = dict(rtol=1e-8, atol=1e-8, per_sample_steps=per_sample, time_dtype=tdt)
        cpu = ts.solve(vdp, y0, 0.0, 5.0, **kw)
        on_dev = ts.solve(vdp, y0.to(dev), 0.0, 5.0, **kw)
        err = float((on_dev.x.cpu() - cpu.x).abs().max())
        assert err < (1e-6 if tdt == F64 else 1e-4), (per_sample, tdt, err)
        if per_sample:
            assert on_dev.stats.nfe.device.type == dev.type and bool((on_dev.status == 0).all())
        out.append(f"{'per-sample' if per_sample else 'shared'} {str(tdt)[6:]}: {err:.1e}")
    return "; ".join(out)


@check("compiled steps: one graph per kind of step, = eager")
def compiled(dev: torch.device) -> str:
    out = []
    den = _denoiser(dev)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64).to(dev)
    for steps in (20, 23):
        grid = ts.make_grid(den.schedule, steps, "logsnr")
        sol = ts.integrate(DiffusionTerm(den), "dpmpp-2m", grid, x0, compile=True)
        eager = ts.integrate(DiffusionTerm(den), "dpmpp-2m", grid, x0)
        assert float((sol.x - eager.x).abs().max()) < 1e-10
    graphs = counters["stats"]["unique_graphs"]
    assert graphs <= 4, graphs
    out.append(f"dpmpp-2m 20 + 23 steps: {graphs} graphs")
    torch._dynamo.reset()
    counters.clear()
    ks = ts.pde.KuramotoSivashinsky(length=22.0, n=64)
    u0 = torch.randn(4, 64, generator=torch.Generator().manual_seed(0), dtype=F64).to(dev)
    term, x = ks.term(F64, dev), ks.to_spectral(u0)
    grid = 0.1 * torch.arange(41, dtype=F64)
    sol = ts.integrate(term, "etdrk4", grid, x, compile=True)
    want = ts.integrate(term, "etdrk4", grid, x).x
    assert float((sol.x - want).abs().max()) < 1e-9 and counters["stats"]["unique_graphs"] == 1
    # 39: the steps after the first ran in one while_loop graph; absent: one compiled call per step
    out.append(f"etdrk4 40 steps: 1 graph, {sol.extras.get('loop_steps', 0)} steps in the device loop")
    return "; ".join(out)


@check("fixed grids through CUDA graphs (compile mode 'reduce-overhead') and the compiled "
       "per-sample loop = eager")
def graphed(dev: torch.device) -> str:
    torch._dynamo.reset()
    out = []
    den = _denoiser(dev)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64).to(dev)
    grid = ts.make_grid(den.schedule, 12, "logsnr")
    opts = {"mode": "reduce-overhead"}
    with torch.no_grad():
        eager = ts.integrate(DiffusionTerm(den), "dpmpp-2m", grid, x0).x
        for _ in range(2):  # the second run replays the recorded graphs
            got = ts.integrate(DiffusionTerm(den), "dpmpp-2m", grid, x0, compile=opts).x
        err = float((got - eager).abs().max())
    assert err < 1e-10, err
    out.append(f"dpmpp-2m (history kept across replays): {err:.0e}")
    mu = torch.linspace(0.5, 3.0, 32, dtype=F64, device=dev)

    def vdp(t, y):
        return torch.stack([y[:, 1], mu * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], dim=1)

    y0 = torch.zeros(32, 2, dtype=F64, device=dev)
    y0[:, 0] = 2.0
    ctrl = ts.PIDController(rtol=1e-6, atol=1e-6)
    runs = [ts.integrate(ts.ODETerm(vdp), "tsit5", ctrl, y0, t_span=(0.0, 2.0), per_sample=True, compile=c)
            for c in (False, True)]
    err = float((runs[0].x - runs[1].x).abs().max())
    assert err < 1e-10 and torch.equal(runs[0].stats.accepted, runs[1].stats.accepted), err
    # the attempts after the first run in one compiled while_loop (0: it fell back to one
    # compiled call per attempt, which is correct but slower)
    out.append(f"per-sample tsit5 compiled on the device: {err:.0e}, "
               f"{runs[1].extras['loop_attempts']} attempts in the device loop")
    return "; ".join(out)


@check("implicit solvers (dense and Krylov Newton) on the device = CPU")
def implicit_matches_cpu(dev: torch.device) -> str:
    def vdp(t, y):  # scaled Van der Pol, mu = 1e3: stiff
        return torch.stack([y[1], 1e3 * ((1 - y[0] ** 2) * y[1] - y[0])])

    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    out = []
    for name, jac in (("kvaerno5", "dense"), ("radau-iia5", "dense"), ("kvaerno5", "krylov")):
        cpu = ts.solve(vdp, y0, 0.0, 1.0, solver=ts.solvers.get(name, jacobian=jac), rtol=1e-6, atol=1e-8)
        on_dev = ts.solve(vdp, y0.to(dev), 0.0, 1.0, solver=ts.solvers.get(name, jacobian=jac), rtol=1e-6,
                          atol=1e-8)
        err = float((on_dev.x.cpu() - cpu.x).abs().max())
        assert err < 1e-6 and on_dev.stats.nfe == cpu.stats.nfe, (name, jac, err)
        out.append(f"{name} {jac}: {err:.1e}, NFE {on_dev.stats.nfe}")
    return "; ".join(out)


@check("torchdiffeq drop-in and neural CDE on the device")
def odeint_and_cde(dev: torch.device) -> str:
    seen = []

    def func(t, y):
        seen.append(t.device.type)
        return -y * torch.sin(t)

    t = torch.linspace(0, 2, 5, dtype=F64, device=dev, requires_grad=True)
    y0 = torch.ones(3, dtype=F64, device=dev, requires_grad=True)
    ys = ts.odeint(func, y0, t, method="dopri5")
    ys.sum().backward()
    assert ys.device.type == dev.type and set(seen) == {dev.type} and t.grad is not None
    times = torch.linspace(0, 1, 20, dtype=F64, device=dev)
    values = torch.randn(4, 20, 3, generator=torch.Generator().manual_seed(0), dtype=F64).to(dev)
    mask = torch.rand(4, 20, 3, generator=torch.Generator().manual_seed(1)).to(dev) > 0.3
    path = ts.cde.control_path(times, values * mask, mask, kind="hermite-cubic")
    path_cpu = ts.cde.control_path(times.cpu(), (values * mask).cpu(), mask.cpu(), kind="hermite-cubic")
    err = max(float((path.evaluate(q).cpu() - path_cpu.evaluate(q)).abs().max())
              for q in (0.0, 0.13, 0.5, 0.77, 1.0))
    assert err < 1e-12, err
    return f"odeint: t on {dev.type}, t.grad set; CDE path device = CPU to {err:.0e}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    dev = torch.device(ap.parse_args().device)
    print(f"torch {torch.__version__}, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""), flush=True)
    for fn in (sampling_matches_cpu, stochastic_runs, no_sync, adaptive_matches_cpu, compiled, graphed,
               implicit_matches_cpu, odeint_and_cde):
        fn(dev)
    for name, ok, msg in RESULTS:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {msg}", flush=True)
    return 0 if all(ok for _, ok, _ in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Speed side by side with the JAX and PyTorch peers, one process -> benchmarks/results/speed.md
(+ speed.json).

Same work, same tolerances, CPU, one thread for both frameworks (XLA is pinned to one thread
before JAX is imported). Rows (issue 16):

1. 256 Van der Pol oscillators, mu in [0.2, 6], x(0) = (2, 0), t in [0, 10], rtol = atol = 1e-6,
   dopri5 / tsit5: diffrax ``jit(vmap(diffeqsolve))`` (each oscillator its own steps) against
   ``ts.integrate`` with one step size for the batch ("shared") and one per oscillator
   ("per-sample"), eager and ``compile=True``;
2. Kuramoto-Sivashinsky ETDRK4, length 64, N = 256, batch 64, dt = 0.2, 200 steps, float64 and
   float32: exponax ``KuramotoSivashinskyConservative(order=4)`` stepping in Fourier space
   (``jit(vmap(fori_loop(step_fourier)))``) against ``ts.integrate(term, "etdrk4", ...)``;
3. the dpmpp-2m step with the model excluded (it returns a precomputed data prediction),
   states (1, 4, 64, 64) and (16, 4, 64, 64), 20 steps of a Karras grid: k-diffusion
   ``sample_dpmpp_2m`` (on the same sigmas) against ``ts.integrate(..., "dpmpp-2m")``;
4. a neural ODE forward + backward: MLP field 16 -> 64 -> 16 (tanh), batch 128 as one state,
   t in [0, 1], dopri5, rtol = atol = 1e-6, float64, gradient of ``sum(y(1)^2)`` with respect to
   the weights by backpropagation through the steps: diffrax (``jit(grad)``, its default
   recursive-checkpoint adjoint) and torchdiffeq ``odeint`` against ``ts.solve``;
5. 2-D Navier-Stokes (vorticity, nu = 1e-3, no forcing), N = 64, batch 8, dt = 0.01, 50 ETDRK4
   steps, float64: exponax ``NavierStokesVorticity(order=4)`` against ``ts.integrate``.

Per row: one warm-up of each side (its wall time minus the median of the timed runs is the
compile time: ``torch.compile`` for ours, ``jax.jit`` for the peer), then ``--repeats`` timed
runs alternating ours and the peer; reported: medians, ratio ours / peer, and the max abs
difference of the results (final states; gradients for the neural ODE). A peer that is not
installed leaves its row in the table marked "not installed". Install the peers with
``pip install -e '.[peers]'``.

Memory: on Linux the process keeps freed memory in its heap (glibc ``mallopt``: no ``mmap`` for
large blocks, no trimming), for both sides alike. Otherwise every megabyte-sized temporary of a
step is a fresh ``mmap`` whose pages fault in on first touch, and the (16, 4, 64, 64) diffusion
rows measure the kernel's page-fault path more than either library (their ratio moved by 15 %
from run to run).

Run:  PYTHONPATH=src python benchmarks/speed.py [--repeats 5] [--quick] [--only vdp,ks,dpmpp,node,ns]
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _heap import keep_freed_memory  # noqa: E402  # benchmarks/_heap.py, beside this script

import timestepper as ts  # noqa: E402
from timestepper.diffusion.term import DiffusionTerm  # noqa: E402

HERE = Path(__file__).resolve().parent
F64 = torch.float64


def peer(name: str) -> Any:
    """The peer module, or ``None`` when it is not installed (the row is then skipped)."""
    try:
        mod = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install counts as missing
        return None
    if name == "jax":
        mod.config.update("jax_enable_x64", True)
        mod.config.update("jax_platforms", "cpu")
    return mod


def _seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timed_pair(ours: Callable[[], Any], theirs: Callable[[], Any] | None, repeats: int) -> dict:
    """Warm-up of each (compile time = first run - median), then alternating timed runs."""
    first_ours = _seconds(ours)
    first_peer = _seconds(theirs) if theirs is not None else math.nan
    o, p = [], []
    for _ in range(repeats):
        o.append(_seconds(ours))
        if theirs is not None:
            p.append(_seconds(theirs))
    mo = statistics.median(o)
    mp = statistics.median(p) if p else math.nan
    return dict(ours_ms=1e3 * mo, peer_ms=1e3 * mp, ratio=mo / mp if p else math.nan,
                compile_s=max(first_ours - mo, 0.0), peer_compile_s=max(first_peer - mp, 0.0) if p else math.nan)


def row(work: str, mode: str, peer_name: str, timing: dict, diff: float, note: str = "") -> dict:
    r = dict(work=work, mode=mode, peer=peer_name, diff=diff, note=note, **timing)
    print(f"{work:28s} {mode:26s} ours {r['ours_ms']:9.2f} ms  {peer_name:22s} {r['peer_ms']:9.2f} ms  "
          f"ratio {r['ratio']:.2f}  compile {r['compile_s']:.1f}/{r['peer_compile_s']:.1f} s  diff {diff:.1e} {note}",
          flush=True)
    return r


def _modes() -> list[tuple[str, bool, bool]]:
    return [("shared, eager", False, False), ("shared, compiled", False, True),
            ("per-sample, eager", True, False), ("per-sample, compiled", True, True)]


# ----------------------------------------------------------------------------------------------
# 1. Van der Pol batch
# ----------------------------------------------------------------------------------------------
VDP_B, VDP_T1, VDP_TOL = 256, 10.0, 1e-6


def _vdp_ours(mu: torch.Tensor, y0: torch.Tensor, solver: str, per_sample: bool, compile: bool):
    def f(t, y):
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], dim=1)

    term, ctrl = ts.ODETerm(f), ts.PIDController(rtol=VDP_TOL, atol=VDP_TOL)
    slv = ts.solvers.get(solver)
    return lambda: ts.integrate(term, slv, ctrl, y0, t_span=(0.0, VDP_T1), per_sample=per_sample,
                                compile=compile).x


def _vdp_diffrax(mu: torch.Tensor, y0: torch.Tensor, solver: str):
    jax, dfx = peer("jax"), peer("diffrax")
    if jax is None or dfx is None:
        return None
    jnp = jax.numpy

    def field(t, y, m):
        return jnp.stack([y[1], m * (1 - y[0] ** 2) * y[1] - y[0]])

    method = {"dopri5": dfx.Dopri5, "tsit5": dfx.Tsit5}[solver]()

    def one(m, y):
        sol = dfx.diffeqsolve(dfx.ODETerm(field), method, 0.0, VDP_T1, None, y, args=m,
                              stepsize_controller=dfx.PIDController(rtol=VDP_TOL, atol=VDP_TOL),
                              saveat=dfx.SaveAt(t1=True), max_steps=100_000)
        return sol.ys[-1]

    fn = jax.jit(jax.vmap(one))
    m, y = jnp.asarray(mu.numpy()), jnp.asarray(y0.numpy())
    return lambda: np.asarray(fn(m, y).block_until_ready())


def vdp_rows(repeats: int) -> list[dict]:
    mu = torch.linspace(0.2, 6.0, VDP_B, dtype=F64)
    y0 = torch.zeros(VDP_B, 2, dtype=F64)
    y0[:, 0] = 2.0
    out = []
    for solver in ("dopri5", "tsit5"):
        for mode, per_sample, compile in _modes():
            theirs = _vdp_diffrax(mu, y0, solver)  # jit afresh: its compile time is measured
            torch._dynamo.reset()
            ours = _vdp_ours(mu, y0, solver, per_sample, compile)
            timing = timed_pair(ours, theirs, repeats)
            ref = torch.from_numpy(theirs().copy()) if theirs is not None else None
            diff = float((ours() - ref).abs().max()) if ref is not None else math.nan
            out.append(row(f"Van der Pol x{VDP_B}, {solver}", mode,
                           "diffrax jit(vmap)" if theirs else "diffrax: not installed", timing, diff))
    return out


# ----------------------------------------------------------------------------------------------
# 2. Kuramoto-Sivashinsky ETDRK4, and 5. 2-D Navier-Stokes
# ----------------------------------------------------------------------------------------------
KS_L, KS_N, KS_B, KS_DT, KS_STEPS = 64.0, 256, 64, 0.2, 200
NS_N, NS_B, NS_DT, NS_STEPS, NS_NU = 64, 8, 0.01, 50, 1e-3


def _cast_tree(eqx: Any, jnp: Any, tree: Any, real: Any) -> Any:
    """An exponax stepper with its arrays in ``real`` (and the matching complex dtype)."""
    cplx = jnp.complex64 if real == jnp.float32 else jnp.complex128

    def cast(a):
        if not eqx.is_array(a):
            return a
        if jnp.iscomplexobj(a):
            return a.astype(cplx)
        return a.astype(real) if jnp.issubdtype(a.dtype, jnp.floating) else a

    return __import__("jax").tree_util.tree_map(cast, tree)


def _exponax_run(stepper: Any, u_hat: torch.Tensor, steps: int, dtype: torch.dtype):
    """``steps`` exponax steps in Fourier space of a batch ``(B, 1, ...)`` (jit(vmap(fori_loop)))."""
    jax, eqx = peer("jax"), peer("equinox")
    jnp = jax.numpy
    stepper = _cast_tree(eqx, jnp, stepper, jnp.float32 if dtype == torch.float32 else jnp.float64)

    def roll(u):
        return jax.lax.fori_loop(0, steps, lambda i, v: stepper.step_fourier(v), u)

    fn = jax.jit(jax.vmap(roll))
    x = jnp.asarray(u_hat.numpy())
    return lambda: np.asarray(fn(x).block_until_ready())


def _spectral_ours(eq: Any, u0: torch.Tensor, dt: float, steps: int, compile: bool):
    term, x0 = eq.term(u0.dtype), eq.to_spectral(u0)
    grid = dt * torch.arange(steps + 1, dtype=F64)
    slv = ts.solvers.get("etdrk4")
    return lambda: ts.integrate(term, slv, grid, x0, compile=compile).x


def _pde_rows(work: str, eq: Any, u0: torch.Tensor, make_peer: Callable[[], Any], dt: float, steps: int,  # noqa: PLR0913
              repeats: int) -> list[dict]:
    exponax = peer("exponax")
    out = []
    for mode, compile in (("eager", False), ("compiled", True)):
        theirs = _exponax_run(make_peer(exponax), eq.to_spectral(u0)[:, None], steps, u0.dtype) \
            if exponax is not None else None
        torch._dynamo.reset()
        ours = _spectral_ours(eq, u0, dt, steps, compile)
        timing = timed_pair(ours, theirs, repeats)
        ref = eq.to_physical(torch.from_numpy(theirs().copy())[:, 0]) if theirs is not None else None
        diff = float((eq.to_physical(ours()) - ref).abs().max()) if ref is not None else math.nan
        out.append(row(work, mode, "exponax" if theirs else "exponax: not installed", timing, diff))
    return out


def ks_rows(repeats: int) -> list[dict]:
    eq = ts.pde.KuramotoSivashinsky(length=KS_L, n=KS_N)
    base = ts.pde.data.initial_conditions(eq, range(KS_B), seed=0, stream=0).to(F64)
    out = []
    for dtype in (F64, torch.float32):
        def make(ex):
            return ex.stepper.KuramotoSivashinskyConservative(1, KS_L, KS_N, KS_DT, order=4)

        name = str(dtype).removeprefix("torch.")
        out += _pde_rows(f"KS ETDRK4 ({KS_B}, {KS_N}) {name}", eq, base.to(dtype), make, KS_DT, KS_STEPS, repeats)
    return out


def ns_rows(repeats: int) -> list[dict]:
    eq = ts.pde.NavierStokes2D(length=2 * math.pi, n=NS_N, nu=NS_NU)
    x, y = eq.xy
    g = torch.Generator().manual_seed(0)
    amp = torch.randn(NS_B, 4, generator=g, dtype=F64)
    u0 = (amp[:, 0, None, None] * torch.sin(x + y) + amp[:, 1, None, None] * torch.cos(2 * x)
          + amp[:, 2, None, None] * torch.sin(3 * y) + amp[:, 3, None, None] * torch.cos(x - 2 * y))

    def make(ex):
        return ex.stepper.NavierStokesVorticity(2, 2 * math.pi, NS_N, NS_DT, diffusivity=NS_NU, order=4)

    return _pde_rows(f"Navier-Stokes 2-D ({NS_B}, {NS_N}, {NS_N}) float64", eq, u0, make, NS_DT, NS_STEPS, repeats)


# ----------------------------------------------------------------------------------------------
# 3. dpmpp-2m step overhead
# ----------------------------------------------------------------------------------------------
DIFF_STEPS = 20


def _k_sampling() -> Any:
    sys.path.insert(0, str(HERE.parent))
    try:
        from tests.conftest import _load_k_diffusion_sampling
    except Exception:  # noqa: BLE001
        return None
    return _load_k_diffusion_sampling()


def dpmpp_rows(repeats: int) -> list[dict]:
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    grid = ts.make_grid(sched, DIFF_STEPS, "karras")
    ksamp = _k_sampling()
    sigmas = (grid.sigma / grid.alpha).to(torch.float32)
    sigmas[-1] = 0.0
    out = []
    for shape in ((1, 4, 64, 64), (16, 4, 64, 64)):
        g = torch.Generator().manual_seed(0)
        noise, data = torch.randn(shape, generator=g), torch.randn(shape, generator=g) * 0.5
        den = ts.Denoiser(lambda x, t, data=data: data, sched, "sample")
        theirs = None
        if ksamp is not None:
            def theirs(data=data, noise=noise):
                return ksamp.sample_dpmpp_2m(lambda x, s: data, noise * sigmas[0], sigmas, disable=True)

        for mode, compile in (("eager", False), ("compiled", True)):
            torch._dynamo.reset()
            slv = ts.solvers.get("dpmpp-2m")

            def ours(compile=compile, slv=slv, den=den, noise=noise):
                return ts.integrate(DiffusionTerm(den), slv, grid, noise, compile=compile).x

            with torch.no_grad():
                timing = timed_pair(ours, theirs, repeats)
            per_step = {k: v / DIFF_STEPS * 1e3 if k.endswith("_ms") else v for k, v in timing.items()}
            out.append(row(f"dpmpp-2m step {shape} (us/step)", mode,
                           "k-diffusion sample_dpmpp_2m" if theirs else "k-diffusion: not installed",
                           per_step, math.nan, "model excluded; agreement: see tests"))
    return out


# ----------------------------------------------------------------------------------------------
# 4. neural ODE forward + backward
# ----------------------------------------------------------------------------------------------
NODE_D, NODE_H, NODE_B, NODE_TOL = 16, 64, 128, 1e-6


def _node_weights() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(NODE_H, NODE_D, generator=g, dtype=F64) / math.sqrt(NODE_D)
    w2 = torch.randn(NODE_D, NODE_H, generator=g, dtype=F64) / math.sqrt(NODE_H)
    return [w1, torch.zeros(NODE_H, dtype=F64), w2, torch.zeros(NODE_D, dtype=F64)]


def _node_torch(y0: torch.Tensor, solve: Callable) -> Callable[[], torch.Tensor]:
    def run():
        ws = [w.clone().requires_grad_(True) for w in _node_weights()]

        def f(t, y):
            return torch.tanh(y @ ws[0].T + ws[1]) @ ws[2].T + ws[3]

        y1 = solve(f, y0)
        (y1 * y1).sum().backward()
        return ws[0].grad

    return run


def _node_diffrax(y0: torch.Tensor) -> Callable[[], Any] | None:
    jax, dfx = peer("jax"), peer("diffrax")
    if jax is None or dfx is None:
        return None
    jnp = jax.numpy

    def loss(ws, y):
        def f(t, z, args):
            return jnp.tanh(z @ ws[0].T + ws[1]) @ ws[2].T + ws[3]

        sol = dfx.diffeqsolve(dfx.ODETerm(f), dfx.Dopri5(), 0.0, 1.0, None, y,
                              stepsize_controller=dfx.PIDController(rtol=NODE_TOL, atol=NODE_TOL),
                              saveat=dfx.SaveAt(t1=True), max_steps=100_000)
        return (sol.ys[-1] ** 2).sum()

    fn = jax.jit(jax.grad(loss))
    ws = [jnp.asarray(w.numpy()) for w in _node_weights()]
    y = jnp.asarray(y0.numpy())
    return lambda: torch.from_numpy(np.array(fn(ws, y)[0].block_until_ready()))


def node_rows(repeats: int) -> list[dict]:
    y0 = torch.randn(NODE_B, NODE_D, generator=torch.Generator().manual_seed(1), dtype=F64)
    ours = _node_torch(y0, lambda f, y: ts.solve(f, y, 0.0, 1.0, solver="dopri5", rtol=NODE_TOL,
                                                  atol=NODE_TOL).x)
    grad = ours()
    out = []
    tdq = peer("torchdiffeq")
    peers: list[tuple[str, Callable | None]] = [("diffrax jit(grad)", _node_diffrax(y0))]
    if tdq is not None:
        peers.append(("torchdiffeq odeint", _node_torch(y0, lambda f, y: tdq.odeint(
            f, y, torch.tensor([0.0, 1.0], dtype=F64), method="dopri5", rtol=NODE_TOL, atol=NODE_TOL)[-1])))
    else:
        peers.append(("torchdiffeq", None))
    for name, theirs in peers:
        timing = timed_pair(ours, theirs, repeats)
        diff = float((theirs() - grad).abs().max()) if theirs is not None else math.nan
        out.append(row(f"neural ODE fwd+bwd, batch {NODE_B}", "eager, dopri5",
                       name if theirs else f"{name}: not installed", timing, diff, "diff: dL/dW1"))
    return out


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
ROWS = {"vdp": vdp_rows, "ks": ks_rows, "dpmpp": dpmpp_rows, "node": node_rows, "ns": ns_rows}


def _fmt(v: float, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def render(rows: list[dict], cfg: dict) -> str:
    out = ["## Speed side by side with the JAX and PyTorch peers (CPU, one thread)", "",
           f"Machine: {platform.machine()} {platform.system()}, torch {torch.__version__}"
           f"{', jax ' + cfg['jax'] if cfg['jax'] else ''}; one thread for both frameworks; median of "
           f"{cfg['repeats']} timed runs after one warm-up, ours and the peer alternating in one process. "
           "Compile time: the warm-up minus the median (`torch.compile` for ours, `jax.jit` for the peer), "
           "excluded from the run times. Ratio: ours / peer (below 1: ours is faster). Max abs diff: ours vs "
           "the peer (final states; the gradient dL/dW1 for the neural ODE). See the docstring of "
           "`benchmarks/speed.py` for each problem."
           + (" Freed memory stays in the process heap for both sides (glibc mallopt)." if cfg.get("heap") else ""),
           "",
           "| work | ours | ours (ms) | peer | peer (ms) | ratio | compile ours / peer (s) | max abs diff | note |",
           "|---|---|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        unit = "us" if "us/step" in r["work"] else "ms"
        out.append(f"| {r['work']} | {r['mode']} | {_fmt(r['ours_ms'], '.2f')} {unit} | {r['peer']} | "
                   f"{_fmt(r['peer_ms'], '.2f')} | {_fmt(r['ratio'], '.2f')} | {_fmt(r['compile_s'], '.1f')} / "
                   f"{_fmt(r['peer_compile_s'], '.1f')} | {_fmt(r['diff'], '.1e')} | {r['note']} |")
    out += ["", f"Reproduce: `{cfg['command']}`"]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 5, --quick 2)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(ROWS), help="comma-separated subset of " + ",".join(ROWS))
    args = ap.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(1)
    heap = keep_freed_memory()
    jax = peer("jax")
    rows: list[dict] = []
    for key in args.only.split(","):
        rows += ROWS[key](repeats)
    cfg = dict(repeats=repeats, jax=getattr(jax, "__version__", None), heap=heap,
               command=f"PYTHONPATH=src python benchmarks/speed.py --repeats {repeats}"
                       + ("" if args.only == ",".join(ROWS) else f" --only {args.only}"))
    args.out.mkdir(parents=True, exist_ok=True)
    name = "speed" if args.only == ",".join(ROWS) else "speed_partial"
    (args.out / f"{name}.json").write_text(json.dumps({"config": cfg, "rows": rows}, indent=1))
    (args.out / f"{name}.md").write_text(render(rows, cfg))
    print(f"wrote {args.out / f'{name}.md'}")


if __name__ == "__main__":
    main()

"""Neural ODE/SDE benchmark: timestepper against torchdiffeq, torchode and torchsde, side by side.

Writes ``benchmarks/results/ode.md`` (and ``ode.json``). Every number in the Markdown is computed
here. Run: ``PYTHONPATH=src python benchmarks/ode.py`` (about two minutes on one CPU core).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

import timestepper as ts
from timestepper.bench.detest import PROBLEMS, reference, scaled_error
from timestepper.ode import VirtualBrownianTree, sdeint

torch.set_num_threads(1)
OUT = Path(__file__).parent / "results"
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def timed(fn, repeat=1):
    best, out = math.inf, None
    for _ in range(repeat):
        if DEV.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = fn()
        if DEV.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated() / 2**20 if DEV.type == "cuda" else None
    return out, best, mem


class Counter:
    def __init__(self, f):
        self.f, self.n = f, 0

    def __call__(self, t, y, *a):
        self.n += 1
        return self.f(t, y, *a)


def table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_mem(m):
    return "n/a (CPU)" if m is None else f"{m:.1f}"


# ---------------------------------------------------------------------------------------------
def bench_batch(problem="vdp", B=256, T=10.0, tol=1e-6):
    """(a) A batch of Van der Pol oscillators (distinct mu) or Lotka–Volterra systems (distinct
    rates): shared vs per-sample steps."""
    g = torch.Generator().manual_seed(0)
    r = torch.rand(B, generator=g, dtype=torch.float64).to(DEV)
    if problem == "vdp":
        mu = 0.2 + 4.8 * r
        y0 = torch.tensor([[2.0, 0.0]] * B, dtype=torch.float64, device=DEV)

        def field(t, y, *_):
            return torch.stack([y[:, 1], mu * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], 1)
    else:
        a = 0.5 + 2.5 * r  # prey growth rate in [0.5, 3]
        y0 = torch.tensor([[1.0, 1.0]] * B, dtype=torch.float64, device=DEV)

        def field(t, y, *_):
            return torch.stack([a * y[:, 0] - y[:, 0] * y[:, 1], -3 * y[:, 1] + y[:, 0] * y[:, 1]],
                               1)

    ref = ts.solve(field, y0, 0.0, T, solver="dopri8", rtol=1e-12, atol=1e-12,
                   per_sample_steps=True).x
    rows, res = [], {}
    repeat = 5  # best of 5 for every row: the machine is shared and its timings noisy

    def err(x):
        return float((x - ref).abs().max())

    def ours(name, kw, tol_used):
        c = Counter(field)
        sol, wall, mem = timed(lambda: ts.solve(c, y0, 0.0, T, rtol=tol_used, atol=tol_used, **kw),
                               repeat=repeat)
        c.n //= repeat
        st = sol.stats
        per = kw.get("per_sample_steps", False)
        total = int(st.nfe.sum()) if per else st.nfe * B
        acc = f"{int(st.accepted.sum())}" if per else f"{st.accepted * B}"
        rej = f"{int(st.rejected.sum())}" if per else f"{st.rejected * B}"
        e = err(sol.x)
        rows.append([name, c.n, total, acc, rej, f"{wall:.3f}", fmt_mem(mem), f"{e:.1e}"])
        res[name] = dict(calls=c.n, sample_nfe=total, wall=wall, err=e, tol=tol_used)

    ours_kw = [("timestepper dopri5 shared", dict(solver="dopri5")),
               ("timestepper tsit5 shared", dict(solver="tsit5")),
               ("timestepper dopri5 per-sample", dict(solver="dopri5", per_sample_steps=True)),
               ("timestepper tsit5 per-sample", dict(solver="tsit5", per_sample_steps=True))]
    for name, kw in ours_kw:
        ours(name, kw, tol)

    import torchdiffeq

    c = Counter(field)
    out, wall, mem = timed(lambda: torchdiffeq.odeint(
        c, y0, torch.tensor([0.0, T], dtype=torch.float64, device=DEV), rtol=tol, atol=tol,
        method="dopri5"), repeat=repeat)
    c.n //= repeat
    e_td = err(out[-1])
    rows.append(["torchdiffeq dopri5", c.n, c.n * B, "-", "-", f"{wall:.3f}", fmt_mem(mem),
                 f"{e_td:.1e}"])
    res["torchdiffeq dopri5"] = dict(calls=c.n, sample_nfe=c.n * B, wall=wall, err=e_td)
    # Equal accuracy: the loosest tolerance (tol x 2^k) at which our error is still at most
    # torchdiffeq's error at tol.
    for name, kw in ours_kw[1::2]:
        tol_eq = tol
        for k in range(1, 7):
            probe = ts.solve(field, y0, 0.0, T, rtol=tol * 2**k, atol=tol * 2**k, **kw)
            if err(probe.x) > e_td:
                break
            tol_eq = tol * 2**k
        label = f"{name}, equal accuracy (tol {tol_eq:.2g})"
        ours(label, kw, tol_eq)
        res[f"{name}, equal accuracy"] = res[label]
    try:
        import torchode as to

        c = Counter(field)
        term = to.ODETerm(c)
        solver = to.AutoDiffAdjoint(to.Dopri5(term=term),
                                    to.IntegralController(atol=tol, rtol=tol, term=term))
        t_eval = torch.tensor([[0.0, T]] * B, dtype=torch.float64, device=DEV)
        sol, wall, mem = timed(lambda: solver.solve(to.InitialValueProblem(y0=y0, t_eval=t_eval)),
                               repeat=repeat)
        c.n //= repeat
        st = sol.stats
        rows.append(["torchode dopri5 per-sample", c.n, int(st["n_steps"].sum()) * 6,
                     int(st["n_accepted"].sum()), int((st["n_steps"] - st["n_accepted"]).sum()),
                     f"{wall:.3f}", fmt_mem(mem), f"{err(sol.ys[:, -1]):.1e}"])
        res["torchode dopri5 per-sample"] = dict(calls=c.n, wall=wall)
    except ImportError:
        rows.append(["torchode", "not installed", "", "", "", "", "", ""])
    head = ["method", "f calls (batched)", "NFE summed over samples", "accepted (sum)",
            "rejected (sum)", "wall s", "peak MiB", "max err vs dopri8 1e-12"]
    return table(head, rows), res


# ---------------------------------------------------------------------------------------------
def neural_setup(B=128, width=64, tol=1e-5, T=5.0):
    """The neural ODE of (b): the field (counting its calls), y0, and each gradient method as
    ``label -> fn(y0) -> final state``."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(),
                              torch.nn.Linear(width, 2)).to(DEV)

    class F(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.n = 0

        def forward(self, t, y):
            self.n += 1
            return self.net(y)

    f = F()
    y0 = torch.randn(B, 2, device=DEV)
    tt = torch.tensor([0.0, T], device=DEV)
    import torchdiffeq

    methods = {f"timestepper dopri5 {mode}": (
        lambda y, mode=mode: ts.solve(f, y, 0.0, T, solver="dopri5", rtol=tol, atol=tol,
                                      adjoint=mode).x) for mode in ("direct", "checkpoint",
                                                                     "backsolve")}
    methods["torchdiffeq dopri5 direct"] = (
        lambda y: torchdiffeq.odeint(f, y, tt, rtol=tol, atol=tol, method="dopri5")[-1])
    methods["torchdiffeq dopri5 adjoint"] = (
        lambda y: torchdiffeq.odeint_adjoint(f, y, tt, rtol=tol, atol=tol, method="dopri5")[-1])
    return f, y0, methods


def peak_cpu_mib(fn) -> str:
    """Peak of the CPU memory torch allocates while ``fn`` runs, above what was allocated
    before: the running sum of the allocation events the profiler records (deterministic,
    unlike the process's resident set)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        roots = prof.profiler.kineto_results.experimental_event_tree()
    except AttributeError:  # the profiler's event tree is not a stable API
        return "n/a"
    events, stack = [], list(roots)
    while stack:
        node = stack.pop()
        if type(node.extra_fields).__name__ == "_ExtraFields_Allocation":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    cur = peak = 0
    for _, size in sorted(events):
        cur += size
        peak = max(peak, cur)
    return f"{peak / 2**20:.2f}"


def bench_neural():
    """(b) A neural ODE forward + backward with each gradient method."""
    f, y0, methods = neural_setup()
    rows, grads = [], {}

    def run(label, fn):
        saved = [0]

        def pack(t):
            saved[0] += t.numel() * t.element_size()
            return t

        def go():
            f.zero_grad()
            f.n = 0
            saved[0] = 0
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                x = fn(y0)
            nf = f.n
            x.pow(2).mean().backward()
            return nf, f.n - nf

        (nf, nb), wall, mem = timed(go, repeat=2)
        grads[label] = torch.cat([p.grad.reshape(-1) for p in f.parameters()]).clone()
        peak = fmt_mem(mem) if DEV.type == "cuda" else peak_cpu_mib(go)
        rows.append([label, nf, nb, f"{wall:.3f}", f"{saved[0] / 2**20:.2f}", peak])

    for label, fn in methods.items():
        run(label, fn)
    base = grads["timestepper dopri5 direct"]
    for r in rows:
        r.append(f"{float((grads[r[0]] - base).abs().max() / base.abs().max()):.1e}")
    peak_head = "peak GPU MiB" if DEV.type == "cuda" else "peak CPU MiB"
    head = ["method", "NFE forward", "NFE backward", "wall s (fwd+bwd)",
            "saved for backward MiB", peak_head, "max rel. grad diff vs ours direct"]
    return table(head, rows)


# ---------------------------------------------------------------------------------------------
def bench_detest():
    """DETEST at two tolerances: local error control (tsit5, dopri5, PI), global error control
    (re-solving with tighter tolerances), and the ``ts.odeint`` shim against torchdiffeq."""
    import torchdiffeq

    rows, summary, shim_ratio = [], {}, {}
    methods = (("tsit5", "i", "local"), ("dopri5", "i", "local"), ("tsit5", "pi", "local"),
               ("tsit5", "i", "global"), ("dopri8", "i", "global"))
    for tol in (1e-6, 1e-9):
        for name, p in PROBLEMS.items():
            ref = reference(name)
            row = [name, f"{tol:g}"]
            for slv, ctrl, control in methods:
                sol = ts.solve(p.f, p.initial(), 0.0, p.t1, solver=slv, rtol=tol, atol=tol,
                               controller=ctrl, error_control=control)
                e = scaled_error(sol.x, ref, tol, tol)
                if slv == "tsit5" and ctrl == "i":
                    row += [sol.stats.nfe, f"{e:.2f}"]
                label = f"{slv} ({ctrl.upper()} controller, {control} error control)"
                summary.setdefault((label, tol), []).append((sol.stats.nfe, e))
            t = torch.tensor([0.0, p.t1], dtype=torch.float64)
            nfe = {}
            for label, odeint in (("timestepper odeint shim, dopri5", ts.odeint),
                                  ("torchdiffeq dopri5", torchdiffeq.odeint)):
                c = Counter(p.f)
                out = odeint(c, p.initial(), t, rtol=tol, atol=tol, method="dopri5")
                e = scaled_error(out[-1], ref, tol, tol)
                row += [c.n, f"{e:.2f}"]
                summary.setdefault((label, tol), []).append((c.n, e))
                nfe[label] = c.n
            ratio = nfe["timestepper odeint shim, dopri5"] / nfe["torchdiffeq dopri5"]
            shim_ratio[tol] = max(shim_ratio.get(tol, 0.0), ratio)
            rows.append(row + [f"{ratio:.2f}"])
    head = ["problem", "tol", "tsit5 NFE", "tsit5 err/tol", "tsit5 global NFE",
            "tsit5 global err/tol", "ts.odeint NFE", "ts.odeint err/tol",
            "torchdiffeq dopri5 NFE", "torchdiffeq err/tol", "ts.odeint / torchdiffeq NFE"]
    srows = []
    for (slv, tol), v in sorted(summary.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        srows.append([slv, f"{tol:g}", sum(n for n, _ in v), sum(e <= 10 for _, e in v),
                      f"{max(e for _, e in v):.2f}"])
    stable = table(["method", "tol", "total NFE", "problems with err <= 10 tol (of 25)",
                    "worst err/tol"], srows)
    return table(head, rows), stable, shim_ratio


# ---------------------------------------------------------------------------------------------
def bench_regularisation(lams=(0.0, 0.01, 0.02, 0.05), iters=150, batch=128, width=64, tol=1e-8,
                         seed=0):
    """Pal et al. (2021) in their classifier setting: 8x8 digits (flattened, 64-d) -> neural ODE
    dz/dt = f(t, z) on t in [0, 1] (tsit5, rtol = atol = tol, float64) -> linear read-out. Only
    the end state matters, so the dynamics are free; ERNODE adds lam * sum_j E_j |h_j|
    (``sol.extras["reg_error"]``) to the cross-entropy. Same seeds, data order and
    initialisation for every lam; test accuracy and test NFE of the trained model."""
    from timestepper.train.data import digits

    dt = torch.float64
    xtr, ytr = digits("train", dtype=dt)
    xte, yte = digits("test", dtype=dt)
    xtr, xte = xtr.flatten(1), xte.flatten(1)
    mu, sd = xtr.mean(0), xtr.std(0).clamp(min=1e-3)  # per-pixel standardisation (train stats)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    d = xtr.shape[1]

    class Field(torch.nn.Module):  # the paper's time-dependent MLP dynamics
        def __init__(self):
            super().__init__()
            self.l1 = torch.nn.Linear(d + 1, width, dtype=dt)
            self.l2 = torch.nn.Linear(width + 1, d, dtype=dt)

        def forward(self, t, z):
            tt = torch.full_like(z[:, :1], float(t))
            return torch.tanh(self.l2(torch.cat([torch.tanh(self.l1(torch.cat([z, tt], 1))),
                                                 tt], 1)))

    rows = []
    for lam in lams:
        torch.manual_seed(seed)
        f, head = Field(), torch.nn.Linear(d, 10, dtype=dt)
        opt = torch.optim.Adam([*f.parameters(), *head.parameters()], lr=2e-2)
        g = torch.Generator().manual_seed(seed + 1)
        train_nfe, t0 = 0, time.perf_counter()
        for _ in range(iters):
            idx = torch.randint(0, len(xtr), (batch,), generator=g)
            sol = ts.solve(f, xtr[idx], 0.0, 1.0, solver="tsit5", rtol=tol, atol=tol,
                           regularise=lam > 0)
            loss = torch.nn.functional.cross_entropy(head(sol.x), ytr[idx])
            if lam > 0:
                loss = loss + lam * sol.extras["reg_error"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            train_nfe += sol.stats.nfe
        train_s = time.perf_counter() - t0
        with torch.no_grad():
            t0 = time.perf_counter()
            sol = ts.solve(f, xte, 0.0, 1.0, solver="tsit5", rtol=tol, atol=tol)
            test_s = time.perf_counter() - t0
            acc = float((head(sol.x).argmax(1) == yte).to(dt).mean())
        rows.append([f"{lam:g}", f"{100 * acc:.1f}", sol.stats.nfe,
                     f"{train_nfe / iters:.1f}", f"{train_s:.1f}", f"{1e3 * test_s:.0f}"])
    return table(["lambda (ERNODE)", "test accuracy %", "test NFE", "mean train NFE / iter",
                  "train s", "test solve ms"], rows)


# ---------------------------------------------------------------------------------------------
def bench_sde(B=256, n=200):
    import torchsde

    class GBM(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return 0.5 * y

        def g(self, t, y):
            return 0.8 * y

    sde = GBM()
    y0 = torch.ones(B, 1, dtype=torch.float64)
    tt = torch.tensor([0.0, 1.0], dtype=torch.float64)
    rows = []
    for method, ours in (("euler", "sde-euler"), ("milstein", "milstein")):
        bm = torchsde.BrownianInterval(0.0, 1.0, size=(B, 1), dtype=torch.float64, entropy=1,
                                       levy_area_approximation="none")
        bm(0.0, 1.0)
        ref, w_ref, _ = timed(lambda bm=bm, method=method: torchsde.sdeint(
            sde, y0, tt, bm=bm, method=method, dt=1 / n), repeat=2)
        sol, w_ours, _ = timed(lambda bm=bm, ours=ours: sdeint(sde.f, sde.g, y0, tt, solver=ours,
                                                                dt=1 / n, bm=bm), repeat=2)
        rows.append([f"{ours} vs torchsde {method}", n,
                     f"{float((sol.ys - ref.detach()).abs().max()):.1e}", f"{w_ours:.3f}",
                     f"{w_ref:.3f}", f"{w_ours / w_ref:.2f}"])
    t1 = table(["solver", "steps", "max |ours - torchsde|", "ours wall s", "torchsde wall s",
                "ratio"], rows)
    # Strong order on GBM with a shared virtual Brownian tree.
    N = 2000
    bm = VirtualBrownianTree(0.0, 1.0, (N,), seed=3, dtype=torch.float64, tol=1e-5)
    x0 = torch.ones(N, dtype=torch.float64)
    w1 = bm(0.0, 1.0)
    rows = []
    for slv, strat in (("sde-euler", False), ("milstein", False), ("reversible-heun", True)):
        exact = torch.exp((0.5 - (0.0 if strat else 0.32)) + 0.8 * w1)
        errs = []
        for k in (16, 32, 64, 128):
            s = sdeint(lambda t, x: 0.5 * x, lambda t, x: 0.8 * x, x0, [0.0, 1.0], solver=slv,
                       dt=1 / k, bm=bm)
            errs.append(float((s.x - exact).abs().mean()))
        slope = math.log2(errs[0] / errs[-1]) / 3
        rows.append([slv] + [f"{e:.2e}" for e in errs] + [f"{slope:.2f}"])
    t2 = table(["solver", "E|err| h=1/16", "h=1/32", "h=1/64", "h=1/128", "strong order"], rows)
    return t1, t2


def main():
    t_start = time.perf_counter()
    batch_md, batch_res = bench_batch("vdp")
    lv_md, lv_res = bench_batch("lotka-volterra")
    neural_md = bench_neural()
    detest_md, detest_summary, shim_ratio = bench_detest()
    reg_md = bench_regularisation()
    sde_md, order_md = bench_sde()
    def ratios(res):
        td = res["torchdiffeq dopri5"]["wall"]
        return ", ".join(f"{mode} {res[f'timestepper tsit5 {mode}']['wall'] / td:.2f} "
                         f"(equal accuracy: {res[f'timestepper tsit5 {mode}, equal accuracy']['wall'] / td:.2f})"
                         for mode in ("shared", "per-sample"))

    md = f"""## Neural differential equations (`benchmarks/ode.py`)

Device: {DEV.type}, torch {torch.__version__}, one thread. Generated by `PYTHONPATH=src python
benchmarks/ode.py` in {time.perf_counter() - t_start:.0f} s.

### (a) 256 Van der Pol oscillators with distinct mu in [0.2, 5], t in [0, 10], rtol = atol = 1e-6

Shared mode takes one step size for the batch (the stiffest sample sets it); per-sample mode
accepts and rejects each sample on its own. "NFE summed over samples" counts each sample's own
evaluations (the work a per-sample method needs); "f calls" counts batched calls. The
"equal accuracy" rows use the loosest tolerance (1e-6 x 2^k) at which our error is still at
most torchdiffeq's. Wall time of timestepper tsit5 / torchdiffeq dopri5: {ratios(batch_res)}.

{batch_md}

The same with 256 Lotka–Volterra systems (prey growth rate in [0.5, 3], t in [0, 10]); wall
time of timestepper tsit5 / torchdiffeq dopri5: {ratios(lv_res)}.

{lv_md}

### (b) Neural ODE (MLP 2-64-2, batch 128, t in [0, 5], rtol = atol = 1e-5), forward + backward

"Saved for backward" is the size of the tensors autograd keeps from the forward pass (measured
with `saved_tensors_hooks`), the memory that grows with the number of steps. "Peak CPU MiB" is
the peak of the memory torch allocates during one forward + backward above what was allocated
before (the running sum of the profiler's allocation events; on a GPU the column is
`torch.cuda.max_memory_allocated`).

{neural_md}

### DETEST (Hull et al. 1972), end error / tolerance at t = 20

Local error control bounds each step's error; on long orbits (class D) the end error then grows
to 50-1400x the tolerance for every method here, torchdiffeq's included. Global error control
(`ts.solve(..., error_control="global")`) solves again with tighter tolerances until the
estimated end error is within the tolerance; its NFE sums every solve. The `ts.odeint` shim
takes torchdiffeq's steps (same embedded estimate and controller): the largest per-problem NFE
ratio shim / torchdiffeq is {shim_ratio[1e-6]:.2f} at 1e-6 and {shim_ratio[1e-9]:.2f} at 1e-9.

{detest_summary}

Per problem (err/tol = max_i |y_i - ref_i| / (atol + rtol |ref_i|)):

{detest_md}

### Solver-heuristic regularisation (Pal et al. 2021): digits classifier, tsit5 rtol = atol = 1e-8

8x8 digits (1257 train / 540 test, standardised pixels) -> neural ODE dz/dt = f(t, z) in 64-d on
t in [0, 1] (MLP 65-64-64, tanh; float64) -> linear read-out, trained 150 Adam steps (batch 128,
lr 0.02) with loss = cross-entropy + lambda * `sol.extras["reg_error"]` (ERNODE,
sum_j E_j |h_j|). Same initialisation and batches for every lambda. Test NFE: one solve of the
whole test set at the training tolerance.

{reg_md}

### SDEs: parity and speed against torchsde (GBM, batch 256, same BrownianInterval)

{sde_md}

Strong order on geometric Brownian motion (2000 paths, one virtual Brownian tree):

{order_md}
"""
    OUT.mkdir(exist_ok=True)
    (OUT / "ode.md").write_text(md)
    (OUT / "ode.json").write_text(json.dumps({"batch_vdp": batch_res, "batch_lv": lv_res},
                                             indent=1))
    print(md)


def main_gpu():
    """Sections (a) and (b) only, on the GPU: ``results/ode_cuda.md`` (with peak GPU memory)."""
    if DEV.type != "cuda":
        raise SystemExit("--gpu needs a CUDA device")
    parts = [f"## Neural differential equations on {torch.cuda.get_device_name()} "
             f"(`benchmarks/ode.py --gpu`, torch {torch.__version__})", ""]
    for problem in ("vdp", "lotka-volterra"):
        md, _ = bench_batch(problem)
        parts += [f"### (a) 256 {problem} systems, rtol = atol = 1e-6", "", md, ""]
    parts += ["### (b) Neural ODE (MLP 2-64-2, batch 128), forward + backward", "",
              bench_neural(), ""]
    OUT.mkdir(exist_ok=True)
    (OUT / "ode_cuda.md").write_text("\n".join(parts))
    print("\n".join(parts))


if __name__ == "__main__":
    import sys

    main_gpu() if "--gpu" in sys.argv[1:] else main()

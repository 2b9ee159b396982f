"""Irregular time series classification: neural CDE, ODE-RNN and the stable neural SDEs.

On a UEA set bundled with sktime (BasicMotions by default) with 0 / 30 / 50 / 70 % of every
series' time points dropped at random (Kidger et al. 2020), trains each model with the same
budget and reports test accuracy, wall time and vector-field evaluations (NFE) per epoch. The
neural CDE is also trained with torchcde (same path, field, solver and steps) side by side, and
the Langevin SDE with torchsde (same drift, diffusion, Brownian increments and steps).

Writes ``benchmarks/results/irregular.md`` (and ``.json``). Every number is computed here. Run:
``PYTHONPATH=src python benchmarks/irregular.py`` (about 4 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from timestepper.cde import control_path
from timestepper.cde.models import ODERNN, NeuralCDE, StableNeuralSDE
from timestepper.cde.training import accuracy, fit_classifier
from timestepper.data import load_uea

OUT = Path(__file__).parent / "results"
SDE_KINDS = {"LSDE": "langevin", "LNSDE": "linear-noise", "GSDE": "geometric"}


def _doc(fn) -> str:
    """The first paragraph of a docstring on one line."""
    return " ".join((fn.__doc__ or "").split("\n\n")[0].split())


def table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


class TorchcdeCDE(torch.nn.Module):
    """The same neural CDE solved by torchcde (for the side-by-side timing)."""

    def __init__(self, ours: NeuralCDE, dt: float) -> None:
        super().__init__()
        self.inner, self.dt, self.nfe = copy.deepcopy(ours), dt, 0

    def forward(self, coeffs: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        import torchcde

        x = torchcde.CubicSpline(coeffs, times)
        z0 = self.inner.initial(x.evaluate(x.interval[0]))
        before = self.inner.func.calls
        z = torchcde.cdeint(x, self.inner.func, z0, x.interval, adjoint=False, method="rk4",
                            options={"step_size": self.dt})
        self.nfe = self.inner.func.calls - before
        return self.inner.readout(z[:, -1])


class TorchsdeSDE(torch.nn.Module):
    """The same stable neural SDE solved by torchsde (Euler-Maruyama, same knots and steps, the
    same BrownianInterval as ours: see :func:`sde_side_by_side`)."""

    noise_type = "diagonal"

    def __init__(self, ours: StableNeuralSDE, dt: float, reversible: bool = False) -> None:
        super().__init__()
        self.inner, self.dt, self.reversible = ours, dt, reversible
        self.sde_type = "stratonovich" if reversible else "ito"

    def f(self, t, y):
        return self.inner.drift(float(t), y)

    def g(self, t, y):
        return self.inner.diffusion(float(t), y)

    def forward(self, path, bm) -> torch.Tensor:
        import torchsde

        self.inner._path = path
        z0 = self.inner.initial_state(path)
        ts = path.knots.to(z0.dtype)
        if self.reversible:
            zs = torchsde.sdeint_adjoint(self, z0, ts, bm=bm, method="reversible_heun", dt=self.dt,
                                         adjoint_method="adjoint_reversible_heun",
                                         adjoint_params=tuple(self.inner.parameters()))
        else:
            zs = torchsde.sdeint(self, z0, ts, bm=bm, method="euler", dt=self.dt)
        return self.inner.readout(zs[-1])


def cde_step_timing(args, rate: float = 0.5, repeats: int = 15) -> list[list[Any]]:
    """One training step (forward + backward, batch of ``args.batch``) of the neural CDE by
    timestepper and by torchcde, alternating, ``repeats`` times: median milliseconds."""
    train, _ = load_uea(args.dataset, drop_rate=rate, seed=args.seed, dtype=torch.float64)
    times = train.times / train.times[-1]
    dt = float(times[1] - times[0]) * 1.000001
    path = control_path(times, train.values, train.mask, kind="hermite-cubic", intensity=True)
    index = torch.arange(args.batch)
    torch.manual_seed(args.seed)
    ours = NeuralCDE(path.channels, args.hidden, len(train.classes), solver="rk4", dt=dt).double()
    peer = TorchcdeCDE(ours, dt)
    inputs = {"timestepper": (ours, (path.select(index),)), "torchcde": (peer, (path.coefficients[index], times))}
    ms: dict[str, list[float]] = {k: [] for k in inputs}
    for _ in range(repeats + 1):  # the first round warms up
        for name, (model, x) in inputs.items():
            start = time.perf_counter()
            model(*x).square().sum().backward()
            ms[name].append(1e3 * (time.perf_counter() - start))
    med = {k: sorted(v[1:])[len(v) // 2] for k, v in ms.items()}
    return [[f"neural CDE train step, median of {repeats} ({name})", f"{med[name]:.1f} ms",
             inputs[name][0].nfe, f"{med[name] / med['torchcde']:.2f}x torchcde"] for name in inputs]


def sde_side_by_side(args, rate: float = 0.5, epochs: int = 3) -> list[list[Any]]:
    """LSDE trained by ``timestepper.sdeint`` and by torchsde from the same initialisation with
    the same Brownian paths (one BrownianInterval per batch): Euler-Maruyama with
    backpropagation through the steps, and reversible Heun with the reversible adjoint
    (torchsde's ``sdeint_adjoint(adjoint_method="adjoint_reversible_heun")``)."""
    import torchsde

    train, _ = load_uea(args.dataset, drop_rate=rate, seed=args.seed, dtype=torch.float64)
    times = train.times / train.times[-1]
    dt = float(times[1] - times[0])
    path = control_path(times, train.values, train.mask, kind="hermite-cubic", intensity=True)

    def batch(index):
        bm = torchsde.BrownianInterval(0.0, 1.0, size=(len(index), args.hidden), dtype=torch.float64,
                                       entropy=int(index[0]), levy_area_approximation="none")
        return (path.select(index), bm)

    rows = []
    for reversible in (False, True):
        torch.manual_seed(args.seed)
        ours = StableNeuralSDE(path.channels, args.hidden, len(train.classes), kind="langevin",  # steps: knots
                               solver="reversible-heun" if reversible else "sde-euler",
                               adjoint="reversible" if reversible else "direct").double()
        peer = TorchsdeSDE(copy.deepcopy(ours), dt * 1.000001, reversible)  # one step per knot interval
        how = "reversible Heun, reversible adjoint" if reversible else "Euler, backprop"
        for name, model, counted in ((f"LSDE, {how} (timestepper.sdeint)", ours, ours),
                                     (f"LSDE, {how} (torchsde)", peer, peer.inner)):
            before = counted.calls
            hist = fit_classifier(model, batch, train.labels, epochs=epochs, batch_size=args.batch, lr=args.lr,
                                  seed=args.seed)
            rows.append([name, f"{sum(hist.seconds) / epochs:.2f}", f"{(counted.calls - before) / epochs:.0f}",
                         f"{hist.loss[-1]:.4f}"])
    return rows


def _row(name: str, model: torch.nn.Module, train_in, test_in, labels, args) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    hist = fit_classifier(model, train_in, labels[0], epochs=args.epochs, batch_size=args.batch,
                          lr=args.lr, seed=args.seed)
    acc = accuracy(model, test_in, labels[1])
    return {"model": name, "accuracy": acc, "s_per_epoch": sum(hist.seconds) / len(hist.seconds),
            "nfe_per_epoch": sum(hist.nfe) / len(hist.nfe), "final_loss": hist.loss[-1]}


def run_rate(rate: float, args) -> list[dict[str, Any]]:
    train, test = load_uea(args.dataset, drop_rate=rate, seed=args.seed, dtype=torch.float64)
    times = train.times / train.times[-1]  # time in [0, 1]
    dt = float(times[1] - times[0]) * 1.000001
    paths = [control_path(times, d.values, d.mask, kind="hermite-cubic", intensity=True) for d in (train, test)]
    c, k, h, labels = paths[0].channels, len(train.classes), args.hidden, (train.labels, test.labels)

    def path_batch(index):
        return (paths[0].select(index),)

    def seq_batch(index):
        return (times, train.values[index], train.mask[index])

    torch.manual_seed(args.seed)
    rows = []
    ncde = NeuralCDE(c, h, k, solver="rk4", dt=dt).double()
    reference = TorchcdeCDE(ncde, dt) if args.torchcde and rate in args.peer_rates else None
    rows.append(_row("neural CDE", ncde, path_batch, (paths[1],), labels, args))
    if reference is not None:
        coeffs = [p.coefficients for p in paths]  # type: ignore[attr-defined]
        rows.append(_row("neural CDE (torchcde)", reference, lambda i: (coeffs[0][i], times),
                         (coeffs[1], times), labels, args))
    rows.append(_row("ODE-RNN", ODERNN(train.channels, h, k).double(), seq_batch,
                     (times, test.values, test.mask), labels, args))
    for name, kind in SDE_KINDS.items():
        sde = StableNeuralSDE(c, h, k, kind=kind, dt=dt).double()
        sde.generator = torch.Generator().manual_seed(args.seed)
        rows.append(_row(name, sde, path_batch, (paths[1],), labels, args))
    for r in rows:
        r["drop_rate"] = rate
    return rows


REGULARISED = [  # (row name, regulariser, lambda, local samples)
    ("none", None, 0.0, 1),
    ("ERNODE R_E (Pal et al. 2021)", "error", 1.0, 1),
    ("SRNODE R_S (Pal et al. 2021)", "stiffness", 0.005, 1),
    ("local E(t_r), 1 sample (Pal et al. 2023)", "local-error", 1.0, 1),
    ("local E(t_r), 8 samples", "local-error", 1.0, 8),
]


def bench_regularisers(args, rate: float = 0.5) -> str:
    """The neural CDE with an adaptive solver (tsit5, rtol 1e-3, atol 1e-4), trained with each
    solver-heuristic regulariser: accuracy, training NFE and the NFE of one test solve."""
    train, test = load_uea(args.dataset, drop_rate=rate, seed=args.seed, dtype=torch.float64)
    times = train.times / train.times[-1]
    paths = [control_path(times, d.values, d.mask, kind="hermite-cubic", intensity=True) for d in (train, test)]
    rows = []
    for name, reg, lam, samples in REGULARISED:
        torch.manual_seed(args.seed)
        model = NeuralCDE(paths[0].channels, args.hidden, len(train.classes), regulariser=reg,
                          local_samples=samples, solver="tsit5", rtol=1e-3, atol=1e-4).double()
        hist = fit_classifier(model, lambda i: (paths[0].select(i),), train.labels, epochs=args.reg_epochs,
                              batch_size=args.batch, lr=args.lr, seed=args.seed,
                              extra_loss=(lambda m, lam=lam: lam * m.reg) if reg else None)
        model.eval()
        start = time.perf_counter()
        acc = accuracy(model, (paths[1],), test.labels)
        rows.append([name, f"{lam:g}", f"{acc:.3f}", f"{sum(hist.nfe) / len(hist.nfe):.0f}",
                     hist.nfe[-1], model.nfe, f"{sum(hist.seconds) / len(hist.seconds):.2f}",
                     f"{time.perf_counter() - start:.2f}"])
    return table(["regulariser", "lambda", "test acc", "train NFE / epoch (mean)", "train NFE, last epoch",
                  "test NFE", "train s / epoch", "test s"], rows)


def _contraction(lam: float, iters: int, tol: float, dim: int, batch: int):
    """Train ``dz/dt = MLP(z)`` to send ``z0 ~ N(0, I)`` to 0 at t = 1 with ``lam * R_S`` added."""
    import timestepper as ts

    torch.manual_seed(0)
    f = torch.nn.Sequential(torch.nn.Linear(dim, 32), torch.nn.Tanh(), torch.nn.Linear(32, dim)).double()
    opt = torch.optim.Adam(f.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    first = 0
    for _ in range(iters):
        z0 = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
        sol = ts.solve(lambda t, z: f(z), z0, 0.0, 1.0, solver="tsit5", rtol=tol, atol=tol, regularise=True)
        first = first or int(sol.stats.nfe)
        loss = sol.x.square().mean() + lam * sol.extras["reg_stiffness"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return f, first


@torch.no_grad()
def _stiffness_profile(f, tol: float, z0: torch.Tensor) -> tuple[int, float, float, torch.Tensor]:
    """Test NFE, mean stiffness estimate per step, median ``h * S`` and the end state of one
    solve of ``dz/dt = f(t, z)`` on [0, 1] from ``z0``."""
    import timestepper as ts
    from timestepper.ode.regularise import SolverHeuristics

    heur, sizes = SolverHeuristics(tol, tol, "rms", ts.solvers.get("tsit5")), []

    def watch(record):
        heur(record)
        sizes.append(float(record.t1 - record.t0))

    sol = ts.integrate(ts.ODETerm(f), "tsit5", ts.PIDController(tol, tol), z0, t_span=(0.0, 1.0), on_accept=watch)
    s_mean = float(heur.stiffness) / heur.steps
    return int(sol.stats.nfe), s_mean, s_mean * sorted(sizes)[len(sizes) // 2], sol.x


def bench_srnode(lams=(0.0, 0.003, 0.01), iters=300, tol=1e-4, dim=4, batch=64) -> str:
    """SRNODE where stiffness grows during training: ``dz/dt = MLP(z)`` on [0, 1] trained to send
    every ``z0 ~ N(0, I)`` to 0 (the loss keeps falling as the learned contraction gets faster,
    so the dominant eigenvalue grows). Columns: the NFE of the first training solve, test NFE,
    the mean stiffness estimate per step, the median ``h * S`` of a test solve (tsit5's real
    stability boundary is about 3.5: below it the steps are set by accuracy, not stability) and
    the test MSE."""
    rows = []
    for lam in lams:
        f, first = _contraction(lam, iters, tol, dim, batch)
        z0 = torch.randn(512, dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        nfe, s_mean, hs, z1 = _stiffness_profile(lambda t, z, f=f: f(z), tol, z0)
        rows.append([f"{lam:g}", first, nfe, f"{s_mean:.2f}", f"{hs:.2f}", f"{float(z1.square().mean()):.2e}"])
    return table(["lambda (SRNODE)", "NFE at start", "test NFE", "stiffness S per step",
                  "median h * S", "test MSE"], rows)


def accuracy_table(rows: list[dict[str, Any]]) -> str:
    rates = sorted({r["drop_rate"] for r in rows})
    models = [m for m in dict.fromkeys(r["model"] for r in rows) if "torchcde" not in m]
    acc = {(r["model"], r["drop_rate"]): r for r in rows}
    head = ["model"] + [f"acc @ {int(100 * q)} % dropped" for q in rates] + ["s / epoch", "NFE / epoch"]
    body = []
    for m in models:
        got = [acc.get((m, q)) for q in rates]
        done = [g for g in got if g is not None]
        body.append([m] + [f"{g['accuracy']:.3f}" if g else "-" for g in got]
                    + [f"{sum(g['s_per_epoch'] for g in done) / len(done):.2f}",
                       f"{sum(g['nfe_per_epoch'] for g in done) / len(done):.0f}"])
    return table(head, body)


def peer_table(rows: list[dict[str, Any]], sde_rows: list[list[Any]], step_rows: list[list[Any]]) -> str:
    """Ours next to the peers at the peer rates: the CDE rows of the main run, the SDE rows of
    :func:`sde_side_by_side`."""
    peer_rates = {r["drop_rate"] for r in rows if "torchcde" in r["model"]}
    body = [[r["model"], f"{int(100 * r['drop_rate'])} %", f"{r['s_per_epoch']:.2f}", f"{r['nfe_per_epoch']:.0f}",
             f"acc {r['accuracy']:.3f}"]
            for r in rows if r["drop_rate"] in peer_rates and "neural CDE" in r["model"]]
    body += [[name, "50 %", s, nfe, f"loss {loss}"] for name, s, nfe, loss in sde_rows]
    body += [[name, "50 %", ms, nfe, ratio] for name, ms, nfe, ratio in step_rows]
    return table(["model", "dropped", "s / epoch", "NFE / epoch (SDE: drift + diffusion calls, backward included)",
                  "result"], body)


def _stiffness_regularised_loss(field, head, x, y, lam: float, tol: float) -> torch.Tensor:  # noqa: PLR0913
    """Cross-entropy of ``head(z(1))`` plus ``lam * R_S`` of the solve."""
    import timestepper as ts

    sol = ts.solve(field, x, 0.0, 1.0, solver="tsit5", rtol=tol, atol=tol, regularise=lam > 0)
    reg = lam * sol.extras["reg_stiffness"] if lam > 0 else 0.0
    return torch.nn.functional.cross_entropy(head(sol.x), y) + reg


def bench_srnode_digits(lams=(0.0, 0.01, 0.1), iters=150, tol=1e-8, width=64) -> str:
    """SRNODE in the setting where it did not lower NFE (docs/ode.md): the 8x8 digits classifier
    of ``benchmarks/ode.py`` (neural ODE on [0, 1], tsit5 at 1e-8, 150 Adam steps, batch 128)
    with ``lam * R_S`` added."""
    from timestepper.train.data import digits

    dt = torch.float64
    (xtr, ytr), (xte, yte) = (digits(s, dtype=dt) for s in ("train", "test"))
    xtr, xte = xtr.flatten(1), xte.flatten(1)
    mu, sd = xtr.mean(0), xtr.std(0).clamp(min=1e-3)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    d, rows = xtr.shape[1], []
    for lam in lams:
        torch.manual_seed(0)
        l1, l2 = torch.nn.Linear(d + 1, width, dtype=dt), torch.nn.Linear(width + 1, d, dtype=dt)
        head = torch.nn.Linear(d, 10, dtype=dt)

        def field(t, z, l1=l1, l2=l2):
            tt = torch.full_like(z[:, :1], float(t))
            return torch.tanh(l2(torch.cat([torch.tanh(l1(torch.cat([z, tt], 1))), tt], 1)))

        opt = torch.optim.Adam([*l1.parameters(), *l2.parameters(), *head.parameters()], lr=2e-2)
        gen = torch.Generator().manual_seed(1)
        for _ in range(iters):
            idx = torch.randint(0, len(xtr), (128,), generator=gen)
            opt.zero_grad()
            _stiffness_regularised_loss(field, head, xtr[idx], ytr[idx], lam, tol).backward()
            opt.step()
        nfe, s_mean, hs, z1 = _stiffness_profile(field, tol, xte)
        with torch.no_grad():
            acc = float((head(z1).argmax(1) == yte).to(dt).mean())
        rows.append([f"{lam:g}", nfe, f"{s_mean:.3f}", f"{hs:.4f}", f"{100 * acc:.1f}"])
    return table(["lambda (SRNODE)", "test NFE", "stiffness S per step", "median h * S", "test accuracy %"], rows)


def report(rows: list[dict[str, Any]], args, seconds: float, extra: str = "",  # noqa: PLR0913
           peers: tuple[list[list[Any]], list[list[Any]]] = ([], [])) -> str:
    return "\n".join([
        f"# Irregular time series: {args.dataset}", "",
        f"Test accuracy after {args.epochs} epochs (Adam, lr {args.lr}, batch {args.batch}, hidden "
        f"{args.hidden}, seed {args.seed}; float64; {torch.get_num_threads()} thread(s)). Paths: "
        "Hermite cubic with backward differences through the observed values, with time and "
        "observational-intensity channels. CDE: RK4 on the knots; SDEs: Euler-Maruyama on the "
        "knots. s / epoch and NFE / epoch are means over the drop rates (NFE: vector-field "
        "evaluations of the forward passes of one epoch).", "",
        accuracy_table(rows), "",
        "## Side by side with torchcde and torchsde", "",
        "Same model, initialisation, batches and steps: torchcde's `cdeint` on the same Hermite "
        "coefficients with torchdiffeq's `rk4` (the 3/8 rule) at the knot spacing; torchsde's "
        "`sdeint` / `sdeint_adjoint` with the same BrownianInterval per batch (3 epochs; equal final "
        "loss means the two solves trained the same model). Epoch times move with the load of the "
        "machine; the last two rows time one training step of each CDE alternately (median).", "",
        peer_table(rows, *peers), "",
        extra,
        f"Total wall time {seconds:.0f} s. Reproduce: `PYTHONPATH=src python benchmarks/irregular.py`.", ""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="BasicMotions")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer-rates", type=float, nargs="+", default=[0.5])
    parser.add_argument("--no-torchcde", dest="torchcde", action="store_false")
    parser.add_argument("--reg-epochs", type=int, default=8)
    parser.add_argument("--no-regularisers", dest="regularisers", action="store_false")
    parser.add_argument("--out", type=Path, default=OUT / "irregular.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = [r for q in args.rates for r in run_rate(q, args)]
    extra = ""
    if args.regularisers:
        extra = "\n".join([
            "## Solver-heuristic regularisers (neural CDE, adaptive tsit5, 50 % dropped)", "",
            f"{args.reg_epochs} epochs, loss = cross-entropy + lambda * regulariser; same initialisation "
            "and batches for every row. ERNODE and SRNODE backpropagate through every step; the local "
            "estimate saves z(t_r) at uniform random times and takes one extra step from each.", "",
            bench_regularisers(args), "",
            "## SRNODE where it did not lower NFE", "", _doc(bench_srnode_digits), "", bench_srnode_digits(), "",
            "## SRNODE on a task where stiffness grows", "", _doc(bench_srnode), "", bench_srnode(), ""])
    peers = (sde_side_by_side(args), cde_step_timing(args)) if args.torchcde else ([], [])
    text = report(rows, args, time.perf_counter() - start, extra, peers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()

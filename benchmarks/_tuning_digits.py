"""The digits row of ``benchmarks/tuning.py``: Fréchet distance of samples of a ``timestepper
train digits`` checkpoint, with schedules tuned on it against the best fixed grid.

Sized to run in about five minutes on a shared CPU: by default NFE 5 and 10, the methods ``fixed``
(the baseline), ``ays`` (the default of ``ts.tune``) and ``dc``, with one sweep of the AYS level
search; 64 training noises whose reference (the model's own ``reference_steps``-step ``dpmpp-3m``
solve) is computed **once** and handed to every ``ts.tune`` call (each call would otherwise solve
it again); the searches at one NFE share a journal, so a schedule one of them evaluated (the
fixed grids every search starts from) is not run again (the search costs reported still count
it); 500 held-out samples per Fréchet distance. ``--digits-full`` runs every NFE of the
mixtures, every method with its default budget, 256 noises and 8000 samples (a Fréchet distance
of 1000 samples moved by more than the gaps between schedules from one noise draw to another).
Before it starts, the script prints an estimate of its run time from the measured cost of one
model call.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

import timestepper as ts
from timestepper.diffusion.grids import default_spacing

SMALL = {"nfes": (5, 10), "methods": ("ays", "dc"), "n_train": 64, "n_eval": 500, "reference_steps": 100, "guard": True,
         "budgets": {"ays": {"sweeps": 1, "iters": 6},
                     "dc": {"grid_sweeps": 1, "grid_iters": 6, "iters": 10, "substeps": 10}}}
#: evaluated schedules of one search per NFE squared beyond the fixed grids (about nine golden-section
#: evaluations per level and sweep, levels of the coarse and the full stage), for the estimate
EVALS_PER_NFE = {"ays": 14, "dc": 16, "autodiffusion": 10, "s3": 10, "ems": 40, "timeshift": 20}


def _call_seconds(den: ts.Denoiser, batch: int) -> float:
    """Seconds of one batched model call (the median of five)."""
    x = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    t = torch.full((batch,), 0.5)
    times = []
    with torch.no_grad():
        for _ in range(5):
            t0 = time.perf_counter()
            den(x, t)
            times.append(time.perf_counter() - t0)
    return sorted(times)[2]


def estimate_seconds(den: ts.Denoiser, cfg: dict) -> float:
    """The expected run time of :func:`digits_rows` with ``cfg``."""
    from timestepper.tuning.fixed import fixed_solvers, grid_options

    per_call = _call_seconds(den, cfg["n_train"])
    evals = 1 + cfg["n_eval"] / cfg["n_train"]  # a training-noise call per held-out call
    calls = cfg["reference_steps"] * evals
    for n in cfg["nfes"]:
        calls += len(fixed_solvers(den, n)) * len(grid_options(den)) * n
        calls += sum(EVALS_PER_NFE.get(m, 20) * n * n for m in cfg["methods"])
        calls += n * evals * (1 + len(cfg["methods"]))
    return per_call * calls


def digits_rows(checkpoint: Path, cfg: dict) -> dict:
    """Each configuration tuned on ``cfg["n_train"]`` noises (objective: L2 to the model's own
    ``reference_steps``-step solve, computed once), Fréchet distance of ``cfg["n_eval"]``
    held-out samples. Prints its time estimate first."""
    from timestepper.train import digits, load_denoiser
    from timestepper.train.metrics import digits_report

    den = load_denoiser(checkpoint)
    est = estimate_seconds(den, cfg)
    print(f"digits row: NFE {list(cfg['nfes'])}, methods fixed + {list(cfg['methods'])}, {cfg['n_train']} "
          f"training noises, {cfg['n_eval']} samples per Fréchet distance: estimated {est / 60:.1f} min", flush=True)
    g = torch.Generator().manual_seed(0)
    train = torch.randn(cfg["n_train"], 1, 8, 8, generator=g)
    held = torch.randn(cfg["n_eval"], 1, 8, 8, generator=g)
    data = digits("train")[0]  # the data guard's reference; the Fréchet distances are to the test split
    t0 = time.perf_counter()
    steps, grid = cfg["reference_steps"], default_spacing(den.schedule)
    reference = ts.sample(den, train, "dpmpp-3m", steps=steps, grid=grid)
    ref_fd = digits_report(ts.sample(den, held, "dpmpp-3m", steps=steps, grid=grid))["frechet"]
    out: dict = {"config": {**cfg, "nfes": list(cfg["nfes"]), "methods": list(cfg["methods"]),
                            "estimate_s": est}, "reference": ref_fd, "rows": {}}
    journals = tempfile.TemporaryDirectory()
    for n in cfg["nfes"]:
        for m in ("fixed", *cfg["methods"]):
            t1 = time.perf_counter()
            sched = ts.tune(den, n, m, noise=train, reference=reference, journal=Path(journals.name) / f"nfe{n}.jsonl",
                            **cfg.get("budgets", {}).get(m, {}))
            fd = digits_report(ts.sample(den, held, schedule=sched))["frechet"]
            row = {"frechet": fd, "calls": sched.provenance["search_cost"]["model_calls"],
                   "seconds": time.perf_counter() - t1, "train": sched.provenance["objective_train"]}
            if m != "fixed" and cfg.get("guard"):
                held_fd = (fd, out["rows"][f"fixed NFE {n}"]["frechet"])
                journal = Path(journals.name) / f"nfe{n}.jsonl"
                row.update(_guarded(den, n, train, reference, sched, held_fd, journal))
                row.update(_guarded(den, n, train, reference, sched, held_fd, journal, data=data, suffix="_data"))
            out["rows"][f"{m} NFE {n}"] = row
            print("digits", m, n, f"{fd:.3f}", "guarded", f"{row.get('frechet_guarded', fd):.3f}",
                  "guarded by data", f"{row.get('frechet_guarded_data', fd):.3f}", flush=True)
    journals.cleanup()
    out["seconds"] = time.perf_counter() - t0
    return out


def _guarded(den: ts.Denoiser, n: int, train: torch.Tensor, reference: torch.Tensor, sched: ts.SolverSchedule,  # noqa: PLR0913
             frechet: tuple[float, float], journal: Path, data: torch.Tensor | None = None, suffix: str = "") -> dict:
    """What ``ts.tune(..., guard=digit_features[, guard_data=data])`` returns for the searched
    ``sched``: the same function run on a copy of it (:func:`timestepper.tuning.guard.guarded`; the
    fixed grids replayed from the search's journal), so the searched and the guarded Fréchet
    distances come from one search. ``frechet``: the held-out distances of ``sched`` and of the
    fixed row (a fall back is to the best fixed grid, the fixed row's schedule). Keys end in
    ``suffix``."""
    import copy

    from timestepper.train.metrics import digit_features
    from timestepper.tuning.guard import guarded
    from timestepper.tuning.objective import Objective

    objective = Objective(den, train, reference, journal=journal)
    kept = guarded(copy.deepcopy(sched), n, objective, digit_features, data=data)
    report = dict(kept.provenance["guard"])
    if not report["kept"]:
        fixed = ts.tune(den, n, "fixed", noise=train, reference=reference, journal=journal)
        assert Objective.key(kept) == Objective.key(fixed), "the guard falls back to the fixed row's schedule"
    held = frechet[0] if report["kept"] else frechet[1]
    return {f"guard{suffix}": report, f"guard_calls{suffix}": objective.counter.calls,
            f"fell_back{suffix}": not report["kept"], f"frechet_guarded{suffix}": held}


def digits_section(digits: dict | None) -> list[str]:
    """The markdown of the digits row."""
    if not digits:
        return ["Digits model (Fréchet distance): not measured in this run "
                "(`python benchmarks/tuning.py --digits CHECKPOINT`, a few minutes; `--digits-full`: every NFE "
                "and method).", ""]
    cfg, rows = digits["config"], digits["rows"]
    nfes = cfg["nfes"]
    out = ["### Digits model (`timestepper train digits`): Fréchet distance of held-out samples", "",
           f"{cfg['n_eval']} held-out samples per distance (classifier features, squared, like FID; fewer samples "
           "give a larger distance, so compare within this table only). Reference: the model's own "
           f"{cfg['reference_steps']}-step dpmpp-3m solve, {digits['reference']:.3f}. Tuned on "
           f"{cfg['n_train']} training noises (L2 to that reference), budgets {cfg.get('budgets', {})}; in brackets "
           "the training L2 and the search's model calls (fixed-grid evaluations shared through a journal "
           f"counted in each). Run time {digits['seconds']:.0f} s (estimated {cfg['estimate_s']:.0f} s).", "",
           "| configuration | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|" + "---|" * (len(nfes) + 1)]
    for m in ("fixed", *cfg["methods"]):
        cells = []
        for n in nfes:
            r = rows.get(f"{m} NFE {n}")
            cells.append("-" if r is None else f"{r['frechet']:.3f} ({r['train']:.3f}, {r['calls']} calls)")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    out += _goal_check(rows, cfg, "frechet", "Goal check, searched schedules (Fréchet distance of each tuned method "
                       "<= the best fixed grid's; the model's own converged solve gives "
                       f"{digits['reference']:.3f}):")
    if any("frechet_guarded" in r for r in rows.values()):
        out += _guard_table(rows, cfg, "", "With the distribution guard (`ts.tune(..., guard=digit_features)`, "
                            "`timestepper tune --guard digits`): the searched schedule is kept only if the squared "
                            "Fréchet distance of its samples' classifier features to the reference samples' features, "
                            f"on the {cfg['n_train']} training noises (no data), is no larger than the best fixed "
                            "grid's; else the fixed grid is returned.")
    if any("frechet_guarded_data" in r for r in rows.values()):
        out += _guard_table(rows, cfg, "_data", "With the guard against data (`ts.tune(..., guard=digit_features, "
                            "guard_data=digits('train')[0])`, `timestepper tune --guard digits --guard-data digits`): "
                            "the same check, with the features of the 1257 real digits of the training split as the "
                            "reference set instead of the model's samples (the held-out distances above are to the "
                            "test split; the search stays data-free).")
    return out


def _guard_table(rows: dict, cfg: dict, suffix: str, title: str) -> list[str]:
    """The guarded rows (keys ending in ``suffix``): held-out distance, and in brackets the guard's
    decision, its training-noise distances (searched / fixed) and its model calls."""
    nfes = cfg["nfes"]
    out = [title + " In brackets: that training-noise distance, searched / fixed, and the guard's own model calls.",
           "", "| configuration | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|" + "---|" * (len(nfes) + 1)]
    for m in cfg["methods"]:
        cells = []
        for n in nfes:
            r = rows.get(f"{m} NFE {n}")
            if r is None or f"frechet_guarded{suffix}" not in r:
                cells.append("-")
                continue
            g, value = r[f"guard{suffix}"], r[f"frechet_guarded{suffix}"]
            if g.get("same_as_fixed"):
                cells.append(f"{value:.3f} (the search returned the fixed grid)")
                continue
            where = "fixed" if r[f"fell_back{suffix}"] else "kept"
            cells.append(f"{value:.3f} ({where}; {g['frechet_found']:.3f} / {g['frechet_fixed']:.3f}, "
                         f"{r[f'guard_calls{suffix}']} calls)")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return out + _goal_check(rows, cfg, f"frechet_guarded{suffix}",
                             "Goal check with the guard" + (" against data:" if suffix else ":"))


def _goal_check(rows: dict, cfg: dict, key: str, title: str) -> list[str]:
    out = ["", title, ""]
    for n in cfg["nfes"]:
        fixed = rows.get(f"fixed NFE {n}")
        if fixed is None:
            continue
        tuned = {m: rows[f"{m} NFE {n}"][key] for m in cfg["methods"] if key in rows.get(f"{m} NFE {n}", {})}
        worse = [f"{m} ({v:.3f})" for m, v in tuned.items() if v > fixed["frechet"]]
        out.append(f"- NFE {n}: fixed {fixed['frechet']:.3f}; not worse: "
                   f"{', '.join(m for m, v in tuned.items() if v <= fixed['frechet']) or 'none'}; "
                   f"worse: {', '.join(worse) or 'none'}")
    return out + [""]

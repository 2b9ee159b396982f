"""AutoDiffusion: training-free evolutionary search of the time steps (Li et al. 2023,
"AutoDiffusion: Training-Free Optimization of Time Steps and Architectures for Automated
Diffusion Model Acceleration", ICCV 2023, Sec. 3.2-3.3 and Alg. 1).

The paper's search: a population of candidate time-step sequences under the step budget; each
generation scores every candidate with a quality estimate of its samples, keeps the ``top_k`` as
parents, and fills the next population half by crossover of two random parents (each gene from
either parent) and half by mutation of a random parent (each gene redrawn with probability
``mutation_prob``), rejecting duplicates; after ``generations`` the best candidate wins. No model
is trained. The paper scores with FID against real images; here the score is the protocol's
objective (mean L2 distance to the model's own tight PF-ODE solution from the same noise,
:class:`~timestepper.tuning.objective.Objective`), which needs no data.

Differences from the paper, all named: the times are continuous (log-SNR positions) instead of
integer timesteps, so a mutated time is redrawn uniformly between its neighbours; the genome also
carries each step's solver choice (order, prediction type, UniC corrector, coefficient variant: a
USF :class:`~timestepper.solvers.schedule.StepSpec`), which the brief of issue 15 asks for in place
of the paper's architecture genes; and the first population holds the best fixed grid x solver
(:mod:`~timestepper.tuning.fixed`) and its times refined by a short Align-Your-Steps descent
(:mod:`~timestepper.tuning.start`) beside the random candidates, and the search never returns
something worse than that baseline on the training noise.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..diffusion.denoiser import Denoiser
from ..solvers.schedule import SolverSchedule
from .fixed import better_or_start
from .methods import check_budget, register_method
from .objective import Objective
from .space import Candidate, Space
from .start import starting_candidates

Fitness = Callable[[list[Candidate]], list[float]]


def evolve(space: Space, fitness: Fitness, rng: random.Random, first: list[Candidate],  # noqa: PLR0913 - the paper's knobs
           population: int, generations: int, top_k: int, mutation_prob: float,
           on_generation: Callable[[int, float], None] | None = None) -> list[tuple[float, Candidate]]:
    """Run the evolutionary search; returns every scored ``(value, candidate)``, best first.

    ``first`` seeds the first population, filled up with random candidates (random times, the specs
    of ``first[0]`` with random changes); ``fitness`` scores a
    list of candidates (the objective, or S^3's predictor).
    """
    seen: dict[Candidate, float] = {}
    pop = _unique(first, seen)[:population]
    while len(pop) < population:
        pop += _unique([space.random(rng, first[0])], seen, pop)
    for gen in range(generations):
        fresh = [c for c in pop if c not in seen]
        for c, v in zip(fresh, fitness(fresh)):
            seen[c] = v
        parents = sorted(pop, key=lambda c: seen[c])[:top_k]
        if on_generation is not None:
            on_generation(gen, seen[parents[0]])
        if gen + 1 < generations:
            pop = parents + breed(space, parents, rng, population - len(parents), mutation_prob, seen)
    return sorted(((v, c) for c, v in seen.items()), key=lambda p: p[0])


def breed(space: Space, parents: list[Candidate], rng: random.Random, n: int, prob: float,  # noqa: PLR0913 - one generation's inputs
              seen: dict[Candidate, float]) -> list[Candidate]:
    """``n`` new candidates: half by crossover, half by mutation of the parents (Alg. 1)."""
    out: list[Candidate] = []
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        if len(out) < n // 2 and len(parents) > 1:
            a, b = rng.sample(parents, 2)
            child = space.crossover(a, b, rng)
        else:
            child = space.mutate(rng.choice(parents), rng, prob)
        if child not in seen and child not in out and child not in parents:
            out.append(child)
    while len(out) < n:  # the neighbourhood is exhausted: explore
        out += _unique([space.random(rng, parents[0])], seen, parents + out)
    return out


def _unique(cands: list[Candidate], seen: dict[Candidate, float],
            have: list[Candidate] | None = None) -> list[Candidate]:
    have = list(have or [])
    return [c for i, c in enumerate(cands) if c not in seen and c not in have and c not in cands[:i]]


def objective_fitness(space: Space, objective: Objective) -> Fitness:
    """Score candidates with the model (each call of ``objective`` spends ``nfe`` model calls)."""
    def fitness(cands: list[Candidate]) -> list[float]:
        return [objective(space.to_schedule(c)) for c in cands]

    return fitness


def autodiffusion(denoiser: Denoiser, nfe: int, noise, objective: Objective, *,  # noqa: PLR0913 - the paper's knobs
                  population: int = 16, generations: int = 8, top_k: int = 5, mutation_prob: float = 0.25,
                  step_choice: bool = True, start_sweeps: int = 1, start_iters: int = 5) -> SolverSchedule:
    """AutoDiffusion's evolutionary search (Li et al. 2023, Alg. 1) of the times and per-step
    solver choice of a schedule of ``nfe`` model calls.

    Budget: ``population`` candidates per generation, ``generations``, ``top_k`` parents kept,
    ``mutation_prob`` per gene; ``step_choice=False`` searches the times only; ``start_sweeps``,
    ``start_iters``: the Align-Your-Steps refinement of the fixed start seeded into the first
    population (:func:`~timestepper.tuning.start.starting_candidates`; 0 sweeps: none). Model calls
    spent: about ``nfe * (population + (generations - 1) * (population - top_k))`` plus the
    baseline and the refinement.
    """
    check_budget(population=(population, 2), generations=(generations, 1), top_k=(top_k, 1),
                 mutation_prob=(mutation_prob, 0.0))
    if top_k >= population:
        raise ValueError(f"top_k must be < population ({population}), got {top_k}")
    space = Space(denoiser.schedule, nfe, step_choice=step_choice)
    start, first = starting_candidates(denoiser, nfe, noise, objective, space, start_sweeps, start_iters)
    ranked = evolve(space, objective_fitness(space, objective), objective.rng, first,
                    population, generations, top_k, mutation_prob)
    return better_or_start(space.to_schedule(ranked[0][1]), start, objective)


register_method("autodiffusion", autodiffusion,
                "AutoDiffusion (Li et al. 2023): evolutionary search of time steps and per-step solver choice")

__all__ = ["autodiffusion", "breed", "evolve", "objective_fitness"]

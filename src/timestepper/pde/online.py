"""Online training of a surrogate from running solvers, on Ray (Meyer, Kenesei, Raffin et al. 2023,
"Training Deep Surrogate Models with Large Scale Online Learning", ICML).

Solver workers are Ray tasks: each integrates a chunk of trajectories of the spectral equation from
random initial conditions (the same path as :func:`~timestepper.pde.data.generate`, so trajectory
``i`` is the one ``generate`` would make: seeded by ``(data.seed, split, i)``) and returns it
through the Ray object store. The trainer (this process) keeps ``workers`` tasks in flight, cuts
each finished trajectory into all its training windows, offers them to a training buffer with the
paper's policy (:mod:`.buffer`: reservoir, FIFO or FIRO) and takes every batch from the buffer.
Nothing is written to disk. When the buffer refuses samples (full), the unaccepted windows wait
and no new solver task starts until they are in: the paper's back-pressure on the clients.

Ray is an optional extra (``pip install 'timestepper[ray]'``). ``ray_address=None`` starts a local
instance with ``workers + 1`` CPUs (one for the trainer); an address connects to a running cluster
(checked reachable within ``connect_timeout_s`` first, since ``ray.init`` would otherwise retry for
minutes). If Ray is already initialised in this process, that session is used and left running.

Arrival order depends on timing, so an online run is not bit-reproducible across runs; the
trajectories themselves and, given an arrival order, the buffer's draws are.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .buffer import BUFFER_POLICIES, TrainingBuffer, make_buffer
from .data import SPLITS, GenerationConfig, _simulate_batch
from .equation import SpectralEquation
from .train import TrainConfig, _out_of_time, _set_learning_rate, _setup, _step_on_windows

RAY_HINT = "pip install 'timestepper[ray]'"


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class OnlineConfig:
    """How solvers feed the trainer.

    Attributes:
        workers: solver tasks running at once (Ray tasks, one CPU each).
        trajectories: unique trajectories generated in total (indices ``0 .. trajectories-1`` of
            ``split``).
        buffer: the training buffer's policy: ``"reservoir"``, ``"fifo"`` or ``"firo"``.
        buffer_size: buffer capacity in windows (one window = ``unroll + 2`` frames).
        threshold: the paper's watermark in windows (see :mod:`.buffer`); ``None``: one batch.
        trajectories_per_task: trajectories one solver task integrates together (batched FFTs).
        split: which split's seeds the trajectories use (``"train"``: those of ``generate``).
        ray_address: ``None`` starts a local Ray with ``workers + 1`` CPUs; otherwise the address
            of a running cluster (``"host:port"``, ``"ray://host:port"`` or ``"auto"``).
        connect_timeout_s: how long to wait for ``ray_address`` to answer before giving up.
    """

    workers: int = 2
    trajectories: int = 128
    buffer: str = "reservoir"
    buffer_size: int = 4096
    threshold: int | None = None
    trajectories_per_task: int = 4
    split: str = "train"
    ray_address: str | None = None
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("workers", "trajectories", "buffer_size", "trajectories_per_task"):
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.buffer not in BUFFER_POLICIES:
            raise ValueError(f"buffer must be one of {BUFFER_POLICIES}, got {self.buffer!r}")
        if self.threshold is not None and not (
            isinstance(self.threshold, int) and not isinstance(self.threshold, bool) and self.threshold >= 0
        ):
            raise ValueError(f"threshold must be None or an integer >= 0, got {self.threshold!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {self.split!r}")
        if not (isinstance(self.connect_timeout_s, (int, float)) and self.connect_timeout_s > 0):
            raise ValueError(f"connect_timeout_s must be a number > 0, got {self.connect_timeout_s!r}")

    def threshold_for(self, batch_size: int) -> int:
        """The watermark used with batches of ``batch_size``; checked against the capacity."""
        threshold = batch_size if self.threshold is None else self.threshold
        needed = threshold if self.buffer == "reservoir" else threshold + batch_size
        if needed > self.buffer_size or threshold >= self.buffer_size:
            raise ValueError(
                f"buffer_size={self.buffer_size} is too small for threshold={threshold} and "
                f"batch_size={batch_size}: the {self.buffer} buffer must hold {max(needed, threshold + 1)}"
            )
        return threshold


@dataclass
class OnlineResult:
    """What an online run did.

    Attributes:
        losses: the training loss of every iteration.
        iterations: optimizer steps taken (fewer than asked when a FIFO/FIRO buffer ran dry after
            the last trajectory arrived).
        trajectories: trajectories received from the solvers.
        windows: windows accepted into the buffer.
        served: windows served in batches (with repetitions for the reservoir).
        evicted: windows the reservoir replaced.
        wall_s: wall time of the run, Ray start-up excluded.
        wait_s: time the trainer spent waiting for solver results.
    """

    losses: list[float] = field(default_factory=list)
    iterations: int = 0
    trajectories: int = 0
    windows: int = 0
    served: int = 0
    evicted: int = 0
    wall_s: float = 0.0
    wait_s: float = 0.0

    @property
    def trajectories_per_s(self) -> float:
        return self.trajectories / self.wall_s if self.wall_s > 0 else 0.0


def require_ray() -> Any:
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"online training and sharded generation on Ray need ray: {RAY_HINT}") from e
    return ray


def check_reachable(address: str, timeout_s: float) -> None:
    """Raise ConnectionError quickly when ``address`` (``host:port`` or ``ray://host:port``) does
    not accept a TCP connection within ``timeout_s`` (``ray.init`` would retry for minutes)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"ray_address must be 'host:port', 'ray://host:port' or 'auto', got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConnectionError(
            f"ray_address={address!r} cannot be reached within {timeout_s:g} s ({e}); start a "
            "cluster there (`ray start --head`) or pass ray_address=None for a local Ray"
        ) from e


def connect_ray(workers: int, address: str | None, timeout_s: float = 10.0) -> bool:
    """Initialise Ray (local with ``workers + 1`` CPUs, or the cluster at ``address``, checked
    reachable first); returns whether this call started the session (then the caller shuts it
    down). A session already initialised in this process is used as it is."""
    ray = require_ray()
    if address is not None:
        check_reachable(address, timeout_s)
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return True


def windows_of(traj: Tensor, frames_per_step: int, length: int) -> Tensor:
    """Every window ``u(s), u(s + k), ..., u(s + (length-1) k)`` of trajectories ``(N, T, *space)``:
    ``(N * (T - (length-1) k), length, *space)`` in trajectory-major order."""
    span = (length - 1) * frames_per_step
    t = traj.shape[1]
    if span >= t:
        raise ValueError(f"trajectories of {t} frames are too short for windows spanning {span + 1}")
    idx = torch.arange(t - span)[:, None] + frames_per_step * torch.arange(length)[None, :]
    return traj[:, idx].flatten(0, 1)


class _SolverStream:
    """Ray solver tasks in flight and the windows of finished ones not yet in the buffer."""

    def __init__(
        self, equation: SpectralEquation, data: GenerationConfig, online: OnlineConfig, window: tuple[int, int]
    ) -> None:
        self.ray = require_ray()
        self.data, self.online, self.window = data, online, window
        self.remote = self.ray.remote(num_cpus=1)(_simulate_batch)
        self.eq_ref = self.ray.put(equation)
        self.next_index = 0
        self.pending: list[Any] = []
        self.held: deque[Tensor] = deque()
        self.trajectories = 0
        self.wait_s = 0.0
        for _ in range(online.workers):
            self._submit()

    @property
    def exhausted(self) -> bool:
        return not self.pending and not self.held and self.next_index >= self.online.trajectories

    def _submit(self) -> None:
        start, total = self.next_index, self.online.trajectories
        if start >= total:
            return
        stop = min(start + self.online.trajectories_per_task, total)
        self.next_index = stop
        ref = self.remote.remote(self.eq_ref, self.data, range(start, stop), SPLITS[self.online.split])
        self.pending.append(ref)

    def pump(self, buffer: TrainingBuffer, *, block: bool) -> None:
        """Move held windows into ``buffer``; when none are held, collect finished solver tasks
        (waiting for one if ``block``), start their successors and offer their windows."""
        self._flush(buffer)
        if self.held or not self.pending:
            return
        t0 = time.perf_counter()
        ready, self.pending = self.ray.wait(self.pending, num_returns=1, timeout=None if block else 0)
        self.wait_s += time.perf_counter() - t0
        for ref in ready:
            traj = self.ray.get(ref)
            self.trajectories += traj.shape[0]
            self.held.extend(windows_of(traj, *self.window).unbind(0))
            self._submit()
        self._flush(buffer)

    def _flush(self, buffer: TrainingBuffer) -> None:
        while self.held and buffer.put(self.held[0]):
            self.held.popleft()

    def cancel(self) -> None:
        for ref in self.pending:
            self.ray.cancel(ref, force=True)
        self.pending = []


def _next_batch(stream: _SolverStream, buffer: TrainingBuffer, count: int, g: torch.Generator) -> Tensor | None:
    """A batch ``(count, length, *space)`` from the buffer, waiting for solvers as needed; ``None``
    when the solvers are done and the buffer is empty."""
    stream.pump(buffer, block=False)
    while True:
        if stream.exhausted and not buffer.closed:
            buffer.close()
        if buffer.can_sample(count):
            return buffer.sample(count, g)
        if buffer.closed:
            return None
        stream.pump(buffer, block=True)


def train_online(  # noqa: PLR0913 - the lead's front: four configs plus progress and a callback
    equation: SpectralEquation,
    surrogate: nn.Module,
    train: TrainConfig,
    data: GenerationConfig,
    online: OnlineConfig,
    *,
    progress: bool = False,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> OnlineResult:
    """Train ``surrogate`` on trajectories streamed from ``online.workers`` Ray solver tasks.

    Batches of ``train.batch_size`` windows (``unroll + 2`` frames ``train.frames_per_step``
    apart, as :func:`~timestepper.pde.train_surrogate` uses) come from the training buffer; the
    optimizer, cosine learning rate and pushforward are those of ``train_surrogate``. The run
    stops after ``train.iterations`` steps, at ``train.time_budget_s``, or when a FIFO/FIRO buffer
    is empty after the last trajectory.

    Args:
        equation: the spectral equation the workers integrate.
        surrogate: model with ``loss(u_prev, u_next, generator)`` and ``predict``.
        train: optimisation settings (``seed`` seeds the buffer's draws too).
        data: how trajectories are integrated (``dt``, ``save_every``, ``duration``, burn-in, seed).
        online: workers, number of trajectories, buffer policy and size, Ray address.
        progress: a tqdm bar over iterations with the loss and the trajectories received.
        callback: ``callback(iteration, surrogate)`` after each optimizer step.

    Raises:
        ImportError: Ray is not installed (naming ``pip install 'timestepper[ray]'``).
        ConnectionError: ``online.ray_address`` does not answer within ``connect_timeout_s``.
    """
    if train.iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {train.iterations!r}")
    threshold = online.threshold_for(train.batch_size)
    owns = connect_ray(online.workers, online.ray_address, online.connect_timeout_s)
    stream = None
    try:
        run = _setup(surrogate, torch.empty(0), train, progress, None)
        buffer = make_buffer(online.buffer, online.buffer_size, threshold, seed=train.seed)
        stream = _SolverStream(equation, data, online, (train.frames_per_step, train.unroll + 2))
        _loop(run, stream, buffer, callback)
        return _result(run, stream, buffer)
    finally:
        if stream is not None:
            stream.cancel()
        if owns:
            require_ray().shutdown()


def _loop(run: Any, stream: _SolverStream, buffer: TrainingBuffer, callback: Any) -> None:
    """The iterations: learning rate, batch from the buffer, optimizer step, progress."""
    cfg = run.cfg
    run.surrogate.train()
    for it in range(cfg.iterations):
        _set_learning_rate(run, it)
        batch = _next_batch(stream, buffer, cfg.batch_size, run.generator)
        if batch is None:
            break
        _step_on_windows(run, batch.transpose(0, 1))
        if run.bar is not None:
            run.bar.set_postfix(loss=f"{run.losses[-1]:.3g}", traj=stream.trajectories)
        if callback is not None:
            callback(it + 1, run.surrogate)
        if _out_of_time(run):
            break
    if run.bar is not None:
        run.bar.close()
    run.surrogate.eval()


def _result(run: Any, stream: _SolverStream, buffer: TrainingBuffer) -> OnlineResult:
    return OnlineResult(
        losses=run.losses,
        iterations=len(run.losses),
        trajectories=stream.trajectories,
        windows=buffer.received,
        served=buffer.served,
        evicted=buffer.evicted,
        wall_s=time.perf_counter() - run.start,
        wait_s=stream.wait_s,
    )


__all__ = [
    "OnlineConfig",
    "OnlineResult",
    "check_reachable",
    "connect_ray",
    "require_ray",
    "train_online",
    "windows_of",
]

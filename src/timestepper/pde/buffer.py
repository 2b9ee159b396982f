"""Training buffers for online learning from running solvers (Meyer, Kenesei, Raffin et al. 2023,
"Training Deep Surrogate Models with Large Scale Online Learning", ICML, section 3: the server's
training buffer and its policies).

Samples (here: windows of consecutive frames) arrive from the solvers in the order they finish,
so a trainer that consumed them in arrival order would see strongly correlated batches; the buffer
decorrelates them. Three policies, as in the paper and its Melissa implementation:

- ``"fifo"`` (First In First Out): batches are the oldest samples, removed once served.
- ``"firo"`` (First In Random Out): batches are drawn uniformly without replacement, removed once
  served.
- ``"reservoir"``: batches are drawn uniformly with replacement and *not* removed; a sample may be
  served many times. When the buffer is full an incoming sample replaces a uniformly chosen sample
  that has already been served at least once; if none has been served yet, the incoming sample is
  refused and the producer waits (the paper's back-pressure on the clients).

The ``threshold`` (the paper's watermark) gives the population below which no batch is served while
data still arrives: for the reservoir, training starts once ``threshold`` samples are in; for FIFO
and FIRO, a batch is served only if ``threshold`` samples remain afterwards, so random draws keep a
pool to mix. After :meth:`TrainingBuffer.close` (the solvers are done) the threshold no longer
applies: FIFO and FIRO drain to empty, the reservoir keeps serving what it holds.

Everything is pure PyTorch; samples live in one preallocated tensor ``(capacity, *sample_shape)``
and draws use the caller's :class:`torch.Generator`, so a seeded sequence of puts and draws is
reproducible.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

BUFFER_POLICIES = ("fifo", "firo", "reservoir")


class TrainingBuffer(ABC):
    """Fixed-capacity store of samples with a draw policy (see the module docstring).

    Args:
        capacity: the most samples held.
        threshold: the paper's watermark (see the module docstring); ``0 <= threshold <
            capacity``.

    Attributes:
        received: samples accepted by :meth:`put`.
        evicted: samples the reservoir replaced by newer ones (each served at least once before);
            FIFO and FIRO remove samples only by serving them.
        served: samples returned by :meth:`sample` (with repetitions).
    """

    policy: str = ""

    def __init__(self, capacity: int, threshold: int = 0) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, int) or not 0 <= threshold < capacity:
            raise ValueError(f"threshold must be an integer in [0, capacity={capacity}), got {threshold!r}")
        self.capacity = capacity
        self.threshold = threshold
        self.closed = False
        self.received = 0
        self.evicted = 0
        self.served = 0
        self._data: Tensor | None = None
        self._times_served = torch.zeros(capacity, dtype=torch.int64)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def close(self) -> None:
        """No more samples will arrive: the threshold stops applying."""
        self.closed = True

    def put(self, sample: Tensor) -> bool:
        """Offer one sample; ``False`` when the policy refuses it now (buffer full: retry later)."""
        if self.closed:
            raise RuntimeError("put on a closed buffer: no samples may arrive after close()")
        data = self._storage_for(sample)
        slot = self._slot_for_new()
        if slot is None:
            return False
        data[slot] = sample
        self._times_served[slot] = 0
        self.received += 1
        return True

    def can_sample(self, count: int) -> bool:
        """Whether :meth:`sample` would serve a batch of (up to) ``count`` now."""
        if self.closed:
            return self._size > 0
        return self._size >= self._needed(count)

    def sample(self, count: int, generator: torch.Generator) -> Tensor:
        """A batch ``(count, *sample_shape)`` drawn by the policy (fewer when FIFO or FIRO hold
        fewer than ``count``, which happens only after :meth:`close`).

        Raises:
            RuntimeError: when :meth:`can_sample` is false (too few samples for the threshold).
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an integer >= 1, got {count!r}")
        if not self.can_sample(count):
            raise RuntimeError(
                f"{self.policy} buffer holds {self._size} samples; a batch of {count} needs "
                f"{self._needed(count)} while data still arrives (threshold {self.threshold})"
            )
        assert self._data is not None
        idx = self._draw(self._batch_size(count), generator)
        batch = self._data[idx].clone()
        self._times_served[idx] += 1
        self.served += len(idx)
        self._after_draw(idx)
        return batch

    def times_served(self) -> Tensor:
        """How often each held sample has been served, in storage order (``(len(self),)``)."""
        return self._times_served[: self._size].clone()

    def held(self) -> Tensor:
        """The held samples in storage order (a copy), for inspection and tests."""
        if self._data is None:
            return torch.empty(0)
        return self._data[: self._size].clone()

    def _storage_for(self, sample: Tensor) -> Tensor:
        if self._data is None:
            self._data = torch.empty((self.capacity, *sample.shape), dtype=sample.dtype)
        elif sample.shape != self._data.shape[1:]:
            raise ValueError(
                f"sample shape {tuple(sample.shape)} differs from the buffer's {tuple(self._data.shape[1:])}"
            )
        return self._data

    def _needed(self, count: int) -> int:
        """Population needed to serve ``count`` while data still arrives."""
        return self.threshold + count

    def _batch_size(self, count: int) -> int:
        """Samples in a batch asked for ``count``: fewer when a closed buffer holds fewer."""
        return min(count, self._size)

    @abstractmethod
    def _slot_for_new(self) -> int | None:
        """The storage index for an incoming sample (evicting if the policy does), or ``None``."""

    @abstractmethod
    def _draw(self, count: int, generator: torch.Generator) -> Tensor:
        """Storage indices of a batch."""

    @abstractmethod
    def _after_draw(self, idx: Tensor) -> None:
        """Remove served samples (FIFO, FIRO) or keep them (reservoir)."""


class _RemovingBuffer(TrainingBuffer):
    """Shared part of FIFO and FIRO: samples leave the buffer once served; a full buffer refuses."""

    def _slot_for_new(self) -> int | None:
        if self._size == self.capacity:
            return None
        self._size += 1
        return self._size - 1

    def _after_draw(self, idx: Tensor) -> None:
        """Remove the served samples, keeping the survivors' arrival order (compaction)."""
        assert self._data is not None
        keep = torch.ones(self._size, dtype=torch.bool)
        keep[idx] = False
        survivors = keep.nonzero().squeeze(1)
        n = len(survivors)
        self._data[:n] = self._data[survivors]
        self._times_served[:n] = self._times_served[survivors]
        self._size = n


class FIFOBuffer(_RemovingBuffer):
    """First In First Out: a batch is the ``count`` oldest samples."""

    policy = "fifo"

    def _draw(self, count: int, generator: torch.Generator) -> Tensor:
        return torch.arange(count)


class FIROBuffer(_RemovingBuffer):
    """First In Random Out: a batch is ``count`` distinct samples drawn uniformly
    (``torch.randperm(len(buffer), generator)[:count]``)."""

    policy = "firo"

    def _draw(self, count: int, generator: torch.Generator) -> Tensor:
        return torch.randperm(self._size, generator=generator)[:count]


class ReservoirBuffer(TrainingBuffer):
    """Reservoir: batches drawn uniformly with replacement (``torch.randint(len(buffer), (count,),
    generator)``), not removed; when full, a new sample replaces a uniformly chosen served sample
    (drawn with the buffer's own generator, seeded by ``seed``), or is refused if none was served."""

    policy = "reservoir"

    def __init__(self, capacity: int, threshold: int = 0, *, seed: int = 0) -> None:
        super().__init__(capacity, threshold)
        self._evict_generator = torch.Generator().manual_seed(seed)

    def _needed(self, count: int) -> int:
        return max(self.threshold, 1)

    def _batch_size(self, count: int) -> int:
        return count  # drawn with replacement

    def _slot_for_new(self) -> int | None:
        if self._size < self.capacity:
            self._size += 1
            return self._size - 1
        served = (self._times_served > 0).nonzero().squeeze(1)
        if len(served) == 0:
            return None
        self.evicted += 1
        pick = torch.randint(len(served), (1,), generator=self._evict_generator)
        return int(served[pick])

    def _draw(self, count: int, generator: torch.Generator) -> Tensor:
        return torch.randint(self._size, (count,), generator=generator)

    def _after_draw(self, idx: Tensor) -> None:
        return None  # served samples stay until replaced


def make_buffer(policy: str, capacity: int, threshold: int = 0, *, seed: int = 0) -> TrainingBuffer:
    """The buffer of a policy name (``"fifo"``, ``"firo"`` or ``"reservoir"``)."""
    if policy == "fifo":
        return FIFOBuffer(capacity, threshold)
    if policy == "firo":
        return FIROBuffer(capacity, threshold)
    if policy == "reservoir":
        return ReservoirBuffer(capacity, threshold, seed=seed)
    raise ValueError(f"buffer must be one of {BUFFER_POLICIES}, got {policy!r}")


__all__ = [
    "BUFFER_POLICIES",
    "FIFOBuffer",
    "FIROBuffer",
    "ReservoirBuffer",
    "TrainingBuffer",
    "make_buffer",
]

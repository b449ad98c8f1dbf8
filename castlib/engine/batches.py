"""Deterministic batch streams for iteration-based training.

The batch of iteration ``t`` is a pure function of ``(seed, t)``: sample order comes from a
per-epoch permutation seeded by ``(seed, epoch)`` and every sample's augmentation from its own seed
``(seed, t, slot)``. So a resumed run sees exactly the batches an uninterrupted run would, whatever
the number of DataLoader workers, and under DDP each rank takes its own slots of the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from castlib.data.sample import collate


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class SeededSamples(Dataset):
    """Wraps a dataset: item ``(index, seed)`` is ``dataset[index]`` with torch's RNG seeded by ``seed``
    (inside ``fork_rng``, so the caller's RNG is untouched)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class IterationBatches(Sampler):
    """Yields, for iterations ``start, start+1, ...``, this rank's ``[(index, seed), ...]``."""

    def __init__(self, size: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        if size == 0:
            raise ValueError("cannot draw batches from an empty dataset")
        if batch_size % world:
            raise ValueError(f"global batch {batch_size} is not divisible by {world} processes")
        self.size, self.batch_size, self.seed, self.start = size, batch_size, seed, start
        self.rank, self.world = rank, world
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng(_seed(self.seed, epoch)).permutation(self.size)}
        return self._orders[epoch]

    def indices(self, iteration: int) -> list[tuple[int, int]]:
        """The global batch of ``iteration`` as ``(dataset index, sample seed)`` pairs."""
        out = []
        for slot in range(self.batch_size):
            position = iteration * self.batch_size + slot
            epoch, offset = divmod(position, self.size)
            out.append((int(self._order(epoch)[offset]), _seed(self.seed, iteration, slot)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        local = self.batch_size // self.world
        iteration = self.start
        while True:
            yield self.indices(iteration)[self.rank * local: (self.rank + 1) * local]
            iteration += 1

    def __len__(self) -> int:  # endless; DataLoader never needs the length
        return 2**62


def batch_stream(dataset: Dataset, batch_size: int, seed: int, start: int = 0, num_workers: int = 0,
                 rank: int = 0, world: int = 1) -> Iterator:
    """An endless iterator of :class:`~castlib.data.sample.Batch` starting at iteration ``start``."""
    sampler = IterationBatches(len(dataset), batch_size, seed, start, rank, world)
    # A private generator: creating the iterator must not consume the global RNG (dropout, sampling).
    loader = DataLoader(SeededSamples(dataset), batch_sampler=sampler, collate_fn=collate,
                        num_workers=num_workers, persistent_workers=num_workers > 0,
                        generator=torch.Generator().manual_seed(seed))
    return iter(loader)

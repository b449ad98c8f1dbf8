"""Deterministic batch streams for iteration-based training, and how a global batch is split over processes.

The batch of iteration ``t`` is a pure function of ``(seed, t)``: sample order comes from a
per-epoch permutation seeded by ``(seed, epoch)`` and every sample's augmentation from its own seed
``(seed, t, slot)``. So a resumed run sees exactly the batches an uninterrupted run would, whatever
the number of DataLoader workers, and under DDP each rank takes its own slots of the same global batch.

Batch sizes in the config are global (DESIGN 9). :func:`split_batch` gives each of ``world`` processes a
contiguous run of the global batch's *units* (an image; in a two-part batch a labelled image and the
pseudo-labelled image of the same slot, so every forward sees both parts): shares may be uneven, a process
left without a unit runs a zero-weight stand-in forward, and ``micro_batch`` cuts each share into forwards
whose gradients accumulate. Every process runs the same number of forwards per step (its rounds), which
keeps DDP's and the losses' collectives in step; :class:`Forward` carries the weight that makes the
accumulated gradient the one-process gradient (see :func:`castlib.engine.loop.train`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from castlib.data.sample import collate
from castlib.errors import CastError


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


@dataclass(frozen=True)
class Forward:
    """One forward of one process in one step.

    ``units``: the global batch's unit indices it computes (a stand-in's are those of a real forward);
    ``weight``: its units' share of the global batch (0 for a stand-in), the factor of its loss in the step's
    total and of its logged values; ``share``: its units' share of its round (all processes' ``f``-th forwards),
    the factor :func:`castlib.global_batch.global_normaliser` applies to the round's summed counts."""

    units: tuple[int, ...]
    weight: float
    share: float


def split_batch(units: int, world: int, rank: int, micro_batch: int = 0) -> list[Forward]:
    """This process's forwards of a global batch of ``units`` units over ``world`` processes.

    Rank ``r`` takes units ``[start_r, start_r + n_r)``, ``n_r`` = ``units // world`` plus one for the first
    ``units % world`` ranks; ``micro_batch`` units per forward (0: the whole share in one). Every rank runs
    ``rounds`` forwards, the most any rank needs; one without units for a round repeats a real forward
    (its own first, else unit 0) with weight and share 0, as DDP needs every rank in every backward."""
    if units < 1 or world < 1 or not 0 <= rank < world:
        raise ValueError(f"cannot split {units} units over {world} processes (rank {rank})")
    counts = [units // world + (r < units % world) for r in range(world)]
    per = micro_batch if micro_batch > 0 else max(counts)
    chunks = []
    for r in range(world):
        start = sum(counts[:r])
        chunks.append([tuple(range(start + i, min(start + i + per, start + counts[r])))
                       for i in range(0, counts[r], per)])
    rounds = max(len(c) for c in chunks)
    round_units = [sum(len(c[f]) for c in chunks if f < len(c)) for f in range(rounds)]
    mine = chunks[rank]
    out = [Forward(u, len(u) / units, len(u) / round_units[f]) for f, u in enumerate(mine)]
    standin = mine[0] if mine else (0,)
    return out + [Forward(standin, 0.0, 0.0)] * (rounds - len(mine))


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
    """Yields, for iterations ``start, start+1, ...``, this rank's forwards of the global batch as
    ``[(index, seed), ...]`` lists: :func:`split_batch`'s forwards in order, ``len(forwards)`` per iteration."""

    def __init__(self, size: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1,
                 micro_batch: int = 0):
        if size == 0:
            raise ValueError("cannot draw batches from an empty dataset")
        self.size, self.batch_size, self.seed, self.start = size, batch_size, seed, start
        self.forwards = split_batch(batch_size, world, rank, micro_batch)
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
        iteration = self.start
        while True:
            batch = self.indices(iteration)
            for forward in self.forwards:
                yield [batch[u] for u in forward.units]
            iteration += 1

    def __len__(self) -> int:  # endless; DataLoader never needs the length
        return 2**62


def batch_stream(dataset: Dataset, batch_size: int, seed: int, start: int = 0, num_workers: int = 0,
                 rank: int = 0, world: int = 1, micro_batch: int | None = None) -> Iterator:
    """An endless iterator of :class:`~castlib.data.sample.Batch` starting at iteration ``start``: one batch per
    forward of :func:`split_batch` (one per iteration with one process and no ``micro_batch``). ``micro_batch``
    None: the caller runs one forward per iteration and weighs every process alike, so the batch must divide
    evenly over the processes (a :class:`~castlib.errors.CastError` otherwise)."""
    if micro_batch is None and batch_size % world:
        raise CastError(f"a global batch of {batch_size} images cannot be split evenly over {world} processes for "
                        "this stage: run it with a process count that divides the batch")
    sampler = IterationBatches(len(dataset), batch_size, seed, start, rank, world, micro_batch or 0)
    # A private generator: creating the iterator must not consume the global RNG (dropout, sampling).
    loader = DataLoader(SeededSamples(dataset), batch_sampler=sampler, collate_fn=collate,
                        num_workers=num_workers, persistent_workers=num_workers > 0,
                        generator=torch.Generator().manual_seed(seed))
    return iter(loader)

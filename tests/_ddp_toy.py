"""A process of the gloo test of the loss weights (tests/test_distributed.py), kept light to import: one step of
a loss normalised by a data-dependent count, as the set criterion's mask count is."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from castlib import distributed as D
from castlib.engine.batches import split_batch
from castlib.engine.loop import _accumulate
from castlib.global_batch import forward_share, global_normaliser

ROWS = (1, 3, 2, 5, 1)  # rows per unit: uneven counts
CASES = ((5, 0), (2, 0), (5, 1))  # (units of the global batch, micro_batch)


def one_step(rank: int, world: int, units: int, micro: int) -> dict:
    """The step's logged loss and the gradient: the summed squared error of every row over the count of rows."""
    ctx = D.Context(rank, world, rank, torch.device("cpu"))
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    network = DistributedDataParallel(model) if world > 1 else model
    data = [(torch.randn(k, 4), torch.randn(k, 3)) for k in ROWS][:units]

    def step():
        forwards = split_batch(units, world, rank, micro)
        for f, forward in enumerate(forwards):
            x = torch.cat([data[u][0] for u in forward.units])
            y = torch.cat([data[u][1] for u in forward.units])
            last = f == len(forwards) - 1
            with forward_share(forward.share), network.no_sync() if world > 1 and not last else torch.enable_grad():
                loss = (network(x) - y).pow(2).sum() / global_normaliser(torch.tensor(float(len(x))))
                yield {"loss": loss}, forward.weight

    values = _accumulate(step(), ctx)
    return {"loss": values["loss"], "grad": torch.cat([p.grad.flatten() for p in model.parameters()])}


def worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {case: one_step(rank, world, *case) for case in CASES}
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


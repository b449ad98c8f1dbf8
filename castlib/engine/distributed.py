"""DistributedDataParallel under ``torchrun`` (DESIGN section 9): gloo on CPU, nccl on CUDA; rank 0
alone writes files. Without torchrun's environment everything runs in one process.

Loss normalisation: a loss normalised by a count of its batch (Mask2Former's masks, the weights of the
class cross-entropy) takes the count from :func:`global_normaliser`, which sums it over the processes'
forwards of the same round (:func:`castlib.engine.batches.split_batch`) and scales it by this forward's
share: with the loop's weights the summed gradient is the one-process gradient of the global batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from castlib.errors import DeviceError


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The config's ``device``: ``auto`` is CUDA when available, else the CPU (the paper profile has no auto:
    :data:`castlib.config.PAPER_PROFILES`); ``cuda`` without CUDA is a :class:`~castlib.errors.DeviceError` saying
    which NVIDIA driver this torch needs and how to use the CPU on purpose, except while planning
    (:func:`castlib.engine.plan.planning`: run ids only, no tensor made), so ``plan --profile paper`` runs anywhere."""
    from castlib.engine.plan import current_plan

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            if current_plan() is not None:
                return torch.device("cpu")
            from castlib.doctor import no_cuda_message

            raise DeviceError(no_cuda_message())
        return torch.device("cuda", local_rank)
    return torch.device(name)


# Ranks wait at a barrier while rank 0 alone saves a model (the paper teacher: 2.1 GB), scores the validation
# predictions (pycocotools and the official Cityscapes evaluator: minutes on 500 images), counts pseudo-labels
# or draws a synthetic set; evaluation and pseudo-labelling themselves are sharded. One hour covers those
# (NCCL's default is 10 minutes); CAST_DIST_TIMEOUT_MIN sets another.
TIMEOUT = timedelta(minutes=float(os.environ.get("CAST_DIST_TIMEOUT_MIN", "60")))


def init(device: str = "auto") -> Context:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else a single process; the
    group's collectives time out after :data:`TIMEOUT`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=TIMEOUT)
    return Context(rank, world, local_rank, dev)


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, ctx: Context) -> torch.Tensor:
    if ctx.distributed:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= ctx.world
    return value


def all_reduce_sum(value: torch.Tensor, ctx: Context) -> torch.Tensor:
    if ctx.distributed:
        value = value.detach().clone()
        dist.all_reduce(value)
    return value


_SHARE: list[float] = []  # the share of the forward running now (forward_share), innermost last


@contextmanager
def forward_share(share: float) -> Iterator[None]:
    """Within this block, losses normalise as one forward with ``share`` of its round's units (0: a stand-in
    forward whose counts must not count)."""
    _SHARE.append(share)
    try:
        yield
    finally:
        _SHARE.pop()


def global_normaliser(count: torch.Tensor) -> torch.Tensor:
    """The normaliser of a loss summed over this forward's items, from their ``count``: the count of the whole
    round (summed over processes; a stand-in forward adds 0) times this forward's share, at least the share.
    Then ``share``-weighted losses of a round add up to the loss of the round's images in one process.
    Outside :func:`forward_share` (an evaluation, a step in the older one-forward form): Mask2Former's
    normaliser, the count averaged over processes. Every process must call it equally often."""
    count = count.detach().float()
    if not _SHARE:
        if dist.is_available() and dist.is_initialized():
            count = count.clone()
            dist.all_reduce(count)
            count = count / dist.get_world_size()
        return count.clamp(min=1)
    share = _SHARE[-1]
    count = count * (share > 0)
    if dist.is_available() and dist.is_initialized():
        count = count.clone()
        dist.all_reduce(count)
    return count.clamp(min=1) * (share if share > 0 else 1.0)


def autocast(ctx: Context):
    """bf16 autocast on CUDA; a no-op context on the CPU."""
    return torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16, enabled=ctx.device.type == "cuda")

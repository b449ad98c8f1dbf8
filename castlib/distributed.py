"""DistributedDataParallel under ``torchrun`` (DESIGN section 9): gloo on CPU, nccl on CUDA; rank 0
alone writes files. Without torchrun's environment everything runs in one process.

Loss normalisation over the processes: :mod:`castlib.global_batch` (below the models and losses that use it).
"""

from __future__ import annotations

import os
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


# The Linux x86_64 NVIDIA driver each CUDA toolkit release ships with and needs, by (major, minor): NVIDIA CUDA
# Toolkit Release Notes, table "CUDA Toolkit and Corresponding Driver Versions" (the GA release of each toolkit;
# https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/). A torch wheel built for CUDA X.Y needs that driver.
CUDA_DRIVERS = {
    (11, 8): "520.61.05", (12, 0): "525.60.13", (12, 1): "530.30.02", (12, 2): "535.54.03", (12, 3): "545.23.06",
    (12, 4): "550.54.14", (12, 5): "555.42.02", (12, 6): "560.28.03", (12, 8): "570.26", (12, 9): "575.51.03",
    (13, 0): "580.65.06",
}
CPU_ON_PURPOSE = "pass --device cpu (or --set device=cpu) to run on the CPU on purpose"


def driver_needed(cuda: str | None = None) -> str:
    """What the installed torch needs of the machine: the NVIDIA driver of its CUDA version (:data:`CUDA_DRIVERS`),
    or a CUDA build when it is a CPU-only one. ``cuda``: a CUDA version as ``torch.version.cuda`` gives it."""
    cuda = torch.version.cuda if cuda is None else cuda
    if not cuda:
        return (f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch (README 'On a GPU "
                "box')")
    major, minor = (int(part) for part in cuda.split(".")[:2])
    driver = CUDA_DRIVERS.get((major, minor))
    if driver is None:
        return (f"torch {torch.__version__} is built for CUDA {cuda}: its NVIDIA driver is in NVIDIA's CUDA Toolkit "
                "release notes ('CUDA Toolkit and Corresponding Driver Versions')")
    return f"torch {torch.__version__} is built for CUDA {cuda}, which needs an NVIDIA driver >= {driver} on Linux"


def no_cuda_message() -> str:
    """The error of ``device: cuda`` (the paper profile's device, auto included) on a machine without CUDA."""
    return (f"config key device asks for cuda (on the paper profile, auto does too) but torch finds no CUDA device; "
            f"{driver_needed()}; `nvidia-smi` shows the driver and the GPUs. Or {CPU_ON_PURPOSE} (a paper-size "
            "training step takes minutes there)")


def resolve_device(name: str, local_rank: int = 0, planning: bool = False) -> torch.device:
    """The config's ``device``: ``auto`` is CUDA when available, else the CPU (the paper profile has no auto:
    :data:`castlib.config.PAPER_PROFILES`); ``cuda`` without CUDA is a :class:`~castlib.errors.DeviceError` saying
    which NVIDIA driver this torch needs and how to use the CPU on purpose, except while
    ``planning`` (:func:`castlib.engine.plan.planning`: run ids only, no tensor made), so ``plan --profile paper``
    runs anywhere."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            if planning:
                return torch.device("cpu")
            raise DeviceError(no_cuda_message())
        return torch.device("cuda", local_rank)
    return torch.device(name)


# Ranks wait at a barrier while rank 0 alone saves a model (the paper teacher: 2.1 GB), scores the validation
# predictions (pycocotools and the official Cityscapes evaluator: minutes on 500 images), counts pseudo-labels
# or draws a synthetic set; evaluation and pseudo-labelling themselves are sharded. One hour covers those
# (NCCL's default is 10 minutes); CAST_DIST_TIMEOUT_MIN sets another.
TIMEOUT = timedelta(minutes=float(os.environ.get("CAST_DIST_TIMEOUT_MIN", "60")))


def init(device: str = "auto", planning: bool = False) -> Context:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else a single process; the
    group's collectives time out after :data:`TIMEOUT`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank, planning)
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


def autocast(ctx: Context):
    """bf16 autocast on CUDA; a no-op context on the CPU."""
    return torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16, enabled=ctx.device.type == "cuda")

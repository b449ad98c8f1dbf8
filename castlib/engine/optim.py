"""Optimisation per supplementary Table 2: AdamW (0.9, 0.999), multi-step decay at 0.9 and 0.95 of
the run (teacher) or PolyLR with power 0.9 (student), gradient clipping by L2 norm (student 0.1)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, MultiStepLR, PolynomialLR


def decay_split(params: Iterable[nn.Parameter]) -> tuple[list, list]:
    """Weights (>= 2-D) get weight decay; biases, norm scales and 1-D embeddings do not."""
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return decay, no_decay


def build_optimizer(groups: Mapping[str, tuple[Iterable[nn.Parameter], float]], weight_decay: float,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over parameter groups with their learning rates, ``{"encoder": (params, lr), ...}``.

    Each group is split into decayed and non-decayed parameters; ``param_group["name"]`` keeps the
    group's name for logging (``lr/encoder``). Groups without trainable parameters are skipped."""
    param_groups = []
    for name, (params, lr) in groups.items():
        decay, no_decay = decay_split(params)
        if decay:
            param_groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": name})
        if no_decay:
            param_groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}_no_decay"})
    if not param_groups:
        raise ValueError("no trainable parameters")
    return torch.optim.AdamW(param_groups, betas=tuple(betas))


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, iterations: int,
                    milestones: Iterable[float] = (0.9, 0.95), gamma: float = 0.1, power: float = 0.9) -> LRScheduler:
    """``multistep``: lr x gamma at each milestone fraction of the run; ``poly``: lr (1 - t/T)^power;
    ``constant``: unchanged. Stepped once per iteration."""
    if kind == "multistep":
        return MultiStepLR(optimizer, milestones=[round(f * iterations) for f in milestones], gamma=gamma)
    if kind == "poly":
        return PolynomialLR(optimizer, total_iters=iterations, power=power)
    if kind == "constant":
        return LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown schedule {kind!r}: use multistep, poly or constant")


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float | None) -> torch.Tensor | None:
    """Clip the global L2 norm of the gradients to ``max_norm`` (None or 0: no clipping); returns the
    norm before clipping."""
    if not max_norm:
        return None
    return torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], max_norm)

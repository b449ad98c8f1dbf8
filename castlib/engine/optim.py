"""Optimisation per supplementary Table 2: AdamW (0.9, 0.999), multi-step decay at 0.9 and 0.95 of
the run (teacher) or PolyLR with power 0.9 (student), gradient clipping by L2 norm (student 0.1).
Weight decay spares embeddings, tokens, norms and biases (Mask2Former / detectron2)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.optim.lr_scheduler import ChainedScheduler, LambdaLR, LinearLR, LRScheduler, MultiStepLR, PolynomialLR

NO_DECAY_MODULES = (nn.Embedding, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
                    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm,
                    nn.RMSNorm)  # detectron2's norm types, plus RMSNorm
NO_DECAY_NAMES = ("token", "embed")  # cls / mask / prompt tokens, position and level embeddings held as raw tensors


def no_decay_parameters(model: nn.Module) -> set[nn.Parameter]:
    """The parameters that take no weight decay, as Mask2Former/detectron2 (``weight_decay_norm = 0``,
    ``weight_decay_embed = 0``): every parameter of an embedding or normalisation layer, every parameter
    a module holds under a name with ``token`` or ``embed`` (DINOv2's cls and mask tokens and position
    embeddings), and every 1-D parameter (biases, layer scales)."""
    exempt: set[nn.Parameter] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, NO_DECAY_MODULES) or any(part in name for part in NO_DECAY_NAMES) or p.ndim < 2:
                exempt.add(p)
    return exempt


def build_optimizer(model: nn.Module, groups: Mapping[str, tuple[Iterable[nn.Parameter], float]],
                    weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over parameter groups of ``model`` with their learning rates, ``{"encoder": (params, lr), ...}``.

    Each group is split into decayed parameters and those of :func:`no_decay_parameters`;
    ``param_group["name"]`` keeps the group's name for logging (``lr/encoder``). Frozen parameters and
    groups without trainable parameters are skipped."""
    exempt = no_decay_parameters(model)
    param_groups = []
    for name, (params, lr) in groups.items():
        trainable = [p for p in params if p.requires_grad]
        decay = [p for p in trainable if p not in exempt]
        no_decay = [p for p in trainable if p in exempt]
        if decay:
            param_groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": name})
        if no_decay:
            param_groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}_no_decay"})
    if not param_groups:
        raise ValueError("no trainable parameters")
    return torch.optim.AdamW(param_groups, betas=tuple(betas))


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, iterations: int,
                    milestones: Iterable[float] = (0.9, 0.95), gamma: float = 0.1, power: float = 0.9,
                    warmup: int = 0) -> LRScheduler:
    """``multistep``: lr x gamma at each milestone fraction of the run; ``poly``: lr (1 - t/T)^power;
    ``constant``: unchanged. With ``warmup`` > 0 the rate is also scaled linearly from 1/warmup to 1 over the
    first ``warmup`` iterations. Stepped once per iteration."""
    if kind not in ("multistep", "poly", "constant"):
        raise ValueError(f"unknown schedule {kind!r}: use multistep, poly or constant")
    warm = LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup) if warmup > 0 else None
    if kind == "constant":
        return warm or LambdaLR(optimizer, lambda _: 1.0)
    if kind == "multistep":
        main = MultiStepLR(optimizer, milestones=[round(f * iterations) for f in milestones], gamma=gamma)
    else:
        main = PolynomialLR(optimizer, total_iters=iterations, power=power)
    # both decays are chainable (each step scales the current rate), so the chain multiplies them
    return main if warm is None else ChainedScheduler([warm, main])


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float | None) -> torch.Tensor | None:
    """Clip the global L2 norm of the gradients to ``max_norm`` (None or 0: no clipping); returns the
    norm before clipping."""
    if not max_norm:
        return None
    return torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], max_norm)

"""A test fixture: predictions shaped like a trained model's, on synthetic instance maps, the inputs that
exercise the instance-aware sampler and L_pxl without a model (the contrastive tests; ``benchmarks`` imports it
as ``tests.contrastive_fixtures``, run from the repository root as ``python -m benchmarks``).

Each image is an ``height x width`` embedding map holding random rectangles (later ones occlude
earlier ones) on background. Query k predicts instance k + 1: its mask logit is ``+confidence``
inside the instance and ``-confidence`` elsewhere, its class logits favour the instance's class by
``confidence``; queries without an instance favour "no object". Gaussian noise of unit scale is
added to every logit, so no two pixels have exactly the same pseudo-probability embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SyntheticPredictions:
    """``mask_logits [B, K, N]``, ``class_logits [B, K, C+1]``, ``instance_ids [B, N]``.

    Instance ids are 1..instances, and -1 on background (no instance: left out of the
    false-negative rate, as stuff pixels are in Cityscapes' instance maps).
    """

    mask_logits: torch.Tensor
    class_logits: torch.Tensor
    instance_ids: torch.Tensor


def instance_predictions(
    batch: int,
    height: int,
    width: int,
    num_queries: int,
    num_classes: int,
    *,
    instances: int = 20,
    confidence: float = 4.0,
    generator: torch.Generator | None = None,
) -> SyntheticPredictions:
    if not 1 <= instances <= num_queries:
        raise ValueError(f"instances must lie in 1..num_queries={num_queries}, got {instances}")
    ids = torch.zeros(batch, height, width, dtype=torch.int64)
    for b in range(batch):
        for instance in range(1, instances + 1):
            h, w = (int(torch.randint(2, max(3, size // 3), (1,), generator=generator)) for size in (height, width))
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            ids[b, top:top + h, left:left + w] = instance
    ids = ids.flatten(1)
    queries = torch.arange(1, num_queries + 1)
    inside = ids[:, None, :] == queries[None, :, None]  # [B, K, N]
    mask_logits = torch.where(inside, confidence, -confidence)
    classes = torch.randint(0, num_classes, (batch, num_queries), generator=generator)
    classes[:, instances:] = num_classes  # queries without an instance: no object
    class_logits = confidence * torch.nn.functional.one_hot(classes, num_classes + 1).float()
    noise = lambda shape: torch.randn(shape, generator=generator)
    return SyntheticPredictions(mask_logits + noise(mask_logits.shape), class_logits + noise(class_logits.shape),
                                ids.masked_fill(ids == 0, -1))

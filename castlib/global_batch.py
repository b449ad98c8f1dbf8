"""A forward's share of the global batch and the counts its losses normalise by (DESIGN 9).

A loss normalised by a count of its batch (Mask2Former's masks, the weights of the class cross-entropy, Grounding
DINO's boxes, SAM2's prompts) takes the count from :func:`global_normaliser`, which sums it over the processes'
forwards of the same round (:func:`castlib.engine.batches.split_batch`) and scales it by this forward's share
(:func:`forward_share`): with the loop's weights the summed gradient is the one-process gradient of the global
batch. It sits at the bottom of the package so that models and losses need nothing from the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

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

"""The reference L_pxl: dense and straight from the equations (spec 7.3; supplementary E.2).

It builds the whole anchors x candidates weight matrix and gathers every anchor's R negative
embeddings (``[A, R, D]``), so its memory grows with A x (candidates + R x D): for small inputs
and for testing :mod:`castlib.losses.contrastive_fast` against.
"""

from __future__ import annotations

import torch

from castlib.losses.contrastive_inputs import ContrastiveBatch, ContrastiveOptions
from castlib.losses.debiased_sampling import debiased_weights, gumbel_top_k


def reference_pixel_contrastive(pixels: ContrastiveBatch, negatives: torch.Tensor | None, opts: ContrastiveOptions,
                                generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """``(loss, s+ [A], s- [A, R], negatives [A, R])``, similarities as cosines."""
    z_anchor, z_positive, bank = pixels.z_anchor, pixels.z_positive, pixels.bank
    z_candidates = z_anchor if bank is None else torch.cat([z_anchor, bank[0]])
    anchors = torch.arange(z_anchor.shape[0], device=z_anchor.device)
    if negatives is None:
        with torch.no_grad():
            weights = debiased_weights(pixels.y, pixels.y_candidates, opts.score)  # [A, M]
            weights[anchors, anchors] = 0  # the anchor itself is never a candidate
            negatives = gumbel_top_k(weights, opts.num_negatives, generator)
    drawn = negatives >= 0
    s_pos = (z_anchor * z_positive).sum(-1)
    z_neg = z_candidates[negatives.clamp(min=0)]  # [A, R, D]
    s_neg = (z_anchor[:, None, :] * z_neg).sum(-1)
    if opts.loss == "infonce":
        pos = torch.exp(s_pos / opts.temperature)
        neg = (torch.exp(s_neg / opts.temperature) * drawn).sum(1)
        per_anchor = -torch.log(pos / (pos + neg))
    else:
        hinge = torch.clamp(opts.margin - (s_pos[:, None] - s_neg), min=0) * drawn
        per_anchor = hinge.sum(1) / drawn.sum(1).clamp(min=1)
    return per_anchor.mean(), s_pos.detach(), s_neg.detach(), negatives

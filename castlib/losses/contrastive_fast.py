"""The fast L_pxl, the one training uses (spec 7.3; supplementary E.2-E.4).

Anchors are processed in chunks of ``chunk_size``. Per chunk: the pseudo-probability similarities
``[c, M]`` to all M candidates (one matmul, scored only where read: :class:`ChunkWeights`); R
negatives per anchor drawn by :func:`successive_sampling` (rejection on uniform proposals,
completed by Gumbel-top-k where the weights are small); then the embedding similarities to all
candidates as a matmul ``[c, M]``, from which only the drawn ``[c, R]`` are picked. The pick keeps
nothing of size ``[c, M]`` for the backward pass, so the peak memory is O(chunk x M + A x R):
never the anchors x candidates matrix, nor ``[A, R, D]`` gathered embeddings. Memory-bank entries
get no gradient, so their similarities are a matmul of their own whose backward skips them.
Device-agnostic: everything stays on the inputs' device.
"""

from __future__ import annotations

import torch

from castlib.losses.contrastive_inputs import ContrastiveBatch, ContrastiveOptions
from castlib.losses.debiased_sampling import ChunkWeights, successive_sampling


def fast_pixel_contrastive(pixels: ContrastiveBatch, negatives: torch.Tensor | None, opts: ContrastiveOptions,
                           generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """``(loss, s+ [A], s- [A, R], negatives [A, R])``, similarities as cosines."""
    z_anchor, z_positive, y, bank = pixels.z_anchor, pixels.z_positive, pixels.y, pixels.bank
    anchors = z_anchor.shape[0]
    y_candidates = pixels.y_candidates
    drawn_chunks, s_neg_chunks = [], []
    for start in range(0, anchors, opts.chunk_size):
        stop = min(start + opts.chunk_size, anchors)
        if negatives is None:
            with torch.no_grad():
                weights = ChunkWeights(y[start:stop], y_candidates, opts.score, offset=start)
                drawn = successive_sampling(weights, opts.num_negatives, generator)
        else:
            drawn = negatives[start:stop]
        z_chunk = z_anchor[start:stop]
        s_neg = _pick(z_chunk @ z_anchor.T, drawn)
        if bank is not None:  # bank entries: a separate matmul, whose backward skips them
            s_neg = torch.where(drawn >= anchors, _pick(z_chunk @ bank[0].T, drawn - anchors), s_neg)
        s_neg_chunks.append(s_neg)
        drawn_chunks.append(drawn)
    negatives = torch.cat(drawn_chunks)
    s_neg = torch.cat(s_neg_chunks)
    valid = negatives >= 0
    s_pos = (z_anchor * z_positive).sum(-1)
    if opts.loss == "infonce":
        logits = torch.cat([s_pos[:, None], s_neg.masked_fill(~valid, float("-inf"))], dim=1)
        per_anchor = torch.logsumexp(logits / opts.temperature, dim=1) - s_pos / opts.temperature
    else:
        hinge = torch.relu(opts.margin - s_pos[:, None] + s_neg).masked_fill(~valid, 0)
        per_anchor = hinge.sum(1) / valid.sum(1).clamp(min=1)
    return per_anchor.mean(), s_pos.detach(), s_neg.detach(), negatives


def _pick(similarities: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``similarities[i, columns[i, r]]`` (columns out of range clamped), keeping nothing of
    ``similarities``' size for the backward pass (``gather`` would keep it whole)."""
    rows, cols = similarities.shape
    flat = torch.arange(rows, device=columns.device)[:, None] * cols + columns.clamp(0, cols - 1)
    return similarities.flatten().index_select(0, flat.flatten()).view_as(columns)

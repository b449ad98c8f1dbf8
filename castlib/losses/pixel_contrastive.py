"""L_pxl, the instance-aware pixel-wise contrastive loss (spec 7.3; supplementary C, E.2-E.4; DESIGN 5).

For every pixel (b, p) of the embedding map, the anchor is its weak embedding z_weak[b, p], the
positive its strong embedding at the same location, and R negatives are other pixels' weak
embeddings, drawn by the instance-aware sampler (:mod:`castlib.losses.debiased_sampling`):

    s+ = <z_weak[b, p], z_strong[b, p]>,   s-_r = <z_weak[b, p], z_weak[(b', q)_r]>,
    infonce:  l = -log exp(s+/T) / (exp(s+/T) + sum_r exp(s-_r/T))        (asymmetric InfoNCE)
    hinge:    l = mean_r max(0, m - (s+ - s-_r))                           (Table 4, E.2; no T)
    L_pxl = mean of l over the B * N anchors.

Candidates are every pixel of the batch except the anchor itself (same and other images), plus
the memory bank's entries with ``scope="memory_bank"`` (Table 7, E.4). With ``valid``, pixels
outside it (the padding of an image smaller than the crop) are neither anchors nor candidates, nor
pushed into the bank: the loss is computed on the valid pixels alone, exactly as on a batch that
holds only them. Embeddings are used as
given: the projection heads L2-normalise them, so the inner products are cosine similarities.

Gradients: the loss flows into z_weak (anchors and in-batch negatives) and into z_strong
(positives), exactly as the caller passes them. The strong view's encoder pass runs without
gradient (DESIGN 5, Fig. 1 dashed arrow), but its projection head is trainable (Fig. 1), so the
loss does not detach z_strong; a caller that wants a frozen positive detaches it. Bank entries and
y~ carry no gradient.

Two implementations share this interface: ``reference`` (dense, from the equations; small inputs
and tests) and ``fast`` (chunked, training). Given the same ``negatives`` they return the same
loss and gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from castlib.losses.contrastive_fast import fast_pixel_contrastive
from castlib.losses.contrastive_inputs import ContrastiveBatch, ContrastiveOptions
from castlib.losses.contrastive_reference import reference_pixel_contrastive
from castlib.losses.debiased_sampling import pseudo_probability_embedding
from castlib.losses.memory_bank import MemoryBank

IMPLEMENTATIONS = {"fast": fast_pixel_contrastive, "reference": reference_pixel_contrastive}
NOT_OPTIONS = ("bank_size", "bank_push")  # keys of the config section that the caller uses itself


def contrastive_options(section: Mapping) -> dict:
    """Keyword arguments of :func:`pixel_contrastive_loss` from the config's ``loss.contrastive``
    section: every key but ``bank_size`` and ``bank_push`` (those of the caller's :class:`MemoryBank`)."""
    return {key: value for key, value in section.items() if key not in NOT_OPTIONS}


@dataclass
class ContrastiveResult:
    """What :func:`pixel_contrastive_loss` returns.

    - ``loss``: scalar L_pxl, differentiable.
    - ``negatives``: ``[B * N, R]`` int64 candidate indices, in draw order, per anchor ``b * N + p``:
      ``b' * N + q`` for pixel q of image b', ``B * N + j`` for the memory bank's slot j, -1 where
      fewer than R candidates had a positive weight (that slot adds nothing to the loss).
    - ``margin``: mean positive minus mean sampled-negative cosine similarity, Delta_emp of
      Proposition 3.1 (main Fig. 3), detached.
    - ``fnr``: with ``instance_ids``, the share of an instance anchor's sampled instance negatives that
      lie in the anchor's own instance (same image, same id), i.e. 1 - p of Assumption 3.1
      (Proposition 3.1, main Fig. 3); background anchors and candidates are left out. Otherwise None.
    - ``background_share``: with ``instance_ids``, the share of an instance anchor's sampled in-batch
      negatives that are background pixels; otherwise None.
    """

    loss: torch.Tensor
    negatives: torch.Tensor
    margin: torch.Tensor
    fnr: torch.Tensor | None = None
    background_share: torch.Tensor | None = None


def pixel_contrastive_loss(
    z_weak: torch.Tensor,
    z_strong: torch.Tensor,
    mask_logits: torch.Tensor,
    class_logits: torch.Tensor,
    *,
    negatives: torch.Tensor | None = None,
    instance_ids: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    impl: str = "fast",
    bank: MemoryBank | None = None,
    generator: torch.Generator | None = None,
    **options,
) -> ContrastiveResult:
    """L_pxl of a batch (spec 7.3) with its diagnostics.

    ``z_weak``, ``z_strong`` ``[B, N, D]`` (unit norm); ``mask_logits`` ``[B, K, N]`` resized to the
    embedding map and ``class_logits`` ``[B, K, C+1]``, both used detached to build y~;
    ``instance_ids`` ``[B, N]`` int, per-image instance ids for the false-negative rate (ids >= 1
    are instances, 0 is background, negative ids are unknown and left out); ``valid`` ``[B, N]`` bool,
    the pixels that take part (default: all), e.g. not the padding.
    ``negatives`` ``[B * N, R]`` as in :class:`ContrastiveResult` skips sampling (its R wins over
    ``num_negatives``), so two implementations can be compared on one draw; with ``valid``, rows of
    left-out anchors are ignored and no entry may name a left-out pixel. ``bank`` is required
    with ``scope="memory_bank"``: its entries are extra candidates, and a random subset of the
    batch's (z_weak, y~) is pushed into it after the loss is computed. ``generator`` drives the sampler (default:
    torch's global one). ``options``: see :class:`ContrastiveOptions`.
    """
    opts = ContrastiveOptions.build(**options)
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be one of {sorted(IMPLEMENTATIONS)}, got {impl!r}")
    _check_shapes(z_weak, z_strong, mask_logits, class_logits, instance_ids, valid)
    if (opts.scope == "memory_bank") != (bank is not None):
        raise ValueError(f"scope {opts.scope!r} " + ("needs a MemoryBank (bank=...)" if bank is None
                                                     else "takes no bank; use scope='memory_bank'"))
    dtype = torch.promote_types(z_weak.dtype, torch.float32)
    z_anchor, z_positive = z_weak.flatten(0, 1).to(dtype), z_strong.flatten(0, 1).to(dtype)
    y = pseudo_probability_embedding(mask_logits.to(dtype), class_logits.to(dtype), opts.embedding)
    kept = None if valid is None else valid.flatten().to(z_anchor.device).nonzero().squeeze(1)
    if kept is not None:
        z_anchor, z_positive, y = z_anchor[kept], z_positive[kept], y[kept]
    pixels = ContrastiveBatch(z_anchor, z_positive, y)
    if bank is not None and len(bank):
        if bank.y.shape[1] != y.shape[1]:
            raise ValueError(f"the memory bank holds y of dim {bank.y.shape[1]}, this batch's is {y.shape[1]}")
        pixels.bank = bank.z.to(z_anchor, copy=True), bank.y.to(y, copy=True)  # the push below must not change them
    if negatives is not None:
        _check_negatives(negatives, z_weak.shape[0] * z_weak.shape[1],
                         z_weak.shape[0] * z_weak.shape[1] + pixels.num_candidates - y.shape[0])
        if kept is not None:
            negatives = _to_kept(negatives[kept], kept, z_weak.shape[0] * z_weak.shape[1])
    loss, s_pos, s_neg, negatives = IMPLEMENTATIONS[impl](pixels, negatives, opts, generator)
    if bank is not None:
        bank.push(z_anchor.detach(), y, generator)
    drawn = negatives >= 0
    margin = s_pos.mean() - (s_neg * drawn).sum() / drawn.sum()
    if kept is not None:
        negatives = _from_kept(negatives, kept, z_weak.shape[0] * z_weak.shape[1])
    if instance_ids is None:
        return ContrastiveResult(loss=loss, negatives=negatives, margin=margin)
    return ContrastiveResult(loss=loss, negatives=negatives, margin=margin,
                             fnr=false_negative_rate(negatives, instance_ids),
                             background_share=background_share(negatives, instance_ids))


def _negative_ids(negatives: torch.Tensor, instance_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per drawn pair: the anchor's id, the candidate's id (-1 for bank entries and empty slots), and
    whether both lie in the same image."""
    pixels = instance_ids.shape[1]
    ids = instance_ids.flatten().to(negatives.device)
    anchors = torch.arange(negatives.shape[0], device=negatives.device)[:, None]
    in_batch = (negatives >= 0) & (negatives < ids.numel())
    candidate_ids = torch.where(in_batch, ids[negatives.clamp(0, ids.numel() - 1)], -1)
    return ids[anchors].expand_as(negatives), candidate_ids, negatives // pixels == anchors // pixels


@torch.no_grad()
def false_negative_rate(negatives: torch.Tensor, instance_ids: torch.Tensor) -> torch.Tensor:
    """Share of the drawn negatives of instance anchors, among those in an instance, that lie in the
    anchor's own instance (Proposition 3.1: 1 - p; main Fig. 3).

    Ids >= 1 are instances, 0 is background, negative ids are unknown. A candidate is in the anchor's
    instance when it is a pixel of the same image with the same id. Background anchors, background
    candidates, unknown ids, ``-1`` slots and memory-bank entries (index >= B * N, past images whose
    ids are not kept) are left out. NaN when no pair is left.
    """
    anchor_ids, candidate_ids, same_image = _negative_ids(negatives, instance_ids)
    counted = (anchor_ids >= 1) & (candidate_ids >= 1)
    same = counted & same_image & (candidate_ids == anchor_ids)
    return same.sum() / counted.sum()


@torch.no_grad()
def background_share(negatives: torch.Tensor, instance_ids: torch.Tensor) -> torch.Tensor:
    """Share of the drawn in-batch negatives of instance anchors (ids as in :func:`false_negative_rate`)
    that are background pixels. NaN when no pair is left."""
    anchor_ids, candidate_ids, _ = _negative_ids(negatives, instance_ids)
    counted = (anchor_ids >= 1) & (candidate_ids >= 0)
    return (counted & (candidate_ids == 0)).sum() / counted.sum()


def _to_kept(negatives: torch.Tensor, kept: torch.Tensor, pixels: int) -> torch.Tensor:
    """Candidate indices of the whole batch (``B * N`` pixels, then the bank) as indices among the kept pixels."""
    position = torch.full((pixels,), -2, dtype=torch.int64, device=negatives.device)
    position[kept] = torch.arange(len(kept), device=negatives.device)
    in_batch = (negatives >= 0) & (negatives < pixels)
    out = torch.where(in_batch, position[negatives.clamp(0, pixels - 1)], negatives - pixels + len(kept))
    out = torch.where(negatives < 0, -1, out)
    if (out == -2).any():
        raise ValueError("negatives name a pixel outside `valid`; left-out pixels are no candidates")
    return out


def _from_kept(negatives: torch.Tensor, kept: torch.Tensor, pixels: int) -> torch.Tensor:
    """Indices among the kept pixels back as indices of the whole batch; left-out anchors' rows are -1."""
    in_batch = (negatives >= 0) & (negatives < len(kept))
    mapped = torch.where(in_batch, kept[negatives.clamp(0, max(len(kept) - 1, 0))], negatives - len(kept) + pixels)
    out = torch.full((pixels, negatives.shape[1]), -1, dtype=torch.int64, device=negatives.device)
    out[kept] = torch.where(negatives < 0, -1, mapped)
    return out


def _check_shapes(z_weak, z_strong, mask_logits, class_logits, instance_ids, valid) -> None:
    if z_weak.dim() != 3 or z_weak.shape != z_strong.shape:
        raise ValueError(f"z_weak and z_strong must both be [B, N, D], got {tuple(z_weak.shape)} "
                         f"and {tuple(z_strong.shape)}")
    batch, pixels, _ = z_weak.shape
    if mask_logits.dim() != 3 or mask_logits.shape[0] != batch or mask_logits.shape[2] != pixels:
        raise ValueError(f"mask_logits must be [B, K, N] = [{batch}, K, {pixels}] (resized to the embedding map), "
                         f"got {tuple(mask_logits.shape)}")
    if class_logits.dim() != 3 or class_logits.shape[:2] != mask_logits.shape[:2]:
        raise ValueError(f"class_logits must be [B, K, C+1] with B, K of mask_logits {tuple(mask_logits.shape[:2])}, "
                         f"got {tuple(class_logits.shape)}")
    if instance_ids is not None and tuple(instance_ids.shape) != (batch, pixels):
        raise ValueError(f"instance_ids must be [B, N] = [{batch}, {pixels}], got {tuple(instance_ids.shape)}")
    if valid is not None and (tuple(valid.shape) != (batch, pixels) or valid.dtype != torch.bool):
        raise ValueError(f"valid must be bool [B, N] = [{batch}, {pixels}], got {valid.dtype} {tuple(valid.shape)}")


def _check_negatives(negatives: torch.Tensor, anchors: int, candidates: int) -> None:
    if negatives.dim() != 2 or negatives.shape[0] != anchors or negatives.dtype != torch.int64:
        raise ValueError(f"negatives must be int64 [B * N, R] = [{anchors}, R], "
                         f"got {negatives.dtype} {tuple(negatives.shape)}")
    if negatives.numel() and (int(negatives.min()) < -1 or int(negatives.max()) >= candidates):
        raise ValueError(f"negatives must index the {candidates} candidates (or be -1), "
                         f"got values in [{int(negatives.min())}, {int(negatives.max())}]")
    own = negatives == torch.arange(anchors, device=negatives.device)[:, None]
    if own.any():
        raise ValueError(f"an anchor is never its own negative; anchor {int(own.any(1).nonzero()[0])} is")

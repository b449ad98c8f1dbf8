"""The instance-aware negative sampler of L_pxl (spec 7.3; main Table 4; supplementary Table 5).

Each pixel gets a pseudo-probability embedding from the model's own detached predictions,

    P_m = softmax_K(M),  F_c[b, p, c] = sum_k P_m[b, k, p] softmax_{C+1}(L)[b, k, c],
    y[b, p] = [P_m[b, :, p] || F_c[b, p, :]],  y~ = y / |y|,

and a candidate (b', q) is drawn as a negative of the anchor (b, p) with probability proportional
to a score of the debiased dissimilarity s_deb = max(0, 1 - <y~[b, p], y~[b', q]>): pixels that
the model assigns to other queries or classes, i.e. likely other instances. R negatives are drawn
per anchor without replacement (successive sampling) by Gumbel-top-k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EMBEDDINGS = ("fusion", "mask_only", "class_only", "uniform")
SCORES = ("original", "squared", "sqrt")


@torch.no_grad()
def pseudo_probability_embedding(mask_logits: torch.Tensor, class_logits: torch.Tensor,
                                 embedding: str = "fusion") -> torch.Tensor:
    """y~ for every pixel, ``[B * N, E]``, L2-normalised and detached (spec 7.3; main Table 4).

    ``mask_logits`` ``[B, K, N]`` at the embedding map's resolution, ``class_logits`` ``[B, K, C+1]``.
    ``fusion`` is ``[P_m || F_c]`` (E = K + C + 1), ``mask_only`` ``P_m`` (E = K), ``class_only``
    ``F_c`` (E = C + 1). ``uniform`` has no features (E = 0), so every s_deb is 1.
    """
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
    batch, _, pixels = mask_logits.shape
    p_mask = mask_logits.softmax(dim=1)  # [B, K, N]: which query each pixel belongs to
    parts = []
    if embedding in ("fusion", "mask_only"):
        parts.append(p_mask.transpose(1, 2))
    if embedding in ("fusion", "class_only"):
        parts.append(torch.einsum("bkn,bkc->bnc", p_mask, class_logits.softmax(dim=-1)))
    y = torch.cat(parts, dim=-1) if parts else p_mask.new_zeros(batch, pixels, 0)
    return F.normalize(y, dim=-1).flatten(0, 1)


def debiased_weights(y_anchors: torch.Tensor, y_candidates: torch.Tensor, score: str = "original") -> torch.Tensor:
    """Sampling weights ``[A, M]``: s_deb, s_deb^2 or sqrt(s_deb) (supplementary Table 5).

    Entries of y~ are non-negative, so s_deb lies in [0, 1]; pixels with the same y~ get 0.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    weights = (y_anchors @ y_candidates.T).neg_().add_(1).clamp_(min=0)
    if score == "squared":
        weights.square_()
    elif score == "sqrt":
        weights.sqrt_()
    return weights


@torch.no_grad()
def sample_without_replacement(weights: torch.Tensor, num: int,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """Per row of ``weights [A, M]`` (non-negative), ``num`` column indices drawn without replacement.

    Gumbel-top-k in the exponential form (Efraimidis-Spirakis keys ``w / E``, E ~ Exp(1)): the
    ``num`` largest keys, in decreasing order, are distributed as successive draws each
    proportional to ``w`` among the columns not drawn yet; the first column is therefore drawn
    with probability ``w / sum(w)``. A zero weight gets key 0 and is never drawn: where a row has
    fewer than ``num`` positive weights, the remaining slots hold -1. ``weights`` is overwritten.
    """
    rows, cols = weights.shape
    noise = torch.rand(rows, cols, generator=generator, device=weights.device, dtype=weights.dtype)
    keys = weights.div_(noise.log_().neg_())  # E = -log U in (0, inf]; U = 0 gives key 0
    top = keys.topk(min(num, cols), dim=1)
    drawn = top.indices.masked_fill_(top.values <= 0, -1)
    if num > cols:
        drawn = F.pad(drawn, (0, num - cols), value=-1)
    return drawn

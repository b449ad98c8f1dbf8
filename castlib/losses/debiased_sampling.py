"""The instance-aware negative sampler of L_pxl (spec 7.3; main Table 4; supplementary Table 5).

Each pixel gets a pseudo-probability embedding from the model's own detached predictions,

    P_m = softmax_K(M),  F_c[b, p, c] = sum_k P_m[b, k, p] softmax_{C+1}(L)[b, k, c],
    y[b, p] = [P_m[b, :, p] || F_c[b, p, :]],  y~ = y / |y|,

and a candidate (b', q) is drawn as a negative of the anchor (b, p) with probability proportional
to a score of the debiased dissimilarity s_deb = max(0, 1 - <y~[b, p], y~[b', q]>): pixels that
the model assigns to other queries or classes, i.e. likely other instances. R negatives are drawn
per anchor without replacement, each in proportion to the weights among the candidates not drawn
yet (successive sampling): by Gumbel-top-k in the reference implementation, by rejection with a
Gumbel-top-k completion in the fast one; both follow that law exactly.
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
    return _score(y_anchors @ y_candidates.T, score)


def _score(similarity: torch.Tensor, score: str) -> torch.Tensor:
    """s_deb = max(0, 1 - <y~_a, y~_c>) and its Table 5 variant, in place."""
    weights = similarity.neg_().add_(1).clamp_(min=0)
    if score == "squared":
        weights.square_()
    elif score == "sqrt":
        weights.sqrt_()
    return weights


class ChunkWeights:
    """:func:`debiased_weights` of the anchors ``offset .. offset + c - 1`` (anchor a is candidate a),
    with each anchor's own weight 0, evaluated only where :func:`successive_sampling` reads them.

    One matmul gives every <y~_a, y~_c>; the score and the exclusion of the anchor itself are then
    applied to the entries read (:meth:`gather`) or to whole rows (indexing), never to all
    ``c x M`` entries.
    """

    def __init__(self, y_anchors: torch.Tensor, y_candidates: torch.Tensor, score: str, offset: int):
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.similarity = y_anchors @ y_candidates.T
        self.shape, self.device, self.dtype = self.similarity.shape, self.similarity.device, self.similarity.dtype
        self.score, self.offset = score, offset

    def _own(self, rows: torch.Tensor) -> torch.Tensor:
        return (self.offset + rows)[:, None]

    def gather(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        """``weights.gather(1, index)``."""
        rows = torch.arange(self.shape[0], device=index.device)
        weights = _score(self.similarity.gather(dim, index), self.score)
        return weights.masked_fill_(index == self._own(rows), 0)

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        """The dense weights of the chunk's rows ``rows`` (an index tensor)."""
        weights = _score(self.similarity[rows], self.score)
        return weights.scatter_(1, self._own(rows), 0)


@torch.no_grad()
def gumbel_top_k(weights: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per row of ``weights [A, M]`` (non-negative), ``num`` column indices drawn without replacement.

    Gumbel-top-k, as defined: the columns of the ``num`` largest keys ``log(w) + G`` (G standard
    Gumbel, ``-log(-log U)``), in decreasing order, are distributed as successive draws each
    proportional to ``w`` among the columns not drawn yet (Plackett-Luce); the first column is thus
    drawn with probability ``w / sum(w)``. A zero weight gets key -inf and is never drawn: where a
    row has fewer than ``num`` positive weights, the remaining slots hold -1. Cost: a random
    number per entry and a top-k per row.
    """
    rows, cols = weights.shape
    uniform = torch.rand(rows, cols, generator=generator, device=weights.device, dtype=weights.dtype)
    gumbel = uniform.clamp_(min=torch.finfo(weights.dtype).tiny).log_().neg_().log_().neg_()
    top = (weights.log() + gumbel).topk(min(num, cols), dim=1)
    drawn = top.indices.masked_fill_(top.values == float("-inf"), -1)
    if num > cols:
        drawn = F.pad(drawn, (0, num - cols), value=-1)
    return drawn


@torch.no_grad()
def successive_sampling(weights: torch.Tensor | ChunkWeights, num: int, generator: torch.Generator | None = None,
                        trials: int | None = None) -> torch.Tensor:
    """The distribution of :func:`gumbel_top_k` for weights in [0, 1], reading ``3 * num`` weights
    per row where they are not small (``weights`` a tensor or :class:`ChunkWeights`).

    Rejection: each of ``trials`` (default ``3 * num``) per row proposes a uniform column and
    accepts it with probability ``w``; the first acceptance of each column, in trial order, is the
    next draw. Conditioned on being new and accepted, a column is proportional to ``w`` among the
    columns not drawn yet, so the draws follow successive sampling exactly. Rows with fewer than
    ``num`` draws after the trials (small weights, or fewer than ``num`` positive ones) are
    completed by Gumbel-top-k on the columns not drawn yet, which continues the same process.
    """
    rows, cols = weights.shape
    if cols == 0:  # nothing to propose
        return torch.full((rows, num), -1, device=weights.device)
    trials = 3 * num if trials is None else trials
    proposed = torch.randint(0, cols, (rows, trials), generator=generator, device=weights.device)
    chance = torch.rand(rows, trials, generator=generator, device=weights.device, dtype=weights.dtype)
    accepted = chance < weights.gather(1, proposed)
    key = torch.where(accepted, proposed, cols).int()  # rejected trials sort last
    sorted_key, order = key.sort(dim=1, stable=True)
    first = torch.ones_like(accepted)
    torch.ne(sorted_key[:, 1:], sorted_key[:, :-1], out=first[:, 1:])  # no earlier trial drew this column
    first &= sorted_key < cols
    new = torch.empty_like(accepted).scatter_(1, order, first)  # back in trial order
    rank = new.cumsum(dim=1)
    count = rank[:, -1].clone()
    slot = rank.sub_(1).masked_fill_(~new, num).clamp_(max=num)  # draw k goes to slot k; the rest to slot num
    drawn = proposed.new_full((rows, num + 1), -1).scatter_(1, slot, proposed)[:, :num]
    short = (count < num).nonzero().squeeze(1)
    if short.numel():
        drawn[short] = _complete(weights[short], drawn[short], count[short], num, generator)
    return drawn


def _complete(weights: torch.Tensor, prefix: torch.Tensor, count: torch.Tensor, num: int,
              generator: torch.Generator | None) -> torch.Tensor:
    """Append Gumbel-top-k draws among the columns not in ``prefix`` (its first ``count`` entries)."""
    weights = weights.clone()
    row, slot = (prefix >= 0).nonzero(as_tuple=True)
    weights[row, prefix[row, slot]] = 0
    more = gumbel_top_k(weights, num, generator)
    out = F.pad(prefix, (0, 1), value=-1)  # the last column takes the draws beyond ``num``
    slots = (count[:, None] + torch.arange(num, device=prefix.device)).clamp(max=num)
    return out.scatter_(1, slots, more)[:, :num]

"""Losses: the Mask2Former set criterion (L_sup, L_semi) and the pixel-wise contrastive loss L_pxl."""

from castlib.losses.contrastive_inputs import ContrastiveBatch, ContrastiveOptions
from castlib.losses.debiased_sampling import (
    EMBEDDINGS,
    SCORES,
    debiased_weights,
    gumbel_top_k,
    pseudo_probability_embedding,
    successive_sampling,
)
from castlib.losses.memory_bank import MemoryBank
from castlib.losses.pixel_contrastive import (
    ContrastiveResult,
    background_share,
    contrastive_options,
    false_negative_rate,
    pixel_contrastive_loss,
)
from castlib.losses.set_criterion import SetCriterion

__all__ = [
    "EMBEDDINGS",
    "SCORES",
    "ContrastiveBatch",
    "ContrastiveOptions",
    "ContrastiveResult",
    "MemoryBank",
    "SetCriterion",
    "background_share",
    "contrastive_options",
    "debiased_weights",
    "false_negative_rate",
    "gumbel_top_k",
    "pixel_contrastive_loss",
    "pseudo_probability_embedding",
    "successive_sampling",
]

"""The Mask2Former transformer decoder of the student (spec section 6): learnable queries, masked attention over
three scales of the pixel decoder, a class head ``Linear(hidden, C+1)`` and the mask-embedding MLP, with a
prediction after the query embeddings and after every layer (deep supervision).

``transformers``' ``Mask2FormerTransformerModule`` does the work; this wrapper is a ``Mask2FormerPreTrainedModel``
so that Mask2Former's own initialisation applies (pitfall M5), and it mends two traps of the library config:

- M1: ``Mask2FormerConfig.decoder_layers`` counts the prediction made before any layer, so ``layers`` masked
  attention layers need ``decoder_layers = layers + 1``;
- M2: the library reuses ``config.dropout`` as the layer-drop probability; supplementary Table 2's dropout 0.1 is
  meant for attention and feed-forward activations, so layer-drop is switched off and every layer always runs.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPreTrainedModel,
    Mask2FormerTransformerModule,
)


def mask2former_config(num_classes: int, hidden_dim: int, num_queries: int, layers: int, num_heads: int,
                       dim_feedforward: int, dropout: float) -> Mask2FormerConfig:
    """The library config for ``layers`` masked-attention layers (pitfall M1)."""
    return Mask2FormerConfig(num_labels=num_classes, hidden_dim=hidden_dim, mask_feature_size=hidden_dim,
                             num_queries=num_queries, decoder_layers=layers + 1, num_attention_heads=num_heads,
                             dim_feedforward=dim_feedforward, dropout=dropout, pre_norm=False)


class MaskedAttentionDecoder(Mask2FormerPreTrainedModel):
    """``forward(multi_scale, mask_features)`` -> one ``(class_logits [B,Q,C+1], mask_logits [B,Q,h,w])`` per
    prediction, the query-embedding prediction first and the last layer's prediction last."""

    def __init__(self, config: Mask2FormerConfig, in_features: int):
        super().__init__(config)
        self.transformer_module = Mask2FormerTransformerModule(in_features=in_features, config=config)
        self.transformer_module.decoder.layerdrop = 0.0  # pitfall M2: dropout must not skip layers
        self.class_predictor = nn.Linear(config.hidden_dim, config.num_labels + 1)
        self.post_init()

    def forward(self, multi_scale: list[torch.Tensor], mask_features: torch.Tensor
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = self.transformer_module(multi_scale_features=multi_scale, mask_features=mask_features)
        return [
            (self.class_predictor(hidden.transpose(0, 1)), masks)
            for hidden, masks in zip(out.intermediate_hidden_states, out.masks_queries_logits, strict=True)
        ]

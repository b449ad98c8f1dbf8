"""The student (spec section 6; DESIGN 4): a DINOv2-S encoder, the DPT pixel decoder and the Mask2Former
transformer decoder (100 queries, 9 layers), about 52M parameters at the paper's sizes. The Table 8 baselines are
the same class with another encoder from the backbone factory (ResNet-50, DINOv2-B/L).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from castlib.config import Config
from castlib.models.backbones import build_encoder
from castlib.models.base import SegmentationModel
from castlib.models.decoder import MaskedAttentionDecoder, mask2former_config
from castlib.models.geometry import crop_to_extent, normalize, pad_to_multiple
from castlib.models.output import SegmentationOutput
from castlib.models.pixel_decoder import DPTPixelDecoder
from castlib.models.projection import ProjectionHeads


class Student(SegmentationModel):
    """Encoder -> DPT pixel decoder -> masked-attention decoder, with L_pxl projection heads on the encoder's last
    feature map.

    ``forward(images [B,3,H,W] in [0,1])`` returns a :class:`SegmentationOutput`: class logits ``[B,Q,C+1]``, mask
    logits at the pixel decoder's finest stride covering exactly the image, the last encoder map (DINOv2: the
    block-12 patch tokens ``[B, 384, H/14, W/14]``) as ``features``, and the query-embedding prediction and the
    first 8 layers' predictions as ``aux`` (9 entries; the last layer's is the main output).
    """

    parts = {"encoder": ("encoder.",), "decoder": ("pixel_decoder.", "decoder."), "projection": ("projection.",)}
    encoder_parts = frozenset({"encoder"})

    def __init__(self, cfg: Config, which: str, backbone: str, num_classes: int, class_names: Sequence[str],
                 pretrained: bool, components: dict | None = None):
        model = cfg.model
        super().__init__(which, num_classes, model.to_dict(), class_names)
        self.backbone_name = backbone
        self.encoder = build_encoder(cfg, backbone, pretrained, (components or {}).get("encoder"))
        vit = self.encoder.kind == "dinov2"
        dec = model.decoder
        self.pixel_decoder = DPTPixelDecoder(
            self.encoder.channels, model.pixel_decoder.fusion_hidden_size, dec.hidden_dim,
            reassemble_channels=model.pixel_decoder.reassemble_channels if vit else None,
            reassemble_factors=model.pixel_decoder.reassemble_factors if vit else None,
        )
        config = mask2former_config(num_classes, dec.hidden_dim, dec.num_queries, dec.layers, dec.num_heads,
                                    dec.dim_feedforward, dec.dropout)
        self.decoder = MaskedAttentionDecoder(config, in_features=model.pixel_decoder.fusion_hidden_size)
        self.projection = ProjectionHeads(self.encoder.channels[-1], model.projection.hidden_dim,
                                          model.projection.dim)
        self.set_trainable(model.trainable, "model.trainable")

    def _encode(self, images: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int], tuple[int, int]]:
        x = pad_to_multiple(normalize(images), self.encoder.size_divisor)
        return self.encoder(x), tuple(images.shape[-2:]), tuple(x.shape[-2:])

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Only the encoder's last feature map ``[B, C, h, w]`` (the strong view's pass for L_pxl skips the
        decoders)."""
        features, extent, padded = self._encode(images)
        return crop_to_extent(features[-1], extent, padded)

    def forward(self, images: torch.Tensor) -> SegmentationOutput:
        features, extent, padded = self._encode(images)
        multi_scale, mask_features = self.pixel_decoder(features)
        predictions = [(c, crop_to_extent(m, extent, padded)) for c, m in self.decoder(multi_scale, mask_features)]
        (class_logits, mask_logits), earlier = predictions[-1], predictions[:-1]
        return SegmentationOutput(
            class_logits=class_logits,
            mask_logits=mask_logits,
            features=crop_to_extent(features[-1], extent, padded),
            aux=[{"class_logits": c, "mask_logits": m} for c, m in earlier],
        )

    def component_configs(self) -> dict[str, dict]:
        config = self.encoder.hf_config()
        return {} if config is None else {"encoder": config}

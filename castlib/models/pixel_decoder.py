"""The DPT pixel decoder of the student (spec section 6: "DINOv2-S + DPT-S + Mask2Former-style decoder").

Built from Depth Anything's DPT modules in ``transformers``: for a ViT encoder, a reassemble stage
(``DepthAnythingReassembleLayer``: 1x1 projection to ``reassemble_channels``, then x4 / x2 / x1 / x0.5
resampling, the prototype's res2..res5); for every encoder, 3x3 "scratch" convolutions to
``fusion_hidden_size`` channels and the RefineNet-style top-down ``DepthAnythingFeatureFusionStage``, which is
size-aware (odd patch grids keep their exact shapes, pitfall D3); the residual unit of its first layer, which
never receives an input, is removed so that every parameter trains. A CNN encoder's four stages are already a
pyramid and go straight to the scratch convolutions.

The four fused maps (coarse to fine) feed Mask2Former: the three coarsest are the masked-attention decoder's
multi-scale memory, the finest (stride 14/8 = 1.75 for DINOv2, 2 for ResNet) is the mask-feature map.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DepthAnythingConfig
from transformers.models.depth_anything.modeling_depth_anything import (
    DepthAnythingFeatureFusionStage,
    DepthAnythingReassembleLayer,
)


class DPTPixelDecoder(nn.Module):
    """``forward(features)`` -> ``(multi_scale [3 maps, coarse to fine], mask_features)``."""

    def __init__(
        self,
        in_channels: list[int],
        fusion_hidden_size: int,
        mask_dim: int,
        reassemble_channels: list[int] | None = None,
        reassemble_factors: list[float] | None = None,
    ):
        super().__init__()
        levels = list(reassemble_channels) if reassemble_channels else list(in_channels)
        factors = [int(f) if f >= 1 else f for f in reassemble_factors or [1] * len(levels)]  # x4 is a 4x4 kernel
        config = DepthAnythingConfig(
            reassemble_hidden_size=in_channels[0],
            neck_hidden_sizes=levels,
            reassemble_factors=factors,
            fusion_hidden_size=fusion_hidden_size,
        )
        self.reassemble = None
        if reassemble_channels:
            if len(set(in_channels)) != 1:
                raise ValueError(f"a reassemble stage needs equal encoder channels, got {in_channels}")
            self.reassemble = nn.ModuleList(
                DepthAnythingReassembleLayer(config, channels=c, factor=f)
                for c, f in zip(levels, config.reassemble_factors, strict=True)
            )
        self.convs = nn.ModuleList(nn.Conv2d(c, fusion_hidden_size, 3, padding=1, bias=False) for c in levels)
        self.fusion_stage = DepthAnythingFeatureFusionStage(config)
        del self.fusion_stage.layers[0].residual_layer1  # the coarsest level has no residual input: dead weights
        self.mask_projection = (
            nn.Identity() if mask_dim == fusion_hidden_size else nn.Conv2d(fusion_hidden_size, mask_dim, 1)
        )

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        if self.reassemble is not None:
            features = [layer(f) for layer, f in zip(self.reassemble, features, strict=True)]
        fused = self.fusion_stage([conv(f) for conv, f in zip(self.convs, features, strict=True)])
        return fused[:3], self.mask_projection(fused[3])

"""The backbone factory of supplementary Table 8: DINOv2-S/B/L (``transformers.Dinov2Backbone``) and ResNet-50
(torchvision), each returning a 4-level list of feature maps that the same pixel decoder consumes.

- DINOv2: the patch tokens of four blocks (``out_indices``: 3/6/9/12 for ViT-S/B, 5/12/18/24 for ViT-L as in
  Depth Anything), after the final LayerNorm, reshaped to ``[B, C, H/14, W/14]`` (all four at stride 14; the
  pixel decoder's DPT reassemble stage resamples them to strides 3.5 / 7 / 14 / 28).
- ResNet: the outputs of ``layer1..layer4`` (strides 4 / 8 / 16 / 32, 256..2048 channels) with frozen batch norm
  (detectron2's default for pretrained ResNets, which Guided Distillation's Mask2Former uses).

Every entry of ``model.backbones`` names its weights (a hub id, a torchvision weights name or a local path),
used when ``model.pretrained`` is true; otherwise the encoder is built from the entry's sizes with random weights.
The smoke and mini profiles shrink the sizes but keep the paper's order (DINOv2-S < ResNet-50 < -B < -L).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet50_Weights
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d
from transformers import Dinov2Backbone, Dinov2Config

from castlib.config import Config
from castlib.errors import ConfigError
from castlib.models.hub import PretrainedWeightsError, first_line, load_pretrained

RESNET50_BLOCKS = [3, 4, 6, 3]


class DinoV2Encoder(nn.Module):
    """DINOv2 ViT: ``forward(pixel_values)`` gives the patch-token maps of the ``out_indices`` blocks."""

    kind = "dinov2"

    def __init__(self, backbone: Dinov2Backbone):
        super().__init__()
        self.backbone = backbone
        config = backbone.config
        if not config.reshape_hidden_states or not config.apply_layernorm:
            raise ValueError("DinoV2Encoder needs reshape_hidden_states=True and apply_layernorm=True")
        self.channels = [config.hidden_size] * len(config.out_indices)
        self.size_divisor = config.patch_size

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        return list(self.backbone(pixel_values).feature_maps)

    def hf_config(self) -> dict:
        return self.backbone.config.to_dict()


class ResNetEncoder(nn.Module):
    """torchvision ResNet (bottleneck blocks): ``forward(pixel_values)`` gives the maps of ``layer1..layer4``."""

    kind = "resnet"
    size_divisor = 32

    def __init__(self, resnet: ResNet):
        super().__init__()
        self.channels = [getattr(resnet, f"layer{i}")[-1].conv3.out_channels for i in range(1, 5)]
        self.body = create_feature_extractor(resnet, {f"layer{i}": f"res{i + 1}" for i in range(1, 5)})

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(pixel_values).values())

    def hf_config(self) -> None:
        return None


def _dinov2(name: str, spec: Config, pretrained: bool, saved: dict | None) -> DinoV2Encoder:
    key = f"model.backbones.{name}"
    layout = {"out_indices": list(spec.out_indices), "reshape_hidden_states": True, "apply_layernorm": True}
    if saved is not None:
        return DinoV2Encoder(Dinov2Backbone(Dinov2Config.from_dict(saved)))
    if pretrained:
        backbone = load_pretrained(Dinov2Backbone.from_pretrained, spec.weights, what=f"{name} encoder",
                                   key=f"{key}.weights", **layout)
        config = backbone.config
        found = {"hidden_size": config.hidden_size, "num_layers": config.num_hidden_layers,
                 "num_heads": config.num_attention_heads}
        for field, value in found.items():
            if spec[field] != value:
                raise ConfigError(None, f"{key}.{field}",
                                  f"the weights '{spec.weights}' have {field} {value}, the config says {spec[field]}")
        return DinoV2Encoder(backbone)
    config = Dinov2Config(hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
                          num_attention_heads=spec.num_heads, patch_size=14, image_size=518, **layout)
    return DinoV2Encoder(Dinov2Backbone(config))


def _resnet_state_dict(name: str, weights: str) -> dict:
    key = f"model.backbones.{name}.weights"
    if Path(weights).suffix in (".pth", ".pt"):
        if not Path(weights).is_file():
            raise PretrainedWeightsError(weights, f"{name} encoder", key, "no such file")
        return torch.load(weights, map_location="cpu", weights_only=True)
    if weights not in ResNet50_Weights.__members__:
        raise ConfigError(None, key, f"'{weights}' is neither a .pth file nor one of torchvision's ResNet50_Weights "
                                     f"({', '.join(ResNet50_Weights.__members__)})")
    try:
        return ResNet50_Weights[weights].get_state_dict(progress=False)
    except OSError as e:  # urllib's URLError is an OSError
        fetch = f"import torchvision; torchvision.models.ResNet50_Weights.{weights}.get_state_dict()"
        download = f"`python -c \"{fetch}\"` (it fills torch's hub cache, ~/.cache/torch/hub/checkpoints)"
        raise PretrainedWeightsError(weights, f"{name} encoder", key, first_line(e), download) from None


def _resnet(name: str, spec: Config, pretrained: bool) -> ResNetEncoder:
    resnet = ResNet(Bottleneck, list(spec.blocks), width_per_group=spec.width_per_group, norm_layer=FrozenBatchNorm2d)
    if pretrained:
        if list(spec.blocks) != RESNET50_BLOCKS or spec.width_per_group != 64:
            raise ConfigError(None, f"model.backbones.{name}",
                              f"pretrained ResNet-50 weights need blocks {RESNET50_BLOCKS} and width_per_group 64")
        resnet.load_state_dict(_resnet_state_dict(name, spec.weights))
    return ResNetEncoder(resnet)


def build_encoder(cfg: Config, name: str, pretrained: bool, saved: dict | None = None) -> DinoV2Encoder | ResNetEncoder:
    """The encoder ``model.backbones.<name>``: pretrained weights when ``pretrained``, else random weights from the
    entry's sizes; ``saved`` (a checkpoint's recorded HF config) rebuilds exactly that architecture."""
    if name not in cfg.model.backbones:
        raise ConfigError(None, "model.backbones", f"no backbone '{name}' (known: {', '.join(cfg.model.backbones)})")
    spec = cfg.model.backbones[name]
    if spec.kind == "dinov2":
        return _dinov2(name, spec, pretrained, saved)
    if spec.kind == "resnet":
        return _resnet(name, spec, pretrained and saved is None)
    raise ConfigError(None, f"model.backbones.{name}.kind", f"expected dinov2 or resnet, got {spec.kind!r}")

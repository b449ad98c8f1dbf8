"""SAM2 as the teacher's segmenter (spec section 5.1): one mask per box prompt, and its fine-tuning loss.

Pitfalls of ``transformers``' SAM2 that shape the teacher: the model takes square S x S inputs (S1; images are
resized to S x S, which keeps the image extent, and boxes scaled per axis), one mask per box needs
``multimask_output=False`` (S3), and every image of a batch needs the same number of boxes (S5: the teacher always
prompts with its K top boxes; the loss pads ground-truth boxes and masks the padding out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import (
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2MaskDecoderConfig,
    Sam2PromptEncoderConfig,
    Sam2VisionConfig,
)
from transformers.models.mask2former.modeling_mask2former import dice_loss, sigmoid_cross_entropy_loss

from castlib.config import Config
from castlib.global_batch import global_normaliser


def sam2_config(spec: Config) -> Sam2Config:
    """A SAM2 image model from ``model.teacher.segmenter`` sizes (random weights; smoke and mini profiles). The
    Hiera stages' widths double; the FPN, prompt encoder and mask decoder share one width (pitfall S2)."""
    size = spec.image_size
    dims = [spec.hiera_width * 2**i for i in range(len(spec.blocks_per_stage))]
    backbone = Sam2HieraDetConfig(
        hidden_size=spec.hiera_width, num_attention_heads=spec.hiera_heads[0], image_size=[size, size],
        blocks_per_stage=list(spec.blocks_per_stage), embed_dim_per_stage=dims,
        num_attention_heads_per_stage=list(spec.hiera_heads), window_size_per_stage=list(spec.window_sizes),
        global_attention_blocks=list(spec.global_attention_blocks),
    )
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=dims[::-1],
                              backbone_feature_sizes=[[size // s, size // s] for s in (4, 8, 16)],
                              fpn_hidden_size=spec.hidden_size)
    return Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=spec.hidden_size, image_size=size, patch_size=16),
        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=spec.hidden_size, mlp_dim=spec.mlp_dim,
                                                  num_attention_heads=spec.decoder_heads,
                                                  iou_head_hidden_dim=spec.hidden_size),
    )


def squash(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` to ``size x size`` (SAM2's input, pitfall S1); bilinear, antialiased when shrinking."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def mask_loss(mask_logits: torch.Tensor, iou_scores: torch.Tensor, object_logits: torch.Tensor,
              targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """SAM2's fine-tuning loss for N box prompts: per-pixel BCE and dice on the mask logits ``[N, h, w]`` against
    boolean ``targets`` ``[N, h, w]``, MSE between the predicted IoU ``[N]`` and the IoU of the binarised mask,
    and BCE of the object score ``[N]`` against "the target is non-empty"."""
    labels = targets.float()
    count = global_normaliser(torch.tensor(float(len(labels)), device=mask_logits.device))  # DESIGN 9
    with torch.no_grad():
        predicted = mask_logits > 0
        union = (predicted | targets).flatten(1).sum(-1).clamp_min(1)
        iou = (predicted & targets).flatten(1).sum(-1) / union
    return {
        "loss_mask_bce": sigmoid_cross_entropy_loss(mask_logits.flatten(1), labels.flatten(1), count),
        "loss_mask_dice": dice_loss(mask_logits.flatten(1), labels.flatten(1), count),
        "loss_iou": F.mse_loss(iou_scores, iou.to(iou_scores.dtype), reduction="sum") / count,
        "loss_object": F.binary_cross_entropy_with_logits(
            object_logits, labels.flatten(1).any(-1).to(object_logits.dtype), reduction="sum") / count,
    }

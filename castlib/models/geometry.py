"""Image geometry every model shares: pixel normalisation, padding to the encoder's stride, and
resampling predictions back to the unpadded image extent.

Models take images as float in [0, 1] of any size. An encoder with patches (DINOv2: 14 pixels) or
strides (ResNet: 32) needs a multiple of that size, so the normalised image is padded at the bottom
and right with zeros (the mean colour, as detectron2's Mask2Former pads). Predictions made on the
padded grid are then resampled so that they cover exactly ``[0, H) x [0, W)`` of the input, which is
what the output contract (``SegmentationOutput``) promises.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std normalisation of ``[B, 3, H, W]`` images in [0, 1] (DINOv2, ResNet, Grounding DINO and
    SAM2 were all pre-trained with it)."""
    mean = images.new_tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad ``[B, C, H, W]`` at the bottom and right so that H and W are multiples of ``multiple``."""
    height, width = images.shape[-2:]
    pad_h = math.ceil(height / multiple) * multiple - height
    pad_w = math.ceil(width / multiple) * multiple - width
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h))


def crop_to_extent(maps: torch.Tensor, extent: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
    """Resample ``maps`` ``[B, C, h, w]``, which cover a padded image of size ``padded`` = (Hp, Wp), so that they
    cover exactly the image extent ``extent`` = (H, W) at the same resolution.

    The extent ends inside a cell of the padded grid when H is not a multiple of the grid's stride, so a crop of
    whole cells would cover slightly more than the image. Instead the box ``[0, w*W/Wp) x [0, h*H/Hp)`` (in cell
    units) is resampled bilinearly by ``torchvision.ops.roi_align`` onto ``round(h*H/Hp) x round(w*W/Wp)`` cells.
    """
    if tuple(extent) == tuple(padded):
        return maps
    batch, _, h, w = maps.shape
    box_h, box_w = h * extent[0] / padded[0], w * extent[1] / padded[1]
    boxes = maps.new_zeros(batch, 5)
    boxes[:, 0] = torch.arange(batch, device=maps.device, dtype=maps.dtype)
    boxes[:, 3], boxes[:, 4] = box_w, box_h
    size = (max(1, round(box_h)), max(1, round(box_w)))
    return roi_align(maps, boxes, size, spatial_scale=1.0, sampling_ratio=2, aligned=True)

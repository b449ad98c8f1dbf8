"""Image geometry every model shares: pixel normalisation, padding to the encoder's stride, and
resampling predictions back to the unpadded image extent.

Models take images as float in [0, 1] of any size (where the data padded them, it used the
normalisation mean, :data:`castlib.data.sample.PAD_COLOUR`). An encoder with patches (DINOv2: 14
pixels) or strides (ResNet: 32) needs a multiple of that size, so the normalised image is padded at
the bottom and right with zeros (the mean colour again, as detectron2's Mask2Former pads): one
padding convention. Predictions made on the padded grid are then resampled so that they cover
exactly ``[0, H) x [0, W)`` of the input, which is what the output contract (``SegmentationOutput``)
promises. :func:`resample_into_frame` carries the geometric strong view's embeddings into the weak
view's frame (L_pxl).
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


def resample_into_frame(maps: torch.Tensor, boxes: torch.Tensor, frame: tuple[int, int],
                        size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample ``maps`` ``[B, C, hs, ws]``, each covering the box ``boxes[b]`` = (top, left, height, width)
    (pixels) of a frame of ``frame`` = (H, W) pixels, onto the frame's grid of ``size`` = (h, w) cells.

    The geometric strong view of L_pxl: its embedding map covers a resized crop of the weak view, and the
    positive of weak cell (i, j) is the strong map read bilinearly at the cell's centre
    ``((i + 0.5) H / h, (j + 0.5) W / w)``. Returns the resampled maps ``[B, C, h, w]`` and ``inside``
    ``[B, h, w]`` bool, the cells whose centre lies in the box (the others have no positive).
    """
    height, width = size
    rows = (torch.arange(height, device=maps.device, dtype=maps.dtype) + 0.5) * frame[0] / height
    cols = (torch.arange(width, device=maps.device, dtype=maps.dtype) + 0.5) * frame[1] / width
    boxes = boxes.to(maps)
    top, left, box_h, box_w = (boxes[:, k, None] for k in range(4))
    y = 2 * (rows[None] - top) / box_h - 1  # [B, h]: -1 .. 1 across the box (align_corners=False)
    x = 2 * (cols[None] - left) / box_w - 1  # [B, w]
    grid = torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), dim=-1)  # [B, h, w, (x, y)]
    resampled = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = (grid.abs() <= 1).all(-1)
    return resampled, inside

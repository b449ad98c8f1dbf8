"""The one sample structure both datasets return, and the batch the training loop consumes.

Padding has one convention everywhere: images are padded (bottom/right) with ``PAD_COLOUR``, the
ImageNet mean that :func:`castlib.models.geometry.normalize` subtracts, so a padded pixel is 0 after
normalisation, exactly as the models pad to their stride (detectron2's Mask2Former pads so too); masks
are padded with False, and ``valid`` marks the real pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from transformers.image_utils import IMAGENET_DEFAULT_MEAN

PAD_COLOUR = tuple(IMAGENET_DEFAULT_MEAN)  # in [0, 1]: 0 after normalisation


@dataclass
class InstanceSample:
    """An image and its instances.

    ``image`` is ``[3, H, W]`` (uint8 as read, float in ``[0, 1]`` after a view transform);
    ``masks`` is ``[N, H, W]`` bool, one per instance; ``labels`` is ``[N]`` int64 in ``0..C-1``;
    ``strong`` is the strongly augmented view of the same pixels when a training view made one;
    ``valid`` ``[H, W]`` bool marks the image's real pixels when a view padded it (None: all are);
    ``strong_box`` ``[4]`` (top, left, height, width), in pixels of ``image``, is the region the strong
    view shows when it is a resized crop (``augment.strong.random_resized_crop``), else None.
    """

    image: tv_tensors.Image
    masks: tv_tensors.Mask
    labels: torch.Tensor
    image_id: str
    path: str
    strong: tv_tensors.Image | None = None
    valid: torch.Tensor | None = None
    strong_box: torch.Tensor | None = None

    def replace(self, **changes) -> InstanceSample:
        return replace(self, **changes)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])


@dataclass
class Batch:
    """Samples padded to one size: ``images [B, 3, H, W]``, ``valid [B, H, W]`` marks real pixels.

    Masks stay per image (``[N_i, H, W]``, padded with False) because instance counts differ;
    ``strong_box [B, 4]`` holds the samples' ``strong_box`` when they all have one.
    """

    images: torch.Tensor
    valid: torch.Tensor
    masks: list[torch.Tensor]
    labels: list[torch.Tensor]
    image_ids: list[str]
    paths: list[str]
    sizes: list[tuple[int, int]]
    strong: torch.Tensor | None = None
    strong_box: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(
            self,
            images=move(self.images),
            valid=move(self.valid),
            masks=[move(m) for m in self.masks],
            labels=[move(lab) for lab in self.labels],
            strong=None if self.strong is None else move(self.strong),
            strong_box=None if self.strong_box is None else move(self.strong_box),
        )


def _pad_to(t: torch.Tensor, height: int, width: int, value: float = 0) -> torch.Tensor:
    return F.pad(t, (0, width - t.shape[-1], 0, height - t.shape[-2]), value=value)


def _pad_image(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A float image padded with ``PAD_COLOUR`` (uint8 images with its 8-bit value)."""
    image = image.as_subclass(torch.Tensor)
    fills = [c if image.is_floating_point() else round(255 * c) for c in PAD_COLOUR]
    return torch.stack([_pad_to(channel, height, width, fill) for channel, fill in zip(image, fills, strict=True)])


def collate(samples: list[InstanceSample]) -> Batch:
    """Pad images (bottom/right) to the largest in the batch; keep instance lists per image."""
    height = max(s.image.shape[-2] for s in samples)
    width = max(s.image.shape[-1] for s in samples)
    images = torch.stack([_pad_image(s.image, height, width) for s in samples])
    valid = torch.zeros(len(samples), height, width, dtype=torch.bool)
    for i, s in enumerate(samples):
        valid[i, : s.image.shape[-2], : s.image.shape[-1]] = True if s.valid is None else s.valid
    strong = None
    if all(s.strong is not None for s in samples):
        strong = torch.stack([_pad_image(s.strong, height, width) for s in samples])
    boxes = [s.strong_box for s in samples]
    strong_box = torch.stack(boxes) if all(b is not None for b in boxes) else None
    return Batch(
        images=images,
        valid=valid,
        masks=[_pad_to(s.masks.as_subclass(torch.Tensor), height, width, False) for s in samples],
        labels=[s.labels for s in samples],
        image_ids=[s.image_id for s in samples],
        paths=[s.path for s in samples],
        sizes=[s.size for s in samples],
        strong=strong,
        strong_box=strong_box,
    )

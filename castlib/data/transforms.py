"""Joint image/mask augmentation with ``torchvision.transforms.v2`` (DESIGN section 5).

The weak view is geometric: random resize (shorter side drawn from a range), random crop (padded
with ``PAD_COLOUR`` when the image is smaller, the one padding convention of
:mod:`castlib.data.sample`) and horizontal flip, applied to the image, its masks and its ``valid``
mask together, so the padded pixels stay known (L_pxl leaves them out).
Supplementary Table 2 lists "Weak: flip, resize; Strong: random resized crop, jitter, grayscale,
blur". By default the kit's strong view departs from it, as the authors' prototype code does: it is
the weak view plus photometric transforms only (colour jitter 0.4/0.4/0.4/0.1, grayscale p 0.2,
Gaussian blur k5 sigma 0.1-2), so pixel p of one view is pixel p of the other, the positive pair of
L_pxl. With ``augment.strong.random_resized_crop.enabled`` the strong view is first a random resized
crop of the weak view (back to its size); the sample records the crop box (``strong_box``) and L_pxl
finds each weak pixel's positive through it
(:func:`castlib.models.geometry.resample_into_frame`), leaving out anchors outside the crop.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torchvision import tv_tensors
from torchvision.transforms import RandomResizedCrop, v2

from castlib.data.sample import PAD_COLOUR, InstanceSample


def _drop_empty(masks: torch.Tensor, labels: torch.Tensor) -> tuple[tv_tensors.Mask, torch.Tensor]:
    masks = masks.as_subclass(torch.Tensor).bool()
    keep = masks.flatten(1).any(1)
    return tv_tensors.Mask(masks[keep]), labels[keep]


def _float(image: torch.Tensor) -> tv_tensors.Image:
    return tv_tensors.Image(v2.functional.to_dtype(image, torch.float32, scale=True))


def _unit_range(image: torch.Tensor) -> tv_tensors.Image:
    """Clamped to [0, 1]: a float resize's or blur's rounding can step past 1 (seen: 1.0000002)."""
    return tv_tensors.Image(image.as_subclass(torch.Tensor).clamp(0.0, 1.0))


def geometric_transform(crop: tuple[int, int], short_side: tuple[int, int], hflip: float) -> v2.Transform:
    """Random resize of the shorter side to ``[short_side[0], short_side[1]]``, crop, flip."""
    return v2.Compose([
        v2.RandomResize(short_side[0], short_side[1] + 1, antialias=True),
        v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Image: list(PAD_COLOUR), tv_tensors.Mask: 0}),
        v2.RandomHorizontalFlip(hflip),
    ])


def photometric_transform(options: Mapping) -> v2.Transform:
    """Colour jitter, random grayscale and Gaussian blur: pixel-wise or local, never geometric."""
    jitter = v2.ColorJitter(options["brightness"], options["contrast"], options["saturation"], options["hue"])
    blur = v2.GaussianBlur(options["blur_kernel"], tuple(options["blur_sigma"]))
    return v2.Compose([
        v2.RandomApply([jitter], p=options["jitter_p"]),
        v2.RandomGrayscale(options["grayscale"]),
        v2.RandomApply([blur], p=options["blur_p"]),
    ])


class TrainViews:
    """Weak view of image and masks, plus (``strong=True``) the strong view of the same pixels."""

    def __init__(self, crop, short_side, hflip: float, strong_options: Mapping | None):
        self.geometric = geometric_transform(tuple(crop), tuple(short_side), hflip)
        self.photometric = photometric_transform(strong_options) if strong_options is not None else None
        crop_options = (strong_options or {}).get("random_resized_crop")
        self.strong_crop = crop_options if crop_options and crop_options["enabled"] else None

    def strong_view(self, image: torch.Tensor) -> tuple[tv_tensors.Image, torch.Tensor | None]:
        """The strong view of the weak ``image`` and, with the resized crop, its box (top, left, height, width)."""
        if self.strong_crop is None:
            return _unit_range(self.photometric(image)), None
        top, left, height, width = RandomResizedCrop.get_params(image, list(self.strong_crop["scale"]),
                                                                list(self.strong_crop["ratio"]))
        cropped = v2.functional.resized_crop(image, top, left, height, width, list(image.shape[-2:]), antialias=True)
        return _unit_range(self.photometric(cropped)), torch.tensor([top, left, height, width], dtype=torch.float32)

    def __call__(self, sample: InstanceSample) -> InstanceSample:
        everywhere = torch.ones(1, *sample.size, dtype=torch.uint8)
        image, masks = self.geometric(_float(sample.image),
                                      tv_tensors.Mask(torch.cat([sample.masks.to(torch.uint8), everywhere])))
        image = _unit_range(image)
        valid = masks[-1].as_subclass(torch.Tensor).bool()
        masks, labels = _drop_empty(masks[:-1], sample.labels)
        strong, box = self.strong_view(image) if self.photometric is not None else (None, None)
        return sample.replace(image=image, masks=masks, labels=labels, strong=strong, valid=valid, strong_box=box)


class EvalView:
    """No augmentation: the image as float in ``[0, 1]``, optionally resized (shorter side)."""

    def __init__(self, short_side: int | None = None):
        self.resize = v2.Resize(short_side, antialias=True) if short_side else None

    def __call__(self, sample: InstanceSample) -> InstanceSample:
        image, masks = sample.image, sample.masks
        if self.resize is not None:
            image, masks = self.resize(image, tv_tensors.Mask(masks.to(torch.uint8)))
            masks = tv_tensors.Mask(masks.bool())
        return sample.replace(image=_float(image), masks=masks)


def train_views(augment: Mapping, strong: bool = True) -> TrainViews:
    """The training views from the ``augment`` section of a config."""
    return TrainViews(augment["crop"], augment["short_side"], augment["hflip"],
                      augment["strong"] if strong else None)

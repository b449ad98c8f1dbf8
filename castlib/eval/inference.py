"""Standard Mask2Former instance inference (spec section 6 "Inference"), for any model that returns a
:class:`~castlib.models.output.SegmentationOutput` (student, teacher, baselines).

Per image: softmax over the ``C+1`` classes, drop "no object", take the ``top_k`` highest-scoring
(query, class) pairs of the ``Q x C`` scores; the mask of a pair is its query's mask logits,
bilinearly upsampled to the (padded) input extent, cropped to the image's true size and resized to
its output size, then binarised at logit > 0; its score is the class probability times the mean
sigmoid mask probability inside the binary mask (Cheng et al., Mask2Former, ``instance_inference``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from castlib.models.output import SegmentationOutput


@dataclass
class Prediction:
    """The instances predicted for one image, at the image's own size, highest score first.

    ``masks`` ``[N, H, W]`` bool, ``labels`` ``[N]`` int64 contiguous in ``0..C-1``, ``scores`` ``[N]`` float.
    """

    masks: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.masks.shape[-2]), int(self.masks.shape[-1])


def model_device(model: nn.Module) -> torch.device:
    """Where a model's parameters live (CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def instance_inference(
    output: SegmentationOutput,
    image_sizes: Sequence[tuple[int, int]],
    top_k: int = 100,
    input_size: tuple[int, int] | None = None,
    output_sizes: Sequence[tuple[int, int]] | None = None,
) -> list[Prediction]:
    """Mask2Former instance inference for each image of a batch.

    ``image_sizes`` are the true ``(H, W)`` of the images inside the batch. ``input_size`` is the
    extent the mask logits cover: the padded batch size (``Batch.images.shape[-2:]``); by default
    the largest height and width of ``image_sizes``, which is how :func:`castlib.data.sample.collate`
    pads (bottom/right). ``output_sizes`` are the sizes to return masks at (e.g. the ground truth's
    size when the evaluation view resized the image); by default ``image_sizes``.

    Pairs whose binary mask is empty are dropped: their score is 0 and they cannot match anything.
    """
    batch = output.class_logits.shape[0]
    if len(image_sizes) != batch:
        raise ValueError(f"{len(image_sizes)} image sizes for a batch of {batch} outputs")
    output_sizes = image_sizes if output_sizes is None else output_sizes
    if len(output_sizes) != batch:
        raise ValueError(f"{len(output_sizes)} output sizes for a batch of {batch} outputs")
    if input_size is None:
        input_size = (max(h for h, _ in image_sizes), max(w for _, w in image_sizes))
    return [
        _image_inference(output.class_logits[i], output.mask_logits[i], top_k, input_size, image_sizes[i],
                         output_sizes[i])
        for i in range(batch)
    ]


def _image_inference(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    top_k: int,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
) -> Prediction:
    num_classes = class_logits.shape[-1] - 1
    class_probs = class_logits.float().softmax(-1)[:, :num_classes]
    pair_scores, pairs = class_probs.flatten().topk(min(top_k, class_probs.numel()))
    labels = pairs % num_classes
    # Upsample each selected query once, even when it is selected with several classes.
    queries, which = (pairs // num_classes).unique(return_inverse=True)
    logits = _resize(mask_logits[queries].float(), input_size)
    logits = _resize(logits[:, : image_size[0], : image_size[1]], output_size)[which]
    masks = logits > 0
    mask_scores = (logits.sigmoid() * masks).flatten(1).sum(1) / (masks.flatten(1).sum(1) + 1e-6)
    scores = pair_scores * mask_scores
    keep = masks.flatten(1).any(1)
    order = scores[keep].argsort(descending=True)
    return Prediction(masks=masks[keep][order].cpu(), labels=labels[keep][order].cpu(),
                      scores=scores[keep][order].cpu())


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[N, h, w]`` maps (``align_corners=False``, as Mask2Former); a no-op at the same size."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[None], size=tuple(size), mode="bilinear", align_corners=False)[0]

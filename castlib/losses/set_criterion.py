"""The Mask2Former set criterion behind L_sup and L_semi (spec 7.1; supplementary Table 2).

Per image, predictions and targets are paired by Hungarian matching on class + mask BCE + dice
costs (scipy), then three terms are computed: class cross-entropy over every query (unmatched
queries target "no object", weighted 0.1), and sigmoid BCE and dice between matched masks on
points sampled by uncertainty (12544 points, oversample 3, importance 0.75), so targets at image
resolution and predictions at a lower one compare in normalised coordinates. The same is done for
each earlier decoder layer (deep supervision, each layer matched on its own).

Matching and terms are transformers' ``Mask2FormerLoss``. It returns the terms unweighted
(research note M3); :class:`SetCriterion` weights them (class 2, mask 5, dice 5), sums them,
runs in float32 (scipy cannot take half precision; Mask2Former also computes its loss in float32)
and averages the mask count over ``torch.distributed`` ranks as Mask2Former's criterion does.
Point sampling and matching draw from torch's global generator: seed it for determinism.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

from castlib.models.output import SegmentationOutput

_LAYER_SUFFIX = re.compile(r"_\d+$")


class _Mask2FormerLoss(Mask2FormerLoss):
    """transformers' loss with the mask count averaged over ``torch.distributed`` ranks.

    The library averages it only under ``accelerate``; the kit trains under ``torchrun``.
    """

    def get_num_masks(self, class_labels: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
        num_masks = torch.as_tensor(float(sum(len(c) for c in class_labels)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            num_masks = num_masks / dist.get_world_size()
        return num_masks.clamp(min=1)


class SetCriterion(nn.Module):
    """L_sup / L_semi: ``criterion(output, masks, labels) -> {term: weighted value, ..., "loss": total}``.

    Keys: ``loss_cross_entropy``, ``loss_mask``, ``loss_dice`` for the last decoder layer and the
    same with a suffix ``_i`` for ``output.aux[i]``; each already multiplied by its weight, and
    ``loss`` their sum. ``masks[i]`` is ``[N_i, H, W]`` (bool or float) at the batch's image size,
    ``labels[i]`` ``[N_i]`` in ``0..C-1``; an image with no target pushes every query to "no object".
    The weights and point-sampling sizes are the config's ``loss`` keys (:meth:`from_config`).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        class_weight: float,
        mask_weight: float,
        dice_weight: float,
        no_object_weight: float,
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.weights = {"loss_cross_entropy": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        config = Mask2FormerConfig(
            num_labels=num_classes,
            class_weight=class_weight,
            mask_weight=mask_weight,
            dice_weight=dice_weight,
            no_object_weight=no_object_weight,
            train_num_points=num_points,
            oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio,
        )
        self.mask2former = _Mask2FormerLoss(config, weight_dict=self.weights)

    @classmethod
    def from_config(cls, section: Mapping, num_classes: int) -> SetCriterion:
        """Build from the config's ``loss`` section (``configs/defaults.yaml``)."""
        return cls(
            num_classes,
            class_weight=section["class_weight"],
            mask_weight=section["mask_weight"],
            dice_weight=section["dice_weight"],
            no_object_weight=section["no_object_weight"],
            num_points=section["num_points"],
            oversample_ratio=section["oversample_ratio"],
            importance_sample_ratio=section["importance_sample_ratio"],
        )

    def forward(
        self, output: SegmentationOutput, masks: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        device = output.class_logits.device
        self._check(output, masks, labels)
        self.mask2former.to(device)  # its no-object class weight follows the predictions
        targets = [m.to(device=device, dtype=torch.float32) for m in masks]
        classes = [lab.to(device=device, dtype=torch.int64) for lab in labels]
        aux = [
            {"masks_queries_logits": a["mask_logits"].float(), "class_queries_logits": a["class_logits"].float()}
            for a in output.aux
        ]
        with torch.autocast(device_type=device.type, enabled=False):
            terms = self.mask2former(
                output.mask_logits.float(), output.class_logits.float(), targets, classes,
                auxiliary_predictions=aux or None,
            )
        weighted = {name: self.weights[_LAYER_SUFFIX.sub("", name)] * value for name, value in terms.items()}
        weighted["loss"] = torch.stack(list(weighted.values())).sum()
        return weighted

    def _check(self, output: SegmentationOutput, masks: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]):
        batch = output.class_logits.shape[0]
        if output.num_classes != self.num_classes:
            raise ValueError(f"class_logits have {output.num_classes} classes + no object, "
                             f"the criterion was built for {self.num_classes}")
        if len(masks) != batch or len(labels) != batch:
            raise ValueError(f"expected {batch} mask and label tensors (one per image), "
                             f"got {len(masks)} and {len(labels)}")
        sizes = {tuple(m.shape[-2:]) for m in masks}
        if len(sizes) > 1:
            raise ValueError(f"target masks must share the batch's image size, got sizes {sorted(sizes)}")
        for i, (m, lab) in enumerate(zip(masks, labels, strict=True)):
            if m.dim() != 3 or lab.dim() != 1 or m.shape[0] != lab.shape[0]:
                raise ValueError(f"image {i}: expected masks [N, H, W] and labels [N], "
                                 f"got {tuple(m.shape)} and {tuple(lab.shape)}")
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= self.num_classes):
                raise ValueError(f"image {i}: labels must lie in 0..{self.num_classes - 1}, got {lab.tolist()}")

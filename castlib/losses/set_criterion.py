"""The Mask2Former set criterion behind L_sup and L_semi (spec 7.1; supplementary Table 2).

Per image, predictions and targets are paired by Hungarian matching on class + mask BCE + dice
costs (scipy), then three terms are computed: class cross-entropy over every query (unmatched
queries target "no object", weighted 0.1), and sigmoid BCE and dice between matched masks on
points sampled by uncertainty (12544 points, oversample 3, importance 0.75), so targets at image
resolution and predictions at a lower one compare in normalised coordinates. The same is done for
each earlier decoder layer (deep supervision, each layer matched on its own).

The computation is transformers' ``Mask2FormerLoss`` (research note M3) with its per-layer,
per-image loops batched: every layer's costs of an image come from one sampling of the targets and
one batched matrix product, and every layer's point losses from one sampling pass. Its random
points are drawn first, in the library's order (per layer: each image's matching points, then the
oversampled and the random loss points), so under the same seed the loss equals the library's
(``tests/test_losses_set_criterion.py``). :class:`SetCriterion` weights the terms (class 2, mask 5,
dice 5), sums them, runs in float32 (scipy cannot take half precision; Mask2Former also computes
its loss in float32). Its two normalisers, the mask count and the summed weights of the class
cross-entropy's targets, come from :func:`castlib.global_batch.global_normaliser`: under DDP the
processes' weighted losses add up to the loss of the whole global batch (with micro-batches, of each
round), as Mask2Former's all-reduced mask count makes it for even shares (transformers averages it only
under ``accelerate``).
Point sampling draws from torch's global generator: seed it for determinism.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from castlib.global_batch import global_normaliser
from castlib.models.output import SegmentationOutput

_LAYER_SUFFIX = re.compile(r"_\d+$")


def _sample(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values ``[N, C, P]`` of ``maps [N, C, H, W]`` at ``points [N, P, 2]`` in [0, 1] (x, y)."""
    return F.grid_sample(maps, 2.0 * points[:, :, None] - 1.0, align_corners=False)[..., 0]


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
        self.num_points = num_points
        self.num_oversampled = int(num_points * oversample_ratio)
        self.num_uncertain = int(importance_sample_ratio * num_points)
        class_weights = torch.ones(num_classes + 1)
        class_weights[-1] = no_object_weight
        self.register_buffer("class_weights", class_weights, persistent=False)

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
        targets = [m.to(device=device, dtype=torch.float32) for m in masks]
        classes = [lab.to(device=device, dtype=torch.int64) for lab in labels]
        with torch.autocast(device_type=device.type, enabled=False):
            mask_logits = torch.stack([output.mask_logits] + [a["mask_logits"] for a in output.aux]).float()
            class_logits = torch.stack([output.class_logits] + [a["class_logits"] for a in output.aux]).float()
            points = self._draw_points(mask_logits.shape, classes, device)
            matches = self._match(mask_logits, class_logits, targets, classes, points["match"])
            num_masks = global_normaliser(torch.as_tensor(float(sum(len(c) for c in classes)), device=device))
            terms = self._terms(mask_logits, class_logits, targets, classes, matches, points, num_masks)
        weighted = {name: self.weights[_LAYER_SUFFIX.sub("", name)] * value for name, value in terms.items()}
        weighted["loss"] = torch.stack(list(weighted.values())).sum()
        return weighted

    def _draw_points(self, shape: torch.Size, classes: Sequence[torch.Tensor], device: torch.device) -> dict:
        """Every random point of the step, drawn in transformers' order: per layer (last first, then the aux
        layers), each image's matching points ``[P, 2]``, then the matched masks' oversampled ``[M, 3P, 2]`` and
        random ``[M, P - 0.75 P, 2]`` loss points."""
        layers, batch, queries = shape[:3]
        matched = sum(min(queries, len(c)) for c in classes)
        num_random = self.num_points - self.num_uncertain
        drawn: dict[str, list] = {"match": [], "oversampled": [], "random": []}
        for _ in range(layers):
            drawn["match"].append(torch.cat([torch.rand(1, self.num_points, 2, device=device) for _ in range(batch)]))
            drawn["oversampled"].append(torch.rand(matched, self.num_oversampled, 2, device=device))
            if num_random > 0:
                drawn["random"].append(torch.rand(matched, num_random, 2, device=device))
        return {"match": torch.stack(drawn["match"]), "oversampled": torch.cat(drawn["oversampled"]),
                "random": torch.cat(drawn["random"]) if drawn["random"] else None}

    @torch.no_grad()
    def _match(self, mask_logits: torch.Tensor, class_logits: torch.Tensor, targets: Sequence[torch.Tensor],
               classes: Sequence[torch.Tensor], points: torch.Tensor) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Hungarian matching of every layer (``mask_logits [L, B, Q, h, w]``) on class + BCE + dice costs at the
        matching ``points [L, B, P, 2]``: per layer, per image, (query indices, target indices)."""
        layers, batch = mask_logits.shape[:2]
        per_image = []
        for i in range(batch):
            n = len(classes[i])
            if n == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                per_image.append([(empty, empty)] * layers)
                continue
            pred = _sample(mask_logits[:, i], points[:, i])  # [L, Q, P]
            target = _sample(targets[i][None], points[:, i].reshape(1, -1, 2))[0]  # [N, L*P]
            target = target.view(n, layers, -1).transpose(0, 1)  # [L, N, P]
            cost_class = -class_logits[:, i].softmax(-1)[..., classes[i]]
            pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
            neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
            p = pred.shape[-1]
            cost_mask = (pos / p) @ target.transpose(1, 2) + (neg / p) @ (1 - target).transpose(1, 2)
            probs = pred.sigmoid()
            numerator = 2 * probs @ target.transpose(1, 2)
            denominator = probs.sum(-1)[..., None] + target.sum(-1)[:, None, :]
            cost_dice = 1 - (numerator + 1) / (denominator + 1)
            cost = (self.weights["loss_mask"] * cost_mask + self.weights["loss_cross_entropy"] * cost_class
                    + self.weights["loss_dice"] * cost_dice)
            top = torch.finfo(cost.dtype).max
            cost = torch.nan_to_num(cost, nan=top, posinf=top, neginf=top).cpu()
            per_image.append([tuple(torch.as_tensor(a, dtype=torch.int64) for a in linear_sum_assignment(c))
                              for c in cost])
        return [[per_image[i][layer] for i in range(batch)] for layer in range(layers)]

    def _terms(self, mask_logits: torch.Tensor, class_logits: torch.Tensor, targets: Sequence[torch.Tensor],
               classes: Sequence[torch.Tensor], matches: list, points: dict, num_masks: torch.Tensor) -> dict:
        """Class cross-entropy, point BCE and dice of every layer; keys as transformers' (``_i`` for aux i)."""
        layers, batch, queries = mask_logits.shape[:3]
        device = mask_logits.device
        layer_idx, image_idx, query_idx, target_idx = [], [], [], []
        for layer, per_image in enumerate(matches):
            for i, (q, t) in enumerate(per_image):
                layer_idx.append(torch.full_like(q, layer))
                image_idx.append(torch.full_like(q, i))
                query_idx.append(q)
                target_idx.append(t)
        layer_idx, image_idx, query_idx, target_idx = (torch.cat(x).to(device) for x in
                                                       (layer_idx, image_idx, query_idx, target_idx))
        pred = mask_logits[layer_idx, image_idx, query_idx][:, None]  # [L*M, 1, h, w]
        with torch.no_grad():
            over = points["oversampled"]
            uncertainty = -_sample(pred, over)[:, 0].abs()
            chosen = uncertainty.topk(self.num_uncertain, dim=1).indices
            chosen_points = torch.gather(over, 1, chosen[..., None].expand(-1, -1, 2))
            if points["random"] is not None:
                chosen_points = torch.cat([chosen_points, points["random"]], dim=1)
            padded = torch.zeros(batch, max(len(t) for t in targets), *targets[0].shape[-2:], device=device)
            for i, t in enumerate(targets):
                padded[i, :len(t)] = t
            per_layer = len(layer_idx) // layers
            point_labels = torch.cat([
                _sample(padded[image_idx[s], target_idx[s]][:, None], chosen_points[s])[:, 0]
                for s in (slice(k * per_layer, (k + 1) * per_layer) for k in range(layers))
            ]) if per_layer else chosen_points.new_zeros(0, self.num_points)
        point_logits = _sample(pred, chosen_points)[:, 0]  # [L*M, P]
        bce = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none").mean(1)
        probs = point_logits.sigmoid()
        dice = 1 - (2 * (probs * point_labels).sum(-1) + 1) / (probs.sum(-1) + point_labels.sum(-1) + 1)
        bce, dice = bce.view(layers, -1), dice.view(layers, -1)
        terms: dict[str, torch.Tensor] = {}
        targets_per_layer = []
        for per_image in matches:
            target_classes = torch.full((batch, queries), self.num_classes, dtype=torch.int64, device=device)
            for i, (q, t) in enumerate(per_image):
                target_classes[i, q.to(device)] = classes[i][t.to(device)]
            targets_per_layer.append(target_classes)
        # every layer matches as many queries, so one normaliser: the summed target weights of the last layer
        # (the weighted mean times local / global weight: in one process the factor is exactly 1, so the loss is
        # bit for bit the library's weighted mean)
        local_weight = self.class_weights[targets_per_layer[0]].sum()
        class_scale = local_weight.detach() / global_normaliser(local_weight)
        for layer, target_classes in enumerate(targets_per_layer):
            suffix = "" if layer == 0 else f"_{layer - 1}"
            terms[f"loss_mask{suffix}"] = bce[layer].sum() / num_masks
            terms[f"loss_dice{suffix}"] = dice[layer].sum() / num_masks
            terms[f"loss_cross_entropy{suffix}"] = F.cross_entropy(
                class_logits[layer].transpose(1, 2), target_classes, weight=self.class_weights) * class_scale
        return terms

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

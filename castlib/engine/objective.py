"""The objective of one training step (spec 4.1) as one module:

    J = L_sup(D_l) + lambda_semi L_semi(D_u) + lambda_pxl L_pxl(D_l u D_u)

Everything that uses a parameter happens inside ``forward``, so DistributedDataParallel sees every
gradient. L_sup / L_semi are the Mask2Former set criterion for the student and the teacher's own
adaptation loss (Grounding DINO detection + SAM2 mask loss); L_pxl is
:func:`castlib.losses.pixel_contrastive_loss` on the weak and strong views of every image.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from castlib.data.sample import Batch
from castlib.losses import MemoryBank, pixel_contrastive_loss
from castlib.models.geometry import resample_into_frame
from castlib.models.output import SegmentationOutput


def targets_of(batch: Batch) -> list[dict[str, torch.Tensor]]:
    return [{"masks": m, "labels": lab} for m, lab in zip(batch.masks, batch.labels, strict=True)]


def take(output: SegmentationOutput, start: int, stop: int | None = None) -> SegmentationOutput:
    """The predictions of images ``start:stop`` of a batch (aux layers included)."""
    sl = slice(start, stop)
    return SegmentationOutput(
        class_logits=output.class_logits[sl],
        mask_logits=output.mask_logits[sl],
        features=None if output.features is None else output.features[sl],
        aux=[{k: v[sl] for k, v in layer.items()} for layer in output.aux],
    )


def instance_id_map(masks: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """``[B, h*w]`` instance ids at the embedding resolution (nearest): ``k + 1`` inside instance k,
    0 on background, as the false-negative rate of L_pxl's negatives (main Fig. 3) and the background
    share of :func:`castlib.losses.background_share` need."""
    ids = []
    for m in masks:
        full = torch.zeros(m.shape[-2:], dtype=torch.long, device=m.device)
        for k in range(len(m)):
            full[m[k]] = k + 1
        small = F.interpolate(full[None, None].float(), size=size, mode="nearest")[0, 0].long()
        ids.append(small.flatten())
    return torch.stack(ids)


class Objective(nn.Module):
    """One step's losses for ``model`` (student or teacher).

    ``supervised``: ``"criterion"`` (the student: ``criterion(output, masks, labels)``) or ``"teacher"``
    (``model.training_step(images, targets_per_part)``: the teacher's adaptation loss per part and, with L_pxl,
    its predictions and features from the same passes, so each teacher model runs once per step).
    ``contrastive``: the keyword options of :func:`pixel_contrastive_loss`, or None to leave L_pxl out.
    """

    def __init__(self, model: nn.Module, supervised: str, criterion: nn.Module | None = None, *,
                 semi_weight: float = 1.0, contrastive: Mapping | None = None, contrastive_weight: float = 0.0,
                 bank: MemoryBank | None = None):
        super().__init__()
        if supervised not in ("criterion", "teacher"):
            raise ValueError(f"supervised must be 'criterion' or 'teacher', got {supervised!r}")
        self.model = model
        self.supervised = supervised
        self.criterion = criterion
        self.semi_weight = semi_weight
        self.contrastive = dict(contrastive) if contrastive is not None else None
        self.contrastive_weight = contrastive_weight
        self.bank = bank

    def _supervised(self, images: torch.Tensor, parts: list[Batch]) -> tuple[list[dict], SegmentationOutput | None]:
        """The supervised loss of each part (L_sup, L_semi) and the model's output on ``images`` (None for the
        teacher without L_pxl, which needs no predictions)."""
        if self.supervised == "teacher":
            return self.model.training_step(images, [targets_of(p) for p in parts],
                                            predict=self.contrastive is not None)
        output = self.model(images)
        losses, start = [], 0
        for part in parts:
            losses.append(self.criterion(take(output, start, start + len(part)), part.masks, part.labels))
            start += len(part)
        return losses, output

    def forward(self, labelled: Batch, unlabelled: Batch | None = None) -> dict[str, torch.Tensor]:
        parts = [labelled] if unlabelled is None else [labelled, unlabelled]
        images = torch.cat([p.images for p in parts])
        per_part, output = self._supervised(images, parts)
        losses: dict[str, torch.Tensor] = {}
        sup = per_part[0]
        total = sup["loss"]
        losses |= {f"sup/{k}": v.detach() for k, v in sup.items()}
        if unlabelled is not None:
            semi = per_part[1]
            total = total + self.semi_weight * semi["loss"]
            losses |= {f"semi/{k}": v.detach() for k, v in semi.items()}
        if self.contrastive is not None:
            boxes = None if any(p.strong_box is None for p in parts) else torch.cat([p.strong_box for p in parts])
            result = self._contrastive(output, torch.cat([p.strong for p in parts]),
                                       [m for p in parts for m in p.masks], torch.cat([p.valid for p in parts]),
                                       boxes)
            total = total + self.contrastive_weight * result.loss
            losses["pxl/loss"] = result.loss.detach()
            losses["pxl/margin"] = result.margin.detach()
            losses["pxl/fnr"] = result.fnr.detach()
            losses["pxl/background_share"] = result.background_share.detach()
        losses["loss"] = total
        return losses

    def _contrastive(self, output: SegmentationOutput, strong: torch.Tensor, masks: list[torch.Tensor],
                     valid: torch.Tensor, strong_boxes: torch.Tensor | None = None):
        """L_pxl: anchors from the weak view, positives from the strong view's encoder pass (no gradient
        into the encoder, DESIGN 5), negatives drawn by the debiased sampler from the model's own detached
        predictions y = [softmax_K(M) || F_c]; embedding cells whose centre is padding (``valid``,
        nearest) are neither anchors nor candidates. With ``strong_boxes`` (the strong view is a resized
        crop of the weak one), the strong embedding map is resampled into the weak view's frame and cells
        outside the crop are left out as well."""
        features = output.features
        z_weak = self.model.embed(features, "weak")
        with torch.no_grad():
            strong_features = self.model.encode(strong)
        z_strong = self.model.embed(strong_features, "strong")
        size = tuple(features.shape[-2:])
        cells = F.interpolate(valid[:, None].float(), size=size, mode="nearest")[:, 0].flatten(1) > 0.5
        if strong_boxes is not None:
            strong_map = z_strong.transpose(1, 2).unflatten(2, tuple(strong_features.shape[-2:]))
            resampled, inside = resample_into_frame(strong_map, strong_boxes, tuple(valid.shape[-2:]), size)
            z_strong = F.normalize(resampled.flatten(2).transpose(1, 2), dim=-1)
            cells = cells & inside.flatten(1)
        mask_logits = F.interpolate(output.mask_logits.detach().float(), size=size, mode="bilinear",
                                    align_corners=False).flatten(2)
        return pixel_contrastive_loss(z_weak, z_strong, mask_logits, output.class_logits.detach().float(),
                                      instance_ids=instance_id_map(masks, size), valid=cells, bank=self.bank,
                                      **self.contrastive)

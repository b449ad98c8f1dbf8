"""Mask-grid ceilings: what a *perfect* mask keeps once it passes through a model's mask-logit grid.

Every model here predicts mask logits on a grid coarser than the image and upsamples them (bilinear) to it: the
student on its pixel decoder's grid, the teacher on SAM2's low-resolution grid of S/4 x S/4 for its S x S squashed
input (pitfall S1). A grid too coarse for the instances caps maskAP before any learning. ``grid_ceiling`` measures
the cap on a validation set: each ground-truth mask is averaged down to the model's grid (the best logits that
grid can hold), upsampled back and thresholded at 0.5, and its IoU with the original is what a perfect detector,
classifier and segmenter would reach. The COCO-threshold share (IoU >= 0.50, 0.55, ..., 0.95, averaged) bounds the
recall maskAP averages over, so it is an upper bound on maskAP from the grid alone.

``prompted_ceiling`` measures a trained teacher's segmenter the same way: SAM2 prompted with the ground-truth
boxes (a perfect detector), its masks' IoUs and their maskAP with the true classes. Against the teacher's own
maskAP it splits what the teacher loses between the detector (boxes, classes, scores) and SAM2 (masks).
"""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from castlib.errors import DataError

COCO_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def grid_iou(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """IoU ``[N]`` of bool ``masks`` ``[N, H, W]`` with themselves after a ``grid`` = (h, w) round trip: area
    average down, bilinear up (``align_corners=False``, as the models' upsampling), threshold 0.5."""
    if masks.ndim != 3:
        raise ValueError(f"masks: expected [N, H, W], got shape {tuple(masks.shape)}")
    height, width = masks.shape[-2:]
    masks = masks.bool()
    low = F.interpolate(masks[:, None].float(), size=tuple(grid), mode="area")
    kept = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[:, 0] > 0.5
    inter = (kept & masks).flatten(1).sum(1).float()
    union = (kept | masks).flatten(1).sum(1).float()
    return inter / union.clamp(min=1)


def summarise(ious: np.ndarray) -> dict[str, float]:
    """Mean IoU, the shares at IoU >= 0.5 / 0.75 / 0.9 and the share averaged over the COCO thresholds."""
    ious = np.asarray(ious, dtype=float)
    return {"instances": len(ious), "mean_iou": ious.mean(), "iou>=0.5": (ious >= 0.5).mean(),
            "iou>=0.75": (ious >= 0.75).mean(), "iou>=0.9": (ious >= 0.9).mean(),
            "coco_share": np.mean([(ious >= t).mean() for t in COCO_THRESHOLDS])}


def mask_grid(model: torch.nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """A model's mask-logit grid for an input of ``size`` = (H, W), read off a forward pass (the grid depends on
    the model's sizes only, so random weights do)."""
    with torch.no_grad():
        return tuple(model.eval()(torch.zeros(1, 3, *size)).mask_logits.shape[-2:])


def grid_ceiling(cfg, segmenter_sizes: tuple[int, ...] = ()) -> pd.DataFrame:
    """One row per grid on ``cfg``'s validation set: the student's, the teacher's SAM2 at the config's
    ``model.teacher.segmenter.image_size`` S (grid S/4 x S/4 of the squashed image) and at each of
    ``segmenter_sizes``; columns from :func:`summarise`, and the grid."""
    from castlib.data.classes import CLASS_LISTS
    from castlib.data.loaders import dataset_root, val_dataset
    from castlib.models import build_model

    dataset = val_dataset(cfg)
    model = build_model(cfg, "student", len(CLASS_LISTS[cfg.data.dataset]), pretrained=False)
    sizes = dict.fromkeys((int(cfg.model.teacher.segmenter.image_size), *map(int, segmenter_sizes)))
    teacher = {f"teacher SAM2 at {s}": (s // 4, s // 4) for s in sizes}
    ious: dict[str, list] = {}
    student: dict[tuple[int, int], tuple[int, int]] = {}  # the student's grid per image size (ADE20K's vary)
    for i in range(len(dataset)):
        sample = dataset[i]
        masks = torch.as_tensor(sample.masks).bool()
        if not len(masks):
            continue
        if sample.size not in student:
            student[sample.size] = mask_grid(model, sample.size)
        for name, grid in {"student": student[sample.size], **teacher}.items():
            ious.setdefault(name, []).extend(grid_iou(masks, grid).tolist())
    if not ious:
        raise DataError(dataset_root(cfg), "the validation set holds no instances, so it has no mask-grid ceiling")
    table = pd.DataFrame({name: summarise(values) for name, values in ious.items()}).T
    shown = [f"{h} x {w}" for h, w in sorted(set(student.values()))]
    table["grid"] = [", ".join(shown) if len(shown) <= 2 else f"{len(shown)} sizes",
                     *(f"{h} x {w}" for h, w in teacher.values())]
    table["instances"] = table["instances"].astype(int)
    return table


def prompted_ceiling(cfg, teacher: torch.nn.Module) -> dict[str, float]:
    """``teacher``'s SAM2 with a perfect detector, on ``cfg``'s validation set: each ground-truth instance's box
    (its mask's extent) prompts :meth:`~castlib.models.teacher.Teacher.masks_for_boxes`, and the mask (logit > 0,
    upsampled bilinearly to the image, as the teacher's pseudo-labels) is scored against its instance.
    :func:`summarise` of the IoUs, plus ``mask_ap`` / ``mask_ap50``: maskAP of these masks with their true
    classes at score 1 (the config's table metric), what the teacher would reach if its detector were exact."""
    from torchvision.transforms.v2 import functional as TF

    from castlib.data.loaders import dataset_root, make_loader, val_dataset
    from castlib.eval.evaluate import evaluate_predictions
    from castlib.eval.ground_truth import GroundTruth
    from castlib.eval.inference import Prediction
    from castlib.models.grounding import mask_boxes

    dataset = val_dataset(cfg)
    gt = GroundTruth.from_dataset(dataset)
    predictions, ious = {}, []
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.inference_mode():
            for batch in make_loader(dataset, 1, seed=0, shuffle=False, drop_last=False):
                image_id, masks, labels = batch.image_ids[0], batch.masks[0].bool(), batch.labels[0]
                keep = masks.flatten(1).any(-1)
                masks, labels = masks[keep], labels[keep]
                size = gt.sizes[image_id]
                if not len(masks):
                    predictions[image_id] = Prediction(torch.zeros(0, *size, dtype=torch.bool), labels, torch.zeros(0))
                    continue
                images = TF.to_dtype(batch.images, torch.float32, scale=True)
                logits = teacher.masks_for_boxes(images, mask_boxes(masks)[None])
                pred = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)[0] > 0
                inter = (pred & masks).flatten(1).sum(1).float()
                ious.extend((inter / (pred | masks).flatten(1).sum(1).float().clamp(min=1)).tolist())
                full = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0] > 0
                predictions[image_id] = Prediction(full, labels, torch.ones(len(labels)))
    finally:
        teacher.train(was_training)
    if not ious:
        raise DataError(dataset_root(cfg), "the validation set holds no instances, so it has no prompted ceiling")
    with tempfile.TemporaryDirectory() as out_dir:
        metrics = evaluate_predictions(predictions, gt, out_dir, cfg.eval.table_metric[cfg.data.dataset])
    return {**summarise(np.array(ious)), "mask_ap": metrics["ap"], "mask_ap50": metrics["ap50"]}

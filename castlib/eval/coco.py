"""maskAP (AP@[.5:.95]) and maskAP50 with pycocotools' ``COCOeval(iouType="segm")`` (spec section 10).

Predictions are scored from a COCO results json (one entry per instance: image id, category id,
RLE segmentation, score) against :class:`~castlib.eval.ground_truth.GroundTruth`. AP values are
percentages, as the paper prints them; per-class AP is kept (``None`` for a class without
ground-truth instances, which COCO leaves out of the mean).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from castlib.errors import EvaluationError
from castlib.eval.ground_truth import GroundTruth, encode_rle
from castlib.eval.inference import Prediction

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def coco_results(gt: GroundTruth, image_id: str, prediction: Prediction) -> list[dict]:
    """One image's predictions as COCO result entries (RLE segmentation, the dataset's category ids)."""
    coco_id = gt.coco_ids[image_id]
    return [
        {"image_id": coco_id, "category_id": gt.classes.dataset_ids[int(label)], "segmentation": encode_rle(mask),
         "score": float(score)}
        for mask, label, score in zip(prediction.masks.numpy(), prediction.labels.tolist(),
                                      prediction.scores.tolist(), strict=True)
    ]


def percent(value: float) -> float | None:
    """A COCO / Cityscapes AP in ``[0, 1]`` as a percentage; ``None`` where it is undefined (NaN or -1)."""
    value = float(value)
    return None if math.isnan(value) or value < 0 else round(100.0 * value, 6)


def coco_mask_ap(gt: GroundTruth, results_file: str | Path) -> dict:
    """``{"ap", "ap50", "per_class": {name: {"ap", "ap50"}}, "stats": {COCO summary}}`` for a results json."""
    results_file = Path(results_file)
    results = json.loads(results_file.read_text())
    if not gt.coco["annotations"]:
        raise EvaluationError(gt.source, "the ground truth has no instance, so AP is undefined")
    if not results:
        raise EvaluationError(results_file, f"empty prediction set: no instance predicted on any of the "
                                            f"{len(gt.coco_ids)} images of the {gt.source}")
    unknown = sorted({r["image_id"] for r in results} - set(gt.coco_ids.values()))
    if unknown:
        raise EvaluationError(results_file, f"COCO image ids {unknown[:5]} are not in the {gt.source}")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt.coco)  # COCOeval marks the ground truth's annotations
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall points, classes, areas, max dets]
    names = {c["id"]: c["name"] for c in gt.coco["categories"]}
    per_class = {}
    for k, category_id in enumerate(evaluator.params.catIds):
        curve = precision[:, :, k, 0, -1]
        per_class[names[category_id]] = {
            "ap": percent(curve[curve > -1].mean()) if (curve > -1).any() else None,
            "ap50": percent(curve[0][curve[0] > -1].mean()) if (curve[0] > -1).any() else None,
        }
    stats = {name: float(np.round(value, 6)) for name, value in zip(STAT_NAMES, evaluator.stats, strict=True)}
    return {"ap": percent(evaluator.stats[0]), "ap50": percent(evaluator.stats[1]), "per_class": per_class,
            "stats": stats}

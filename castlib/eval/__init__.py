"""Evaluation (DESIGN section 6): Mask2Former instance inference for any model with the shared output
contract, maskAP / maskAP50 with pycocotools and with the official Cityscapes evaluator, and the
efficiency measurements of main-paper Fig. 2, and the mask-grid ceilings (``castlib.eval.ceiling``)."""

from castlib.eval.ceiling import grid_ceiling, grid_iou
from castlib.eval.cityscapes import cityscapes_mask_ap, write_cityscapes_prediction
from castlib.eval.coco import coco_mask_ap, coco_results
from castlib.eval.efficiency import EfficiencyRecord, compare_efficiency, efficiency_table, measure_efficiency
from castlib.eval.evaluate import (
    METRICS_FILE,
    PredictionWriter,
    eval_options,
    evaluate_model,
    evaluate_predictions,
    score,
)
from castlib.eval.ground_truth import GroundTruth, encode_rle
from castlib.eval.inference import Prediction, instance_inference

__all__ = [
    "METRICS_FILE",
    "EfficiencyRecord",
    "GroundTruth",
    "Prediction",
    "PredictionWriter",
    "cityscapes_mask_ap",
    "coco_mask_ap",
    "coco_results",
    "compare_efficiency",
    "efficiency_table",
    "eval_options",
    "encode_rle",
    "evaluate_model",
    "evaluate_predictions",
    "grid_ceiling",
    "grid_iou",
    "instance_inference",
    "measure_efficiency",
    "score",
    "write_cityscapes_prediction",
]

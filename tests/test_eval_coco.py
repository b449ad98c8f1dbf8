"""maskAP / maskAP50 through pycocotools on hand-built cases whose AP follows from the COCO definition."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from castlib.data.classes import CITYSCAPES
from castlib.errors import EvaluationError
from castlib.eval import GroundTruth, Prediction, PredictionWriter, coco_mask_ap, evaluate_predictions

H, W = 64, 96
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
PERSON, CAR = CITYSCAPES.names.index("person"), CITYSCAPES.names.index("car")


def box(top: int, left: int, height: int, width: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[top: top + height, left: left + width] = True
    return mask


def prediction(masks, labels, scores) -> Prediction:
    masks = np.asarray(masks, bool).reshape(-1, *np.shape(masks)[-2:])
    return Prediction(torch.from_numpy(masks), torch.tensor(labels, dtype=torch.long),
                      torch.tensor(scores, dtype=torch.float32))


def no_prediction(size: tuple[int, int] = (H, W)) -> Prediction:
    return prediction(np.zeros((0, *size), bool), [], [])


@pytest.fixture
def scene() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two images: three people and a car; one car."""
    return {
        "a": (np.stack([box(2, 2, 20, 10), box(2, 20, 20, 10), box(30, 2, 20, 12), box(30, 40, 20, 40)]),
              np.array([PERSON, PERSON, PERSON, CAR])),
        "b": (np.stack([box(10, 10, 30, 50)]), np.array([CAR])),
    }


def evaluate(annotations, predictions, tmp_path) -> dict:
    return evaluate_predictions(predictions, GroundTruth.from_masks(CITYSCAPES, annotations), tmp_path)


def test_perfect_predictions_give_ap_100(scene, tmp_path):
    predictions = {i: prediction(m, lab.tolist(), [1.0] * len(lab)) for i, (m, lab) in scene.items()}
    metrics = evaluate(scene, predictions, tmp_path)
    assert metrics["ap"] == pytest.approx(100) and metrics["ap50"] == pytest.approx(100)
    assert metrics["table_metric"] == "coco" and "cityscapes" not in metrics  # hand-built: no gtFine files
    per_class = metrics["coco"]["per_class"]
    assert per_class["person"]["ap"] == pytest.approx(100) and per_class["car"]["ap"] == pytest.approx(100)
    assert per_class["truck"] == {"ap": None, "ap50": None}  # no ground truth: left out of the mean


def test_predictions_that_miss_every_instance_give_ap_0(scene, tmp_path):
    # Each image: one mask per class on the background, touching no instance.
    predictions = {}
    for image_id, (masks, _) in scene.items():
        background = ~masks.any(0)
        predictions[image_id] = prediction([background, background], [PERSON, CAR], [0.9, 0.8])
    metrics = evaluate(scene, predictions, tmp_path)
    assert metrics["ap"] == 0 and metrics["ap50"] == 0


@pytest.mark.parametrize("shift", [0, 2, 4, 6, 7])
def test_a_shifted_mask_gets_the_ap_the_coco_definition_gives(shift, tmp_path):
    # A 20x20 square shifted right by `shift` pixels: IoU = 20 (20 - s) / (2 * 400 - 20 (20 - s)) = (20 - s) / (20 + s).
    # With one instance, a match at threshold t gives precision 1 at all 101 recall points, a miss gives 0,
    # so AP = (number of the 10 thresholds t with IoU >= t) / 10.
    iou = (20 - shift) / (20 + shift)
    expected_ap = 100 * np.mean([iou >= t for t in COCO_IOU_THRESHOLDS])
    gt = {"a": (box(10, 10, 20, 20)[None], np.array([CAR]))}
    metrics = evaluate(gt, {"a": prediction(box(10, 10 + shift, 20, 20)[None], [CAR], [0.7])}, tmp_path)
    assert metrics["ap"] == pytest.approx(expected_ap)
    assert metrics["ap50"] == pytest.approx(100.0 if iou >= 0.5 else 0.0)


def test_precision_is_interpolated_at_coco_s_101_recall_points(tmp_path):
    # Two cars; ranked predictions: hit (0.9), false positive (0.8), hit (0.7).
    # Precision/recall: (1, 1/2), (1/2, 1/2), (2/3, 1). Interpolated precision is 1 at the 51 recall points
    # 0, 0.01, ..., 0.5 and 2/3 at the 50 points 0.51 ... 1, at every IoU threshold.
    gt = {"a": (np.stack([box(2, 2, 20, 20), box(30, 50, 20, 20)]), np.array([CAR, CAR]))}
    preds = prediction([box(2, 2, 20, 20), box(40, 2, 10, 10), box(30, 50, 20, 20)], [CAR] * 3, [0.9, 0.8, 0.7])
    metrics = evaluate(gt, {"a": preds}, tmp_path)
    assert metrics["ap"] == pytest.approx(100 * (51 + 50 * 2 / 3) / 101, abs=1e-4)


def test_a_class_confusion_is_a_miss_for_one_class_and_a_false_positive_for_the_other(tmp_path):
    gt = {"a": (np.stack([box(2, 2, 20, 20), box(30, 50, 20, 20)]), np.array([CAR, PERSON]))}
    preds = prediction([box(2, 2, 20, 20), box(30, 50, 20, 20)], [PERSON, PERSON], [0.9, 0.8])
    per_class = evaluate(gt, {"a": preds}, tmp_path)["coco"]["per_class"]
    assert per_class["car"]["ap"] == 0
    # person: the confused car mask ranks first (false positive), then the hit: precision 1/2 at recall 1.
    assert per_class["person"]["ap"] == pytest.approx(50.0)


def test_the_results_file_holds_rle_segmentations_with_the_dataset_category_ids(scene, tmp_path):
    predictions = {i: prediction(m, lab.tolist(), [1.0] * len(lab)) for i, (m, lab) in scene.items()}
    evaluate(scene, predictions, tmp_path)
    results = json.loads((tmp_path / "coco_results.json").read_text())
    gt = json.loads((tmp_path / "coco_ground_truth.json").read_text())
    assert len(results) == 5 and len(gt["annotations"]) == 5
    assert {r["category_id"] for r in results} == {CITYSCAPES.dataset_ids[PERSON], CITYSCAPES.dataset_ids[CAR]}
    assert all(isinstance(r["segmentation"]["counts"], str) for r in results)
    assert {a["iscrowd"] for a in gt["annotations"]} == {0}
    assert gt["annotations"][0]["area"] == 200 and gt["annotations"][0]["bbox"] == [2, 2, 10, 20]


# Bad input: a clear error naming the image id or file, never a silent 0 ------------------------------


def test_an_empty_prediction_set_is_an_error(scene, tmp_path):
    with pytest.raises(EvaluationError, match="empty prediction set"):
        evaluate(scene, {i: no_prediction() for i in scene}, tmp_path)


def test_an_image_id_the_ground_truth_lacks_is_an_error(scene, tmp_path):
    writer = PredictionWriter(GroundTruth.from_masks(CITYSCAPES, scene), tmp_path)
    with pytest.raises(EvaluationError, match="^zz: image id is not in the ground truth"):
        writer.add("zz", prediction(box(0, 0, 5, 5)[None], [CAR], [1.0]))


def test_a_mask_of_the_wrong_size_is_an_error(scene, tmp_path):
    writer = PredictionWriter(GroundTruth.from_masks(CITYSCAPES, scene), tmp_path)
    with pytest.raises(EvaluationError, match=r"^a: predicted masks are 48x64 but the ground-truth image is 96x64"):
        writer.add("a", prediction(box(0, 0, 5, 5, size=(64, 48))[None], [CAR], [1.0]))


def test_an_image_without_prediction_is_an_error(scene, tmp_path):
    with pytest.raises(EvaluationError, match=r"^b: no prediction for 1 image\(s\)"):
        evaluate(scene, {"a": no_prediction()}, tmp_path)


def test_a_label_outside_the_classes_is_an_error(scene, tmp_path):
    writer = PredictionWriter(GroundTruth.from_masks(CITYSCAPES, scene), tmp_path)
    with pytest.raises(EvaluationError, match=r"^a: labels \[8\] are outside 0..7"):
        writer.add("a", prediction(box(0, 0, 5, 5)[None], [8], [1.0]))


def test_a_results_file_naming_an_unknown_image_is_an_error(scene, tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 99, "category_id": 26, "score": 1.0,
                                    "segmentation": {"size": [H, W], "counts": "0"}}]))
    with pytest.raises(EvaluationError, match=r"results.json: COCO image ids \[99\] are not in"):
        coco_mask_ap(GroundTruth.from_masks(CITYSCAPES, scene), results)

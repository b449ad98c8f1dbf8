"""The official Cityscapes evaluator, driven in-process on the synthetic Cityscapes set, beside pycocotools."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from castlib.data import CityscapesInstances
from castlib.errors import EvaluationError
from castlib.eval import GroundTruth, Prediction, cityscapes_mask_ap, evaluate_predictions


@pytest.fixture(scope="module")
def val_set(cityscapes_root):
    return CityscapesInstances(cityscapes_root, "val")


@pytest.fixture(scope="module")
def gt(val_set):
    return GroundTruth.from_dataset(val_set)


def annotations(dataset):
    for image_id in dataset.image_ids:
        yield image_id, *dataset.decode(dataset.annotation_path(image_id))


def prediction(masks: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> Prediction:
    keep = masks.any((1, 2))
    return Prediction(torch.from_numpy(masks[keep]), torch.from_numpy(labels[keep]),
                      torch.from_numpy(scores[keep]).float())


def perfect(dataset):
    return {i: prediction(m, lab, np.ones(len(lab))) for i, m, lab in annotations(dataset)}


def good_model(dataset, rng):
    """Ground truth eroded by one pixel, confident."""
    return {i: prediction(np.stack([ndimage.binary_erosion(x) for x in m]), lab, 0.8 + 0.2 * rng.random(len(lab)))
            for i, m, lab in annotations(dataset)}


def bad_model(dataset, rng):
    """Ground truth shifted 8 pixels right, every third instance of the wrong class, unsure."""
    preds = {}
    for i, m, lab in annotations(dataset):
        shifted = np.roll(m, 8, axis=2)
        shifted[:, :, :8] = False
        wrong = lab.copy()
        wrong[::3] = (wrong[::3] + 1) % 8
        preds[i] = prediction(shifted, wrong, 0.5 * rng.random(len(lab)))
    return preds


def test_perfect_predictions_give_ap_100_with_both_evaluators(val_set, gt, tmp_path):
    metrics = evaluate_predictions(perfect(val_set), gt, tmp_path)
    assert metrics["table_metric"] == "cityscapes"  # the official evaluator is the tables' metric on Cityscapes
    for evaluator in ("cityscapes", "coco"):
        assert metrics[evaluator]["ap"] == pytest.approx(100) and metrics[evaluator]["ap50"] == pytest.approx(100)
    assert (metrics["ap"], metrics["ap50"]) == (metrics["cityscapes"]["ap"], metrics["cityscapes"]["ap50"])
    assert set(metrics["cityscapes"]["per_class"]) == set(val_set.classes.names)
    # The evaluator's own result json and its ground-truth cache are in the output folder, not the dataset.
    official = json.loads((tmp_path / "cityscapes_results.json").read_text())
    assert official["averages"]["allAp"] == pytest.approx(1.0)
    assert (tmp_path / "cityscapes_gt_instances.json").is_file()
    assert not [*val_set.root.rglob("*gt_instances.json"), *val_set.root.rglob("gtInstances.json")]


def test_predictions_that_miss_every_instance_give_ap_0_with_both_evaluators(val_set, gt, tmp_path):
    preds = {}
    for i, m, _ in annotations(val_set):
        background = ~m.any(0)
        preds[i] = prediction(np.stack([background] * 8), np.arange(8), np.linspace(0.9, 0.2, 8))
    metrics = evaluate_predictions(preds, gt, tmp_path)
    for evaluator in ("cityscapes", "coco"):
        assert metrics[evaluator]["ap"] == 0 and metrics[evaluator]["ap50"] == 0


def test_both_evaluators_rank_a_good_model_above_a_bad_one(val_set, gt, tmp_path):
    rng = np.random.default_rng(0)
    good = evaluate_predictions(good_model(val_set, rng), gt, tmp_path / "good")
    bad = evaluate_predictions(bad_model(val_set, rng), gt, tmp_path / "bad")
    for evaluator in ("cityscapes", "coco"):
        assert good[evaluator]["ap"] > bad[evaluator]["ap"] + 10, evaluator
        assert good[evaluator]["ap50"] > bad[evaluator]["ap50"] + 10, evaluator


def test_the_prediction_files_are_in_the_official_format(val_set, gt, tmp_path):
    evaluate_predictions(perfect(val_set), gt, tmp_path)
    image_id = val_set.image_ids[0]
    lines = (tmp_path / "cityscapes_predictions" / f"{image_id}_pred.txt").read_text().splitlines()
    masks, labels = val_set.decode(val_set.annotation_path(image_id))
    assert len(lines) == len(labels)
    path, label_id, confidence = lines[0].split(" ")
    assert int(label_id) in val_set.classes.dataset_ids and float(confidence) == 1.0
    with Image.open(tmp_path / "cityscapes_predictions" / path) as im:
        assert im.size == (masks.shape[2], masks.shape[1])
        assert (np.asarray(im) != 0).sum() in masks.reshape(len(masks), -1).sum(1)
    assert not list(tmp_path.glob(".*partial"))  # the folder appeared by a rename


def test_a_class_whose_only_prediction_is_ignored_scores_0_instead_of_crashing(val_set, gt, tmp_path):
    # One image: predict exactly a car smaller than the evaluator's 100-pixel minimum while a large car goes
    # unmatched. The evaluator ignores the prediction and counts the large car as missed; its AP loop would
    # index an empty array here (cityscapesScripts issue #89). The car class must score 0.
    preds = {}
    chosen = None
    for i, m, lab in annotations(val_set):
        sizes = m.reshape(len(m), -1).sum(1)
        cars = np.flatnonzero(lab == val_set.classes.names.index("car"))
        small, large = cars[sizes[cars] < 100], cars[sizes[cars] >= 100]
        if chosen is None and len(small) and len(large):
            chosen = i
            preds[i] = prediction(m[small[:1]], lab[small[:1]], np.ones(1))
        else:
            preds[i] = prediction(np.zeros((0, *m.shape[1:]), bool), np.zeros(0, np.int64), np.zeros(0))
    assert chosen is not None, "the synthetic set should hold an image with a small and a large car"
    metrics = evaluate_predictions(preds, gt, tmp_path)
    assert metrics["cityscapes"]["per_class"]["car"]["ap"] == 0
    assert metrics["coco"]["per_class"]["car"]["ap"] > 0  # COCO has no minimum size: the small car is a hit


def test_a_missing_prediction_file_is_an_error(val_set, gt, tmp_path):
    evaluate_predictions(perfect(val_set), gt, tmp_path)
    missing = tmp_path / "cityscapes_predictions" / f"{val_set.image_ids[1]}_pred.txt"
    missing.unlink()
    with pytest.raises(EvaluationError, match=f"{missing.name}: no prediction file for image"):
        cityscapes_mask_ap(gt, tmp_path / "cityscapes_predictions", tmp_path)


def test_a_mask_png_of_the_wrong_size_is_an_error(val_set, gt, tmp_path):
    evaluate_predictions(perfect(val_set), gt, tmp_path)
    mask_file = next((tmp_path / "cityscapes_predictions" / "masks").glob("*.png"))
    Image.fromarray(np.ones((10, 20), bool)).save(mask_file)
    with pytest.raises(EvaluationError, match=f"{mask_file.name}: mask is 20x10 but image"):
        cityscapes_mask_ap(gt, tmp_path / "cityscapes_predictions", tmp_path)


def test_the_official_evaluator_needs_cityscapes_files(val_set, tmp_path):
    hand_built = GroundTruth.from_masks(val_set.classes, {i: (m, lab) for i, m, lab in annotations(val_set)})
    with pytest.raises(EvaluationError, match="needs the gtFine files"):
        cityscapes_mask_ap(hand_built, tmp_path, tmp_path)


def test_a_prediction_on_a_car_group_is_no_false_positive_for_either_evaluator(cityscapes_root, tmp_path):
    import shutil

    root = shutil.copytree(cityscapes_root, tmp_path / "cs")
    dataset = CityscapesInstances(root, "val")
    dataset.image_ids = dataset.image_ids[:1]
    ids = np.zeros((128, 256), np.uint16)
    ids[10:40, 10:60] = 26  # cargroup: the car label id without an instance number
    ids[60:90, 10:60] = 26000  # a car
    ids[60:110, 100:120] = 24000  # a person
    Image.fromarray(ids).save(dataset.annotation_path(dataset.image_ids[0]))
    gt = GroundTruth.from_dataset(dataset)
    assert [(a["category_id"], a["iscrowd"], a["area"]) for a in gt.coco["annotations"]] == \
        [(24, 0, 1000.0), (26, 0, 1500.0), (26, 1, 1500.0)]
    car, person = (dataset.classes.names.index(n) for n in ("car", "person"))
    masks = np.stack([ids == 26000, ids == 24000, ids == 26])
    on_group = {dataset.image_ids[0]: prediction(masks, np.array([car, person, car]), np.array([0.5, 0.5, 0.9]))}
    metrics = evaluate_predictions(on_group, gt, tmp_path / "eval")
    assert metrics["coco"]["per_class"]["car"]["ap"] == pytest.approx(100.0)
    assert metrics["cityscapes"]["per_class"]["car"]["ap"] == pytest.approx(100.0)

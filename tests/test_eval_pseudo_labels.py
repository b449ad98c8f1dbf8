"""Pseudo-label quality: a pseudo_labels run's files against the withheld annotations of D_u."""

from __future__ import annotations

import numpy as np
import pytest

from castlib.eval.pseudo_labels import mask_ious, matched_ious, pseudo_label_quality


def _match(pseudo, truth, class_aware=True):
    return matched_ious(mask_ious(pseudo[0], truth[0]), pseudo[1], truth[1], class_aware)


def _square(top: int, left: int, size: int, shape=(16, 16)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:top + size, left:left + size] = True
    return mask


def test_matching_is_one_to_one_within_each_class():
    truth = (np.stack([_square(0, 0, 4), _square(8, 8, 4)]), np.array([0, 1]))
    # Two copies of the first object (one can match), and the second object under the wrong class.
    pseudo = (np.stack([_square(0, 0, 4), _square(0, 0, 4), _square(8, 8, 4)]), np.array([0, 0, 2]))
    assert _match(pseudo, truth).tolist() == [1.0]
    assert sorted(_match(pseudo, truth, class_aware=False).tolist()) == [1.0, 1.0]
    # A half-covering mask matches at IoU 1/2; a disjoint one is no match at all.
    half = (np.stack([_square(0, 0, 4) & (np.arange(16) < 2)[None], _square(12, 0, 2)]), np.array([0, 0]))
    assert _match(half, truth).tolist() == [0.5]
    # An image without pseudo-labels (or without true instances) has no matches.
    none = (np.zeros((0, 16, 16), bool), np.zeros(0, np.int64))
    assert _match(none, truth).tolist() == [] and _match(truth, none).tolist() == []


@pytest.fixture
def unlabelled(smoke_config):
    from castlib.data.loaders import build_dataset, make_splits, prepare_data, read_split_ids

    cfg = smoke_config()
    prepare_data(cfg)
    make_splits(cfg)
    ids = read_split_ids(cfg, "unlabelled")
    return cfg, build_dataset(cfg, "train", ids), ids


def test_the_true_annotations_score_precision_and_recall_one(unlabelled, tmp_path):
    cfg, truth, ids = unlabelled
    for image_id in ids:
        truth.write_annotation(tmp_path / "pseudo", image_id, *truth.decode(truth.annotation_path(image_id)))
    quality = pseudo_label_quality(cfg, tmp_path / "pseudo")
    assert quality["images"] == len(ids) > 0
    assert quality["pseudo_per_image"] == quality["true_per_image"] > 0
    assert (quality["precision"], quality["recall"], quality["agnostic_precision"]) == (1.0, 1.0, 1.0)
    assert quality["matched_iou"] == pytest.approx(1.0)


def test_missing_and_misclassified_pseudo_labels_lower_recall_and_precision(unlabelled, tmp_path):
    cfg, truth, ids = unlabelled
    num_classes = len(truth.classes.dataset_ids)
    kept = wrong = total = 0
    for image_id in ids:
        masks, labels = truth.decode(truth.annotation_path(image_id))
        total += len(labels)
        masks, labels = masks[: len(labels) // 2 + 1], labels[: len(labels) // 2 + 1].copy()  # drop the rest
        if len(labels):
            # the first kept instance under a class no other instance of the image has
            labels[0] = next(c for c in range(num_classes) if c not in set(labels.tolist()))
            wrong += 1
        kept += len(labels)
        truth.write_annotation(tmp_path / "pseudo", image_id, masks, labels)
    quality = pseudo_label_quality(cfg, tmp_path / "pseudo")
    assert quality["pseudo_per_image"] == pytest.approx(kept / len(ids))
    assert quality["precision"] == pytest.approx((kept - wrong) / kept)
    assert quality["recall"] == pytest.approx((kept - wrong) / total)
    assert quality["agnostic_precision"] == 1.0
    assert quality["recall"] < quality["precision"] < 1.0


def test_an_image_without_its_pseudo_label_is_named(unlabelled, tmp_path):
    from castlib.errors import DataError

    cfg, truth, ids = unlabelled
    for image_id in ids[1:]:
        truth.write_annotation(tmp_path / "pseudo", image_id, *truth.decode(truth.annotation_path(image_id)))
    with pytest.raises(DataError, match="no pseudo-label for this unlabelled image") as error:
        pseudo_label_quality(cfg, tmp_path / "pseudo")
    assert error.value.path.is_relative_to(tmp_path / "pseudo")


def test_the_command_scores_a_pseudo_labels_run_and_refuses_other_stages(capsys, smoke_config, tmp_path):
    from castlib.__main__ import main
    from castlib.data.loaders import make_splits, prepare_data
    from castlib.engine.stages import pseudo_labels, teacher_init

    settings = [f"runs_dir={tmp_path / 'runs'}", f"data.data_dir={tmp_path / 'data'}",
                f"data.splits_dir={tmp_path / 'splits'}", "model.stand_in=false"]
    cfg = smoke_config(*settings)
    prepare_data(cfg)
    make_splits(cfg)
    teacher = teacher_init(cfg)  # random weights: few pseudo-labels, and hardly any right
    labels = pseudo_labels(cfg, teacher)
    command = ["pseudo-quality", "--profile", "smoke", *[a for s in settings for a in ("--set", s)], "--runs"]
    assert main([*command, labels.id]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(labels.id)).split()
    assert row[1] == teacher.id and float(row[2]) == cfg.train.pseudo_labels.threshold
    assert main([*command, teacher.id]) != 0
    assert "is a teacher_init run, not a pseudo_labels run" in capsys.readouterr().err

"""Mask-grid ceilings: a perfect mask after a model's mask-logit grid round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from castlib.eval.ceiling import grid_ceiling, grid_iou, summarise


def test_a_full_resolution_grid_keeps_every_mask():
    masks = torch.zeros(2, 32, 64, dtype=torch.bool)
    masks[0, 3:9, 5:40] = True
    masks[1, 20:31, 1:2] = True
    assert grid_iou(masks, (32, 64)).tolist() == [1.0, 1.0]


def test_a_coarse_grid_loses_a_thin_bar_and_keeps_a_big_square():
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 8:40, 8:40] = True  # 32 x 32: four cells of an 8 x 8 grid's 8-pixel cells on a side
    masks[1, 10:50, 30:32] = True  # 2 pixels wide: a quarter of a cell
    bar, square = grid_iou(masks, (8, 8)).flip(0).tolist()
    assert square > 0.9
    assert bar < 0.5


def test_summary_shares_and_the_coco_average():
    ious = np.array([1.0, 0.82, 0.62, 0.4])
    summary = summarise(ious)
    assert summary["instances"] == 4
    assert summary["mean_iou"] == pytest.approx(0.71)
    assert (summary["iou>=0.5"], summary["iou>=0.75"], summary["iou>=0.9"]) == (0.75, 0.5, 0.25)
    # Thresholds 0.50-0.60 keep three masks, 0.65-0.80 two, 0.85-0.95 one.
    assert summary["coco_share"] == pytest.approx((3 * 3 + 4 * 2 + 3 * 1) / 4 / 10)


def test_the_ceiling_on_the_smoke_validation_set(smoke_config):
    from castlib.data.loaders import prepare_data

    cfg = smoke_config()
    prepare_data(cfg)
    size = int(cfg.model.teacher.segmenter.image_size)
    table = grid_ceiling(cfg, (size, 4 * size))
    assert list(table.index) == ["student", f"teacher SAM2 at {size}", f"teacher SAM2 at {4 * size}"]
    assert (table["instances"] > 0).all() and table["instances"].nunique() == 1
    assert table.loc[f"teacher SAM2 at {4 * size}", "grid"] == f"{size} x {size}"
    shares = table["coco_share"].astype(float)
    assert ((shares > 0) & (shares <= 1)).all()
    # A finer SAM2 grid keeps more of every mask.
    assert shares[f"teacher SAM2 at {4 * size}"] > shares[f"teacher SAM2 at {size}"]


def test_a_segmenter_size_below_one_grid_cell_is_refused_by_name(capsys):
    from castlib.__main__ import main

    assert main(["ceiling", "--profile", "smoke", "--segmenter-sizes", "128", "2"]) == 2
    assert capsys.readouterr().err.startswith("error: --segmenter-sizes: each size must be at least 4")


class _Filled(torch.nn.Module):
    """A stand-in teacher whose SAM2 answers every box prompt with one constant logit (a whole-image mask or
    none), so the prompted ceiling's IoUs have a closed form."""

    def __init__(self, logit: float):
        super().__init__()
        self.logit, self.prompts = logit, []

    def masks_for_boxes(self, images, boxes):
        self.prompts.append(boxes)
        return torch.full((len(images), boxes.shape[1], 8, 8), self.logit)


def test_the_prompted_ceiling_scores_the_segmenter_on_the_true_boxes(smoke_config):
    from castlib.data.loaders import prepare_data, val_dataset
    from castlib.eval.ceiling import prompted_ceiling

    cfg = smoke_config()
    prepare_data(cfg)
    samples = [val_dataset(cfg)[i] for i in range(len(val_dataset(cfg)))]
    masks = [torch.as_tensor(s.masks).bool() for s in samples]
    masks = [m[m.flatten(1).any(-1)] for m in masks]
    # A whole-image mask's IoU with an instance is the instance's share of the image.
    expected = np.concatenate([(m.flatten(1).float().mean(1)).numpy() for m in masks if len(m)])
    whole = _Filled(10.0)
    row = prompted_ceiling(cfg, whole)
    assert row["instances"] == len(expected) > 0
    assert row["mean_iou"] == pytest.approx(expected.mean(), rel=1e-5)
    # The prompts are the instances' own boxes, image by image, in order.
    from castlib.models.grounding import mask_boxes

    assert len(whole.prompts) == sum(1 for m in masks if len(m))
    for prompt, m in zip(whole.prompts, [m for m in masks if len(m)], strict=True):
        assert torch.allclose(prompt[0], mask_boxes(m))
    # Whole-image masks barely overlap small instances: well below the grid ceiling, above nothing.
    assert 0 <= row["mask_ap"] < 5
    empty = prompted_ceiling(cfg, _Filled(-10.0))
    assert (empty["mean_iou"], empty["mask_ap"]) == (0.0, 0.0)


def test_the_ceiling_names_a_run_that_is_not_there(capsys, smoke_config, tmp_path):
    from castlib.__main__ import main

    assert main(["ceiling", "--profile", "smoke", "--set", f"runs_dir={tmp_path}",
                 "--teacher-runs", "abc123abc123"]) != 0
    assert "no run abc123abc123" in capsys.readouterr().err

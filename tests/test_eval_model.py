"""evaluate_model: a model over a dataset, predictions in both formats, metrics.json written atomically."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from castlib.data import ADE20KInstances, CityscapesInstances, EvalView
from castlib.errors import ConfigError
from castlib.eval import eval_options, evaluate_model
from castlib.models.output import SegmentationOutput

BIG = 20.0


class Oracle(nn.Module):
    """Returns a dataset's ground truth (as the evaluation view shows it) in the output contract, image by
    image in dataset order; its mask logits cover the padded batch, at ``stride`` times lower resolution."""

    def __init__(self, dataset, stride: int = 1):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # gives the model a device
        self.samples = [dataset[i] for i in range(len(dataset))]
        self.num_classes = len(dataset.classes)
        self.stride = stride
        self.seen = 0

    def forward(self, images: torch.Tensor) -> SegmentationOutput:
        assert images.dtype == torch.float32 and images.min() >= 0 and images.max() <= 1
        batch = self.samples[self.seen: self.seen + len(images)]
        self.seen += len(images)
        queries = max(len(s.labels) for s in batch) + 1
        class_logits = torch.zeros(len(images), queries, self.num_classes + 1)
        class_logits[..., -1] = BIG  # "no object" unless a ground-truth instance fills the query
        mask_logits = torch.full((len(images), queries, *images.shape[-2:]), -BIG)
        for b, sample in enumerate(batch):
            h, w = sample.size
            for q, (mask, label) in enumerate(zip(sample.masks, sample.labels, strict=True)):
                class_logits[b, q, -1] = 0.0
                class_logits[b, q, label] = BIG
                mask_logits[b, q, :h, :w] = torch.where(mask, BIG, -BIG)
        if self.stride > 1:
            mask_logits = nn.functional.avg_pool2d(mask_logits, self.stride)
        return SegmentationOutput(class_logits=class_logits * self.scale, mask_logits=mask_logits)


def test_an_oracle_model_scores_100_with_both_evaluators_and_metrics_json_is_written(cityscapes_root, tmp_path):
    dataset = CityscapesInstances(cityscapes_root, "val", transform=EvalView())
    model = Oracle(dataset)
    model.train()
    metrics = evaluate_model(model, dataset, tmp_path, top_k=100, batch_size=2)
    assert model.training  # the model's mode is given back
    assert metrics["cityscapes"]["ap"] == pytest.approx(100) and metrics["coco"]["ap"] == pytest.approx(100)
    assert metrics["num_images"] == len(dataset) and metrics["top_k"] == 100
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert not list(tmp_path.glob(".*"))  # no temporary file or partial folder is left behind


def test_a_padded_ade20k_batch_is_cropped_per_image(ade20k_root, tmp_path):
    dataset = ADE20KInstances(ade20k_root, "val", transform=EvalView())
    sizes = {dataset[i].size for i in range(len(dataset))}
    assert len(sizes) > 1, "the synthetic ADE20K images should differ in size, so batches are padded"
    metrics = evaluate_model(Oracle(dataset), dataset, tmp_path, batch_size=4)
    assert metrics["table_metric"] == "coco" and "cityscapes" not in metrics
    assert metrics["ap"] == pytest.approx(100)


def test_masks_predicted_on_a_resized_view_are_scored_at_the_ground_truth_size(cityscapes_root, tmp_path):
    # The evaluation view halves the images and the oracle answers at a quarter of that: masks come back
    # to 128x256 by bilinear upsampling, so boundaries blur a little, small instances suffer, AP stays high.
    dataset = CityscapesInstances(cityscapes_root, "val", transform=EvalView(short_side=64))
    metrics = evaluate_model(Oracle(dataset, stride=2), dataset, tmp_path, batch_size=2)
    assert metrics["coco"]["ap50"] > 80 and metrics["cityscapes"]["ap50"] > 80
    assert metrics["coco"]["ap"] < 100


def test_eval_options_come_from_the_config_and_an_unknown_table_metric_is_named(smoke_config, cityscapes_root,
                                                                               tmp_path):
    options = eval_options(smoke_config("data.dataset=ade20k"))
    assert options == {"top_k": 100, "batch_size": 1, "num_workers": 0, "table_metric": "coco"}
    dataset = CityscapesInstances(cityscapes_root, "val", transform=EvalView())
    with pytest.raises(ConfigError, match="eval.table_metric"):
        evaluate_model(Oracle(dataset), dataset, tmp_path, table_metric="mAP")


def test_a_model_that_finds_nothing_scores_zero_with_a_warning_not_an_error(cityscapes_root, tmp_path):
    """An untrained model run on every image may predict no instance: AP 0, said in metrics["warning"]."""
    class Blind(nn.Module):
        def forward(self, images):
            b, _, h, w = images.shape
            return SegmentationOutput(class_logits=torch.zeros(b, 3, 9), mask_logits=torch.full((b, 3, h, w), -5.0))

    dataset = CityscapesInstances(cityscapes_root, "val", transform=EvalView())
    metrics = evaluate_model(Blind(), dataset, tmp_path)
    assert metrics["ap"] == 0.0 and metrics["coco"]["ap"] == 0.0 and metrics["cityscapes"]["ap50"] == 0.0
    assert "no instance" in metrics["warning"]

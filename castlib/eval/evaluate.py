"""Evaluate a model on a dataset: instance inference, predictions in the COCO and Cityscapes formats,
maskAP / maskAP50 from pycocotools and (Cityscapes) the official evaluator, and ``metrics.json``.

Everything lands in one output folder (a run folder, once the run registry exists):

| file | what |
|---|---|
| ``coco_ground_truth.json`` | the ground truth converted from the dataset's own files |
| ``coco_results.json`` | the predictions as COCO results (RLE) |
| ``cityscapes_predictions/`` | (Cityscapes) ``<image id>_pred.txt`` + ``masks/*.png``, the official format |
| ``cityscapes_results.json`` | (Cityscapes) the official evaluator's result json |
| ``cityscapes_gt_instances.json`` | (Cityscapes) the official evaluator's ground-truth cache |
| ``metrics.json`` | both metrics, per-class AP, and ``ap`` / ``ap50`` of the metric the tables use |

Every file is written atomically; the Cityscapes prediction folder appears at once, by a rename.

Under ``torchrun`` (:func:`evaluate_model` with a ``ctx``) each process predicts every ``world``-th image, writes
its Cityscapes files into the shared partial folder and its COCO results to a per-rank file; rank 0 gathers
them and scores, and every process returns its metrics.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Subset
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from castlib.config import Config
from castlib.data.datasets import InstanceDataset
from castlib.data.loaders import make_loader
from castlib.distributed import Context
from castlib.errors import ConfigError, EvaluationError
from castlib.eval.cityscapes import cityscapes_mask_ap, write_cityscapes_prediction
from castlib.eval.coco import coco_mask_ap, coco_results
from castlib.eval.ground_truth import GroundTruth
from castlib.eval.inference import Prediction, instance_inference, model_device
from castlib.io import write_json_atomic

METRICS_FILE = "metrics.json"
COCO_GROUND_TRUTH_FILE = "coco_ground_truth.json"
COCO_RESULTS_FILE = "coco_results.json"
CITYSCAPES_PREDICTIONS_DIR = "cityscapes_predictions"
TABLE_METRICS = ("cityscapes", "coco")


class PredictionWriter:
    """Takes one :class:`Prediction` per ground-truth image, checks it, and writes it as COCO results and,
    where the ground truth has Cityscapes gtFine files, in the official Cityscapes format.

    COCO results accumulate in memory as RLE (small); Cityscapes masks go to disk at once, so a
    whole validation set never sits in memory. :meth:`close` checks that every image was predicted
    and writes the files.
    """

    def __init__(self, gt: GroundTruth, out_dir: str | Path, fresh: bool = True):
        """``fresh``: start the Cityscapes partial folder anew (a sharded evaluation's other ranks add to it)."""
        self.gt = gt
        self.out_dir = Path(out_dir)
        self.results: list[dict] = []
        self.seen: set[str] = set()
        self.cityscapes_dir: Path | None = None
        if gt.has_cityscapes_files:
            self.cityscapes_dir = self.out_dir / f".{CITYSCAPES_PREDICTIONS_DIR}.partial"
            if fresh:
                shutil.rmtree(self.cityscapes_dir, ignore_errors=True)
            self.cityscapes_dir.mkdir(parents=True, exist_ok=True)

    def add(self, image_id: str, prediction: Prediction) -> None:
        self.gt.check_prediction(image_id, prediction)
        if image_id in self.seen:
            raise EvaluationError(image_id, "image predicted twice")
        self.seen.add(image_id)
        self.results += coco_results(self.gt, image_id, prediction)
        if self.cityscapes_dir is not None:
            write_cityscapes_prediction(self.gt, image_id, prediction, self.cityscapes_dir)

    def close(self) -> None:
        missing = [image_id for image_id in self.gt.image_ids if image_id not in self.seen]
        if missing:
            raise EvaluationError(missing[0], f"no prediction for {len(missing)} image(s) of the {self.gt.source}: "
                                              f"{missing[:5]}")
        write_json_atomic(self.out_dir / COCO_GROUND_TRUTH_FILE, self.gt.coco)
        write_json_atomic(self.out_dir / COCO_RESULTS_FILE, self.results)
        if self.cityscapes_dir is not None:
            final = self.out_dir / CITYSCAPES_PREDICTIONS_DIR
            shutil.rmtree(final, ignore_errors=True)
            os.replace(self.cityscapes_dir, final)


def _zero_scores(gt: GroundTruth) -> dict:
    """AP 0 for every class with ground truth (``None`` for the others): what no prediction at all scores."""
    present = {a["category_id"] for a in gt.coco["annotations"]}
    per_class = {name: ({"ap": 0.0, "ap50": 0.0} if cid in present else {"ap": None, "ap50": None})
                 for name, cid in zip(gt.classes.names, gt.classes.dataset_ids, strict=True)}
    return {"ap": 0.0, "ap50": 0.0, "per_class": per_class}


def resolve_table_metric(gt: GroundTruth, table_metric: str | None) -> str:
    """The metric the tables print: as given (checked), else the official one on Cityscapes and COCO elsewhere."""
    official = gt.has_cityscapes_files
    table_metric = table_metric or ("cityscapes" if official else "coco")
    if table_metric not in TABLE_METRICS:
        raise ConfigError(None, "eval.table_metric", f"unknown metric {table_metric!r}; use one of {TABLE_METRICS}")
    if table_metric == "cityscapes" and not official:
        raise ConfigError(None, "eval.table_metric", f"'cityscapes' needs Cityscapes gtFine files; the {gt.source} "
                                                     "has none (use 'coco')")
    return table_metric


def score(gt: GroundTruth, out_dir: str | Path, table_metric: str | None = None, info: Mapping | None = None,
          allow_empty: bool = False) -> dict:
    """Both metrics from the files a :class:`PredictionWriter` wrote into ``out_dir``; writes ``metrics.json``.

    ``table_metric`` is the metric whose AP the tables print (``eval.table_metric`` of the config):
    ``cityscapes`` (the official evaluator, Cityscapes only) or ``coco``; by default the official
    one where it applies, else COCO.

    An empty prediction set is an error, unless ``allow_empty``: a model that was run on every image and
    found no instance (an untrained one) scores 0, and ``metrics["warning"]`` says so.
    """
    out_dir = Path(out_dir)
    table_metric = resolve_table_metric(gt, table_metric)
    official = gt.has_cityscapes_files
    metrics = {"dataset": gt.classes.dataset, "ground_truth": gt.source, "num_images": len(gt.image_ids),
               **(info or {})}
    if allow_empty and not json.loads((out_dir / COCO_RESULTS_FILE).read_text()):
        zero = _zero_scores(gt)
        metrics |= {"coco": zero, **({"cityscapes": zero} if official else {}),
                    "warning": "the model predicted no instance on any image: AP is 0"}
    else:
        metrics["coco"] = coco_mask_ap(gt, out_dir / COCO_RESULTS_FILE)
        if official:
            metrics["cityscapes"] = cityscapes_mask_ap(gt, out_dir / CITYSCAPES_PREDICTIONS_DIR, out_dir)
    metrics |= {"table_metric": table_metric, "ap": metrics[table_metric]["ap"], "ap50": metrics[table_metric]["ap50"]}
    write_json_atomic(out_dir / METRICS_FILE, metrics)
    return metrics


def evaluate_predictions(
    predictions: Mapping[str, Prediction],
    gt: GroundTruth,
    out_dir: str | Path,
    table_metric: str | None = None,
) -> dict:
    """Score ``{image_id: Prediction}`` (one per ground-truth image) with both metrics; see :func:`score`."""
    table_metric = resolve_table_metric(gt, table_metric)
    writer = PredictionWriter(gt, out_dir)
    for image_id, prediction in predictions.items():
        writer.add(image_id, prediction)
    writer.close()
    return score(gt, out_dir, table_metric, {"num_predictions": len(writer.results)})


def eval_options(cfg: Config) -> dict:
    """:func:`evaluate_model`'s keyword arguments from a config (``eval`` section, ``data.num_workers``)."""
    return {"top_k": cfg.eval.top_k, "batch_size": cfg.eval.batch_size, "num_workers": cfg.data.num_workers,
            "table_metric": cfg.eval.table_metric[cfg.data.dataset]}


def evaluate_model(
    model: nn.Module,
    dataset: InstanceDataset,
    out_dir: str | Path,
    *,
    top_k: int = 100,
    batch_size: int = 1,
    num_workers: int = 0,
    table_metric: str | None = None,
    progress: bool = False,
    ctx: Context | None = None,
) -> dict:
    """Run ``model`` over ``dataset`` (on the model's device, in eval mode, without gradients), keep the
    ``top_k`` instances per image (:func:`instance_inference`), write predictions and ``metrics.json``
    into ``out_dir``, and return the metrics.

    ``model(images)`` takes ``[B, 3, H, W]`` floats in ``[0, 1]`` and returns a ``SegmentationOutput``.
    The dataset's transform gives the evaluation view (e.g. :func:`castlib.data.val_dataset`); masks
    are brought back to the size of the ground truth, which is read from the dataset's own files.
    ``ctx``: the processes of a ``torchrun`` (every one calls this), which share the images (module docstring).
    """
    sharded = ctx is not None and ctx.distributed
    rank, world = (ctx.rank, ctx.world) if sharded else (0, 1)
    gt = GroundTruth.from_dataset(dataset)
    table_metric = resolve_table_metric(gt, table_metric)
    if sharded:  # rank 0 starts the partial folder before the others write into it
        if rank == 0:
            PredictionWriter(gt, out_dir)
        dist.barrier()
    writer = PredictionWriter(gt, out_dir, fresh=not sharded)
    images_only = _without_annotations(dataset)
    if sharded:
        images_only = Subset(images_only, range(rank, len(images_only), world))
    loader = make_loader(images_only, batch_size, seed=0, shuffle=False, num_workers=num_workers, drop_last=False)
    device, was_training = model_device(model), model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc="evaluate", disable=not progress):
                images = TF.to_dtype(batch.images, torch.float32, scale=True).to(device)
                predictions = instance_inference(model(images), batch.sizes, top_k, input_size=tuple(images.shape[-2:]),
                                                 output_sizes=[gt.sizes[i] for i in batch.image_ids])
                for image_id, prediction in zip(batch.image_ids, predictions, strict=True):
                    writer.add(image_id, prediction)
    finally:
        model.train(was_training)
    if sharded:
        return _gather_and_score(writer, rank, world, table_metric, top_k, model, device)
    writer.close()
    info = {"num_predictions": len(writer.results), "top_k": top_k, "model": type(model).__name__,
            "device": str(device)}
    return score(gt, out_dir, table_metric, info, allow_empty=True)


def _gather_and_score(writer: PredictionWriter, rank: int, world: int, table_metric: str, top_k: int,
                      model: nn.Module, device: torch.device) -> dict:
    """A sharded evaluation's end: every rank's COCO results and predicted ids through per-rank files, rank 0
    closes the writer and scores, and broadcasts the metrics."""
    shard = writer.out_dir / f".shard{rank}.json"
    write_json_atomic(shard, {"results": writer.results, "seen": sorted(writer.seen)})
    dist.barrier()
    metrics = [None]
    if rank == 0:
        for other in range(1, world):
            path = writer.out_dir / f".shard{other}.json"
            part = json.loads(path.read_text())
            writer.results += part["results"]
            writer.seen |= set(part["seen"])
            path.unlink()
        shard.unlink()
        writer.close()
        info = {"num_predictions": len(writer.results), "top_k": top_k, "model": type(model).__name__,
                "device": str(device)}
        metrics = [score(writer.gt, writer.out_dir, table_metric, info, allow_empty=True)]
    dist.broadcast_object_list(metrics, src=0)
    return metrics[0]


def _without_annotations(dataset: InstanceDataset) -> InstanceDataset:
    """The same images and transform, without decoding annotations again (the ground truth has them)."""
    view = copy.copy(dataset)
    view.load_annotations = False
    return view

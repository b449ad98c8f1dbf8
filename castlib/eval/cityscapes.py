"""The official Cityscapes instance-level evaluator (cityscapesscripts'
``evaluation/evalInstanceLevelSemanticLabeling.py``), driven in-process (spec section 10).

Predictions are written in its own format: per image a ``<image id>_pred.txt`` listing
``<mask png> <label id> <confidence>`` lines, and one binary PNG per instance. The ground truth is
the dataset's ``gtFine/<split>/<city>/*_gtFine_instanceIds.png``, read by the evaluator itself; its
instance cache json is written into the output folder, never into the dataset. The evaluator's own
functions do every step (ground-truth instances, matching, AP per class and overlap, averages); it
is configured through a private copy of its module-level ``args``, so nothing global changes.

Two things the kit adds around it, both without changing a score:

- cityscapesScripts 2.3.0 calls ``np.in1d``, which numpy 2.4 removed; it is lent ``np.isin``'s
  flattened result while the evaluator runs.
- Its AP loop raises ``IndexError`` for a class with ground truth whose only predictions are all
  ignored (they lie on void or too-small regions) at some overlap (mcordts/cityscapesScripts#89).
  Then each (class, overlap) cell is evaluated on its own, and a crashing cell gets the AP the
  evaluator gives a class with ground truth and no counted prediction: 0.
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path

import numpy as np
from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as official
from PIL import Image

from castlib.errors import EvaluationError
from castlib.eval.coco import percent
from castlib.eval.ground_truth import GroundTruth
from castlib.eval.inference import Prediction
from castlib.io import write_json_atomic, write_text_atomic

MASK_DIR = "masks"


def prediction_file(predictions_dir: Path, image_id: str) -> Path:
    return predictions_dir / f"{image_id}_pred.txt"


def write_cityscapes_prediction(gt: GroundTruth, image_id: str, prediction: Prediction, predictions_dir: Path) -> None:
    """One image's instances as binary mask PNGs and the ``_pred.txt`` that lists them."""
    (predictions_dir / MASK_DIR).mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (mask, label, score) in enumerate(zip(prediction.masks.numpy(), prediction.labels.tolist(),
                                                  prediction.scores.tolist(), strict=True)):
        name = f"{MASK_DIR}/{image_id}_{k:03d}.png"
        Image.fromarray(mask).save(predictions_dir / name)
        lines.append(f"{name} {gt.classes.dataset_ids[int(label)]} {float(score)!r}\n")
    write_text_atomic(prediction_file(predictions_dir, image_id), "".join(lines))


def _check_prediction_files(gt: GroundTruth, predictions_dir: Path) -> list[Path]:
    """Every image has a ``_pred.txt`` whose masks exist at the ground truth's size; not all are empty."""
    files, count = [], 0
    for image_id in gt.image_ids:
        path = prediction_file(predictions_dir, image_id)
        if not path.is_file():
            raise EvaluationError(path, f"no prediction file for image {image_id!r}")
        for line in path.read_text().splitlines():
            mask_path = predictions_dir / line.split(" ")[0]
            if not mask_path.is_file():
                raise EvaluationError(path, f"lists mask {mask_path}, which does not exist")
            with Image.open(mask_path) as im:
                width, height = im.size
            if (height, width) != gt.sizes[image_id]:
                raise EvaluationError(mask_path, f"mask is {width}x{height} but image {image_id!r} is "
                                                 f"{gt.sizes[image_id][1]}x{gt.sizes[image_id][0]}")
            count += 1
        files.append(path)
    if count == 0:
        raise EvaluationError(predictions_dir, f"empty prediction set: no instance predicted on any of the "
                                               f"{len(files)} images of the {gt.source}")
    return files


def _evaluator_args(predictions_dir: Path, work_dir: Path):
    """A private copy of the evaluator's module-level ``args``, pointed at our folders."""
    args = copy.copy(official.args)
    args.predictionPath = str(predictions_dir.resolve())
    args.predictionWalk = None
    args.gtInstancesFile = str(work_dir.resolve() / "cityscapes_gt_instances.json")
    args.exportFile = str(work_dir.resolve() / "cityscapes_results.json")
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    args.instLabels = []
    return args


@contextlib.contextmanager
def _numpy_in1d():
    """Lend numpy 2.4 the ``np.in1d`` that cityscapesScripts 2.3.0 calls (same values as ``np.isin``, flat)."""
    if hasattr(np, "in1d"):
        yield
        return
    np.in1d = lambda values, test, **kwargs: np.isin(values, test, **kwargs).ravel()
    try:
        yield
    finally:
        del np.in1d


def _ap_matrix(matches: dict, args) -> np.ndarray:
    """The evaluator's AP array ``[distances, classes, overlaps]``, cell by cell where it hits issue #89."""
    try:
        return official.evaluateMatches(matches, args)
    except IndexError:
        pass
    ap = np.zeros((1, len(args.instLabels), len(args.overlaps)))
    for c, label in enumerate(args.instLabels):
        for o, overlap in enumerate(args.overlaps):
            cell = copy.copy(args)
            cell.instLabels, cell.overlaps = [label], np.array([overlap])
            try:
                ap[0, c, o] = official.evaluateMatches(matches, cell)[0, 0, 0]
            except IndexError:
                ap[0, c, o] = 0.0
    return ap


def cityscapes_mask_ap(gt: GroundTruth, predictions_dir: str | Path, work_dir: str | Path) -> dict:
    """``{"ap", "ap50", "per_class": {name: {"ap", "ap50"}}}`` (percentages) from the official evaluator.

    ``gt`` must come from a Cityscapes dataset (:meth:`GroundTruth.from_dataset`); the evaluator's
    ground-truth cache and its full result json (``cityscapes_results.json``) go to ``work_dir``.
    """
    predictions_dir, work_dir = Path(predictions_dir), Path(work_dir)
    if gt.classes.dataset != "cityscapes" or not gt.annotation_files:
        raise EvaluationError(gt.source, "the official Cityscapes evaluator needs the gtFine files of a "
                                         "Cityscapes dataset (GroundTruth.from_dataset)")
    prediction_files = [str(p.resolve()) for p in _check_prediction_files(gt, predictions_dir)]
    gt_files = [str(gt.annotation_files[image_id].resolve()) for image_id in gt.image_ids]
    work_dir.mkdir(parents=True, exist_ok=True)
    args = _evaluator_args(predictions_dir, work_dir)
    Path(args.gtInstancesFile).unlink(missing_ok=True)  # a stale cache would score against old ground truth
    log = io.StringIO()
    with _numpy_in1d(), contextlib.redirect_stdout(log):
        try:
            official.setInstanceLabels(args)
            gt_instances = official.getGtInstances(gt_files, args)
            matches = official.matchGtWithPreds(prediction_files, gt_files, gt_instances, args)
            aps = _ap_matrix(matches, args)
            averages = official.computeAverages(aps, args)
        except SystemExit as e:  # the evaluator's printError() exits after printing the reason
            raise EvaluationError(predictions_dir, f"the Cityscapes evaluator stopped: {log.getvalue().strip()}") from e
    results = official.prepareJSONDataForResults(averages, aps, args)
    write_json_atomic(args.exportFile, _json_ready(results))
    per_class = {name: {"ap": percent(averages["classes"][name]["ap"]),
                        "ap50": percent(averages["classes"][name]["ap50%"])} for name in args.instLabels}
    return {"ap": percent(averages["allAp"]), "ap50": percent(averages["allAp50%"]), "per_class": per_class}


def _json_ready(obj):
    """NaN (a class without ground truth) as null, numpy numbers as Python numbers."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        value = float(obj)
        return None if np.isnan(value) else value
    return obj

"""Ground truth for evaluation, converted from the dataset's own annotation files into COCO format.

Each image's masks and contiguous labels come from :meth:`InstanceDataset.decode` of its annotation
file (Cityscapes ``_gtFine_instanceIds.png``, ADE20K ``annotations_instance`` PNG). The COCO json
holds one annotation per instance (RLE segmentation, ``iscrowd`` 0, area, bbox), one per crowd region
of :meth:`InstanceDataset.decode_crowd` (Cityscapes ``cargroup`` ...: ``iscrowd`` 1, as detectron2's
Cityscapes loader keeps them, so pycocotools ignores a prediction on a group instead of counting it a
false positive), the image sizes, and the categories of ``dataset.classes`` with the dataset's own
ids (Cityscapes label ids 24-33, ADE20K category ids 1-100).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from castlib.data.classes import ClassList
from castlib.data.datasets import InstanceDataset
from castlib.errors import EvaluationError
from castlib.eval.inference import Prediction


def encode_rle(mask: np.ndarray) -> dict:
    """COCO run-length encoding of one ``[H, W]`` bool mask, with ``counts`` as text (json-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def check_labels(where: str, labels: np.ndarray, classes: ClassList) -> None:
    """Labels must be contiguous training labels ``0..C-1`` of ``classes``."""
    bad = labels[(labels < 0) | (labels >= len(classes))]
    if len(bad):
        raise EvaluationError(where, f"labels {sorted(set(bad.tolist()))} are outside 0..{len(classes) - 1} "
                                     f"({classes.dataset}: {len(classes)} classes)")


@dataclass
class GroundTruth:
    """The instances of an evaluation set: COCO json, image sizes, and (Cityscapes) the annotation files.

    ``coco`` is a COCO instances dict; ``coco_ids`` maps the dataset's image id to the integer COCO id;
    ``annotation_files`` (image id -> path) lets the official Cityscapes evaluator read the ground truth
    straight from the dataset; ``source`` says where it came from, for error messages.
    """

    classes: ClassList
    coco: dict
    coco_ids: dict[str, int]
    sizes: dict[str, tuple[int, int]]
    source: str
    annotation_files: dict[str, Path] = field(default_factory=dict)

    @property
    def image_ids(self) -> list[str]:
        return list(self.coco_ids)

    @property
    def has_cityscapes_files(self) -> bool:
        """Whether the official Cityscapes evaluator can read this ground truth from its gtFine files."""
        return self.classes.dataset == "cityscapes" and bool(self.annotation_files)

    def check_prediction(self, image_id: str, prediction: Prediction) -> None:
        """A prediction must be for an image of this set, with masks at the image's size and valid labels."""
        if image_id not in self.sizes:
            raise EvaluationError(image_id, f"image id is not in the ground truth ({self.source})")
        masks, labels, scores = prediction.masks, prediction.labels, prediction.scores
        if masks.ndim != 3 or masks.dtype != torch.bool:
            raise EvaluationError(image_id, f"predicted masks must be bool [N, H, W], got {masks.dtype} "
                                            f"{list(masks.shape)}")
        height, width = self.sizes[image_id]
        if tuple(masks.shape[1:]) != (height, width):
            raise EvaluationError(image_id, f"predicted masks are {masks.shape[2]}x{masks.shape[1]} but the "
                                            f"ground-truth image is {width}x{height}")
        if not len(masks) == len(labels) == len(scores):
            raise EvaluationError(image_id, f"{len(masks)} masks, {len(labels)} labels and {len(scores)} scores")
        check_labels(image_id, labels.numpy(), self.classes)
        if not torch.isfinite(scores).all():
            raise EvaluationError(image_id, "scores must be finite")

    @classmethod
    def from_masks(
        cls,
        classes: ClassList,
        annotations: Mapping[str, tuple[np.ndarray, np.ndarray]],
        source: str = "hand-built ground truth",
        crowd: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> GroundTruth:
        """From ``{image_id: (masks [N, H, W] bool, labels [N] contiguous)}`` and optional crowd regions in
        the same form."""
        crowd = crowd or {}
        items = ((image_id, masks, labels, crowd.get(image_id)) for image_id, (masks, labels) in annotations.items())
        return cls._encode(classes, items, source, {})

    @classmethod
    def from_dataset(cls, dataset: InstanceDataset) -> GroundTruth:
        """Decode every image's annotation file of ``dataset`` (in ``dataset.image_ids`` order), one at a time."""
        files = {image_id: dataset.annotation_path(image_id) for image_id in dataset.image_ids}
        items = ((image_id, *dataset.decode(path), dataset.decode_crowd(path)) for image_id, path in files.items())
        source = f"{dataset.classes.dataset} {dataset.split} set at {dataset.annotation_root}"
        return cls._encode(dataset.classes, items, source, files)

    @classmethod
    def _encode(
        cls,
        classes: ClassList,
        items: Iterable[tuple[str, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]],
        source: str,
        annotation_files: dict[str, Path],
    ) -> GroundTruth:
        images, anns, coco_ids, sizes = [], [], {}, {}
        for image_id, masks, labels, crowd in items:
            masks, labels = np.asarray(masks, bool), np.asarray(labels, np.int64)
            if image_id in coco_ids:
                raise EvaluationError(image_id, f"image id appears twice in the {source}")
            if masks.ndim != 3 or len(masks) != len(labels):
                raise EvaluationError(image_id, f"ground truth needs masks [N, H, W] and labels [N], got "
                                                f"{masks.shape} and {labels.shape}")
            check_labels(image_id, labels, classes)
            coco_ids[image_id] = len(coco_ids) + 1
            sizes[image_id] = (int(masks.shape[1]), int(masks.shape[2]))
            images.append({"id": coco_ids[image_id], "file_name": image_id, "height": sizes[image_id][0],
                           "width": sizes[image_id][1]})
            regions = [(m, lab, 0) for m, lab in zip(masks, labels, strict=True)]
            if crowd is not None:
                crowd_masks, crowd_labels = np.asarray(crowd[0], bool), np.asarray(crowd[1], np.int64)
                check_labels(image_id, crowd_labels, classes)
                regions += [(m, lab, 1) for m, lab in zip(crowd_masks, crowd_labels, strict=True)]
            for mask, label, iscrowd in regions:
                rle = encode_rle(mask)
                anns.append({"id": len(anns) + 1, "image_id": coco_ids[image_id], "segmentation": rle,
                             "category_id": classes.dataset_ids[label], "iscrowd": iscrowd,
                             "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist()})
        categories = [{"id": i, "name": n} for i, n in zip(classes.dataset_ids, classes.names, strict=True)]
        coco = {"images": images, "annotations": anns, "categories": categories}
        return cls(classes, coco, coco_ids, sizes, source, annotation_files)

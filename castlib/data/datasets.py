"""Readers of the real Cityscapes and ADE20K instance formats (also what the synthetic sets write).

The same code reads real and synthetic data. Every malformed input raises
:class:`~castlib.errors.DataError` naming the file: a missing root or folder, an image without
its annotation, an annotation PNG of the wrong mode, an unknown class id, an id from a split
file that is not under the root.

Pseudo-labels are written in the dataset's own format under another root; pass that root as
``annotation_root`` and the ordinary reader serves them.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors

from castlib.data.classes import ADE20K, CITYSCAPES, ClassList, id2label
from castlib.data.sample import InstanceSample
from castlib.errors import DataError
from castlib.io import save_image_atomic

SPLITS = ("train", "val")


def read_png(path: Path, modes: Sequence[str], what: str) -> np.ndarray:
    """Read an annotation PNG and check its mode (``I;16`` for 16-bit grey, ``RGB`` ...)."""
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise DataError(path, f"{what} must be a PNG file, found {im.format}")
            if im.mode not in modes:
                raise DataError(path, f"{what} has PIL mode {im.mode!r}; expected one of {list(modes)}")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(path, f"cannot read {what}: {e}") from e


def read_rgb(path: Path) -> tv_tensors.Image:
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(path, f"cannot read image: {e}") from e
    return tv_tensors.Image(torch.from_numpy(array.copy()).permute(2, 0, 1))


class InstanceDataset(Dataset, abc.ABC):
    """Images of one split with their instance masks and contiguous class labels."""

    classes: ClassList

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_ids: Sequence[str] | None = None,
        annotation_root: str | Path | None = None,
        load_annotations: bool = True,
        transform: Callable[[InstanceSample], InstanceSample] | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.annotation_root = Path(annotation_root) if annotation_root is not None else self.root
        self.load_annotations = load_annotations
        self.transform = transform
        if not self.root.is_dir():
            raise DataError(self.root, "dataset root does not exist (set data.root in the config or pass "
                                       "--data-root; see docs/data_and_formats.md 'Real datasets')")
        image_dir = self.image_dir()
        if not image_dir.is_dir():
            raise DataError(image_dir, f"missing image folder: is {self.root} a {self.classes.dataset} root?")
        available = self.list_image_ids()
        if image_ids is None:
            self.image_ids = available
        else:
            known = set(available)
            for image_id in image_ids:
                if image_id not in known:
                    raise DataError(self.image_path(image_id), f"image id {image_id!r} not found in {image_dir}")
            self.image_ids = list(image_ids)
        if load_annotations:
            for image_id in self.image_ids:
                ann = self.annotation_path(image_id)
                if not ann.is_file():
                    raise DataError(ann, f"annotation missing for image {self.image_path(image_id)}")

    # Format-specific parts -------------------------------------------------------------------
    @abc.abstractmethod
    def image_dir(self) -> Path:
        """The folder holding this split's images."""

    @abc.abstractmethod
    def list_image_ids(self) -> list[str]:
        """Every image id of the split, sorted."""

    @abc.abstractmethod
    def image_path(self, image_id: str) -> Path:
        """Where the image of ``image_id`` lies."""

    @abc.abstractmethod
    def annotation_path(self, image_id: str) -> Path:
        """Where the instance annotation of ``image_id`` lies (under ``annotation_root``)."""

    @abc.abstractmethod
    def decode(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Masks ``[N, H, W]`` bool and contiguous labels ``[N]`` from an annotation file."""

    @abc.abstractmethod
    def encode(self, masks: np.ndarray, labels: np.ndarray) -> Image.Image:
        """The annotation image of non-overlapping masks ``[N, H, W]`` with contiguous ``labels``."""

    def decode_crowd(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        """Crowd regions ``[M, H, W]`` bool with contiguous labels ``[M]``: areas of a thing class whose
        instances are not told apart. They are no training instance; evaluation ignores predictions on
        them (COCO ``iscrowd`` 1). None: this format has none."""
        return None

    # Shared ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> InstanceSample:
        image_id = self.image_ids[index]
        path = self.image_path(image_id)
        image = read_rgb(path)
        height, width = image.shape[-2:]
        if self.load_annotations:
            ann = self.annotation_path(image_id)
            masks, labels = self.decode(ann)
            if masks.shape[1:] != (height, width):
                raise DataError(ann, f"annotation is {masks.shape[2]}x{masks.shape[1]} but image {path} "
                                     f"is {width}x{height}")
        else:
            masks, labels = np.zeros((0, height, width), bool), np.zeros(0, np.int64)
        sample = InstanceSample(
            image=image,
            masks=tv_tensors.Mask(torch.from_numpy(masks)),
            labels=torch.from_numpy(labels),
            image_id=image_id,
            path=str(path),
        )
        return self.transform(sample) if self.transform is not None else sample

    def write_annotation(self, root: str | Path, image_id: str, masks: np.ndarray, labels: np.ndarray) -> Path:
        """Write an annotation in this dataset's own format under another ``root`` (pseudo-labels):
        the ordinary reader with ``annotation_root=root`` reads it back."""
        masks = np.asarray(masks, bool)
        if masks.ndim != 3 or len(masks) != len(labels):
            raise ValueError(f"{image_id}: expected masks [N, H, W] and N labels, got {masks.shape} and {len(labels)}")
        if masks.sum(0).max(initial=0) > 1:
            raise ValueError(f"{image_id}: masks overlap; paint them without overlap first")
        path = self.annotation_path(image_id).relative_to(self.annotation_root)
        return save_image_atomic(Path(root) / path, self.encode(masks, np.asarray(labels)))

    def image_classes(self, image_id: str) -> set[int]:
        """Contiguous labels of the instances in one image (for class-stratified splits)."""
        return set(self.decode(self.annotation_path(image_id))[1].tolist())


def encode_ade20k(masks: np.ndarray, labels: np.ndarray, classes: ClassList) -> Image.Image:
    """An ``annotations_instance`` RGB PNG: R = category id, G = instance id (1..255 in order), B = 0."""
    if len(masks) > 255:
        raise ValueError(f"{len(masks)} instances do not fit the 8-bit G channel (at most 255)")
    rgb = np.zeros((*masks.shape[1:], 3), np.uint8)
    for k, (mask, label) in enumerate(zip(masks, np.asarray(labels).tolist(), strict=True), start=1):
        rgb[mask, 0] = classes.dataset_ids[label]
        rgb[mask, 1] = k
    return Image.fromarray(rgb)


def _stack(masks: list[np.ndarray], labels: list[int], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    if not masks:
        return np.zeros((0, *shape), bool), np.zeros(0, np.int64)
    return np.stack(masks), np.asarray(labels, np.int64)


class CityscapesInstances(InstanceDataset):
    """``leftImg8bit/{split}/{city}/{id}_leftImg8bit.png`` + ``gtFine/.../{id}_gtFine_instanceIds.png``.

    A thing pixel holds ``label_id * 1000 + instance``; smaller values are a label id (stuff, or a
    crowd region such as ``cargroup``, which is not an instance). Label ids come from
    cityscapesscripts; classes with instances that the benchmark ignores (caravan, trailer) are skipped.
    """

    classes = CITYSCAPES
    INSTANCE_MODES = ("I;16", "I;16B", "I;16L", "I")

    def image_dir(self) -> Path:
        return self.root / "leftImg8bit" / self.split

    def list_image_ids(self) -> list[str]:
        suffix = "_leftImg8bit.png"
        return sorted(p.name[: -len(suffix)] for p in self.image_dir().glob(f"*/*{suffix}"))

    def image_path(self, image_id: str) -> Path:
        city = image_id.split("_")[0]
        return self.image_dir() / city / f"{image_id}_leftImg8bit.png"

    def annotation_path(self, image_id: str) -> Path:
        city = image_id.split("_")[0]
        return self.annotation_root / "gtFine" / self.split / city / f"{image_id}_gtFine_instanceIds.png"

    def decode(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        return self._decode(path, crowd=False)

    def decode_crowd(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """The group regions (``cargroup``, ``persongroup`` ...): a thing label id without instance number,
        kept as ``iscrowd`` regions as detectron2's Cityscapes loader does."""
        return self._decode(path, crowd=True)

    def _decode(self, path: Path, crowd: bool) -> tuple[np.ndarray, np.ndarray]:
        ids = read_png(path, self.INSTANCE_MODES, "Cityscapes instance-id annotation").astype(np.int64)
        masks, labels = [], []
        for value in np.unique(ids):
            label_id = int(value) // 1000 if value >= 1000 else int(value)
            label = id2label.get(label_id)
            if label is None:
                raise DataError(path, f"unknown Cityscapes label id {label_id} (pixel value {value})")
            if value >= 1000 and not label.hasInstances:
                raise DataError(path, f"pixel value {value} encodes an instance of {label.name!r}, "
                                      "a class without instances")
            if (value < 1000) != crowd or not label.hasInstances or label.ignoreInEval:
                continue
            masks.append(ids == value)
            labels.append(self.classes.label_of_id(label_id))
        return _stack(masks, labels, ids.shape)

    def encode(self, masks: np.ndarray, labels: np.ndarray) -> Image.Image:
        """A 16-bit ``_instanceIds.png``: ``label_id * 1000 + k`` for the k-th instance of a class."""
        ids = np.zeros(masks.shape[1:], np.uint16)
        count: dict[int, int] = {}
        for mask, label in zip(masks, labels.tolist(), strict=True):
            label_id = self.classes.dataset_ids[label]
            ids[mask] = label_id * 1000 + count.get(label_id, 0)
            count[label_id] = count.get(label_id, 0) + 1
        return Image.fromarray(ids)


class ADE20KInstances(InstanceDataset):
    """``images/{training,validation}/{id}.jpg`` + ``annotations_instance/.../{id}.png``.

    The annotation is an RGB PNG: R = category id of the instance benchmark (1..100), G = instance
    id (0 = no instance). The category list is read from ``ade20k_instance_imgCatIds.json`` in the
    root when present (Mask2Former's data preparation ships it), else the built-in 100 classes.
    """

    CATEGORY_FILE = "ade20k_instance_imgCatIds.json"

    def __init__(self, root: str | Path, *args, **kwargs):
        self.classes = self._read_categories(Path(root) / self.CATEGORY_FILE)
        super().__init__(root, *args, **kwargs)

    @staticmethod
    def _read_categories(path: Path) -> ClassList:
        if not path.is_file():
            return ADE20K
        try:
            cats = sorted(json.loads(path.read_text())["categories"], key=lambda c: int(c["id"]))
            return ClassList("ade20k", tuple(str(c["name"]) for c in cats), tuple(int(c["id"]) for c in cats))
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(path, f"not a category list with 'categories': [{{'id', 'name'}}] ({e})") from e

    @property
    def folder(self) -> str:
        return "training" if self.split == "train" else "validation"

    def image_dir(self) -> Path:
        return self.root / "images" / self.folder

    def list_image_ids(self) -> list[str]:
        return sorted(p.stem for p in self.image_dir().glob("*.jpg"))

    def image_path(self, image_id: str) -> Path:
        return self.image_dir() / f"{image_id}.jpg"

    def annotation_path(self, image_id: str) -> Path:
        return self.annotation_root / "annotations_instance" / self.folder / f"{image_id}.png"

    def decode(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        rgb = read_png(path, ("RGB",), "ADE20K instance annotation")
        category, instance = rgb[..., 0].astype(np.int64), rgb[..., 1].astype(np.int64)
        known = set(self.classes.dataset_ids)
        masks, labels = [], []
        for value in np.unique(instance):
            if value == 0:
                continue
            mask = instance == value
            cats = np.unique(category[mask])
            if len(cats) != 1:
                raise DataError(path, f"instance {value} (G channel) spans categories {cats.tolist()}")
            if int(cats[0]) not in known:
                raise DataError(path, f"unknown ADE20K category id {int(cats[0])} (R channel) for instance {value}")
            masks.append(mask)
            labels.append(self.classes.label_of_id(int(cats[0])))
        return _stack(masks, labels, instance.shape)

    def encode(self, masks: np.ndarray, labels: np.ndarray) -> Image.Image:
        return encode_ade20k(masks, labels, self.classes)


# The reader of each of castlib.paper.DATASET_NAMES, keyed by its class list's name.
DATASETS: dict[str, type[InstanceDataset]] = {CITYSCAPES.dataset: CityscapesInstances, ADE20K.dataset: ADE20KInstances}

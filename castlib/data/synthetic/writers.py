"""Writers: synthetic sets in the real Cityscapes and ADE20K on-disk formats, and their manifest.

The Cityscapes writer stores a layout as ``_gtFine_polygons.json`` and rasterises it with cityscapesscripts' own
``createInstanceImage`` / ``createLabelImage`` (the tools that made the real ``_instanceIds.png`` and
``_labelIds.png``); the ADE20K writer stores ``annotations_instance`` PNGs with R = category id, G = instance id.
The image is rendered from the same rasterisation (:mod:`castlib.data.synthetic.drawing`), so what the loader
reads is what was drawn. :func:`generate` writes a whole set, its manifest last.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image

from castlib.data.classes import ADE20K, CITYSCAPES
from castlib.data.datasets import ADE20KInstances, encode_ade20k
from castlib.data.domains import TARGET, DomainStyle, domain_style
from castlib.data.synthetic.drawing import SyntheticSpec, ade20k_scene, cityscapes_scene, visible_instances
from castlib.data.synthetic.layouts import Layout
from castlib.errors import DataError
from castlib.io import DiskFullError, human_size, save_image_atomic, write_json_atomic, write_text_atomic

MANIFEST = "synthetic.json"
MARKER = ".castlib-synthetic"  # written first: a folder with it is one castlib is (re)writing
MIN_SIDE = 32  # pixels; smaller images leave no room for the layouts'
SET_FOLDERS = ("leftImg8bit", "gtFine", "images", "annotations_instance")  # what the writers draw into

_CITIES = {"train": ("synthaachen", "synthbremen", "synthjena"), "val": ("synthlindau", "synthmunster")}


def cityscapes_image_id(split: str, index: int) -> str:
    """``{city}_{seq:06d}_{frame:06d}`` like ``aachen_000000_000019``; frame 19 is the annotated one."""
    cities = _CITIES[split]
    return f"{cities[index % len(cities)]}_{index:06d}_000019"


def ade20k_image_id(split: str, index: int) -> str:
    return f"ADE_{'train' if split == 'train' else 'val'}_{index + 1:08d}"


def cityscapes_annotation(layout: Layout) -> dict:
    """The ``_gtFine_polygons.json`` content of a layout."""
    return {
        "imgHeight": layout.height,
        "imgWidth": layout.width,
        "objects": [{"label": r.name, "polygon": r.polygon.tolist()} for r in layout.regions],
    }


def write_cityscapes_image(root: Path, split: str, index: int, spec: SyntheticSpec) -> str:
    layout, _, image = cityscapes_scene(spec, split, index)
    image_id = cityscapes_image_id(split, index)
    city = image_id.split("_")[0]
    gt = root / "gtFine" / split / city
    polygons = cityscapes_annotation(layout)
    write_text_atomic(gt / f"{image_id}_gtFine_polygons.json", json.dumps(polygons, indent=1) + "\n")
    annotation = Annotation()
    annotation.fromJsonText(json.dumps(polygons))
    instance_ids = np.asarray(createInstanceImage(annotation, "ids"), dtype=np.int64)
    save_image_atomic(gt / f"{image_id}_gtFine_instanceIds.png", Image.fromarray(instance_ids.astype(np.uint16)))
    save_image_atomic(gt / f"{image_id}_gtFine_labelIds.png", createLabelImage(annotation, "ids"))
    save_image_atomic(gt / f"{image_id}_gtFine_color.png", createLabelImage(annotation, "color"))
    save_image_atomic(root / "leftImg8bit" / split / city / f"{image_id}_leftImg8bit.png", Image.fromarray(image))
    return image_id


def write_ade20k_image(root: Path, split: str, index: int, spec: SyntheticSpec) -> str:
    layout, index_map, image = ade20k_scene(spec, split, index)
    image_id = ade20k_image_id(split, index)
    folder = "training" if split == "train" else "validation"
    save_image_atomic(root / "images" / folder / f"{image_id}.jpg", Image.fromarray(image), quality=95)
    masks, labels = visible_instances(layout, index_map, ADE20K)
    save_image_atomic(root / "annotations_instance" / folder / f"{image_id}.png", encode_ade20k(masks, labels, ADE20K))
    return image_id


def ade20k_category_file() -> dict:
    """The category list in the layout of Mask2Former's ``ade20k_instance_imgCatIds.json``."""
    return {"categories": [{"id": i, "name": n} for i, n in zip(ADE20K.dataset_ids, ADE20K.names, strict=True)]}


_WRITERS = {CITYSCAPES.dataset: write_cityscapes_image, ADE20K.dataset: write_ade20k_image}  # per dataset


def read_manifest(root: Path) -> SyntheticSpec | None:
    return _read_manifest(root)[0]


def _read_manifest(root: Path) -> tuple[SyntheticSpec | None, dict | None]:
    """The spec and domain style a set's manifest records (``None, None`` without one). Manifests from before
    styles were recorded drew the target style, which is unchanged."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None, None
    try:
        manifest = json.loads(path.read_text())
        spec = SyntheticSpec(**manifest["spec"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(path, f"not a valid synthetic-set manifest ({e})") from e
    style = manifest.get("style")
    if style is None and spec.domain == TARGET.name:
        style = _style_record(TARGET)
    return spec, style


def check_spec(spec: SyntheticSpec) -> None:
    """Range-check a spec before anything is written (``synth --train -3`` is an error, not a set)."""
    if spec.format not in _WRITERS:
        raise DataError(Path("--format"), f"unknown synthetic format {spec.format!r}; use one of {sorted(_WRITERS)}")
    for name in ("train", "val"):
        if getattr(spec, name) < 1:
            raise DataError(Path(f"--{name}"), f"needs at least 1 image, got {getattr(spec, name)}")
    sides = ("height", "width") if spec.format == "cityscapes" else ("height",)
    for name in sides:
        if getattr(spec, name) < MIN_SIDE:
            raise DataError(Path(f"--{name}"), f"must be at least {MIN_SIDE} pixels, got {getattr(spec, name)}")
    if spec.seed < 0:
        raise DataError(Path("--seed"), f"must be >= 0, got {spec.seed}")


def generate(spec: SyntheticSpec, root: str | Path, progress: bool = False) -> Path:
    """Write a synthetic set to ``root``; the manifest, written last, marks it complete.

    An existing complete set with the same spec is kept as it is; one with a different spec is an
    error (nothing already written is overwritten). An incomplete set castlib started (its marker file
    is there) is regenerated; any other non-empty folder is refused, so a real dataset root is never touched.
    """
    check_spec(spec)
    root = Path(root)
    (existing, stored_style), style = _read_manifest(root), _style_record(domain_style(spec.domain))
    if existing == spec:
        if stored_style == style:
            return root
        raise DataError(root / MANIFEST, f"drawn in another style of the {spec.domain!r} domain than this castlib "
                                         f"draws (castlib.data.domains changed since); remove the folder to redraw it")
    if existing is not None:
        raise DataError(root / MANIFEST, f"a synthetic set with another spec is already here ({existing}); "
                                         f"remove the folder or choose another output to write {spec}")
    if root.exists() and not root.is_dir():
        raise DataError(root, "exists and is not a folder; choose another output")
    if root.is_dir() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise DataError(root, "folder is not empty and is not a synthetic set castlib made; nothing was "
                                  "written (choose a new or empty folder)")
        for child in SET_FOLDERS:
            shutil.rmtree(root / child, ignore_errors=True)
    created = not root.exists()
    writer = _WRITERS[spec.format]
    jobs = [(split, i) for split in ("train", "val") for i in range(getattr(spec, split))]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc=f"synthetic {spec.format}", unit="img")
    done = 0
    try:
        write_text_atomic(root / MARKER, "a synthetic set castlib is writing or wrote; see synthetic.json\n")
        for split, i in jobs:
            writer(root, split, i, spec)
            done += 1
        if spec.format == "ade20k":
            write_json_atomic(root / ADE20KInstances.CATEGORY_FILE, ade20k_category_file())
        manifest = {"spec": asdict(spec), "style": style, "note": "synthetic data drawn by castlib"}
        write_json_atomic(root / MANIFEST, manifest)
    except DiskFullError as e:  # the set is redrawn whole on the next call: free its space now
        total = spec.train + spec.val
        per_image = (_folder_bytes(root) / done if done else
                     (e.needed or 0) * _FILES_PER_IMAGE[spec.format])  # measured, else the failed file's kind
        _remove_partial(root, created)
        raise DiskFullError(root, f"the synthetic set ({total} images, {human_size(per_image)} each)",
                            int(per_image * total), left="what was drawn of the set is removed (the next call draws "
                                                         "it whole)") from e
    return root


_FILES_PER_IMAGE = {CITYSCAPES.dataset: 5, ADE20K.dataset: 2}  # files each image writer writes


def _folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _remove_partial(root: Path, created: bool) -> None:
    """Remove what :func:`generate` wrote of an unfinished set (the folders it draws into, its marker; the root
    too when it made it)."""
    for child in SET_FOLDERS:
        shutil.rmtree(root / child, ignore_errors=True)
    for name in (MARKER, ADE20KInstances.CATEGORY_FILE):
        (root / name).unlink(missing_ok=True)
    if created and root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def _style_record(style: DomainStyle) -> dict:
    """The domain style as the manifest stores it (JSON types), so a set drawn in an older style is never reused
    and the runs that read the set (their ids hash the manifest) are new ones."""
    return json.loads(json.dumps(asdict(style)))

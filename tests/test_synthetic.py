"""Synthetic sets: written in the real formats, read back exactly as drawn, hard in the paper's way."""

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.evaluation.instances2dict import instances2dict
from cityscapesscripts.helpers.labels import name2label
from PIL import Image
from scipy.ndimage import binary_dilation

from castlib.data.classes import ADE20K, CITYSCAPES
from castlib.data.datasets import ADE20KInstances, CityscapesInstances
from castlib.data.synthetic import (
    ade20k_image_id,
    ade20k_scene,
    cityscapes_image_id,
    cityscapes_scene,
    generate,
)
from castlib.errors import DataError
from tests.conftest import ADE20K_SPEC, CITYSCAPES_SPEC


def drawn_instances(layout, index_map, names):
    """(label, mask bytes) of every visible instance of a layout, as the generator drew it."""
    out = []
    for i, region in enumerate(layout.regions, start=1):
        mask = index_map == i
        if region.instance and mask.any():
            out.append((names.index(region.name), mask.tobytes()))
    return sorted(out)


def loaded_instances(sample):
    return sorted((int(lab), m.numpy().tobytes()) for lab, m in zip(sample.labels, sample.masks, strict=True))


def test_cityscapes_tree_has_the_real_layout(cityscapes_root):
    ds = CityscapesInstances(cityscapes_root, "train")
    image_id = ds.image_ids[0]
    city = image_id.split("_")[0]
    gt = cityscapes_root / "gtFine" / "train" / city
    for suffix in ("instanceIds.png", "labelIds.png", "color.png", "polygons.json"):
        assert (gt / f"{image_id}_gtFine_{suffix}").is_file()
    assert (cityscapes_root / "leftImg8bit" / "train" / city / f"{image_id}_leftImg8bit.png").is_file()
    assert Image.open(gt / f"{image_id}_gtFine_instanceIds.png").mode == "I;16"
    assert len(CityscapesInstances(cityscapes_root, "val")) == CITYSCAPES_SPEC.val


def test_cityscapes_round_trip_masks_and_labels_equal_what_was_drawn(cityscapes_root):
    ds = CityscapesInstances(cityscapes_root, "train")
    for index in range(CITYSCAPES_SPEC.train):
        layout, index_map, image = cityscapes_scene(CITYSCAPES_SPEC, "train", index)
        sample = ds[ds.image_ids.index(cityscapes_image_id("train", index))]
        assert loaded_instances(sample) == drawn_instances(layout, index_map, CITYSCAPES.names)
        assert np.array_equal(sample.image.permute(1, 2, 0).numpy(), image)


def test_cityscapes_ids_decode_through_cityscapesscripts(cityscapes_root):
    ds = CityscapesInstances(cityscapes_root, "train")
    for image_id in ds.image_ids[:4]:
        path = ds.annotation_path(image_id)
        official = instances2dict([str(path)])[str(path.resolve())]
        theirs = sorted((name, inst["pixelCount"]) for name in CITYSCAPES.names for inst in official[name]
                        if inst["instID"] >= 1000)
        sample = ds[ds.image_ids.index(image_id)]
        ours = sorted((CITYSCAPES.names[int(lab)], int(m.sum())) for lab, m in zip(sample.labels, sample.masks,
                                                                                   strict=True))
        assert ours == theirs and len(ours) > 0
        label_ids = np.asarray(Image.open(str(path).replace("instanceIds", "labelIds")))
        for lab, m in zip(sample.labels, sample.masks, strict=True):  # labelIds agree with instanceIds
            assert set(np.unique(label_ids[m.numpy()])) == {CITYSCAPES.dataset_ids[int(lab)]}


def test_cityscapes_polygons_json_rasterises_back_to_the_instance_png(cityscapes_root):
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage

    ds = CityscapesInstances(cityscapes_root, "train")
    path = ds.annotation_path(ds.image_ids[1])
    annotation = Annotation()
    annotation.fromJsonFile(str(path).replace("instanceIds.png", "polygons.json"))
    assert np.array_equal(np.asarray(createInstanceImage(annotation, "ids")), np.asarray(Image.open(path)))


def test_ade20k_round_trip_r_is_category_g_is_instance(ade20k_root):
    ds = ADE20KInstances(ade20k_root, "train")
    assert (ade20k_root / "images" / "training" / "ADE_train_00000001.jpg").is_file()
    assert ds.classes.names == ADE20K.names  # the category list written beside the images
    for index in range(ADE20K_SPEC.train):
        layout, index_map, _ = ade20k_scene(ADE20K_SPEC, "train", index)
        sample = ds[ds.image_ids.index(ade20k_image_id("train", index))]
        assert loaded_instances(sample) == drawn_instances(layout, index_map, ADE20K.names)
        rgb = np.asarray(Image.open(ds.annotation_path(sample.image_id)))
        for lab, m in zip(sample.labels, sample.masks, strict=True):
            assert set(np.unique(rgb[..., 0][m.numpy()])) == {ADE20K.dataset_ids[int(lab)]}
            assert len(np.unique(rgb[..., 1][m.numpy()])) == 1


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_generation_is_deterministic_and_image_k_does_not_depend_on_the_set_size(tmp_path, cityscapes_root):
    again = generate(CITYSCAPES_SPEC, tmp_path / "again")
    assert _digest(again) == _digest(cityscapes_root)
    smaller = generate(CITYSCAPES_SPEC.__class__(**{**CITYSCAPES_SPEC.__dict__, "train": 3}), tmp_path / "small")
    small_ds, full_ds = CityscapesInstances(smaller, "train"), CityscapesInstances(cityscapes_root, "train")
    image_id = cityscapes_image_id("train", 2)
    a, b = small_ds[small_ds.image_ids.index(image_id)], full_ds[full_ds.image_ids.index(image_id)]
    assert bool((a.image == b.image).all()) and loaded_instances(a) == loaded_instances(b)
    other = generate(CITYSCAPES_SPEC.__class__(**{**CITYSCAPES_SPEC.__dict__, "seed": 4}), tmp_path / "other")
    assert _digest(other) != _digest(cityscapes_root)


def test_a_folder_holding_another_synthetic_set_is_not_overwritten(tmp_path, cityscapes_root):
    root = generate(CITYSCAPES_SPEC, tmp_path / "set")
    before = _digest(root)
    with pytest.raises(DataError, match="another spec"):
        generate(CITYSCAPES_SPEC.__class__(**{**CITYSCAPES_SPEC.__dict__, "seed": 9}), root)
    assert _digest(root) == before


def _touching_same_class_pairs(masks, labels) -> int:
    pairs = 0
    for i in range(len(labels)):
        grown = binary_dilation(masks[i], iterations=1)
        pairs += sum(1 for j in range(i + 1, len(labels)) if labels[i] == labels[j] and (grown & masks[j]).any())
    return pairs


def test_cityscapes_scenes_are_hard_in_the_papers_way():
    """Many instances, touching same-class neighbours, occlusion, scale variation, class imbalance."""
    counts, touching, occluded, areas = Counter(), 0, 0, []
    n = 40
    for index in range(n):
        layout, index_map, _ = cityscapes_scene(CITYSCAPES_SPEC, "train", index)
        masks, labels = [], []
        for i, region in enumerate(layout.regions, start=1):
            if not region.instance:
                continue
            visible = index_map == i
            if visible.any():
                masks.append(visible)
                labels.append(region.name)
                areas.append(int(visible.sum()))
        counts.update(labels)
        touching += _touching_same_class_pairs(masks, labels) > 0
        occluded += sum(1 for r in layout.regions if r.instance) > len(masks) or any(
            _polygon_area(r.polygon) > 1.3 * (index_map == i).sum()
            for i, r in enumerate(layout.regions, start=1) if r.instance and (index_map == i).any())
    assert sum(counts.values()) / n >= 10  # many instances per image
    assert touching / n >= 0.8  # rows of cars, groups of people
    assert occluded / n >= 0.8
    assert max(areas) / min(areas) >= 100  # scale variation
    assert counts["car"] >= 5 * max(counts["truck"], counts["bus"], counts["train"], 1)  # class imbalance
    assert counts["person"] > counts["rider"] > 0


def _polygon_area(poly) -> float:
    x, y = poly[:, 0].astype(float), poly[:, 1].astype(float)
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def test_ade20k_scenes_have_long_tailed_classes_and_clusters_of_one_class():
    counts, touching = Counter(), 0
    for index in range(40):
        layout, index_map, _ = ade20k_scene(ADE20K_SPEC, "train", index)
        masks, labels = [], []
        for i, region in enumerate(layout.regions, start=1):
            if region.instance and (index_map == i).any():
                masks.append(index_map == i)
                labels.append(region.name)
        counts.update(labels)
        touching += _touching_same_class_pairs(masks, labels) > 0
    frequencies = sorted(counts.values(), reverse=True)
    assert len(counts) >= 25 and frequencies[0] >= 8 * frequencies[-1]
    assert touching >= 20


def test_synth_command_line_writes_a_readable_set(tmp_path):
    out = tmp_path / "ade"
    done = subprocess.run([sys.executable, "-m", "castlib", "synth", "--format", "ade20k", "--out", str(out),
                           "--train", "3", "--val", "2", "--seed", "5", "--height", "96"],
                          capture_output=True, text=True, check=True)
    assert "3 train / 2 val" in done.stdout
    assert len(ADE20KInstances(out, "train")) == 3 and len(ADE20KInstances(out, "val")) == 2
    manifest = json.loads((out / "synthetic.json").read_text())
    assert manifest["spec"]["seed"] == 5
    assert name2label["car"].id == CITYSCAPES.dataset_ids[CITYSCAPES.names.index("car")]

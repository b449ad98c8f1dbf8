"""Bad input gets an error that names the file and the problem."""

import shutil

import numpy as np
import pytest
from PIL import Image

from castlib.data.datasets import ADE20KInstances, CityscapesInstances
from castlib.data.splits import read_split
from castlib.errors import DataError


@pytest.fixture
def cs_copy(cityscapes_root, tmp_path):
    return shutil.copytree(cityscapes_root, tmp_path / "cs")


@pytest.fixture
def ade_copy(ade20k_root, tmp_path):
    return shutil.copytree(ade20k_root, tmp_path / "ade")


def _first_annotation(ds_class, root):
    ds = ds_class(root, "train")
    return ds, ds.image_ids[0], ds.annotation_path(ds.image_ids[0])


def test_a_missing_root_is_named(tmp_path):
    with pytest.raises(DataError) as err:
        CityscapesInstances(tmp_path / "nowhere", "train")
    assert err.value.path == tmp_path / "nowhere" and "does not exist" in str(err.value)


def test_a_root_of_the_other_format_is_named(ade20k_root):
    with pytest.raises(DataError, match="leftImg8bit.*missing image folder"):
        CityscapesInstances(ade20k_root, "train")


@pytest.mark.parametrize("which", ["cityscapes", "ade20k"])
def test_an_image_without_its_annotation_is_named(which, cs_copy, ade_copy):
    cls, root = (CityscapesInstances, cs_copy) if which == "cityscapes" else (ADE20KInstances, ade_copy)
    _, image_id, ann = _first_annotation(cls, root)
    ann.unlink()
    with pytest.raises(DataError) as err:
        cls(root, "train")
    assert err.value.path == ann and "annotation missing" in str(err.value) and image_id in str(err.value)
    assert len(cls(root, "train", load_annotations=False)) > 0  # unlabelled use needs no annotation


def test_a_cityscapes_annotation_of_the_wrong_mode_is_named(cs_copy):
    ds, _, ann = _first_annotation(CityscapesInstances, cs_copy)
    Image.new("RGB", (256, 128)).save(ann)
    with pytest.raises(DataError, match="mode 'RGB'") as err:
        ds[0]
    assert err.value.path == ann


def test_an_ade20k_annotation_of_the_wrong_mode_is_named(ade_copy):
    ds, _, ann = _first_annotation(ADE20KInstances, ade_copy)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(ann)  # 8-bit grey, not R/G
    with pytest.raises(DataError, match="mode 'L'") as err:
        ds[0]
    assert err.value.path == ann


def test_an_annotation_that_is_not_a_png_is_named(cs_copy):
    ds, _, ann = _first_annotation(CityscapesInstances, cs_copy)
    ann.write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read") as err:
        ds[0]
    assert err.value.path == ann


def test_an_unknown_cityscapes_label_id_is_named(cs_copy):
    ds, _, ann = _first_annotation(CityscapesInstances, cs_copy)
    ids = np.asarray(Image.open(ann)).copy()
    ids[0, 0] = 60001  # label id 60 does not exist
    Image.fromarray(ids).save(ann)
    with pytest.raises(DataError, match="unknown Cityscapes label id 60") as err:
        ds[0]
    assert err.value.path == ann


def test_an_unknown_ade20k_category_is_named(ade_copy):
    ds, _, ann = _first_annotation(ADE20KInstances, ade_copy)
    rgb = np.asarray(Image.open(ann)).copy()
    rgb[:2, :2] = (150, 250, 0)
    Image.fromarray(rgb).save(ann)
    with pytest.raises(DataError, match="unknown ADE20K category id 150") as err:
        ds[0]
    assert err.value.path == ann


def test_groups_and_ignored_classes_are_not_instances(cs_copy):
    ds, _, ann = _first_annotation(CityscapesInstances, cs_copy)
    ids = np.zeros((128, 256), np.uint16)
    ids[:10, :10] = 26  # cargroup: a crowd region, label id only
    ids[20:30, :10] = 29000  # caravan: has instances, ignored by the benchmark
    ids[40:50, :10] = 24002  # person
    Image.fromarray(ids).save(ann)
    sample = ds[0]
    assert sample.labels.tolist() == [0] and int(sample.masks[0].sum()) == 100


def test_an_annotation_of_another_size_is_named(cs_copy):
    ds, _, ann = _first_annotation(CityscapesInstances, cs_copy)
    Image.fromarray(np.zeros((64, 64), np.uint16)).save(ann)
    with pytest.raises(DataError, match="annotation is 64x64 but image"):
        ds[0]


def test_a_split_file_naming_an_image_that_does_not_exist_names_the_file_and_line(cityscapes_root, tmp_path):
    ds = CityscapesInstances(cityscapes_root, "train")
    split = tmp_path / "split.txt"
    split.write_text(f"{ds.image_ids[0]}\nsynthaachen_999999_000019\n")
    with pytest.raises(DataError, match="line 2: image 'synthaachen_999999_000019' does not exist") as err:
        read_split(split, ds.image_ids)
    assert err.value.path == split
    with pytest.raises(DataError, match="not found"):
        CityscapesInstances(cityscapes_root, "train", image_ids=["synthaachen_999999_000019"])


def test_the_dataset_list_is_typed_once_and_every_per_dataset_table_covers_it():
    """castlib.paper.DATASET_NAMES (Table 1's rows) is the list; the config's choices read it, and the class lists,
    the readers, the synthetic writers and make's default list cover exactly it."""
    from castlib.config import CHOICES, REPO_ROOT
    from castlib.data.classes import CLASS_LISTS
    from castlib.data.datasets import DATASETS
    from castlib.data.synthetic import SyntheticSpec, check_spec
    from castlib.paper import DATASET_NAMES

    assert DATASET_NAMES == ("cityscapes", "ade20k") and CHOICES["data.dataset"] is DATASET_NAMES
    assert tuple(CLASS_LISTS) == tuple(DATASETS) == DATASET_NAMES
    for name in DATASET_NAMES:
        check_spec(SyntheticSpec(name, 1, 1, 32, 32, 0))  # a writer for each
    with pytest.raises(DataError, match=r"unknown synthetic format 'coco'; use one of \['ade20k', 'cityscapes'\]"):
        check_spec(SyntheticSpec("coco", 1, 1, 32, 32, 0))
    make_default = next(line for line in (REPO_ROOT / "Makefile").read_text().splitlines()
                        if line.startswith("DATASETS ?="))
    assert make_default.split("?=")[1].split() == list(DATASET_NAMES)  # make cannot import it: checked here

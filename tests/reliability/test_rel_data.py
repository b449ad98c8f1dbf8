"""Data mistakes: `synth` never touches a folder it did not make, `prepare` checks every file it will use and
never replaces split files with other ones, and each mistake is one `error:` line naming the file (exit 2)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from castlib.config import REPO_ROOT

CITY = "city_000000_000000"


def _cityscapes_files(root: Path, split: str = "train", city: str = "city") -> tuple[Path, Path]:
    image = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))[0]
    image_id = image.name[: -len("_leftImg8bit.png")]
    return image, root / "gtFine" / split / image.parent.name / f"{image_id}_gtFine_instanceIds.png"


def _ade20k_files(root: Path) -> tuple[Path, Path]:
    image = sorted((root / "images" / "training").glob("*.jpg"))[0]
    return image, root / "annotations_instance" / "training" / f"{image.stem}.png"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _jpeg_named_png(path: Path) -> None:
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    rgb.save(path, format="JPEG")


def _eight_bit(path: Path) -> None:
    with Image.open(path) as im:
        array = np.asarray(im)
    Image.fromarray((array % 256).astype(np.uint8)).save(path)


def _rgb(path: Path) -> None:
    with Image.open(path) as im:
        size = im.size
    Image.new("RGB", size, (26, 0, 0)).save(path)


def _shrink(path: Path) -> None:
    with Image.open(path) as im:
        im.resize((im.width // 2, im.height // 2), Image.Resampling.NEAREST).save(path)


@pytest.mark.parametrize("target", ["leftImg8bit", "gtFine"])
def test_synth_refuses_an_existing_dataset_root_and_deletes_nothing(cli, real_root, guard, target):
    root = real_root("cityscapes")
    (root / "synthetic.json").unlink()
    (root / ".castlib-synthetic").unlink()
    (root / "my_notes.txt").write_text("mine")
    check = guard()
    code, err = cli("synth", "--format", "ade20k", "--out", root, "--train", "2", "--val", "1")
    assert code == 2 and err.startswith(f"error: {root}: folder is not empty and is not a synthetic set")
    assert (root / target).is_dir() and (root / "my_notes.txt").read_text() == "mine"
    check.check()


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("--train", "-3", "--train: needs at least 1 image, got -3"),
    ("--val", "0", "--val: needs at least 1 image, got 0"),
    ("--height", "4", "--height: must be at least 32 pixels, got 4"),
])
def test_synth_range_checks_its_arguments_before_writing(cli, guard, workspace, argument, value, message):
    check = guard()
    code, err = cli("synth", "--format", "cityscapes", "--out", workspace / "new", argument, value)
    assert code == 2 and err.strip() == f"error: {message}"
    assert not (workspace / "new").exists()
    check.check()


CITYSCAPES_BREAKAGES = {
    "truncated image": (lambda img, ann: _truncate(img), "image", "cannot read image"),
    "JPEG named .png": (lambda img, ann: _jpeg_named_png(img), "image", "is a JPEG file, expected PNG"),
    "8-bit instanceIds": (lambda img, ann: _eight_bit(ann), "annotation", "has PIL mode 'L'"),
    "RGB instanceIds": (lambda img, ann: _rgb(ann), "annotation", "has PIL mode 'RGB'"),
    "missing annotation": (lambda img, ann: ann.unlink(), "annotation", "annotation missing"),
    "size mismatch": (lambda img, ann: _shrink(ann), "annotation", "annotation is 64x32 but image"),
    "truncated annotation": (lambda img, ann: _truncate(ann), "annotation", "cannot read"),
}


def _prepared(cli, private, root: Path, dataset: str) -> list[Path]:
    """Prepare a good tree; its split files (the workspace's ``data_splits/``)."""
    code, err = cli("prepare", "--dataset", dataset, "--data-root", root, *private)
    assert code == 0, err
    return sorted((root.parent / "data_splits").rglob("*.txt"))


@pytest.mark.parametrize("case", list(CITYSCAPES_BREAKAGES))
def test_prepare_names_each_broken_cityscapes_file_and_keeps_the_split_files(cli, private, real_root, guard,
                                                                             case):
    root = real_root("cityscapes")
    assert _prepared(cli, private, root, "cityscapes")
    breakage, which, message = CITYSCAPES_BREAKAGES[case]
    image, ann = _cityscapes_files(root)
    breakage(image, ann)
    check = guard()
    code, err = cli("prepare", "--dataset", "cityscapes", "--data-root", root, *private)
    named = image if which == "image" else ann
    assert code == 2 and err.startswith(f"error: {root}: 1 problem(s) in the dataset:")
    assert f"  {named}: " in err and message in err
    check.check()


def test_prepare_reports_every_problem_at_once(cli, private, real_root, guard, workspace):
    root = real_root("cityscapes")
    image, ann = _cityscapes_files(root, "train")
    val_image, val_ann = _cityscapes_files(root, "val")
    _truncate(image)
    _shrink(val_ann)
    check = guard()
    code, err = cli("prepare", "--dataset", "cityscapes", "--data-root", root, *private)
    assert code == 2 and "2 problem(s)" in err and f"  {image}: " in err and f"  {val_ann}: " in err
    assert not (workspace / "data_splits").exists()  # nothing written
    check.check()


ADE20K_BREAKAGES = {
    "truncated image": (lambda img, ann: _truncate(img), "image", "cannot read image"),
    "PNG named .jpg": (lambda img, ann: shutil.copy(ann, img), "image", "is a PNG file, expected JPEG"),
    "grey annotation": (lambda img, ann: Image.open(img).convert("L").save(ann, format="PNG"), "annotation",
                        "has PIL mode 'L'"),
    "missing annotation": (lambda img, ann: ann.unlink(), "annotation", "annotation missing"),
    "size mismatch": (lambda img, ann: _shrink(ann), "annotation", "but image"),
    "unknown category": (lambda img, ann: Image.new("RGB", Image.open(img).size, (250, 1, 0)).save(ann),
                         "annotation", "unknown ADE20K category id 250"),
}


@pytest.mark.parametrize("case", list(ADE20K_BREAKAGES))
def test_prepare_names_each_broken_ade20k_file(cli, private, real_root, guard, case):
    root = real_root("ade20k")
    breakage, which, message = ADE20K_BREAKAGES[case]
    image, ann = _ade20k_files(root)
    breakage(image, ann)
    check = guard()
    code, err = cli("prepare", "--dataset", "ade20k", "--data-root", root, *private)
    named = image if which == "image" else ann
    assert code == 2 and f"  {named}: " in err and message in err, err
    check.check()


def test_a_tree_without_images_never_replaces_split_files(cli, private, real_root, guard):
    root = real_root("cityscapes")
    splits = _prepared(cli, private, root, "cityscapes")
    for folder in ("leftImg8bit", "gtFine"):
        for path in (root / folder).rglob("*.png"):
            path.unlink()
    check = guard()
    code, err = cli("prepare", "--dataset", "cityscapes", "--data-root", root, *private)
    assert code == 2 and "no images in the train set" in err and str(root / "leftImg8bit" / "train") in err
    assert all(p.read_text() for p in splits)
    check.check()


def test_prepare_keeps_a_differing_split_file_unless_forced(cli, private, real_root, guard):
    root = real_root("cityscapes")
    splits = _prepared(cli, private, root, "cityscapes")
    labelled = next(p for p in splits if p.name == "30pct_seed0_labelled.txt")
    labelled.write_text("# my own split\n" + labelled.read_text().splitlines()[0] + "\n")
    edited = {p: p.read_bytes() for p in splits}
    check = guard()
    code, err = cli("prepare", "--dataset", "cityscapes", "--data-root", root, *private)
    assert code == 2 and err.startswith(f"error: {labelled}: exists with 1 image ids and differs from the 4 ")
    assert "--force" in err and {p: p.read_bytes() for p in splits} == edited
    check.check()
    assert cli("prepare", "--dataset", "cityscapes", "--data-root", root, *private, "--force")[0] == 0
    assert labelled.read_bytes() != edited[labelled]


def test_files_written_atomically_keep_the_umask_permissions(cli, private, real_root):
    root = real_root("cityscapes")
    previous = os.umask(0o022)
    try:
        splits = _prepared(cli, private, root, "cityscapes")
    finally:
        os.umask(previous)
    assert splits and {p.stat().st_mode & 0o777 for p in splits} == {0o644}


def test_an_unwritable_split_folder_is_one_error_naming_it(cli, private, real_root, guard, workspace,
                                                           monkeypatch):
    root = real_root("cityscapes")
    folder = workspace / "data_splits" / "cityscapes"

    def refuse(*args, dir=None, **kwargs):  # root ignores chmod, so the OS's refusal is simulated
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr("castlib.io.tempfile.mkstemp", refuse)
    check = guard()
    code, err = cli("prepare", "--dataset", "cityscapes", "--data-root", root, *private)
    assert code == 2 and err.startswith(f"error: {folder}: cannot write ") and "Permission denied" in err
    check.check()


@pytest.mark.parametrize("root", ["/x #v2", "null"])
def test_data_root_is_taken_verbatim(cli, private, guard, root):
    check = guard()
    code, err = cli("prepare", "--data-root", root, *private)
    expected = Path(root) if root.startswith("/") else REPO_ROOT / root
    assert code == 2 and f"\n  {expected}: dataset root does not exist" in err, err
    check.check()

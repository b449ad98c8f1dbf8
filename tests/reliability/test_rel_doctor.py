"""`python -m castlib doctor`: a ready workspace passes (exit 0); each problem is named with its fix (exit 1)."""

from __future__ import annotations

import json

from castlib.doctor import PACKAGES


def test_doctor_passes_on_a_prepared_workspace(cli, private, capsys):
    assert cli("prepare", *private)[0] == 0
    capsys.readouterr()
    from castlib.__main__ import main

    code = main(["doctor", *private])
    out = capsys.readouterr().out
    assert code == 0, out
    assert all(f"ok      version  {name} " in out for name in PACKAGES)
    assert "12 train / 2 val images" in out and "no pretrained weights needed" in out and "GiB free" in out
    assert out.rstrip().endswith("everything looks fine")


def test_doctor_names_a_missing_dataset_root_and_how_to_fix_it(private, capsys, workspace):
    from castlib.__main__ import main

    code = main(["doctor", "--data-root", str(workspace / "nowhere"), *private])
    out = capsys.readouterr().out
    assert code == 1
    assert f"PROBLEM data     cityscapes dataset {workspace / 'nowhere'} does not exist" in out
    assert "fix: pass --data-root DIR" in out and out.rstrip().endswith("problem(s) found")


def test_doctor_names_split_files_that_do_not_match_the_dataset(cli, private, capsys, real_root, workspace):
    root = real_root("cityscapes")
    assert cli("prepare", "--data-root", root, *private)[0] == 0
    labelled = workspace / "data_splits" / "cityscapes" / "10pct_seed0_labelled.txt"
    labelled.write_text("nosuchcity_000000_000000\n")
    ann = sorted((root / "gtFine" / "train").rglob("*_instanceIds.png"))[0]
    ann.unlink()
    from castlib.__main__ import main

    capsys.readouterr()
    code = main(["doctor", "--data-root", str(root), *private])
    out = capsys.readouterr().out
    assert code == 1
    assert f"PROBLEM splits   {labelled}: line 1: image 'nosuchcity_000000_000000' does not exist" in out
    assert f"PROBLEM data     {ann}: annotation missing" in out


def test_doctor_names_pretrained_weights_missing_from_the_cache(private, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    from castlib.__main__ import main

    main(["doctor", *private, "--set", "model.pretrained=true"])
    out = capsys.readouterr().out
    assert ("PROBLEM weights  model.teacher.segmenter.weights: facebook/sam2.1-hiera-large is not in the local "
            "cache") in out
    assert "fix: hf download facebook/sam2.1-hiera-large" in out


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_doctor_reports_a_truncated_image_as_prepare_does(cli, private, capsys, real_root, guard):
    """Issue 32: doctor said "everything looks fine" on a root with a truncated image; prepare caught it."""
    root = real_root("cityscapes")
    assert cli("prepare", "--data-root", root, *private)[0] == 0
    image = sorted((root / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))[0]
    _truncate(image)
    check = guard()
    from castlib.__main__ import main

    capsys.readouterr()
    code = main(["doctor", "--data-root", str(root), *private])
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"PROBLEM data     {image}: cannot read image" in out and "fix: fix or replace the file" in out
    code, err = cli("prepare", "--data-root", root, *private)
    assert code == 2 and f"\n  {image}: cannot read image" in err  # the same finding, from the same code
    check.check()


def test_doctor_reports_an_image_in_both_the_labelled_and_the_unlabelled_split(cli, private, capsys, real_root,
                                                                               workspace, guard):
    """Issue 32: doctor passed splits that put one image in both sets; prepare stopped at them."""
    root = real_root("cityscapes")
    assert cli("prepare", "--data-root", root, *private)[0] == 0
    folder = workspace / "data_splits" / "cityscapes"
    labelled, unlabelled = folder / "10pct_seed0_labelled.txt", folder / "10pct_seed0_unlabelled.txt"
    shared = labelled.read_text().splitlines()[0]
    unlabelled.write_text(unlabelled.read_text() + shared + "\n")
    check = guard()
    from castlib.__main__ import main

    capsys.readouterr()
    code = main(["doctor", "--data-root", str(root), *private])
    out = capsys.readouterr().out
    assert code == 1, out
    finding = f"PROBLEM splits   {unlabelled}: image {shared!r} is also in the labelled split {labelled}"
    assert finding in out and out.count(f"image {shared!r} is also in") == 1, out
    code, err = cli("prepare", "--data-root", root, *private)
    assert code == 2 and err.startswith(f"error: {unlabelled}: image {shared!r} is also in the labelled split "
                                        f"{labelled}: an image is labelled or unlabelled, not both; nothing was "
                                        "written (pass --force"), err
    code, err = cli("train", "--stage", "teacher_finetune", "--data-root", root, *private)
    assert code == 2 and err.startswith(f"error: {unlabelled}: image {shared!r} is also in the labelled split"), err
    stages = {json.loads(p.read_text())["stage"] for p in (workspace / "results" / "runs").glob("*/run.json")}
    assert stages == {"teacher_init"}  # theta_T^0 reads no split; step A stopped before its run existed
    check.check()


def test_doctor_reports_a_split_file_prepare_would_not_keep(cli, private, capsys, real_root, workspace):
    root = real_root("cityscapes")
    assert cli("prepare", "--data-root", root, *private)[0] == 0
    labelled = workspace / "data_splits" / "cityscapes" / "30pct_seed0_labelled.txt"
    labelled.write_text(labelled.read_text().splitlines()[0] + "\n")
    from castlib.__main__ import main

    capsys.readouterr()
    code = main(["doctor", "--data-root", str(root), *private])
    out = capsys.readouterr().out
    assert code == 1 and f"PROBLEM splits   {labelled}: exists with 1 image ids and differs from the 4 " in out, out
    assert cli("prepare", "--data-root", root, *private)[0] == 2

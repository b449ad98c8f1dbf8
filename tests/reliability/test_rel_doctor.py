"""`python -m castlib doctor`: a ready workspace passes (exit 0); each problem is named with its fix (exit 1)."""

from __future__ import annotations

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

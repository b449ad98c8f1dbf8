"""The paper path falls back on nothing silently (issue 30, item 1): no data root is an error naming data.root, no
CUDA an error naming the driver torch needs, synthetic data only by name and then recorded, doctor names every
weight of the tables by id; teacher_init is one run for every label fraction, and a root is one run id however
it is spelled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from castlib.__main__ import build_parser, config_from_args, main
from castlib.config import REPO_ROOT
from castlib.engine import lifecycle
from castlib.engine.runs import create_run

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without CUDA")
PAPER_WEIGHTS = ("openmmlab-community/mm_grounding_dino_large_all", "facebook/sam2.1-hiera-large",
                 "facebook/dinov2-small", "facebook/dinov2-base", "facebook/dinov2-large")


def _config(*argv: str):
    return config_from_args(build_parser().parse_args(["train", "--stage", "cast", *map(str, argv)]))


def _run_id(cfg, stage: str, inputs: dict | None = None, **options) -> str:
    return create_run(cfg, stage, lifecycle.stage_config(cfg, stage, **options), inputs or {}, cfg.seed, write=False,
                      check_inputs=False, data=lifecycle.input_digests(cfg, stage)).id


@pytest.fixture
def empty_caches(monkeypatch, tmp_path):
    """No Hugging Face hub cache and no torchvision checkpoints (TORCH_HOME) with anything in them."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path


@pytest.mark.parametrize("command", [["prepare"], ["train", "--stage", "cast"], ["table", "3"]])
def test_paper_without_a_root_stops_at_once_naming_data_root(cli, private, guard, workspace, command):
    check = guard()
    code, err = cli(*command, "--profile", "paper", *private)
    assert code == 2 and err.startswith("error: key 'data.root': profile paper reads the real cityscapes dataset"), err
    assert "--data-root" in err and "README 'On a GPU box'" in err and len(err.strip().splitlines()) == 1
    assert "\n## On a GPU box\n" in (REPO_ROOT / "README.md").read_text()  # the section the error sends you to
    assert not (workspace / "data").exists() and not (workspace / "results").exists()  # no synthetic set, no run
    check.check()


def test_doctor_on_paper_without_a_root_names_data_root(private, capsys, empty_caches):
    code = main(["doctor", "--profile", "paper", *private])
    out = capsys.readouterr().out
    assert code == 1
    assert "PROBLEM data     data.root is not set: profile paper reads the real cityscapes dataset" in out
    assert "fix: pass --data-root DIR (or set data.root)" in out and "synthetic set" not in out


@NO_CUDA
def test_paper_with_a_root_and_no_cuda_stops_at_the_device(cli, private, real_root, guard, workspace):
    root = real_root("cityscapes")
    check = guard()
    code, err = cli("train", "--stage", "teacher_init", "--profile", "paper", "--data-root", root, *private)
    assert code == 2 and err.startswith("error: config key device asks for cuda"), err
    assert f"built for CUDA {torch.version.cuda}" in err if torch.version.cuda else "CPU-only build" in err
    assert "--device cpu" in err and not (workspace / "results").exists()
    check.check()


@NO_CUDA
def test_device_cpu_on_paper_gets_past_the_device_check(cli, private, real_root, empty_caches):
    """The CPU asked for by name: the stage goes on to its data and weights (here: none cached, named by id)."""
    root = real_root("cityscapes")
    assert cli("prepare", "--profile", "paper", "--data-root", root, *private)[0] == 0
    code, err = cli("train", "--stage", "teacher_init", "--profile", "paper", "--data-root", root, "--device", "cpu",
                    *private)
    assert code == 2 and err.startswith("error: cannot load the pretrained weights"), err
    assert "device" not in err.splitlines()[0]


@NO_CUDA
def test_doctor_names_every_weight_of_tables_3_to_8_missing_by_id(cli, private, real_root, capsys, empty_caches):
    root = real_root("cityscapes")
    assert cli("prepare", "--profile", "paper", "--data-root", root, *private)[0] == 0
    capsys.readouterr()
    code = main(["doctor", "--profile", "paper", "--data-root", str(root), "--device", "cpu", *private])
    out = capsys.readouterr().out
    assert code == 1
    assert "ok      device   device cpu: runs use cpu (asked for" in out
    assert f"ok      data     cityscapes dataset {root}: 12 train / 2 val images" in out
    for hub_id in PAPER_WEIGHTS:
        assert f": {hub_id} is not in the local cache" in out and f"fix: hf download {hub_id}" in out
    resnet = empty_caches / "torch-home" / "hub" / "checkpoints"
    assert f"model.backbones.resnet50.weights: torchvision ResNet50_Weights.IMAGENET1K_V1 is not in {resnet}" in out
    assert "ResNet50_Weights.IMAGENET1K_V1.get_state_dict()" in out and "resnet50-0676ba61.pth" in out
    assert out.count("PROBLEM weights") == 6


def test_doctor_finds_weights_in_the_caches_and_asks_only_for_the_asked_tables(private, capsys, empty_caches):
    snapshot = empty_caches / "hf-cache" / "models--facebook--dinov2-small" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    main(["doctor", "--profile", "paper", "--set", "data.source=synthetic", "--tables", "3", *private])
    out = capsys.readouterr().out
    assert "ok      weights  model.backbones.dinov2_s.weights: facebook/dinov2-small is in the local cache" in out
    assert "PROBLEM weights  model.teacher.detector.weights" in out
    assert "dinov2-base" not in out and "resnet50" not in out  # Table 8's alone
    (empty_caches / "torch-home" / "hub" / "checkpoints").mkdir(parents=True)
    (empty_caches / "torch-home" / "hub" / "checkpoints" / "resnet50-0676ba61.pth").write_bytes(b"")
    main(["doctor", "--profile", "paper", "--set", "data.source=synthetic", "--tables", "8", *private])
    out = capsys.readouterr().out
    assert "ok      weights  model.backbones.resnet50.weights: torchvision IMAGENET1K_V1 in" in out


def test_synthetic_data_on_paper_by_name_is_recorded_in_every_run_and_warned(cli, private, workspace):
    code, err = cli("prepare", "--profile", "paper", "--set", "data.source=synthetic", *private)
    assert code == 0 and err.startswith("warning: data.source=synthetic: profile paper runs on the synthetic set "
                                        "cityscapes-synthetic-smoke (12 train / 2 val images, 64x128)"), err
    cfg = _config("--profile", "paper", "--set", "data.source=synthetic", *private)
    run = create_run(cfg, "teacher_init", lifecycle.stage_config(cfg, "teacher_init"), {}, 0,
                     data=lifecycle.input_digests(cfg, "teacher_init"))
    record = json.loads((run.dir / "run.json").read_text())
    assert record["profile"] == "paper"
    assert record["data_source"] == {"source": "synthetic", "dataset": "cityscapes",
                                     "name": "cityscapes-synthetic-smoke", "image_size": "64x128", "train": 12,
                                     "val": 2, "seed": 0, "domain": "target"}


def test_a_real_root_is_recorded_in_run_json(private, real_root):
    root = real_root("cityscapes")
    cfg = _config("--data-root", root, *private)
    run = create_run(cfg, "teacher_init", lifecycle.stage_config(cfg, "teacher_init"), {}, 0,
                     data=lifecycle.input_digests(cfg, "teacher_init"))
    assert json.loads((run.dir / "run.json").read_text())["data_source"] == {
        "source": "real", "dataset": "cityscapes", "root": str(root)}


def test_teacher_init_is_one_run_for_every_label_fraction_and_one_per_teacher_weights(private):
    cfg = _config(*private)
    ids = {f: _run_id(_config(*private, "--set", f"data.label_fraction={f}"), "teacher_init") for f in (0.05, 0.3)}
    assert ids[0.05] == ids[0.3] == _run_id(cfg, "teacher_init")
    other = _config(*private, "--set", "model.teacher.detector.weights=IDEA-Research/grounding-dino-base")
    assert _run_id(other, "teacher_init") != ids[0.05]
    eval_size = _config(*private, "--set", "augment.eval_short_side=64")  # its evaluation reads it
    assert _run_id(eval_size, "teacher_init") != ids[0.05]
    init = create_run(cfg, "teacher_init", {}, {}, 0, write=False)  # a stand-in handle: only its id is read
    finetune = {f: _run_id(_config(*private, "--set", f"data.label_fraction={f}"), "teacher_finetune",
                           {"init": init}, contrastive=True) for f in (0.05, 0.3)}
    assert finetune[0.05] != finetune[0.3]  # step A reads the split


def test_a_trailing_slash_or_a_dot_in_the_data_root_is_the_same_run(private, real_root):
    root = real_root("cityscapes")
    spellings = [str(root), f"{root}/", f"{root}/./", f"{root.parent}/../{root.parent.name}/{root.name}"]
    configs = [_config("--data-root", spelling, *private) for spelling in spellings]
    assert {cfg.data.root for cfg in configs} == {str(Path(root).resolve())}
    assert len({_run_id(cfg, "teacher_init") for cfg in configs}) == 1


@pytest.mark.parametrize(("cuda", "driver"), [("12.8", "570.26"), ("13.0", "580.65.06"), ("12.6", "560.28.03")])
def test_the_driver_named_is_the_one_of_torchs_cuda_version(cuda, driver):
    from castlib.distributed import driver_needed

    assert driver_needed(cuda).endswith(f"is built for CUDA {cuda}, which needs an NVIDIA driver >= {driver} on Linux")
    assert "CPU-only build" in driver_needed("") and "release notes" in driver_needed("99.1")


def test_cuda_without_cuda_is_an_error_and_auto_is_the_cpu_only_where_allowed(monkeypatch):
    from castlib.distributed import resolve_device
    from castlib.errors import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="config key device asks for cuda.*--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")


def test_the_missing_root_error_comes_before_torch_is_imported(workspace):
    """`make reproduce PROFILE=paper` without a root stops in about a second: its first command imports no torch."""
    import subprocess
    import sys

    code = ("import sys; from castlib.__main__ import main; status = main(['prepare', '--profile', 'paper', '--set', "
            f"'runs_dir={workspace}']); assert status == 2 and 'torch' not in sys.modules, sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "error: key 'data.root'" in done.stderr, done.stderr[-2000:]

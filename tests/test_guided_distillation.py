"""Guided Distillation (castlib.baselines): EMA, hand-over, pseudo-label filter, views, optimiser, the smoke runs
per backbone through the registry, resume, the command line and torchrun."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _workspace import prepared_config, set_args, workspace_overrides
from safetensors.torch import load_file
from torch import nn

from castlib.__main__ import main
from castlib.baselines import guided_distillation as G
from castlib.config import REPO_ROOT, Config, load_config
from castlib.data.sample import Batch
from castlib.engine import fitting, loop
from castlib.engine.checkpoint import load_checkpoint
from castlib.errors import ConfigError
from castlib.losses import SetCriterion
from castlib.models import build_model
from castlib.models.base import WEIGHTS_FILE

BACKBONES = ("resnet50", "dinov2_b", "dinov2_l")


def _overrides(root: Path) -> list[str]:
    return workspace_overrides(root)


def _section(cfg: Config, **changes) -> Config:
    section = copy.deepcopy(cfg.baselines.guided_distillation)
    section.update(changes)
    return section


def _toy() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


# -- EMA and the hand-over ------------------------------------------------------------------------------------------

def test_ema_update_averages_floats_and_copies_integer_buffers():
    torch.manual_seed(0)
    teacher, student = _toy(), _toy()
    student.train()(torch.randn(8, 3))  # moves the student's BN statistics and its num_batches_tracked
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    G.ema_update(teacher, student, 0.9)
    after, source = teacher.state_dict(), student.state_dict()
    for name, value in after.items():
        if value.dtype.is_floating_point:
            assert torch.allclose(value, 0.9 * before[name] + 0.1 * source[name]), name
        else:
            assert torch.equal(value, source[name]) and not torch.equal(value, before[name]), name


def test_the_teacher_is_frozen_before_the_hand_over_equals_the_student_at_it_then_follows_its_ema(cfg):
    torch.manual_seed(0)
    student, teacher = _toy(), _toy()
    objective = G.GuidedDistillationObjective(student, teacher, nn.Identity(),
                                              _section(cfg, burn_in_iterations=3, ema_decay=0.5)).train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    for iteration in range(3):
        with torch.no_grad():
            student[0].weight.add_(1.0)
        objective.update_teacher(iteration)
        assert all(torch.equal(v, frozen[k]) for k, v in teacher.state_dict().items())
    objective.update_teacher(3)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in teacher.state_dict().items())
    handed = teacher[0].weight.clone()
    with torch.no_grad():
        student[0].weight.add_(2.0)
    objective.update_teacher(4)
    assert torch.allclose(teacher[0].weight, 0.5 * handed + 0.5 * student[0].weight)


# -- pseudo-labels ----------------------------------------------------------------------------------------------

def test_the_pseudo_label_filter_applies_the_three_rules_in_order():
    big = torch.full((4, 4), -20.0)
    big[:2, :3] = 20.0  # soft area 6 > 5
    small = torch.full((4, 4), -20.0)
    small[:1, :4] = 20.0  # soft area 4, not > 5
    no_object = torch.tensor([0.0, 0.0, 9.0])  # argmax "no object"
    confident = torch.tensor([9.0, 0.0, 0.0])  # class 0 with probability ~0.9998
    unsure = torch.tensor([1.0, 0.8, 0.0])  # class 0 with probability ~0.48 (argmax real, not > 0.7)
    second = torch.tensor([0.0, 9.0, 0.0])  # class 1, confident
    class_logits = torch.stack([torch.stack([no_object, unsure, confident, confident, second]),
                                torch.stack([no_object, unsure, confident, no_object, unsure])])
    mask_logits = torch.stack([torch.stack([big, big, small, big, big]), torch.stack([big, big, small, big, big])])
    masks, labels = G.pseudo_label_targets(class_logits, mask_logits, (16, 16), class_threshold=0.7, min_area=5,
                                           mask_threshold=0.5)
    assert labels[0].tolist() == [0, 1] and masks[0].shape == (2, 4, 4)
    assert torch.equal(masks[0][0], big > 0) and masks[0].dtype == torch.bool
    assert labels[1].numel() == 0 and masks[1].shape == (0, 4, 4)  # an image with nothing kept still trains


def test_pseudo_labels_are_made_at_a_quarter_of_the_image_size():
    class_logits = torch.tensor([[[9.0, 0.0]]])
    mask_logits = torch.full((1, 1, 14, 28), 20.0)  # stride 2 of a 28 x 56 input
    masks, labels = G.pseudo_label_targets(class_logits, mask_logits, (28, 56), class_threshold=0.7, min_area=5,
                                           mask_threshold=0.5)
    assert masks[0].shape == (1, 7, 14) and masks[0].all() and labels[0].tolist() == [0]


# -- one stage-2 step -------------------------------------------------------------------------------------------

def _batch(images: torch.Tensor, strong: torch.Tensor | None, with_targets: bool) -> Batch:
    n, _, h, w = images.shape
    masks = [torch.zeros(1, h, w, dtype=torch.bool) for _ in range(n)]
    for m in masks:
        m[0, : h // 2, : w // 2] = True
    return Batch(images=images, valid=torch.ones(n, h, w, dtype=torch.bool),
                 masks=masks if with_targets else [torch.zeros(0, h, w, dtype=torch.bool)] * n,
                 labels=[torch.tensor([1]) if with_targets else torch.zeros(0, dtype=torch.long)] * n,
                 image_ids=[f"im{i}" for i in range(n)], paths=[""] * n, sizes=[(h, w)] * n, strong=strong)


def test_the_unlabelled_loss_sees_the_strong_view_and_the_pseudo_labels_come_from_the_weak_view(cfg):
    torch.manual_seed(0)
    student, teacher = build_model(cfg, "baseline", 8), build_model(cfg, "baseline", 8)
    criterion = SetCriterion.from_config(cfg.loss, 8)
    objective = G.GuidedDistillationObjective(student, teacher, criterion,
                                              _section(cfg, class_threshold=0.0, min_mask_area=0.0)).train()
    seen: dict[str, list] = {"teacher": [], "student": [], "criterion": []}
    teacher.register_forward_pre_hook(lambda m, args: seen["teacher"].append(args[0].clone()))
    student.register_forward_pre_hook(lambda m, args: seen["student"].append(args[0].clone()))
    criterion.register_forward_pre_hook(lambda m, args: seen["criterion"].append(args))
    labelled = _batch(torch.rand(2, 3, 56, 112), None, True)
    weak, strong = torch.rand(2, 3, 56, 112), torch.rand(2, 3, 56, 112)
    losses = objective(labelled, _batch(weak, strong, False))
    assert torch.equal(seen["teacher"][0], weak)
    assert torch.equal(seen["student"][0], torch.cat([labelled.images, strong]))
    expected_masks, expected_labels = objective.pseudo_labels(weak)
    assert sum(len(lab) for lab in expected_labels) > 0
    _, masks, labels = seen["criterion"][1]
    assert all(torch.equal(a, b) for a, b in zip(masks, expected_masks, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(labels, expected_labels, strict=True))
    semi = losses["semi/loss"]
    assert torch.allclose(losses["loss"], losses["sup/loss"] + 2.0 * semi)
    losses["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_the_optimiser_follows_gd_learning_rates_and_weight_decay(cfg):
    model = build_model(cfg, "baseline", 8)
    section = cfg.baselines.guided_distillation
    groups = {g["name"]: g for g in G.gd_optimizer(model, section).param_groups}
    assert groups["encoder"]["lr"] == pytest.approx(section.lr * section.backbone_lr_factor)
    assert groups["decoder"]["lr"] == pytest.approx(section.lr)
    assert groups["decoder"]["weight_decay"] == section.weight_decay and groups["decoder_no_decay"]["weight_decay"] == 0
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in groups["decoder_no_decay"]["params"]}
    queries = [n for n in names.values() if "queries_embedder" in n or "queries_features" in n]
    assert queries and set(queries) <= no_decay  # nn.Embedding
    assert any("layernorm" in n or "layer_norm" in n for n in no_decay)
    biases = [names[id(p)] for p in groups["decoder"]["params"] if names[id(p)].endswith(".bias")]
    assert biases  # detectron2 decays biases
    total = sum(len(g["params"]) for g in groups.values())
    assert total == sum(1 for p in model.parameters() if p.requires_grad)


# -- runs through the registry ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("gd")


@pytest.fixture(scope="module")
def gd_cfg(workspace):
    return prepared_config(workspace, _overrides(workspace))


@pytest.fixture(scope="module")
def resnet_run(gd_cfg):
    return G.guided_distillation(gd_cfg, "resnet50", 0.10)


@pytest.fixture(scope="module")
def smoke_runs(gd_cfg, resnet_run):
    return {"resnet50": resnet_run} | {b: G.guided_distillation(gd_cfg, b, 0.10) for b in BACKBONES[1:]}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_a_smoke_run_per_backbone_trains_both_stages_and_is_evaluated(gd_cfg, smoke_runs, backbone):
    run = smoke_runs[backbone]
    assert run.complete and run.stage == "guided_distillation"
    assert 0.0 <= run.metrics["ap"] <= 100.0 and 0.0 <= run.metrics["ap50"] <= 100.0
    assert run.metrics["train"]["iterations"] == gd_cfg.baselines.guided_distillation.iterations
    teacher = Path(run.dir).parent / run.info["inputs"]["teacher"]
    info = json.loads((teacher / "run.json").read_text())
    assert info["stage"] == "guided_distillation_teacher" and (teacher / "complete.json").is_file()
    header = (run.dir / "log.csv").read_text().splitlines()[0].split(",")
    for term in ("sup/loss", "semi/loss", "semi/pseudo_labels_per_image", "lr/encoder", "lr/decoder", "grad_norm"):
        assert term in header, term
    config = run.config()
    assert config.model.baseline_backbone == backbone and config.data.label_fraction == 0.10
    saved = load_file(str(run.model_dir / WEIGHTS_FILE))
    assert not any(k.startswith("teacher.") for k in saved)  # the student is what is saved and evaluated


def test_a_second_request_trains_nothing_and_stage_two_variants_share_the_teacher(gd_cfg, smoke_runs, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a complete run was trained again")

    monkeypatch.setattr(fitting, "train", refuse)
    assert {b: G.guided_distillation(gd_cfg, b, 0.10).id for b in BACKBONES} == {b: r.id for b, r in
                                                                                  smoke_runs.items()}
    variant = load_config("smoke", [*_overrides(Path(gd_cfg.runs_dir).parent),
                                    "baselines.guided_distillation.ema_decay=0.99"])
    shared = G.guided_distillation_teacher(variant, "resnet50", 0.10)
    assert shared.id == smoke_runs["resnet50"].info["inputs"]["teacher"]


def test_bad_requests_name_the_key(gd_cfg):
    with pytest.raises(ConfigError, match="model.baseline_backbone.*swin"):
        G.guided_distillation(gd_cfg, "swin", 0.10)
    with pytest.raises(ConfigError, match="data.label_fraction.*0.2"):
        G.guided_distillation(gd_cfg, "resnet50", 0.2)


class _Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_across_the_hand_over_to_the_same_weights(resnet_run, workspace, tmp_path,
                                                                               monkeypatch):
    """Stage 2 interrupted right after the checkpoint of iteration 2 (= burn_in_iterations), then requested again,
    against the uninterrupted smoke run (the stage-1 teacher and stand-in runs are copied: only stage 2 trains)."""
    straight = resnet_run
    teacher = straight.info["inputs"]["teacher"]
    shutil.copytree(workspace / "data", tmp_path / "data")
    shutil.copytree(workspace / "splits", tmp_path / "splits")
    for run in (teacher, straight.info["inputs"]["stand_in"]):  # the backbone stand-in too: only stage 2 trains
        shutil.copytree(workspace / "runs" / run, tmp_path / "runs" / run)
    cfg = load_config("smoke", _overrides(tmp_path))
    save, saved = loop.save_checkpoint, []

    def save_and_note(path, **state):
        save(path, **state)
        saved.append(state["iteration"])

    def stop_after_checkpoint_two(ctx):  # the loop's barrier follows the checkpoint and the log flush
        if saved[-1:] == [2]:
            raise _Interrupted

    monkeypatch.setattr(loop, "save_checkpoint", save_and_note)
    monkeypatch.setattr(loop, "barrier", stop_after_checkpoint_two)
    with pytest.raises(_Interrupted):
        G.guided_distillation(cfg, "resnet50", 0.10)
    monkeypatch.undo()
    checkpoint = load_checkpoint(tmp_path / "runs" / straight.id / "checkpoints" / "last.pt")
    stage_one = load_file(str(tmp_path / "runs" / teacher / "model" / WEIGHTS_FILE))
    frozen = {k.removeprefix("teacher."): v for k, v in checkpoint["model"].items() if k.startswith("teacher.")}
    assert checkpoint["iteration"] == 2 and all(torch.equal(frozen[k], stage_one[k]) for k in stage_one)
    resumed = G.guided_distillation(cfg, "resnet50", 0.10)
    assert resumed.id == straight.id and resumed.dir != straight.dir
    a, b = load_file(str(straight.model_dir / WEIGHTS_FILE)), load_file(str(resumed.model_dir / WEIGHTS_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (resumed.dir / "log.csv").read_text() == (straight.dir / "log.csv").read_text()
    where = lambda m: {k: v for k, v in m.items() if k != "ground_truth"}  # noqa: E731  (its path differs)
    assert where(resumed.metrics) == where(straight.metrics)


# -- command line and torchrun ----------------------------------------------------------------------------------

def test_the_command_line_trains_gd_and_rejects_an_unknown_backbone(gd_cfg, smoke_runs, capsys):
    sets = set_args(_overrides(Path(gd_cfg.runs_dir).parent))
    assert main(["train", "--stage", "guided_distillation", "--backbone", "resnet50", "--fraction", "0.1",
                 *sets]) == 0
    assert smoke_runs["resnet50"].id in capsys.readouterr().out  # the complete run, reused
    assert main(["train", "--stage", "guided_distillation", "--backbone", "vit9", *sets]) == 2
    assert "model.baseline_backbone" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes_trains_gd_like_one_process(resnet_run, workspace, tmp_path):
    root = tmp_path / "ddp"
    shutil.copytree(workspace / "data", root / "data")
    shutil.copytree(workspace / "splits", root / "splits")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = ["-m", "castlib", "train", "--stage", "guided_distillation", "--backbone", "resnet50",
               "--fraction", "0.1", *set_args(_overrides(root))]
    done = subprocess.run([*torchrun, *command], capture_output=True, text=True, cwd=REPO_ROOT, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    single = resnet_run
    ddp = root / "runs" / single.id
    assert (ddp / "complete.json").is_file() and (root / "runs" / single.info["inputs"]["teacher"]).is_dir()
    a, b = load_file(str(ddp / "model" / WEIGHTS_FILE)), load_file(str(single.model_dir / WEIGHTS_FILE))
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert json.loads((ddp / "metrics.json").read_text()).keys() == single.metrics.keys()

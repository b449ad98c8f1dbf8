"""The source-pretrained stand-in (issue 13): pretrain runs in the registry, and the pipeline starting from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _workspace import prepared_config, workspace_overrides
from safetensors.torch import load_file

from castlib.config import load_config
from castlib.data.loaders import dataset_root
from castlib.data.synthetic import read_manifest
from castlib.engine import lifecycle, pretrain, stages
from castlib.engine.runs import create_run
from castlib.errors import ConfigError, DataError
from castlib.models import build_model
from castlib.models.base import WEIGHTS_FILE, read_meta
from castlib.models.build import load_weights

C = 8
FAST_ITERATIONS, FAST_GAIN = 150, 10.0  # one image: measured 5.0 -> 24.3 in 19 s on 2 idle-ish cores
SLOW_ITERATIONS = 800  # four images: measured 1.7 -> 8.5 after 300 iterations, 1.7 -> 8.3 after 800


def _overrides(root: Path) -> list[str]:
    return workspace_overrides(root, "data.synthetic.source.cityscapes={train: 4, val: 2}",
                               "train.pretrain.teacher_iterations=2", "train.pretrain.backbone_iterations=2",
                               "train.pretrain.batch_size=2", "data.synthetic.cityscapes={train: 12, val: 2}",
                               "eval.table_metric.cityscapes=coco")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("pretrain")


@pytest.fixture(scope="module")
def cfg(workspace):
    return prepared_config(workspace, _overrides(workspace))


@pytest.fixture(scope="module")
def teacher_stand_in(cfg):
    return pretrain.pretrain_teacher(cfg)


def _weights(run, prefix: str = "") -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(run.model_dir / WEIGHTS_FILE)).items() if k.startswith(prefix)}


def test_the_stand_in_trains_on_the_source_domain_set(cfg, teacher_stand_in):
    source = pretrain.source_config(cfg)
    manifest = read_manifest(dataset_root(source))
    assert manifest.domain == "source" and manifest.train == 4
    assert dataset_root(source) != dataset_root(cfg) and read_manifest(dataset_root(cfg)).domain == "target"
    assert teacher_stand_in.complete and teacher_stand_in.metrics["train"]["iterations"] == 2
    # every teacher part trained (the smoke default freezes the encoders): the backbone moved from its init
    torch.manual_seed(cfg.train.pretrain.seed)
    init = build_model(source, "teacher", C, pretrained=False).state_dict()
    moved = _weights(teacher_stand_in, "detector.model.backbone.")
    assert any(not torch.equal(init[k], v) for k, v in moved.items())


def test_a_stand_in_is_trained_once_for_every_seed_and_label_fraction(cfg, teacher_stand_in, monkeypatch):
    monkeypatch.setattr(pretrain, "fit", lambda *a, **k: pytest.fail("a complete pretrain run was trained again"))
    for changes in ([], ["seed=3"], ["data.label_fraction=0.3"], ["train.student.iterations=99"],
                    ["train.pretrain.backbone_iterations=7"],  # the other stand-in's length
                    ["train.pretrain.backbone_warmup_iterations=5"],  # and warm-up
                    ["train.pretrain.backbone_lr=1e-3"],  # and rate
                    ["data.synthetic.source.ade20k.train=5", "data.synthetic.cityscapes.val=3"]):  # not its set
        again = pretrain.pretrain_teacher(load_config("smoke", [*_overrides(Path(cfg.runs_dir).parent), *changes]))
        assert again.id == teacher_stand_in.id
    for change in ("train.pretrain.teacher_iterations=3", "data.synthetic.source.cityscapes.val=3"):
        other = load_config("smoke", [*_overrides(Path(cfg.runs_dir).parent), change])
        assert create_run(other, "pretrain_teacher", lifecycle.stage_config(pretrain.source_config(other),
                                                                                "pretrain_teacher"), {}, 0).id \
            != teacher_stand_in.id, change


def test_each_stand_in_trains_at_its_own_rate(cfg, monkeypatch):
    sections = {}  # stage -> the section its fitting routine is given (nothing trains here)
    monkeypatch.setattr(pretrain, "_fit_source", lambda *args: sections.setdefault(args[4].name, args[7]))
    config = load_config("smoke", [*_overrides(Path(cfg.runs_dir).parent), "train.pretrain.lr=2e-3",
                                   "train.pretrain.backbone_lr=7e-4", "train.pretrain.backbone_warmup_iterations=3"])
    pretrain.pretrain_teacher(config)
    pretrain.pretrain_backbone(config, "dinov2_s")
    teacher, backbone = sections["pretrain_teacher"], sections["pretrain_backbone"]
    assert (teacher.lr, teacher.encoder_lr, teacher.decoder_lr, teacher.warmup_iterations) == (2e-3, 2e-3, 2e-3, 0)
    assert (backbone.lr, backbone.encoder_lr, backbone.decoder_lr, backbone.warmup_iterations) == (7e-4, 7e-4, 7e-4, 3)


def test_a_stand_ins_id_follows_its_own_rate_and_not_the_others(cfg):
    root = Path(cfg.runs_dir).parent

    def run_id(stage: str, *changes: str) -> str:
        config = load_config("smoke", [*_overrides(root), *changes])
        options = {"backbone": "dinov2_s"} if stage == "pretrain_backbone" else {}
        source = pretrain.source_config(config)
        source.model.baseline_backbone = "dinov2_s"
        return create_run(config, stage, lifecycle.stage_config(source, stage, **options), {}, 0).id

    for stage, own, other in (("pretrain_teacher", "lr", "backbone_lr"), ("pretrain_backbone", "backbone_lr", "lr")):
        base = run_id(stage)
        assert run_id(stage, f"train.pretrain.{other}=9e-4") == base, stage
        assert run_id(stage, f"train.pretrain.{own}=9e-4") != base, stage


def test_theta_t0_is_the_teacher_stand_in_with_the_target_configs_trainable_parts(cfg, teacher_stand_in):
    t0 = stages.teacher_init(cfg)
    assert t0.info["inputs"] == {"stand_in": teacher_stand_in.id}
    stand_in, init = _weights(teacher_stand_in), _weights(t0)
    assert stand_in.keys() == init.keys() and all(torch.equal(stand_in[k], init[k]) for k in init)
    assert read_meta(t0.model_dir)["model"]["teacher"]["trainable"] == list(cfg.model.teacher.trainable)
    assert read_meta(teacher_stand_in.model_dir)["model"]["teacher"]["trainable"] == pretrain.TEACHER_PRETRAIN_PARTS


@pytest.mark.parametrize("which, backbone", [("student", "dinov2_s"), ("baseline", "resnet50")])
def test_students_and_baselines_start_from_their_pretrained_backbone_alone(cfg, which, backbone):
    config = load_config("smoke", [*_overrides(Path(cfg.runs_dir).parent), f"model.baseline_backbone={backbone}"])
    inputs = pretrain.stand_in_inputs(config, which)
    stand_in = inputs["stand_in"]
    assert stand_in.stage == "pretrain_backbone" and stand_in.info["inputs"] == {}
    model = pretrain.initial_model(config, which, inputs)
    assert model.backbone_name == backbone
    own, saved = model.state_dict(), _weights(stand_in)
    assert all(torch.equal(own[k], v) for k, v in saved.items() if k.startswith("encoder."))
    decoder = [k for k in saved if k.startswith("decoder.") and saved[k].numel() > 1]
    assert decoder and not all(torch.equal(own[k], saved[k]) for k in decoder)  # decoders start at random


def test_stand_in_init_whole_takes_the_source_trained_decoders_too_and_enters_the_students_id(cfg):
    root = Path(cfg.runs_dir).parent
    whole = load_config("smoke", [*_overrides(root), "model.stand_in_init=whole"])
    inputs = pretrain.stand_in_inputs(whole, "student")
    own, saved = pretrain.initial_model(whole, "student", inputs).state_dict(), _weights(inputs["stand_in"])
    assert saved and all(torch.equal(own[k], v) for k, v in saved.items())
    assert inputs["stand_in"].id == pretrain.stand_in_inputs(cfg, "student")["stand_in"].id  # one stand-in for both
    assert lifecycle.stage_config(whole, "knowledge_transfer") != lifecycle.stage_config(cfg, "knowledge_transfer")
    assert lifecycle.stage_config(whole, "teacher_finetune") == lifecycle.stage_config(cfg, "teacher_finetune")


def test_off_means_no_stand_in_and_the_paper_profile_keeps_the_hub_weights(cfg):
    off = load_config("smoke", [*_overrides(Path(cfg.runs_dir).parent), "model.stand_in=false"])
    assert pretrain.stand_in_inputs(off, "teacher") == {}
    assert load_config("paper").model.stand_in is False and load_config("mini").model.stand_in is True
    with pytest.raises(ConfigError, match="model.stand_in.*exclude each other"):
        pretrain.source_config(load_config("smoke", ["model.pretrained=true"]))
    assert pretrain.source_config(load_config("smoke", ["data.root=/somewhere/cityscapes"])).data.root is None


def test_weights_that_do_not_fit_are_named(cfg, tmp_path):
    build_model(cfg, "student", C).save_pretrained(tmp_path / "student")
    resnet = build_model(load_config("smoke", ["model.baseline_backbone=resnet50"]), "baseline", C)
    with pytest.raises(DataError, match="model.safetensors: the weights under 'encoder.' do not fit"):
        load_weights(resnet, tmp_path / "student", "encoder.")
    with pytest.raises(DataError, match="no weights here"):
        load_weights(resnet, tmp_path / "nothing", "encoder.")


def _overfit(cfg, images: int, iterations: int, lr: float, tmp_path: Path) -> tuple[float, float]:
    """COCO maskAP of the smoke student on ``images`` target training images, before and after ``iterations``
    real student steps on them (the model from the stand-in, the set criterion, AdamW at ``lr``, clipping 1.0)."""
    from castlib.data.loaders import build_dataset
    from castlib.data.sample import collate
    from castlib.data.transforms import EvalView, train_views
    from castlib.engine.objective import Objective
    from castlib.eval import evaluate_model
    from castlib.losses import SetCriterion

    inputs = pretrain.stand_in_inputs(cfg, "student")  # trained here if need be, before the seed below
    torch.manual_seed(0)
    model = pretrain.initial_model(cfg, "student", inputs)
    ids = build_dataset(cfg, "train", load_annotations=False).image_ids[:images]
    train = build_dataset(cfg, "train", ids, transform=train_views(cfg.augment, strong=False))
    same = build_dataset(cfg, "train", ids, transform=EvalView())
    objective = Objective(model, "criterion", SetCriterion.from_config(cfg.loss, C))
    optimizer = torch.optim.AdamW([p for g in model.param_groups().values() for p in g], lr=lr, weight_decay=0.01)

    def ap(name: str) -> float:
        return evaluate_model(model, same, tmp_path / name, table_metric="coco")["ap"]

    before = ap("before")
    order = torch.Generator().manual_seed(0)
    for _ in range(iterations):
        picked = torch.randint(0, images, (min(2, images),), generator=order).tolist()
        loss = objective(collate([train[i] for i in picked]))["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return before, ap("after")


def _overfit_config(cfg) -> object:
    """The smoke profile on fixed crops of the images (no flip, no rescale), so what is learnt is what is scored."""
    return load_config("smoke", [*_overrides(Path(cfg.runs_dir).parent), "augment.short_side=[128, 128]",
                                 "augment.crop=[126, 252]", "augment.hflip=0.0"])


def test_the_student_from_the_stand_in_overfits_one_image_fast(cfg, tmp_path):
    """The short variant of the overfit check: the whole train -> evaluate path learns one image."""
    before, after = _overfit(_overfit_config(cfg), images=1, iterations=FAST_ITERATIONS, lr=1e-3, tmp_path=tmp_path)
    assert after >= before + FAST_GAIN, (before, after)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 13, open: measured 2026-12-01 on the first source style, four images, "
                   "800 iterations: maskAP 1.7 -> 8.3 (300 iterations: 8.5); still below 25 on the current one; "
                   "the smoke student plateaus on 128x256 images")
def test_the_student_from_the_stand_in_overfits_a_few_images(cfg, tmp_path):
    """Issue 13's overfit check: on a few target images the student's maskAP rises well above 0."""
    before, after = _overfit(_overfit_config(cfg), images=4, iterations=SLOW_ITERATIONS, lr=1e-3, tmp_path=tmp_path)
    assert after >= 25 and after >= before + 20, (before, after)

"""build_model: one call for every model, checkpoints that load back offline, and clear errors."""

from __future__ import annotations

import json
import time

import pytest
import torch

from castlib.config import load_config
from castlib.errors import ConfigError, DataError
from castlib.models import PretrainedWeightsError, build_model

C = 8


@pytest.mark.parametrize("which", ["student", "baseline", "teacher"])
def test_a_saved_model_loads_back_identically_offline(cfg, which, tmp_path):
    torch.manual_seed(0)
    trainable = {"student": "model.trainable=[decoder]", "baseline": "model.baseline_backbone=dinov2_b",
                 "teacher": "model.teacher.trainable=[detector.heads]"}[which]
    model = build_model(load_config("smoke", [trainable]), which, C).eval()
    with torch.no_grad():  # move every weight away from its initial value, buffers included
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.01)
    model.save_pretrained(tmp_path / "checkpoint")

    loaded = build_model(cfg, which, C, pretrained=tmp_path / "checkpoint").eval()
    assert type(loaded) is type(model)
    mine, theirs = model.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in loaded.parameters()]
    images = torch.rand(1, 3, 112, 140)
    with torch.no_grad():
        a, b = model(images), loaded(images)
    assert torch.equal(a.class_logits, b.class_logits) and torch.equal(a.mask_logits, b.mask_logits)


def test_a_saved_model_reloads_from_its_own_folder_without_any_profile(cfg, tmp_path, monkeypatch):
    """Sizes no profile has (a mini-like decoder, wider still) come back from castlib_model.json alone, asked for by
    the smoke config; no profile is read while loading."""
    sizes = ["model.decoder.hidden_dim=48", "model.decoder.dim_feedforward=96", "model.decoder.num_queries=7",
             "model.pixel_decoder.fusion_hidden_size=40", "model.projection.dim=24"]
    torch.manual_seed(0)
    model = build_model(load_config("mini", sizes), "student", C).eval()
    model.save_pretrained(tmp_path)

    def no_profile(*args, **kwargs):
        raise AssertionError("a saved model was reloaded through a profile")

    monkeypatch.setattr("castlib.config.profile_path", no_profile)  # every profile is found through it
    loaded = build_model(cfg, "student", C, pretrained=tmp_path).eval()
    assert loaded.settings == model.settings and loaded.settings["decoder"]["hidden_dim"] == 48
    assert cfg.model.decoder.hidden_dim != 48  # the asking config's sizes would not fit the weights
    mine, theirs = model.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    images = torch.rand(1, 3, 56, 70)
    with torch.no_grad():
        assert torch.equal(model(images).mask_logits, loaded(images).mask_logits)


def test_a_folder_saved_before_a_model_key_existed_still_loads(cfg, tmp_path):
    """A section recorded before a key was added lacks it: the key takes its defaults value. One recorded before a
    key was removed keeps it, unread."""
    build_model(cfg, "student", C).save_pretrained(tmp_path)
    meta_file = tmp_path / "castlib_model.json"
    meta = json.loads(meta_file.read_text())
    del meta["model"]["teacher"]["activation_checkpointing"], meta["model"]["decoder"]["dropout"]
    meta["model"]["decoder"]["retired_option"] = 3
    meta_file.write_text(json.dumps(meta))
    loaded = build_model(cfg, "student", C, pretrained=tmp_path)
    defaults = load_config("defaults").model
    assert loaded.settings["decoder"]["dropout"] == defaults.decoder.dropout
    assert loaded.settings["teacher"]["activation_checkpointing"] == defaults.teacher.activation_checkpointing
    del meta["model"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="castlib_model.json: records no model; save the model again"):
        build_model(cfg, "student", C, pretrained=tmp_path)


def test_a_checkpoint_of_another_model_is_refused(cfg, tmp_path):
    build_model(cfg, "student", C).save_pretrained(tmp_path)
    with pytest.raises(DataError, match="holds a student with 8 classes, not a teacher"):
        build_model(cfg, "teacher", C, pretrained=tmp_path)
    with pytest.raises(DataError, match="not a model saved with save_pretrained"):
        build_model(cfg, "student", C, pretrained=tmp_path / "elsewhere")
    meta = tmp_path / "castlib_model.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": "something-else"}))
    with pytest.raises(DataError, match="not a castlib model checkpoint"):
        build_model(cfg, "student", C, pretrained=tmp_path)


def test_pretrained_student_offline_fails_fast_saying_which_weights_and_what_to_do(cfg):
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsError) as error:
        build_model(cfg, "student", C, pretrained=True)
    assert time.perf_counter() - start < 10
    message = str(error.value)
    for part in ("facebook/dinov2-small", "model.backbones.dinov2_s.weights", "hf download", "smoke or mini profile",
                 "castlib doctor --profile paper"):
        assert part in message
    assert "model.pretrained=false" not in message  # on paper it would quietly build a smoke-size model


def test_pretrained_follows_the_config_unless_told(cfg):
    paper_like = load_config("smoke", ["model.pretrained=true"])
    with pytest.raises(PretrainedWeightsError):
        build_model(paper_like, "student", C)  # pretrained=None: as the config says
    assert build_model(paper_like, "student", C, pretrained=False).which == "student"


def test_resnet_weights_from_a_missing_local_file_are_a_clear_error():
    cfg = load_config("smoke", ["model.backbones.resnet50.blocks=[3, 4, 6, 3]",
                                "model.backbones.resnet50.width_per_group=64",
                                "model.backbones.resnet50.weights=/nowhere/resnet50.pth"])
    with pytest.raises(PretrainedWeightsError, match="/nowhere/resnet50.pth.*model.backbones.resnet50.weights"):
        build_model(cfg, "baseline", C, pretrained=True)


def test_pretrained_resnet_needs_the_resnet50_layout(cfg):
    with pytest.raises(ConfigError, match="model.backbones.resnet50.*blocks"):
        build_model(cfg, "baseline", C, pretrained=True)


def test_bad_requests_are_config_errors(cfg):
    with pytest.raises(ConfigError, match="which"):
        build_model(cfg, "teachers", C)
    with pytest.raises(ConfigError, match="cityscapes has 8 classes but num_classes is 19"):
        build_model(cfg, "teacher", 19)
    assert build_model(cfg, "student", 19).class_names == []  # a student needs no names
    with pytest.raises(ConfigError, match="model.teacher.top_k"):
        build_model(load_config("smoke", ["model.teacher.top_k=500"]), "teacher", C)
    with pytest.raises(ConfigError, match="model.baseline_backbone': 'vit_h' is not one of"):  # at load time
        load_config("smoke", ["model.baseline_backbone=vit_h"])


def test_pretrained_dinov2_loads_from_a_local_folder_and_must_match_the_config(cfg, tmp_path):
    """What a user gets after downloading facebook/dinov2-small: a Dinov2Model checkpoint folder."""
    from transformers import Dinov2Config, Dinov2Model

    spec = cfg.model.backbones.dinov2_s
    torch.manual_seed(1)
    hub = Dinov2Model(Dinov2Config(hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
                                   num_attention_heads=spec.num_heads, patch_size=14))
    hub.save_pretrained(tmp_path / "dinov2")
    local = load_config("smoke", [f"model.backbones.dinov2_s.weights={tmp_path / 'dinov2'}"])
    student = build_model(local, "student", C, pretrained=True)
    assert torch.equal(student.encoder.backbone.embeddings.patch_embeddings.projection.weight,
                       hub.embeddings.patch_embeddings.projection.weight)
    assert student.encoder.backbone.config.out_indices == list(spec.out_indices)
    wrong = load_config("smoke", [f"model.backbones.dinov2_s.weights={tmp_path / 'dinov2'}",
                                  "model.backbones.dinov2_s.hidden_size=384"])
    with pytest.raises(ConfigError, match="hidden_size 96, the config says 384"):
        build_model(wrong, "student", C, pretrained=True)


def test_pretrained_teacher_loads_from_local_folders(cfg, tmp_path):
    """Grounding DINO (model + tokenizer) and a SAM2 checkpoint saved as the hub's sam2_video type."""
    from transformers import AutoModelForZeroShotObjectDetection, Sam2VideoConfig, Sam2VideoModel

    from castlib.models.grounding import detector_config, local_tokenizer
    from castlib.models.segmenter import sam2_config

    tokenizer = local_tokenizer()
    detector = AutoModelForZeroShotObjectDetection.from_config(
        detector_config(cfg.model.teacher.detector, len(tokenizer)))
    detector.save_pretrained(tmp_path / "detector")
    tokenizer.save_pretrained(tmp_path / "detector")
    sam = sam2_config(cfg.model.teacher.segmenter)
    segmenter = Sam2VideoModel(Sam2VideoConfig(**{k: getattr(sam, k).to_dict() for k in
                                                  ("vision_config", "prompt_encoder_config", "mask_decoder_config")}))
    segmenter.save_pretrained(tmp_path / "segmenter")
    local = load_config("smoke", [f"model.teacher.detector.weights={tmp_path / 'detector'}",
                                  f"model.teacher.segmenter.weights={tmp_path / 'segmenter'}"])
    teacher = build_model(local, "teacher", C, pretrained=True)
    assert torch.equal(teacher.detector.model.enc_output.weight, detector.model.enc_output.weight)
    assert torch.equal(teacher.segmenter.mask_decoder.iou_token.weight, segmenter.mask_decoder.iou_token.weight)
    assert teacher(torch.rand(1, 3, 112, 112)).class_logits.shape == (1, cfg.model.teacher.top_k, C + 1)
    wrong = load_config("smoke", [f"model.teacher.detector.weights={tmp_path / 'detector'}",
                                  f"model.teacher.segmenter.weights={tmp_path / 'segmenter'}",
                                  "model.teacher.segmenter.image_size=1024"])
    with pytest.raises(ConfigError, match="take 128 x 128 images, the config says 1024"):
        build_model(wrong, "teacher", C, pretrained=True)

"""The student and the Table 8 baselines: output contract, library pitfalls M1/M2/D3, trainable parts, size."""

from __future__ import annotations

import pytest
import torch

from castlib.config import load_config
from castlib.models import SegmentationOutput, Student, build_model
from castlib.models.backbones import build_encoder
from castlib.paper import MODEL_PARAMETERS

C = 8  # Cityscapes thing classes


@pytest.fixture(scope="module")
def student(cfg):
    torch.manual_seed(0)
    return build_model(cfg, "student", C)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_student_forward_honours_the_output_contract(student, cfg):
    out = student(torch.rand(2, 3, 112, 224))
    assert isinstance(out, SegmentationOutput)
    q = cfg.model.decoder.num_queries
    assert out.class_logits.shape == (2, q, C + 1)
    assert out.mask_logits.shape == (2, q, 64, 128)  # the pixel decoder's finest stride, 14 / 8
    assert out.features.shape == (2, cfg.model.backbones.dinov2_s.hidden_size, 8, 16)  # last block's patch grid
    assert len(out.aux) == cfg.model.decoder.layers  # the query embeddings' prediction and 8 earlier layers
    assert all(a["class_logits"].shape == out.class_logits.shape and a["mask_logits"].shape == out.mask_logits.shape
               for a in out.aux)


def test_decoder_has_nine_masked_attention_layers_and_ten_predictions(student):
    """Pitfall M1: the library's decoder_layers counts the query-embedding prediction."""
    assert len(student.decoder.transformer_module.decoder.layers) == 9
    assert len(student.decoder(*student.pixel_decoder(student.encoder(torch.rand(1, 3, 56, 56))))) == 10


def test_dropout_is_active_in_training_but_never_skips_a_decoder_layer(cfg):
    """Pitfall M2: the library reuses dropout as layer-drop; Table 2's dropout must not skip layers."""
    torch.manual_seed(0)
    model = build_model(load_config("smoke", ["model.decoder.dropout=0.5"]), "student", C).train()
    calls = []
    for layer in model.decoder.transformer_module.decoder.layers:
        layer.register_forward_hook(lambda *_: calls.append(1))
    x = torch.rand(1, 3, 56, 56)
    outputs = []
    for _ in range(6):
        calls.clear()
        outputs.append(model(x).class_logits)
        assert len(calls) == 9
    assert not torch.allclose(outputs[0], outputs[1])  # dropout draws differ between passes
    model.eval()
    assert torch.equal(model(x).class_logits, model(x).class_logits)


@pytest.mark.parametrize("size", [(100, 150), (126, 126), (57, 203)])
def test_any_image_size_gives_predictions_covering_exactly_the_image(student, size):
    """Padding to the patch multiple is undone: mask logits keep the finest stride (14/8) over the image."""
    out = student(torch.rand(1, 3, *size))
    assert out.mask_logits.shape[-2:] == (round(size[0] * 8 / 14), round(size[1] * 8 / 14))
    assert out.features.shape[-2:] == (round(size[0] / 14), round(size[1] / 14))


def test_odd_patch_grids_keep_exact_shapes_through_the_dpt_fusion(student):
    """Pitfall D3: a 9x9 patch grid (126 px) fuses to 72x72 mask features, not a blind x2 of 37 -> 38."""
    features = student.encoder(torch.rand(1, 3, 126, 126))
    multi_scale, mask_features = student.pixel_decoder(features)
    assert [tuple(m.shape[-2:]) for m in multi_scale] == [(9, 9), (18, 18), (36, 36)]
    assert mask_features.shape[-2:] == (72, 72)


def test_encode_returns_the_feature_map_of_forward(student):
    x = torch.rand(2, 3, 98, 140)
    student.eval()
    assert torch.allclose(student.encode(x), student(x).features, atol=1e-6)


def test_embed_gives_unit_vectors_from_separate_weak_and_strong_heads(student):
    features = torch.randn(2, student.encoder.channels[-1], 4, 6)
    weak, strong = student.embed(features, "weak"), student.embed(features, "strong")
    assert weak.shape == (2, 24, 128)
    assert torch.allclose(weak.norm(dim=-1), torch.ones(2, 24), atol=1e-5)
    assert torch.allclose(weak, strong)  # the strong head starts as a copy of the weak one ...
    assert student.projection.weak[1].weight is not student.projection.strong[1].weight  # ... but is its own
    with pytest.raises(ValueError, match="view"):
        student.embed(features, "medium")


@pytest.mark.parametrize("backbone", ["resnet50", "dinov2_s", "dinov2_b", "dinov2_l"])
def test_every_table8_baseline_feeds_the_same_decoders(backbone):
    cfg = load_config("smoke", [f"model.baseline_backbone={backbone}"])
    model = build_model(cfg, "baseline", C)
    out = model(torch.rand(1, 3, 112, 224))
    assert out.class_logits.shape == (1, cfg.model.decoder.num_queries, C + 1)
    stride = 2 if backbone == "resnet50" else 14 / 8
    assert out.mask_logits.shape[-2:] == (round(112 / stride), round(224 / stride))
    assert out.features.shape[1] == model.encoder.channels[-1] == (2048 if backbone == "resnet50" else
                                                                   cfg.model.backbones[backbone].hidden_size)


@pytest.mark.parametrize("profile", ["smoke", "mini", "paper"])
def test_backbones_keep_the_papers_order_of_size(profile):
    """Supplementary Table 8: DINOv2-S < ResNet-50 < DINOv2-B < DINOv2-L in every profile."""
    cfg = load_config(profile)
    with torch.device("meta"):
        sizes = [count(build_encoder(cfg, name, pretrained=False)) for name in
                 ("dinov2_s", "resnet50", "dinov2_b", "dinov2_l")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_paper_student_has_about_52m_parameters():
    """Spec section 6: 52M. Measured: 54.78M (DINOv2-S 22.06M, DPT pixel decoder 18.00M, Mask2Former decoder
    14.46M, projection heads 0.26M), 5.4% above the paper's figure."""
    with torch.device("meta"):
        model = build_model(load_config("paper"), "student", C, pretrained=False)
    total = count(model)
    assert total == 54_782_793
    assert abs(total - MODEL_PARAMETERS["student"]) / MODEL_PARAMETERS["student"] < 0.15
    assert count(model.encoder) == 22_056_576  # facebook/dinov2-small


def test_backward_reaches_the_trainable_parts_only():
    torch.manual_seed(0)
    model = build_model(load_config("smoke", ["model.trainable=[decoder]"]), "student", C)
    out = model(torch.rand(2, 3, 56, 84))
    loss = out.class_logits.logsumexp(-1).mean() + out.mask_logits.sigmoid().mean()
    loss = loss + sum(a["mask_logits"].mean() for a in out.aux) + model.embed(out.features, "weak").sum()
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("encoder."):
            assert not p.requires_grad and p.grad is None, name
        elif not name.startswith("projection.strong"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_param_groups_split_the_encoder_from_the_rest(student):
    groups = student.param_groups()
    assert {id(p) for p in groups["encoder"]} == {id(p) for p in student.encoder.parameters()}
    assert len(groups["encoder"]) + len(groups["decoder"]) == len(list(student.parameters()))
    frozen = build_model(load_config("smoke", ["model.trainable=[decoder]"]), "student", C)
    assert frozen.param_groups()["encoder"] == []


def test_unknown_trainable_part_is_a_config_error():
    with pytest.raises(Exception, match="model.trainable.*unknown part"):
        build_model(load_config("smoke", ["model.trainable=[encoder, neck]"]), "student", C)


def test_student_class_is_the_same_in_every_profile():
    with torch.device("meta"):
        models = [build_model(load_config(p), "student", C, pretrained=False) for p in ("smoke", "mini", "paper")]
    assert all(type(m) is Student and type(m.decoder) is type(models[-1].decoder) for m in models)

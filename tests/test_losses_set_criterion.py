"""The Mask2Former set criterion (L_sup / L_semi): matching, weights, no-object, deep supervision."""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

from castlib.config import load_config
from castlib.losses import SetCriterion
from castlib.models.output import SegmentationOutput

H, W, STRIDE = 32, 48, 4  # targets at image resolution, predictions at 1/4


def criterion(num_classes=3, **changes) -> SetCriterion:
    section = {**load_config("smoke").loss, "num_points": 2048, **changes}
    return SetCriterion.from_config(section, num_classes)


def targets():
    masks = torch.zeros(2, H, W, dtype=torch.bool)
    masks[0, :16, :24] = True
    masks[1, 16:, 24:] = True
    return masks, torch.tensor([0, 2])


def prediction(masks, labels, queries=5, num_classes=3, confidence=10.0):
    """Query i predicts target i with the given confidence; the others predict "no object"."""
    mask_logits = torch.full((queries, H // STRIDE, W // STRIDE), -confidence)
    mask_logits[: len(masks)] = confidence * (2 * F.avg_pool2d(masks[:, None].float(), STRIDE)[:, 0] - 1)
    class_logits = torch.zeros(queries, num_classes + 1)
    class_logits[torch.arange(queries), num_classes] = confidence
    class_logits[torch.arange(len(labels)), num_classes] = 0
    class_logits[torch.arange(len(labels)), labels] = confidence
    return class_logits, mask_logits


def output(*per_image, aux=()):
    return SegmentationOutput(torch.stack([c for c, _ in per_image]), torch.stack([m for _, m in per_image]),
                              aux=list(aux))


def test_a_right_prediction_costs_little_and_a_wrong_one_much_more():
    masks, labels = targets()
    right = output(prediction(masks, labels))
    wrong = output(prediction(masks.flip(0), labels))  # each mask predicted with the other's class
    torch.manual_seed(0)
    good = criterion()(right, [masks], [labels])
    bad = criterion()(wrong, [masks], [labels])
    assert good["loss_cross_entropy"] < 1e-3 and good["loss"] < 1.5  # what is left: points on mask edges
    assert bad["loss"] > 10 * good["loss"]


def test_hungarian_matching_makes_the_loss_blind_to_the_order_of_queries():
    masks, labels = targets()
    class_logits, mask_logits = prediction(masks, labels, confidence=2.0)
    order = torch.tensor([3, 1, 4, 0, 2])
    torch.manual_seed(0)
    straight = criterion(num_points=8192)(output((class_logits, mask_logits)), [masks], [labels])
    shuffled = criterion(num_points=8192)(output((class_logits[order], mask_logits[order])), [masks], [labels])
    for name in ("loss_cross_entropy", "loss_mask", "loss_dice"):
        assert shuffled[name].item() == pytest.approx(straight[name].item(), rel=0.03)


def test_an_image_without_targets_pushes_every_query_to_no_object():
    torch.manual_seed(0)
    class_logits = torch.randn(2, 5, 4, requires_grad=True)
    out = SegmentationOutput(class_logits, torch.randn(2, 5, 8, 12))
    empty_masks, empty_labels = torch.zeros(0, H, W, dtype=torch.bool), torch.zeros(0, dtype=torch.long)
    losses = criterion()(out, [empty_masks] * 2, [empty_labels] * 2)
    assert losses["loss_mask"] == 0 and losses["loss_dice"] == 0
    expected = F.cross_entropy(class_logits.reshape(-1, 4), torch.full((10,), 3))  # every query: "no object"
    assert losses["loss_cross_entropy"].item() == pytest.approx(2 * expected.item(), rel=1e-6)
    losses["loss"].backward()
    assert (class_logits.grad[..., 3] < 0).all()  # descending raises every no-object logit


def test_the_class_term_weighs_no_object_by_a_tenth():
    masks, labels = targets()
    class_logits, mask_logits = prediction(masks[:1], labels[:1], queries=3)
    class_logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))  # the masks decide the match
    losses = criterion()(output((class_logits, mask_logits)), [masks[:1]], [labels[:1]])
    ce = [-torch.log_softmax(class_logits[i], 0)[t].item() for i, t in enumerate([0, 3, 3])]
    weights = [1.0, 0.1, 0.1]
    expected = sum(w * c for w, c in zip(weights, ce, strict=True)) / sum(weights)
    assert losses["loss_cross_entropy"].item() == pytest.approx(2 * expected, rel=1e-6)


def test_terms_carry_the_table_2_weights_and_the_total_is_their_sum():
    masks, labels = targets()
    out = output(prediction(masks, labels, confidence=1.0))
    torch.manual_seed(0)
    unit = criterion(class_weight=1.0, mask_weight=1.0, dice_weight=1.0)(out, [masks], [labels])
    torch.manual_seed(0)
    paper = criterion()(out, [masks], [labels])
    for name, weight in (("loss_cross_entropy", 2.0), ("loss_mask", 5.0), ("loss_dice", 5.0)):
        assert paper[name].item() == pytest.approx(weight * unit[name].item(), rel=1e-6)
    assert paper["loss"].item() == pytest.approx(sum(v.item() for k, v in paper.items() if k != "loss"))


def test_deep_supervision_repeats_the_terms_for_every_earlier_decoder_layer():
    masks, labels = targets()
    final = prediction(masks, labels, confidence=2.0)
    early = prediction(masks.flip(0), labels, confidence=2.0)  # a worse earlier layer
    aux = [{"class_logits": c[None], "mask_logits": m[None]} for c, m in (early, final)]
    torch.manual_seed(0)
    losses = criterion(num_points=8192)(output(final, aux=aux), [masks], [labels])
    assert set(losses) == {f"{t}{s}" for t in ("loss_cross_entropy", "loss_mask", "loss_dice")
                           for s in ("", "_0", "_1")} | {"loss"}
    assert losses["loss_cross_entropy_0"] > losses["loss_cross_entropy"]
    for name in ("loss_cross_entropy", "loss_mask", "loss_dice"):
        assert losses[f"{name}_1"].item() == pytest.approx(losses[name].item(), rel=0.03)


def test_half_precision_predictions_are_scored_in_float32():
    masks, labels = targets()
    class_logits, mask_logits = prediction(masks, labels, confidence=1.0)
    out = output((class_logits.bfloat16(), mask_logits.bfloat16()))
    losses = criterion()(out, [masks], [labels])
    assert losses["loss"].dtype == torch.float32 and math.isfinite(losses["loss"].item())


def test_bad_targets_are_named():
    masks, labels = targets()
    out = output(prediction(masks, labels))
    with pytest.raises(ValueError, match="one per image"):
        criterion()(out, [masks, masks], [labels, labels])
    with pytest.raises(ValueError, match="image 0: labels must lie in 0..2"):
        criterion()(out, [masks], [torch.tensor([0, 3])])
    with pytest.raises(ValueError, match="image 0: expected masks"):
        criterion()(out, [masks], [labels[:1]])
    with pytest.raises(ValueError, match="built for 4"):
        criterion(num_classes=4)(out, [masks], [labels])


def test_the_config_section_builds_the_criterion():
    crit = SetCriterion.from_config(load_config("paper").loss, 8)
    assert crit.num_points == 12544 and crit.class_weights[-1] == pytest.approx(0.1)
    assert crit.weights == {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    assert crit.num_oversampled == 3 * 12544 and crit.num_uncertain == int(0.75 * 12544)


def _library_loss(crit: SetCriterion, out: SegmentationOutput, masks, labels) -> dict[str, torch.Tensor]:
    """transformers' Mask2FormerLoss (per layer, per image), weighted and summed as SetCriterion does."""
    config = Mask2FormerConfig(num_labels=crit.num_classes, class_weight=2.0, mask_weight=5.0, dice_weight=5.0,
                               no_object_weight=0.1, train_num_points=crit.num_points, oversample_ratio=3.0,
                               importance_sample_ratio=0.75)
    aux = [{"masks_queries_logits": a["mask_logits"], "class_queries_logits": a["class_logits"]} for a in out.aux]
    terms = Mask2FormerLoss(config, crit.weights)(out.mask_logits, out.class_logits, [m.float() for m in masks],
                                                  list(labels), auxiliary_predictions=aux)
    weighted = {k: crit.weights[re.sub(r"_\d+$", "", k)] * v for k, v in terms.items()}
    return weighted | {"loss": torch.stack(list(weighted.values())).sum()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_batched_criterion_equals_transformers_loss_on_random_inputs(seed):
    """Same seed, same random points, same matches: every term (and its gradient) equals the library's."""
    g = torch.Generator().manual_seed(seed)
    batch, queries, classes, layers = 3, 7, 4, 4
    counts = [3, 0, 9]  # an image without targets, one with more targets than queries
    masks = [torch.rand(n, H, W, generator=g) > 0.6 for n in counts]
    labels = [torch.randint(0, classes, (n,), generator=g) for n in counts]

    def random_output():
        logits = [(torch.randn(batch, queries, classes + 1, generator=g),
                   3 * torch.randn(batch, queries, H // STRIDE, W // STRIDE, generator=g)) for _ in range(layers)]
        leaves = [(c.requires_grad_(), m.requires_grad_()) for c, m in logits]
        aux = [{"class_logits": c, "mask_logits": m} for c, m in leaves[:-1]]
        return SegmentationOutput(leaves[-1][0], leaves[-1][1], aux=aux), leaves

    out, leaves = random_output()
    crit = criterion(num_classes=classes, num_points=256)
    torch.manual_seed(seed)
    ours = crit(out, masks, labels)
    torch.manual_seed(seed)
    library = _library_loss(crit, out, masks, labels)
    assert list(ours) == list(library)
    for key in ours:
        torch.testing.assert_close(ours[key], library[key], rtol=1e-5, atol=1e-6, msg=key)
    ours_grad = torch.autograd.grad(ours["loss"], [t for pair in leaves for t in pair])
    library_grad = torch.autograd.grad(library["loss"], [t for pair in leaves for t in pair])
    for a, b in zip(ours_grad, library_grad, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)

"""Mask2Former instance inference over the shared output contract (spec section 6 "Inference")."""

from __future__ import annotations

import math

import pytest
import torch

from castlib.eval import instance_inference
from castlib.models.output import SegmentationOutput

BIG = 20.0  # a logit whose sigmoid is 1 to float precision


def output(class_logits, mask_logits) -> SegmentationOutput:
    return SegmentationOutput(class_logits=torch.as_tensor(class_logits, dtype=torch.float32),
                              mask_logits=torch.as_tensor(mask_logits, dtype=torch.float32))


def test_score_is_class_probability_times_mean_mask_probability_inside_the_mask():
    # One query, two classes + "no object"; mask logits 2 on two pixels, -1 elsewhere.
    class_logits = [[[1.0, 0.0, -1.0]]]
    mask = torch.full((1, 1, 2, 2), -1.0)
    mask[0, 0, 0] = 2.0
    (pred,) = instance_inference(output(class_logits, mask), [(2, 2)], top_k=2)
    probs = torch.tensor([1.0, 0.0, -1.0]).softmax(0)
    expected = sorted([probs[0] * torch.sigmoid(torch.tensor(2.0)), probs[1] * torch.sigmoid(torch.tensor(2.0))],
                      reverse=True)
    assert pred.labels.tolist() == [0, 1]
    torch.testing.assert_close(pred.scores, torch.stack(expected), rtol=1e-5, atol=1e-6)
    assert pred.masks.dtype == torch.bool
    assert pred.masks[0].tolist() == [[True, True], [False, False]]


def test_top_k_pairs_come_from_all_queries_and_classes_and_may_share_a_query():
    # Query 0 is confident in class 1 and fairly in class 0; query 1 is weak. top_k 2 takes both of query 0's classes.
    class_logits = [[[3.0, 4.0, -9.0], [0.0, 0.0, 5.0]]]
    masks = torch.full((1, 2, 4, 4), BIG)
    (pred,) = instance_inference(output(class_logits, masks), [(4, 4)], top_k=2)
    assert pred.labels.tolist() == [1, 0]
    assert len(pred) == 2
    assert torch.equal(pred.masks[0], pred.masks[1])


def test_the_no_object_class_is_never_predicted_and_top_k_is_capped_at_the_number_of_pairs():
    class_logits = [[[0.0, 0.0, 9.0]]]  # "no object" dominates, yet only the two real classes are candidates
    (pred,) = instance_inference(output(class_logits, torch.full((1, 1, 3, 3), BIG)), [(3, 3)], top_k=100)
    assert sorted(pred.labels.tolist()) == [0, 1]


def test_pairs_with_an_empty_binary_mask_are_dropped():
    class_logits = [[[5.0, -5.0, -5.0], [5.0, -5.0, -5.0]]]
    masks = torch.stack([torch.full((3, 3), BIG), torch.full((3, 3), -BIG)])[None]
    (pred,) = instance_inference(output(class_logits, masks), [(3, 3)], top_k=4)
    assert len(pred) == 2  # query 0 with each class; query 1's mask is empty
    assert pred.masks.flatten(1).all(1).tolist() == [True, True]


def test_a_padded_batch_is_cropped_to_each_images_true_size():
    # Two images 4x6 and 6x4 padded to 6x6; mask logits at half resolution cover the padded extent.
    # Query 0 marks the top-left 2x2 logit cell = the top-left 4x4 pixels of the padded canvas.
    half = torch.full((2, 1, 3, 3), -BIG)
    half[:, 0, :2, :2] = BIG
    preds = instance_inference(output([[[5.0, -5.0]]] * 2, half), [(4, 6), (6, 4)], top_k=1)
    assert [p.size for p in preds] == [(4, 6), (6, 4)]
    for p in preds:
        assert p.masks[0, :3, :3].all()  # well inside the marked cell
        assert not p.masks[0, :, 5:].any() and not p.masks[0, 5:, :].any()  # far from it


def test_the_padded_extent_is_what_the_mask_logits_cover_not_the_image():
    # One 4x4 image in an 8x8 padded input: the left half of the logits (columns 0-3 of 8) covers the whole image.
    logits = torch.full((1, 1, 8, 8), -BIG)
    logits[..., :4] = BIG
    (pred,) = instance_inference(output([[[5.0, -5.0]]], logits), [(4, 4)], top_k=1, input_size=(8, 8))
    assert pred.masks[0].all()
    (unpadded,) = instance_inference(output([[[5.0, -5.0]]], logits), [(4, 4)], top_k=1)  # input 4x4: half of it
    assert unpadded.masks[0, :, :2].all() and not unpadded.masks[0, :, 2:].any()


def test_masks_are_returned_at_the_requested_output_size():
    logits = torch.full((1, 1, 4, 4), -BIG)
    logits[..., :2, :] = BIG  # top half
    (pred,) = instance_inference(output([[[5.0, -5.0]]], logits), [(4, 4)], top_k=1, output_sizes=[(10, 6)])
    assert pred.size == (10, 6)
    assert pred.masks[0, :5].all() and not pred.masks[0, 5:].any()


def test_scores_are_sorted_and_bounded_by_the_class_probability():
    torch.manual_seed(0)
    out = output(torch.randn(2, 10, 4), torch.randn(2, 10, 8, 8))
    for pred, logits in zip(instance_inference(out, [(8, 8), (8, 8)], top_k=12), out.class_logits, strict=True):
        assert torch.all(pred.scores[:-1] >= pred.scores[1:])
        assert pred.scores.max() <= logits.softmax(-1)[:, :-1].max() + 1e-6
        assert pred.labels.max() < 3 and len(pred) <= 12


def test_a_batch_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 image sizes for a batch of 1"):
        instance_inference(output([[[1.0, 0.0]]], torch.zeros(1, 1, 2, 2)), [(2, 2), (2, 2)])


def test_bf16_outputs_are_scored_in_float32():
    out = output([[[2.0, 0.0]]], torch.full((1, 1, 2, 2), 3.0))
    out.class_logits, out.mask_logits = out.class_logits.bfloat16(), out.mask_logits.bfloat16()
    (pred,) = instance_inference(out, [(2, 2)], top_k=1)
    expected = torch.tensor([2.0, 0.0]).softmax(0)[0] * torch.sigmoid(torch.tensor(3.0))
    assert pred.scores.dtype == torch.float32
    assert math.isclose(pred.scores.item(), expected.item(), rel_tol=1e-2)

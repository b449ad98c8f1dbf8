"""The Grounding DINO + SAM2 teacher: output contract, class distribution, pseudo-labels, adaptation loss, and the
library pitfalls it works around (G1/G2 tokenizer ids, G4 proposal head, G5 batch offsets, S1 square inputs,
S5 equal box counts)."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_convert

from castlib.config import load_config
from castlib.data.classes import ADE20K, CITYSCAPES
from castlib.models import PretrainedWeightsError, SegmentationOutput, build_model
from castlib.models.grounding import BERT_SPECIAL_IDS, Prompt, class_distribution, local_tokenizer, prompt_chunks

C = len(CITYSCAPES)


@pytest.fixture(scope="module")
def teacher(cfg):
    torch.manual_seed(0)
    return build_model(cfg, "teacher", C).eval()


def instance_targets(height: int = 112, width: int = 224) -> list[dict[str, torch.Tensor]]:
    """Two images: three instances (two of them touching) and one instance."""
    masks = torch.zeros(3, height, width, dtype=torch.bool)
    masks[0, 10:40, 20:80] = True
    masks[1, 40:100, 20:120] = True
    masks[2, 5:15, 150:200] = True
    return [{"masks": masks, "labels": torch.tensor([0, 2, 7])},
            {"masks": masks[1:2].flip(-1), "labels": torch.tensor([1])}]


def test_teacher_forward_honours_the_output_contract(teacher, cfg):
    out = teacher(torch.rand(2, 3, 112, 224))
    assert isinstance(out, SegmentationOutput)
    k, s = cfg.model.teacher.top_k, cfg.model.teacher.segmenter.image_size
    assert out.class_logits.shape == (2, k, C + 1)
    assert out.mask_logits.shape == (2, k, s // 4, s // 4)  # SAM2's low-resolution masks of the S x S image
    assert out.features.shape == (2, cfg.model.teacher.segmenter.hidden_size, s // 16, s // 16)
    assert out.extras["boxes"].shape == (2, k, 4) and out.aux == []
    scores = out.extras["scores"]
    assert torch.all(scores[:, 1:] <= scores[:, :-1])  # the K best boxes, best first


def test_class_distribution_puts_the_box_score_on_the_phrases_and_the_rest_on_no_object(teacher):
    out = teacher(torch.rand(1, 3, 112, 224))
    probs = out.class_logits.softmax(-1)
    assert torch.allclose(probs.sum(-1), torch.ones(1, teacher.top_k), atol=1e-5)
    assert torch.allclose(probs[..., -1], 1 - out.extras["scores"], atol=1e-5)


def test_class_distribution_by_hand():
    p = torch.tensor([0.6, 0.2, 0.0])  # the third class is outside the box's prompt chunk
    logits, score = class_distribution(p, 1 - p)
    assert score == pytest.approx(0.6)
    want = torch.tensor([0.6 * 0.6 / 0.8, 0.6 * 0.2 / 0.8, 0.0, 0.4])
    assert torch.allclose(logits.softmax(-1), want, atol=1e-6)


def test_phrase_score_is_the_mean_token_score_of_a_multi_word_name():
    tokenizer = local_tokenizer()
    names = ["bed", "chest of drawers"]
    prompt = Prompt(tokenizer, names, [0, 1], max_text_len=16)
    logits = torch.full((1, 1, 16), float("-inf"))
    ids = prompt.input_ids.tolist()
    logits[0, 0, : len(ids)] = torch.linspace(-2, 2, len(ids))  # [CLS] bed . chest of drawers . [SEP]
    p, q = prompt.phrase_probs(logits)
    token = torch.sigmoid(logits[0, 0])
    assert torch.allclose(p[0, 0], torch.stack([token[1], token[3:6].mean()]))
    assert torch.allclose(q[0, 0], 1 - p[0, 0])


def test_local_tokenizer_keeps_bert_base_uncased_special_ids():
    """Pitfalls G1/G2: the detector splits phrases on the hard-coded ids of [CLS], [SEP], '.', '?' and [PAD]."""
    tokenizer = local_tokenizer()
    ids = tokenizer("person . rider . car .")["input_ids"]
    assert ids[0] == BERT_SPECIAL_IDS["[CLS]"] and ids[-1] == BERT_SPECIAL_IDS["[SEP]"]
    assert ids[2::2][:3] == [BERT_SPECIAL_IDS["."]] * 3
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "?"]) == [BERT_SPECIAL_IDS["[PAD]"], BERT_SPECIAL_IDS["?"]]


@pytest.mark.parametrize("classes", [CITYSCAPES, ADE20K])
def test_prompt_chunks_cover_every_class_once_within_max_text_len(classes):
    tokenizer, max_len = local_tokenizer(), 128
    chunks = prompt_chunks(tokenizer, classes.names, max_len)
    assert sum(chunks, []) == list(range(len(classes)))
    prompts = [Prompt(tokenizer, classes.names, chunk, max_len) for chunk in chunks]
    assert all(len(p.input_ids) <= max_len and p.label_map.shape[0] == len(p.classes) for p in prompts)
    assert len(chunks) == (1 if classes is CITYSCAPES else 2)


def test_ade20k_teacher_pools_the_queries_of_its_prompt_chunks(cfg):
    teacher = build_model(load_config("smoke", ["data.dataset=ade20k"]), "teacher", len(ADE20K)).eval()
    out = teacher(torch.rand(1, 3, 84, 112))
    assert len(teacher.prompts) == 2 and out.class_logits.shape == (1, teacher.top_k, len(ADE20K) + 1)
    assert torch.allclose(out.class_logits.softmax(-1).sum(-1), torch.ones(1, teacher.top_k), atol=1e-5)


def test_sam2_gets_the_image_squashed_to_its_square_input_and_boxes_scaled_per_axis(teacher):
    """Pitfall S1: SAM2 takes S x S images; (cx, cy, w, h) boxes become S x S pixel corners."""
    seen, pixels = {}, []
    hooks = [teacher.segmenter.register_forward_pre_hook(lambda _, args, kwargs: seen.update(kwargs), with_kwargs=True),
             teacher.segmenter.vision_encoder.register_forward_pre_hook(lambda _, args: pixels.append(args[0]))]
    try:
        out = teacher(torch.rand(1, 3, 70, 210))
    finally:
        for hook in hooks:
            hook.remove()
    s = teacher.image_size
    assert [p.shape for p in pixels] == [(1, 3, s, s)] and seen["multimask_output"] is False
    want = box_convert(out.extras["boxes"], "cxcywh", "xyxy").clamp(0, 1) * s
    assert torch.allclose(seen["input_boxes"], want)


def test_encode_gives_the_features_of_forward(teacher):
    x = torch.rand(2, 3, 90, 120)
    assert torch.allclose(teacher.encode(x), teacher(x).features, atol=1e-6)
    assert teacher.embed(teacher.encode(x), "strong").shape == (2, (teacher.image_size // 16) ** 2, 128)


def fake_output(mask_logits: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor) -> SegmentationOutput:
    k = len(scores)
    class_logits = torch.full((1, k, C + 1), -10.0)
    class_logits[0, torch.arange(k), classes] = 0.0
    return SegmentationOutput(class_logits=class_logits, mask_logits=mask_logits[None],
                              extras={"scores": scores[None], "boxes": torch.zeros(1, k, 4)})


def test_pseudo_labels_are_painted_in_score_order_without_overlap(teacher, monkeypatch):
    """Spec 5.2: the best box keeps contested pixels; a mask entirely covered by better ones disappears."""
    logits = torch.full((4, 8, 8), -5.0)
    logits[0, :4, :4] = 5  # best: top-left quarter
    logits[1, 2:6, 2:6] = 5  # overlaps the best one
    logits[2, 1:3, 1:3] = 5  # inside the best one: nothing left
    logits[3, 6:, 6:] = 5  # below the threshold
    out = fake_output(logits, torch.tensor([0.9, 0.8, 0.7, 0.2]), torch.tensor([3, 1, 2, 5]))
    monkeypatch.setattr(teacher, "forward", lambda images: out)
    (result,) = teacher.predict_pseudo_labels(torch.rand(1, 3, 8, 8), threshold=0.3)
    assert result["labels"].tolist() == [3, 1] and result["scores"].tolist() == pytest.approx([0.9, 0.8])
    assert result["masks"][0].sum() == 16 and result["masks"][1].sum() == 16 - 4
    assert result["masks"].sum(0).max() == 1


def test_pseudo_labels_respect_threshold_and_cap(teacher):
    images = torch.rand(2, 3, 112, 224)
    scores = teacher(images).extras["scores"]
    threshold = scores.median().item()
    for cap in (3, 100):
        for result, image_scores in zip(teacher.predict_pseudo_labels(images, threshold, cap), scores, strict=True):
            assert result["masks"].shape[1:] == (112, 224) and result["masks"].dtype == torch.bool
            assert len(result["masks"]) == len(result["labels"]) == len(result["scores"])
            assert len(result["scores"]) <= min(cap, int((image_scores > threshold).sum()))
            assert torch.all(result["scores"] > threshold)
            assert torch.all(result["scores"][1:] <= result["scores"][:-1])
            assert result["masks"].sum(0).max() <= 1  # no pixel in two instances
            assert result["masks"].flatten(1).any(-1).all()
            assert torch.all((result["labels"] >= 0) & (result["labels"] < C))


def test_no_box_above_the_threshold_gives_no_pseudo_labels(teacher):
    (result,) = teacher.predict_pseudo_labels(torch.rand(1, 3, 112, 112), threshold=1.0)
    assert result["masks"].shape == (0, 112, 112) and len(result["labels"]) == len(result["scores"]) == 0


def test_pseudo_labels_restore_training_mode(teacher):
    teacher.train()
    teacher.predict_pseudo_labels(torch.rand(1, 3, 112, 112))
    assert teacher.training
    teacher.eval()


def test_supervised_loss_trains_the_configured_parts_only(cfg):
    """Every trainable parameter gets a non-zero gradient (after one step: Grounding DINO initialises its box
    heads' last layers to zero, which blocks the gradient of the layers before them at first); frozen ones none."""
    torch.manual_seed(0)
    teacher = build_model(cfg, "teacher", C).train()
    images, targets = torch.rand(2, 3, 112, 224), instance_targets()
    losses = teacher.supervised_loss(images, targets)
    w = cfg.model.teacher.loss
    want = (losses["loss_detection"] + w.mask_bce * losses["loss_mask_bce"] + w.mask_dice * losses["loss_mask_dice"]
            + w.iou * losses["loss_iou"] + w.object_score * losses["loss_object"])
    assert torch.isfinite(losses["loss"]) and torch.allclose(losses["loss"], want)
    losses["loss"].backward()
    optimizer = torch.optim.SGD([p for p in teacher.parameters() if p.requires_grad], lr=0.1)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    teacher.supervised_loss(images, targets)["loss"].backward()
    trainable = set(cfg.model.teacher.trainable)
    for name, p in teacher.named_parameters():
        part = teacher.part_of(name)
        if part in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        elif part != "projection":  # the projection heads learn from L_pxl only
            assert not p.requires_grad and p.grad is None, name


def test_proposal_head_gets_gradients_unlike_with_the_library_loss(cfg):
    """Pitfall G4: the library computes the encoder-proposal loss on detached proposals."""
    torch.manual_seed(0)
    teacher = build_model(cfg, "teacher", C).train()
    images, targets = torch.rand(2, 3, 112, 224), instance_targets()
    teacher.supervised_loss(images, targets)["loss_detection"].backward()
    proposal_head = teacher.detector.model.enc_output.weight
    assert proposal_head.grad is not None and proposal_head.grad.abs().sum() > 0

    teacher.zero_grad(set_to_none=True)
    del teacher.detector._loss_function  # back to transformers' own Grounding DINO loss
    labels = [{"class_labels": t["labels"], "boxes": torch.rand(len(t["labels"]), 4) * 0.5 + 0.25} for t in targets]
    prompt = teacher.prompts[0]
    teacher._run_detector(images, prompt, labels)[0].loss.backward()
    assert proposal_head.grad is None


def test_an_images_loss_does_not_depend_on_its_batch(teacher):
    """Pitfalls G5 (label-map offsets across a batch) and S5 (equal box counts per SAM2 batch): the loss of a batch
    is its images' losses weighted by their box counts, with different instance counts per image."""
    images, targets = torch.rand(2, 3, 112, 224), instance_targets()
    batch = teacher.supervised_loss(images, targets)
    single = [teacher.supervised_loss(images[i:i + 1], targets[i:i + 1]) for i in range(2)]
    counts = torch.tensor([3.0, 1.0])
    for key in ("loss_detection", "loss_mask_bce", "loss_mask_dice", "loss_iou", "loss_object"):
        want = sum(s[key] * n for s, n in zip(single, counts, strict=True)) / counts.sum()
        assert torch.allclose(batch[key], want, rtol=1e-4, atol=1e-5), key


def test_images_without_instances_still_give_a_loss(teacher):
    empty = {"masks": torch.zeros(0, 112, 112, dtype=torch.bool), "labels": torch.zeros(0, dtype=torch.long)}
    losses = teacher.supervised_loss(torch.rand(2, 3, 112, 112), [empty, empty])
    assert torch.isfinite(losses["loss"]) and losses["loss_mask_bce"] == 0


def test_an_image_without_instances_beside_one_with_some_gives_that_images_loss(teacher):
    """A crop can hold no instance while its batch-mate holds some (the mini stand-in met one after 200 steps)."""
    images, targets = torch.rand(2, 3, 112, 224), instance_targets()
    empty = {"masks": torch.zeros(0, 112, 224, dtype=torch.bool), "labels": torch.zeros(0, dtype=torch.long)}
    mixed = teacher.supervised_loss(images, [targets[0], empty])
    alone = teacher.supervised_loss(images[:1], targets[:1])
    for key in ("loss_mask_bce", "loss_mask_dice", "loss_iou", "loss_object"):
        assert torch.allclose(mixed[key], alone[key], rtol=1e-4, atol=1e-5), key


def test_every_parameter_belongs_to_a_part_and_groups_follow_the_parts(teacher):
    names = [n for n, _ in teacher.named_parameters(remove_duplicate=False)]
    parts = {teacher.part_of(n) for n in names}
    assert parts == set(teacher.parts)
    groups = teacher.param_groups()
    assert groups["encoder"] == []  # the default adapts no encoder
    unfrozen = build_model(load_config("smoke", ["model.teacher.trainable=[segmenter.image_encoder]"]), "teacher", C)
    assert {id(p) for p in unfrozen.param_groups()["encoder"]} == {
        id(p) for p in unfrozen.segmenter.vision_encoder.backbone.parameters()} | {
        id(unfrozen.segmenter.no_memory_embedding)}


def test_by_default_l_pxl_reaches_the_teacher_through_sam2s_neck_not_its_backbone(teacher):
    """The contrastive loss must shape the features SAM2's mask decoder reads, with the Hiera backbone frozen."""
    teacher.zero_grad()
    features = teacher.encode(torch.rand(1, 3, 112, 112))
    teacher.embed(features, "weak").sum().backward()
    neck = [p.grad for p in teacher.segmenter.vision_encoder.neck.parameters()]
    assert all(p.requires_grad for p in teacher.segmenter.vision_encoder.neck.parameters())
    assert any(g is not None and g.abs().sum() > 0 for g in neck)  # the convs of the level the heads read
    assert all(not p.requires_grad for p in teacher.segmenter.vision_encoder.backbone.parameters())


def test_pretrained_teacher_offline_says_which_weights_and_what_to_do(cfg):
    with pytest.raises(PretrainedWeightsError) as error:
        build_model(cfg, "teacher", C, pretrained=True)
    message = str(error.value)
    assert cfg.model.teacher.detector.weights in message and "model.teacher.detector.weights" in message
    assert "hf download" in message and "smoke or mini profile" in message


@pytest.mark.parametrize("dynamic", [False, True])
def test_eval_masks_are_the_single_mask_token_unless_the_fallback_is_asked_for(cfg, dynamic):
    """Pitfall S3: SAM2's eval-mode fallback swaps an unstable single mask for a multimask head's, heads the
    adaptation never trains; ``segmenter.dynamic_multimask: false`` keeps every mask the single-mask token's, so
    evaluation and pseudo-labels decode what training fitted. The random teacher's masks are all unstable."""
    torch.manual_seed(0)
    teacher = build_model(load_config("smoke", [f"model.teacher.segmenter.dynamic_multimask={str(dynamic).lower()}"]),
                          "teacher", C)
    images = torch.rand(1, 3, 112, 224)
    with torch.no_grad():
        teacher.train().detector.eval()  # the same boxes (no dropout); SAM2 in training mode never falls back
        trained_path = teacher(images).mask_logits
        evaluated = teacher.eval()(images).mask_logits
    assert torch.equal(evaluated, trained_path) != dynamic


def test_paper_random_weight_teacher_has_the_hub_teachers_architecture():
    """``model.pretrained=false`` on the paper profile builds MM-Grounding-DINO Swin-L + SAM2.1 Hiera-L, not a
    smoke-size teacher: 559.5M parameters as the hub teacher's (issue 30's review; the projection heads included),
    within 0.1%. BERT's embedding has bert-base's 30522 rows (``text_vocab_size``), though the local tokenizer
    uses only its first ids. Built on the meta device (no memory, well under a second)."""
    cfg = load_config("paper", ["model.pretrained=false"])
    with torch.device("meta"):
        teacher = build_model(cfg, "teacher", C, pretrained=False)
    count = sum(p.numel() for p in teacher.parameters())
    assert count == pytest.approx(559.5e6, rel=1e-3)
    assert teacher.detector.model.text_backbone.embeddings.word_embeddings.num_embeddings == 30522
    assert len(teacher.detector.model.input_proj_vision) == 5  # four Swin stages out and one extra level
    assert len(teacher.segmenter.vision_encoder.backbone.blocks) == 48  # Hiera-L's 2 + 6 + 36 + 4 blocks


def many_instances(count: int, height: int = 112, width: int = 224, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(count, height, width, dtype=torch.bool)
    for k in range(count):
        y, x = int(torch.randint(0, height - 20, (), generator=g)), int(torch.randint(0, width - 30, (), generator=g))
        masks[k, y:y + 20, x:x + 30] = True
    return {"masks": masks, "labels": torch.randint(0, C, (count,), generator=g)}


def test_activation_checkpointing_leaves_the_loss_and_gradients_unchanged():
    """``model.teacher.activation_checkpointing`` recomputes SAM2's mask decoder in chunks of MASK_CHUNK prompts in
    the backward pass: the same loss terms and gradients (float32 noise, rtol 1e-4) with 20 + 40 instances, i.e.
    several chunks per image."""
    images = torch.rand(2, 3, 112, 224)
    targets = [many_instances(20, seed=1), many_instances(40, seed=2)]
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        cfg = load_config("smoke", [f"model.teacher.activation_checkpointing={str(checkpointing).lower()}"])
        teacher = build_model(cfg, "teacher", C).eval()
        calls = []
        hook = teacher.segmenter.mask_decoder.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        torch.manual_seed(3)
        losses = teacher.supervised_loss(images, targets)
        hook.remove()  # counts the forward pass's calls only
        losses["loss"].backward()
        grads = {n: p.grad for n, p in teacher.named_parameters() if p.grad is not None}
        results.append((losses, grads, len(calls)))
    (plain, plain_grads, plain_calls), (checked, checked_grads, checked_calls) = results
    assert plain_calls == 1 and checked_calls == 3  # 40 prompts (20 + 20 padding): 3 chunks of 16
    for key, value in plain.items():
        assert torch.allclose(checked[key], value, rtol=1e-4, atol=1e-6), key
    assert set(checked_grads) == set(plain_grads) and any(n.startswith("segmenter.mask_decoder") for n in plain_grads)
    for name, grad in plain_grads.items():
        assert torch.allclose(checked_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_masks_decoded_without_gradient_in_chunks_equal_those_decoded_at_once(teacher):
    """Without gradient (the K predicted boxes of a step, inference) SAM2 decodes MASK_CHUNK prompts at a time."""
    images = torch.rand(1, 3, 112, 224)
    with torch.no_grad():
        chunked = teacher(images)
    whole = teacher(images)
    assert teacher.top_k > 16
    assert torch.allclose(chunked.mask_logits, whole.mask_logits, rtol=1e-4, atol=1e-5)
    assert torch.allclose(chunked.extras["iou_scores"], whole.extras["iou_scores"], rtol=1e-4, atol=1e-6)

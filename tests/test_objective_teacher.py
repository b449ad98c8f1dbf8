"""The teacher's training step (issue 30): one detector pass per prompt chunk and one SAM2 image-encoder pass per
view, with L_sup, L_semi and L_pxl (and their gradients) unchanged from the earlier step, which ran the whole
teacher for L_pxl's features and predictions and then the detector and SAM2 again for each part's loss.

The earlier step is rebuilt here from the library's own paths (``Sam2Model`` from pixels, one detector pass per
part) as the reference. Both run in eval mode, so dropout draws no random numbers and the random instance subsets
of SAM2's loss and L_pxl's negatives are drawn in the same order from the same seed."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert

from castlib.config import load_config
from castlib.data.classes import ADE20K, CITYSCAPES
from castlib.data.sample import Batch
from castlib.engine.objective import Objective, targets_of
from castlib.losses import contrastive_options
from castlib.models import build_model
from castlib.models.geometry import normalize
from castlib.models.grounding import mask_boxes
from castlib.models.output import SegmentationOutput
from castlib.models.segmenter import mask_loss, squash
from castlib.models.teacher import MASK_CHUNK

C = len(CITYSCAPES)
RTOL, ATOL = 1e-4, 1e-6  # one batched detector pass against one per part: float32 reduction order only


def batch(seed: int, n: int = 2, height: int = 112, width: int = 224) -> Batch:
    """``n`` random images with a strong view and 1-3 rectangular instances each."""
    g = torch.Generator().manual_seed(seed)
    masks, labels = [], []
    for _ in range(n):
        count = int(torch.randint(1, 4, (), generator=g))
        m = torch.zeros(count, height, width, dtype=torch.bool)
        for k in range(count):
            y = int(torch.randint(0, height - 30, (), generator=g))
            x = int(torch.randint(0, width - 40, (), generator=g))
            m[k, y:y + 30, x:x + 40] = True
        masks.append(m)
        labels.append(torch.randint(0, C, (count,), generator=g))
    images = torch.rand(n, 3, height, width, generator=g)
    return Batch(images=images, valid=torch.ones(n, height, width, dtype=torch.bool), masks=masks, labels=labels,
                 image_ids=[f"{seed}-{i}" for i in range(n)], paths=[""] * n, sizes=[(height, width)] * n,
                 strong=(images + 0.1 * torch.rand(images.shape, generator=g)).clamp(0, 1))


def reference_supervised_loss(teacher, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
    """The earlier ``supervised_loss``: its own detector pass per prompt chunk, SAM2 run from the pixels."""
    x = normalize(images)
    targets = [{"masks": t["masks"][keep], "labels": t["labels"][keep]}
               for t in targets for keep in [t["masks"].flatten(1).any(-1)]]
    boxes = [mask_boxes(t["masks"]) for t in targets]
    pixel_values = teacher._detector_input(x)
    detection = x.new_zeros(())
    for prompt in teacher.prompts:
        labels = teacher._chunk_labels(prompt, targets, boxes, x.device)
        out, mask = teacher._run_detector(pixel_values, prompt, labels)
        detection = detection + teacher.detection_loss(out, prompt, mask, labels)
    chosen = [torch.randperm(len(b))[:teacher.loss_options.max_instances].sort().values for b in boxes]
    count = max(len(c) for c in chosen)
    prompts = x.new_tensor([0.5, 0.5, 1.0, 1.0]).repeat(len(x), count, 1)
    valid = torch.zeros(len(x), count, dtype=torch.bool)
    for i, (b, c) in enumerate(zip(boxes, chosen, strict=True)):
        prompts[i, :len(c)], valid[i, :len(c)] = b[c], True
    s = teacher.image_size
    out = teacher.segmenter(pixel_values=squash(x, s), input_boxes=box_convert(prompts, "cxcywh", "xyxy") * s,
                            multimask_output=False)
    size = out.pred_masks.shape[-2:]
    gt = torch.cat([F.interpolate(t["masks"][c][None].float(), size=size, mode="bilinear", align_corners=False,
                                  antialias=True)[0] > 0.5 for t, c in zip(targets, chosen, strict=True)])
    terms = {"loss_detection": detection} | mask_loss(out.pred_masks[:, :, 0][valid], out.iou_scores[..., 0][valid],
                                                      out.object_score_logits[..., 0][valid], gt)
    w = teacher.loss_options
    terms["loss"] = (terms["loss_detection"] + w.mask_bce * terms["loss_mask_bce"] + w.mask_dice * terms[
        "loss_mask_dice"] + w.iou * terms["loss_iou"] + w.object_score * terms["loss_object"])
    return terms


def reference_forward(teacher, images: torch.Tensor) -> SegmentationOutput:
    """The earlier ``forward`` (run with gradients for L_pxl): detector without labels, SAM2 from the pixels."""
    x = normalize(images)
    p, q, boxes, _ = teacher._detect(x)
    class_logits, _, boxes = teacher._top_k(p, q, boxes)
    s = teacher.image_size
    out = teacher.segmenter(pixel_values=squash(x, s), multimask_output=False,
                            input_boxes=box_convert(boxes, "cxcywh", "xyxy").clamp(0, 1).detach() * s)
    return SegmentationOutput(class_logits=class_logits, mask_logits=out.pred_masks[:, :, 0],
                              features=out.image_embeddings[-1])


def reference_step(objective: Objective, labelled: Batch, unlabelled: Batch) -> dict[str, torch.Tensor]:
    """The earlier ``Objective.forward`` of the teacher with L_pxl: the whole teacher, then L_sup and L_semi."""
    teacher = objective.model
    output = reference_forward(teacher, torch.cat([labelled.images, unlabelled.images]))
    sup = reference_supervised_loss(teacher, labelled.images, targets_of(labelled))
    semi = reference_supervised_loss(teacher, unlabelled.images, targets_of(unlabelled))
    pxl = objective._contrastive(output, torch.cat([labelled.strong, unlabelled.strong]),
                                 labelled.masks + unlabelled.masks, torch.cat([labelled.valid, unlabelled.valid]))
    losses = {f"sup/{k}": v for k, v in sup.items()} | {f"semi/{k}": v for k, v in semi.items()}
    losses["pxl/loss"] = pxl.loss
    losses["loss"] = sup["loss"] + objective.semi_weight * semi["loss"] + objective.contrastive_weight * pxl.loss
    return losses


def teacher_objective(cfg, num_classes: int = C) -> Objective:
    torch.manual_seed(0)
    teacher = build_model(cfg, "teacher", num_classes).eval()  # eval: no dropout, see the module docstring
    return Objective(teacher, "teacher", semi_weight=1.0, contrastive=contrastive_options(cfg.loss.contrastive),
                     contrastive_weight=0.2)


def gradients(objective: Objective) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in objective.model.named_parameters() if p.grad is not None}


def test_the_one_pass_step_gives_the_earlier_steps_losses_and_gradients(cfg):
    """L_sup, L_semi (every term), L_pxl and the total, and every trainable parameter's gradient, equal the earlier
    two-pass step's within float32 reduction-order noise (rtol 1e-4, atol 1e-6)."""
    objective = teacher_objective(cfg)
    labelled, unlabelled = batch(1), batch(2)
    torch.manual_seed(5)
    new = objective(labelled, unlabelled)
    objective.model.zero_grad()
    new["loss"].backward()
    new_grads = gradients(objective)
    torch.manual_seed(5)
    old = reference_step(objective, labelled, unlabelled)
    objective.model.zero_grad()
    old["loss"].backward()
    old_grads = gradients(objective)
    assert set(old) <= set(new) and len(old) == 14  # 6 terms of L_sup, 6 of L_semi, L_pxl, total
    for key, value in old.items():
        assert torch.allclose(new[key], value.detach(), rtol=RTOL, atol=ATOL), (key, new[key], value)
    assert new["pxl/loss"] > 0 and new["semi/loss_detection"] > 0
    assert set(new_grads) == set(old_grads) and any(n.startswith("segmenter.vision_encoder.neck") for n in new_grads)
    for name, grad in old_grads.items():
        assert torch.allclose(new_grads[name], grad, rtol=RTOL, atol=ATOL), name


def test_supervised_loss_is_the_earlier_supervised_loss(cfg):
    """Without L_pxl (and in the pretrain stage) the teacher's L_sup is ``supervised_loss``: the same values."""
    objective = teacher_objective(cfg)
    part = batch(3)
    torch.manual_seed(7)
    new = objective.model.supervised_loss(part.images, targets_of(part))
    torch.manual_seed(7)
    old = reference_supervised_loss(objective.model, part.images, targets_of(part))
    for key, value in old.items():
        assert torch.allclose(new[key], value, rtol=RTOL, atol=ATOL), key


@pytest.mark.parametrize("dataset", ["cityscapes", "ade20k"])
def test_one_step_runs_the_detector_once_per_prompt_chunk_and_sams_image_encoder_once_per_view(dataset):
    """Counted with forward hooks over one Objective step with L_pxl on, labelled and unlabelled parts: the
    detector's forward once per prompt chunk (Cityscapes 1, smoke ADE20K 2) over all images of both parts; SAM2's
    vision encoder once over the weak views (the losses, the predictions for y and the features all read it) and
    once over the strong views (no gradient, DESIGN 5); SAM2's mask decoder once per part (ground-truth boxes) and
    for the K predicted boxes (without gradient, MASK_CHUNK prompts at a time). The earlier step ran the detector
    twice per chunk and the encoder three times."""
    cfg = load_config("smoke", [f"data.dataset={dataset}"])
    classes = ADE20K if dataset == "ade20k" else CITYSCAPES
    objective = teacher_objective(cfg, len(classes))
    teacher = objective.model
    calls = {"detector": [], "vision_encoder": [], "mask_decoder": []}
    modules = {"detector": teacher.detector, "vision_encoder": teacher.segmenter.vision_encoder,
               "mask_decoder": teacher.segmenter.mask_decoder}
    hooks = [module.register_forward_hook(lambda m, args, kwargs, out, name=name: calls[name].append(
        torch.is_grad_enabled()), with_kwargs=True) for name, module in modules.items()]
    labelled, unlabelled = batch(1), batch(2)
    for part in (labelled, unlabelled):
        part.labels = [lab % len(classes) for lab in part.labels]
    try:
        objective(labelled, unlabelled)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(teacher.prompts) == (2 if dataset == "ade20k" else 1)
    assert calls["detector"] == [True] * len(teacher.prompts)
    assert calls["vision_encoder"] == [True, False]  # weak views, then strong views without gradient
    chunks = math.ceil(teacher.top_k / MASK_CHUNK)  # the K boxes without gradient, MASK_CHUNK at a time
    assert calls["mask_decoder"] == [True, True] + [False] * chunks  # L_sup, L_semi, then the K boxes

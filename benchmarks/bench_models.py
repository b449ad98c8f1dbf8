"""Models: parameter counts per profile, and the cost of a smoke-size training step.

Targets (issue 3): a smoke student training step (forward, backward, AdamW) at crop 112x224, batch 2, takes well
under a second on 2 CPU cores, and so does a smoke teacher adaptation step. The student's step uses a stand-in
loss touching every output (the Mask2Former criterion lives in ``castlib.losses``); the teacher's is its own
``supervised_loss``. Parameter counts are measured on the meta device (no weights are allocated).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from castlib.config import load_config
from castlib.data.classes import CITYSCAPES
from castlib.models import build_model

C = len(CITYSCAPES)
STEP_TARGET_S = 1.0


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts() -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for profile in ("smoke", "mini", "paper"):
        row = {}
        with torch.device("meta"):
            for backbone in ("dinov2_s", "resnet50", "dinov2_b", "dinov2_l"):
                cfg = load_config(profile, [f"model.baseline_backbone={backbone}"])
                which = "student" if backbone == "dinov2_s" else "baseline"
                row[which if which == "student" else f"baseline_{backbone}"] = _count(
                    build_model(cfg, which, C, pretrained=False))
            if profile != "paper":  # the paper teacher's sizes come from its hub checkpoints
                row["teacher"] = _count(build_model(load_config(profile), "teacher", C, pretrained=False))
        counts[profile] = row
    return counts


def _median_step(step, repeats: int = 5) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _training_step_s(model: torch.nn.Module, lr: float, loss_of_step) -> float:
    """Median seconds of ``loss_of_step()``, backward and an AdamW step over ``model``'s trainable parameters."""
    optimizer = torch.optim.AdamW([p for g in model.param_groups().values() for p in g], lr=lr)

    def step():
        loss = loss_of_step()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return _median_step(step)


def student_step_s() -> float:
    torch.manual_seed(0)
    model = build_model(load_config("smoke"), "student", C).train()
    images = torch.rand(2, 3, 112, 224)
    targets = torch.rand(2, model.decoder.config.num_queries, 64, 128).round()

    def loss():
        out = model(images)
        predictions = [(out.class_logits, out.mask_logits)] + [(a["class_logits"], a["mask_logits"]) for a in out.aux]
        total = sum(F.cross_entropy(c.flatten(0, 1), torch.zeros(c.shape[0] * c.shape[1], dtype=torch.long))
                    + F.binary_cross_entropy_with_logits(m, targets) for c, m in predictions)
        strong = model.embed(model.encode(images).detach(), "strong")
        return total + (1 - (model.embed(out.features, "weak") * strong).sum(-1)).mean()

    return _training_step_s(model, 1e-4, loss)


def teacher_step_s() -> float:
    torch.manual_seed(0)
    model = build_model(load_config("smoke"), "teacher", C).train()
    images = torch.rand(2, 3, 112, 224)
    masks = torch.zeros(4, 112, 224, dtype=torch.bool)
    for i in range(4):
        masks[i, 10 + 20 * i: 40 + 20 * i, 20 + 40 * i: 90 + 40 * i] = True
    targets = [{"masks": masks, "labels": torch.tensor([0, 2, 2, 7])},
               {"masks": masks[:2], "labels": torch.tensor([1, 0])}]
    return _training_step_s(model, 5e-5, lambda: model.supervised_loss(images, targets)["loss"])


def pseudo_label_images_per_s() -> float:
    torch.manual_seed(0)
    model = build_model(load_config("smoke"), "teacher", C)
    images = torch.rand(2, 3, 128, 256)
    return len(images) / _median_step(lambda: model.predict_pseudo_labels(images))


def run() -> dict:
    student, teacher = student_step_s(), teacher_step_s()
    return {
        "profile": "smoke (steps); smoke, mini and paper (parameter counts)",
        "data": "random images 112x224, batch 2; Cityscapes classes (8)",
        "parameters": parameter_counts(),
        "student_step_s": student,
        "teacher_step_s": teacher,
        "teacher_pseudo_label_images_per_s": pseudo_label_images_per_s(),
        "checks": [
            {"name": "smoke student training step (s)", "value": student, "target": f"< {STEP_TARGET_S}",
             "passed": student < STEP_TARGET_S},
            {"name": "smoke teacher adaptation step (s)", "value": teacher, "target": f"< {STEP_TARGET_S}",
             "passed": teacher < STEP_TARGET_S},
        ],
    }

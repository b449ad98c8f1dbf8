"""Models: parameter counts per profile, and the cost of the real training steps.

The student's step is the real one of knowledge transfer (issue 13): the model on a batch of synthetic images at
the profile's crop, the Mask2Former set criterion (Hungarian matching and point sampling on all 10 predictions),
L_pxl, backward and AdamW, each part's median seconds and share reported (target: L_pxl under 10% of the step).
The teacher's step is its own ``supervised_loss`` (Grounding DINO + SAM2 losses), backward and AdamW; issue 3's
target is a smoke teacher step under a second on 2 CPU cores. Parameter counts are measured on the meta device.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from castlib.config import load_config
from castlib.data.classes import CITYSCAPES
from castlib.data.datasets import DATASETS
from castlib.data.sample import collate
from castlib.data.synthetic import SyntheticSpec, generate
from castlib.data.transforms import train_views
from castlib.engine.objective import Objective
from castlib.losses import SetCriterion, contrastive_options
from castlib.models import build_model

C = len(CITYSCAPES)
STEP_TARGET_S = 1.0
PXL_SHARE_TARGET = 0.10


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


def _real_batch(profile: str, batch_size: int, strong: bool):
    """A training batch of ``profile``'s crop and augmentation from a few synthetic target-domain images."""
    cfg = load_config(profile)
    with tempfile.TemporaryDirectory() as tmp:
        spec = SyntheticSpec("cityscapes", batch_size, 1, cfg.data.synthetic.cityscapes.height,
                             cfg.data.synthetic.cityscapes.width, seed=0)
        root = generate(spec, Path(tmp) / "set")
        data = DATASETS["cityscapes"](root, "train", transform=train_views(cfg.augment, strong))
        return cfg, collate([data[i] for i in range(batch_size)])


def student_step_parts(profile: str = "smoke", batch_size: int = 4, repeats: int = 5) -> dict[str, float]:
    """Median seconds of each part of the real student step on ``profile``'s sizes: model forward, the set
    criterion (Hungarian matching and point sampling on every decoder layer), L_pxl (forward; its backward is the
    step's backward minus that of the same step without L_pxl), backward and the AdamW step."""
    torch.manual_seed(0)
    cfg, batch = _real_batch(profile, batch_size, strong=True)
    model = build_model(cfg, "student", C, pretrained=False).train()
    criterion = SetCriterion.from_config(cfg.loss, C)
    options = contrastive_options(cfg.loss.contrastive)
    objective = Objective(model, "criterion", criterion, contrastive=options,
                          contrastive_weight=cfg.train.student.contrastive_weight)
    optimizer = torch.optim.AdamW([p for g in model.param_groups().values() for p in g], lr=1e-4)
    times: dict[str, list[float]] = {k: [] for k in ("model", "criterion", "pxl", "backward", "backward_no_pxl",
                                                     "optimizer")}

    def timed(name, fn):
        start = time.perf_counter()
        value = fn()
        times[name].append(time.perf_counter() - start)
        return value

    def step(contrastive: bool) -> None:
        out = timed("model", lambda: model(batch.images))
        loss = timed("criterion", lambda: criterion(out, batch.masks, batch.labels))["loss"]
        if contrastive:
            pxl = timed("pxl", lambda: objective._contrastive(out, batch.strong, batch.masks))
            loss = loss + objective.contrastive_weight * pxl.loss
        optimizer.zero_grad()
        timed("backward" if contrastive else "backward_no_pxl", loss.backward)
        timed("optimizer", optimizer.step)

    step(True)  # warm-up
    times = {k: [] for k in times}
    for _ in range(repeats):
        step(True)
        step(False)
    med = {k: statistics.median(v) for k, v in times.items()}
    pxl_backward = max(0.0, med["backward"] - med["backward_no_pxl"])
    parts = {"model_forward": med["model"], "criterion_forward": med["criterion"],
             "pxl": med["pxl"] + pxl_backward, "backward_other": med["backward"] - pxl_backward,
             "optimizer": med["optimizer"]}
    total = sum(parts.values())
    return {"step_s": total, **{f"{k}_s": v for k, v in parts.items()},
            **{f"{k}_share": v / total for k, v in parts.items()}}


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
    student = {profile: student_step_parts(profile) for profile in ("smoke", "mini")}
    teacher = teacher_step_s()
    return {
        "profile": "smoke and mini (student steps), smoke (teacher step); smoke, mini and paper (parameter counts)",
        "data": "synthetic Cityscapes-format images at the profile's crop, batch 4 (student); random 112x224, "
                "batch 2 (teacher); Cityscapes classes (8)",
        "parameters": parameter_counts(),
        "student_step": student,
        "teacher_step_s": teacher,
        "teacher_pseudo_label_images_per_s": pseudo_label_images_per_s(),
        "checks": [
            *({"name": f"{profile} student step: L_pxl share", "value": parts["pxl_share"],
               "target": f"< {PXL_SHARE_TARGET}", "passed": parts["pxl_share"] < PXL_SHARE_TARGET}
              for profile, parts in student.items()),
            {"name": "smoke teacher adaptation step (s)", "value": teacher, "target": f"< {STEP_TARGET_S}",
             "passed": teacher < STEP_TARGET_S},
        ],
    }

"""Guided Distillation (Berrada et al., WACV 2024) as its official code runs it (shared/research/
guided_distillation.md), on the kit's engine, data, splits, augmentation, set criterion, evaluation and registry:

    t = guided_distillation_teacher(cfg, "resnet50", 0.10)   stage 1: Mask2Former on the labelled set alone
    s = guided_distillation(cfg, "resnet50", 0.10)           stage 2 (trains t first if missing), the student:

- 2a, guided burn-in (iterations ``0 .. burn_in_iterations - 1``): a fresh student from the pretrained backbone;
  the stage-1 teacher, frozen, gives hard pseudo-labels on the weak view of each unlabelled batch and the student
  learns them on the strong view of the same images, weight lambda_u = 2 from iteration 0 (spec 1.2, 1.4);
- 2b, distillation (from ``burn_in_iterations`` on): the teacher becomes a copy of the student, then its EMA
  (decay 0.9996, float buffers averaged, integer buffers copied; spec 1.5).

Pseudo-labels come from the teacher's final layer only (spec 1.3). The optimiser is AdamW 1e-4 with the backbone
at x0.1, weight decay 0.05 (none on norms and embeddings), full-model gradient clipping at L2 norm 0.01 and a poly
schedule (spec 1.9). The student is what is evaluated and saved.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from castlib.config import Config
from castlib.data.loaders import build_dataset, labelled_dataset, read_split_ids
from castlib.data.sample import Batch
from castlib.data.transforms import train_views
from castlib.engine.declarations import COMMON_KEYS, STAGES, stage
from castlib.engine.fitting import fit
from castlib.engine.lifecycle import load_model, num_classes, stage_seed
from castlib.engine.objective import Objective, take
from castlib.engine.optim import build_scheduler
from castlib.engine.pretrain import start_from_pretrained
from castlib.engine.runs import Run
from castlib.errors import ConfigError
from castlib.losses import SetCriterion

SECTION = "baselines.guided_distillation"
# The keys both stages read (the run id): the model on model.baseline_backbone and the set criterion's weights.
MODEL_KEYS = (*COMMON_KEYS, "augment", "model.pretrained", "model.stand_in_init", "model.baseline_backbone",
              "model.trainable", "model.backbones", "model.pixel_decoder", "model.decoder", "model.projection",
              *(f"loss.{k}" for k in ("class_weight", "mask_weight", "dice_weight", "no_object_weight", "num_points",
                                      "oversample_ratio", "importance_sample_ratio")))
# stage 1 reads the optimiser keys, not stage 2's, so stage-2 variants share one teacher run
TEACHER_KEYS = (*MODEL_KEYS, *(f"{SECTION}.{k}" for k in ("teacher_iterations", "batch_size", "lr",
                                                          "backbone_lr_factor", "weight_decay", "grad_clip", "power")))

# detectron2's get_default_optimizer_params: parameters of these modules get no weight decay (spec 1.9).
NO_DECAY_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
                    nn.LocalResponseNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
                    FrozenBatchNorm2d, nn.Embedding)


def gd_config(cfg: Config, backbone: str, fraction: float) -> Config:
    """``cfg`` with ``model.baseline_backbone = backbone`` and ``data.label_fraction = fraction``, checked."""
    if backbone not in cfg.model.backbones:
        raise ConfigError(None, "model.baseline_backbone",
                          f"no backbone '{backbone}' (known: {', '.join(cfg.model.backbones)})")
    if not any(math.isclose(fraction, f) for f in cfg.data.label_fractions):
        raise ConfigError(None, "data.label_fraction",
                          f"{fraction} is not one of data.label_fractions {list(cfg.data.label_fractions)}")
    out = cfg.with_changes({"model.baseline_backbone": backbone, "data.label_fraction": float(fraction)})
    section = out.get_path(SECTION)
    if not 0 <= section.burn_in_iterations <= section.iterations:
        raise ConfigError(None, f"{SECTION}.burn_in_iterations",
                          f"must lie in 0..iterations ({section.iterations}), got {section.burn_in_iterations}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# The pieces of stage 2.

@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """theta_T <- d theta_T + (1 - d) theta_S for every float parameter and buffer; integer buffers (batch counts)
    are copied from the student (spec 1.5, ``update_ema_module``). ``decay=0`` copies the student."""
    target = teacher.state_dict()
    for name, value in student.state_dict().items():
        if target[name].dtype.is_floating_point:
            target[name].mul_(decay).add_(value.detach().to(target[name].dtype), alpha=1.0 - decay)
        else:
            target[name].copy_(value)


def pseudo_label_targets(class_logits: torch.Tensor, mask_logits: torch.Tensor, image_size: tuple[int, int], *,
                         class_threshold: float, min_area: float, mask_threshold: float
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """GD's pseudo-labels (spec 1.3, ``prepare_ssl_outputs``) from final-layer predictions ``[B, Q, C+1]`` and
    ``[B, Q, h, w]`` of images of ``image_size``: per image, the queries whose argmax is a real class, whose
    softmax probability exceeds ``class_threshold`` and whose soft area (sum of sigmoids at 1/4 of the image
    size) exceeds ``min_area``; label = argmax, mask = sigmoid > ``mask_threshold`` at 1/4 resolution.
    Returns per-image masks ``[N_i, H/4, W/4]`` (bool) and labels ``[N_i]``; ``N_i`` may be 0."""
    size = (math.ceil(image_size[0] / 4), math.ceil(image_size[1] / 4))
    probs = mask_logits.float()
    if tuple(probs.shape[-2:]) != size:
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    probs = probs.sigmoid()
    score, label = class_logits.float().softmax(-1).max(-1)
    keep = (label != class_logits.shape[-1] - 1) & (score > class_threshold) & (probs.sum((-2, -1)) > min_area)
    masks = [p[k] > mask_threshold for p, k in zip(probs, keep, strict=True)]
    labels = [lab[k] for lab, k in zip(label, keep, strict=True)]
    return masks, labels


class GuidedDistillationObjective(nn.Module):
    """One stage-2 iteration's loss (spec 1.2): the set criterion on the labelled batch plus ``unlabelled_weight``
    times the set criterion of the student's strong-view predictions against the teacher's pseudo-labels from the
    weak view of the same unlabelled images. The teacher never trains and always runs in eval mode and float32;
    :meth:`update_teacher` is its only change (a copy at the hand-over, then EMA)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, criterion: nn.Module, section: Config):
        super().__init__()
        self.student = student
        self.teacher = teacher.requires_grad_(False).eval()
        self.criterion = criterion
        self.unlabelled_weight = section.unlabelled_weight
        self.burn_in = section.burn_in_iterations
        self.ema_decay = section.ema_decay
        self.filter = {"class_threshold": section.class_threshold, "min_area": section.min_mask_area,
                       "mask_threshold": section.mask_threshold}

    def train(self, mode: bool = True) -> GuidedDistillationObjective:
        super().train(mode)
        self.teacher.eval()
        return self

    def update_teacher(self, iteration: int) -> None:
        """Before iteration ``iteration``'s forward: frozen during burn-in, a copy of the student at
        ``burn_in_iterations``, an EMA step after it."""
        if iteration >= self.burn_in:
            ema_update(self.teacher, self.student, 0.0 if iteration == self.burn_in else self.ema_decay)

    @torch.no_grad()
    def pseudo_labels(self, weak: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        with torch.autocast(device_type=weak.device.type, enabled=False):
            output = self.teacher(weak.float())
        return pseudo_label_targets(output.class_logits, output.mask_logits, tuple(weak.shape[-2:]), **self.filter)

    def forward(self, labelled: Batch, unlabelled: Batch) -> dict[str, torch.Tensor]:
        if unlabelled.strong is None:
            raise ValueError("the unlabelled batch needs its strong view (train_views(..., strong=True))")
        masks, labels = self.pseudo_labels(unlabelled.images)
        n = len(labelled)
        output = self.student(torch.cat([labelled.images, unlabelled.strong]))
        sup = self.criterion(take(output, 0, n), labelled.masks, labelled.labels)
        semi = self.criterion(take(output, n), masks, labels)
        losses = {f"sup/{k}": v.detach() for k, v in sup.items()} | {f"semi/{k}": v.detach() for k, v in semi.items()}
        losses["semi/pseudo_labels_per_image"] = torch.tensor(sum(len(lab) for lab in labels) / len(labels))
        losses["loss"] = sup["loss"] + self.unlabelled_weight * semi["loss"]
        return losses


def gd_optimizer(model: nn.Module, section: Config) -> torch.optim.AdamW:
    """AdamW as GD's ``build_optimizer`` (spec 1.9): ``lr``, x ``backbone_lr_factor`` for the encoder, weight
    decay on every parameter except those of norm layers and embeddings. Group names feed ``lr/<name>`` logs."""
    groups: dict[str, dict] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        no_decay = isinstance(module, NO_DECAY_MODULES)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            encoder = model.part_of(f"{module_name}.{name}" if module_name else name) in model.encoder_parts
            part = "encoder" if encoder else "decoder"
            key = f"{part}_no_decay" if no_decay else part
            group = groups.setdefault(key, {
                "params": [], "name": key, "weight_decay": 0.0 if no_decay else section.weight_decay,
                "lr": section.lr * (section.backbone_lr_factor if encoder else 1.0)})
            group["params"].append(p)
    return torch.optim.AdamW(list(groups.values()))


def _unlabelled_pool(cfg: Config) -> list[str]:
    """GD's unlabelled set is the whole train split, labelled images included (spec 1.7); ``unlabelled`` takes
    the split's unlabelled part alone, as CAST's student does."""
    ids = read_split_ids(cfg, "unlabelled")
    if cfg.get_path(SECTION).unlabelled_pool == "train":
        ids = sorted(read_split_ids(cfg, "labelled") + ids)
    return ids


# ---------------------------------------------------------------------------------------------------------------
# The two stages.

def _fit_gd(cfg: Config, run, ctx, stage_name: str, student: nn.Module, objective: nn.Module, iterations: int,
            datasets: list, seed: int, before_step=None) -> Run:
    """:func:`castlib.engine.fitting.fit` with GD's optimiser and poly schedule; ``before_step``: the EMA hook."""
    section = cfg.get_path(SECTION)
    optimizer = gd_optimizer(student, section)
    return fit(cfg=cfg, run=run, ctx=ctx, model=student, objective=objective, optimizer=optimizer,
               scheduler=build_scheduler(optimizer, "poly", iterations, power=section.power), datasets=datasets,
               units=section.batch_size, iterations=iterations, seed=seed, stage=stage_name,
               grad_clip=section.grad_clip, before_step=before_step)


def _backbone(cfg: Config) -> str:
    return cfg.model.baseline_backbone


@stage(reads=TEACHER_KEYS, iterations=lambda cfg: cfg.baselines.guided_distillation.teacher_iterations,
       backbone=_backbone, trains="labelled", batch_key=SECTION)
def guided_distillation_teacher(cfg: Config, backbone: str, fraction: float, seed: int | None = None) -> Run:
    """Stage 1: Mask2Former on ``backbone`` trained on the labelled ``fraction`` alone (the set criterion,
    GD's optimiser) for ``baselines.guided_distillation.teacher_iterations``; shared by every stage-2 run
    with the same inputs."""
    cfg = gd_config(cfg, backbone, fraction)
    seed = stage_seed(cfg, seed)
    run, ctx, model = start_from_pretrained(cfg, STAGES["guided_distillation_teacher"], "baseline", seed)
    if model is None:
        return run
    criterion = SetCriterion.from_config(cfg.loss, num_classes(cfg)).to(ctx.device)
    objective = Objective(model, "criterion", criterion)
    return _fit_gd(cfg, run, ctx, "guided_distillation_teacher", model, objective,
                   cfg.get_path(SECTION).teacher_iterations, [labelled_dataset(cfg, strong=False)], seed)


@stage(reads=(*MODEL_KEYS, SECTION), iterations=lambda cfg: cfg.baselines.guided_distillation.iterations,
       backbone=_backbone, trains="labelled", batch_key=SECTION)
def guided_distillation(cfg: Config, backbone: str, fraction: float, seed: int | None = None) -> Run:
    """Stage 2 (guided burn-in, then EMA distillation) from the stage-1 teacher, which is trained first if
    missing; returns the complete student run (``metrics.json``: ``ap``, ``ap50``), e.g. for supplementary
    Table 8: ``guided_distillation(cfg, "dinov2_b", 0.05)``."""
    teacher = guided_distillation_teacher(cfg, backbone, fraction, seed)
    cfg = gd_config(cfg, backbone, fraction)
    seed = stage_seed(cfg, seed)
    run, ctx, student = start_from_pretrained(cfg, STAGES["guided_distillation"], "baseline", seed,
                                              {"teacher": teacher})
    if student is None:
        return run
    section = cfg.get_path(SECTION)
    frozen = load_model(cfg, teacher, "baseline").to(ctx.device)
    criterion = SetCriterion.from_config(cfg.loss, num_classes(cfg)).to(ctx.device)
    objective = GuidedDistillationObjective(student, frozen, criterion, section)
    unlabelled = build_dataset(cfg, "train", _unlabelled_pool(cfg), load_annotations=False,
                               transform=train_views(cfg.augment, strong=True))
    return _fit_gd(cfg, run, ctx, "guided_distillation", student, objective, section.iterations,
                   [labelled_dataset(cfg, strong=False), unlabelled], seed, objective.update_teacher)

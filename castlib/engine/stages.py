"""The CAST stages (spec 4.2; DESIGN 1) as functions a notebook calls in one line each.

Every function returns a complete :class:`~castlib.engine.runs.Run`, training it first unless a
complete run with the same stage, config, inputs and seed exists (then nothing is trained):

    t0 = teacher_init(cfg)                        theta_T^0: the pretrained (zero-shot) teacher, Table 6 "T1"
    tA = teacher_finetune(cfg, t0)                step A on D_l: L_sup + l_pxl L_pxl -> theta_T'
    pA = pseudo_labels(cfg, tA)                   pseudo-labels on D_u from theta_T'
    tB = teacher_self_training(cfg, t0, pA)       step B, re-initialised from theta_T^0, on D_l + D_u -> theta_T''
    p  = pseudo_labels(cfg, tB)                   pseudo-labels on D_u from the frozen theta_T''
    s  = knowledge_transfer(cfg, p)               student: L_sup + l_semi L_semi + l_pxl L_pxl -> theta_s*
    r  = student_refinement(cfg, s)               labels alone: L_sup -> theta_s+
    supervised_student(cfg)                       no teacher, no distillation: L_sup on D_l (main Table 3 "No distill.")
    student_under(cfg, t0)                        pseudo-labels, student and refinement under any teacher (Table 6)

``teacher_adaptation(cfg, variant)`` chains the teacher steps for the three variants of supplementary
Table 3, and ``cast(cfg)`` the whole pipeline. Each training run ends with an evaluation on the
validation set (``metrics.json``). Under ``torchrun`` every process calls the same functions; rank 0
writes the files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from castlib.config import Config
from castlib.data.classes import CLASS_LISTS
from castlib.data.datasets import InstanceDataset
from castlib.data.loaders import (
    build_dataset,
    check_dataset,
    data_digest,
    labelled_dataset,
    prepare_data,
    read_split_ids,
    split_digest,
    split_files,
    unlabelled_dataset,
    val_dataset,
)
from castlib.data.transforms import EvalView
from castlib import distributed as D
from castlib.engine.batches import batch_stream, split_batch
from castlib.engine.loop import train
from castlib.engine.objective import Objective
from castlib.engine.optim import build_optimizer, build_scheduler
from castlib.engine.plan import STAGE_ITERATIONS, current_plan
from castlib.engine.runs import Run, RunError, claim, create_run
from castlib.errors import ConfigError, DataError
from castlib.eval import eval_options, evaluate_model
from castlib.global_batch import forward_share
from castlib.io import write_json_atomic
from castlib.losses import MemoryBank, SetCriterion, contrastive_options
from castlib.models import build_model

TEACHER_VARIANTS = ("finetune_only", "self_training", "self_training_contrastive")  # supplementary Table 3

# The config keys each stage reads: they alone enter its run id, so a student ablation reuses the teacher runs.
# A section is listed whole (a key added to it later is hashed too); _UNREAD removes the keys inside it that the
# stage never reads, and _CONTRASTIVE_KEYS those a stage run with contrastive=False never reads.
_EVAL = ("eval.top_k", "eval.batch_size", "eval.table_metric")  # what _finish's evaluation reads (eval_options)
_COMMON = ("profile", "data", *_EVAL)
_TEACHER_KEYS = (*_COMMON, "augment", "model.pretrained", "model.teacher", "model.projection", "loss.contrastive",
                 "train.teacher")
_STUDENT_MODEL = ("model.pretrained", "model.stand_in_init", "model.student_backbone", "model.trainable",
                  "model.backbones", "model.pixel_decoder", "model.decoder", "model.projection")
_STUDENT_KEYS = (*_COMMON, "augment", *_STUDENT_MODEL, "loss", "train.student")
_GD_MODEL_KEYS = (*_COMMON, "augment", "model.pretrained", "model.stand_in_init", "model.baseline_backbone",
                  "model.trainable", "model.backbones", "model.pixel_decoder", "model.decoder", "model.projection",
                  *(f"loss.{k}" for k in ("class_weight", "mask_weight", "dice_weight", "no_object_weight",
                                          "num_points", "oversample_ratio", "importance_sample_ratio")))
_STAGE_KEYS = {
    # the weights or the stand-in, the class list, the validation set it is evaluated on (at eval_short_side) and
    # the seed (its projection heads; its random draw without weights); not the split (_UNREAD): one theta_T^0
    # for every label fraction
    "teacher_init": (*_COMMON, "augment.eval_short_side", "model.pretrained", "model.teacher", "model.projection"),
    "teacher_finetune": _TEACHER_KEYS,
    "teacher_self_training": _TEACHER_KEYS,
    "pseudo_labels": ("profile", "data", "augment.eval_short_side", "train.pseudo_labels"),
    "knowledge_transfer": _STUDENT_KEYS,
    "student_refinement": (*_STUDENT_KEYS, "train.refinement"),
    "supervised_student": (*_STUDENT_KEYS, "train.refinement.iterations"),
    # Guided Distillation (castlib.baselines): stage 1 reads the optimiser keys, not stage 2's, so stage-2 variants
    # share one teacher run.
    "guided_distillation_teacher": (*_GD_MODEL_KEYS, *(f"baselines.guided_distillation.{k}" for k in (
        "teacher_iterations", "batch_size", "lr", "backbone_lr_factor", "weight_decay", "grad_clip", "power"))),
    "guided_distillation": (*_GD_MODEL_KEYS, "baselines.guided_distillation"),
    # castlib.engine.pretrain, on the source-domain config: neither the target sets nor the label fraction enter
    "pretrain_teacher": ("profile", "data.dataset", "data.synthetic", *_EVAL, "augment", "model.teacher",
                         "model.projection", "train.pretrain"),
    "pretrain_backbone": ("profile", "data.dataset", "data.synthetic", *_EVAL, "augment", "model.trainable",
                          "model.backbones", "model.pixel_decoder", "model.decoder", "model.projection", "loss",
                          "train.pretrain"),
}
# Of data.synthetic, a run reads its own dataset's entry and these (castlib.data.loaders.synthetic_spec): the other
# format's sizes and the source counts (merged into the source config's entry by castlib.engine.pretrain) stay out
_SYNTHETIC_READ = ("name", "seed", "domain")
# read, but the batches and metrics are the same whatever they are (batches.py); micro_batch, like the process
# count, lays out the same global batch (castlib.engine.batches.split_batch)
_NO_EFFECT = ("data.num_workers", "train.teacher.micro_batch", "train.student.micro_batch")
_UNREAD = {
    "teacher_init": ("data.label_fraction", "data.label_fractions", "data.split_seed"),
    "teacher_finetune": ("train.teacher.self_training_iterations", "train.teacher.semi_weight"),
    "teacher_self_training": ("train.teacher.finetune_iterations",),
    "student_refinement": ("augment.strong", "loss.contrastive", "train.student.iterations",
                           "train.student.batch_size", "train.student.semi_weight",
                           "train.student.contrastive_weight", "train.student.contrastive"),
    "supervised_student": ("augment.strong", "loss.contrastive", "train.student.semi_weight",
                           "train.student.contrastive_weight", "train.student.contrastive"),
    # no L_pxl in pretraining; each stand-in not the other's length
    "pretrain_teacher": ("augment.strong", "train.pretrain.backbone_iterations",
                         "train.pretrain.backbone_warmup_iterations", "train.pretrain.backbone_lr"),
    "pretrain_backbone": ("augment.strong", "loss.contrastive", "train.pretrain.teacher_iterations",
                          "train.pretrain.lr"),
}
_CONTRASTIVE_KEYS = ("augment.strong", "loss.contrastive", "train.teacher.contrastive_weight",
                     "train.teacher.contrastive")


def stage_config(cfg: Config, stage: str, **options: Any) -> dict:
    """The part of ``cfg`` that ``stage`` reads, plus the stage's own options (e.g. ``contrastive``)."""
    out: dict = {}
    for dotted in _STAGE_KEYS[stage]:
        value, node = cfg.get_path(dotted), out
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value.to_dict() if isinstance(value, Config) else value
    synthetic = out.get("data", {}).get("synthetic")
    if isinstance(synthetic, dict):
        out["data"]["synthetic"] = {k: v for k, v in synthetic.items() if k in (*_SYNTHETIC_READ, cfg.data.dataset)}
    unread = (*_NO_EFFECT, *_UNREAD.get(stage, ()), *(_CONTRASTIVE_KEYS if options.get("contrastive") is False else ()))
    for dotted in unread:
        *parents, last = dotted.split(".")
        node = out
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    return out | ({"options": options} if options else {})


def _num_classes(cfg: Config) -> int:
    return len(CLASS_LISTS[cfg.data.dataset])


def _seed(cfg: Config, seed: int | None) -> int:
    return cfg.seed if seed is None else seed


_TRAINED_STAGES = ("teacher_finetune", "teacher_self_training", "knowledge_transfer", "student_refinement",
                   "supervised_student")


def _check_inputs(cfg: Config, stage: str) -> None:
    """Fail before a run exists when its data cannot make a meaningful run: a dataset with problems (headers
    only: formats and image/annotation sizes), an empty validation set, an empty split the stage reads."""
    check_dataset(cfg, decode=False)
    needed = {"labelled": stage in _TRAINED_STAGES, "unlabelled": stage == "pseudo_labels"}
    for path, which in zip(split_files(cfg), ("labelled", "unlabelled"), strict=True):
        if needed[which] and not read_split_ids(cfg, which):
            raise DataError(path, f"the {which} split is empty: {stage} has nothing to train on (run "
                                  "`python -m castlib prepare --force` or fix the file)")


def check_data(cfg: Config, stage: str, ctx: D.Context | None = None) -> None:
    """Make the dataset ready (rank 0 draws a synthetic set) and check what ``stage`` reads (:func:`_check_inputs`):
    every stage does at its start, and a stage that first trains a stand-in does before that, so a bad split is
    one error at once, not after the pretraining."""
    ctx = D.init(cfg.device) if ctx is None else ctx
    if ctx.is_main:
        prepare_data(cfg)
    D.barrier(ctx)
    _check_inputs(cfg, stage)


def input_digests(cfg: Config, stage: str) -> dict[str, str]:
    """The digests of the data ``stage`` reads, which enter its run id: the dataset, and the split files."""
    return {"dataset": data_digest(cfg)} | ({"splits": split_digest(cfg)} if stage != "teacher_init" else {})


def _start(cfg: Config, stage: str, inputs: Mapping[str, Run], seed: int, **options: Any) -> tuple[Run, D.Context]:
    ctx = D.init(cfg.device)
    plan = current_plan()
    if plan is not None:  # planning mode: the run id alone, nothing prepared or written
        run = create_run(cfg, stage, stage_config(cfg, stage, **options), inputs, seed, write=False,
                         check_inputs=False, data=input_digests(cfg, stage))
        plan.record(cfg, run, stage, seed, options)
        return run, ctx
    check_data(cfg, stage, ctx)
    run = create_run(cfg, stage, stage_config(cfg, stage, **options), inputs, seed, write=ctx.is_main,
                     data=input_digests(cfg, stage))
    if run.complete and stage in _TRAINED_STAGES and not run.metrics.get("train", {}).get("iterations", 0) > 0:
        raise RunError(run.dir / "complete.json", f"run {run.id} ({stage}) is marked complete but never trained; "
                                                  "move the folder away to train it again")
    return run, ctx


def _done(run: Run, ctx: D.Context) -> bool:
    """Nothing to train: the run is complete (perhaps by another process this one waited for: :func:`claim`),
    or the stages are only planning (:mod:`castlib.engine.plan`). One process (``ctx.world == 1``) claims the
    run's lock; torchrun's ranks train one run together and take none."""
    if current_plan() is not None or run.complete:
        return True
    return ctx.world == 1 and not claim(run)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _finish(run: Run, ctx: D.Context, cfg: Config, model, summary: Mapping[str, Any]) -> Run:
    """Rank 0 saves the final weights; every process evaluates its share of the validation set
    (:func:`castlib.eval.evaluate_model`), rank 0 scores and marks the run complete."""
    if ctx.is_main:
        model.save_pretrained(run.model_dir)
    metrics = evaluate_model(model, val_dataset(cfg), run.dir / "eval", **eval_options(cfg), ctx=ctx)
    if ctx.is_main:
        run.write_metrics({**metrics, "train": dict(summary)})
        run.mark_complete({"ap": metrics["ap"], "ap50": metrics["ap50"]})
    D.barrier(ctx)
    return run


def load_model(cfg: Config, run: Run, which: str):
    """The final model of a complete run (offline, from its ``model/`` folder)."""
    return build_model(cfg, which, _num_classes(cfg), pretrained=run.require_complete().model_dir)


# ---------------------------------------------------------------------------------------------------------------
# Teacher.

def teacher_init(cfg: Config, seed: int | None = None) -> Run:
    """theta_T^0: the teacher before adaptation (paper: the pretrained Grounding DINO + SAM2; smoke/mini with
    ``model.stand_in``: the source-domain stand-in of :func:`castlib.engine.pretrain.pretrain_teacher`; otherwise
    the random initialisation drawn from the seed), saved and evaluated zero-shot (supplementary Table 6, T1).
    Both adaptation steps start from these weights."""
    from castlib.engine.pretrain import start_from_pretrained  # it builds on this module's routines

    run, ctx, model = start_from_pretrained(cfg, "teacher_init", "teacher", _seed(cfg, seed))
    return run if model is None else _finish(run, ctx, cfg, model, {"iterations": 0})


def _teacher_training(cfg: Config, stage: str, init: Run, labels: Run | None, contrastive: bool,
                      seed: int | None) -> Run:
    seed = _seed(cfg, seed)
    inputs = {"init": init} | ({"pseudo_labels": labels} if labels is not None else {})
    run, ctx = _start(cfg, stage, inputs, seed, contrastive=contrastive)
    if _done(run, ctx):
        return run
    t = cfg.train.teacher
    iterations = t.finetune_iterations if stage == "teacher_finetune" else t.self_training_iterations
    _seed_everything(seed)
    model = load_model(cfg, init, "teacher").to(ctx.device)
    return _fit(cfg, run, ctx, model, stage, "teacher", iterations, labels, contrastive, seed, section=t)


def teacher_finetune(cfg: Config, init: Run, contrastive: bool = True, seed: int | None = None) -> Run:
    """Step A (spec 4.2): theta_T' = argmin J(theta; D_l, {}; 0, l_pxl), from theta_T^0 on the labelled set.
    ``contrastive=False`` is plain supervised fine-tuning (Table 3 "Fine-tuning only")."""
    return _teacher_training(cfg, "teacher_finetune", init, None, contrastive, seed)


def teacher_self_training(cfg: Config, init: Run, labels: Run, contrastive: bool = True,
                          seed: int | None = None) -> Run:
    """Step B (spec 4.2): theta_T'' = argmin J(theta; D_l, D_u; 1, l_pxl), re-initialised from theta_T^0
    (``init``), with the pseudo-labels of ``labels`` on D_u."""
    return _teacher_training(cfg, "teacher_self_training", init, labels, contrastive, seed)


def teacher_adaptation(cfg: Config, variant: str = "self_training_contrastive", seed: int | None = None) -> Run:
    """The adapted teacher of a supplementary Table 3 variant: ``finetune_only`` (step A without L_pxl),
    ``self_training`` (A, pseudo-labels, B; without L_pxl) or ``self_training_contrastive`` (CAST)."""
    if variant not in TEACHER_VARIANTS:
        raise ValueError(f"unknown teacher variant {variant!r}; use one of {TEACHER_VARIANTS}")
    contrastive = variant == "self_training_contrastive"
    init = teacher_init(cfg, seed)
    adapted = teacher_finetune(cfg, init, contrastive, seed)
    if variant == "finetune_only":
        return adapted
    return teacher_self_training(cfg, init, pseudo_labels(cfg, adapted), contrastive, seed)


def pseudo_labels(cfg: Config, teacher: Run) -> Run:
    """Pseudo-labels of ``teacher`` on D_u (spec 5.2): boxes scoring above ``train.pseudo_labels.threshold``,
    at most ``max_instances`` per image, painted without overlap, written in the dataset's own format under
    ``<run>/pseudo_labels/`` so the ordinary loader reads them. Resumable image by image; processes share
    the images under torchrun."""
    run, ctx = _start(cfg, "pseudo_labels", {"teacher": teacher}, seed=0)
    if _done(run, ctx):
        return run
    p = cfg.train.pseudo_labels
    model = load_model(cfg, teacher, "teacher").to(ctx.device).eval()
    images = build_dataset(cfg, "train", read_split_ids(cfg, "unlabelled"), load_annotations=False,
                           transform=EvalView(cfg.augment.eval_short_side or None))
    for index in tqdm(range(ctx.rank, len(images), ctx.world), desc="pseudo-labels", disable=not ctx.is_main):
        image_id = images.image_ids[index]
        target = images.annotation_path(image_id).relative_to(images.annotation_root)
        if (run.pseudo_label_dir / target).is_file():  # written by an earlier, interrupted attempt
            continue
        sample = images[index]
        with torch.inference_mode():
            found = model.predict_pseudo_labels(sample.image[None].to(ctx.device), p.threshold, p.max_instances)[0]
        masks = _to_size(found["masks"], _original_size(sample.path))
        keep = masks.flatten(1).any(1)
        images.write_annotation(run.pseudo_label_dir, image_id, masks[keep].cpu().numpy(),
                                found["labels"][keep].cpu().numpy())
    D.barrier(ctx)
    if ctx.is_main:  # counted from the files, so resumed and multi-process runs count every image
        counts = [len(images.decode(run.pseudo_label_dir / images.annotation_path(i).relative_to(
            images.annotation_root))[1]) for i in images.image_ids]
        summary = {"images": len(images), "instances_per_image": float(np.mean(counts)) if counts else 0.0,
                   "threshold": p.threshold, "max_instances": p.max_instances}
        write_json_atomic(run.dir / "metrics.json", summary)
        run.mark_complete(summary)
    D.barrier(ctx)
    return run


def _original_size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def _to_size(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return torch.nn.functional.interpolate(masks[None].float(), size=size, mode="nearest")[0] > 0.5


# ---------------------------------------------------------------------------------------------------------------
# Student.

def knowledge_transfer(cfg: Config, labels: Run, seed: int | None = None) -> Run:
    """theta_s* = argmin J(theta_s; D_l, D_u; l_semi, l_pxl) with the frozen teacher's pseudo-labels on D_u
    (spec 4.2); the strong view's encoder pass runs without gradient. The encoder starts from the pretrained
    backbone (paper: DINOv2; smoke/mini with ``model.stand_in``: :func:`castlib.engine.pretrain.pretrain_backbone`)."""
    from castlib.engine.pretrain import start_from_pretrained  # it builds on this module's routines

    seed = _seed(cfg, seed)
    run, ctx, model = start_from_pretrained(cfg, "knowledge_transfer", "student", seed, {"pseudo_labels": labels})
    if model is None:
        return run
    s = cfg.train.student
    return _fit(cfg, run, ctx, model, "knowledge_transfer", "student", s.iterations, labels, True, seed, section=s)


def student_refinement(cfg: Config, student: Run, seed: int | None = None) -> Run:
    """theta_s+ = argmin J(theta; D_l, {}; 0, 0) from theta_s* (spec 4.2): labels alone, L_sup only, with the
    student's optimiser settings (supplementary Table 2) for ``train.refinement.iterations``."""
    seed = _seed(cfg, seed)
    run, ctx = _start(cfg, "student_refinement", {"student": student}, seed)
    if _done(run, ctx):
        return run
    _seed_everything(seed)
    model = load_model(cfg, student, "student").to(ctx.device)
    return _fit(cfg, run, ctx, model, "student_refinement", "student", cfg.train.refinement.iterations, None, False,
                seed, section=stage_section(cfg, "student_refinement"))


def supervised_student(cfg: Config, seed: int | None = None) -> Run:
    """Main Table 3 "No distill. (Sup.)": the student from the same pretrained backbone trained on D_l alone with
    L_sup (no teacher, no pseudo-labels, no L_pxl), with the student's optimiser settings, batch size and the
    iterations of knowledge transfer and refinement together (the CAST student's whole training length)."""
    from castlib.engine.pretrain import start_from_pretrained  # it builds on this module's routines

    seed = _seed(cfg, seed)
    run, ctx, model = start_from_pretrained(cfg, "supervised_student", "student", seed)
    if model is None:
        return run
    return _fit(cfg, run, ctx, model, "supervised_student", "student", STAGE_ITERATIONS["supervised_student"](cfg),
                None, False, seed, section=cfg.train.student)


def student_under(cfg: Config, teacher: Run, seed: int | None = None, refine: bool = True) -> dict[str, Run]:
    """The student stages under a given teacher run: its pseudo-labels, knowledge transfer (``student``,
    theta_s*) and, with ``refine``, refinement (``refined``, theta_s+). Under ``teacher_init(cfg)`` this is
    supplementary Table 6's "student under T1"."""
    labels = pseudo_labels(cfg, teacher)
    student = knowledge_transfer(cfg, labels, seed)
    runs = {"pseudo_labels": labels, "student": student}
    return runs | ({"refined": student_refinement(cfg, student, seed)} if refine else {})


def cast(cfg: Config, seed: int | None = None, variant: str = "self_training_contrastive",
         refine: bool = True) -> dict[str, Run]:
    """The whole pipeline of Fig. 1 for one seed; returns the runs by name. ``refine=False`` stops at the
    distilled student theta_s* (what supplementary Tables 4-7 report), training no refinement."""
    teacher = teacher_adaptation(cfg, variant, seed)
    return {"teacher": teacher, **student_under(cfg, teacher, seed, refine)}


# ---------------------------------------------------------------------------------------------------------------
# The shared fitting routine.

def _optimizer(model, role: str, section: Config):
    """Teacher: one learning rate; student: encoder and decoder rates (supplementary Table 2)."""
    groups = model.param_groups()
    if role == "teacher":
        rates = {"teacher": (groups["encoder"] + groups["decoder"], section.lr)}
    else:
        rates = {"encoder": (groups["encoder"], section.encoder_lr), "decoder": (groups["decoder"], section.decoder_lr)}
    return build_optimizer(model, rates, section.weight_decay)


def _scheduler(optimizer, section: Config, iterations: int):
    warmup = section.get("warmup_iterations", 0)
    if section.schedule == "multistep":
        return build_scheduler(optimizer, "multistep", iterations, milestones=section.milestones, gamma=section.gamma,
                               warmup=warmup)
    return build_scheduler(optimizer, section.schedule, iterations, power=section.get("power", 0.9), warmup=warmup)


def _contrastive_section(cfg: Config, stage: str, section: Config) -> dict:
    """``loss.contrastive`` with the stage's ``train.<role>.contrastive`` overrides; an override of a key that
    ``loss.contrastive`` lacks is an error naming it."""
    overrides = section.get("contrastive", {})
    unknown = sorted(set(overrides) - set(cfg.loss.contrastive))
    if unknown:
        role = "teacher" if stage.startswith("teacher") else "student"
        raise ConfigError(None, f"train.{role}.contrastive.{unknown[0]}",
                          f"not a key of loss.contrastive (known: {', '.join(sorted(cfg.loss.contrastive))})")
    return {**cfg.loss.contrastive, **overrides}


_BATCH_KEYS = {"teacher_finetune": "train.teacher", "teacher_self_training": "train.teacher",
               "knowledge_transfer": "train.student", "supervised_student": "train.student",
               "student_refinement": "train.refinement", "pretrain_teacher": "train.pretrain",
               "pretrain_backbone": "train.pretrain"}


def _batch_layout(stage: str, section: Config, two_parts: bool) -> tuple[int, int]:
    """The global batch in units (an image; a labelled + pseudo-labelled pair in a two-part batch, half the
    batch size each) and the units per forward: ``micro_batch`` images per forward, at least one unit, 0 for
    each process's whole share (DESIGN 9; :func:`castlib.engine.batches.split_batch`)."""
    key = _BATCH_KEYS.get(stage, "train")
    batch, micro = section.batch_size, section.get("micro_batch", 0)
    parts = 2 if two_parts else 1
    if not isinstance(batch, int) or batch < parts or batch % parts:
        raise ConfigError(None, f"{key}.batch_size", f"{batch} cannot be split into {parts} equal non-empty parts"
                                                     + (" (labelled and pseudo-labelled)" if two_parts else ""))
    if not isinstance(micro, int) or micro < 0:
        raise ConfigError(None, f"{key.replace('refinement', 'student')}.micro_batch",
                          f"{micro}: give images per forward, or 0 for each process's whole share")
    return batch // parts, max(1, micro // parts) if micro else 0


def stage_section(cfg: Config, stage: str) -> Config:
    """The ``train`` section a CAST training stage reads: the teacher's for steps A and B, the student's for
    knowledge transfer and the supervised-only student, the student's with the refinement batch for refinement."""
    t = cfg.train
    if stage == "student_refinement":
        return Config({**t.student, "batch_size": t.refinement.batch_size})
    return t.teacher if stage.startswith("teacher") else t.student


@dataclass
class Training:
    """What the training loop of a stage runs (:func:`castlib.engine.loop.train`'s arguments): the objective,
    optimiser, schedule, ``step_factory`` and gradient clipping, and the state checkpointed besides them."""

    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step_factory: Callable
    grad_clip: float
    extra_state: dict


def training(cfg: Config, ctx: D.Context, model, stage: str, role: str, iterations: int, labels_dir: Path | None,
             contrastive: bool, seed: int, section: Config, labelled: InstanceDataset | None = None) -> Training:
    """The objective, optimiser, schedule and batch streams of a training stage. ``labels_dir``: the
    pseudo-labels of D_u (None: D_l alone); ``labelled``: the labelled images (default: D_l of the config's split).
    :func:`castlib.engine.plan.measure_step_times` times a few of these steps."""
    merged = _contrastive_section(cfg, stage, section)
    options = contrastive_options(merged)
    bank = None
    if contrastive and options["scope"] == "memory_bank":
        bank = MemoryBank(merged["bank_size"], merged["bank_push"])
    criterion = None if role == "teacher" else SetCriterion.from_config(cfg.loss, _num_classes(cfg)).to(ctx.device)
    objective = Objective(model, "teacher" if role == "teacher" else "criterion", criterion,
                          semi_weight=section.semi_weight if labels_dir is not None else 0.0,
                          contrastive=options if contrastive else None,
                          contrastive_weight=section.contrastive_weight, bank=bank)
    network = DistributedDataParallel(objective, find_unused_parameters=True) if ctx.distributed else objective
    optimizer = _optimizer(model, role, section)
    scheduler = _scheduler(optimizer, section, iterations)
    per_part, micro = _batch_layout(stage, section, two_parts=labels_dir is not None)
    forwards = split_batch(per_part, ctx.world, ctx.rank, micro)
    labelled = labelled_dataset(cfg, strong=contrastive) if labelled is None else labelled
    unlabelled = None
    if labels_dir is not None:
        unlabelled = unlabelled_dataset(cfg, strong=contrastive, annotation_root=labels_dir)

    def step_factory(start: int):
        streams = [batch_stream(labelled, per_part, seed, start, cfg.data.num_workers, ctx.rank, ctx.world, micro)]
        if unlabelled is not None:
            streams.append(batch_stream(unlabelled, per_part, seed + 1, start, cfg.data.num_workers, ctx.rank,
                                        ctx.world, micro))

        def step(iteration: int):
            """This process's forwards (:func:`split_batch`); DDP syncs the gradients in the last one's backward,
            which the loop runs while this generator waits inside ``no_sync`` for the others."""
            for f, forward in enumerate(forwards):
                batches = [next(s).to(ctx.device) for s in streams]
                last = f == len(forwards) - 1
                with nullcontext() if last or not ctx.distributed else network.no_sync():
                    with forward_share(forward.share), D.autocast(ctx):
                        losses = network(*batches)
                    yield losses, forward.weight

        return step

    return Training(objective, optimizer, scheduler, step_factory, section.get("grad_clip", 0.0),
                    {"bank": bank} if bank is not None else {})


def _fit(cfg: Config, run: Run, ctx: D.Context, model, stage: str, role: str, iterations: int,
         labels: Run | None, contrastive: bool, seed: int, section: Config,
         labelled: InstanceDataset | None = None) -> Run:
    """Train a stage (:func:`training` with ``labels``' pseudo-labels), finish."""
    parts = training(cfg, ctx, model, stage, role, iterations, None if labels is None else labels.pseudo_label_dir,
                     contrastive, seed, section, labelled)
    summary = train(run, ctx, parts.objective, parts.optimizer, parts.scheduler, iterations, parts.step_factory,
                    grad_clip=parts.grad_clip, checkpoint_every=cfg.train.checkpoint_every,
                    log_every=cfg.train.log_every, extra_state=parts.extra_state or None, desc=f"{stage} {run.id}")
    return _finish(run, ctx, cfg, model, {"iterations": iterations, **summary})



# ---------------------------------------------------------------------------------------------------------------
# Re-evaluation of a finished run (``python -m castlib evaluate --run <id>``).

def run_config(run: Run) -> Config:
    """The run's profile (the defaults for a custom YAML profile) with every setting the run stored."""
    from castlib.config import DEFAULTS_FILE, PROFILES, load_config

    stored = run.config().to_dict()
    stored.pop("options", None)
    profile = run.info["profile"]  # a custom YAML profile: the defaults, then everything the run stored
    return load_config(profile if profile in PROFILES else DEFAULTS_FILE, stored)


def evaluate_run(run: Run, cfg: Config | None = None) -> dict:
    """Evaluate a run's final model on the validation set; ``metrics.json`` is rewritten atomically and keeps
    the run's training summary."""
    from castlib.models.base import read_meta

    if not run.complete:
        raise RunError(run.dir, f"run {run.id} ({run.stage}) is not complete: resume it with `python -m castlib "
                                "train` (the same arguments) before evaluating it")
    cfg = run_config(run) if cfg is None else cfg
    check_dataset(cfg, decode=False)
    if not (run.model_dir / "castlib_model.json").is_file():
        raise RunError(run.model_dir, f"run {run.id} ({run.stage}) has no final model to evaluate")
    meta = read_meta(run.model_dir)
    model = build_model(cfg, meta["which"], meta["num_classes"], pretrained=run.model_dir)
    model.to(D.resolve_device(cfg.device))
    metrics = evaluate_model(model, val_dataset(cfg), run.dir / "eval", **eval_options(cfg))
    run.write_metrics({**metrics, "train": run.training_record()})  # kept when metrics.json was lost
    return metrics

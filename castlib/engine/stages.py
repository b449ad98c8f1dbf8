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
writes the files. Each stage is declared beside its function (:func:`castlib.engine.declarations.stage`: the keys
it reads, its iterations, its backbone), runs the life of :mod:`castlib.engine.lifecycle` and trains with
:func:`castlib.engine.fitting.fit`.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from castlib import distributed as D
from castlib import paper
from castlib.config import Config
from castlib.data.loaders import build_dataset, read_split_ids
from castlib.data.transforms import EvalView
from castlib.engine.declarations import COMMON_KEYS, STAGES, stage
from castlib.engine.fitting import cast_training, fit, stage_section
from castlib.engine.lifecycle import finish_run, is_done, load_model, seed_everything, stage_seed, start_run
from castlib.engine.pretrain import start_from_pretrained
from castlib.engine.runs import Run
from castlib.errors import CastError
from castlib.io import write_json_atomic

TEACHER_VARIANTS = paper.TEACHER_VARIANTS  # supplementary Table 3's rows
CAST_VARIANT = paper.CAST_TEACHER_VARIANT  # steps A and B with L_pxl

# The config keys each stage reads (castlib.engine.declarations.Stage): they alone enter its run id, so a student
# ablation reuses the teacher runs. A section is listed whole (a key added to it later is hashed too); ``leaves_out``
# removes the keys inside it that the stage never reads.
TEACHER_KEYS = (*COMMON_KEYS, "augment", "model.pretrained", "model.teacher", "model.projection", "loss.contrastive",
                "train.teacher")
STUDENT_MODEL_KEYS = ("model.pretrained", "model.stand_in_init", "model.student_backbone", "model.trainable",
                      "model.backbones", "model.pixel_decoder", "model.decoder", "model.projection")
STUDENT_KEYS = (*COMMON_KEYS, "augment", *STUDENT_MODEL_KEYS, "loss", "train.student")
# what refinement and the supervised-only student (labels alone, L_sup) never read of the student's keys
_NO_DISTILLATION = ("augment.strong", "loss.contrastive", "train.student.semi_weight",
                    "train.student.contrastive_weight", "train.student.contrastive")


def _student_backbone(cfg: Config) -> str:
    return cfg.model.student_backbone


def _fit_cast(cfg: Config, run: Run, ctx: D.Context, model, stage_name: str, role: str, labels: Run | None,
              contrastive: bool, seed: int, section: Config) -> Run:
    """Train a CAST stage (:func:`castlib.engine.fitting.cast_training` with ``labels``' pseudo-labels), finish."""
    declared = STAGES[stage_name]
    iterations = declared.iterations(cfg)
    parts = cast_training(cfg, ctx, model, role=role, iterations=iterations,
                          labels_dir=None if labels is None else labels.pseudo_label_dir, contrastive=contrastive,
                          section=section, batch_key=declared.batch_key)
    return fit(cfg=cfg, run=run, ctx=ctx, model=model, iterations=iterations, seed=seed, stage=stage_name,
               **parts.arguments())


# ---------------------------------------------------------------------------------------------------------------
# Teacher.

# theta_T^0 reads the weights or the stand-in, the class list, the validation set it is evaluated on (at
# eval_short_side) and the seed (its projection heads; its random draw without weights); not the split: one
# theta_T^0 for every label fraction.
@stage(reads=(*COMMON_KEYS, "augment.eval_short_side", "model.pretrained", "model.teacher", "model.projection"),
       leaves_out=("data.label_fraction", "data.label_fractions", "data.split_seed"), hashes_splits=False)
def teacher_init(cfg: Config, seed: int | None = None) -> Run:
    """theta_T^0: the teacher before adaptation (paper: the pretrained Grounding DINO + SAM2; smoke/mini with
    ``model.stand_in``: the source-domain stand-in of :func:`castlib.engine.pretrain.pretrain_teacher`; otherwise
    the random initialisation drawn from the seed), saved and evaluated zero-shot (supplementary Table 6, T1).
    Both adaptation steps start from these weights."""
    run, ctx, model = start_from_pretrained(cfg, STAGES["teacher_init"], "teacher", stage_seed(cfg, seed))
    return run if model is None else finish_run(run, ctx, cfg, model, {"iterations": 0})


def _teacher_training(cfg: Config, stage: str, init: Run, labels: Run | None, contrastive: bool,
                      seed: int | None) -> Run:
    seed = stage_seed(cfg, seed)
    inputs = {"init": init} | ({"pseudo_labels": labels} if labels is not None else {})
    run, ctx = start_run(cfg, STAGES[stage], inputs, seed, contrastive=contrastive)
    if is_done(run, ctx):
        return run
    seed_everything(seed)
    model = load_model(cfg, init, "teacher").to(ctx.device)
    return _fit_cast(cfg, run, ctx, model, stage, "teacher", labels, contrastive, seed, cfg.train.teacher)


@stage(reads=TEACHER_KEYS, leaves_out=("train.teacher.self_training_iterations", "train.teacher.semi_weight"),
       iterations=lambda cfg: cfg.train.teacher.finetune_iterations, trains="labelled", batch_key="train.teacher")
def teacher_finetune(cfg: Config, init: Run, contrastive: bool = True, seed: int | None = None) -> Run:
    """Step A (spec 4.2): theta_T' = argmin J(theta; D_l, {}; 0, l_pxl), from theta_T^0 on the labelled set.
    ``contrastive=False`` is plain supervised fine-tuning (Table 3 "Fine-tuning only")."""
    return _teacher_training(cfg, "teacher_finetune", init, None, contrastive, seed)


@stage(reads=TEACHER_KEYS, leaves_out=("train.teacher.finetune_iterations",),
       iterations=lambda cfg: cfg.train.teacher.self_training_iterations, trains="labelled",
       batch_key="train.teacher")
def teacher_self_training(cfg: Config, init: Run, labels: Run, contrastive: bool = True,
                          seed: int | None = None) -> Run:
    """Step B (spec 4.2): theta_T'' = argmin J(theta; D_l, D_u; 1, l_pxl), re-initialised from theta_T^0
    (``init``), with the pseudo-labels of ``labels`` on D_u."""
    return _teacher_training(cfg, "teacher_self_training", init, labels, contrastive, seed)


def teacher_adaptation(cfg: Config, variant: str = CAST_VARIANT, seed: int | None = None) -> Run:
    """The adapted teacher of a supplementary Table 3 variant: ``finetune_only`` (step A without L_pxl),
    ``self_training`` (A, pseudo-labels, B; without L_pxl) or ``self_training_contrastive`` (CAST)."""
    if variant not in TEACHER_VARIANTS:
        raise ValueError(f"unknown teacher variant {variant!r}; use one of {TEACHER_VARIANTS}")
    contrastive = variant == CAST_VARIANT
    init = teacher_init(cfg, seed)
    adapted = teacher_finetune(cfg, init, contrastive, seed)
    if variant == "finetune_only":
        return adapted
    return teacher_self_training(cfg, init, pseudo_labels(cfg, adapted), contrastive, seed)


@stage(reads=("profile", "data", "augment.eval_short_side", "train.pseudo_labels"), trains="unlabelled")
def pseudo_labels(cfg: Config, teacher: Run) -> Run:
    """Pseudo-labels of ``teacher`` on D_u (spec 5.2): boxes scoring above ``train.pseudo_labels.threshold``,
    at most ``max_instances`` per image, painted without overlap, written in the dataset's own format under
    ``<run>/pseudo_labels/`` so the ordinary loader reads them. Resumable image by image; processes share
    the images under torchrun."""
    run, ctx = start_run(cfg, STAGES["pseudo_labels"], {"teacher": teacher}, seed=0)
    if is_done(run, ctx):
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

@stage(reads=STUDENT_KEYS, iterations=lambda cfg: cfg.train.student.iterations, backbone=_student_backbone,
       trains="labelled", batch_key="train.student")
def knowledge_transfer(cfg: Config, labels: Run, seed: int | None = None) -> Run:
    """theta_s* = argmin J(theta_s; D_l, D_u; l_semi, l_pxl) with the frozen teacher's pseudo-labels on D_u
    (spec 4.2); the strong view's encoder pass runs without gradient. The encoder starts from the pretrained
    backbone (paper: DINOv2; smoke/mini with ``model.stand_in``: :func:`castlib.engine.pretrain.pretrain_backbone`)."""
    seed = stage_seed(cfg, seed)
    run, ctx, model = start_from_pretrained(cfg, STAGES["knowledge_transfer"], "student", seed,
                                            {"pseudo_labels": labels})
    if model is None:
        return run
    return _fit_cast(cfg, run, ctx, model, "knowledge_transfer", "student", labels, True, seed, cfg.train.student)


@stage(reads=(*STUDENT_KEYS, "train.refinement"),
       leaves_out=(*_NO_DISTILLATION, "train.student.iterations", "train.student.batch_size"),
       iterations=lambda cfg: cfg.train.refinement.iterations, backbone=_student_backbone, trains="labelled",
       batch_key="train.refinement")
def student_refinement(cfg: Config, student: Run, seed: int | None = None) -> Run:
    """theta_s+ = argmin J(theta; D_l, {}; 0, 0) from theta_s* (spec 4.2): labels alone, L_sup only, with the
    student's optimiser settings (supplementary Table 2) for ``train.refinement.iterations``."""
    seed = stage_seed(cfg, seed)
    run, ctx = start_run(cfg, STAGES["student_refinement"], {"student": student}, seed)
    if is_done(run, ctx):
        return run
    seed_everything(seed)
    model = load_model(cfg, student, "student").to(ctx.device)
    return _fit_cast(cfg, run, ctx, model, "student_refinement", "student", None, False, seed,
                     stage_section(cfg, "student_refinement"))


# main Table 3 "No distill.": the CAST student's whole length (knowledge transfer + refinement)
@stage(reads=(*STUDENT_KEYS, "train.refinement.iterations"), leaves_out=_NO_DISTILLATION,
       iterations=lambda cfg: cfg.train.student.iterations + cfg.train.refinement.iterations,
       backbone=_student_backbone, trains="labelled", batch_key="train.student")
def supervised_student(cfg: Config, seed: int | None = None) -> Run:
    """Main Table 3 "No distill. (Sup.)": the student from the same pretrained backbone trained on D_l alone with
    L_sup (no teacher, no pseudo-labels, no L_pxl), with the student's optimiser settings, batch size and the
    iterations of knowledge transfer and refinement together (the CAST student's whole training length)."""
    seed = stage_seed(cfg, seed)
    run, ctx, model = start_from_pretrained(cfg, STAGES["supervised_student"], "student", seed)
    if model is None:
        return run
    return _fit_cast(cfg, run, ctx, model, "supervised_student", "student", None, False, seed, cfg.train.student)


def student_under(cfg: Config, teacher: Run, seed: int | None = None, refine: bool = True) -> dict[str, Run]:
    """The student stages under a given teacher run: its pseudo-labels, knowledge transfer (``student``,
    theta_s*) and, with ``refine``, refinement (``refined``, theta_s+). Under ``teacher_init(cfg)`` this is
    supplementary Table 6's "student under T1"."""
    labels = pseudo_labels(cfg, teacher)
    student = knowledge_transfer(cfg, labels, seed)
    runs = {"pseudo_labels": labels, "student": student}
    return runs | ({"refined": student_refinement(cfg, student, seed)} if refine else {})


def cast(cfg: Config, seed: int | None = None, variant: str = CAST_VARIANT,
         refine: bool = True) -> dict[str, Run]:
    """The whole pipeline of Fig. 1 for one seed; returns the runs by name. ``refine=False`` stops at the
    distilled student theta_s* (what supplementary Tables 4-7 report), training no refinement."""
    teacher = teacher_adaptation(cfg, variant, seed)
    return {"teacher": teacher, **student_under(cfg, teacher, seed, refine)}


# ---------------------------------------------------------------------------------------------------------------
# ``python -m castlib train --stage <target>``: a stage and the runs it consumes, nothing after it.

STUDENT_TARGETS = ("pseudo_labels", "knowledge_transfer", "student_refinement", "cast")  # under a teacher
TRAIN_TARGETS = ("teacher_init", "teacher_finetune", "teacher_adaptation", "teacher_self_training", *STUDENT_TARGETS,
                 "supervised_student")


def train_to(cfg: Config, target: str, *, variant: str = CAST_VARIANT, seed: int | None = None,
             zero_shot: bool = False, contrastive: bool = True) -> dict[str, Run]:
    """Train ``target`` (one of :data:`TRAIN_TARGETS`) and the runs it consumes, never past it (``pseudo_labels``
    trains no student); complete runs are reused. ``variant``: the teacher of supplementary Table 3;
    ``zero_shot``: the student stages under theta_T^0 (Table 6, T1); ``contrastive=False``: step A without L_pxl."""
    if target not in TRAIN_TARGETS:
        raise CastError(f"--stage {target}: not a train target; use one of {', '.join(TRAIN_TARGETS)} (or "
                        "guided_distillation)")
    if zero_shot and target not in STUDENT_TARGETS:
        raise CastError(f"--teacher zero_shot applies to the student stages {STUDENT_TARGETS}, not {target}")
    if target == "teacher_self_training" and variant == "finetune_only":
        raise CastError("--stage teacher_self_training needs --variant "
                        f"{' or '.join(v for v in TEACHER_VARIANTS if v != 'finetune_only')}")
    if target == "teacher_init":
        return {"teacher_init": teacher_init(cfg, seed)}
    if target == "supervised_student":
        return {"supervised_student": supervised_student(cfg, seed)}
    if target == "teacher_finetune":
        return {"teacher_finetune": teacher_finetune(cfg, teacher_init(cfg, seed),
                                                     variant != "finetune_only" and contrastive, seed)}
    teacher = teacher_init(cfg, seed) if zero_shot else teacher_adaptation(cfg, variant, seed)
    runs = {"teacher": teacher}
    if target in STUDENT_TARGETS:
        runs["pseudo_labels"] = pseudo_labels(cfg, teacher)
        if target != "pseudo_labels":
            runs["student"] = knowledge_transfer(cfg, runs["pseudo_labels"], seed)
        if target in ("student_refinement", "cast"):
            runs["refined"] = student_refinement(cfg, runs["student"], seed)
    return runs


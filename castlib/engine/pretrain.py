"""The source-pretrained stand-in for the foundation models (issue 13; DESIGN 2), for the smoke and mini profiles.

The paper's teacher starts from Grounding DINO + SAM2 and its student from DINOv2, all pretrained on broad data,
and Table 2's small rates assume those weights. None can be downloaded here, so with ``model.stand_in: true`` the
kit makes its own: two stages train on the *source* synthetic domain (:mod:`castlib.data.domains`: other palette,
textures, light, camera; more images; full labels) and the pipeline then starts on the shifted *target* domain
from their weights:

    pretrain_teacher(cfg)              the teacher, every part training          -> theta_T^0 (teacher_init)
    pretrain_backbone(cfg, backbone)   a student-architecture model per backbone -> its encoder, the pretrained
                                       backbone of the student (``model.student_backbone``) and of the Table 8
                                       baselines (``model.baseline_backbone``)

Both are runs of the registry (trained once for every seed and label fraction, reused, resumable) and are
evaluated on the source validation set. :func:`stand_in_inputs` and :func:`initial_model` are what a stage calls:
the first names the stand-in run among the stage's inputs (so the stage's id follows it), the second builds the
stage's model from the target config and loads the stand-in's weights into it.
"""

from __future__ import annotations

from collections.abc import Mapping

from castlib import distributed as D
from castlib.config import Config
from castlib.data.datasets import InstanceDataset
from castlib.data.loaders import build_dataset
from castlib.data.transforms import train_views
from castlib.engine.declarations import EVAL_KEYS, STAGES, Stage, stage
from castlib.engine.fitting import cast_training, fit
from castlib.engine.lifecycle import check_data, is_done, num_classes, seed_everything, start_run
from castlib.engine.plan import current_plan
from castlib.engine.runs import Run
from castlib.errors import ConfigError
from castlib.models import SegmentationModel, Student, Teacher, build_model
from castlib.models.build import load_weights

# Every teacher part trains on the source domain; SAM2's extra mask heads serve multimask output only (no gradient).
TEACHER_PRETRAIN_PARTS = [part for part in Teacher.parts if part != "segmenter.multimask_heads"]


def source_config(cfg: Config) -> Config:
    """``cfg`` on the source domain: its synthetic set renamed ``<name>-source``, drawn in the source style with
    the ``data.synthetic.source`` image counts, and every model part training."""
    if cfg.model.pretrained:
        raise ConfigError(None, "model.stand_in", "model.pretrained (hub weights) and model.stand_in (source-domain "
                                                  "weights) exclude each other; set one of them to false")
    syn, dataset = cfg.data.synthetic, cfg.data.dataset
    return cfg.with_changes({
        "data.source": "synthetic", "data.root": None,  # always synthetic, whatever the target (a real root too)
        "data.synthetic.name": f"{syn.name}-source", "data.synthetic.domain": "source",
        f"data.synthetic.{dataset}": {**syn[dataset], **syn.source[dataset]},
        "model.stand_in": False, "model.trainable": ["encoder", "decoder"],
        "model.teacher.trainable": list(TEACHER_PRETRAIN_PARTS)})


def _section(cfg: Config, lr: float, warmup: int = 0) -> Config:
    """``train.pretrain`` in the form the fitting routine reads (one rate ``lr`` for every parameter, no L_pxl)."""
    p = cfg.train.pretrain
    return Config({"lr": lr, "encoder_lr": lr, "decoder_lr": lr, "weight_decay": p.weight_decay,
                   "schedule": p.schedule, "power": p.power, "grad_clip": p.grad_clip, "batch_size": p.batch_size,
                   "warmup_iterations": warmup, "contrastive_weight": 0.0, "semi_weight": 0.0})


def _source_train(source: Config) -> InstanceDataset:
    """Every source training image with its full labels (no labelled / unlabelled split)."""
    return build_dataset(source, "train", transform=train_views(source.augment, strong=False))


def _fit_source(source: Config, run: Run, ctx: D.Context, model, declared: Stage, role: str, seed: int,
                section: Config) -> Run:
    """Train a stand-in on every source training image (:func:`castlib.engine.fitting.fit`), no L_pxl."""
    iterations = declared.iterations(source)
    parts = cast_training(source, ctx, model, role=role, iterations=iterations, labels_dir=None, contrastive=False,
                          section=section, batch_key=declared.batch_key, labelled=_source_train(source))
    return fit(cfg=source, run=run, ctx=ctx, model=model, iterations=iterations, seed=seed, stage=declared.name,
               **parts.arguments())


# The stand-ins run on the source-domain config: neither the target sets nor the label fraction enter their ids;
# no L_pxl in pretraining, and each stand-in reads not the other's length.
@stage(reads=("profile", "data.dataset", "data.synthetic", *EVAL_KEYS, "augment", "model.teacher", "model.projection",
              "train.pretrain"),
       leaves_out=("augment.strong", "train.pretrain.backbone_iterations", "train.pretrain.backbone_warmup_iterations",
                   "train.pretrain.backbone_lr"),
       iterations=lambda cfg: cfg.train.pretrain.teacher_iterations, batch_key="train.pretrain")
def pretrain_teacher(cfg: Config) -> Run:
    """The teacher stand-in (Grounding DINO + SAM2): every part trained on the source domain with the teacher's
    own supervised loss for ``train.pretrain.teacher_iterations``."""
    source, seed = source_config(cfg), cfg.train.pretrain.seed
    run, ctx = start_run(source, STAGES["pretrain_teacher"], {}, seed)
    if is_done(run, ctx):
        return run
    seed_everything(seed)
    model = build_model(source, "teacher", num_classes(source), pretrained=False).to(ctx.device)
    return _fit_source(source, run, ctx, model, STAGES["pretrain_teacher"], "teacher", seed,
                       _section(cfg, cfg.train.pretrain.lr))


def _backbone_option(cfg: Config) -> str:
    """The backbone a stand-in trains: a run's ``config.yaml`` (the keys the stage reads) holds it as the option
    ``backbone``; a config to be run, as ``model.baseline_backbone``."""
    return cfg.options.backbone if "options" in cfg else cfg.model.baseline_backbone


@stage(reads=("profile", "data.dataset", "data.synthetic", *EVAL_KEYS, "augment", "model.trainable",
              "model.backbones", "model.pixel_decoder", "model.decoder", "model.projection", "loss", "train.pretrain"),
       leaves_out=("augment.strong", "loss.contrastive", "train.pretrain.teacher_iterations", "train.pretrain.lr"),
       iterations=lambda cfg: cfg.train.pretrain.backbone_iterations, backbone=_backbone_option,
       batch_key="train.pretrain")
def pretrain_backbone(cfg: Config, backbone: str) -> Run:
    """The pretrained backbone ``model.backbones.<backbone>`` (DINOv2 / ResNet stand-in): a model of the student's
    architecture on that encoder, every part trained on the source domain with the set criterion for
    ``train.pretrain.backbone_iterations``; its encoder is what the student or baseline starts from."""
    source = source_config(cfg).with_changes({"model.baseline_backbone": backbone})
    seed = cfg.train.pretrain.seed
    run, ctx = start_run(source, STAGES["pretrain_backbone"], {}, seed, backbone=backbone)
    if is_done(run, ctx):
        return run
    seed_everything(seed)
    model = build_model(source, "baseline", num_classes(source), pretrained=False).to(ctx.device)
    p = cfg.train.pretrain
    return _fit_source(source, run, ctx, model, STAGES["pretrain_backbone"], "student", seed,
                       _section(cfg, p.backbone_lr, p.backbone_warmup_iterations))


def _backbone(cfg: Config, which: str) -> str:
    return cfg.model.student_backbone if which == "student" else cfg.model.baseline_backbone


def stand_in_inputs(cfg: Config, which: str, stage: Stage | None = None) -> dict[str, Run]:
    """``{"stand_in": run}``, the complete pretrain run that ``which`` (teacher, student, baseline) starts from when
    ``model.stand_in`` is on (trained first if needed); ``{}`` when it is off. ``stage``: the stage that asks,
    whose target data and labelled split are checked first."""
    if not cfg.model.stand_in:
        return {}
    if current_plan() is None:  # the target's data first: a bad split is one error before any pretraining
        check_data(cfg, STAGES["pretrain_teacher"] if stage is None else stage, splits=("labelled",))
    run = pretrain_teacher(cfg) if which == "teacher" else pretrain_backbone(cfg, _backbone(cfg, which))
    return {"stand_in": run}


def initial_model(cfg: Config, which: str, inputs: dict[str, Run]) -> SegmentationModel:
    """``which`` built from ``cfg`` (its sizes and trainable parts), with the stand-in's weights of
    ``inputs["stand_in"]`` when there is one: all of them for the teacher (theta_T^0); for a student or baseline
    the encoder's (``model.stand_in_init: encoder``: its decoders start from the seed's random draw, as the paper's
    start from DINOv2 alone) or all of them (``whole``: the source-trained decoders too, mini's budget choice)."""
    model = build_model(cfg, which, num_classes(cfg))
    stand_in = inputs.get("stand_in")
    if stand_in is None:
        return model
    whole = which == "teacher" or cfg.model.stand_in_init == "whole"
    prefix = "" if whole else Student.parts["encoder"][0]
    return load_weights(model, stand_in.require_complete().model_dir, prefix)


def start_from_pretrained(cfg: Config, stage: Stage, which: str, seed: int, inputs: Mapping[str, Run] | None = None,
                          ) -> tuple[Run, D.Context, SegmentationModel | None]:
    """Start ``stage``, whose ``which`` model (teacher, student, baseline) begins at the pretrained weights: the
    stand-in run joins the stage's ``inputs`` (so its id follows it), then :func:`initial_model` under the seed.
    Returns the run, the context and the model; the model is ``None`` when there is nothing to train (the run is
    complete, or the stages are only planning)."""
    inputs = {**(inputs or {}), **stand_in_inputs(cfg, which, stage)}
    run, ctx = start_run(cfg, stage, inputs, seed)
    if is_done(run, ctx):
        return run, ctx, None
    seed_everything(seed)
    return run, ctx, initial_model(cfg, which, inputs).to(ctx.device)

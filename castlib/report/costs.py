"""What the runs of a plan cost (``python -m castlib plan``; issue 30 item 4), on one device, each run labelled
``measured`` or ``estimated``.

The runs are those the table builders ask for in planning mode (:func:`plan_tables`, :mod:`castlib.engine.plan`).
Step times per stage come from the ``timing.json`` that training writes into each run
(:func:`castlib.engine.logs.read_timing`) of the complete runs in the registry, or are timed by
:func:`measure_step_times` (a few real training steps, no run written); where neither has one, from the models'
FLOPs (:func:`castlib.eval.efficiency.count_flops`) at a stated share of a GPU type's peak (:data:`GPU_PEAK_TFLOPS`).
Evaluation and pseudo-labelling: inference time per image x images. Disk: what each run's folder holds when
complete (:meth:`Costs.disk`; :func:`disk_need` for ``doctor``).
"""

from __future__ import annotations

import io
import json
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from castlib import paper
from castlib.config import Config
from castlib.data.classes import CLASS_LISTS
from castlib.engine import stages
from castlib.engine.declarations import STAGES, declared
from castlib.engine.logs import logged_step_time, training_seconds, wall_seconds
from castlib.engine.plan import Plan, PlannedRun, planning, timing_key
from castlib.engine.runs import Run
from castlib.errors import CastError
from castlib.report.paper_tables import build_table  # (it imports every module that declares stages)

# no training iterations: timed per run (theta_T^0, pseudo-labels)
PER_RUN_STAGES = tuple(name for name, s in STAGES.items() if not s.trains_iterations)


def registry_step_times(root: Path, profile: str, dataset: str) -> dict[str, float]:
    """Per stage (per stage and backbone, :func:`timing_key`), seconds per unit of work over the complete runs of
    ``profile`` on ``dataset`` under ``root`` (median): training stages per iteration (their logged step time),
    the others per run (``run.json`` to ``complete.json``: teacher_init's evaluation, a pseudo-labelling pass
    over D_u)."""
    found: dict[str, list[float]] = {}
    for info_path in sorted(root.glob("*/run.json")):
        run = Run(info_path.parent.name, info_path.parent)
        info = json.loads(info_path.read_text())
        if info.get("profile") != profile or not run.complete:
            continue
        config = run.config()
        if config.data.dataset != dataset:
            continue
        seconds = logged_step_time(run) if info["stage"] not in PER_RUN_STAGES else wall_seconds(run)
        if seconds is not None:
            found.setdefault(timing_key(config, info["stage"]), []).append(seconds)
    return {stage: statistics.median(times) for stage, times in found.items()}


def estimated_seconds(planned: PlannedRun, step_times: dict[str, float]) -> float | None:
    """What a run still costs: 0 when complete, else iterations x step time (or one run's time)."""
    if planned.complete:
        return 0.0
    if planned.timing not in step_times:
        return None
    unit = step_times[planned.timing]
    return unit if planned.stage in PER_RUN_STAGES else unit * planned.iterations


def spent_seconds(planned: PlannedRun) -> float | None:
    """What a complete run took: its training time (logged step time x iterations), or for a stage that trains
    nothing its ``run.json`` to ``complete.json`` time; ``None`` while incomplete."""
    if not planned.complete:
        return None
    return wall_seconds(planned.run) if planned.stage in PER_RUN_STAGES else training_seconds(planned.run)


def _table_of(label: str) -> str:
    """``"Table 4 hinge"`` -> ``"Table 4"``; another label stands for itself."""
    words = label.split()
    return " ".join(words[:2]) if words[:1] == ["Table"] else label


def plan_frame(plan: Plan, step_times: dict[str, float]) -> pd.DataFrame:
    """One row per planned run: id, stage, backbone (where the stage's varies), seed, iterations, complete,
    estimated seconds (what is left), spent seconds (what a complete run took; both unrounded, so a run of a few
    milliseconds is not 0), the tables that need it (``shared`` when more than one table does) and the rows that
    ask for it."""
    rows = []
    for planned in plan.runs.values():
        tables = list(dict.fromkeys(_table_of(label) for label in planned.needed_by))
        rows.append({"run": planned.run.id, "stage": planned.stage, "backbone": planned.timing.partition("/")[2],
                     "seed": planned.seed,
                     "iterations": planned.iterations, "complete": planned.complete,
                     "estimated s": estimated_seconds(planned, step_times),
                     "spent s": spent_seconds(planned), "tables": ", ".join(tables),
                     "shared": len(tables) > 1, "needed by": "; ".join(planned.needed_by)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# What a plan costs: hours on one device of a stated GPU type, and disk (issue 30 item 4).

# Peak dense tensor-core TFLOP/s of each GPU type in bf16 (V100, which has no bf16: fp16), from the vendors' data
# sheets (SXM parts; without sparsity). The estimate of a step is its FLOPs / (peak x utilisation).
GPU_PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "L40S": 362.0, "V100": 125.0}
DEFAULT_GPU = "A100"
DEFAULT_UTILISATION = 0.35  # of the peak, for the matrix products and convolutions that FlopCounterMode counts
# CAST's training stages, built by castlib.engine.fitting.cast_training: timed by measure_step_times
MEASURABLE_STAGES = tuple(name for name, s in STAGES.items()
                          if s.trained and s.function.__module__ == stages.__name__)
_REAL_IMAGE_SIZE = {"cityscapes": (1024, 2048), "ade20k": (512, 683)}  # ADE20K: a typical 4:3 image
_BYTES_PER_VALUE = 4  # fp32 weights; AdamW keeps two fp32 moments per trainable parameter
_LOG_ROW_BYTES = 400  # one log.csv row (every loss term and learning rate)
_PSEUDO_INSTANCES = 20  # instances per pseudo-label image in the disk estimate (Cityscapes train: ~17 per image)


@dataclass(frozen=True)
class Gpu:
    """A GPU type and the share of its peak that the estimate assumes."""

    name: str
    peak_tflops: float
    utilisation: float

    def seconds(self, flops: float) -> float:
        return flops / (self.peak_tflops * 1e12 * self.utilisation)


def gpu_type(name: str | None = None, utilisation: float = DEFAULT_UTILISATION) -> Gpu:
    """The entry of :data:`GPU_PEAK_TFLOPS` that ``name`` names (case-insensitive; a device name such as
    ``NVIDIA H200`` finds H200), :data:`DEFAULT_GPU` for None."""
    if not 0 < utilisation <= 1:
        raise CastError(f"--utilisation {utilisation}: give a share of the GPU's peak in (0, 1]")
    found = [key for key in GPU_PEAK_TFLOPS if key.lower() in (name or DEFAULT_GPU).lower()]
    if not found:
        raise CastError(f"--gpu-type {name}: unknown GPU type; known: {', '.join(GPU_PEAK_TFLOPS)} "
                        "(castlib.report.costs.GPU_PEAK_TFLOPS)")
    return Gpu(found[0], GPU_PEAK_TFLOPS[found[0]], utilisation)


def local_gpu_type() -> str | None:
    """The :data:`GPU_PEAK_TFLOPS` entry of this machine's CUDA device, None without one (or an unknown one)."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name().lower()
    return next((key for key in GPU_PEAK_TFLOPS if key.lower() in name), None)


@dataclass(frozen=True)
class ImageCounts:
    """Images of a config's dataset: labelled and unlabelled (its split), validation, and an image's size."""

    labelled: int
    unlabelled: int
    val: int
    size: tuple[int, int]
    source: str


def image_counts(cfg: Config) -> ImageCounts:
    """The split files' counts where they exist, else the dataset's: a synthetic set's spec, or a real set's
    supplementary Table 1 (no data root needed), split at ``data.label_fraction`` as ``prepare`` would."""
    from castlib.data import splits as S
    from castlib.data.loaders import is_synthetic, split_files, synthetic_spec
    from castlib.paper import TABLE1_SPLITS

    dataset = cfg.data.dataset
    if is_synthetic(cfg):
        spec = synthetic_spec(cfg)
        train, val, source = spec.train, spec.val, "synthetic set"
        size = (spec.height, spec.width) if dataset == "cityscapes" else (spec.height, round(spec.height * 4 / 3))
    else:
        table = TABLE1_SPLITS[dataset]
        train, val, size, source = table["train"], table["val"], _REAL_IMAGE_SIZE[dataset], "supplementary Table 1"
    files = split_files(cfg)
    if all(path.is_file() for path in files):
        labelled, unlabelled = (len(S.read_split(path)) for path in files)
        source += ", split files"
    elif dataset == "ade20k":
        labelled, unlabelled = S.ade20k_split_sizes(train)
    else:
        labelled = S.round_half_up(cfg.data.label_fraction * train)
        unlabelled = train - labelled
    return ImageCounts(labelled, unlabelled, val, size, source)


def _resized(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    if not short_side:
        return size
    scale = short_side / min(size)
    return round(size[0] * scale), round(size[1] * scale)


@dataclass(frozen=True)
class Workload:
    """What one run computes: the model it trains or runs (``teacher``, ``student``, ``baseline``), images per
    iteration through forward and backward (``trained``) and through a frozen model's forward (``frozen``: Guided
    Distillation's teacher), whether L_pxl's strong view passes the encoder, and the images it runs inference on
    (the validation set after training, D_u for pseudo-labels)."""

    which: str
    trained: int
    frozen: int
    contrastive: bool
    inferred: int


def workload(planned: PlannedRun) -> Workload:
    """The :class:`Workload` of a planned run, from its stage, config and options."""
    cfg, stage = planned.config, planned.stage
    t, gd, counts = cfg.train, cfg.baselines.guided_distillation, image_counts(cfg)
    contrastive = planned.options.get("contrastive", True)
    shapes = {
        "teacher_init": ("teacher", 0, 0, False, counts.val),
        "teacher_finetune": ("teacher", t.teacher.batch_size, 0, contrastive, counts.val),
        "teacher_self_training": ("teacher", t.teacher.batch_size, 0, contrastive, counts.val),
        "pseudo_labels": ("teacher", 0, 0, False, counts.unlabelled),
        "knowledge_transfer": ("student", t.student.batch_size, 0, True, counts.val),
        "student_refinement": ("student", t.refinement.batch_size, 0, False, counts.val),
        "supervised_student": ("student", t.student.batch_size, 0, False, counts.val),
        "pretrain_teacher": ("teacher", t.pretrain.batch_size, 0, False, counts.val),
        "pretrain_backbone": ("baseline", t.pretrain.batch_size, 0, False, counts.val),
        "guided_distillation_teacher": ("baseline", gd.batch_size, 0, False, counts.val),
        # labelled and unlabelled (strong) images through the student, the unlabelled (weak) through the teacher
        "guided_distillation": ("baseline", 2 * gd.batch_size, gd.batch_size, False, counts.val),
    }
    return Workload(*shapes[stage])


def _inference_key(cfg: Config, which: str) -> str:
    if which == "teacher":
        return "inference/teacher"
    return f"inference/{which}/{cfg.model.student_backbone if which == 'student' else cfg.model.baseline_backbone}"


def _model_spec(cfg: Config, which: str) -> dict:
    """The config keys that make ``which``'s architecture and trainable parts."""
    m = cfg.model
    if which == "teacher":
        return {"teacher": m.teacher.to_dict(), "projection": m.projection.to_dict()}
    backbone = m.student_backbone if which == "student" else m.baseline_backbone
    return {"backbone": m.backbones[backbone].to_dict(), "trainable": list(m.trainable),
            **{key: m[key].to_dict() for key in ("pixel_decoder", "decoder", "projection")}}


@dataclass
class RunCost:
    """What a run costs on one device: ``seconds`` still to spend (0 when complete), ``measured`` or
    ``estimated``, and the ``disk`` bytes its folder holds when complete."""

    seconds: float
    source: str
    disk: int


# Parameter counts and per-image FLOPs of the shape-only models, by architecture and image sizes (Costs._model).
MODEL_COSTS: dict[str, dict] = {}


class Costs:
    """Seconds and bytes of planned runs. A step time (per stage, :func:`timing_key`) or a run time (teacher_init,
    pseudo_labels) logged by complete runs, or measured by :func:`measure_step_times`, is ``measured``; what is
    not is ``estimated`` from the model's FLOPs (:func:`castlib.eval.efficiency.count_flops`) on ``gpu``. The
    models are built shape-only from each run's config with random weights (``model.pretrained=false``: no
    weights needed); their FLOPs and sizes, a function of the architecture and the image sizes alone, are kept for
    the process (:data:`MODEL_COSTS`), so a second plan counts none again."""

    def __init__(self, gpu: Gpu, measured: dict[str, float] | None = None):
        self.gpu, self.measured = gpu, dict(measured or {})
        self._encoded: dict[tuple, tuple[int, int, int]] = {}

    def _model(self, cfg: Config, which: str, flops: bool) -> dict:
        """Parameter counts and (``flops``) per-image FLOPs at the training crop and the evaluation size."""
        from castlib.eval.efficiency import count_flops, parameter_counts, shape_only
        from castlib.models import build_model

        size = _resized(image_counts(cfg).size, cfg.augment.eval_short_side)
        key = json.dumps([which, cfg.data.dataset, list(cfg.augment.crop), size, _model_spec(cfg, which)],
                         sort_keys=True)
        entry = MODEL_COSTS.get(key)
        if entry is None:
            classes = len(CLASS_LISTS[cfg.data.dataset])
            model = shape_only(lambda: build_model(cfg, which, classes, pretrained=False))
            entry = MODEL_COSTS[key] = {"model": model, **parameter_counts(model)}
        if flops and "train" not in entry:
            entry["train"] = count_flops(entry["model"], cfg.augment.crop)
            entry["inference"] = count_flops(entry["model"], size, backward=False, encode=False).forward
        return entry

    def step(self, planned: PlannedRun) -> tuple[float, str]:
        """Seconds per iteration of a training run, and ``measured`` or ``estimated``."""
        if planned.timing in self.measured:
            return self.measured[planned.timing], "measured"
        work = workload(planned)
        model = self._model(planned.config, work.which, flops=True)
        flops = work.trained * model["train"].training(work.contrastive) + work.frozen * model["train"].forward
        return self.gpu.seconds(flops), "estimated"

    def inference(self, cfg: Config, which: str) -> tuple[float, str]:
        """Seconds of one image's inference at the evaluation size, and ``measured`` or ``estimated``."""
        key = _inference_key(cfg, which)
        if key in self.measured:
            return self.measured[key], "measured"
        return self.gpu.seconds(self._model(cfg, which, flops=True)["inference"]), "estimated"

    def seconds(self, planned: PlannedRun) -> tuple[float, str]:
        """A whole run on one device: training iterations x step time, plus inference over its images."""
        if planned.stage in PER_RUN_STAGES and planned.timing in self.measured:
            return self.measured[planned.timing], "measured"  # logged run times (evaluation included)
        work = workload(planned)
        step, step_source = self.step(planned) if planned.iterations else (0.0, "measured")
        image, image_source = self.inference(planned.config, work.which)
        source = "measured" if step_source == image_source == "measured" else "estimated"
        return planned.iterations * step + work.inferred * image, source

    def _encoded_bytes(self, cfg: Config) -> tuple[int, int, int]:
        """Bytes of one predicted mask as a PNG and as COCO RLE, and of one pseudo-label annotation with
        :data:`_PSEUDO_INSTANCES` instances, all at the dataset's image size (encoded here, elliptic shapes)."""
        import types

        import numpy as np
        from PIL import Image
        from pycocotools import mask as rle

        from castlib.data.datasets import DATASETS

        size = image_counts(cfg).size
        key = (cfg.data.dataset, size)
        if key not in self._encoded:
            rows, cols = np.ogrid[: size[0], : size[1]]
            rng = np.random.default_rng(0)

            def ellipse(area: float) -> np.ndarray:
                cy, cx = rng.uniform(0.2, 0.8) * size[0], rng.uniform(0.2, 0.8) * size[1]
                ry = np.sqrt(area * size[0] * size[1] / np.pi / 2)
                return ((rows - cy) / ry) ** 2 + ((cols - cx) / (2 * ry)) ** 2 <= 1

            one = ellipse(0.01)
            png = io.BytesIO()
            Image.fromarray(one).save(png, format="PNG")
            coded = len(rle.encode(np.asfortranarray(one.astype(np.uint8)))["counts"]) + 120  # + the JSON record
            masks = np.stack([ellipse(rng.uniform(0.001, 0.02)) for _ in range(_PSEUDO_INSTANCES)])
            claimed = np.zeros(size, bool)
            for mask in masks:
                mask &= ~claimed
                claimed |= mask
            classes = types.SimpleNamespace(classes=CLASS_LISTS[cfg.data.dataset])
            labels = np.arange(_PSEUDO_INSTANCES) % len(classes.classes)
            annotation = io.BytesIO()
            DATASETS[cfg.data.dataset].encode(classes, masks, labels).save(annotation, format="PNG")
            self._encoded[key] = (png.tell(), coded, annotation.tell())
        return self._encoded[key]

    def disk(self, planned: PlannedRun) -> int:
        """Bytes of a complete run's folder: ``model/`` (fp32 weights) and the evaluation's predictions (``eval/``:
        ``eval.top_k`` masks per validation image as COCO RLE, and as PNGs for the Cityscapes evaluator); a
        training run's ``last.pt`` besides (the weights, AdamW's two moments of each trainable parameter, Guided
        Distillation's frozen teacher) and ``log.csv``; a pseudo-labelling run's annotation PNG per image of D_u."""
        cfg, work = planned.config, workload(planned)
        mask_png, mask_rle, annotation = self._encoded_bytes(cfg)
        if planned.stage == "pseudo_labels":
            return work.inferred * annotation
        model = self._model(cfg, work.which, flops=False)
        weights = _BYTES_PER_VALUE * (model["params"] + model["buffers"])
        cityscapes = cfg.eval.table_metric[cfg.data.dataset] == "cityscapes"
        total = weights + work.inferred * cfg.eval.top_k * (mask_rle + (mask_png if cityscapes else 0))
        if planned.iterations:
            optimizer = 2 * _BYTES_PER_VALUE * model["trainable"]
            total += weights * (2 if work.frozen else 1) + optimizer
            total += planned.iterations // cfg.train.log_every * _LOG_ROW_BYTES
        return total

    def run(self, planned: PlannedRun) -> RunCost:
        seconds, source = self.seconds(planned)
        return RunCost(0.0 if planned.complete else seconds, source, self.disk(planned))


def plan_tables(cfg: Config, tables: Iterable[int]) -> Plan:
    """The runs Tables ``tables`` need (their builders in planning mode; nothing is trained or written)."""
    with planning() as plan:
        for number in tables:
            with plan.requested_by(f"Table {number}"):
                build_table(cfg, number, train=False)
    return plan


def default_tables(cfg: Config) -> list[int]:
    """The tables the kit reproduces (:data:`castlib.paper.REPRODUCED_TABLES`, 3-8); Table 8 varies the Cityscapes
    label fraction: 3-7 on ADE20K."""
    return [n for n in paper.REPRODUCED_TABLES if n != 8 or cfg.data.dataset == "cityscapes"]


def disk_need(cfg: Config, tables: Iterable[int] | None = None) -> int:
    """Bytes that the runs Tables ``tables`` (default :func:`default_tables`) still need will write: the
    :meth:`Costs.disk` of every incomplete run, each counted once (for ``doctor``'s disk check)."""
    plan = plan_tables(cfg, default_tables(cfg) if tables is None else tables)
    costs = Costs(gpu_type())
    return sum(costs.disk(planned) for planned in plan.runs.values() if not planned.complete)


def cost_frame(plan: Plan, costs: Costs) -> pd.DataFrame:
    """:func:`plan_frame` with each run's cost: ``estimated s`` (what is left on one device), ``source``
    (measured / estimated) and ``disk GB``."""
    frame = plan_frame(plan, {})
    found = [costs.run(planned) for planned in plan.runs.values()]
    frame["estimated s"] = [cost.seconds for cost in found]
    frame["source"] = [cost.source for cost in found]
    frame["disk GB"] = [cost.disk / 1e9 for cost in found]
    return frame


def table_costs(frame: pd.DataFrame, gpus: int = 1) -> pd.DataFrame:
    """Per table (a run shared by several tables counts in each) and in total (each run once): runs, runs to do,
    GPU hours left on one device, wall hours on ``gpus`` devices (GPU hours / gpus: the devices kept busy at linear
    scaling), disk, and how many runs' costs are measured or estimated."""
    rows = []
    tables = sorted({t for cell in frame.tables for t in cell.split(", ") if t},
                    key=lambda t: (not t.startswith("Table "), t.removeprefix("Table ").zfill(3)))
    for name, part in [*((t, frame[frame.tables.str.split(", ").map(lambda ts, t=t: t in ts)]) for t in tables),
                       ("total", frame)]:
        todo = part[~part.complete]
        counts = todo.source.value_counts()
        label = " + ".join(f"{counts[k]} {k}" for k in ("measured", "estimated") if k in counts) or "-"
        hours = todo["estimated s"].sum() / 3600
        rows.append({"table": name, "runs": len(part), "to run": len(todo), "GPU h": hours,
                     f"wall h on {gpus}": hours / gpus, "disk GB": part["disk GB"].sum(), "source": label})
    return pd.DataFrame(rows)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measurement_problem(cfg: Config, gpu: str | None) -> str | None:
    """Why steps cannot be timed for ``gpu`` here (None when they can): the paper profile on the CPU, or a
    device that is not the GPU type asked for."""
    from castlib.distributed import resolve_device
    from castlib.eval.efficiency import device_name

    device = resolve_device(cfg.device)
    if device.type == "cpu" and cfg.profile == "paper":
        return "the paper profile on the CPU (a step takes minutes): estimated from FLOPs instead"
    if gpu is not None and gpu.lower() not in device_name(device).lower():
        return f"this machine's device is {device_name(device)}, not a {gpu}: estimated from FLOPs instead"
    return None


def stage_training(cfg: Config, key: str, ctx, iterations: int):
    """``(config, model, role, training)``: the :class:`castlib.engine.fitting.Training` of the stage that the
    :func:`timing_key` ``key`` names (one of :data:`MEASURABLE_STAGES`), built as the stage builds it but with
    random weights (``model.pretrained=false``, no stand-in) and D_u's own annotations standing in for
    pseudo-labels, with the config, model and role (``teacher`` / ``student``) it was built from. The dataset is
    made ready (a synthetic set is drawn if missing); no run is written."""
    from castlib.data.loaders import dataset_root
    from castlib.engine import fitting
    from castlib.engine.lifecycle import check_data, seed_everything
    from castlib.models import build_model

    stage, _, backbone = key.partition("/")
    if stage not in MEASURABLE_STAGES:
        raise ValueError(f"{key}: only {', '.join(MEASURABLE_STAGES)} are built by fitting.cast_training")
    short = cfg.with_changes({"model.pretrained": False, "model.stand_in": False}
                             | ({"model.student_backbone": backbone} if backbone else {}))
    role = "teacher" if stage.startswith("teacher") else "student"
    section = fitting.stage_section(short, stage)
    check_data(short, stage, ctx)
    seed_everything(short.seed)
    model = build_model(short, role, len(CLASS_LISTS[short.data.dataset])).to(ctx.device)
    unlabelled = stage in ("teacher_self_training", "knowledge_transfer")
    parts = fitting.cast_training(short, ctx, model, role=role, iterations=iterations,
                                  labels_dir=dataset_root(short) if unlabelled else None,
                                  contrastive=stage in ("teacher_finetune", "teacher_self_training",
                                                        "knowledge_transfer"),
                                  section=section, batch_key=declared(stage).batch_key)
    return short, model, role, parts


def timed_steps(parts, steps: int, ctx) -> list[float]:
    """Seconds of ``steps`` training steps (forward, backward, optimiser and schedule step, as
    :func:`castlib.engine.loop.train` runs them) after one untimed one."""
    from castlib.engine.loop import optimization_step

    step = parts.step_factory(ctx, seed=0)(0)
    parts.objective.train()
    seconds = []
    for iteration in range(steps + 1):
        _synchronize(ctx.device)
        started = time.perf_counter()
        optimization_step(parts.objective, parts.optimizer, parts.scheduler, step(iteration), ctx, parts.grad_clip)
        _synchronize(ctx.device)
        seconds.append(time.perf_counter() - started)
    return seconds[1:]


def measure_step_times(cfg: Config, steps: int = 3, needed: Iterable[str] = ()) -> dict[str, float]:
    """The median of ``steps`` timed training steps (:func:`timed_steps`, evaluation left out) of each stage whose
    :func:`timing_key` is in ``needed`` and that :func:`stage_training` builds, and one image's inference at the
    evaluation size of each model those stages train (``inference/<which>[/<backbone>]``, median of ``steps``).
    Nothing is written but the dataset."""
    from castlib import distributed as D
    from castlib.eval.efficiency import measure_efficiency

    timed: dict[str, float] = {}
    ctx = D.init(cfg.device)
    for key in sorted(set(needed)):
        if key.partition("/")[0] not in MEASURABLE_STAGES:
            continue
        short, model, role, parts = stage_training(cfg, key, ctx, steps + 1)
        timed[key] = statistics.median(timed_steps(parts, steps, ctx))
        inference = _inference_key(short, role)
        if inference not in timed:
            size = _resized(image_counts(short).size, short.augment.eval_short_side)
            timed[inference] = measure_efficiency(model, size, warmup=1, repeats=steps).latency_ms / 1000
        del parts, model
    return timed

"""Planning mode: which runs a set of tables needs, before any compute (``python -m castlib plan``).

Inside ``with planning() as plan:`` the stage functions of :mod:`castlib.engine.stages` compute their run
ids (a hash of config, input ids and seed, known without training), record them in ``plan`` and return
the run, complete or not, without preparing data or training anything. The table builders call the same
stage functions in both modes, so the plan of a table is the table's own wiring, never a copy of it.

Compute estimate: the profile's iterations per stage (:data:`STAGE_ITERATIONS`) times a step time per
stage, taken from the ``timing.json`` that training writes into each run (:func:`castlib.engine.logs.read_timing`)
of the completed runs in the registry; where no run of a stage is complete, :func:`measure_step_times` trains
the pipeline for a few steps into ``<runs_dir>/step_time/`` (the registry caches it) and reads those.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import json
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from castlib.config import Config
from castlib.engine.logs import read_timing
from castlib.engine.runs import Run, runs_dir

STEP_TIME_DIR = "step_time"     # under runs_dir: the short runs that measure step times

# Training iterations of each stage from the profile (section D; pseudo-labelling and teacher_init train none).
_PER_RUN_STAGES = ("teacher_init", "pseudo_labels")  # no training iterations: timed per run
STAGE_ITERATIONS: dict[str, Callable[[Config], int]] = {
    "teacher_init": lambda cfg: 0,
    "teacher_finetune": lambda cfg: cfg.train.teacher.finetune_iterations,
    "teacher_self_training": lambda cfg: cfg.train.teacher.self_training_iterations,
    "pseudo_labels": lambda cfg: 0,
    "knowledge_transfer": lambda cfg: cfg.train.student.iterations,
    "student_refinement": lambda cfg: cfg.train.refinement.iterations,
    # main Table 3 "No distill.": the CAST student's whole length (knowledge transfer + refinement)
    "supervised_student": lambda cfg: cfg.train.student.iterations + cfg.train.refinement.iterations,
    "guided_distillation_teacher": lambda cfg: cfg.baselines.guided_distillation.teacher_iterations,
    "guided_distillation": lambda cfg: cfg.baselines.guided_distillation.iterations,
    # the source-domain stand-ins (castlib.engine.pretrain)
    "pretrain_teacher": lambda cfg: cfg.train.pretrain.teacher_iterations,
    "pretrain_backbone": lambda cfg: cfg.train.pretrain.backbone_iterations,
}

# The backbone a stage trains, where it varies between runs of the stage: Table 8's Guided Distillation on
# ResNet-50 and DINOv2-B/L, and their stand-ins, cost several times a DINOv2-S step, so their step times are kept
# per backbone (:func:`timing_key`).
_BACKBONE_OF: dict[str, Callable[[Config], str]] = {
    **dict.fromkeys(("knowledge_transfer", "student_refinement", "supervised_student"),
                    lambda cfg: cfg.model.student_backbone),
    **dict.fromkeys(("guided_distillation_teacher", "guided_distillation"), lambda cfg: cfg.model.baseline_backbone),
    # a stand-in trains a student-architecture model on model.baseline_backbone (castlib.engine.pretrain), which
    # its run's config.yaml (the keys the stage reads) holds as the option ``backbone``
    "pretrain_backbone": lambda cfg: cfg.options.backbone if "options" in cfg else cfg.model.baseline_backbone,
}


def timing_key(cfg: Config, stage: str) -> str:
    """What a step time is kept under: the stage, with its backbone where that varies
    (``"guided_distillation/resnet50"``); ``cfg`` is the stage's own config (a run's ``config.yaml``)."""
    return f"{stage}/{_BACKBONE_OF[stage](cfg)}" if stage in _BACKBONE_OF else stage


@dataclass
class PlannedRun:
    """One run a plan needs: its handle, stage, seed, training iterations, the key of its step time
    (:func:`timing_key`) and who asked for it."""

    run: Run
    stage: str
    seed: int
    iterations: int
    timing: str
    needed_by: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.run.complete

    @property
    def shared(self) -> bool:
        return len(self.needed_by) > 1


@dataclass
class Plan:
    """The runs requested while planning, in the order first requested; ``label`` names the requester."""

    runs: dict[str, PlannedRun] = field(default_factory=dict)
    label: str = ""

    def record(self, cfg: Config, run: Run, stage: str, seed: int) -> None:
        planned = self.runs.get(run.id)
        if planned is None:
            iterations = STAGE_ITERATIONS[stage](cfg) if stage in STAGE_ITERATIONS else 0
            planned = self.runs[run.id] = PlannedRun(run, stage, seed, iterations, timing_key(cfg, stage))
        if self.label and self.label not in planned.needed_by:
            planned.needed_by.append(self.label)

    @contextlib.contextmanager
    def requested_by(self, label: str) -> Iterator[Plan]:
        """Attribute the runs recorded inside the block to ``label`` (e.g. ``"Table 3"``)."""
        previous, self.label = self.label, label
        try:
            yield self
        finally:
            self.label = previous


_ACTIVE: contextvars.ContextVar[Plan | None] = contextvars.ContextVar("castlib_plan", default=None)


def current_plan() -> Plan | None:
    """The plan being recorded, or ``None`` when the stages train for real."""
    return _ACTIVE.get()


@contextlib.contextmanager
def planning() -> Iterator[Plan]:
    """Planning mode for the block; nested blocks share the outer plan."""
    outer = _ACTIVE.get()
    if outer is not None:
        yield outer
        return
    token = _ACTIVE.set(Plan())
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def logged_step_time(run: Run) -> float | None:
    """Seconds per training iteration from a run's own ``timing.json`` (``None`` where it timed none)."""
    timing = read_timing(run.dir)
    return timing["seconds"] / timing["iterations"] if timing["iterations"] else None


def training_seconds(run: Run) -> float | None:
    """A complete training run's own training time: its logged step time times its iterations."""
    step = logged_step_time(run)
    if step is None or not run.complete:
        return None
    return step * run.metrics.get("train", {}).get("iterations", 0)


def wall_seconds(run: Run) -> float | None:
    """Seconds from a complete run's ``run.json`` to its ``complete.json`` (for runs that do not train)."""
    if not run.complete:
        return None
    created = json.loads((run.dir / "run.json").read_text())["created"]
    finished = json.loads((run.dir / "complete.json").read_text())["finished"]
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(created)).total_seconds()


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
        seconds = logged_step_time(run) if info["stage"] not in _PER_RUN_STAGES else wall_seconds(run)
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
    return unit if planned.stage in _PER_RUN_STAGES else unit * planned.iterations


def spent_seconds(planned: PlannedRun) -> float | None:
    """What a complete run took: its training time (logged step time x iterations), or for a stage that trains
    nothing its ``run.json`` to ``complete.json`` time; ``None`` while incomplete."""
    if not planned.complete:
        return None
    return wall_seconds(planned.run) if planned.stage in _PER_RUN_STAGES else training_seconds(planned.run)


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


# What stages.cast trains, beside the stand-in of the student's backbone
_CAST_STAGES = ("pretrain_teacher", "teacher_init", "teacher_finetune", "teacher_self_training",
                "pseudo_labels", "knowledge_transfer", "student_refinement")


def measure_step_times(cfg: Config, steps: int = 3, needed: Iterable[str] = ()) -> dict[str, float]:
    """Train short runs, ``steps`` iterations a stage (the stand-ins' pretraining too), into
    ``<runs_dir>/step_time/`` (reused when there) and return the step times their logs recorded: the CAST pipeline,
    the supervised student and each backbone's stand-in and Guided Distillation stages, each where a
    :func:`timing_key` in ``needed`` asks for it. They run the profile's real models and data, so on a full data
    set the two pseudo-labelling passes over D_u take their real time."""
    from castlib.baselines.guided_distillation import guided_distillation
    from castlib.engine import stages

    root = runs_dir(cfg) / STEP_TIME_DIR
    short = copy.deepcopy(cfg)
    t, gd = short.train, short.baselines.guided_distillation
    t.teacher.finetune_iterations = t.teacher.self_training_iterations = steps
    t.student.iterations = t.refinement.iterations = steps
    t.pretrain.teacher_iterations = t.pretrain.backbone_iterations = steps
    gd.burn_in_iterations = round(steps * gd.burn_in_iterations / gd.iterations)  # the burn-in's share of stage 2
    gd.teacher_iterations = gd.iterations = steps
    t.log_every = 1
    short.runs_dir = str(root)
    needed = set(needed)
    cast_keys = {timing_key(cfg, stage) for stage in _CAST_STAGES} | {f"pretrain_backbone/{cfg.model.student_backbone}"}
    if needed & cast_keys:
        stages.cast(short)
    if timing_key(cfg, "supervised_student") in needed:
        stages.supervised_student(short)
    stages_of = {(key.split("/")[0], key.split("/")[1]) for key in needed if "/" in key}
    # a Guided Distillation run trains its backbone's stand-in, its stage-1 teacher and its stage 2
    for backbone in sorted({b for stage, b in stages_of if stage.startswith("guided_distillation")
                            or (stage == "pretrain_backbone" and b != cfg.model.student_backbone)}):
        guided_distillation(short, backbone, short.data.label_fraction)
    return registry_step_times(root, cfg.profile, cfg.data.dataset)

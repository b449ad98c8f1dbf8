"""Planning mode: which runs a set of tables needs, before any compute (``python -m castlib plan``).

Inside ``with planning() as plan:`` the stage functions of :mod:`castlib.engine.stages` compute their run
ids (a hash of config, input ids and seed, known without training), record them in ``plan`` and return
the run, complete or not, without preparing data or training anything. The table builders call the same
stage functions in both modes, so the plan of a table is the table's own wiring, never a copy of it. What the
runs cost: :mod:`castlib.report.costs`.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from castlib.config import Config
from castlib.engine.runs import Run

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
    (:func:`timing_key`), who asked for it, and the config and options it was asked with (what it costs)."""

    run: Run
    stage: str
    seed: int
    iterations: int
    timing: str
    needed_by: list[str] = field(default_factory=list)
    config: Config | None = None
    options: dict = field(default_factory=dict)

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

    def record(self, cfg: Config, run: Run, stage: str, seed: int, options: dict | None = None) -> None:
        planned = self.runs.get(run.id)
        if planned is None:
            iterations = STAGE_ITERATIONS[stage](cfg) if stage in STAGE_ITERATIONS else 0
            planned = self.runs[run.id] = PlannedRun(run, stage, seed, iterations, timing_key(cfg, stage),
                                                     config=copy.deepcopy(cfg), options=dict(options or {}))
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

"""One declaration per stage: what it reads, how long it trains, on which backbone (DESIGN 1).

A stage function is declared where it is written, with :func:`stage`::

    @stage(reads=TEACHER_KEYS, leaves_out=("train.teacher.finetune_iterations",),
           iterations=lambda cfg: cfg.train.teacher.self_training_iterations, trains="labelled")
    def teacher_self_training(cfg, init, labels, contrastive=True, seed=None): ...

and registered in :data:`STAGES` under the function's name. The run id (:meth:`Stage.config`, the keys read
alone enter it, so a student ablation reuses the teacher runs), the plan (iterations and :meth:`Stage.timing_key`)
and the command line all read the declaration; a new stage is one declaration beside its function. The CAST
stages are declared in :mod:`castlib.engine.stages`, the stand-ins in :mod:`castlib.engine.pretrain`, Guided
Distillation in :mod:`castlib.baselines.guided_distillation`: a stage is known once its module is imported (the
report and the command line import all three).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from castlib.config import Config

# What the finishing evaluation reads (castlib.eval.eval_options), and what every stage of the target reads.
EVAL_KEYS = ("eval.top_k", "eval.batch_size", "eval.table_metric")
COMMON_KEYS = ("profile", "data", *EVAL_KEYS)
# Of data.synthetic, a run reads its own dataset's entry and these (castlib.data.loaders.synthetic_spec): the other
# format's sizes and the source counts (merged into the source config's entry by castlib.engine.pretrain) stay out.
SYNTHETIC_READ = ("name", "seed", "domain")
# Read, but the batches and metrics are the same whatever they are (castlib.engine.batches); micro_batch, like the
# process count, lays out the same global batch (castlib.engine.batches.split_batch).
NO_EFFECT_KEYS = ("data.num_workers", "train.teacher.micro_batch", "train.student.micro_batch")
# Never read by a stage run with ``contrastive=False`` (no L_pxl, no strong view).
CONTRASTIVE_KEYS = ("augment.strong", "loss.contrastive", "train.teacher.contrastive_weight",
                    "train.teacher.contrastive")

def _no_iterations(cfg: Config) -> int:
    return 0


@dataclass(frozen=True)
class Stage:
    """A stage of the run registry.

    ``reads``: the config keys its run id hashes (a section listed whole hashes a key added to it later too);
    ``leaves_out``: keys inside ``reads`` it never reads; ``iterations``: its training length from a config;
    ``backbone``: the backbone it trains where that varies between runs of the stage (step times are kept per
    backbone); ``trains``: the split it trains on and must find non-empty (``labelled``), ``unlabelled`` for the
    one it labels, or ``None``; ``hashes_splits``: whether the split files enter its id (theta_T^0's does not: one
    for every label fraction); ``batch_key``: the config section its ``batch_size`` comes from (errors name it)."""

    name: str
    reads: tuple[str, ...]
    function: Callable[..., Any]
    leaves_out: tuple[str, ...] = ()
    iterations: Callable[[Config], int] = _no_iterations
    backbone: Callable[[Config], str] | None = None
    trains: str | None = None
    hashes_splits: bool = True
    batch_key: str = "train"

    @property
    def trains_iterations(self) -> bool:
        """Whether it has training iterations (theta_T^0 and pseudo-labelling have none: timed per run)."""
        return self.iterations is not _no_iterations

    @property
    def trained(self) -> bool:
        """Whether a complete run of it has trained (a complete run with no iteration is broken)."""
        return self.trains == "labelled"

    def config(self, cfg: Config, **options: Any) -> dict:
        """The part of ``cfg`` that this stage reads, plus its own options (e.g. ``contrastive``): what the run
        id hashes (:func:`castlib.engine.runs.create_run`)."""
        out: dict = {}
        for dotted in self.reads:
            value, node = cfg.get_path(dotted), out
            *parents, last = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value.to_dict() if isinstance(value, Config) else value
        synthetic = out.get("data", {}).get("synthetic")
        if isinstance(synthetic, dict):
            out["data"]["synthetic"] = {k: v for k, v in synthetic.items() if k in (*SYNTHETIC_READ, cfg.data.dataset)}
        unread = (*NO_EFFECT_KEYS, *self.leaves_out, *(CONTRASTIVE_KEYS if options.get("contrastive") is False else ()))
        for dotted in unread:
            *parents, last = dotted.split(".")
            node = out
            for part in parents:
                node = node.get(part, {})
            node.pop(last, None)
        return out | ({"options": options} if options else {})

    def timing_key(self, cfg: Config) -> str:
        """What a step time is kept under: the stage, with its backbone where that varies
        (``"guided_distillation/resnet50"``); ``cfg`` is the stage's own config (a run's ``config.yaml``)."""
        return f"{self.name}/{self.backbone(cfg)}" if self.backbone is not None else self.name


STAGES: dict[str, Stage] = {}


def stage(*, reads: tuple[str, ...], leaves_out: tuple[str, ...] = (),
          iterations: Callable[[Config], int] | None = None, backbone: Callable[[Config], str] | None = None,
          trains: str | None = None, hashes_splits: bool = True, batch_key: str = "train") -> Callable:
    """Declare the decorated function a stage named after it (:class:`Stage`'s fields) and register it."""

    def register(function: Callable) -> Callable:
        name = function.__name__
        if name in STAGES and STAGES[name].function.__module__ != function.__module__:
            raise ValueError(f"stage {name!r} is declared twice ({STAGES[name].function.__module__}, "
                             f"{function.__module__})")
        STAGES[name] = Stage(name, tuple(reads), function, tuple(leaves_out), iterations or _no_iterations, backbone,
                             trains, hashes_splits, batch_key)
        function.stage = STAGES[name]
        return function

    return register


def declared(name: str) -> Stage:
    """The declaration of stage ``name``; an unknown name (or one whose module is not imported) is a ``KeyError``
    naming the known ones."""
    if name not in STAGES:
        raise KeyError(f"no stage {name!r} is declared (declared: {', '.join(STAGES)})")
    return STAGES[name]

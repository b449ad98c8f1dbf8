"""The life of a run, the same for every stage (DESIGN 1): start, done, seed, finish, load, evaluate.

A stage function (:mod:`castlib.engine.stages`, :mod:`castlib.engine.pretrain`,
:mod:`castlib.baselines.guided_distillation`) reads as::

    run, ctx = start_run(cfg, declared("teacher_finetune"), inputs, seed)   # the id; data checked
    if is_done(run, ctx):                                                  # complete, claimed, or planning
        return run
    seed_everything(seed)
    model = ...                                                            # load_model(cfg, init_run, "teacher")
    return fit(cfg=cfg, run=run, ctx=ctx, model=model, ...)                # trains, then finish_run

:func:`finish_run` saves the final weights, evaluates them on the validation set and marks the run complete;
:func:`evaluate_run` evaluates a finished run again (``python -m castlib evaluate --run <id>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from castlib import distributed as D
from castlib.config import DEFAULTS_FILE, PROFILES, Config, load_config
from castlib.data.classes import CLASS_LISTS
from castlib.data.loaders import (
    check_dataset,
    data_digest,
    prepare_data,
    read_split_ids,
    split_digest,
    split_files,
    val_dataset,
)
from castlib.engine.declarations import Stage, declared
from castlib.engine.plan import current_plan
from castlib.engine.runs import Run, RunError, claim, create_run
from castlib.errors import DataError
from castlib.eval import eval_options, evaluate_model
from castlib.models import build_model
from castlib.models.base import read_meta


def num_classes(cfg: Config) -> int:
    """The number of thing classes of the config's dataset."""
    return len(CLASS_LISTS[cfg.data.dataset])


def stage_seed(cfg: Config, seed: int | None) -> int:
    """The seed a stage runs under: ``seed``, or the config's ``seed`` when none is given."""
    return cfg.seed if seed is None else seed


def seed_everything(seed: int) -> None:
    """Seed torch's and numpy's global generators (a model's random draw, dropout)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _as_stage(stage: Stage | str) -> Stage:
    return declared(stage) if isinstance(stage, str) else stage


def check_inputs(cfg: Config, stage: Stage | str, splits: tuple[str, ...] | None = None) -> None:
    """Fail before a run exists when its data cannot make a meaningful run: a dataset with problems (headers
    only: formats and image/annotation sizes), an empty validation set, an empty split that ``stage`` reads
    (``splits``: the one it trains on or labels, :attr:`Stage.trains`, unless given)."""
    stage = _as_stage(stage)
    splits = ((stage.trains,) if stage.trains else ()) if splits is None else splits
    check_dataset(cfg, decode=False)
    for path, which in zip(split_files(cfg), ("labelled", "unlabelled"), strict=True):
        if which in splits and not read_split_ids(cfg, which):
            raise DataError(path, f"the {which} split is empty: {stage.name} has nothing to train on (run "
                                  "`python -m castlib prepare --force` or fix the file)")


def check_data(cfg: Config, stage: Stage | str, ctx: D.Context | None = None,
               splits: tuple[str, ...] | None = None) -> None:
    """Make the dataset ready (rank 0 draws a synthetic set) and check what ``stage`` reads (:func:`check_inputs`):
    every stage does at its start, and a stage that first trains a stand-in does before that (``splits``: the
    labelled split it will train on), so a bad split is one error at once, not after the pretraining."""
    ctx = D.init(cfg.device) if ctx is None else ctx
    if ctx.is_main:
        prepare_data(cfg)
    D.barrier(ctx)
    check_inputs(cfg, stage, splits)


def stage_config(cfg: Config, stage: Stage | str, **options: Any) -> dict:
    """The part of ``cfg`` that ``stage`` reads, plus its options: what its run id hashes (:meth:`Stage.config`)."""
    return _as_stage(stage).config(cfg, **options)


def input_digests(cfg: Config, stage: Stage | str) -> dict[str, str]:
    """The digests of the data ``stage`` reads, which enter its run id: the dataset, and the split files."""
    return {"dataset": data_digest(cfg)} | ({"splits": split_digest(cfg)} if _as_stage(stage).hashes_splits else {})


def start_run(cfg: Config, stage: Stage | str, inputs: Mapping[str, Run], seed: int,
              **options: Any) -> tuple[Run, D.Context]:
    """The run of ``stage`` on ``cfg`` (the keys the stage reads: :meth:`Stage.config`), its ``inputs`` and
    ``seed``, with this process's context. While planning, the run id alone is computed and recorded in the
    plan (nothing prepared or written); otherwise the data is made ready and checked, and the run's folder is
    created unless it exists (a complete run is returned as it is)."""
    stage = _as_stage(stage)
    plan = current_plan()
    ctx = D.init(cfg.device, planning=plan is not None)
    if plan is not None:
        run = create_run(cfg, stage.name, stage.config(cfg, **options), inputs, seed, write=False,
                         check_inputs=False, data=input_digests(cfg, stage))
        plan.record(cfg, run, stage, seed, options)
        return run, ctx
    check_data(cfg, stage, ctx)
    run = create_run(cfg, stage.name, stage.config(cfg, **options), inputs, seed, write=ctx.is_main,
                     data=input_digests(cfg, stage))
    if run.complete and stage.trained and not run.metrics.get("train", {}).get("iterations", 0) > 0:
        raise RunError(run.dir / "complete.json", f"run {run.id} ({stage.name}) is marked complete but never "
                                                  "trained; move the folder away to train it again")
    return run, ctx


def is_done(run: Run, ctx: D.Context) -> bool:
    """Nothing to train: the run is complete (perhaps by another process this one waited for:
    :func:`castlib.engine.runs.claim`), or the stages are only planning (:mod:`castlib.engine.plan`). One process
    (``ctx.world == 1``) claims the run's lock; torchrun's ranks train one run together and take none."""
    if current_plan() is not None or run.complete:
        return True
    return ctx.world == 1 and not claim(run)


def finish_run(run: Run, ctx: D.Context, cfg: Config, model, summary: Mapping[str, Any]) -> Run:
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
    return build_model(cfg, which, num_classes(cfg), pretrained=run.require_complete().model_dir)


def run_config(run: Run) -> Config:
    """The run's profile (the defaults for a custom YAML profile) with every setting the run stored."""
    stored = run.config().to_dict()
    stored.pop("options", None)
    profile = run.info["profile"]  # a custom YAML profile: the defaults, then everything the run stored
    return load_config(profile if profile in PROFILES else DEFAULTS_FILE, stored)


def evaluate_run(run: Run, cfg: Config | None = None) -> dict:
    """Evaluate a run's final model on the validation set; ``metrics.json`` is rewritten atomically and keeps
    the run's training summary."""
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

"""The one fitting routine every training stage calls, and the pieces of CAST's own stages.

:func:`fit` trains an objective on batch streams of its datasets and finishes the run
(:func:`castlib.engine.lifecycle.finish_run`). CAST's stages and the source stand-ins build its arguments with
:func:`cast_training` (the objective of Eq. 1-3, the optimiser and schedule of supplementary Table 2); Guided
Distillation passes its own objective, optimiser and a before-step hook (its EMA teacher).

A step is one or more forwards (several processes, micro-batches: :func:`castlib.engine.batches.split_batch`),
the global batch of ``units`` units (an image; a labelled + pseudo-labelled pair when there are two datasets)
laid out over the processes; DDP syncs the gradients in the last forward's backward (DESIGN 9).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from castlib import distributed as D
from castlib.config import Config
from castlib.data.datasets import InstanceDataset
from castlib.data.loaders import labelled_dataset, unlabelled_dataset
from castlib.engine.batches import batch_stream, split_batch
from castlib.engine.lifecycle import finish_run, num_classes
from castlib.engine.loop import train
from castlib.engine.objective import Objective
from castlib.engine.optim import build_optimizer, build_scheduler
from castlib.engine.runs import Run
from castlib.errors import ConfigError
from castlib.global_batch import forward_share
from castlib.losses import MemoryBank, SetCriterion, contrastive_options


def step_factory(ctx: D.Context, objective: torch.nn.Module, datasets: Sequence, *, units: int, seed: int,
                 num_workers: int = 0, micro_batch: int = 0,
                 before_step: Callable[[int], None] | None = None) -> Callable[[int], Callable]:
    """``factory(start)`` -> ``step(iteration)`` for :func:`castlib.engine.loop.train`: one batch stream per
    dataset (seeds ``seed``, ``seed + 1``, ...) from iteration ``start``; each step calls ``before_step(iteration)``
    and yields this process's forwards (``units`` per dataset over the processes, ``micro_batch`` per forward, 0:
    the whole share) with their weights. Under torchrun the objective is wrapped in DDP."""
    network = DistributedDataParallel(objective, find_unused_parameters=True) if ctx.distributed else objective
    forwards = split_batch(units, ctx.world, ctx.rank, micro_batch)

    def factory(start: int):
        streams = [batch_stream(dataset, units, seed + i, start, num_workers, ctx.rank, ctx.world, micro_batch)
                   for i, dataset in enumerate(datasets)]

        def step(iteration: int):
            """This process's forwards (:func:`split_batch`); DDP syncs the gradients in the last one's backward,
            which the loop runs while this generator waits inside ``no_sync`` for the others."""
            if before_step is not None:
                before_step(iteration)
            for f, forward in enumerate(forwards):
                batches = [next(s).to(ctx.device) for s in streams]
                last = f == len(forwards) - 1
                with nullcontext() if last or not ctx.distributed else network.no_sync():
                    with forward_share(forward.share), D.autocast(ctx):
                        losses = network(*batches)
                    yield losses, forward.weight

        return step

    return factory


def fit(*, cfg: Config, run: Run, ctx: D.Context, model: torch.nn.Module, objective: torch.nn.Module,
        optimizer: torch.optim.Optimizer, scheduler: Any, datasets: Sequence, units: int, iterations: int, seed: int,
        stage: str, micro_batch: int = 0, grad_clip: float = 0.0, before_step: Callable[[int], None] | None = None,
        extra_state: dict | None = None) -> Run:
    """Train ``objective`` (whose ``model`` is saved and evaluated) for ``iterations`` steps of ``units`` units
    per dataset (:func:`step_factory`), resuming from the run's checkpoint, then finish the run
    (:func:`castlib.engine.lifecycle.finish_run`). ``extra_state``: what is checkpointed besides the model,
    optimiser and schedule (L_pxl's memory bank)."""
    factory = step_factory(ctx, objective, datasets, units=units, seed=seed, num_workers=cfg.data.num_workers,
                           micro_batch=micro_batch, before_step=before_step)
    summary = train(run, ctx, objective, optimizer, scheduler, iterations, factory, grad_clip=grad_clip,
                    checkpoint_every=cfg.train.checkpoint_every, log_every=cfg.train.log_every,
                    extra_state=extra_state or None, desc=f"{stage} {run.id}")
    return finish_run(run, ctx, cfg, model, {"iterations": iterations, **summary})


# ---------------------------------------------------------------------------------------------------------------
# CAST's training stages and the stand-ins: what they pass to fit.

@dataclass
class Training:
    """:func:`fit`'s arguments for a CAST stage (:func:`cast_training`): the objective, optimiser, schedule, the
    datasets and the batch layout, gradient clipping and the state checkpointed besides them."""

    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: Any
    datasets: list
    units: int
    micro_batch: int
    grad_clip: float
    extra_state: dict = field(default_factory=dict)

    def arguments(self) -> dict:
        """The keyword arguments of :func:`fit` that this holds."""
        return {"objective": self.objective, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "datasets": self.datasets, "units": self.units, "micro_batch": self.micro_batch,
                "grad_clip": self.grad_clip, "extra_state": self.extra_state}

    def step_factory(self, ctx: D.Context, seed: int, num_workers: int = 0) -> Callable[[int], Callable]:
        """:func:`step_factory` over these datasets (what :func:`fit` trains; timed by the cost estimate)."""
        return step_factory(ctx, self.objective, self.datasets, units=self.units, seed=seed,
                            num_workers=num_workers, micro_batch=self.micro_batch)


def build_stage_optimizer(model, role: str, section: Config):
    """Teacher: one learning rate; student: encoder and decoder rates (supplementary Table 2)."""
    groups = model.param_groups()
    if role == "teacher":
        rates = {"teacher": (groups["encoder"] + groups["decoder"], section.lr)}
    else:
        rates = {"encoder": (groups["encoder"], section.encoder_lr), "decoder": (groups["decoder"], section.decoder_lr)}
    return build_optimizer(model, rates, section.weight_decay)


def build_stage_scheduler(optimizer, section: Config, iterations: int):
    """The section's schedule (multistep or poly) over ``iterations``, after its warm-up."""
    warmup = section.get("warmup_iterations", 0)
    if section.schedule == "multistep":
        return build_scheduler(optimizer, "multistep", iterations, milestones=section.milestones, gamma=section.gamma,
                               warmup=warmup)
    return build_scheduler(optimizer, section.schedule, iterations, power=section.get("power", 0.9), warmup=warmup)


def contrastive_section(cfg: Config, role: str, section: Config) -> dict:
    """``loss.contrastive`` with the stage's ``train.<role>.contrastive`` overrides; an override of a key that
    ``loss.contrastive`` lacks is an error naming it."""
    overrides = section.get("contrastive", {})
    unknown = sorted(set(overrides) - set(cfg.loss.contrastive))
    if unknown:
        raise ConfigError(None, f"train.{role}.contrastive.{unknown[0]}",
                          f"not a key of loss.contrastive (known: {', '.join(sorted(cfg.loss.contrastive))})")
    return {**cfg.loss.contrastive, **overrides}


def batch_layout(batch_key: str, section: Config, two_parts: bool) -> tuple[int, int]:
    """The global batch in units (an image; a labelled + pseudo-labelled pair in a two-part batch, half the
    batch size each) and the units per forward: ``micro_batch`` images per forward, at least one unit, 0 for
    each process's whole share (DESIGN 9; :func:`castlib.engine.batches.split_batch`). ``batch_key``: the
    section the batch size comes from, named in errors."""
    batch, micro = section.batch_size, section.get("micro_batch", 0)
    parts = 2 if two_parts else 1
    if not isinstance(batch, int) or batch < parts or batch % parts:
        raise ConfigError(None, f"{batch_key}.batch_size", f"{batch} cannot be split into {parts} equal non-empty "
                                                           "parts" + (" (labelled and pseudo-labelled)" if two_parts
                                                                      else ""))
    if not isinstance(micro, int) or micro < 0:
        raise ConfigError(None, f"{batch_key.replace('refinement', 'student')}.micro_batch",
                          f"{micro}: give images per forward, or 0 for each process's whole share")
    return batch // parts, max(1, micro // parts) if micro else 0


def stage_section(cfg: Config, stage: str) -> Config:
    """The ``train`` section a CAST training stage reads: the teacher's for steps A and B, the student's for
    knowledge transfer and the supervised-only student, the student's with the refinement batch for refinement."""
    t = cfg.train
    if stage == "student_refinement":
        return Config({**t.student, "batch_size": t.refinement.batch_size})
    return t.teacher if stage.startswith("teacher") else t.student


def cast_training(cfg: Config, ctx: D.Context, model, *, role: str, iterations: int, labels_dir: Path | None,
                  contrastive: bool, section: Config, batch_key: str,
                  labelled: InstanceDataset | None = None) -> Training:
    """The objective (Eq. 1-3: L_sup, l_semi L_semi on ``labels_dir``'s pseudo-labels of D_u, l_pxl L_pxl),
    optimiser and schedule of a CAST training stage or stand-in. ``labels_dir`` None: D_l alone; ``labelled``:
    the labelled images (default: D_l of the config's split)."""
    merged = contrastive_section(cfg, role, section)
    options = contrastive_options(merged)
    bank = None
    if contrastive and options["scope"] == "memory_bank":
        bank = MemoryBank(merged["bank_size"], merged["bank_push"])
    criterion = None if role == "teacher" else SetCriterion.from_config(cfg.loss, num_classes(cfg)).to(ctx.device)
    objective = Objective(model, "teacher" if role == "teacher" else "criterion", criterion,
                          semi_weight=section.semi_weight if labels_dir is not None else 0.0,
                          contrastive=options if contrastive else None,
                          contrastive_weight=section.contrastive_weight, bank=bank)
    optimizer = build_stage_optimizer(model, role, section)
    scheduler = build_stage_scheduler(optimizer, section, iterations)
    units, micro = batch_layout(batch_key, section, two_parts=labels_dir is not None)
    datasets = [labelled_dataset(cfg, strong=contrastive) if labelled is None else labelled]
    if labels_dir is not None:
        datasets.append(unlabelled_dataset(cfg, strong=contrastive, annotation_root=labels_dir))
    return Training(objective, optimizer, scheduler, datasets, units, micro, section.get("grad_clip", 0.0),
                    {"bank": bank} if bank is not None else {})

"""The training loop: one screen, read top to bottom (STYLE: nanoGPT).

A stage builds its model, optimiser, schedule and a ``step_factory``; ``train`` resumes from the
run's last checkpoint when there is one, runs the remaining iterations, logs every loss term and
learning rate, checkpoints atomically and returns the last logged values.

A step is one or more forwards (several processes, micro-batches: :func:`castlib.engine.batches.split_batch`),
each with a weight, its units' share of the global batch. Each forward's loss is back-propagated times
``weight * world`` (DDP averages gradients over the ``world`` processes, the factor undoes it), so the gradient
the optimiser sees is the weight-sum of the forwards' gradients: with the losses' counts from
:func:`castlib.global_batch.global_normaliser`, the one-process gradient of the global batch. Logged values
are the weight-sums over every process's forwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from castlib.distributed import Context, all_reduce_sum, barrier
from castlib.engine.checkpoint import load_checkpoint, restore, save_checkpoint
from castlib.engine.logs import TIMING_FILE, TrainingLog, read_timing
from castlib.engine.optim import clip_gradients
from castlib.engine.runs import Run
from castlib.io import write_json_atomic

Losses = Mapping[str, torch.Tensor]
# A step returns its forwards' (losses, weight) pairs, back-propagating each as it is asked for the next (so a
# micro-batch's activations are freed before the next forward), or one process's losses (weight 1 / world).
StepFn = Callable[[int], Losses | Iterable[tuple[Losses, float]]]


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups if not g["name"].endswith("_no_decay")}


def optimization_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                      forwards: Losses | Iterable[tuple[Losses, float]], ctx: Context,
                      grad_clip: float | None) -> tuple[dict[str, float], torch.Tensor | None]:
    """One optimiser step from a step's ``forwards`` (:func:`_accumulate`): back-propagate, clip, step the
    optimiser and the schedule. Returns the logged values and the gradient norm (or None)."""
    optimizer.zero_grad(set_to_none=True)
    values = _accumulate(forwards, ctx)
    grad_norm = clip_gradients(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    return values, grad_norm


def train(run: Run, ctx: Context, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
          iterations: int, step_factory: Callable[[int], StepFn], *, grad_clip: float | None = None,
          checkpoint_every: int = 500, log_every: int = 10, extra_state: Mapping[str, Any] | None = None,
          desc: str = "train") -> dict[str, float]:
    """Run iterations ``[start, iterations)`` where ``start`` is the last checkpoint's iteration (or 0).

    ``step_factory(start)`` returns ``step(iteration)``: ``{"loss": total, other terms...}`` or an iterable of
    such dictionaries with their weights (module docstring); only ``"loss"`` is back-propagated, every entry is
    logged (weight-summed over forwards and processes).
    """
    extra_state = dict(extra_state or {})
    start = 0
    values: dict[str, float] = {}
    if run.checkpoint.is_file():
        state = load_checkpoint(run.checkpoint)
        start = restore(state, model=model, optimizer=optimizer, scheduler=scheduler, extra=extra_state)
        values = dict(state.get("values", {}))  # a run killed after its last checkpoint reports the same summary
    log = TrainingLog(run.dir / "log.csv", resume_from=start) if ctx.is_main else None
    timing = read_timing(run.dir) if start > 0 else {"iterations": 0, "seconds": 0.0}
    step = step_factory(start)
    bar = tqdm(total=iterations, initial=start, desc=desc, disable=not ctx.is_main, dynamic_ncols=True,
               mininterval=1.0)
    model.train()
    for it in range(start, iterations):
        lrs = learning_rates(optimizer)
        started = time.perf_counter()
        values, grad_norm = optimization_step(model, optimizer, scheduler, step(it), ctx, grad_clip)
        timing = {"iterations": timing["iterations"] + 1, "seconds": timing["seconds"] + time.perf_counter() - started}
        if grad_norm is not None:
            values["grad_norm"] = float(grad_norm)
        values.update(lrs)
        bar.update(1)
        bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
        if log is not None and ((it + 1) % log_every == 0 or it + 1 == iterations):
            log.log(it, values)
        if (it + 1) % checkpoint_every == 0 or it + 1 == iterations:
            if ctx.is_main:
                save_checkpoint(run.checkpoint, iteration=it + 1, model=model, optimizer=optimizer,
                                scheduler=scheduler, extra=extra_state, values=values)
                log.flush()
                write_json_atomic(run.dir / TIMING_FILE, timing)
            barrier(ctx)
    bar.close()
    if log is not None:
        log.close()
    return values


def _accumulate(forwards: Losses | Iterable[tuple[Losses, float]], ctx: Context) -> dict[str, float]:
    """Back-propagate each forward's loss times ``weight * world``; the weight-sums of the logged values over
    forwards and processes (every process logs the same keys)."""
    if isinstance(forwards, Mapping):
        forwards = [(forwards, 1.0 / ctx.world)]
    totals: dict[str, torch.Tensor] = {}
    for losses, weight in forwards:
        (losses["loss"] * (weight * ctx.world)).backward()
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + weight * torch.as_tensor(v, dtype=torch.float32).detach()
    keys = sorted(totals)
    summed = all_reduce_sum(torch.stack([totals[k].to(ctx.device) for k in keys]), ctx)
    return dict(zip(keys, summed.tolist(), strict=True))

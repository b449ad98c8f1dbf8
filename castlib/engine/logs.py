"""Training logs: a CSV of every loss term and learning rate (and TensorBoard when installed), and what a run's
records say it took (``timing.json``; ``run.json`` to ``complete.json``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from castlib.io import write_text_atomic

if TYPE_CHECKING:
    from castlib.engine.runs import Run

TIMING_FILE = "timing.json"  # training seconds and the iterations they cover, written with each checkpoint


def read_timing(run_dir: str | Path) -> dict:
    """A run's ``timing.json`` (``{"iterations": n, "seconds": s}``: the time of the forward, backward and
    optimiser steps of n iterations, resumed runs included), or zeros where the run has none. Kept out of
    ``log.csv`` and ``metrics.json`` so that those stay identical between a resumed and an uninterrupted run."""
    path = Path(run_dir) / TIMING_FILE
    return json.loads(path.read_text()) if path.is_file() else {"iterations": 0, "seconds": 0.0}


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


class TrainingLog:
    """Rows keyed by iteration in ``log.csv``; on resume, rows at or after the resume point are
    dropped so the log of a resumed run equals the log of an uninterrupted one."""

    def __init__(self, path: str | Path, resume_from: int = 0, tensorboard: bool = True):
        self.path = Path(path)
        self.rows: list[dict] = []
        if self.path.is_file() and resume_from > 0:
            with open(self.path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["iteration"]) < resume_from]
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.path.parent / "tensorboard"), purge_step=resume_from)
            except ImportError:
                self.writer = None

    def log(self, iteration: int, values: Mapping[str, float]) -> None:
        self.rows.append({"iteration": iteration, **{k: float(v) for k, v in values.items()}})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, float(value), iteration)

    def flush(self) -> None:
        """Rewrite the CSV atomically (columns: the union of all keys, in first-seen order)."""
        columns: dict[str, None] = {}
        for row in self.rows:
            columns.update(dict.fromkeys(row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buffer.getvalue())
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()

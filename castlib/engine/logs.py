"""Training logs: a CSV of every loss term and learning rate (and TensorBoard when installed)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path

from castlib.io import write_text_atomic

TIMING_FILE = "timing.json"  # training seconds and the iterations they cover, written with each checkpoint


def read_timing(run_dir: str | Path) -> dict:
    """A run's ``timing.json`` (``{"iterations": n, "seconds": s}``: the time of the forward, backward and
    optimiser steps of n iterations, resumed runs included), or zeros where the run has none. Kept out of
    ``log.csv`` and ``metrics.json`` so that those stay identical between a resumed and an uninterrupted run."""
    path = Path(run_dir) / TIMING_FILE
    return json.loads(path.read_text()) if path.is_file() else {"iterations": 0, "seconds": 0.0}


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

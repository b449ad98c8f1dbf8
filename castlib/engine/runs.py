"""The run registry (DESIGN section 1).

A run is one arrow of the pipeline: a stage, the config it reads, the ids of the runs it consumes
and a seed. Its id is a hash of those, so asking twice for the same run finds the same folder:

``results/runs/<id>/``
    ``run.json``       what the run is (stage, inputs, seed, profile, data source, commit, machine, torch)
    ``config.yaml``    the resolved config the run was made with
    ``checkpoints/``   ``last.pt`` (resumable training state)
    ``log.csv``        every loss term and learning rate per logged iteration
    ``metrics.json``   the final metrics
    ``timing.json``    training seconds and the iterations they cover (plans, training-time ratios)
    ``model/``         the final weights (``save_pretrained`` layout)
    ``pseudo_labels/`` (pseudo-label runs) annotations in the dataset's own format
    ``complete.json``  written last: a run with it is reused, never retrained

Every file is written atomically (:mod:`castlib.io`), so a run killed at any point keeps what it
had written and resumes from its last checkpoint. Processes of one machine that share a runs folder (two
notebooks, ``castlib table --jobs``) never train the same run twice: :func:`claim` takes the run's lock (a file
under the temporary folder, so run folders hold only what they list above) before training, and a process that
finds it taken waits, then reuses the finished run.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from castlib.config import REPO_ROOT, Config, as_config, read_yaml
from castlib.data.loaders import data_record
from castlib.errors import CastError
from castlib.io import write_json_atomic, write_text_atomic
from castlib.machine import git_commit, hardware

# Keys that change how or where a run executes but not what it computes; they stay out of the run id.
# (Where the synthetic sets and split files lie is one of them: their content follows from the config.)
RUNTIME_KEYS = ("device", "data.num_workers", "data.data_dir", "data.splits_dir", "train.log_every",
                "train.checkpoint_every", "runs_dir", "model.teacher.activation_checkpointing")
# Keys that the id need not hash: data.source is synthetic exactly when data.root is null (castlib.config), so
# the root already tells the sources apart and synthetic runs keep the ids they had before the key existed.
IMPLIED_KEYS = ("data.source",)
# Keys added after runs existed, with the value that reproduces the code before them: the id hashes such a key
# only when it holds another value, so adding a knob keeps every earlier run valid (the registry's stand-ins).
ADDED_KEYS = {"model.teacher.detector.swin_window": 7, "model.teacher.detector.swin_out_indices": [2, 3, 4],
              "model.teacher.detector.num_feature_levels": 4, "model.teacher.detector.text_vocab_size": 0}


RUN_ID = re.compile(r"[0-9a-f]{12}")  # what run_id gives: a run's folder name, never a path


class RunError(CastError):
    """A run folder is missing, incomplete or inconsistent. The message names the folder or file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


def _timestamp() -> str:
    """Local time to the microsecond (``run.json``'s ``created``, ``complete.json``'s ``finished``): a plan's
    spent seconds for a run that trains nothing are their difference, and a smoke run can take under a second."""
    return datetime.now().isoformat(sep=" ", timespec="microseconds")


def _strip(config: Mapping, keys: tuple[str, ...], defaults: Mapping[str, Any] | None = None) -> dict:
    """``config`` without ``keys``, and without each key of ``defaults`` that holds its default value."""
    out = json.loads(json.dumps(config, default=str))
    for dotted in (*keys, *(defaults or {})):
        node = out
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and (dotted in keys or node.get(last) == (defaults or {}).get(dotted)):
            node.pop(last, None)
    return out


def run_id(stage: str, config: Mapping, inputs: Mapping[str, str], seed: int,
           data: Mapping[str, str] | None = None) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of (stage, config, inputs, seed) and, when given,
    the digests of the data the run reads (dataset manifest, split files), so a changed input is a new run."""
    payload = {"stage": stage, "config": _strip(config, (*RUNTIME_KEYS, *IMPLIED_KEYS), ADDED_KEYS),
               "inputs": dict(sorted(inputs.items())), "seed": seed}
    payload |= {"data": dict(sorted(data.items()))} if data else {}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Run:
    """A handle on ``<runs_dir>/<id>/``."""

    id: str
    dir: Path

    @property
    def info(self) -> dict:
        return _read_json(self.dir / "run.json")

    @property
    def stage(self) -> str:
        return self.info["stage"]

    @property
    def complete(self) -> bool:
        return (self.dir / "complete.json").is_file()

    @property
    def metrics(self) -> dict:
        path = self.dir / "metrics.json"
        if not path.is_file() and (self.dir / "run.json").is_file():
            raise RunError(path, f"missing: {self.way_forward()}")
        return _read_json(path)

    def way_forward(self) -> str:
        """What recreates a missing ``metrics.json``: resuming an incomplete run, re-evaluating a complete one's
        model (:func:`castlib.engine.lifecycle.evaluate_run`, which keeps its training record), or redoing a run that
        has no model to evaluate."""
        if not self.complete:
            return (f"run {self.id} ({self.stage}) is not complete; resume it with `python -m castlib train` (the "
                    "arguments that started it)")
        if (self.model_dir / "castlib_model.json").is_file():
            return (f"recreate it with `python -m castlib evaluate --run {self.id} --runs-dir {self.dir.parent}` "
                    "(evaluates the run's model again; its training record is kept)")
        return (f"run {self.id} ({self.stage}) has no model to evaluate again; move {self.dir} away and run the "
                "command that made it again")

    def training_record(self) -> dict:
        """The ``train`` section of the run's metrics (iterations and the last logged values), from
        ``metrics.json``, else the copy ``complete.json`` keeps (:meth:`mark_complete`), else rebuilt from the last
        row of ``log.csv`` (runs completed before that copy existed); ``{}`` when none has it."""
        for name in ("metrics.json", "complete.json"):
            path = self.dir / name
            if path.is_file() and isinstance(_read_json(path).get("train"), dict):
                return _read_json(path)["train"]
        log = self.dir / "log.csv"
        if not log.is_file():
            return {}
        with open(log, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return {}
        last = rows[-1]
        return {"iterations": int(last.pop("iteration")) + 1, **{k: float(v) for k, v in last.items() if v != ""}}

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoints" / "last.pt"

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    @property
    def pseudo_label_dir(self) -> Path:
        return self.dir / "pseudo_labels"

    def config(self) -> Config:
        path = self.dir / "config.yaml"
        if not path.is_file():
            raise RunError(path, "missing: the run folder is incomplete")
        return as_config(read_yaml(path, as_written=False))  # a key written twice (an edit) is an error naming it

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        return write_json_atomic(self.dir / "metrics.json", dict(metrics))

    def mark_complete(self, summary: Mapping[str, Any] | None = None) -> None:
        """Write ``complete.json`` (the time, ``summary`` and a copy of the training record of ``metrics.json``, so
        a re-evaluation after ``metrics.json`` was lost keeps it: :meth:`training_record`); release the lock."""
        metrics = self.dir / "metrics.json"
        train = _read_json(metrics).get("train") if metrics.is_file() else None
        write_json_atomic(self.dir / "complete.json", {"finished": _timestamp(), **(summary or {}),
                                                       **({"train": train} if isinstance(train, dict) else {})})
        release(self)

    def require_complete(self, role: str = "input") -> Run:
        if not (self.dir / "run.json").is_file():
            raise RunError(self.dir, f"{role} run {self.id} does not exist (train it first)")
        if not self.complete:
            raise RunError(self.dir, f"{role} run {self.id} ({self.stage}) is not complete (resume it first)")
        return self


def lock_path(run: Run) -> Path:
    """The lock file of ``run``: ``<tmp>/castlib-locks-<uid>/<digest of the run folder's real path>.lock``."""
    folder = Path(tempfile.gettempdir()) / f"castlib-locks-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    return folder / f"{hashlib.sha256(str(run.dir.resolve()).encode()).hexdigest()[:20]}.lock"


_CLAIMED: dict[Path, Any] = {}  # run folder -> the open lock file this process holds


def claim(run: Run) -> bool:
    """Whether this process is to train ``run``: False when it is complete; else True once this process holds
    the run's lock (:func:`lock_path`), after waiting while another process trains it, and False when that
    process completed it meanwhile. :meth:`Run.mark_complete` releases the lock (and so does the process's
    end, whatever ends it)."""
    if run.complete:
        return False
    if run.dir in _CLAIMED:
        return True
    handle = open(lock_path(run), "a")  # noqa: SIM115 (held open until the run completes)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"run {run.id}: another process is training it; waiting for it to finish", file=sys.stderr,
              flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
    if run.complete:
        handle.close()
        return False
    _CLAIMED[run.dir] = handle
    return True


def release(run: Run) -> None:
    """Give up this process's lock on ``run`` (nothing when it holds none)."""
    handle = _CLAIMED.pop(run.dir, None)
    if handle is not None:
        handle.close()


@dataclass(frozen=True)
class OpenedRun:
    """A run :func:`create_run` opened while :func:`track_runs` was on, and whether it was complete then."""

    run: Run
    stage: str
    was_complete: bool

    @property
    def trained(self) -> bool:
        return not self.was_complete and self.run.complete


_OPENED: list[dict[str, OpenedRun]] = []  # one dictionary per active track_runs, by run id


@contextlib.contextmanager
def track_runs() -> Iterator[dict[str, OpenedRun]]:
    """Collect every run opened for training meanwhile (planning opens none), so a command can say which runs it
    trained and which complete ones it reused (:func:`describe_opened`)."""
    opened: dict[str, OpenedRun] = {}
    _OPENED.append(opened)
    try:
        yield opened
    finally:
        _OPENED.remove(opened)


def describe_opened(opened: Mapping[str, OpenedRun]) -> list[str]:
    """Lines naming the runs trained (complete now, not before), the complete runs reused, and any left
    incomplete; nothing when no run was opened."""
    groups = {"trained": [o for o in opened.values() if o.trained],
              "reused (complete already)": [o for o in opened.values() if o.was_complete],
              "left incomplete": [o for o in opened.values() if not o.run.complete]}
    return [f"{label}: {len(runs)} run{'s' if len(runs) != 1 else ''}: "
            + ", ".join(f"{o.stage} {o.run.id}" for o in runs) for label, runs in groups.items() if runs]


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise RunError(path, "missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(path, f"not valid JSON ({e})") from e


def runs_dir(cfg: Config) -> Path:
    path = Path(cfg.get("runs_dir", "results/runs"))
    return path if path.is_absolute() else REPO_ROOT / path


def open_run(cfg: Config, run_id_: str) -> Run:
    """An existing run by id (``python -m castlib evaluate --run <id>``); an id is :data:`RUN_ID` (12 hex digits),
    never a path, so a run outside ``runs_dir`` is never read or written."""
    if not RUN_ID.fullmatch(str(run_id_)):
        raise RunError(runs_dir(cfg), f"{run_id_!r} is not a run id: a run id is 12 hex digits, the name of a run "
                                      "folder here (pass the folder holding the run as --runs-dir)")
    run = Run(run_id_, runs_dir(cfg) / run_id_)
    if not (run.dir / "run.json").is_file():
        raise RunError(run.dir, f"no run {run_id_} under {runs_dir(cfg)}")
    return run


def create_run(cfg: Config, stage: str, config: Mapping, inputs: Mapping[str, Run], seed: int,
               write: bool = True, data: Mapping[str, str] | None = None, check_inputs: bool = True) -> Run:
    """The run of ``stage`` on ``config`` consuming ``inputs`` and the data of digests ``data``; its folder
    and ``run.json`` are made on first use (``write=False`` on non-zero distributed ranks and when planning).
    Inputs must be complete (``check_inputs=False``: planning, where an id is all that is asked)."""
    for role, run in inputs.items():
        if check_inputs:
            run.require_complete(role)
    ids = {role: run.id for role, run in inputs.items()}
    rid = run_id(stage, config, ids, seed, data)
    run = Run(rid, runs_dir(cfg) / rid)
    if write:
        for opened in _OPENED:
            opened.setdefault(run.id, OpenedRun(run, stage, run.complete))
    info_path = run.dir / "run.json"
    if info_path.is_file():
        if _read_json(info_path)["stage"] != stage:
            raise RunError(info_path, f"holds stage {_read_json(info_path)['stage']!r}, expected {stage!r}")
        return run
    if write:
        write_text_atomic(run.dir / "config.yaml", yaml.safe_dump(json.loads(json.dumps(config, default=str)),
                                                                  sort_keys=False))
        write_json_atomic(info_path, {
            "id": rid, "stage": stage, "inputs": ids, "seed": seed, "profile": cfg.profile, "data": dict(data or {}),
            "data_source": data_record(cfg),
            "commit": git_commit(), "hardware": hardware(), "torch": torch.__version__, "created": _timestamp(),
        })
    return run


# Files of a run folder that say what it was and what it measured, without weights or pseudo-labels: a table's
# records (``results/<profile>/records/<id>/``), from which ``castlib table --from-records`` rebuilds it.
RECORD_FILES = ("run.json", "config.yaml", "metrics.json", "timing.json", "log.csv", "complete.json")


def lineage(runs: list[Run]) -> list[Run]:
    """``runs`` and every run they consume, transitively (``run.json``'s ``inputs``: pseudo-labels, the
    teacher steps, theta_T^0, the stand-ins), each once, in first-seen order. A run without ``run.json`` (one only
    planned) adds no inputs."""
    seen: dict[str, Run] = {}
    todo = list(runs)
    while todo:
        run = todo.pop(0)
        if run.id in seen:
            continue
        seen[run.id] = run
        if (run.dir / "run.json").is_file():
            todo += [Run(i, run.dir.parent / i) for i in run.info.get("inputs", {}).values()]
    return list(seen.values())


def export_records(runs: list[Run], dest: str | Path) -> list[Path]:
    """Copy each complete run's :data:`RECORD_FILES` (those it has) to ``dest/<id>/``, atomically; files already
    there with the same bytes are left alone. Returns the run folders written."""
    out = []
    for run in runs:
        if not run.complete:
            continue
        folder = Path(dest) / run.id
        for name in RECORD_FILES:
            source = run.dir / name
            target = folder / name
            if source.is_file() and (not target.is_file() or target.read_bytes() != source.read_bytes()):
                write_text_atomic(target, source.read_text())
        out.append(folder)
    return out

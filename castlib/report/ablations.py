"""Supplementary Tables 3-8 as DataFrames, built from the runs of :mod:`castlib.engine.stages`.

Each builder asks the stages for the runs its rows need, once per seed of ``cfg.seeds`` (the registry trains
only what is missing, so the CAST teacher and student are trained once and shared by Tables 3-8), reads each
run's validation metrics (``metrics.json``, written when the run finished) and returns one row per variant:
the reproduced mean +- std over the seeds (sample std), the number of seeds, the paper's value beside it
(from :mod:`castlib.paper`) and the ids of the row's runs.

``train=False`` builds a table from the runs that exist, training nothing (the stages run in planning mode,
:mod:`castlib.engine.plan`): a cell whose runs are missing reads "not run". The student AP of every
table is the refined student theta_s+, CAST's final model.

The table's caption, notes and provenance travel in ``table.attrs``; :func:`castlib.report.tables.write_table`
writes them into ``tableN.{csv,md}``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd

from castlib import paper
from castlib.baselines.guided_distillation import guided_distillation
from castlib.config import Config
from castlib.data.loaders import describe_data
from castlib.engine import stages
from castlib.engine.plan import current_plan, planning, training_seconds
from castlib.engine.runs import Run
from castlib.errors import CastError, ConfigError

NOT_RUN = "not run"
GD_BACKBONES = ("resnet50", "dinov2_b", "dinov2_l")  # supplementary Table 8

STUDENT_NOTE = "Student AP is the refined student theta_s+ (CAST's final model) on the validation set."
SHARED_TEACHER_NOTE = ("The rows vary the student's L_pxl (train.student.contrastive) and reuse the CAST "
                       "teacher; the paper reports them as student maskAP.")
DISCREPANCY_NOTE = ("The paper prints the default CAST student as 32.2 in Tables 4-7 but 33.9 in Tables 3 and 8; "
                    "the paper column shows each table's numbers as printed.")
STD_NOTE = "Reproduced cells: mean +- sample std over the seeds that have the run; '(k/n seeds)' where some lack it."


# ---------------------------------------------------------------------------------------------------------------
# Building blocks.


def with_student_contrastive(cfg: Config, key: str, value: Any) -> Config:
    """``cfg`` with the student's L_pxl option ``key`` set to ``value`` (Tables 4, 5, 7). Where the value is
    already in effect, ``cfg`` itself comes back, so the default row is the CAST run and shares its id."""
    effective = {**cfg.loss.contrastive, **cfg.train.student.contrastive}
    if effective[key] == value:
        return cfg
    out = copy.deepcopy(cfg)
    out.train.student.contrastive[key] = value
    return out


def with_label_fraction(cfg: Config, fraction: float) -> Config:
    """``cfg`` training on the Cityscapes labelled fraction ``fraction`` (Table 8)."""
    if cfg.data.label_fraction == fraction:
        return cfg
    out = copy.deepcopy(cfg)
    out.data.label_fraction = fraction
    return out


class _Cell:
    """One reproduced cell: a value per seed (``None`` where the run is missing)."""

    def __init__(self, values: Sequence[float | None]):
        self.values = list(values)

    @property
    def present(self) -> list[float]:
        return [v for v in self.values if v is not None]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.present) if self.present else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.present) if len(self.present) > 1 else math.nan

    def text(self, missing: str = NOT_RUN) -> str:
        if not self.present:
            return missing
        text = f"{self.mean:.2f}" + (f" ± {self.std:.2f}" if len(self.present) > 1 else "")
        if len(self.present) < len(self.values):
            text += f" ({len(self.present)}/{len(self.values)} seeds)"
        return text


def _metric(run: Run | None, key: str = "ap") -> float | None:
    return float(run.metrics[key]) if run is not None and run.complete else None


def _ratio(numerators: Sequence[float | None], denominators: Sequence[float | None]) -> _Cell:
    return _Cell([n / d if n is not None and d else None for n, d in zip(numerators, denominators, strict=True)])


def _row(variant: str, cells: Mapping[str, _Cell], paper_values: Mapping[str, Any], runs: Sequence[Run],
         missing: Mapping[str, str] | None = None) -> dict:
    """One table row: per metric the display cell, its mean and std, and the paper's value; seeds; run ids."""
    missing = missing or {}
    row: dict[str, Any] = {"variant": variant}
    for name, cell in cells.items():
        row[name] = cell.text(missing.get(name, NOT_RUN))
        row[f"paper {name}"] = paper_values.get(name, "-")
    first = next(iter(cells.values()))
    row["n seeds"] = len(first.present)
    for name, cell in cells.items():
        row[f"{name} mean"], row[f"{name} std"] = cell.mean, cell.std
    row["runs"] = " ".join(dict.fromkeys(r.id for r in runs))
    return row


def _building(train: bool) -> contextlib.AbstractContextManager:
    """Train what is missing (``train``) or only look the runs up (planning mode)."""
    return contextlib.nullcontext() if train else planning()


@contextlib.contextmanager
def _requested_by(label: str) -> Iterator[None]:
    """Attribute the runs asked for in the block to ``label`` when a plan is being recorded."""
    plan = current_plan()
    with plan.requested_by(label) if plan is not None else contextlib.nullcontext():
        yield


def _table(rows: list[dict], cfg: Config, number: int, caption: str, notes: Sequence[str], started: float,
           runs: Sequence[Run]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    complete = [r for r in runs if r.complete]
    table.attrs.update({
        "number": number, "caption": caption, "notes": list(notes), "profile": cfg.profile,
        "dataset": cfg.data.dataset, "data": describe_data(cfg), "seeds": list(cfg.seeds),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "hardware": sorted({r.info["hardware"] for r in complete}),
        "run_commits": sorted({r.info["commit"] for r in complete}),
        "display_columns": [c for c in table.columns if not c.endswith((" mean", " std")) and c != "runs"],
    })
    return table


def _student_variants(cfg: Config, number: int, key: str, variants: Mapping[str, Mapping[str, float]],
                      train: bool, caption: str, notes: Sequence[str],
                      time_ratio: tuple[str, float] | None = None) -> pd.DataFrame:
    """Tables 4, 5, 7: the CAST pipeline with the student's L_pxl option ``key`` set per row."""
    started, rows, every = time.perf_counter(), [], []
    with _building(train):
        per_variant = {}
        for variant in variants:
            variant_cfg = with_student_contrastive(cfg, key, variant)
            with _requested_by(f"Table {number} {variant}"):
                per_variant[variant] = [stages.cast(variant_cfg, seed, refine=False) for seed in cfg.seeds]
        reference = [training_seconds(r["student"]) for r in per_variant[next(iter(variants))]]
        for variant, pipelines in per_variant.items():
            cells = {"AP": _Cell([_metric(p["student"]) for p in pipelines]),
                     "AP50": _Cell([_metric(p["student"], "ap50") for p in pipelines])}
            paper_values = {"AP": variants[variant]["ap"], "AP50": variants[variant]["ap50"]}
            if time_ratio is not None:
                cells["train time ratio"] = _ratio([training_seconds(p["student"]) for p in pipelines], reference)
                paper_values["train time ratio"] = time_ratio[1] if variant == time_ratio[0] else 1.0
            runs = [run for p in pipelines for run in p.values()]
            every += runs
            rows.append(_row(variant, cells, paper_values, runs))
    return _table(rows, cfg, number, caption, [*notes, SHARED_TEACHER_NOTE, STUDENT_NOTE, DISCREPANCY_NOTE, STD_NOTE],
                  started, every)


# ---------------------------------------------------------------------------------------------------------------
# The tables.

def table3(cfg: Config, train: bool = True) -> pd.DataFrame:
    """Supplementary Table 3: teacher adaptation. Teacher AP and student AP per teacher variant, and "delta vs
    SOTA" = student AP minus the kit's own Guided Distillation (ResNet-50, ``data.label_fraction``) AP."""
    started, rows, every = time.perf_counter(), [], []
    with _building(train):
        with _requested_by("Table 3 guided_distillation_resnet50"):
            baseline = [guided_distillation(cfg, "resnet50", cfg.data.label_fraction, seed) for seed in cfg.seeds]
        for variant in stages.TEACHER_VARIANTS:
            with _requested_by(f"Table 3 {variant}"):
                pipelines = [stages.cast(cfg, seed, variant) for seed in cfg.seeds]
            student = [_metric(p["refined"]) for p in pipelines]
            sota = [_metric(b) for b in baseline]
            cells = {"teacher AP": _Cell([_metric(p["teacher"]) for p in pipelines]), "student AP": _Cell(student),
                     "delta vs SOTA": _Cell([s - g if s is not None and g is not None else None
                                             for s, g in zip(student, sota, strict=True)])}
            values = paper.TABLE3_TEACHER_ADAPTATION[variant]
            paper_values = {"teacher AP": values["teacher_ap"], "student AP": values["student_ap"],
                            "delta vs SOTA": values["delta_vs_sota"]}
            runs = [run for p in pipelines for run in p.values()] + [b for b in baseline if b is not None]
            every += runs
            rows.append(_row(variant, cells, paper_values, runs))
    notes = ["finetune_only: step A without L_pxl; self_training: steps A and B without L_pxl; "
             "self_training_contrastive: CAST (A and B with L_pxl).",
             "delta vs SOTA: student AP minus the kit's Guided Distillation (ResNet-50) at the same label fraction "
             "and seed (the paper's SOTA 30.8 is that cell of Table 8).",
             STUDENT_NOTE, DISCREPANCY_NOTE, STD_NOTE]
    return _table(rows, cfg, 3, "Supplementary Table 3: teacher adaptation (maskAP)", notes, started, every)


def table4(cfg: Config, train: bool = True) -> pd.DataFrame:
    """Supplementary Table 4 and E.2: asymmetric InfoNCE vs margin hinge (m = ``loss.contrastive.margin``)."""
    margin = {**cfg.loss.contrastive, **cfg.train.student.contrastive}["margin"]
    notes = [f"hinge: max(0, m - (s+ - s-)) with m = {margin} (the paper's row says m = 0.1, its caption 0.2).",
             "train time ratio: the knowledge-transfer run's training time (logged step time x iterations) over "
             "InfoNCE's, per seed; the paper's 1.6x is supplementary E.2."]
    return _student_variants(cfg, 4, "loss", paper.TABLE4_LOSS_VARIANT, train,
                             "Supplementary Table 4: contrastive loss variant (student maskAP)", notes,
                             time_ratio=("hinge", paper.TRAINING_TIME_RATIO["hinge_vs_infonce"]))


def table5(cfg: Config, train: bool = True) -> pd.DataFrame:
    """Supplementary Table 5: the debias score of the negative sampler, s_deb / s_deb^2 / sqrt(s_deb)."""
    notes = ["original: s_deb; squared: s_deb^2; sqrt: sqrt(s_deb) (supplementary C)."]
    return _student_variants(cfg, 5, "score", paper.TABLE5_DEBIAS_SCORE, train,
                             "Supplementary Table 5: debias score formulation (student maskAP)", notes)


def table6(cfg: Config, train: bool = True) -> pd.DataFrame:
    """Supplementary Table 6: teacher choice. T1 = the zero-shot teacher theta_T^0, T2 = the adapted CAST teacher;
    AP and AP50 of each teacher and of the student distilled under each."""
    started, rows, every = time.perf_counter(), [], []
    with _building(train):
        per_row: dict[str, list[dict[str, Run]]] = {}
        with _requested_by("Table 6 teacher_t1_zero_shot"):
            t1 = [stages.teacher_init(cfg, seed) for seed in cfg.seeds]
            per_row["teacher_t1_zero_shot"] = [{"teacher": t} for t in t1]
        with _requested_by("Table 6 teacher_t2_adapted"):
            t2 = [stages.teacher_adaptation(cfg, seed=seed) for seed in cfg.seeds]
            per_row["teacher_t2_adapted"] = [{"teacher": t} for t in t2]
        with _requested_by("Table 6 student_under_t1"):
            per_row["student_under_t1"] = [{"teacher": t, **stages.student_under(cfg, t, seed, refine=False)}
                                           for t, seed in zip(t1, cfg.seeds, strict=True)]
        with _requested_by("Table 6 student_under_t2"):
            per_row["student_under_t2"] = [{"teacher": t, **stages.student_under(cfg, t, seed, refine=False)}
                                           for t, seed in zip(t2, cfg.seeds, strict=True)]
        for variant, pipelines in per_row.items():
            measured = [p.get("student", p["teacher"]) for p in pipelines]  # teacher rows: the teacher itself
            cells = {"AP": _Cell([_metric(r) for r in measured]), "AP50": _Cell([_metric(r, "ap50") for r in measured])}
            values = paper.TABLE6_TEACHER_CHOICE[variant]
            runs = list(dict.fromkeys(run for p in pipelines for run in p.values()))
            every += runs
            rows.append(_row(variant, cells, {"AP": values["ap"], "AP50": values["ap50"]}, runs))
    notes = ["T1: the teacher before adaptation (theta_T^0; paper: pretrained Grounding DINO + SAM2 zero-shot). "
             "T2: the CAST-adapted teacher theta_T''. Student rows: pseudo-labels from that teacher, knowledge "
             "transfer, refinement.", STUDENT_NOTE, DISCREPANCY_NOTE, STD_NOTE]
    return _table(rows, cfg, 6, "Supplementary Table 6: teacher choice (maskAP)", notes, started, every)


def table7(cfg: Config, train: bool = True) -> pd.DataFrame:
    """Supplementary Table 7 and E.4: negatives sampled in the batch vs from a memory bank."""
    notes = [f"memory_bank: past (z, y) pixel pairs, {cfg.loss.contrastive.bank_size} entries "
             "(loss.contrastive.bank_size; the paper: 10k).",
             "train time ratio: the knowledge-transfer run's training time (logged step time x iterations) over "
             "the in-batch run's, per seed; the paper's 2.2x is supplementary E.4."]
    return _student_variants(cfg, 7, "scope", paper.TABLE7_SAMPLING_SCOPE, train,
                             "Supplementary Table 7: negative sampling scope (student maskAP)", notes,
                             time_ratio=("memory_bank", paper.TRAINING_TIME_RATIO["memory_bank_vs_batch"]))


def table8(cfg: Config, train: bool = True) -> pd.DataFrame:
    """Supplementary Table 8: CAST (DINOv2-S student) vs Guided Distillation (ResNet-50, DINOv2-B, DINOv2-L) at
    the Cityscapes label fractions ``data.label_fractions``."""
    if cfg.data.dataset != "cityscapes":
        raise ConfigError(None, "data.dataset", "Table 8 varies the Cityscapes label fraction; use cityscapes")
    started, rows, every = time.perf_counter(), [], []
    fractions = list(cfg.data.label_fractions)
    columns = {f: f"{round(f * 100)}% labels" for f in fractions}
    methods = {"cast_dinov2_s": None, **{f"gd_{b}": b for b in GD_BACKBONES}}
    with _building(train):
        for method, backbone in methods.items():
            cells, runs = {}, []
            for f in fractions:
                with _requested_by(f"Table 8 {method} {columns[f]}"):
                    if backbone is None:
                        found = [stages.cast(with_label_fraction(cfg, f), seed)["refined"] for seed in cfg.seeds]
                    else:
                        found = [guided_distillation(cfg, backbone, f, seed) for seed in cfg.seeds]
                cells[columns[f]] = _Cell([_metric(r) for r in found])
                runs += [r for r in found if r is not None]
            paper_values = {columns[f]: paper.TABLE8_BACKBONES.get(f, {}).get(method, "-") for f in fractions}
            every += runs
            rows.append(_row(method, cells, paper_values, runs))
    notes = ["Cells: maskAP. CAST: the refined student theta_s+ with the DINOv2-S encoder, trained at that labelled "
             "fraction (data.label_fraction); Guided Distillation: the kit's baseline (castlib.baselines) with that "
             "backbone at that fraction.",
             STUDENT_NOTE, DISCREPANCY_NOTE, STD_NOTE]
    return _table(rows, cfg, 8, "Supplementary Table 8: backbones and label fractions (maskAP)", notes, started,
                  every)


TABLES: dict[int, Callable[..., pd.DataFrame]] = {3: table3, 4: table4, 5: table5, 6: table6, 7: table7, 8: table8}


def table_config(cfg: Config, number: int) -> Config:
    """``cfg`` with Table ``number``'s seeds: ``table_seeds.<number>`` where the profile sets it (a compute budget's
    choice, e.g. mini: one seed for Tables 4, 5 and 8), otherwise ``seeds``."""
    chosen = {}
    for key, seeds in cfg.table_seeds.items():
        if str(key) not in {str(n) for n in TABLES}:
            raise ConfigError(None, f"table_seeds.{key}", f"not a table number (tables are {sorted(TABLES)})")
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                                for s in seeds):
            raise ConfigError(None, f"table_seeds.{key}", f"expected a non-empty list of integer seeds, got {seeds!r}")
        chosen[int(key)] = seeds
    if number not in chosen or list(chosen[number]) == list(cfg.seeds):
        return cfg
    out = copy.deepcopy(cfg)
    out.seeds = list(chosen[number])
    return out


def build_table(cfg: Config, number: int, train: bool = True) -> pd.DataFrame:
    """Supplementary Table ``number`` (3-8), over the seeds :func:`table_config` gives it."""
    if number not in TABLES:
        raise ConfigError(None, "table", f"no builder for Table {number}; tables are {sorted(TABLES)}")
    return TABLES[number](table_config(cfg, number), train=train)


# ---------------------------------------------------------------------------------------------------------------
# Training the tables' runs with several processes (``python -m castlib table 3 6 7 --jobs 2``).

def _one_seed(cfg: Config, seed: int) -> Config:
    out = copy.deepcopy(cfg)
    out.seeds = [seed]
    return out


def table_units(cfg: Config, numbers: Sequence[int]) -> list[tuple[int, int]]:
    """The (table, seed) pairs whose runs make Tables ``numbers``, seed by seed (each table over the seeds
    :func:`table_config` gives it)."""
    seeds = {number: table_config(cfg, number).seeds for number in numbers}
    return [(number, seed) for seed in sorted({s for chosen in seeds.values() for s in chosen})
            for number in numbers if seed in seeds[number]]


def missing_runs(cfg: Config, number: int, seed: int) -> set[str]:
    """Ids of the runs Table ``number`` still needs for ``seed`` (planning mode: nothing is trained)."""
    with planning() as plan:
        build_table(_one_seed(cfg, seed), number, train=False)
    return {run_id for run_id, planned in plan.runs.items() if not planned.complete}


def _train_unit(cfg: Config, number: int, seed: int, threads: int) -> tuple[int, int]:
    """A worker process: train what Table ``number`` needs for ``seed`` with ``threads`` CPU threads."""
    import torch

    torch.set_num_threads(threads)
    try:
        build_table(_one_seed(cfg, seed), number, train=True)
    except CastError as e:  # its subclasses' own arguments do not survive the pickling back to the parent
        raise CastError(f"{e} (Table {number}, seed {seed})") from None
    return number, seed


def _init_worker(parent_pid: int, gpus, poll_s: float = 1.0) -> None:
    """A worker's initializer: take a GPU of its own from the queue ``gpus`` (``CUDA_VISIBLE_DEVICES``, set
    before torch touches CUDA; None on the CPU), and end the worker when its parent is gone. A parent killed by
    SIGTERM or SIGKILL (``kill``, ``timeout``, a scheduler) runs no clean-up, and its spawned workers would keep
    training their (table, seed) pair to the end, unseen; this watches the parent from a daemon thread and ends
    the worker within ``poll_s``. The run it was training resumes from its last checkpoint, its lock gone with it."""
    import threading

    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get()

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (empty without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()][:torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_gpus(cfg: Config, jobs: int) -> list[str] | None:
    """One GPU per worker when the config trains on CUDA (``device`` cuda, or auto with CUDA present), else None
    (the CPU: the workers share its threads). More workers than visible GPUs is an error."""
    device = str(cfg.device)
    gpus = visible_gpus() if device in ("auto", "cuda") or device.startswith("cuda") else []
    if not gpus:
        return None
    if jobs > len(gpus):
        raise CastError(f"--jobs {jobs}: only {len(gpus)} GPU(s) are visible ({', '.join(gpus)}); each worker "
                        f"trains on a GPU of its own, so give at most --jobs {len(gpus)}, or train one run on "
                        "several GPUs with torchrun (README)")
    return gpus[:jobs]


def worker_pool(jobs: int, gpus: Sequence[str] | None = None):
    """``jobs`` spawned worker processes, each on its own GPU of ``gpus`` (None: the CPU), that end with the
    process that made them (:func:`_init_worker`)."""
    import concurrent.futures as cf
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = None
    if gpus is not None:
        queue = context.Queue()
        for gpu in gpus:
            queue.put(gpu)
    return cf.ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(os.getpid(), queue))


def train_tables(cfg: Config, numbers: Sequence[int], jobs: int) -> None:
    """Train every run Tables ``numbers`` need with ``jobs`` worker processes, each on a GPU of its own
    (:func:`worker_gpus`) or, on the CPU, given an equal share of its threads. A worker takes one (table, seed)
    pair (:func:`table_units`) at a time, and only a pair none of whose missing runs another worker is training,
    so no worker waits on another's run; the registry's locks
    (:func:`castlib.engine.runs.claim`) keep a run from being trained twice all the same. A worker's error
    ends the command once the other workers' current pairs finish (their runs are kept); the command killed, its
    workers end with it (:func:`worker_pool`) and a rerun resumes their runs."""
    import concurrent.futures as cf

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CastError(f"--jobs {jobs} under torchrun: give the GPUs either to the runs (torchrun, --jobs 1) or to "
                        "the workers (--jobs J without torchrun), not both")
    gpus = worker_gpus(cfg, jobs)
    stages.check_data(cfg, "knowledge_transfer")  # the data ready before planning reads its digests
    pending, running = table_units(cfg, numbers), {}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with worker_pool(jobs, gpus) as pool:
        while pending or running:
            busy = set().union(*running.values())
            for unit in list(pending):
                if len(running) >= jobs:
                    break
                needs = missing_runs(cfg, *unit)
                if not needs:
                    pending.remove(unit)
                elif not needs & busy:
                    pending.remove(unit)
                    busy |= needs
                    print(f"Table {unit[0]} seed {unit[1]}: training {len(needs)} runs", flush=True)
                    running[pool.submit(_train_unit, cfg, *unit, threads)] = needs
            if running:
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    del running[future]
                    number, seed = future.result()
                    print(f"Table {number} seed {seed}: its runs are complete", flush=True)

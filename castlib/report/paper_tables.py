"""The paper's tables as DataFrames: supplementary Tables 3-8 (:data:`TABLES`, numbered by
:data:`castlib.paper.REPRODUCED_TABLES`) and main Table 3, built from the runs of :mod:`castlib.engine.stages`.

Each builder asks the stages for the runs its rows need, once per seed of ``cfg.seeds`` (the registry trains
only what is missing, so the CAST teacher and student are trained once and shared by Tables 3-8), reads each
run's validation metrics (``metrics.json``, written when the run finished) and returns one row per variant:
per cell the reproduced mean +- std over the seeds that have the run (sample std) and that cell's own seed count,
the paper's value beside it (from :mod:`castlib.paper`), and, hidden from the markdown, the per-seed values (for
:mod:`castlib.report.orderings`) and the ids of every run the row depends on, stand-ins included.

Which student: Tables 4, 5, 6 and 7 report the distilled student theta_s* (knowledge transfer), as the paper's
32.2 (main Tables 1, 2 and 4 say so); Tables 3 and 8 the refined theta_s+, as the paper's 33.9. Tables 4-7 train
no refinement.

``train=False`` builds a table from the runs that exist, training nothing (the stages run in planning mode,
:mod:`castlib.engine.plan`): a cell whose runs are missing reads "not run". Pointed at a table's committed
records (``runs_dir`` = ``results/<profile>/records``), that rebuilds the table from them alone.

The table's caption, notes and provenance (the data; each run's stage, seed, commit, machine and torch) travel in
``table.attrs``; :func:`castlib.report.tables.write_table` writes them into ``tableN.{csv,md}``, a function of the
runs alone (no build time, no builder's commit), so the same runs give the same bytes. Training the tables' runs
with several worker processes: :mod:`castlib.report.jobs`.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd

from castlib import paper
from castlib.baselines.guided_distillation import guided_distillation
from castlib.config import Config
from castlib.data.loaders import SMOKE_AP_NOTE, describe_data
from castlib.engine import stages
from castlib.engine.logs import training_seconds
from castlib.engine.plan import current_plan, planning
from castlib.engine.runs import Run, lineage, runs_dir
from castlib.errors import ConfigError

NOT_RUN = "not run"
GD_BACKBONES = ("resnet50", "dinov2_b", "dinov2_l")  # supplementary Table 8

# Which student a table reports, and why (the paper's own tables say it; shared/paper/spec.md section 11).
DISTILLED_NOTE = ("Student AP is the distilled student theta_s* (after knowledge transfer, before refinement), as "
                  "the paper's: its 32.2 / 56.5 is main Table 1 \"CAST (knowledge transfer)\", main Table 2's "
                  "student column \"before refinement\", main Table 4's \"student after distillation\"; Table 6's "
                  "student under T1, 23.8, is main Table 3 \"Distillation only\".")
REFINED_NOTE = ("Student AP is the refined student theta_s+ (knowledge transfer, then refinement on the labels), "
                "as the paper's 33.9: main Table 1 \"CAST (student refinement)\", main Table 3 \"Full pipeline\".")
SHARED_TEACHER_NOTE = ("The rows vary the student's L_pxl (train.student.contrastive) and reuse the CAST "
                       "teacher; the paper reports them as student maskAP.")
STD_NOTE = ("Reproduced cells: mean +- sample std over the seeds that have the run, n = that cell's own seed count; "
            "'orderings.md' beside the tables reads which of the paper's orderings the runs show.")
SMOKE_NOTE = f"Smoke profile: {SMOKE_AP_NOTE}; mini and paper train long enough to learn."


def data_notes(cfg: Config) -> list[str]:
    """What the numbers were measured on, for every table and figure: the data (synthetic or a real root) against
    the paper's real data, and on smoke that AP is 0 by design."""
    synthetic = cfg.data.source != "real"
    line = (f"Data: {describe_data(cfg)}" + (f", written in the {cfg.data.dataset} on-disk format: not the real "
                                              f"{cfg.data.dataset}; the paper columns are the paper's real-data "
                                              "numbers, for orientation only." if synthetic else "."))
    return [line, *([SMOKE_NOTE] if cfg.profile == "smoke" else [])]


def orderings_header(cfg: Config) -> list[str]:
    """The lines that open ``orderings.md``: the profile and :func:`data_notes`."""
    first, *rest = data_notes(cfg)
    return [f"Profile {cfg.profile}. {first}", *rest]


# ---------------------------------------------------------------------------------------------------------------
# Building blocks.


def with_student_contrastive(cfg: Config, key: str, value: Any) -> Config:
    """``cfg`` with the student's L_pxl option ``key`` set to ``value`` (Tables 4, 5, 7). Where the value is
    already in effect, ``cfg`` itself comes back, so the default row is the CAST run and shares its id."""
    effective = {**cfg.loss.contrastive, **cfg.train.student.contrastive}
    if effective[key] == value:
        return cfg
    return cfg.with_changes({f"train.student.contrastive.{key}": value})


def with_label_fraction(cfg: Config, fraction: float) -> Config:
    """``cfg`` training on the Cityscapes labelled fraction ``fraction`` (Table 8)."""
    if cfg.data.label_fraction == fraction:
        return cfg
    return cfg.with_changes({"data.label_fraction": fraction})


def teacher_init_is_fixed(cfg: Config) -> bool:
    """Whether theta_T^0's weights are the same for every seed (hub weights, or the one source stand-in): then its
    evaluation (Table 6's T1) is one measurement, shown once, not a mean over seeds."""
    return bool(cfg.model.pretrained or cfg.model.stand_in)


class Cell:
    """One reproduced cell: a value per seed (``None`` where the run is missing). A ``fixed`` cell holds one
    measurement that does not depend on the seed (Table 6's T1): it counts once, and pairs with every seed of
    another cell (:func:`castlib.report.orderings.orderings`)."""

    def __init__(self, values: Mapping[int, float | None], fixed: bool = False,
                 sources: Mapping[int, str] | None = None):
        self.values = dict(values)
        self.fixed = fixed
        self.sources = dict(sources or {})  # seed -> "<run id>:<metric key>" the value was read from

    @property
    def by_seed(self) -> dict[int, float]:
        return {seed: v for seed, v in self.values.items() if v is not None}

    @property
    def n(self) -> int:
        return len(self.by_seed)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.by_seed.values()) if self.n else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.by_seed.values()) if self.n > 1 else math.nan

    def seeds_json(self) -> str:
        """The per-seed values as JSON (``{"*": v}`` for a fixed cell), kept in the csv for the orderings."""
        values = {"*" if self.fixed else str(s): v for s, v in self.by_seed.items()}
        return json.dumps({k: round(v, 6) for k, v in values.items()}, sort_keys=True)

    def sources_json(self) -> str:
        """Which run's ``metrics.json`` key each seed's value is (``{}`` for derived cells: ratios, deltas)."""
        return json.dumps({"*" if self.fixed else str(s): src for s, src in self.sources.items()
                           if self.values.get(s) is not None}, sort_keys=True)

    def text(self, missing: str = NOT_RUN) -> str:
        if not self.n:
            return missing
        spread = f" ± {self.std:.2f}" if self.n > 1 else ""
        return f"{self.mean:.2f}{spread} (n={self.n}{', one evaluation' if self.fixed else ''})"


def _cell(runs: Sequence[Run | None], seeds: Sequence[int], key: str = "ap", fixed: bool = False) -> Cell:
    """The cell of ``key`` over the runs of ``seeds`` (a fixed cell: the first seed's run alone)."""
    if fixed:
        runs, seeds = runs[:1], seeds[:1]
    return Cell({seed: _metric(run, key) for seed, run in zip(seeds, runs, strict=True)}, fixed,
                {seed: f"{run.id}:{key}" for seed, run in zip(seeds, runs, strict=True) if run is not None})


def _metric(run: Run | None, key: str = "ap") -> float | None:
    return float(run.metrics[key]) if run is not None and run.complete else None


def _ratio(numerators: Sequence[float | None], denominators: Sequence[float | None], seeds: Sequence[int]) -> Cell:
    return Cell({s: n / d if n is not None and d else None
                 for s, n, d in zip(seeds, numerators, denominators, strict=True)})


def _row(variant: str, cells: Mapping[str, Cell], paper_values: Mapping[str, Any], runs: Sequence[Run],
         missing: Mapping[str, str] | None = None) -> dict:
    """One table row: per metric the display cell and the paper's value; then, hidden from the markdown, each
    cell's mean, std, seed count, per-seed values and the run each was read from, and every run the row depends
    on (:func:`lineage`)."""
    missing = missing or {}
    row: dict[str, Any] = {"variant": variant}
    for name, cell in cells.items():
        row[name] = cell.text(missing.get(name, NOT_RUN))
        row[f"paper {name}"] = paper_values.get(name, "-")
    for name, cell in cells.items():
        row[f"{name} mean"], row[f"{name} std"] = cell.mean, cell.std
        row[f"{name} n"], row[f"{name} seeds"] = cell.n, cell.seeds_json()
        row[f"{name} from"] = cell.sources_json()
    row["runs"] = " ".join(r.id for r in lineage([r for r in runs if r is not None]) if r.complete)
    return row


HIDDEN_SUFFIXES = (" mean", " std", " n", " seeds", " from")


def _building(train: bool) -> contextlib.AbstractContextManager:
    """Train what is missing (``train``) or only look the runs up (planning mode)."""
    return contextlib.nullcontext() if train else planning()


@contextlib.contextmanager
def _requested_by(label: str) -> Iterator[None]:
    """Attribute the runs asked for in the block to ``label`` when a plan is being recorded."""
    plan = current_plan()
    with plan.requested_by(label) if plan is not None else contextlib.nullcontext():
        yield


def run_facts(run: Run) -> dict[str, Any]:
    """What a table says of each run behind it: stage, seed, commit, machine, torch."""
    info = run.info
    return {"stage": info["stage"], "seed": info["seed"], "commit": info.get("commit", "unknown"),
            "machine": info.get("hardware", "unknown"), "torch": info.get("torch", "not recorded")}


def _table(rows: list[dict], cfg: Config, number: int | str, caption: str, notes: Sequence[str],
           runs: Sequence[Run]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    behind = [r for r in lineage([r for r in runs if r is not None]) if r.complete]
    table.attrs.update({
        "number": number, "caption": caption, "notes": [*notes, *data_notes(cfg)], "profile": cfg.profile,
        "dataset": cfg.data.dataset, "data": describe_data(cfg), "seeds": list(cfg.seeds),
        "runs_behind": {r.id: run_facts(r) for r in sorted(behind, key=lambda r: r.id)},
        "runs_folder": str(runs_dir(cfg)),
        "display_columns": [c for c in table.columns if not c.endswith(HIDDEN_SUFFIXES) and c != "runs"],
    })
    return table


def _student_variants(cfg: Config, number: int, key: str, variants: Mapping[str, Mapping[str, float]],
                      train: bool, caption: str, notes: Sequence[str],
                      time_ratio: tuple[str, float] | None = None) -> pd.DataFrame:
    """Tables 4, 5, 7: the CAST pipeline with the student's L_pxl option ``key`` set per row, read at the
    distilled student theta_s* (no refinement is trained for them)."""
    rows, every, seeds = [], [], list(cfg.seeds)
    with _building(train):
        per_variant = {}
        for variant in variants:
            variant_cfg = with_student_contrastive(cfg, key, variant)
            with _requested_by(f"Table {number} {variant}"):
                per_variant[variant] = [stages.cast(variant_cfg, seed, refine=False) for seed in seeds]
        reference = [training_seconds(r["student"]) for r in per_variant[next(iter(variants))]]
        for variant, pipelines in per_variant.items():
            students = [p["student"] for p in pipelines]
            cells = {"AP": _cell(students, seeds), "AP50": _cell(students, seeds, "ap50")}
            paper_values = {"AP": variants[variant]["ap"], "AP50": variants[variant]["ap50"]}
            if time_ratio is not None:
                cells["train time ratio"] = _ratio([training_seconds(s) for s in students], reference, seeds)
                paper_values["train time ratio"] = time_ratio[1] if variant == time_ratio[0] else 1.0
            every += students
            rows.append(_row(variant, cells, paper_values, students))
    return _table(rows, cfg, number, caption, [*notes, SHARED_TEACHER_NOTE, DISTILLED_NOTE, STD_NOTE], every)


# ---------------------------------------------------------------------------------------------------------------
# The tables.

def table3(cfg: Config, train: bool = True) -> pd.DataFrame:
    """Supplementary Table 3: teacher adaptation. Teacher AP and refined-student AP per teacher variant, and "delta
    vs SOTA" = student AP minus the kit's own Guided Distillation (ResNet-50, ``data.label_fraction``) AP."""
    rows, every, seeds = [], [], list(cfg.seeds)
    with _building(train):
        with _requested_by("Table 3 guided_distillation_resnet50"):
            baseline = [guided_distillation(cfg, "resnet50", cfg.data.label_fraction, seed) for seed in seeds]
        for variant in stages.TEACHER_VARIANTS:
            with _requested_by(f"Table 3 {variant}"):
                pipelines = [stages.cast(cfg, seed, variant) for seed in seeds]
            student = _cell([p["refined"] for p in pipelines], seeds)
            sota = _cell(baseline, seeds)
            cells = {"teacher AP": _cell([p["teacher"] for p in pipelines], seeds), "student AP": student,
                     "delta vs SOTA": Cell({s: v - sota.values[s] if v is not None and sota.values[s] is not None
                                            else None for s, v in student.values.items()})}
            values = paper.TABLE3_TEACHER_ADAPTATION[variant]
            paper_values = {"teacher AP": values["teacher_ap"], "student AP": values["student_ap"],
                            "delta vs SOTA": values["delta_vs_sota"]}
            runs = [p["refined"] for p in pipelines] + [p["teacher"] for p in pipelines] + list(baseline)
            every += runs
            rows.append(_row(variant, cells, paper_values, runs))
    notes = ["finetune_only: step A without L_pxl; self_training: steps A and B without L_pxl; "
             "self_training_contrastive: CAST (A and B with L_pxl).",
             "delta vs SOTA: student AP minus the kit's Guided Distillation (ResNet-50) at the same label fraction "
             "and seed (the paper's SOTA 30.8 is that cell of Table 8).",
             REFINED_NOTE + " Table 3's CAST row prints 33.9, the final model.", STD_NOTE]
    return _table(rows, cfg, 3, "Supplementary Table 3: teacher adaptation (maskAP; student: refined theta_s+)",
                  notes, every)


def table4(cfg: Config, train: bool = True) -> pd.DataFrame:
    """Supplementary Table 4 and E.2: asymmetric InfoNCE vs margin hinge (m = ``loss.contrastive.margin``)."""
    margin = {**cfg.loss.contrastive, **cfg.train.student.contrastive}["margin"]
    notes = [f"hinge: max(0, m - (s+ - s-)) with m = {margin} (the paper's row says m = 0.1, its caption 0.2).",
             "train time ratio: the knowledge-transfer run's training time (logged step time x iterations) over "
             "InfoNCE's, per seed; the paper's 1.6x is supplementary E.2."]
    return _student_variants(cfg, 4, "loss", paper.TABLE4_LOSS_VARIANT, train,
                             "Supplementary Table 4: contrastive loss variant (distilled student theta_s*, maskAP)",
                             notes, time_ratio=("hinge", paper.TRAINING_TIME_RATIO["hinge_vs_infonce"]))


def table5(cfg: Config, train: bool = True) -> pd.DataFrame:
    """Supplementary Table 5: the debias score of the negative sampler, s_deb / s_deb^2 / sqrt(s_deb)."""
    notes = ["original: s_deb; squared: s_deb^2; sqrt: sqrt(s_deb) (supplementary C)."]
    return _student_variants(cfg, 5, "score", paper.TABLE5_DEBIAS_SCORE, train,
                             "Supplementary Table 5: debias score formulation (distilled student theta_s*, maskAP)",
                             notes)


def table6(cfg: Config, train: bool = True) -> pd.DataFrame:
    """Supplementary Table 6: teacher choice. T1 = the zero-shot teacher theta_T^0, T2 = the adapted CAST teacher;
    AP and AP50 of each teacher and of the distilled student theta_s* under each."""
    rows, every, seeds = [], [], list(cfg.seeds)
    fixed = teacher_init_is_fixed(cfg)
    with _building(train):
        with _requested_by("Table 6 teacher_t1_zero_shot"):
            t1 = [stages.teacher_init(cfg, seed) for seed in seeds]
        with _requested_by("Table 6 teacher_t2_adapted"):
            t2 = [stages.teacher_adaptation(cfg, seed=seed) for seed in seeds]
        with _requested_by("Table 6 student_under_t1"):
            under_t1 = [stages.student_under(cfg, t, seed, refine=False)["student"]
                        for t, seed in zip(t1, seeds, strict=True)]
        with _requested_by("Table 6 student_under_t2"):
            under_t2 = [stages.student_under(cfg, t, seed, refine=False)["student"]
                        for t, seed in zip(t2, seeds, strict=True)]
        measured = {"teacher_t1_zero_shot": (t1, fixed), "teacher_t2_adapted": (t2, False),
                    "student_under_t1": (under_t1, False), "student_under_t2": (under_t2, False)}
        for variant, (found, one) in measured.items():
            cells = {"AP": _cell(found, seeds, fixed=one), "AP50": _cell(found, seeds, "ap50", fixed=one)}
            values = paper.TABLE6_TEACHER_CHOICE[variant]
            runs = found[:1] if one else found
            every += runs
            rows.append(_row(variant, cells, {"AP": values["ap"], "AP50": values["ap50"]}, runs))
    notes = ["T1: the teacher before adaptation (theta_T^0; paper: pretrained Grounding DINO + SAM2 zero-shot). "
             "T2: the CAST-adapted teacher theta_T''. Student rows: pseudo-labels from that teacher, then knowledge "
             "transfer.",
             *(["T1's weights do not depend on the seed (hub weights or the one source stand-in): its evaluation is "
                "one measurement, shown once (n=1, one evaluation), and the orderings pair it with every seed."]
               if fixed else []),
             DISTILLED_NOTE, STD_NOTE]
    return _table(rows, cfg, 6, "Supplementary Table 6: teacher choice (maskAP; students: distilled theta_s*)",
                  notes, every)


def table7(cfg: Config, train: bool = True) -> pd.DataFrame:
    """Supplementary Table 7 and E.4: negatives sampled in the batch vs from a memory bank."""
    notes = [f"memory_bank: past (z, y) pixel pairs, {cfg.loss.contrastive.bank_size} entries "
             "(loss.contrastive.bank_size; the paper: 10k).",
             "train time ratio: the knowledge-transfer run's training time (logged step time x iterations) over "
             "the in-batch run's, per seed; the paper's 2.2x is supplementary E.4."]
    return _student_variants(cfg, 7, "scope", paper.TABLE7_SAMPLING_SCOPE, train,
                             "Supplementary Table 7: negative sampling scope (distilled student theta_s*, maskAP)",
                             notes, time_ratio=("memory_bank", paper.TRAINING_TIME_RATIO["memory_bank_vs_batch"]))


def table8(cfg: Config, train: bool = True) -> pd.DataFrame:
    """Supplementary Table 8: CAST (DINOv2-S student) vs Guided Distillation (ResNet-50, DINOv2-B, DINOv2-L) at
    the Cityscapes label fractions ``data.label_fractions``."""
    if cfg.data.dataset != "cityscapes":
        raise ConfigError(None, "data.dataset", "Table 8 varies the Cityscapes label fraction; use cityscapes")
    rows, every, seeds = [], [], list(cfg.seeds)
    fractions = list(cfg.data.label_fractions)
    columns = {f: f"{round(f * 100)}% labels" for f in fractions}
    methods = {"cast_dinov2_s": None, **{f"gd_{b}": b for b in GD_BACKBONES}}
    with _building(train):
        for method, backbone in methods.items():
            cells, runs = {}, []
            for f in fractions:
                with _requested_by(f"Table 8 {method} {columns[f]}"):
                    if backbone is None:
                        found = [stages.cast(with_label_fraction(cfg, f), seed)["refined"] for seed in seeds]
                    else:
                        found = [guided_distillation(cfg, backbone, f, seed) for seed in seeds]
                cells[columns[f]] = _cell(found, seeds)
                runs += found
            paper_values = {columns[f]: paper.TABLE8_BACKBONES.get(f, {}).get(method, "-") for f in fractions}
            every += runs
            rows.append(_row(method, cells, paper_values, runs))
    notes = ["Cells: maskAP. CAST: the refined student theta_s+ with the DINOv2-S encoder, trained at that labelled "
             "fraction (data.label_fraction); Guided Distillation: the kit's baseline (castlib.baselines) with that "
             "backbone at that fraction.",
             REFINED_NOTE + " Table 8's CAST row at 10 % prints 33.9, the final model.", STD_NOTE]
    return _table(rows, cfg, 8, "Supplementary Table 8: backbones and label fractions (maskAP; CAST: refined "
                  "theta_s+)", notes, every)


def main_table3(cfg: Config, train: bool = True) -> pd.DataFrame:
    """Main Table 3 (training stages, spec section 11) from the stages' runs: the full pipeline (theta_s+ under the
    adapted teacher T2), no student FT (theta_s* under T2), no teacher adaptation (theta_s+ under the zero-shot T1),
    distillation only (theta_s* under T1) and no distillation (the supervised-only student, main Table 2's (a)
    student as well)."""
    rows, every, seeds = [], [], list(cfg.seeds)
    with _building(train):
        with _requested_by("main Table 3"):
            under = {"t2": [stages.cast(cfg, seed) for seed in seeds],
                     "t1": [stages.student_under(cfg, stages.teacher_init(cfg, seed), seed) for seed in seeds]}
            supervised = [stages.supervised_student(cfg, seed) for seed in seeds]
        measured = {"full_pipeline": [p["refined"] for p in under["t2"]],
                    "no_student_ft": [p["student"] for p in under["t2"]],
                    "no_teacher_adapt": [p["refined"] for p in under["t1"]],
                    "distillation_only": [p["student"] for p in under["t1"]],
                    "no_distill_sup": supervised}
        for variant, found in measured.items():
            cells = {"AP": _cell(found, seeds), "AP50": _cell(found, seeds, "ap50")}
            every += found
            rows.append(_row(variant, cells, {"AP": paper.MAIN_TABLE3_STAGES[variant]}, found))
    notes = ["full_pipeline: refined theta_s+ under the adapted teacher T2 (= Table 3's CAST student); no_student_ft: "
             "distilled theta_s* under T2 (= Table 6's student under T2, main Table 2's (d) student); "
             "no_teacher_adapt: theta_s+ under the zero-shot teacher T1; distillation_only: theta_s* under T1 (= "
             "Table 6's student under T1); no_distill_sup: the supervised-only student, L_sup on D_l for the CAST "
             "student's whole length (main Table 2's (a) student, 21.1).", STD_NOTE]
    return _table(rows, cfg, "main_table3",
                  "Main Table 3: training stages (maskAP; each row's student stage in the notes)", notes, every)


# The builder of each supplementary table the kit reproduces, in the order of castlib.paper.REPRODUCED_TABLES (the
# table numbers, typed there once).
BUILDERS = (table3, table4, table5, table6, table7, table8)
TABLES: dict[int, Callable[..., pd.DataFrame]] = dict(zip(paper.REPRODUCED_TABLES, BUILDERS, strict=True))


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
    return cfg.with_changes({"seeds": list(chosen[number])})


def build_table(cfg: Config, number: int, train: bool = True) -> pd.DataFrame:
    """Supplementary Table ``number`` (3-8), over the seeds :func:`table_config` gives it."""
    if number not in TABLES:
        raise ConfigError(None, "table", f"no builder for Table {number}; tables are {sorted(TABLES)}")
    return TABLES[number](table_config(cfg, number), train=train)

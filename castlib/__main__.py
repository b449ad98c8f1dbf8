"""Command line: ``python -m castlib <command> ...`` (``--help`` on each command)."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from castlib import paper
from castlib.errors import CastError
from castlib.paper import DATASET_NAMES

# Commands that read the dataset: a real source without a root stops them before anything else (a plan needs no
# data, and doctor reports it among its findings).
DATA_COMMANDS = ("split", "prepare", "train", "table", "ceiling", "pseudo-quality")
TRAINING_COMMANDS = ("train", "table")  # commands that train runs: they name the runs trained and reused
TABLES = paper.REPRODUCED_TABLES  # the supplementary tables the commands build, plan and check
TABLES_SPAN = f"{TABLES[0]}-{TABLES[-1]}"  # "3-8", for the help lines


def finite_float(text: str) -> float:
    """An argparse type: a finite number (``inf`` and ``nan`` are refused with the argument's name)."""
    import math

    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


DEVICE_HELP = "overrides device: auto | cpu | cuda (on paper no CUDA is an error; --device cpu: the CPU on purpose)"


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--profile``, ``--dataset``, ``--data-root``, ``--device`` and repeated ``--set key=value``."""
    parser.add_argument("--profile", "--config", "-p", default="smoke", help="smoke | mini | paper, or a YAML file")
    parser.add_argument("--dataset", choices=DATASET_NAMES, help="overrides data.dataset")
    parser.add_argument("--data-root", help="a real dataset root (overrides data.root; implies data.source=real)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set train.teacher.lr=1e-4 (repeatable)")


def config_from_args(args: argparse.Namespace):
    """The config of ``--profile`` with ``--set`` overrides; ``--dataset``, ``--device`` and ``--data-root`` are
    taken verbatim (a root named ``null`` or holding ``#`` is that folder). A command of :data:`DATA_COMMANDS`
    on real data without a root stops here (naming data.root); a paper profile on the synthetic set prints a
    warning line. Made once per parsed command line (:func:`main` makes it before the command imports torch)."""
    from castlib.config import check_data_source, load_config, parse_override

    if getattr(args, "_config", None) is not None:
        return args._config
    overrides = dict(map(parse_override, args.overrides))
    if args.dataset:
        overrides["data.dataset"] = args.dataset
    if args.data_root:
        overrides["data.root"] = args.data_root
    if args.device:
        overrides["device"] = args.device
    cfg = load_config(args.profile, overrides)
    if getattr(args, "command", None) in DATA_COMMANDS:
        check_data_source(cfg)
    if cfg.data.source == "synthetic":  # loaders import torch: only then
        from castlib.data.loaders import synthetic_warning

        warning = synthetic_warning(cfg)
        if warning:
            print(warning, file=sys.stderr)
    args._config = cfg
    return cfg


def cmd_synth(args: argparse.Namespace) -> None:
    from castlib.data.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(args.format, args.train, args.val, args.height, args.width, args.seed)
    root = generate(spec, args.out, progress=True)
    print(f"synthetic {args.format} set: {root} ({args.train} train / {args.val} val images)")


def cmd_prepare(args: argparse.Namespace) -> None:
    from castlib.data.loaders import check_dataset, make_splits, prepare_data

    cfg = config_from_args(args)
    print(f"data: {prepare_data(cfg, progress=True)}")
    check_dataset(cfg)
    for path in make_splits(cfg, force=args.force):
        print(f"split: {path} ({len(path.read_text().splitlines())} image ids)")


def cmd_notebooks(args: argparse.Namespace) -> None:
    from castlib.notebooks import check_sources, notebook_sources, run_notebook

    results = Path(args.results)
    executed = Path(args.out) if args.out else results / "notebooks"
    for source in check_sources(args.sources) or notebook_sources():
        print(f"running {source} (profile {args.profile}) ...", flush=True)
        done = run_notebook(source, executed, profile=args.profile, tables=args.tables,
                            tables_dir=str(results / "tables"), figures_dir=str(results / "figures"),
                            data_root=args.data_root or "", overrides=list(args.overrides))
        print(f"  -> {done}")


def train_baseline(cfg, args: argparse.Namespace) -> dict:
    """Guided Distillation's stage-1 teacher and stage-2 student on ``--backbone`` at ``--fraction``."""
    from castlib.baselines.guided_distillation import guided_distillation, guided_distillation_teacher

    backbone = args.backbone or cfg.model.baseline_backbone
    fraction = cfg.data.label_fraction if args.fraction is None else args.fraction
    return {"teacher": guided_distillation_teacher(cfg, backbone, fraction, args.seed),
            "student": guided_distillation(cfg, backbone, fraction, args.seed)}


def cmd_train(args: argparse.Namespace) -> None:
    """Train ``--stage`` and the runs it consumes, nothing after it (``pseudo_labels`` trains no student); complete
    runs are reused. :func:`run_command` then names the runs trained and reused."""
    from castlib.baselines.guided_distillation import guided_distillation
    from castlib.engine.stages import train_to

    cfg = config_from_args(args)
    if args.stage == guided_distillation.__name__:
        runs = train_baseline(cfg, args)
    else:
        runs = train_to(cfg, args.stage, variant=args.variant, seed=args.seed, zero_shot=args.teacher == "zero_shot",
                        contrastive=not args.no_contrastive)
    for name, run in runs.items():
        metrics = run.metrics
        ap = f"AP {metrics['ap']:.2f} AP50 {metrics['ap50']:.2f}" if "ap" in metrics else ""
        print(f"{name}: run {run.id} {run.dir} {ap}")


def cmd_table(args: argparse.Namespace) -> None:
    from pathlib import Path

    from castlib.report.jobs import train_tables
    from castlib.report.orderings import write_orderings
    from castlib.report.paper_tables import build_table, orderings_header
    from castlib.report.tables import publish_table

    cfg = config_from_args(args)
    if args.jobs < 1:
        raise CastError(f"--jobs {args.jobs}: give at least 1 worker process")
    records = Path(args.records or Path(args.out).parent / "records")
    if args.from_records:  # a new reading of the committed runs: their records are the registry, nothing trains
        source = Path(args.from_records).resolve()
        if not source.is_dir():
            raise CastError(f"--from-records {args.from_records}: no such folder (a table's records are "
                            "results/<profile>/records, written beside its tables)")
        cfg.runs_dir = str(source)
        args.no_train = True
    if args.jobs > 1 and not args.no_train:
        train_tables(cfg, args.number, args.jobs)
    main = os.environ.get("RANK", "0") == "0"  # under torchrun every process trains the runs, rank 0 writes
    for number in args.number:
        table = build_table(cfg, number, train=not args.no_train)
        if not main:
            continue
        for path in publish_table(table, args.out, records, export=not args.from_records):
            print(path)
        print(table.attrs["caption"])
        print(table[table.attrs["display_columns"]].to_string(index=False))
    if main:
        written = write_orderings(args.out, orderings_header(cfg))
        if written:
            print(written[1])


def cmd_plan(args: argparse.Namespace) -> None:
    import pandas as pd

    from castlib.engine.runs import runs_dir
    from castlib.report import costs as C

    cfg = config_from_args(args)
    if args.measure_steps < 0 or args.gpus < 1:
        raise CastError("--measure-steps takes N >= 0 and --gpus N >= 1")
    tables = args.tables or C.default_tables(cfg)
    plan = C.plan_tables(cfg, tables)
    measured = C.registry_step_times(runs_dir(cfg), cfg.profile, cfg.data.dataset)
    notes = [f"logged by complete {cfg.profile} {cfg.data.dataset} runs in {runs_dir(cfg)}: "
             f"{', '.join(sorted(measured)) or 'none'}"]
    if args.measure_steps:
        problem = C.measurement_problem(cfg, args.gpu_type)
        if problem:
            notes.append(f"not timed here: {problem}")
        else:
            needed = {planned.timing for planned in plan.runs.values()
                      if not planned.complete and planned.timing not in measured}
            timed = C.measure_step_times(cfg, args.measure_steps, needed)
            measured = timed | measured
            notes.append(f"timed here ({args.measure_steps} steps after 1 untimed, no run written): "
                         f"{', '.join(f'{k} {v:.4g} s' for k, v in sorted(timed.items()))}")
    gpu = C.gpu_type(args.gpu_type or C.local_gpu_type(),
                     C.DEFAULT_UTILISATION if args.utilisation is None else args.utilisation)
    frame = C.cost_frame(plan, C.Costs(gpu, measured))
    with pd.option_context("display.width", 250, "display.max_colwidth", 60, "display.max_rows", None):
        print(frame.drop(columns="needed by").to_string(index=False, float_format=lambda s: f"{s:.4g}"))
        todo = frame[~frame.complete]
        print(f"\ntables {' '.join(map(str, tables))}, profile {cfg.profile}, dataset {cfg.data.dataset}, "
              f"seeds {list(cfg.seeds)}: {len(frame)} runs, {int(frame.shared.sum())} shared by several tables, "
              f"{int(frame.complete.sum())} complete, {len(todo)} to run")
        print(f"\ncost per table (a shared run counts in each table, once in the total; GPU h: one device; "
              f"wall h: GPU h / {args.gpus}, the {args.gpus} GPUs kept busy at linear scaling):")
        print(C.table_costs(frame, args.gpus).to_string(index=False, float_format=lambda s: f"{s:.4g}"))
    print(f"estimated compute: {todo['estimated s'].sum() / 3600:.2f} GPU h of training steps, evaluation and "
          f"pseudo-labelling; disk {frame['disk GB'].sum():.1f} GB when every run is complete")
    print(f"estimated: FLOPs of one training step (forward + backward of the trainable parameters, + L_pxl's strong "
          f"encoder pass; matrix products and convolutions only) or one inference, on {gpu.name} at "
          f"{gpu.utilisation:.0%} of its {gpu.peak_tflops:g} TFLOP/s (bf16 dense); models built with random weights "
          "from the config (--gpu-type, --utilisation)")
    spent = frame["spent s"].sum()
    print(f"compute spent by the {int(frame.complete.sum())} complete runs: {spent / 3600:.2f} h ({spent:.0f} s; "
          "training time, or run time for stages that train nothing)")
    print("measured (s per iteration, per backbone where it varies; teacher_init and pseudo_labels: s per run; "
          "inference: s per image):")
    for note in notes:
        print(f"  {note}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from castlib.config import load_config
    from castlib.engine.lifecycle import evaluate_run, run_config
    from castlib.engine.runs import open_run

    run = open_run(load_config(args.profile, [f"runs_dir={args.runs_dir}"] if args.runs_dir else []), args.run)
    cfg = run_config(run)
    if args.device:
        cfg.device = args.device
    metrics = evaluate_run(run, cfg)
    print(f"run {run.id}: AP {metrics['ap']:.2f} AP50 {metrics['ap50']:.2f} ({metrics['table_metric']}) "
          f"-> {run.dir / 'metrics.json'}")


def cmd_efficiency(args: argparse.Namespace) -> None:
    from castlib.distributed import resolve_device
    from castlib.eval.efficiency import fig2_table, write_fig2_table

    cfg = config_from_args(args)
    table = fig2_table(cfg, args.teacher, args.student, resolve_device(cfg.device))
    for path in write_fig2_table(table, f"{args.out}/efficiency_{cfg.profile}_{cfg.data.dataset}"):
        print(path)
    print(table.set_index("metric").to_string())


def cmd_ceiling(args: argparse.Namespace) -> None:
    from castlib.data.loaders import prepare_data
    from castlib.eval.ceiling import grid_ceiling

    if any(size < 4 for size in args.segmenter_sizes):
        raise CastError(f"--segmenter-sizes: each size must be at least 4 (grid S/4), got {args.segmenter_sizes}")
    cfg = config_from_args(args)
    prepare_data(cfg, progress=True)
    table = grid_ceiling(cfg, tuple(args.segmenter_sizes))
    print(f"mask-grid ceiling, profile {cfg.profile}, {cfg.data.dataset} validation set (a perfect mask after each "
          f"model's mask-logit grid):")
    print(table.round(3).to_string())
    if args.teacher_runs:
        print(f"teacher runs' SAM2 prompted with the ground-truth boxes (a perfect detector), profile {cfg.profile}, "
              f"{cfg.data.dataset} validation set; own_ap: the run's own maskAP (its metrics.json):")
        print(prompted_table(cfg, args.teacher_runs).round(3).to_string())


def cmd_pseudo_quality(args: argparse.Namespace) -> None:
    import pandas as pd

    from castlib.engine.runs import RunError, open_run
    from castlib.eval.pseudo_labels import pseudo_label_quality

    cfg = config_from_args(args)
    rows = {}
    for run_id in args.runs:
        run = open_run(cfg, run_id)
        if run.info.get("stage") != "pseudo_labels":
            raise RunError(run.dir, f"run {run_id} is a {run.info.get('stage')} run, not a pseudo_labels run")
        run.require_complete()
        rows[run_id] = {"teacher": run.info.get("inputs", {}).get("teacher", ""),
                        "threshold": run.metrics.get("threshold", float("nan")),
                        **pseudo_label_quality(cfg, run.pseudo_label_dir)}
    print(f"pseudo-labels against the withheld annotations of D_u, profile {cfg.profile}, {cfg.data.dataset}; "
          f"precision / recall: one-to-one matches of the same class at mask IoU >= 0.5:")
    print(pd.DataFrame.from_dict(rows, orient="index").round(3).to_string())


def prompted_table(cfg, run_ids: list[str]):
    """:func:`castlib.eval.ceiling.prompted_ceiling` of each teacher run, beside the run's own maskAP."""
    import pandas as pd

    from castlib.engine.lifecycle import load_model
    from castlib.engine.runs import open_run
    from castlib.eval.ceiling import prompted_ceiling

    rows = {}
    for run_id in run_ids:
        run = open_run(cfg, run_id)
        row = prompted_ceiling(cfg, load_model(cfg, run, "teacher"))
        own = run.metrics.get("ap", float("nan")) if (run.dir / "metrics.json").is_file() else float("nan")
        rows[f"{run.stage} {run.id}"] = {"own_ap": own, **row}
    table = pd.DataFrame(rows).T
    table["instances"] = table["instances"].astype(int)
    return table


def cmd_doctor(args: argparse.Namespace) -> int:
    from castlib.doctor import diagnose, report

    findings = diagnose(config_from_args(args), args.tables)
    print(report(findings))
    return 1 if any(f.problem for f in findings) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m castlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic set in the Cityscapes or ADE20K format")
    p.add_argument("--format", required=True, choices=DATASET_NAMES)
    p.add_argument("--out", required=True, help="output folder (the dataset root)")
    p.add_argument("--train", type=int, default=40)
    p.add_argument("--val", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=128, help="Cityscapes image height; ADE20K shorter side")
    p.add_argument("--width", type=int, default=256, help="Cityscapes image width (ADE20K: unused)")
    p.set_defaults(func=cmd_synth)

    force_help = "replace split files that exist and differ (default: keep them and stop with an error)"
    p = sub.add_parser("split", help="write the labelled/unlabelled split files of a profile's dataset")
    add_config_arguments(p)
    p.add_argument("--force", action="store_true", help=force_help)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("prepare", help="make a profile's dataset ready: synthetic set (if any), checks, splits")
    add_config_arguments(p)
    p.add_argument("--force", action="store_true", help=force_help)
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("train", help="train a CAST stage (and the runs it consumes); complete runs are reused")
    add_config_arguments(p)
    p.add_argument("--stage", required=True,
                   help="a CAST stage or chain (castlib.engine.stages.TRAIN_TARGETS: teacher_init ... cast, "
                        "supervised_student) or guided_distillation; an unknown one is an error listing them")
    p.add_argument("--backbone", help="baseline stages: a model.backbones entry (default: model.baseline_backbone)")
    p.add_argument("--fraction", type=finite_float, help="baseline stages: one of data.label_fractions "
                                                   "(default: data.label_fraction)")
    p.add_argument("--variant", default=paper.CAST_TEACHER_VARIANT, choices=paper.TEACHER_VARIANTS,
                   help="teacher adaptation variant (supplementary Table 3)")
    p.add_argument("--no-contrastive", action="store_true", help="teacher_finetune without L_pxl")
    p.add_argument("--teacher", choices=["adapted", "zero_shot"], default="adapted",
                   help="student stages: under the adapted teacher (CAST) or the zero-shot theta_T^0 (Table 6, T1)")
    p.add_argument("--seed", type=int, help="overrides the config's seed")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("table", help=f"build supplementary Tables N ({TABLES_SPAN}): train missing runs, write csv "
                                     "and md")
    add_config_arguments(p)
    p.add_argument("number", type=int, nargs="+", choices=TABLES, metavar="N",
                   help=f"{TABLES[0]} ... {TABLES[-1]} (several: in order)")
    p.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="train the missing runs with J worker processes, each with 1/J of the CPU threads (default 1)")
    p.add_argument("--out", default="results/tables", help="folder for tableN.csv and tableN.md")
    p.add_argument("--no-train", action="store_true", help="only read existing runs; missing cells say 'not run'")
    p.add_argument("--records", metavar="DIR",
                   help="where each table's run records go (run.json, config, metrics, timing, log; no weights); "
                        "default: records/ beside --out")
    p.add_argument("--from-records", metavar="DIR",
                   help="rebuild the tables from committed records alone (e.g. results/records), training nothing")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("plan", help=f"the runs Tables {TABLES_SPAN} need, which are shared and complete, estimated "
                                    "compute")
    add_config_arguments(p)
    p.add_argument("--tables", type=int, nargs="+", choices=TABLES, metavar="N",
                   help=f"default: {TABLES_SPAN} (without Table 8 on ADE20K)")
    p.add_argument("--measure-steps", type=int, default=0, metavar="N",
                   help="time N training steps of each stage no complete run has logged (no evaluation, no run "
                        "written; random weights); not on the CPU for the paper profile")
    p.add_argument("--gpus", type=int, default=1, metavar="N", help="GPUs the wall time is divided by (default 1)")
    p.add_argument("--gpu-type", help="the GPU of the FLOPs estimates (default: this machine's CUDA device where "
                                      "known, else A100): A100, H100, H200, L40S, V100")
    p.add_argument("--utilisation", type=finite_float,
                   help="share of the GPU's peak bf16 FLOP/s that the estimates assume (default 0.35)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("evaluate", help="evaluate a finished run; writes metrics.json into its folder")
    p.add_argument("--run", required=True, help="run id (a folder under results/runs)")
    p.add_argument("--profile", "-p", default="smoke", help="only used to find runs_dir")
    p.add_argument("--runs-dir", help="where the runs are (default: the profile's runs_dir)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("efficiency", help="teacher vs student params, FLOPs, latency, FPS, memory (Fig. 2): the "
                                          "paper's, the paper-size models counted here, the profile's measured")
    add_config_arguments(p)
    p.add_argument("--teacher", help="a trained teacher's model folder (a run's model/); default: from the config")
    p.add_argument("--student", help="a trained student's model folder; default: from the config")
    p.add_argument("--out", default="results/efficiency", help="folder for the csv and markdown tables")
    p.set_defaults(func=cmd_efficiency)

    p = sub.add_parser("ceiling", help="the IoU a perfect mask keeps at the student's and the teacher's mask-logit "
                                       "grids on the validation set (a maskAP cap before any learning)")
    add_config_arguments(p)
    p.add_argument("--segmenter-sizes", type=int, nargs="*", default=[], metavar="S",
                   help="also SAM2 at these input sizes S (grid S/4 x S/4), beside the config's")
    p.add_argument("--teacher-runs", nargs="+", default=[], metavar="RUN",
                   help="also these teacher runs' SAM2 prompted with the ground-truth boxes (a perfect detector): "
                        "mask IoUs and maskAP, beside each run's own maskAP")
    p.set_defaults(func=cmd_ceiling)

    p = sub.add_parser("pseudo-quality", help="precision and recall of pseudo_labels runs against the withheld "
                                              "annotations of the unlabelled images")
    add_config_arguments(p)
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="pseudo_labels run ids")
    p.set_defaults(func=cmd_pseudo_quality)

    p = sub.add_parser("notebooks", help="run notebooks headless (papermill) from their .py sources")
    p.add_argument("sources", nargs="*", help="notebooks/NN_*.py files (default: all, in order)")
    p.add_argument("--profile", "-p", default="smoke")
    p.add_argument("--results", default="results",
                   help="the notebooks write tables to RESULTS/tables, figures to RESULTS/figures and, unless --out "
                        "says otherwise, the executed notebooks to RESULTS/notebooks (default: results)")
    p.add_argument("--out", help="folder for executed notebooks and their records (default: RESULTS/notebooks)")
    p.add_argument("--tables", type=int, nargs="+", default=list(TABLES), choices=TABLES, metavar="N",
                   help=f"the supplementary tables the notebooks build (default: {TABLES[0]} ... {TABLES[-1]})")
    p.add_argument("--data-root", help="a real Cityscapes root (the notebooks' data_root parameter)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every notebook (their overrides parameter), e.g. device=cpu")
    p.set_defaults(func=cmd_notebooks)

    p = sub.add_parser("doctor", help="check versions, the device, the dataset, split files, weights and disk of "
                                      "the tables asked for; says what is wrong and how to fix it (exit 1 when "
                                      "something is)")
    add_config_arguments(p)
    p.add_argument("--tables", type=int, nargs="+", choices=TABLES, metavar="N",
                   help=f"the supplementary tables whose weights and disk to check (default: {TABLES_SPAN}, without "
                        "Table 8 on ADE20K)")
    p.set_defaults(func=cmd_doctor)
    return parser


def run_command(args: argparse.Namespace) -> int | None:
    """``args.func(args)``; then, when it opened runs to train (train, table, ...), which it trained and which
    complete ones it reused (:func:`castlib.engine.runs.describe_opened`), printed by one process under torchrun."""
    if args.command not in TRAINING_COMMANDS:
        return args.func(args)
    from castlib.engine.runs import describe_opened, track_runs

    with track_runs() as opened:
        status = args.func(args)
    if os.environ.get("RANK", "0") == "0":
        for line in describe_opened(opened):
            print(line)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command: the kit's errors and unreadable or unwritable files end in one ``error:`` line (exit 2),
    Ctrl-C in one line saying the run can be resumed (exit 130)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in DATA_COMMANDS:  # a missing data root stops the command in about a second
            config_from_args(args)
        status = run_command(args)
    except CastError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:
        print(f"error: {e.filename}: permission denied ({e.strerror})", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk where a write did not go through castlib.io (which names the folder itself)
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f"{Path(e.filename).parent}: " if e.filename else ""
        print(f"error: {where}no space left on the device ({e.strerror}); free some space (python -m castlib doctor "
              "says how much the tables need) and run the same command again: every finished file is kept",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: every finished file is kept; run the same command again to resume from the last "
              "checkpoint", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())

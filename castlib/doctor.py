"""``python -m castlib doctor``: what this machine and this profile's inputs look like, what is wrong and how
to fix it. Each check yields :class:`Finding` lines; the command exits non-zero when any is a problem.

Checked: library versions, the device (:func:`device`, with the NVIDIA driver the installed torch needs:
:data:`CUDA_DRIVERS`), the dataset and split files, every pretrained weight the asked tables need, found in the
local caches without network (:func:`needed_weights`, :func:`weight_status`), and free disk (:func:`disk_need_gib`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from castlib.config import PAPER_PROFILES, Config
from castlib.distributed import CPU_ON_PURPOSE, driver_needed
from castlib.errors import CastError, DeviceError

PACKAGES = ("torch", "torchvision", "transformers", "pycocotools", "cityscapesscripts")

@dataclass(frozen=True)
class Finding:
    """One line of the report; ``fix`` (a command or an action) is set for problems."""

    topic: str
    text: str
    problem: bool = False
    fix: str = ""


def environment() -> Iterator[Finding]:
    """Versions of the libraries the kit pins, CUDA and bf16 availability."""
    for name in PACKAGES:
        try:
            yield Finding("version", f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            yield Finding("version", f"{name} is not installed", True, "make setup (pip install -e '.[dev]')")
    if torch.cuda.is_available():
        yield Finding("cuda", f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, CUDA "
                              f"{torch.version.cuda}, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
    else:
        yield Finding("cuda", f"no CUDA device ({driver_needed()})")


def device(cfg: Config) -> Iterator[Finding]:
    """The device runs will use: ``cuda`` (the paper profile's, auto included) without CUDA is a problem."""
    from castlib.distributed import resolve_device

    try:
        chosen = resolve_device(cfg.device)
    except DeviceError:
        yield Finding("device", f"device {cfg.device}: torch finds no CUDA device", True,
                      f"{driver_needed()}; check `nvidia-smi`. Or {CPU_ON_PURPOSE}")
        return
    note = ""
    if chosen.type == "cpu" and cfg.profile in PAPER_PROFILES:
        note = " (asked for: a paper-size training step takes minutes on the CPU)"
    elif cfg.device == "auto":
        note = " (device auto)"
    yield Finding("device", f"device {cfg.device}: runs use {chosen}{note}")


def dataset(cfg: Config) -> Iterator[Finding]:
    """The dataset root: format, image counts and every problem ``prepare`` finds (the same code:
    :func:`castlib.data.loaders.dataset_problems`, every pixel read), by file; then the split files (:func:`splits`)."""
    from castlib.config import README_DATA_SECTION, MissingDataRoot, check_data_source
    from castlib.data.loaders import build_dataset, dataset_problems, dataset_root, is_synthetic, synthetic_warning

    try:
        check_data_source(cfg)
    except MissingDataRoot:
        yield Finding("data", f"data.root is not set: profile {cfg.profile} reads the real {cfg.data.dataset} dataset "
                              "(data.source: real)", True,
                      f"pass --data-root DIR (or set data.root) to the dataset's root; README '{README_DATA_SECTION}' "
                      "says how to get it")
        return
    root = dataset_root(cfg)
    kind = "synthetic set" if is_synthetic(cfg) else "dataset"
    if not root.is_dir():
        fix = (f"python -m castlib prepare --profile {cfg.profile} --dataset {cfg.data.dataset}" if is_synthetic(cfg)
               else f"pass --data-root DIR (or set data.root) to the dataset's root; README '{README_DATA_SECTION}'")
        yield Finding("data", f"{cfg.data.dataset} {kind} {root} does not exist", True, fix)
        return
    warning = synthetic_warning(cfg)
    if warning:
        yield Finding("data", warning.removeprefix("warning: "))
    problems = dataset_problems(cfg)  # what prepare's check_dataset checks: every pixel of every file
    if problems:
        for line in problems[:20]:
            yield Finding("data", line, True, "fix or replace the file")
        if len(problems) > 20:
            yield Finding("data", f"... and {len(problems) - 20} more problems", True)
    try:
        counts = {split: len(build_dataset(cfg, split, load_annotations=False)) for split in ("train", "val")}
        yield Finding("data", f"{cfg.data.dataset} {kind} {root}: {counts['train']} train / {counts['val']} val images")
    except CastError:
        return
    yield from splits(cfg)


def splits(cfg: Config) -> Iterator[Finding]:
    """The split files: those the config trains on exist and hold ids, and every problem ``prepare`` stops at
    (:func:`castlib.data.loaders.split_problems`, the same code), by file."""
    from castlib.data.loaders import read_split_ids, split_files, split_problems

    prepare = f"python -m castlib prepare --profile {cfg.profile} --dataset {cfg.data.dataset}"
    try:
        problems = split_problems(cfg)
    except CastError as e:  # the train set cannot be read (reported above) or split
        yield Finding("splits", str(e), True, prepare)
        return
    for problem in problems:
        fix = ("replace it with the split this dataset and seed give: " + prepare + " --force, or keep yours and "
               "train on it (prepare stops at it)" if "differs from" in problem.problem
               else f"fix the file, or {prepare} --force to replace the split files")
        yield Finding("splits", str(problem), True, fix)
    named = {p.path for p in problems}
    shown = set(map(str, problems))
    for path, which in zip(split_files(cfg), ("labelled", "unlabelled"), strict=True):
        if path in named:
            continue
        try:  # the split training reads (data.label_fraction may be none of label_fractions)
            ids = read_split_ids(cfg, which)
        except CastError as e:
            if str(e) not in shown:
                shown.add(str(e))
                yield Finding("splits", str(e), True, prepare)
            continue
        yield Finding("splits", f"{path}: {len(ids)} image ids, all in the dataset", not ids,
                      f"{prepare} --force" if not ids else "")


def needed_weights(cfg: Config, tables: Sequence[int]) -> dict[str, list[int]]:
    """The config keys of the pretrained weights ``tables`` need, each with the tables that need it: every table
    trains the CAST teacher (detector, segmenter) and student (``model.student_backbone``); Table 8 also Guided
    Distillation on each of its backbones (ResNet-50, DINOv2-B, DINOv2-L)."""
    from castlib.report.paper_tables import GD_BACKBONES

    keys: dict[str, list[int]] = {}
    for number in tables:
        backbones = [cfg.model.student_backbone, *(GD_BACKBONES if number == 8 else ())]
        for key in ("model.teacher.detector.weights", "model.teacher.segmenter.weights",
                    *(f"model.backbones.{b}.weights" for b in backbones)):
            keys.setdefault(key, []).append(number)
    return keys


def _torchvision_weights(name: str):
    from torchvision.models import ResNet50_Weights

    return ResNet50_Weights[name] if name in ResNet50_Weights.__members__ else None


def weight_status(key: str, source: str) -> tuple[bool, str, str]:
    """(found, where or why not, the command that gets them) of the weights ``source`` named by config key ``key``,
    looked up in the local caches only (no network): a local folder or file as given; a torchvision weights name
    under ``$TORCH_HOME/hub/checkpoints``; a Hugging Face hub id in the hub cache, with its config and weight files."""
    path = Path(source).expanduser()
    if path.exists():
        return True, f"local {'folder' if path.is_dir() else 'file'} {path}", ""
    tv = _torchvision_weights(source)
    if tv is not None:
        file = Path(torch.hub.get_dir()) / "checkpoints" / Path(tv.url).name
        fetch = (f'python -c "import torchvision; torchvision.models.ResNet50_Weights.{source}.get_state_dict()" '
                 f"(or download {tv.url} into {file.parent}); set TORCH_HOME to keep it elsewhere "
                 f"(now {os.environ.get('TORCH_HOME', 'unset')})")
        if file.is_file():
            return True, f"torchvision {source} in {file}", ""
        return False, f"torchvision ResNet50_Weights.{source} is not in {file.parent}", fetch
    if path.suffix in (".pt", ".pth") or path.is_absolute():
        return False, f"{path} does not exist", f"copy the weights to {path} or set {key} to where they are"
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    fetch = f"hf download {source}   (on a machine with internet access; or set {key} to a local copy)"
    try:
        folder = Path(snapshot_download(source, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return False, f"{source} is not in the local cache", fetch
    weights = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")]
    if not (folder / "config.json").is_file() or not weights:
        return False, f"{source} is in the local cache without its config or weight files ({folder})", fetch
    return True, f"{source} is in the local cache", ""


def weights(cfg: Config, tables: Sequence[int]) -> Iterator[Finding]:
    """Whether every pretrained weight the ``tables`` need (:func:`needed_weights`) is in the local caches."""
    if not cfg.model.pretrained:
        yield Finding("weights", f"profile {cfg.profile}: model.pretrained=false, no pretrained weights needed")
        return
    for key, numbers in needed_weights(cfg, tables).items():
        found, text, fix = weight_status(key, cfg.get_path(key))
        needed = f" (Table{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))})"
        yield Finding("weights", f"{key}: {text}{needed}", not found, fix)


def disk_need_gib(cfg: Config, tables: Sequence[int]) -> float:
    """GiB of free disk under runs_dir that the ``tables`` need: what their runs not yet complete will write
    (:func:`castlib.report.costs.disk_need`, from each run's checkpoints, model, predictions and pseudo-labels)."""
    from castlib.report.costs import disk_need

    return disk_need(cfg, tables) / 2**30


def disk(cfg: Config, tables: Sequence[int]) -> Iterator[Finding]:
    """Free disk where the runs are written, against :func:`disk_need_gib`."""
    from castlib.engine.runs import runs_dir

    folder = runs_dir(cfg)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 2**30
    need = disk_need_gib(cfg, tables)
    yield Finding("disk", f"{free:.1f} GiB free under {existing} (runs_dir {folder}; profile {cfg.profile}, tables "
                          f"{' '.join(map(str, tables))} want >= {need:.1f} GiB)", free < need,
                  "free some space or set runs_dir to a larger disk")


def diagnose(cfg: Config, tables: Sequence[int] | None = None) -> list[Finding]:
    """Every check, in the order they are printed, for ``tables`` (default :func:`default_tables`)."""
    from castlib.report.costs import default_tables

    tables = default_tables(cfg) if tables is None else list(tables)
    return [*environment(), *device(cfg), *dataset(cfg), *weights(cfg, tables), *disk(cfg, tables)]


def report(findings: list[Finding]) -> str:
    """The printed report: one line per finding, problems marked with their fix, then a summary line."""
    lines = []
    for f in findings:
        lines.append(f"{'PROBLEM' if f.problem else 'ok':8s}{f.topic:9s}{f.text}")
        if f.problem and f.fix:
            lines.append(f"{'':17s}fix: {f.fix}")
    problems = sum(f.problem for f in findings)
    lines.append(f"{problems} problem(s) found" if problems else "everything looks fine")
    return "\n".join(lines)

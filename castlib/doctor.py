"""``python -m castlib doctor``: what this machine and this profile's inputs look like, what is wrong and how
to fix it. Each check yields :class:`Finding` lines; the command exits non-zero when any is a problem."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from castlib.config import Config
from castlib.errors import CastError

PACKAGES = ("torch", "torchvision", "transformers", "pycocotools", "cityscapesscripts")
# Rough floors of free disk under runs_dir per profile: smoke and mini keep a few MB to GB of tiny
# checkpoints; a paper run keeps Swin-L / Hiera-L / DINOv2 checkpoints with optimiser state per stage.
MIN_FREE_GIB = {"smoke": 1.0, "mini": 5.0, "paper": 100.0}


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
        yield Finding("cuda", "no CUDA device: runs use the CPU (device=auto); bf16 autocast on CPU only")


def dataset(cfg: Config) -> Iterator[Finding]:
    """The dataset root: format, image counts and problems (headers: formats, sizes, missing files)."""
    from castlib.data.loaders import (
        build_dataset,
        dataset_problems,
        dataset_root,
        is_synthetic,
        read_split_ids,
        split_files,
    )

    root = dataset_root(cfg)
    kind = "synthetic set" if is_synthetic(cfg) else "dataset"
    if not root.is_dir():
        fix = (f"python -m castlib prepare --profile {cfg.profile} --dataset {cfg.data.dataset}" if is_synthetic(cfg)
               else "pass --data-root DIR (or set data.root) to the dataset's root; see README 'Real datasets'")
        yield Finding("data", f"{cfg.data.dataset} {kind} {root} does not exist", True, fix)
        return
    problems = dataset_problems(cfg, decode=False)
    if problems:
        for line in problems[:20]:
            yield Finding("data", line, True, "fix or replace the file (python -m castlib prepare checks every pixel)")
        if len(problems) > 20:
            yield Finding("data", f"... and {len(problems) - 20} more problems", True)
    try:
        counts = {split: len(build_dataset(cfg, split, load_annotations=False)) for split in ("train", "val")}
        yield Finding("data", f"{cfg.data.dataset} {kind} {root}: {counts['train']} train / {counts['val']} val images")
    except CastError:
        return
    for path, which in zip(split_files(cfg), ("labelled", "unlabelled"), strict=True):
        try:
            ids = read_split_ids(cfg, which)
        except CastError as e:
            yield Finding("splits", str(e), True,
                          f"python -m castlib prepare --profile {cfg.profile} --dataset {cfg.data.dataset}")
            continue
        problem = not ids
        yield Finding("splits", f"{path}: {len(ids)} image ids, all in the dataset", problem,
                      "python -m castlib prepare --force" if problem else "")


def _weights(cfg: Config) -> list[tuple[str, str]]:
    """(config key, hub id) of every Hugging Face model the profile loads (a ResNet's come from torchvision)."""
    backbone = cfg.model.student_backbone
    names = [("model.teacher.detector.weights", cfg.model.teacher.detector.weights),
             ("model.teacher.segmenter.weights", cfg.model.teacher.segmenter.weights)]
    if cfg.model.backbones[backbone].kind == "dinov2":
        names.insert(0, (f"model.backbones.{backbone}.weights", cfg.model.backbones[backbone].weights))
    return names


def weights(cfg: Config) -> Iterator[Finding]:
    """Whether the pretrained weights the profile loads are in the local Hugging Face cache."""
    if not cfg.model.pretrained:
        yield Finding("weights", f"profile {cfg.profile}: model.pretrained=false, no pretrained weights needed")
        return
    from huggingface_hub import try_to_load_from_cache

    for key, source in _weights(cfg):
        if Path(source).is_dir():
            yield Finding("weights", f"{key}: local folder {source}")
        elif isinstance(try_to_load_from_cache(source, "config.json"), str):
            yield Finding("weights", f"{key}: {source} is in the local cache")
        else:
            yield Finding("weights", f"{key}: {source} is not in the local cache", True,
                          f"hf download {source}   (on a machine with internet access; or set {key} to a local copy)")


def disk(cfg: Config) -> Iterator[Finding]:
    """Free disk where the runs are written."""
    from castlib.engine.runs import runs_dir

    folder = runs_dir(cfg)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 2**30
    need = MIN_FREE_GIB.get(cfg.profile, MIN_FREE_GIB["paper"])
    yield Finding("disk", f"{free:.1f} GiB free under {existing} (runs_dir {folder}; profile {cfg.profile} wants "
                          f">= {need:g} GiB)", free < need, "free some space or set runs_dir to a larger disk")


def diagnose(cfg: Config) -> list[Finding]:
    """Every check, in the order they are printed."""
    return [*environment(), *dataset(cfg), *weights(cfg), *disk(cfg)]


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

"""Labelled / unlabelled splits of a training set (supplementary Table 1 and section A).

- **Cityscapes**: a label fraction ``f`` of the sorted train ids; ``round(f * N)`` (halves up) ids
  are drawn uniformly without replacement with ``numpy.random.default_rng(seed)`` and the rest is
  unlabelled. 10% of 2975 gives 298 / 2677 (Table 1); 5% and 30% give 149 and 893.
- **ADE20K**: a class-stratified subset of ``1000 + 2537`` of the 20210 train images, split into
  1000 labelled and 2537 unlabelled (Table 1). Stratification: each image gets a *stratum*, the
  rarest category it contains (fewest training images; ties by category id; images without
  instances form their own stratum). Each stratum receives a share of the subset proportional to
  its size (largest remainders, at least one image for every non-empty stratum when the subset
  allows), drawn at random; the labelled part is then drawn from the subset the same way, so rare
  categories appear in both parts. Smaller (synthetic) sets keep Table 1's proportions of the
  train set.

Split files are plain text, one image id per line. :func:`read_split` also accepts the lists
Guided Distillation published (``<city>_<seq>_<frame>_gtFine_instanceIds.png`` per line).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from castlib.errors import DataError
from castlib.io import write_text_atomic
from castlib.paper import TABLE1_SPLITS

_SUFFIXES = ("_gtFine_instanceIds.png", "_leftImg8bit.png", ".png", ".jpg")


@dataclass(frozen=True)
class Split:
    labelled: list[str]
    unlabelled: list[str]


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def label_fraction_split(image_ids: Iterable[str], fraction: float, seed: int) -> Split:
    """Draw ``round(fraction * N)`` labelled ids uniformly; the rest of the train set is unlabelled."""
    ids = sorted(set(image_ids))
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n = round_half_up(fraction * len(ids))
    chosen = set(np.random.default_rng(seed).choice(len(ids), size=n, replace=False).tolist())
    return Split([i for k, i in enumerate(ids) if k in chosen], [i for k, i in enumerate(ids) if k not in chosen])


def strata(image_classes: Mapping[str, Iterable[int]]) -> dict[str, int]:
    """Each image's stratum: the rarest class it contains (-1 for an image without instances)."""
    frequency = Counter(c for classes in image_classes.values() for c in set(classes))
    return {
        image_id: min(set(classes), key=lambda c: (frequency[c], c)) if set(classes) else -1
        for image_id, classes in image_classes.items()
    }


def _allocate(sizes: Mapping[int, int], total: int) -> dict[int, int]:
    """Proportional allocation of ``total`` over strata (largest remainders, >= 1 per stratum if possible)."""
    n = sum(sizes.values())
    if total > n:
        raise ValueError(f"cannot draw {total} images from {n}")
    exact = {s: total * size / n for s, size in sizes.items()}
    alloc = {s: math.floor(v) for s, v in exact.items()}
    if total >= len(sizes):
        for s in alloc:
            alloc[s] = max(alloc[s], 1)
    while sum(alloc.values()) > total:  # taking the minimum of one may overshoot
        s = max((s for s in alloc if alloc[s] > 1), key=lambda s: (alloc[s] - exact[s], s))
        alloc[s] -= 1
    for s in sorted(alloc, key=lambda s: (-(exact[s] - alloc[s]), s)):
        if sum(alloc.values()) == total:
            break
        if alloc[s] < sizes[s]:
            alloc[s] += 1
    while sum(alloc.values()) < total:  # remainders exhausted: fill any stratum with room
        s = next(s for s in sorted(alloc) if alloc[s] < sizes[s])
        alloc[s] += 1
    return alloc


def _stratified_draw(ids: Sequence[str], stratum: Mapping[str, int], total: int, rng) -> list[str]:
    groups: dict[int, list[str]] = {}
    for image_id in sorted(ids):
        groups.setdefault(stratum[image_id], []).append(image_id)
    alloc = _allocate({s: len(g) for s, g in groups.items()}, total)
    chosen = []
    for s in sorted(groups):
        members = groups[s]
        chosen += [members[k] for k in rng.choice(len(members), size=alloc[s], replace=False)]
    return sorted(chosen)


def stratified_split(image_classes: Mapping[str, Iterable[int]], n_labelled: int, n_unlabelled: int,
                     seed: int) -> Split:
    """Class-stratified subset of ``n_labelled + n_unlabelled`` images, then labelled / unlabelled."""
    rng = np.random.default_rng(seed)
    stratum = strata(image_classes)
    subset = _stratified_draw(list(image_classes), stratum, n_labelled + n_unlabelled, rng)
    labelled = _stratified_draw(subset, stratum, n_labelled, rng)
    chosen = set(labelled)
    return Split(labelled, [i for i in subset if i not in chosen])


def ade20k_split_sizes(n_train: int) -> tuple[int, int]:
    """Table 1's 1000 / 2537 of 20210, scaled to a train set of ``n_train`` images (at least 1 each)."""
    table = TABLE1_SPLITS["ade20k"]
    scale = n_train / table["train"]
    return (max(1, round_half_up(table["labelled"] * scale)), max(1, round_half_up(table["unlabelled"] * scale)))


def split_tag(dataset: str, fraction: float) -> str:
    """``10pct`` for Cityscapes fractions, ``stratified`` for ADE20K."""
    return "stratified" if dataset == "ade20k" else f"{round_half_up(fraction * 100)}pct"


def split_paths(splits_dir: str | Path, name: str, tag: str, seed: int) -> tuple[Path, Path]:
    """``data_splits/<name>/<tag>_seed<seed>_{labelled,unlabelled}.txt``."""
    folder = Path(splits_dir) / name
    return folder / f"{tag}_seed{seed}_labelled.txt", folder / f"{tag}_seed{seed}_unlabelled.txt"


def write_split(path: str | Path, image_ids: Iterable[str]) -> Path:
    return write_text_atomic(path, "".join(f"{i}\n" for i in image_ids))


def image_id_of(name: str) -> str:
    """An image id from a split-file line: a plain id or a Cityscapes/ADE20K file name."""
    name = Path(name.strip()).name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_split(path: str | Path, available: Iterable[str] | None = None) -> list[str]:
    """Image ids of a split file; with ``available``, every id must be one of them.

    Blank lines and ``#`` comments are skipped; a duplicate or unknown id names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "split file does not exist (make it with `python -m castlib split`)")
    known = set(available) if available is not None else None
    ids: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        image_id = image_id_of(line)
        if image_id in seen:
            raise DataError(path, f"line {lineno}: image id {image_id!r} repeats line {seen[image_id]}")
        if known is not None and image_id not in known:
            raise DataError(path, f"line {lineno}: image {image_id!r} does not exist in the dataset")
        seen[image_id] = lineno
        ids.append(image_id)
    return ids

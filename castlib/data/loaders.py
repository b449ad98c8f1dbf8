"""From a config to datasets and DataLoaders: the dataset root (real, or the profile's synthetic
set, generated on first use), its checks, its split files, labelled and unlabelled loaders.

``data.source`` says which: ``synthetic`` or ``real`` (:mod:`castlib.config` settles it; a root given means real).
A real source without ``data.root`` is one :class:`~castlib.config.MissingDataRoot` error, never a quiet synthetic set;
:func:`describe_data` and :func:`data_record` say which data a run, table or figure comes from.

:func:`check_dataset` reads every image and annotation a run will use and reports all problems at
once; :func:`data_digest` and :func:`split_digest` enter run ids, so a changed input is a new run."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from castlib.config import PAPER_PROFILES, Config, check_data_source, check_name, repo_path
from castlib.data import splits as S
from castlib.data.datasets import DATASETS, InstanceDataset
from castlib.data.sample import InstanceSample, collate
from castlib.data.synthetic import SyntheticSpec, generate, read_manifest
from castlib.data.transforms import EvalView, train_views
from castlib.errors import ConfigError, DataError

_IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def _dataset(cfg: Config) -> str:
    dataset = cfg.data.dataset
    if dataset not in DATASETS:
        raise ConfigError(None, "data.dataset", f"unknown dataset {dataset!r}; use one of {sorted(DATASETS)}")
    return dataset


def is_synthetic(cfg: Config) -> bool:
    return cfg.data.source == "synthetic"


def synthetic_spec(cfg: Config) -> SyntheticSpec:
    dataset = _dataset(cfg)
    syn = cfg.data.synthetic
    sizes = syn[dataset]
    if dataset == "cityscapes":
        return SyntheticSpec("cityscapes", sizes.train, sizes.val, sizes.height, sizes.width, syn.seed, syn.domain)
    return SyntheticSpec("ade20k", sizes.train, sizes.val, sizes.short_side, 0, syn.seed, syn.domain)


def dataset_name(cfg: Config) -> str:
    """``cityscapes`` / ``ade20k`` for real data, ``cityscapes-synthetic-smoke`` for a synthetic set."""
    dataset = _dataset(cfg)
    if not is_synthetic(cfg):
        return dataset
    check_name("data.synthetic.name", cfg.data.synthetic.name)  # load_config checks it too: a folder name, no path
    return f"{dataset}-synthetic-{cfg.data.synthetic.name}"


def dataset_root(cfg: Config) -> Path:
    if is_synthetic(cfg):
        return repo_path(cfg.data.data_dir) / "synthetic" / dataset_name(cfg)
    check_data_source(cfg)
    return repo_path(cfg.data.root)


def synthetic_warning(cfg: Config) -> str | None:
    """The warning line for a paper profile on the synthetic set (asked for by name), else None."""
    if cfg.profile in PAPER_PROFILES and is_synthetic(cfg):
        return (f"warning: data.source=synthetic: profile {cfg.profile} runs on the {describe_data(cfg)}, not the "
                "paper's data; every run records it in run.json")
    return None


def data_record(cfg: Config) -> dict:
    """What a run's ``run.json`` records of its data: the source, and the synthetic set's name, image size and
    image counts, or the real root."""
    if not is_synthetic(cfg):  # no root yet (the plan costs runs without data): recorded as null
        root = cfg.data.root
        return {"source": "real", "dataset": _dataset(cfg), "root": None if root is None else str(dataset_root(cfg))}
    spec = synthetic_spec(cfg)
    size = f"{spec.height}x{spec.width}" if spec.format == "cityscapes" else f"shorter side {spec.height}"
    return {"source": "synthetic", "dataset": _dataset(cfg), "name": dataset_name(cfg), "image_size": size,
            "train": spec.train, "val": spec.val, "seed": spec.seed, "domain": spec.domain}


def describe_data(cfg: Config) -> str:
    """One line naming the data, for run records, tables and figures: ``synthetic set cityscapes-synthetic-smoke
    (40 train / 10 val images, 128x256)`` or ``real cityscapes at /datasets/cityscapes``."""
    return describe_data_record(data_record(cfg))


def describe_data_record(record: dict) -> str:
    """:func:`describe_data` of a :func:`data_record` (e.g. a run's ``run.json`` ``data_source``)."""
    if record["source"] == "real":
        return f"real {record['dataset']} at {record['root'] or '(no data.root set)'}"
    return (f"synthetic set {record['name']} ({record['train']} train / {record['val']} val images, "
            f"{record['image_size']})")


SMOKE_AP_NOTE = ("on smoke, maskAP is 0 by design (tiny models trained a few iterations exercise every code path, "
                 "not learning)")


def data_note(data: str, profile: str | None) -> str:
    """The data line of a figure or table caption: ``data: <describe_data>``, and on smoke that AP is 0 by design."""
    return f"data: {data}" + (f"; {SMOKE_AP_NOTE}" if profile == "smoke" else "")


def prepare_data(cfg: Config, progress: bool = False) -> Path:
    """The dataset root; a synthetic set is generated there first if it is not complete."""
    root = dataset_root(cfg)
    if is_synthetic(cfg):
        generate(synthetic_spec(cfg), root, progress=progress)
    return root


def build_dataset(
    cfg: Config,
    split: str = "train",
    image_ids: list[str] | None = None,
    annotation_root: str | Path | None = None,
    load_annotations: bool = True,
    transform: Callable[[InstanceSample], InstanceSample] | None = None,
) -> InstanceDataset:
    return DATASETS[_dataset(cfg)](dataset_root(cfg), split, image_ids=image_ids, annotation_root=annotation_root,
                                   load_annotations=load_annotations, transform=transform)


def split_files(cfg: Config, fraction: float | None = None) -> tuple[Path, Path]:
    """The labelled and unlabelled split files this config trains on."""
    dataset = _dataset(cfg)
    tag = S.split_tag(dataset, cfg.data.label_fraction if fraction is None else fraction)
    return S.split_paths(repo_path(cfg.data.splits_dir), dataset_name(cfg), tag, cfg.data.split_seed)


def _image_problems(path: Path, decode: bool) -> tuple[str | None, tuple[int, int] | None]:
    """(problem, (width, height)) of one image file: missing, unreadable, truncated or the wrong format."""
    if not path.is_file():
        return f"{path}: image missing", None
    try:
        with Image.open(path) as im:
            expected = _IMAGE_FORMATS.get(path.suffix.lower())
            if im.format != expected:
                return f"{path}: is a {im.format} file, expected {expected} for {path.suffix}", None
            if decode:
                im.load()
            return None, im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        return f"{path}: cannot read image ({e})", None


def _dataset_problems(cfg: Config, split: str, decode: bool) -> Iterator[str]:
    try:
        images = build_dataset(cfg, split, load_annotations=False)
    except DataError as e:
        yield str(e)
        return
    if not images.image_ids:
        yield f"{images.image_dir()}: no images in the {split} set"
    for image_id in images.image_ids:
        image_path, ann = images.image_path(image_id), images.annotation_path(image_id)
        problem, size = _image_problems(image_path, decode)
        if problem:
            yield problem
        if not ann.is_file():
            yield f"{ann}: annotation missing for image {image_path}"
            continue
        try:
            if decode:
                masks, _ = images.decode(ann)
                ann_size = (masks.shape[2], masks.shape[1])
            else:
                with Image.open(ann) as im:
                    ann_size = im.size
        except DataError as e:
            yield str(e)
            continue
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            yield f"{ann}: cannot read annotation ({e})"
            continue
        if size is not None and ann_size != size:
            yield f"{ann}: annotation is {ann_size[0]}x{ann_size[1]} but image {image_path} is {size[0]}x{size[1]}"


def dataset_problems(cfg: Config, decode: bool = True) -> list[str]:
    """Every problem of the train and validation sets, one line each (``path: problem``).

    ``decode=True`` reads every pixel (truncated files, annotation modes and class ids); ``decode=False``
    reads the headers only (formats and sizes), fast enough for every stage start."""
    return list(dict.fromkeys(p for split in ("train", "val") for p in _dataset_problems(cfg, split, decode)))


def check_dataset(cfg: Config, decode: bool = True) -> None:
    """Raise one :class:`DataError` listing every problem :func:`dataset_problems` finds."""
    problems = dataset_problems(cfg, decode)
    if problems:
        shown = "\n  ".join(problems[:50]) + (f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else "")
        raise DataError(dataset_root(cfg), f"{len(problems)} problem(s) in the dataset:\n  {shown}")


def data_digest(cfg: Config) -> str:
    """A digest of the dataset: the synthetic set's manifest content, or the path, size and mtime of every
    file under a real root (cheap: file stats only, no pixel read). A changed, added or removed file changes it.

    A real source without a root has the digest ``no-data-root``: ids for planning only (``plan`` before the
    data is there), as every stage's data check stops at :class:`MissingDataRoot` before it makes a run."""
    if not is_synthetic(cfg) and cfg.data.root is None:
        return "no-data-root"
    root = dataset_root(cfg)
    h = hashlib.sha256()
    if is_synthetic(cfg):  # the set is a function of its spec, so planning knows the digest before it is drawn
        spec = read_manifest(root) or synthetic_spec(cfg)
        h.update(json.dumps(asdict(spec), sort_keys=True).encode())
        return h.hexdigest()[:16]
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            h.update(f"{path.relative_to(root)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def split_digest(cfg: Config, fraction: float | None = None) -> str:
    """A digest of the contents of the labelled and unlabelled split files this config trains on."""
    h = hashlib.sha256()
    for path in split_files(cfg, fraction):
        h.update(path.read_bytes() if path.is_file() else b"<missing>")
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class PlannedSplits:
    """The split files :func:`make_splits` writes, by labelled/unlabelled pair, with the ids the dataset and seed
    draw for each, and the train set's image ids."""

    pairs: list[tuple[tuple[Path, list[str]], tuple[Path, list[str]]]]
    train_ids: list[str]


def planned_splits(cfg: Config) -> PlannedSplits:
    """The splits of the config's dataset (every ``label_fractions`` entry for Cityscapes; ADE20K's stratified
    one), drawn from its train set; nothing is written."""
    dataset = _dataset(cfg)
    train = build_dataset(cfg, "train", load_annotations=dataset == "ade20k")
    if not train.image_ids:
        raise DataError(train.image_dir(), "no training images: cannot draw split files")
    pairs = []
    if dataset == "cityscapes":
        for fraction in cfg.data.label_fractions:
            split = S.label_fraction_split(train.image_ids, fraction, cfg.data.split_seed)
            labelled, unlabelled = split_files(cfg, fraction)
            pairs.append(((labelled, split.labelled), (unlabelled, split.unlabelled)))
    else:
        n_labelled, n_unlabelled = S.ade20k_split_sizes(len(train))
        classes = {i: train.image_classes(i) for i in train.image_ids}
        split = S.stratified_split(classes, n_labelled, n_unlabelled, cfg.data.split_seed)
        labelled, unlabelled = split_files(cfg)
        pairs.append(((labelled, split.labelled), (unlabelled, split.unlabelled)))
    return PlannedSplits(pairs, list(train.image_ids))


def _overlap(labelled: Path, labelled_ids: list[str], unlabelled: Path, unlabelled_ids: list[str]) -> DataError | None:
    """An image listed in both parts of a split (it would be trained on with its labels and with pseudo-labels)."""
    labelled_set = set(labelled_ids)
    both = [i for i in unlabelled_ids if i in labelled_set]
    if not both:
        return None
    more = f" (and {len(both) - 1} more)" if len(both) > 1 else ""
    return DataError(unlabelled, f"image {both[0]!r}{more} is also in the labelled split {labelled}: an image is "
                                 "labelled or unlabelled, not both")


def split_problems(cfg: Config, planned: PlannedSplits | None = None) -> list[DataError]:
    """Every problem of the split files that exist among those :func:`make_splits` writes (``prepare`` and
    ``doctor`` both run it), one per file: a line naming an image the train set lacks or repeating one, an image in
    both the labelled and the unlabelled file of a pair, and otherwise ids that differ from those the dataset and
    seed draw (``prepare`` keeps such a file and stops unless ``--force``). Missing files are not problems here."""
    planned = planned_splits(cfg) if planned is None else planned
    available = set(planned.train_ids)
    problems: list[DataError] = []
    for pair in planned.pairs:
        read: dict[Path, list[str]] = {}
        for path, _ in pair:
            if path.is_file():
                try:
                    read[path] = S.read_split(path, available)
                except DataError as e:
                    problems.append(e)
        (labelled, _), (unlabelled, _) = pair
        both = _overlap(labelled, read[labelled], unlabelled, read[unlabelled]) if len(read) == 2 else None
        if both is not None:
            problems.append(both)
            continue
        for path, ids in pair:
            if path in read and read[path] != ids:
                problems.append(DataError(path, f"exists with {len(read[path])} image ids and differs from the "
                                                f"{len(ids)} this dataset and seed give"))
    return problems


def make_splits(cfg: Config, force: bool = False) -> list[Path]:
    """Write the split files of the config's dataset (:func:`planned_splits`).

    A split file that exists with a problem (:func:`split_problems`: unknown or repeated ids, an image in both
    parts, other ids than drawn) is kept and is an error unless ``force``; no file is written before all pass."""
    planned = planned_splits(cfg)
    files = [item for pair in planned.pairs for item in pair]
    for path, ids in files:
        if not ids:
            raise DataError(path, "would be written with no image ids; the dataset's train set is empty")
    problems = [] if force else split_problems(cfg, planned)
    if len(problems) == 1:
        raise DataError(problems[0].path, f"{problems[0].problem}; nothing was written (pass --force to replace "
                                          "the split files)")
    if problems:
        shown = "\n  ".join(map(str, problems))
        raise DataError(files[0][0].parent, f"{len(problems)} problem(s) in the split files; nothing was written "
                                            f"(pass --force to replace them):\n  {shown}")
    return [S.write_split(path, ids) for path, ids in files]


def read_split_ids(cfg: Config, which: str, fraction: float | None = None) -> list[str]:
    """The image ids of the ``labelled`` or ``unlabelled`` part, checked against the train set and against the
    other part (an image in both is an error naming the files)."""
    labelled, unlabelled = split_files(cfg, fraction)
    path, other = (labelled, unlabelled) if which == "labelled" else (unlabelled, labelled)
    available = DATASETS[_dataset(cfg)](dataset_root(cfg), "train", load_annotations=False).image_ids
    ids = S.read_split(path, available)
    if other.is_file():
        other_ids = S.read_split(other)
        both = _overlap(labelled, ids if which == "labelled" else other_ids, unlabelled,
                        other_ids if which == "labelled" else ids)
        if both is not None:
            raise both
    return ids


def labelled_dataset(cfg: Config, strong: bool = True, fraction: float | None = None) -> InstanceDataset:
    """D_l: labelled train images with their annotations, weak (+ strong) views."""
    return build_dataset(cfg, "train", read_split_ids(cfg, "labelled", fraction),
                         transform=train_views(cfg.augment, strong))


def unlabelled_dataset(cfg: Config, strong: bool = True, fraction: float | None = None,
                       annotation_root: str | Path | None = None) -> InstanceDataset:
    """D_u: unlabelled train images; with ``annotation_root`` (pseudo-labels), their instances too."""
    return build_dataset(cfg, "train", read_split_ids(cfg, "unlabelled", fraction),
                         annotation_root=annotation_root, load_annotations=annotation_root is not None,
                         transform=train_views(cfg.augment, strong))


def val_dataset(cfg: Config) -> InstanceDataset:
    return build_dataset(cfg, "val", transform=EvalView(cfg.augment.eval_short_side or None))


def make_loader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool = True, num_workers: int = 0,
                drop_last: bool = True) -> DataLoader:
    """A DataLoader whose order depends only on ``seed``; batches are :class:`~castlib.data.sample.Batch`."""
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                      num_workers=num_workers, drop_last=drop_last and len(dataset) >= batch_size,
                      generator=generator, persistent_workers=False)

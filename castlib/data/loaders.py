"""From a config to datasets and DataLoaders: the dataset root (real, or the profile's synthetic
set, generated on first use), its split files, labelled and unlabelled loaders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from castlib.config import REPO_ROOT, Config
from castlib.data import splits as S
from castlib.data.datasets import DATASETS, InstanceDataset
from castlib.data.sample import InstanceSample, collate
from castlib.data.synthetic import SyntheticSpec, generate
from castlib.data.transforms import EvalView, train_views
from castlib.errors import ConfigError


def repo_path(path: str | Path) -> Path:
    """A config path: absolute as given, relative ones from the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _dataset(cfg: Config) -> str:
    dataset = cfg.data.dataset
    if dataset not in DATASETS:
        raise ConfigError(None, "data.dataset", f"unknown dataset {dataset!r}; use one of {sorted(DATASETS)}")
    return dataset


def is_synthetic(cfg: Config) -> bool:
    return cfg.data.root is None


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
    return f"{dataset}-synthetic-{cfg.data.synthetic.name}" if is_synthetic(cfg) else dataset


def dataset_root(cfg: Config) -> Path:
    if is_synthetic(cfg):
        return repo_path(cfg.data.data_dir) / "synthetic" / dataset_name(cfg)
    return repo_path(cfg.data.root)


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


def make_splits(cfg: Config) -> list[Path]:
    """Write the split files of the config's dataset (all ``label_fractions`` for Cityscapes)."""
    dataset = _dataset(cfg)
    train = build_dataset(cfg, "train", load_annotations=dataset == "ade20k")
    written: list[Path] = []
    if dataset == "cityscapes":
        for fraction in cfg.data.label_fractions:
            split = S.label_fraction_split(train.image_ids, fraction, cfg.data.split_seed)
            labelled, unlabelled = split_files(cfg, fraction)
            written += [S.write_split(labelled, split.labelled), S.write_split(unlabelled, split.unlabelled)]
    else:
        n_labelled, n_unlabelled = S.ade20k_split_sizes(len(train))
        classes = {i: train.image_classes(i) for i in train.image_ids}
        split = S.stratified_split(classes, n_labelled, n_unlabelled, cfg.data.split_seed)
        labelled, unlabelled = split_files(cfg)
        written += [S.write_split(labelled, split.labelled), S.write_split(unlabelled, split.unlabelled)]
    return written


def read_split_ids(cfg: Config, which: str, fraction: float | None = None) -> list[str]:
    """The image ids of the ``labelled`` or ``unlabelled`` part, checked against the train set."""
    labelled, unlabelled = split_files(cfg, fraction)
    path = {"labelled": labelled, "unlabelled": unlabelled}[which]
    available = DATASETS[_dataset(cfg)](dataset_root(cfg), "train", load_annotations=False).image_ids
    return S.read_split(path, available)


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

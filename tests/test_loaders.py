"""Labelled and unlabelled loaders built from a profile, on both formats."""

import pytest
import torch

from castlib.data.loaders import (
    dataset_root,
    labelled_dataset,
    make_loader,
    make_splits,
    prepare_data,
    read_split_ids,
    unlabelled_dataset,
    val_dataset,
)


@pytest.mark.parametrize("dataset", ["cityscapes", "ade20k"])
def test_labelled_and_unlabelled_loaders_yield_paired_views(smoke_config, dataset):
    cfg = smoke_config(f"data.dataset={dataset}")
    prepare_data(cfg)
    make_splits(cfg)
    labelled, unlabelled = labelled_dataset(cfg), unlabelled_dataset(cfg)
    assert not set(labelled.image_ids) & set(unlabelled.image_ids)
    batch = next(iter(make_loader(labelled, batch_size=2, seed=0)))
    crop = tuple(cfg.augment.crop)
    assert batch.images.shape == (2, 3, *crop) and batch.strong.shape == (2, 3, *crop)
    assert batch.images.dtype == torch.float32 and batch.images.min() >= 0 and batch.images.max() <= 1
    assert all(m.shape[1:] == crop and m.dtype == torch.bool for m in batch.masks)
    assert all(len(m) == len(lab) for m, lab in zip(batch.masks, batch.labels, strict=True))
    u = next(iter(make_loader(unlabelled, batch_size=2, seed=0)))
    assert all(len(m) == 0 for m in u.masks)  # D_u carries no labels
    v = val_dataset(cfg)[0]
    assert v.strong is None and v.image.dtype == torch.float32


def test_loader_order_depends_only_on_the_seed(smoke_config):
    cfg = smoke_config()
    prepare_data(cfg)
    make_splits(cfg)
    ds = unlabelled_dataset(cfg, strong=False)
    order = lambda seed: [i for b in make_loader(ds, 4, seed) for i in b.image_ids]  # noqa: E731
    assert order(1) == order(1) and order(1) != order(2)


def test_pseudo_labels_in_the_dataset_format_are_read_from_another_root(smoke_config, tmp_path):
    import shutil

    cfg = smoke_config()
    prepare_data(cfg)
    make_splits(cfg)
    pseudo = tmp_path / "pseudo"
    shutil.copytree(dataset_root(cfg) / "gtFine", pseudo / "gtFine")  # stand-in pseudo-labels
    ds = unlabelled_dataset(cfg, annotation_root=pseudo)
    assert ds.image_ids == read_split_ids(cfg, "unlabelled")
    assert sum(len(ds[i].labels) for i in range(4)) > 0


def test_describe_data_says_synthetic_or_names_the_real_root(cityscapes_root):
    from castlib.config import load_config
    from castlib.data.loaders import describe_data

    assert describe_data(load_config("smoke")) == ("synthetic set cityscapes-synthetic-smoke (40 train / 10 val "
                                                   "images, 128x256)")
    assert describe_data(load_config("mini", ["data.dataset=ade20k"])) == (
        "synthetic set ade20k-synthetic-mini (300 train / 60 val images, shorter side 128)")
    real = load_config("paper", [f"data.root={cityscapes_root}"])
    assert describe_data(real) == f"real cityscapes at {cityscapes_root}"

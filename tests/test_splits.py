"""Splits are deterministic, disjoint, cover the train set and have supplementary Table 1's sizes."""

from collections import Counter

import numpy as np
import pytest

from castlib.data import splits as S
from castlib.data.loaders import make_splits, read_split_ids, split_files
from castlib.errors import DataError
from castlib.paper import TABLE1_SPLITS

CITYSCAPES_IDS = [f"city{i % 18}_{i:06d}_000019" for i in range(TABLE1_SPLITS["cityscapes"]["train"])]


def _ade20k_classes(n=TABLE1_SPLITS["ade20k"]["train"], seed=0):
    """A fake ADE20K train set: long-tailed category sets, some images without instances."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, 101) ** 1.2
    p /= p.sum()
    return {f"ADE_train_{i + 1:08d}": set(rng.choice(100, size=rng.integers(0, 6), p=p).tolist()) for i in range(n)}


@pytest.mark.parametrize("fraction,labelled", [(0.05, 149), (0.10, 298), (0.30, 893)])
def test_cityscapes_fractions_have_table1_sizes(fraction, labelled):
    split = S.label_fraction_split(CITYSCAPES_IDS, fraction, seed=0)
    assert len(split.labelled) == labelled
    assert len(split.unlabelled) == len(CITYSCAPES_IDS) - labelled
    assert not set(split.labelled) & set(split.unlabelled)
    assert set(split.labelled) | set(split.unlabelled) == set(CITYSCAPES_IDS)


def test_cityscapes_10pct_is_298_of_2975_as_table1_says():
    split = S.label_fraction_split(CITYSCAPES_IDS, 0.10, seed=0)
    assert (len(split.labelled), len(split.unlabelled)) == (298, 2677)


def test_splits_are_deterministic_in_the_seed_and_independent_of_input_order():
    a = S.label_fraction_split(CITYSCAPES_IDS, 0.1, seed=1)
    b = S.label_fraction_split(list(reversed(CITYSCAPES_IDS)), 0.1, seed=1)
    c = S.label_fraction_split(CITYSCAPES_IDS, 0.1, seed=2)
    assert a == b and a.labelled != c.labelled


def test_ade20k_stratified_split_has_table1_sizes_and_is_disjoint():
    classes = _ade20k_classes()
    split = S.stratified_split(classes, 1000, 2537, seed=0)
    assert (len(split.labelled), len(split.unlabelled)) == (1000, 2537)
    assert not set(split.labelled) & set(split.unlabelled)
    assert S.ade20k_split_sizes(20210) == (1000, 2537)
    assert split == S.stratified_split(dict(reversed(list(classes.items()))), 1000, 2537, seed=0)


def test_ade20k_stratification_keeps_rare_categories_and_stratum_proportions():
    classes = _ade20k_classes()
    strata = S.strata(classes)
    split = S.stratified_split(classes, 1000, 2537, seed=0)
    subset = split.labelled + split.unlabelled
    present = {c for i in subset for c in classes[i]}
    every = {c for cs in classes.values() for c in cs}
    assert present == every  # every category of the train set is in the subset
    labelled_strata = Counter(strata[i] for i in split.labelled)
    assert set(labelled_strata) == set(Counter(strata[i] for i in subset))  # every stratum labelled
    sizes = Counter(strata.values())
    for stratum, size in sizes.items():  # shares are proportional, up to rounding and the minimum of one
        expected = 1000 * size / len(classes)
        assert abs(labelled_strata[stratum] - expected) <= 1 + 0.02 * expected or labelled_strata[stratum] == 1


def test_synthetic_sets_keep_table1_proportions():
    assert S.ade20k_split_sizes(400) == (20, 50)
    assert S.label_fraction_split([str(i) for i in range(40)], 0.1, 0).labelled.__len__() == 4


def test_read_split_accepts_guided_distillation_lists(tmp_path):
    path = tmp_path / "perc_10.txt"
    path.write_text("bremen_000041_000019_gtFine_instanceIds.png\n# a comment\n\naachen_000001_000019\n")
    assert S.read_split(path) == ["bremen_000041_000019", "aachen_000001_000019"]
    path.write_text("aachen_000001_000019\naachen_000001_000019_gtFine_instanceIds.png\n")
    with pytest.raises(DataError, match="line 2.*repeats line 1"):
        S.read_split(path)
    with pytest.raises(DataError, match="does not exist"):
        S.read_split(tmp_path / "missing.txt")


def test_make_splits_writes_plain_files_the_loaders_read_back(smoke_config):
    cfg = smoke_config("data.synthetic.cityscapes.train=20", "data.synthetic.cityscapes.val=2")
    from castlib.data.loaders import prepare_data

    prepare_data(cfg)
    written = make_splits(cfg)
    assert len(written) == 2 * len(cfg.data.label_fractions)
    labelled, unlabelled = split_files(cfg)
    assert labelled.read_text().splitlines() == read_split_ids(cfg, "labelled")
    assert len(read_split_ids(cfg, "labelled")) == 2 and len(read_split_ids(cfg, "unlabelled")) == 18
    first = [p.read_bytes() for p in written]
    assert [p.read_bytes() for p in make_splits(cfg)] == first  # deterministic


def test_committed_split_files_are_what_the_generator_makes(smoke_config, tmp_path):
    """data_splits/ in the repository holds the smoke sets' splits; they must match a fresh run."""
    from castlib.config import REPO_ROOT
    from castlib.data.loaders import dataset_name, prepare_data

    for dataset in ("cityscapes", "ade20k"):
        cfg = smoke_config(f"data.dataset={dataset}")
        prepare_data(cfg)
        for path in make_splits(cfg):
            committed = REPO_ROOT / "data_splits" / dataset_name(cfg) / path.name
            assert committed.read_text() == path.read_text(), committed

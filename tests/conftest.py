"""Shared fixtures: tiny synthetic sets in both formats, written once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: never wait on the hub client

import pytest
import torch

from castlib.config import load_config
from castlib.data.synthetic import SyntheticSpec, generate

torch.set_num_threads(min(2, os.cpu_count() or 1))

CITYSCAPES_SPEC = SyntheticSpec("cityscapes", train=12, val=4, height=128, width=256, seed=3)
ADE20K_SPEC = SyntheticSpec("ade20k", train=12, val=4, height=160, width=0, seed=3)


@pytest.fixture(scope="session")
def cityscapes_root(tmp_path_factory):
    return generate(CITYSCAPES_SPEC, tmp_path_factory.mktemp("data") / "cityscapes")


@pytest.fixture(scope="session")
def ade20k_root(tmp_path_factory):
    return generate(ADE20K_SPEC, tmp_path_factory.mktemp("data") / "ade20k")


@pytest.fixture(scope="session")
def cfg():
    """The smoke profile as shipped (tests that write data use ``smoke_config``)."""
    return load_config("smoke")


@pytest.fixture
def smoke_config(tmp_path):
    """The smoke profile with its data and split folders in a temporary directory."""

    def make(*overrides: str):
        return load_config("smoke", [f"data.data_dir={tmp_path / 'data'}", f"data.splits_dir={tmp_path / 'splits'}",
                                     *overrides])

    return make

"""The smoke profile in a private workspace (data, splits and runs under one folder), shared by the stage,
stand-in, baseline and table tests."""

from __future__ import annotations

from pathlib import Path

from castlib.config import Config, load_config


def workspace_overrides(root: Path, *extra: str) -> list[str]:
    """Overrides that put the smoke profile's data, splits and runs under ``root``, then ``extra``."""
    return [f"data.data_dir={root / 'data'}", f"data.splits_dir={root / 'splits'}", f"runs_dir={root / 'runs'}",
            *extra]


def prepared_config(root: Path, overrides: list[str]) -> Config:
    """The smoke profile with ``overrides``, its synthetic set drawn and its split files written."""
    from castlib.data.loaders import make_splits, prepare_data

    config = load_config("smoke", overrides)
    prepare_data(config)
    make_splits(config)
    return config


def set_args(overrides: list[str]) -> list[str]:
    """``overrides`` as command-line ``--set`` arguments."""
    return [a for o in overrides for a in ("--set", o)]

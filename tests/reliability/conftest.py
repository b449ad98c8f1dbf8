"""Fixtures of the reliability tests: a private workspace, tiny datasets to break, the command line called
in-process, and a guard that every file that existed under ``results/``, ``data/``, ``data_splits/`` (the
repository's and the workspace's) is unchanged afterwards."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from castlib.__main__ import main
from castlib.config import REPO_ROOT
from castlib.data.synthetic import SyntheticSpec, generate

TINY_CITYSCAPES = SyntheticSpec("cityscapes", train=12, val=2, height=64, width=128, seed=5)
TINY_ADE20K = SyntheticSpec("ade20k", train=12, val=2, height=64, width=0, seed=5)


def file_hashes(*folders: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folders``, by path."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders if folder.is_dir() for p in sorted(folder.rglob("*")) if p.is_file()}


class Guard:
    """Hashes taken at set-up; :meth:`check` asserts none of those files changed or disappeared."""

    def __init__(self, workspace: Path):
        self.folders = [REPO_ROOT / "results", REPO_ROOT / "data", REPO_ROOT / "data_splits", workspace]
        self.before = file_hashes(*self.folders)

    def check(self) -> None:
        after = file_hashes(*self.folders)
        changed = [p for p, h in self.before.items() if after.get(p) != h]
        assert not changed, f"files changed or removed: {changed[:5]}"


@pytest.fixture
def workspace(tmp_path) -> Path:
    return tmp_path


@pytest.fixture
def guard(workspace):
    """``check = guard()`` hashes the files now; ``check.check()`` asserts they are unchanged."""
    return lambda: Guard(workspace)


@pytest.fixture
def private(workspace) -> list[str]:
    """``--set`` arguments sending the synthetic data, split files and runs into the workspace; runs start from
    random weights (the registry's reliability is tested here, the source-domain stand-in in test_pretrain)."""
    pairs = {"model.stand_in": "false", "data.data_dir": workspace / "data",
             "data.splits_dir": workspace / "data_splits",
             "runs_dir": workspace / "results" / "runs", "data.synthetic.cityscapes.train": 12,
             "data.synthetic.cityscapes.val": 2, "data.synthetic.cityscapes.height": 64,
             "data.synthetic.cityscapes.width": 128}
    return [a for key, value in pairs.items() for a in ("--set", f"{key}={value}")]


@pytest.fixture(scope="session")
def tiny_roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tiny")
    return {"cityscapes": generate(TINY_CITYSCAPES, base / "cityscapes"),
            "ade20k": generate(TINY_ADE20K, base / "ade20k")}


@pytest.fixture
def real_root(tiny_roots, workspace):
    """A copy of a tiny set in the workspace, read as a real dataset root (``--data-root``)."""

    def copy(dataset: str = "cityscapes") -> Path:
        return Path(shutil.copytree(tiny_roots[dataset], workspace / f"{dataset}-root"))

    return copy


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` -> (exit code, stderr), the command run in-process."""

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        return code, capsys.readouterr().err

    return run

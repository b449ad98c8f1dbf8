"""Fixtures of the reliability tests: a private workspace, tiny datasets to break, the command line called
in-process, and a guard that every file that existed under ``results/``, ``data/``, ``data_splits/`` (the
repository's and the workspace's; of the repository's run registry ``results/runs``, every folder) is unchanged
afterwards."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from castlib.__main__ import main
from castlib.config import REPO_ROOT
from castlib.data.synthetic import SyntheticSpec, generate

TINY_CITYSCAPES = SyntheticSpec("cityscapes", train=12, val=2, height=64, width=128, seed=5)
TINY_ADE20K = SyntheticSpec("ade20k", train=12, val=2, height=64, width=0, seed=5)


def file_stamps(*folders: Path, skip: Path | None = None) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime in ns) of every file under ``folders`` but ``skip``'s, by path: a write in place
    changes the mtime, an atomic replace the inode."""
    stamps = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if skip is None or Path(root, d) != skip]
            stamps.update({str(Path(root, f)): _stamp(Path(root, f)) for f in files})
    return stamps


def folder_stamps(folder: Path) -> dict[str, tuple[int, int, int]]:
    """The same for ``folder`` and every directory under it: the kit writes each file atomically (a temporary
    file renamed into place, :mod:`castlib.io`), so each of its writes and every removal changes the directory's
    mtime. For the repository's run registry, which a stat of every file made the guard's cost: 1.8M files after
    the mini tables, 27 s a pass, two passes a test."""
    return {root: _stamp(Path(root)) for root, _, _ in os.walk(folder)} if folder.is_dir() else {}


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


class Guard:
    """Stamps taken at set-up; :meth:`check` asserts none of those files (under the workspace and the
    repository's ``results/``, ``data/``, ``data_splits/``) or folders (of ``results/runs``) changed or
    disappeared."""

    def __init__(self, workspace: Path):
        self.folders = [REPO_ROOT / "results", REPO_ROOT / "data", REPO_ROOT / "data_splits", workspace]
        self.registry = REPO_ROOT / "results" / "runs"
        self.before = self._stamps()

    def _stamps(self) -> dict[str, tuple[int, int, int]]:
        return {**file_stamps(*self.folders, skip=self.registry), **folder_stamps(self.registry)}

    def check(self) -> None:
        after = self._stamps()
        changed = [p for p, h in self.before.items() if after.get(p) != h]
        assert not changed, f"files or folders changed or removed: {changed[:5]}"


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

"""Run the numbered notebooks headless with papermill, from their jupytext ``.py`` sources.

The ``.py`` (percent format) is the reviewed source, so it is what runs: jupytext reads it into
a notebook, papermill injects the ``parameters`` and executes it, and the executed copy is
written beside the notebook's own outputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jupytext
import papermill

from castlib.config import REPO_ROOT
from castlib.errors import DataError

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def notebook_sources() -> list[Path]:
    """``notebooks/NN_*.py`` in order."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


def check_sources(sources: Iterable[str | Path]) -> list[Path]:
    """The given notebook sources, each an existing jupytext ``.py`` file (else a DataError naming it)."""
    paths = [Path(s) for s in sources]
    for path in paths:
        if not path.is_file():
            raise DataError(path, "no such notebook source (give notebooks/NN_*.py files, or none for all)")
        if path.suffix != ".py":
            raise DataError(path, "not a notebook source: give the jupytext .py file (notebooks/NN_*.py)")
    return paths


def run_notebook(source: str | Path, out_dir: str | Path, cell_timeout: int | None = None, **parameters: Any) -> Path:
    """Execute one notebook; it writes its outputs to ``out_dir/<name>/``; returns the executed copy.

    ``cell_timeout`` (seconds) fails a cell that runs longer instead of waiting forever."""
    source = Path(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / f"{source.stem}.ipynb"
    notebook = jupytext.read(source)
    # Widgets stay off headless: nbclient can block on a cell that opens widget comms (jupyter/nbclient#312).
    parameters = {"output_dir": str(out_dir / source.stem), "interactive": False, **parameters}
    papermill.execute_notebook(notebook, str(executed), parameters=parameters, cwd=str(REPO_ROOT),
                               kernel_name="python3", progress_bar=False, start_timeout=120,
                               execution_timeout=cell_timeout)
    return executed

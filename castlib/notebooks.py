"""Run the numbered notebooks headless with papermill, from their jupytext ``.py`` sources.

The ``.py`` (percent format) is the reviewed source, so it is what runs: jupytext reads it into
a notebook, papermill injects the ``parameters`` and executes it, and the executed copy is
written beside the notebook's own outputs. The kernel starts in ``notebooks/``, as JupyterLab starts it,
so a notebook that resolved a folder from the working directory would show it here too: every folder
parameter goes through :func:`notebook_folder`.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jupytext
import papermill

from castlib.config import REPO_ROOT, Config, repo_path
from castlib.errors import DataError
from castlib.io import write_json_atomic

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def notebook_folder(path: str | Path) -> Path:
    """A notebook parameter naming a folder (``tables_dir``, ``figures_dir``, ``output_dir``, ``runs_dir``,
    ``data_root``): a relative one from the repository root, whatever the kernel's working directory (JupyterLab
    starts it in ``notebooks/``); an absolute one as given."""
    return repo_path(path)


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

    ``cell_timeout`` (seconds) fails a cell that runs longer instead of waiting forever. Parameters the
    notebook's ``parameters`` cell does not name are left out (``tables`` reaches only the notebooks that
    build tables)."""
    source = Path(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / f"{source.stem}.ipynb"
    notebook = jupytext.read(source)
    # Widgets stay off headless: nbclient can block on a cell that opens widget comms (jupyter/nbclient#312).
    parameters = {"output_dir": str((out_dir / source.stem).absolute()), "interactive": False, **parameters}
    declared = notebook_parameters(notebook)
    parameters = {name: value for name, value in parameters.items() if name in declared}
    with _kernel_imports_this_checkout():
        papermill.execute_notebook(notebook, str(executed), parameters=parameters, cwd=str(NOTEBOOK_DIR),
                                   kernel_name="python3", progress_bar=False, start_timeout=120,
                                   execution_timeout=cell_timeout)
    return executed


@contextmanager
def _kernel_imports_this_checkout():
    """``PYTHONPATH`` starts with the repository root while a kernel starts, so the kernel (its working directory
    ``notebooks/``) imports this checkout's castlib whichever checkout the environment installed."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *([before] if before else [])])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = before


def notebook_parameters(notebook) -> set[str]:
    """The names the notebook's ``parameters`` cell assigns."""
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    return {target.id for cell in cells for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


RECORD_FILE = "record.json"


def record(output_dir: str | Path, name: str, value: Any) -> Any:
    """Add ``name: value`` (JSON-serialisable) to ``<output_dir>/record.json``, written atomically, so
    tests and readers get a notebook's key numbers back without parsing its cells; returns ``value``."""
    path = Path(output_dir) / RECORD_FILE
    records = read_record(output_dir) if path.is_file() else {}
    write_json_atomic(path, {**records, name: value})
    return value


def read_record(output_dir: str | Path) -> Mapping[str, Any]:
    """What a notebook recorded (:func:`record`)."""
    return json.loads((Path(output_dir) / RECORD_FILE).read_text())


def notebook_config(profile: str, dataset: str, seeds: Sequence[int] = (), runs_dir: str = "", data_root: str = "",
                    overrides: Sequence[str] = ()) -> Config:
    """The config a notebook's ``parameters`` cell asks for (empty ``seeds``, ``runs_dir`` or ``data_root``
    keep the profile's own; the folders resolved by :func:`notebook_folder`), with its dataset and split files made
    ready as ``castlib prepare`` does (split files that exist are kept), so any notebook also runs first."""
    from castlib.config import load_config
    from castlib.data.loaders import make_splits, prepare_data, split_files

    chosen = [f"data.dataset={dataset}", *overrides]
    chosen += [f"seeds={list(seeds)}"] if seeds else []
    chosen += [f"runs_dir={notebook_folder(runs_dir)}"] if runs_dir else []
    chosen += [f"data.root={notebook_folder(data_root)}"] if data_root else []
    cfg = load_config(profile, chosen)
    prepare_data(cfg)
    fractions = cfg.data.label_fractions if cfg.data.dataset == "cityscapes" else [None]
    if not all(path.is_file() for f in fractions for path in split_files(cfg, f)):  # ADE20K's take a full read
        make_splits(cfg)
    return cfg

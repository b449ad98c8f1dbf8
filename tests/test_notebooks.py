"""Notebooks: paired with their jupytext sources, parameterised, and run headless by papermill."""

import json

import jupytext
import pytest

from castlib.notebooks import notebook_sources, run_notebook

SOURCES = notebook_sources()


def test_there_are_numbered_notebooks():
    assert SOURCES and all(s.name[:2].isdigit() for s in SOURCES)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_py_source_has_an_ipynb_with_the_same_cells(source):
    paired = source.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired} missing: run `make notebooks`"
    py, ipynb = jupytext.read(source), jupytext.read(paired)
    assert [c.source for c in py.cells] == [c.source for c in ipynb.cells], f"{paired} is out of sync"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_notebook_has_a_papermill_parameters_cell_with_the_profile(source):
    cells = [c for c in jupytext.read(source).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    assert all(name in cells[0].source for name in ("profile", "output_dir", "interactive"))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_notebook_runs_headless_on_the_smoke_profile(source, tmp_path):
    executed = run_notebook(source, tmp_path, cell_timeout=600, profile="smoke")
    nb = json.loads(executed.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any((tmp_path / source.stem).iterdir())  # the notebook wrote its tables and figures

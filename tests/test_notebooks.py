"""Notebooks: paired with their jupytext sources, parameterised, and run headless by papermill."""

import ast
import json
import logging
import re
import subprocess

import jupytext
import pandas as pd
import pytest

from castlib.config import REPO_ROOT
from castlib.notebooks import (
    NOTEBOOK_DIR,
    notebook_folder,
    notebook_parameters,
    notebook_sources,
    read_record,
    record,
    run_notebook,
)

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


def committed(path) -> str:
    """The file as git stages it (through the nbstripout filter where `make notebook-filter` set it up), or as it
    is on disk outside a git checkout."""
    staged = subprocess.run(["git", "show", f":{path.relative_to(REPO_ROOT)}"], cwd=REPO_ROOT, capture_output=True,
                            text=True)
    return staged.stdout if staged.returncode == 0 else path.read_text()


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_committed_ipynb_has_no_outputs_and_no_execution_counts(source):
    """The committed notebooks are the reader's clean copy: a run's outputs live in the executed copies under
    results/. Saved from JupyterLab, a notebook keeps its outputs on disk; `make notebook-filter` has git strip
    them, else `git checkout` the file (or `make notebooks` after editing its .py)."""
    path = source.with_suffix(".ipynb")
    notebook = json.loads(committed(path))
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code), \
        f"{path.name} would be committed with outputs: run `make notebook-filter`, or strip them"
    assert "widgets" not in notebook["metadata"] and "language_info" not in notebook["metadata"]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_notebook_opens_with_what_it_shows_and_what_its_numbers_mean_on_each_profile(source):
    cells = jupytext.read(source).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# {source.stem[:2]} ·")
    opening = " ".join(cells[0].source.split())
    assert "**Data and what the numbers mean.**" in opening
    assert all(f"`{profile}`" in opening for profile in ("smoke", "mini", "paper"))
    assert "0 by design" in opening or "trains nothing" in opening
    assert all(c.source.strip() for c in cells), "an empty cell"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_papermill_reads_every_line_of_the_parameters_cell(source, caplog):
    """papermill warns `Unable to parse line` on a line with a second "=" (a comment's "key=value")."""
    from papermill.translators import PythonTranslator

    cell = next(c for c in jupytext.read(source).cells if "parameters" in c.metadata.get("tags", []))
    with caplog.at_level(logging.WARNING, logger="papermill"):
        found = PythonTranslator.inspect(cell)
    assert not [r for r in caplog.records if "Unable to parse" in r.getMessage()]
    assert {p.name for p in found} == notebook_parameters(jupytext.read(source))


FOLDER_PARAMETER = re.compile(r"_dir$|^data_root$")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_every_folder_parameter_goes_through_notebook_folder(source):
    """JupyterLab starts the kernel in notebooks/: a folder parameter read from the working directory would write
    under notebooks/results/. Each goes through notebook_folder, or through notebook_config, which uses it."""
    notebook = jupytext.read(source)
    folders = {name for name in notebook_parameters(notebook) if FOLDER_PARAMETER.search(name)}
    assert folders
    resolved = set()
    for cell in notebook.cells:
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("notebook_folder", "notebook_config"):
                resolved |= {arg.id for arg in ast.walk(node) if isinstance(arg, ast.Name)}
    assert folders <= resolved, f"not resolved from the repository root: {sorted(folders - resolved)}"


def test_notebook_folder_reads_a_relative_folder_from_the_repository_root_whatever_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert notebook_folder("results/tables") == REPO_ROOT / "results" / "tables"
    assert notebook_folder(tmp_path / "x") == tmp_path / "x"  # absolute: as given (the tests' temporary folders)


def small_data(root):
    """Overrides for a 16 + 4 image synthetic Cityscapes set with its splits under ``root``, and every stage at
    about half its smoke length (two logged points per curve at the least): the notebooks' narrative and records,
    not learning, are what these tests check (``test_pretrain`` shows the stand-in learning)."""
    return [f"data.data_dir={root / 'data'}", f"data.splits_dir={root / 'splits'}",
            "data.synthetic.cityscapes.train=16", "data.synthetic.cityscapes.val=4",
            "train.teacher.finetune_iterations=2", "train.teacher.self_training_iterations=2",
            "train.student.iterations=3", "train.refinement.iterations=2", "train.pretrain.teacher_iterations=5",
            "train.pretrain.backbone_iterations=5", "baselines.guided_distillation.teacher_iterations=2",
            "baselines.guided_distillation.iterations=2", "baselines.guided_distillation.burn_in_iterations=1"]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every notebook run once, in order, headless on smoke with one seed and a smaller synthetic set (16 + 4
    images: the 48 runs of Tables 3-8 then fit make test's budget), sharing one runs_dir as ``make reproduce``
    does; data, tables and figures go to temporary folders. Returns the folder and, per notebook, the executed
    copy."""
    root = tmp_path_factory.mktemp("notebooks")
    folders = {"runs_dir": root / "runs", "tables_dir": root / "tables", "figures_dir": root / "figures"}
    parameters = {"profile": "smoke", "seeds": [0], "overrides": small_data(root),
                  **{k: str(v) for k, v in folders.items()}}
    # the timeout only guards against a hung kernel: the Table 8 cell (its Guided Distillation runs) took over 900 s
    # while two training jobs shared the 2 cores (the whole make test takes 9 min on an idle machine)
    return root, {s.stem: run_notebook(s, root, cell_timeout=3600, **parameters) for s in SOURCES}


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_notebook_runs_headless_on_the_smoke_profile(source, executed):
    root, notebooks = executed
    nb = json.loads(notebooks[source.stem].read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any((root / source.stem).iterdir())  # the notebook wrote its tables, figures or record


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_figure_a_notebook_saves_is_also_shown_in_the_executed_copy(source, executed):
    _, notebooks = executed
    cells = [c for c in json.loads(notebooks[source.stem].read_text())["cells"] if c["cell_type"] == "code"]
    figure_cells = [c for c in cells if re.search(r"save_figure\(", "".join(c["source"]))]
    assert figure_cells or source.stem.startswith("05")
    for cell in figure_cells:
        images = [o for o in cell["outputs"] if "image/png" in o.get("data", {})]
        assert len(images) == len(re.findall(r"save_figure\(", "".join(cell["source"]))), "".join(cell["source"])
        assert not [o for o in cell["outputs"] if "PosixPath" in str(o.get("data", {}).get("text/plain", ""))]


def test_the_notebooks_write_nothing_under_notebooks(executed):
    """The kernel ran in notebooks/, as JupyterLab starts it: no file appeared there (notebooks/results/ was one)."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", str(NOTEBOOK_DIR)],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert not [line for line in status.splitlines() if line.startswith("??")], status


def _figures(root, *names):
    for name in names:
        path = root / "figures" / name
        assert path.is_file() and path.stat().st_size > 1000, f"{path} missing or empty"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _recorded(root, run_id: str, stage: str) -> dict:
    """The metrics.json of run ``run_id``, which must be a run of ``stage`` in the notebooks' registry."""
    run = root / "runs" / run_id
    assert json.loads((run / "run.json").read_text())["stage"] == stage
    return json.loads((run / "metrics.json").read_text())


def test_teacher_adaptation_records_each_step_and_draws_its_curves_and_pseudo_labels(executed):
    """Each number the notebook records is its run's own metrics.json value, from a run of the stage it names."""
    root, _ = executed
    record = read_record(root / "02_teacher_adaptation")
    for step in ("teacher_init", "teacher_finetune", "teacher_self_training"):
        assert record[f"{step}_ap"] == pytest.approx(_recorded(root, record["runs"][step], step)["ap"])
    labels = _recorded(root, record["runs"]["pseudo_labels"], "pseudo_labels")
    assert record["pseudo_instances_per_image"] == pytest.approx(labels["instances_per_image"])
    _figures(root, "teacher_step_a_curves.png", "teacher_step_b_curves.png", "teacher_pseudo_labels.png")


def test_knowledge_transfer_shows_the_debiased_sampler_draws_fewer_false_negatives_than_uniform(executed):
    root, _ = executed
    record = read_record(root / "03_knowledge_transfer")
    assert record["mean_fnr debiased (fusion)"] < record["mean_fnr uniform"]
    student = _recorded(root, record["runs"]["knowledge_transfer"], "knowledge_transfer")
    assert record["student_ap"] == pytest.approx(student["ap"])
    _figures(root, "student_curves.png", "proposition_3_1_margin_fnr.png")


def test_refinement_records_the_stages_and_main_table_3_from_their_runs(executed):
    root, _ = executed
    record = read_record(root / "04_student_refinement")
    stages = record["stages"]
    assert [s["model"].split()[0] for s in stages] == ["teacher", "student", "student"]
    assert stages[1]["AP"] == pytest.approx(_recorded(root, stages[1]["run"], "knowledge_transfer")["ap"])
    assert stages[2]["AP"] == pytest.approx(_recorded(root, stages[2]["run"], "student_refinement")["ap"])
    table = pd.read_csv(root / "tables" / "main_table3.csv", comment="#").set_index("variant")
    expected = {"full_pipeline": "student_refinement", "no_student_ft": "knowledge_transfer",
                "no_teacher_adapt": "student_refinement", "distillation_only": "knowledge_transfer",
                "no_distill_sup": "supervised_student"}
    assert list(table.index) == list(expected) == [r["variant"] for r in record["main_table3"]]
    for variant, stage in expected.items():
        ((seed, source),) = json.loads(table.loc[variant, "AP from"]).items()
        run_id, key = source.split(":")
        assert json.loads(table.loc[variant, "AP seeds"])[seed] == pytest.approx(_recorded(root, run_id, stage)[key])
    assert table.loc["full_pipeline", "runs"].split()[0] == stages[2]["run"]
    _figures(root, "refinement_curves.png")


VARIANTS = {3: ["finetune_only", "self_training", "self_training_contrastive"], 4: ["infonce", "hinge"],
            5: ["original", "squared", "sqrt"],
            6: ["teacher_t1_zero_shot", "teacher_t2_adapted", "student_under_t1", "student_under_t2"],
            7: ["batch", "memory_bank"], 8: ["cast_dinov2_s", "gd_resnet50", "gd_dinov2_b", "gd_dinov2_l"]}


@pytest.mark.parametrize("number", sorted(VARIANTS))
def test_tables_have_one_row_per_variant_with_the_paper_column(executed, number):
    root, _ = executed
    notebook = "05_ablation_tables" if number < 8 else "06_backbones_and_label_fractions"
    table = pd.read_csv(root / "tables" / f"table{number}.csv", comment="#")
    assert table["variant"].tolist() == VARIANTS[number]
    assert (root / "tables" / f"table{number}.md").read_text().startswith("## Supplementary Table")
    recorded = read_record(root / notebook)[f"table{number}"]
    assert [row["variant"] for row in recorded] == VARIANTS[number]
    reproduced = [c for c in table.columns if f"paper {c}" in table.columns]
    assert reproduced
    for row, shown in zip(table.to_dict("records"), recorded, strict=True):
        for column in reproduced:
            assert row[column] != "not run" and shown[column] == row[column], (row["variant"], column)
            assert row[f"{column} n"] == 1  # one seed in these tests, every cell its own count
            for seed, source in json.loads(row[f"{column} from"]).items():  # each value is its run's record
                run_id, key = source.split(":")
                value = json.loads((root / "runs" / run_id / "metrics.json").read_text())[key]
                assert json.loads(row[f"{column} seeds"])[seed] == pytest.approx(value, abs=1e-6)


def test_the_orderings_are_read_from_the_tables_the_notebooks_wrote(executed):
    root, _ = executed
    orderings = pd.read_csv(root / "tables" / "orderings.csv", comment="#")
    recorded = read_record(root / "05_ablation_tables")["orderings"]
    assert [r["claim"] for r in recorded] == orderings["claim"].tolist()
    assert set(orderings["table"]) >= {f"supplementary Table {n}" for n in (3, 5, 6)}
    assert set(orderings["verdict"]) == {"one seed"}  # one seed in these tests: no ordering can hold


def test_table8_cast_row_is_reproduced_and_drawn(executed):
    root, _ = executed
    rows = read_record(root / "06_backbones_and_label_fractions")["table8"]
    assert [row["variant"] for row in rows] == ["cast_dinov2_s", "gd_resnet50", "gd_dinov2_b", "gd_dinov2_l"]
    assert all(row[f"{p}% labels"] != "not run" for row in rows for p in (5, 10, 30))
    _figures(root, "table8_label_fractions.png")


def test_qualitative_and_efficiency_figures_from_the_trained_runs(executed):
    root, _ = executed
    record = read_record(root / "07_qualitative_and_efficiency")
    assert record["efficiency"]["student"]["params_M"] < record["efficiency"]["teacher"]["params_M"]
    assert set(record["instances_shown"]) == {"teacher", "student"}
    assert "0.3" in record["instance_rules"]["teacher"]  # the pseudo-labels' threshold (Table 2), not 0.5
    assert record["paper_size_params_M"]["teacher"] == pytest.approx(559.5, rel=2e-3)
    assert "synthetic set" in record["data"]
    _figures(root, "teacher_vs_student_predictions.png", "efficiency_teacher_vs_student.png")


def test_running_the_notebooks_again_reuses_every_run(executed):
    root, _ = executed
    before = sorted(p.name for p in (root / "runs").iterdir())
    done = {p: p.stat().st_mtime_ns for p in (root / "runs").glob("*/complete.json")}
    for stem in ("05_ablation_tables", "06_backbones_and_label_fractions"):
        source = next(s for s in SOURCES if s.stem == stem)
        run_notebook(source, root / "again", cell_timeout=300, profile="smoke", seeds=[0], overrides=small_data(root),
                     runs_dir=str(root / "runs"), tables_dir=str(root / "again" / "tables"),
                     figures_dir=str(root / "again" / "figures"))
    assert sorted(p.name for p in (root / "runs").iterdir()) == before
    assert {p: p.stat().st_mtime_ns for p in (root / "runs").glob("*/complete.json")} == done


def test_record_merges_names_into_one_json(tmp_path):
    record(tmp_path, "a", 1.5)
    record(tmp_path, "b", {"x": [1, 2]})
    assert read_record(tmp_path) == {"a": 1.5, "b": {"x": [1, 2]}}


def test_only_the_parameters_a_notebook_declares_reach_it():
    declared = notebook_parameters(jupytext.read(next(s for s in SOURCES if s.stem.startswith("05"))))
    assert {"profile", "seeds", "tables", "output_dir", "interactive"} <= declared
    assert "tables" not in notebook_parameters(jupytext.read(SOURCES[0]))


def test_notebooks_command_writes_tables_and_figures_under_its_results_folder(tmp_path, monkeypatch):
    """`castlib notebooks --results R` hands every notebook R/tables and R/figures (a mini run must not write
    over the committed smoke tables in results/tables) and executes into R/notebooks."""
    import castlib.notebooks
    from castlib.__main__ import main

    calls = []
    monkeypatch.setattr(castlib.notebooks, "run_notebook",
                        lambda source, out_dir, **parameters: calls.append((source, out_dir, parameters)))
    assert main(["notebooks", "--profile", "mini", "--results", str(tmp_path / "mini"), "--tables", "3", "6"]) == 0
    assert [source for source, _, _ in calls] == SOURCES
    for _, out_dir, parameters in calls:
        assert out_dir == tmp_path / "mini" / "notebooks"
        assert parameters["tables_dir"] == str(tmp_path / "mini" / "tables")
        assert parameters["figures_dir"] == str(tmp_path / "mini" / "figures")
        assert parameters["profile"] == "mini" and parameters["tables"] == [3, 6]


@pytest.mark.parametrize(("profile", "results"), [("smoke", "results"), ("mini", "results/mini")])
def test_make_reproduce_writes_a_profile_other_than_smoke_to_its_own_results_folder(profile, results):
    import subprocess

    from castlib.config import REPO_ROOT

    dry = subprocess.run(["make", "-n", "reproduce", f"PROFILE={profile}", "DATASETS=cityscapes"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    dry = "\n".join(" ".join(line.split()) for line in dry.splitlines())  # empty make variables leave double spaces
    notebooks = [line for line in dry.splitlines() if " -m castlib notebooks " in line]
    assert len(notebooks) == 1 and f"--results {results} " in notebooks[0], dry
    assert f"--out {results}/efficiency" in dry and "ade20k" not in dry
    assert f"castlib table 3 4 5 6 7 8 --profile {profile} --jobs 1 --out {results}/tables" in dry

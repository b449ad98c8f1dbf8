"""Issue 32: a name or id a user gives for something inside a kit folder stays inside it. A synthetic set's name,
the split folder named after it and a profile's name are single names (the config key is named); a run id is 12 hex
digits, never a path, so no command reads or writes a run outside --runs-dir."""

from __future__ import annotations

import json

import pytest

from castlib.config import REPO_ROOT


def _listing(*folders):
    return {folder: sorted(p.name for p in folder.iterdir()) for folder in folders}


@pytest.mark.parametrize("name", ["../../../x", "../x", "a/b", "..", "/tmp/x"])
def test_a_synthetic_set_name_that_is_a_path_writes_nothing(cli, private, guard, workspace, name):
    """`prepare --set data.synthetic.name=../../../x` wrote a set outside data/synthetic and split files at the
    repository root."""
    check = guard()
    before = _listing(REPO_ROOT, workspace, workspace.parent)
    code, err = cli("prepare", *private, "--set", f"data.synthetic.name={name}")
    assert code == 2 and err.strip().startswith(f"error: <override>: key 'data.synthetic.name': {name!r} is not a "
                                                "name"), err
    assert _listing(REPO_ROOT, workspace, workspace.parent) == before
    check.check()


def test_the_loaders_refuse_a_set_name_that_is_a_path_even_past_load_config(private):
    from castlib.__main__ import build_parser, config_from_args
    from castlib.data.loaders import dataset_root, split_files
    from castlib.errors import ConfigError

    cfg = config_from_args(build_parser().parse_args(["prepare", *private]))
    cfg.data.synthetic.name = "../../x"  # a config edited in a notebook
    for where in (dataset_root, split_files):
        with pytest.raises(ConfigError, match="key 'data.synthetic.name'"):
            where(cfg)


@pytest.fixture
def outside_run(workspace):
    """A run folder beside the runs folder R (``R/../other/<id>``), complete with a model, and R."""
    runs = workspace / "results" / "runs"
    runs.mkdir(parents=True)
    other = workspace / "results" / "other" / "abcdef012345"
    (other / "model").mkdir(parents=True)
    (other / "run.json").write_text(json.dumps({"id": other.name, "stage": "teacher_init", "profile": "smoke"}))
    (other / "complete.json").write_text("{}")
    return runs, other


@pytest.mark.parametrize("run_id", ["../other/abcdef012345", "../other/abcdef012345/", "./../other/abcdef012345",
                                    "ABCDEF012345", "abcdef01234", "abcdef012345\n", ""])
def test_evaluate_takes_a_run_id_never_a_path(cli, guard, outside_run, run_id):
    """`evaluate --run ../other/<id> --runs-dir R` evaluated, and wrote into, a run outside R."""
    runs, other = outside_run
    check = guard()
    code, err = cli("evaluate", "--run", run_id, "--runs-dir", runs)
    assert code == 2 and err.strip() == (f"error: {runs}: {run_id!r} is not a run id: a run id is 12 hex digits, the "
                                         "name of a run folder here (pass the folder holding the run as --runs-dir)")
    assert sorted(p.name for p in other.iterdir()) == ["complete.json", "model", "run.json"]
    check.check()


def test_pseudo_quality_takes_run_ids_never_paths(cli, private, guard, outside_run):
    runs, _ = outside_run
    check = guard()
    code, err = cli("pseudo-quality", *private, "--runs", "../other/abcdef012345")
    assert code == 2 and "'../other/abcdef012345' is not a run id: a run id is 12 hex digits" in err, err
    check.check()

"""Runs: a changed input is a new run, a stage refuses data that cannot make a meaningful run, incomplete or
never-trained runs are not used, a truncated weights file is named, Ctrl-C ends in one line (exit 130)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from castlib.__main__ import build_parser, config_from_args
from castlib.config import REPO_ROOT
from castlib.data.loaders import data_digest, split_files
from castlib.engine import lifecycle, stages
from castlib.engine.runs import Run, create_run
from castlib.models import build_model


def _config(private: list[str], *extra: str):
    return config_from_args(build_parser().parse_args(["train", "--stage", "cast", *private, *extra]))


def _fake_complete(cfg, stage: str, inputs: dict, iterations: int | None = None, **options) -> Run:
    """A run folder marked complete without training (what an old or a broken run leaves behind)."""
    run = create_run(cfg, stage, lifecycle.stage_config(cfg, stage, **options), inputs, cfg.seed,
                     data=lifecycle.input_digests(cfg, stage))
    run.write_metrics({"ap": 0.0, "ap50": 0.0, "train": {} if iterations is None else {"iterations": iterations}})
    run.mark_complete({"ap": 0.0, "ap50": 0.0})
    return run


def _would_open(cfg, stage: str, inputs: dict, **options) -> str:
    return create_run(cfg, stage, lifecycle.stage_config(cfg, stage, **options), inputs, cfg.seed, write=False,
                      data=lifecycle.input_digests(cfg, stage)).id


def test_an_edited_split_file_is_a_new_run(cli, private):
    assert cli("prepare", *private)[0] == 0
    cfg = _config(private)
    init = _fake_complete(cfg, "teacher_init", {})
    before = _would_open(cfg, "teacher_finetune", {"init": init}, contrastive=True)
    labelled, unlabelled = split_files(cfg)
    ids = labelled.read_text().splitlines()
    labelled.write_text("\n".join(ids[:-1]) + "\n")  # fewer ids
    fewer = _would_open(cfg, "teacher_finetune", {"init": init}, contrastive=True)
    labelled.write_text("\n".join(ids[:-1] + unlabelled.read_text().splitlines()[:1]) + "\n")  # other ids
    other = _would_open(cfg, "teacher_finetune", {"init": init}, contrastive=True)
    labelled.write_text("\n".join(ids) + "\n")  # restored: the first run again
    assert len({before, fewer, other}) == 3
    assert _would_open(cfg, "teacher_finetune", {"init": init}, contrastive=True) == before


def test_an_empty_labelled_split_stops_the_stage_naming_the_file(cli, private, guard, workspace):
    assert cli("prepare", *private)[0] == 0
    cfg = _config(private)
    _fake_complete(cfg, "teacher_init", {})
    labelled, _ = split_files(cfg)
    labelled.write_text("# emptied\n")
    check = guard()
    code, err = cli("train", "--stage", "teacher_finetune", *private)
    assert code == 2 and err.startswith(f"error: {labelled}: the labelled split is empty"), err
    assert len(list((workspace / "results" / "runs").iterdir())) == 1  # the teacher_init run alone
    code, err = cli("train", "--stage", "teacher_finetune", *private, "--set", "model.stand_in=true")
    assert code == 2 and err.startswith(f"error: {labelled}: the labelled split is empty"), err  # before pretraining
    assert len(list((workspace / "results" / "runs").iterdir())) == 1
    check.check()


def test_a_changed_annotation_is_a_new_run(real_root):
    root = real_root("cityscapes")
    from castlib.config import load_config

    cfg = load_config("smoke", [f"data.root={root}"])
    before = data_digest(cfg)
    ann = sorted((root / "gtFine" / "val").rglob("*_instanceIds.png"))[0]
    os.utime(ann, ns=(ann.stat().st_atime_ns, ann.stat().st_mtime_ns + 10**9))
    assert data_digest(cfg) != before
    after_touch = data_digest(cfg)
    (root / "leftImg8bit" / "train" / "extra").mkdir()
    (root / "leftImg8bit" / "train" / "extra" / "note.txt").write_text("x")
    assert data_digest(cfg) not in (before, after_touch)


def test_an_empty_validation_set_stops_before_any_run(cli, private, real_root, guard, workspace):
    root = real_root("cityscapes")
    for path in (root / "leftImg8bit" / "val").rglob("*.png"):
        path.unlink()
    check = guard()
    code, err = cli("train", "--stage", "teacher_init", "--data-root", root, *private)
    assert code == 2 and f"  {root / 'leftImg8bit' / 'val'}: no images in the val set" in err, err
    assert not (workspace / "results").exists()
    check.check()


def test_a_wrong_size_annotation_stops_the_stage_naming_it(cli, private, real_root, guard, workspace):
    root = real_root("cityscapes")
    ann = sorted((root / "gtFine" / "val").rglob("*_instanceIds.png"))[0]
    with Image.open(ann) as im:
        im.resize((im.width // 2, im.height // 2), Image.Resampling.NEAREST).save(ann)
    check = guard()
    code, err = cli("train", "--stage", "teacher_init", "--data-root", root, *private)
    assert code == 2 and f"  {ann}: annotation is 64x32 but image " in err, err
    assert not (workspace / "results").exists()
    check.check()


def test_a_complete_run_that_never_trained_is_refused(cli, private, guard):
    assert cli("prepare", *private)[0] == 0
    cfg = _config(private)
    init = _fake_complete(cfg, "teacher_init", {})
    never = _fake_complete(cfg, "teacher_finetune", {"init": init}, iterations=0, contrastive=True)
    check = guard()
    code, err = cli("train", "--stage", "teacher_finetune", *private)
    assert code == 2 and err.startswith(f"error: {never.dir / 'complete.json'}: run {never.id} (teacher_finetune) "
                                        "is marked complete but never trained"), err
    check.check()


def test_evaluate_refuses_an_incomplete_run(cli, private, guard, workspace):
    assert cli("prepare", *private)[0] == 0
    cfg = _config(private)
    run = create_run(cfg, "teacher_init", lifecycle.stage_config(cfg, "teacher_init"), {}, 0,
                     data=lifecycle.input_digests(cfg, "teacher_init"))
    check = guard()
    code, err = cli("evaluate", "--run", run.id, "--runs-dir", workspace / "results" / "runs")
    assert code == 2 and err.startswith(f"error: {run.dir}: run {run.id} (teacher_init) is not complete"), err
    check.check()


@pytest.fixture
def custom_profile_run(cli, private, workspace):
    """A complete teacher_init run made with a custom YAML profile, its random teacher saved."""
    profile = workspace / "mine.yaml"
    profile.write_text("profile: mine\nmodel:\n  teacher: {top_k: 50}\n")
    assert cli("prepare", "--profile", profile, *private)[0] == 0
    cfg = _config(private, "--profile", str(profile))
    run = _fake_complete(cfg, "teacher_init", {})
    build_model(cfg, "teacher", 8).save_pretrained(run.model_dir)
    return run, profile


def test_a_run_of_a_custom_profile_can_be_re_evaluated(cli, custom_profile_run, workspace):
    run, profile = custom_profile_run
    assert lifecycle.run_config(run).model.teacher.top_k == 50
    code, err = cli("evaluate", "--run", run.id, "--runs-dir", workspace / "results" / "runs")
    assert code == 0, err
    assert {"ap", "ap50"} <= set(run.metrics)


def test_a_truncated_weights_file_is_named(cli, custom_profile_run, guard, workspace):
    run, _ = custom_profile_run
    weights = run.model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    check = guard()
    code, err = cli("evaluate", "--run", run.id, "--runs-dir", workspace / "results" / "runs")
    assert code == 2 and err.startswith(f"error: {weights}: cannot read the weights (truncated or corrupt"), err
    check.check()


def test_notebooks_on_a_missing_file_is_one_error(cli, guard, workspace):
    check = guard()
    code, err = cli("notebooks", workspace / "99_missing.py", "--out", workspace / "out")
    assert code == 2 and err.startswith(f"error: {workspace / '99_missing.py'}: no such notebook source")
    check.check()


def test_ctrl_c_ends_in_one_line_saying_it_can_be_resumed(workspace):
    """A real SIGINT to a running command: exit 130, one line, no traceback; the rerun finishes the job."""
    out = workspace / "synthetic"
    command = [sys.executable, "-m", "castlib", "synth", "--format", "cityscapes", "--out", str(out),
               "--train", "400", "--val", "1", "--height", "64", "--width", "128"]
    # the child takes SIGINT as a terminal's Ctrl-C even when pytest itself was started in the background, where
    # the shell hands its children SIGINT ignored (Python then installs no KeyboardInterrupt handler)
    process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(out.glob("leftImg8bit/train/*/*.png")) and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=120)[1]
    lines = [line for line in err.splitlines() if line.strip() and "synthetic cityscapes" not in line]
    assert process.returncode == 130 and "Traceback" not in err
    assert lines == ["interrupted: every finished file is kept; run the same command again to resume from the last "
                     "checkpoint"]
    assert not (out / "synthetic.json").exists()
    done = subprocess.run([*command[:-6], "--train", "2", "--val", "1", "--height", "64", "--width", "128"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and (out / "synthetic.json").is_file(), done.stderr



def test_an_unwritable_results_folder_is_one_error_naming_it(cli, private, guard, workspace, monkeypatch):
    assert cli("prepare", *private)[0] == 0

    def refuse(*args, dir=None, **kwargs):  # root ignores chmod, so the OS's refusal is simulated
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr("castlib.io.tempfile.mkstemp", refuse)
    check = guard()
    code, err = cli("train", "--stage", "teacher_init", *private)
    assert code == 2 and err.startswith(f"error: {workspace / 'results' / 'runs'}/") and "Permission denied" in err
    check.check()


# Issue 32: a command trains what it names plus what that needs, and says what it trained and reused.
CHAINS = {
    "pseudo_labels": ["pseudo_labels"],
    "knowledge_transfer": ["pseudo_labels", "knowledge_transfer"],
    "student_refinement": ["pseudo_labels", "knowledge_transfer", "student_refinement"],
    "cast": ["pseudo_labels", "knowledge_transfer", "student_refinement"],
}


@pytest.mark.parametrize("teacher", ["zero_shot", "adapted"])
@pytest.mark.parametrize("stage", list(CHAINS))
def test_train_trains_the_stage_asked_for_and_nothing_after_it(cli, private, monkeypatch, stage, teacher):
    """`train --stage pseudo_labels --teacher zero_shot` also trained the stand-in backbone, knowledge transfer and
    refinement (92k iterations at paper lengths nobody asked for)."""
    from types import SimpleNamespace

    called = []

    def stage_function(name):
        def fake(cfg, *inputs, **options):
            called.append(name)
            return SimpleNamespace(id=name, dir=name, metrics={})

        return fake

    for name in ("teacher_init", "teacher_adaptation", *CHAINS["cast"]):
        monkeypatch.setattr(stages, name, stage_function(name))
    code, err = cli("train", "--stage", stage, "--teacher", teacher, *private)
    assert code == 0, err
    first = "teacher_init" if teacher == "zero_shot" else "teacher_adaptation"
    assert called == [first, *CHAINS[stage]]


def test_train_names_the_runs_it_trained_and_reused(cli, private, capsys, workspace):
    from castlib.__main__ import main

    assert cli("prepare", *private)[0] == 0
    cfg = _config(private)
    init = _would_open(cfg, "teacher_init", {})
    assert main(["train", "--stage", "teacher_init", *private]) == 0
    out = capsys.readouterr().out
    assert [p.name for p in (workspace / "results" / "runs").iterdir()] == [init]
    assert f"\ntrained: 1 run: teacher_init {init}\n" in out and "reused" not in out, out
    assert main(["train", "--stage", "teacher_init", *private]) == 0
    out = capsys.readouterr().out
    assert f"\nreused (complete already): 1 run: teacher_init {init}\n" in out and "trained" not in out, out


# Issue 32: `evaluate` after a deleted metrics.json kept no training record; the missing file's error gave no way on.
@pytest.fixture
def trained_run(cli, private):
    """A complete teacher_init run with a model and a training record of 7 iterations (made without training)."""
    assert cli("prepare", *private)[0] == 0
    cfg = _config(private)
    run = create_run(cfg, "teacher_init", lifecycle.stage_config(cfg, "teacher_init"), {}, cfg.seed,
                     data=lifecycle.input_digests(cfg, "teacher_init"))
    build_model(cfg, "teacher", 8).save_pretrained(run.model_dir)
    run.write_metrics({"ap": 0.0, "ap50": 0.0, "train": {"iterations": 7, "loss": 1.5}})
    run.mark_complete({"ap": 0.0, "ap50": 0.0})
    return run


def test_a_missing_metrics_file_says_how_to_recreate_it_and_the_record_is_kept(cli, private, trained_run, workspace):
    run = trained_run
    (run.dir / "metrics.json").unlink()
    runs = workspace / "results" / "runs"
    code, err = cli("train", "--stage", "teacher_init", *private)
    assert code == 2 and err.strip() == (f"error: {run.dir / 'metrics.json'}: missing: recreate it with `python -m "
                                         f"castlib evaluate --run {run.id} --runs-dir {runs}` (evaluates the run's "
                                         "model again; its training record is kept)"), err
    code, err = cli("evaluate", "--run", run.id, "--runs-dir", runs)
    assert code == 0, err
    assert run.metrics["train"] == {"iterations": 7, "loss": 1.5} and "ap" in run.metrics
    assert cli("train", "--stage", "teacher_init", *private)[0] == 0


def test_a_run_completed_before_complete_json_kept_the_record_is_rebuilt_from_its_log(trained_run):
    run = trained_run
    (run.dir / "complete.json").write_text(json.dumps({"finished": "2025-01-01 00:00:00", "ap": 0.0}))
    (run.dir / "log.csv").write_text("iteration,loss,lr/teacher\n0,2.0,0.1\n6,1.25,0.01\n")
    (run.dir / "metrics.json").unlink()
    assert run.training_record() == {"iterations": 7, "loss": 1.25, "lr/teacher": 0.01}


def test_an_incomplete_run_missing_its_metrics_says_to_resume_it(private, workspace):
    cfg = _config(private)
    run = create_run(cfg, "teacher_init", lifecycle.stage_config(cfg, "teacher_init"), {}, cfg.seed,
                     data={"dataset": "x"})
    from castlib.engine.runs import RunError

    with pytest.raises(RunError, match="is not complete; resume it with `python -m castlib train`"):
        run.metrics  # noqa: B018

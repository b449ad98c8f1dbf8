"""The CAST stages end to end on the smoke profile: runs, reuse, pseudo-labels, resume after a real kill, DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _workspace import prepared_config, set_args, workspace_overrides

from castlib.config import REPO_ROOT, load_config
from castlib.data.loaders import build_dataset, read_split_ids
from castlib.engine import fitting, lifecycle, loop, stages
from castlib.engine.checkpoint import load_checkpoint
from castlib.engine.runs import RunError, create_run
from castlib.models.base import WEIGHTS_FILE


def _overrides(root: Path) -> list[str]:
    return workspace_overrides(root)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("cast")


@pytest.fixture(scope="module")
def cfg(workspace):
    return prepared_config(workspace, _overrides(workspace))


@pytest.fixture(scope="module")
def pipeline(cfg):
    """The full CAST pipeline on the smoke profile, once for the module."""
    return stages.cast(cfg)


def _state(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / WEIGHTS_FILE))


def test_every_stage_runs_end_to_end_and_leaves_a_complete_run(pipeline):
    for name, run in pipeline.items():
        assert run.complete, name
    for name in ("teacher", "student", "refined"):
        run = pipeline[name]
        metrics = run.metrics
        assert 0.0 <= metrics["ap"] <= 100.0 and 0.0 <= metrics["ap50"] <= 100.0
        assert (run.model_dir / WEIGHTS_FILE).is_file() and run.checkpoint.is_file()
        header = (run.dir / "log.csv").read_text().splitlines()[0].split(",")
        assert "loss" in header and "sup/loss" in header and any(h.startswith("lr/") for h in header)
    kt_header = (pipeline["student"].dir / "log.csv").read_text().splitlines()[0].split(",")
    for term in ("semi/loss", "pxl/loss", "pxl/margin", "pxl/fnr", "lr/encoder", "lr/decoder", "grad_norm"):
        assert term in kt_header, term
    refined_header = (pipeline["refined"].dir / "log.csv").read_text().splitlines()[0].split(",")
    assert "semi/loss" not in refined_header and "pxl/loss" not in refined_header  # labels alone, L_sup only


def test_the_runs_chain_as_the_paper_says(pipeline):
    teacher, labels, student, refined = (pipeline[k] for k in ("teacher", "pseudo_labels", "student", "refined"))
    assert teacher.stage == "teacher_self_training"
    assert set(teacher.info["inputs"]) == {"init", "pseudo_labels"}  # step B re-initialised from theta_T^0
    runs = Path(teacher.dir).parent
    step_a_labels = json.loads((runs / teacher.info["inputs"]["pseudo_labels"] / "run.json").read_text())
    step_a = json.loads((runs / step_a_labels["inputs"]["teacher"] / "run.json").read_text())
    assert step_a["stage"] == "teacher_finetune" and step_a["inputs"] == {"init": teacher.info["inputs"]["init"]}
    assert labels.info["inputs"] == {"teacher": teacher.id}
    assert student.info["inputs"]["pseudo_labels"] == labels.id
    stand_in = json.loads((runs / student.info["inputs"]["stand_in"] / "run.json").read_text())  # the smoke stand-in
    assert stand_in["stage"] == "pretrain_backbone" and set(student.info["inputs"]) == {"pseudo_labels", "stand_in"}
    assert refined.info["inputs"] == {"student": student.id}


def test_the_supervised_only_student_trains_on_labels_alone_from_the_same_backbone(cfg, pipeline):
    """Main Table 3 "No distill.": the student's stand-in, L_sup only, the CAST student's whole length; no teacher
    key enters its id."""
    run = stages.supervised_student(cfg)
    assert run.complete and run.stage == "supervised_student"
    assert run.info["inputs"] == {"stand_in": pipeline["student"].info["inputs"]["stand_in"]}
    log = (run.dir / "log.csv").read_text().splitlines()
    header = log[0].split(",")
    assert "sup/loss" in header and "semi/loss" not in header and "pxl/loss" not in header
    assert run.metrics["train"]["iterations"] == cfg.train.student.iterations + cfg.train.refinement.iterations
    other_teacher = load_config("smoke", [*_overrides(Path(cfg.runs_dir).parent), "train.teacher.lr=1e-3"])
    assert stages.supervised_student(other_teacher).id == run.id


def test_pseudo_labels_are_written_in_the_dataset_format_and_read_by_the_ordinary_loader(cfg, pipeline):
    labels = pipeline["pseudo_labels"]
    unlabelled = read_split_ids(cfg, "unlabelled")
    dataset = build_dataset(cfg, "train", unlabelled, annotation_root=labels.pseudo_label_dir)
    assert len(dataset) == len(unlabelled)
    sample = dataset[0]
    assert sample.masks.shape[1:] == sample.image.shape[1:]
    assert not (sample.masks.sum(0) > 1).any()  # painted without overlap
    files = list(labels.pseudo_label_dir.rglob("*_gtFine_instanceIds.png"))
    assert len(files) == len(unlabelled)
    counts = [len(dataset[i].labels) for i in range(len(dataset))]
    assert labels.metrics["instances_per_image"] == pytest.approx(sum(counts) / len(counts))


def test_a_second_request_for_a_complete_run_trains_nothing(cfg, pipeline, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a complete run was trained again")

    monkeypatch.setattr(loop, "train", refuse)
    monkeypatch.setattr(fitting, "train", refuse)
    again = stages.cast(cfg)
    assert {k: r.id for k, r in again.items()} == {k: r.id for k, r in pipeline.items()}


def test_a_student_ablation_reuses_the_teacher_runs(cfg, pipeline):
    ablation = load_config("smoke", [*_overrides(Path(cfg.runs_dir).parent), "train.student.contrastive.score=squared"])
    teacher = stages.teacher_adaptation(ablation)
    assert teacher.id == pipeline["teacher"].id
    assert lifecycle.stage_config(ablation, "knowledge_transfer") != lifecycle.stage_config(cfg, "knowledge_transfer")


def test_changing_a_key_a_stage_never_reads_reuses_its_run(cfg, pipeline, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a run was trained again for a key it never reads")

    root = Path(cfg.runs_dir).parent
    timing = load_config("smoke", [*_overrides(root), "eval.efficiency.repeats=9", "data.num_workers=1",
                                   # the other format's sets (this is Cityscapes): target and source sizes
                                   "data.synthetic.ade20k.val=7", "data.synthetic.source.ade20k.train=9"])
    dice = load_config("smoke", [*_overrides(root), "loss.dice_weight=1.0", "train.student.iterations=7"])
    monkeypatch.setattr(fitting, "train", refuse)
    assert {k: r.id for k, r in stages.cast(timing).items()} == {k: r.id for k, r in pipeline.items()}
    assert stages.teacher_adaptation(dice).id == pipeline["teacher"].id  # the student's set criterion and length
    for stage in ("knowledge_transfer", "student_refinement"):
        assert lifecycle.stage_config(dice, stage) != lifecycle.stage_config(cfg, stage)  # ... which the student reads
    plain = load_config("smoke", [*_overrides(root), "loss.contrastive.temperature=0.5"])
    assert lifecycle.stage_config(plain, "teacher_finetune", contrastive=False) == \
        lifecycle.stage_config(cfg, "teacher_finetune", contrastive=False)


def test_a_zero_shot_teacher_is_a_valid_source_of_pseudo_labels(cfg, pipeline):
    zero_shot = stages.teacher_init(cfg)
    labels = stages.pseudo_labels(cfg, zero_shot)
    assert labels.complete and labels.id != pipeline["pseudo_labels"].id
    assert "ap" in zero_shot.metrics  # supplementary Table 6, teacher T1


def test_a_missing_upstream_run_is_named(cfg, pipeline):
    ghost = type(pipeline["student"])("deadbeef0000", Path(cfg.runs_dir) / "deadbeef0000")
    with pytest.raises(RunError, match="does not exist") as err:
        stages.student_refinement(cfg, ghost)
    assert err.value.path == ghost.dir


def test_a_corrupt_checkpoint_is_named_and_nothing_written_is_lost(cfg, pipeline):
    changed = load_config("smoke", [*_overrides(Path(cfg.runs_dir).parent), "train.refinement.iterations=4"])
    run = create_run(changed, "student_refinement", lifecycle.stage_config(changed, "student_refinement"),
                     {"student": pipeline["student"]}, changed.seed,
                     data=lifecycle.input_digests(changed, "student_refinement"))
    run.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    run.checkpoint.write_bytes(b"not a checkpoint")
    before = sorted(p.name for p in run.dir.rglob("*"))
    with pytest.raises(RunError, match="corrupt checkpoint") as err:
        stages.student_refinement(changed, pipeline["student"])
    assert err.value.path == run.checkpoint
    assert sorted(p.name for p in run.dir.rglob("*")) == before and run.checkpoint.read_bytes() == b"not a checkpoint"


def test_a_config_with_an_unknown_key_or_a_wrong_type_fails_on_the_command_line(tmp_path):
    cases = (("train.student.lrr=1", "unknown key"), ("train.student.iterations=many", "expected int"))
    for override, message in cases:
        done = subprocess.run(_train_command(tmp_path, "teacher_init", "--set", override), capture_output=True,
                              text=True, cwd=REPO_ROOT)
        assert done.returncode == 2 and message in done.stderr and override.split("=")[0] in done.stderr
        assert not (tmp_path / "runs").exists()  # nothing was started


def _train_command(root: Path, stage: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "castlib", "train", "--stage", stage,
            *set_args(_overrides(root)), *extra]


def test_a_killed_run_resumes_to_the_same_final_metrics_and_weights(pipeline, workspace, tmp_path):
    """A real SIGKILL of the training process mid-way, then the same command again."""
    longer = ["--set", "train.student.iterations=10"]
    for root in (tmp_path / "straight", tmp_path / "killed"):
        shutil.copytree(workspace / "data", root / "data")
        shutil.copytree(workspace / "splits", root / "splits")
        runs = root / "runs"
        for run in Path(workspace / "runs").iterdir():
            if run.is_dir() and json.loads((run / "run.json").read_text())["stage"] not in (
                    "knowledge_transfer", "student_refinement"):
                shutil.copytree(run, runs / run.name)
    subprocess.run(_train_command(tmp_path / "straight", "knowledge_transfer", *longer), check=True,
                   capture_output=True, cwd=REPO_ROOT)
    process = subprocess.Popen(_train_command(tmp_path / "killed", "knowledge_transfer", *longer),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
    killed_at = None
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        for checkpoint in (tmp_path / "killed" / "runs").glob("*/checkpoints/last.pt"):
            run_info = json.loads((checkpoint.parent.parent / "run.json").read_text())
            if run_info["stage"] == "knowledge_transfer":
                try:
                    killed_at = load_checkpoint(checkpoint)["iteration"]
                except RunError:
                    continue
                os.kill(process.pid, signal.SIGKILL)
                break
        if killed_at is not None:
            break
        time.sleep(0.05)
    process.wait()
    assert killed_at is not None and 0 < killed_at < 10, "the run was not caught mid-way"
    subprocess.run(_train_command(tmp_path / "killed", "knowledge_transfer", *longer), check=True,
                   capture_output=True, cwd=REPO_ROOT)
    [straight] = [r for r in (tmp_path / "straight" / "runs").iterdir()
                  if json.loads((r / "run.json").read_text())["stage"] == "knowledge_transfer"]
    resumed = tmp_path / "killed" / "runs" / straight.name
    where = lambda m: {k: v for k, v in m.items() if k != "ground_truth"}  # noqa: E731  (its path differs)
    metrics = [where(json.loads((d / "metrics.json").read_text())) for d in (straight, resumed)]
    assert metrics[0] == metrics[1] and metrics[0]["train"]["iterations"] == 10
    a, b = _state(straight / "model"), _state(resumed / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (resumed / "log.csv").read_text() == (straight / "log.csv").read_text()


def test_torchrun_with_two_cpu_processes_trains_a_stage_like_one_process(pipeline, workspace, tmp_path):
    """DDP (gloo) on 2 CPU processes trains the refinement: the same files and model shapes as one process."""
    root = tmp_path / "ddp"
    shutil.copytree(workspace / "data", root / "data")
    shutil.copytree(workspace / "splits", root / "splits")
    refined = pipeline["refined"]
    for run in Path(workspace / "runs").iterdir():
        if run.is_dir() and run.name != refined.id:
            shutil.copytree(run, root / "runs" / run.name)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = _train_command(root, "cast")[1:]  # torchrun runs `-m castlib train ...` itself
    done = subprocess.run([*torchrun, *command], capture_output=True, text=True, cwd=REPO_ROOT, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = root / "runs" / refined.id
    assert (ddp / "complete.json").is_file()
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if "tensorboard" not in str(p))  # noqa: E731
    assert files(ddp) == files(refined.dir)
    a, b = _state(ddp / "model"), _state(refined.model_dir)
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert json.loads((ddp / "metrics.json").read_text()).keys() == refined.metrics.keys()


def test_evaluate_command_rewrites_metrics_of_a_run(pipeline, cfg):
    run = pipeline["refined"]
    before = run.metrics
    command = [sys.executable, "-m", "castlib", "evaluate", "--run", run.id, "--runs-dir", str(cfg.runs_dir)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    after = run.metrics
    assert after["ap"] == before["ap"] and after["train"] == before["train"]

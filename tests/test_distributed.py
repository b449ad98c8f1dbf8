"""Any process count, the same global batch (DESIGN 9): the split of a global batch over processes, the loss
weights that make the summed gradient the one-process gradient (gloo, exact on a count-normalised toy loss),
and the smoke teacher step B (2 + 2 images) and student step under ``torchrun`` at 2 and 4 processes against
one process, with the stages completing (sharded evaluation included)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import _ddp_toy
import pytest
import torch
import torch.multiprocessing as mp
from _workspace import prepared_config, set_args, workspace_overrides

from castlib.config import REPO_ROOT
from castlib.engine import stages
from castlib.engine.batches import split_batch

# -- the split --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("units, world, micro", [(2, 4, 0), (3, 2, 0), (4, 8, 0), (5, 3, 1), (4, 1, 3), (7, 4, 2)])
def test_every_unit_is_computed_once_and_the_weights_add_up_to_the_global_batch(units, world, micro):
    plans = [split_batch(units, world, r, micro) for r in range(world)]
    assert len({len(p) for p in plans}) == 1, "every process runs as many forwards"
    real = [u for p in plans for f in p if f.weight > 0 for u in f.units]
    assert sorted(real) == list(range(units))
    assert sum(f.weight for p in plans for f in p) == pytest.approx(1.0)
    for f in range(len(plans[0])):  # within a round, the shares add up to 1
        assert sum(p[f].share for p in plans) == pytest.approx(1.0)
    assert all(f.units and (f.weight > 0) == (f.share > 0) for p in plans for f in p)
    if micro:
        assert all(len(f.units) <= micro for p in plans for f in p)


# -- the weights: one step of a count-normalised loss at 1 and 3 processes (gloo) ----------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uneven_shares_stand_ins_and_micro_batches_against_one_process(tmp_path):
    """5 units over 3 processes (2, 2, 1), 2 units (one stand-in), and micro-batches of 1 unit (2 rounds, a
    stand-in in the second): the summed loss and gradient of a count-normalised loss equal one process's for a
    single forward per process (float32 summation order only); with micro-batches each round is normalised by
    its own count, so it is the usual gradient accumulation, equal only when the rounds' counts are even."""
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_toy.worker, args=(3, _free_port(), str(out)), nprocs=3)
    many = torch.load(out)
    for units, micro in _ddp_toy.CASES:
        one = _ddp_toy.one_step(0, 1, units, micro)
        if micro:
            assert many[units, micro]["loss"] == pytest.approx(one["loss"], rel=0.5)
            continue
        assert many[units, micro]["loss"] == pytest.approx(one["loss"], rel=1e-6)
        assert torch.allclose(many[units, micro]["grad"], one["grad"], rtol=1e-5, atol=1e-7)


# -- the smoke stages under torchrun ------------------------------------------------------------------------------

# step B with Table 2's teacher batch (2 labelled + 2 pseudo-labelled), the student's 2 + 2, one iteration each
_EXTRA = ("data.synthetic.cityscapes.train=20", "data.synthetic.cityscapes.val=4", "model.stand_in=false",
          "train.teacher.batch_size=4", "train.teacher.finetune_iterations=1",
          "train.teacher.self_training_iterations=1", "train.student.iterations=1")
# Relative tolerance of the first step's loss against one process. The normalisation is the same (every count comes
# from global_normaliser); the random draws are not: dropout 0.1, the set criterion's sampled points, L_pxl's
# negatives from each process's own images. Measured (docs/findings/distributed.md): the student 0.01% apart, the
# teacher 4.2% (its detection term under Grounding DINO's dropout; equal to 1e-7 in eval mode); a weighting without
# the global counts was 33% off, one without DDP's compensation is off by the process count.
LOSS_RTOL = {"teacher_self_training": 0.10, "knowledge_transfer": 0.01}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    cfg = prepared_config(root, workspace_overrides(root, *_EXTRA))
    teacher = stages.teacher_adaptation(cfg)
    student = stages.knowledge_transfer(cfg, stages.pseudo_labels(cfg, teacher))
    return root, {"teacher_self_training": teacher, "knowledge_transfer": student}


def _first_row(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "log.csv") as f:
        return {k: float(v) for k, v in next(csv.DictReader(f)).items() if v}


def _torchrun(one_process, tmp_path, nproc: int) -> tuple[Path, subprocess.CompletedProcess]:
    """The 1-process workspace without its step-B and student runs, both trained again by ``nproc`` processes."""
    source, runs = one_process
    root = tmp_path / f"n{nproc}"
    shutil.copytree(source / "data", root / "data")
    shutil.copytree(source / "splits", root / "splits")
    retrain = {r.id for r in runs.values()}
    for run in (source / "runs").iterdir():
        if run.is_dir() and run.name not in retrain:
            shutil.copytree(run, root / "runs" / run.name)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "castlib", "train", "--stage", "knowledge_transfer",
               *set_args(workspace_overrides(root, *_EXTRA))]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    return root, done


@pytest.mark.slow  # 6.5 minutes on the shared 2 cores: the 1-process chain (4.5), then 2 and 4 processes (~1 each)
@pytest.mark.parametrize("nproc", [2, 4])
def test_torchrun_step_b_and_student_first_step_loss_equals_one_process(one_process, tmp_path, nproc):
    """Step B's 2 + 2 images at 4 processes: two take a pair each, two run stand-in forwards of weight 0."""
    root, done = _torchrun(one_process, tmp_path, nproc)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    for stage, run in one_process[1].items():
        ddp = root / "runs" / run.id
        assert (ddp / "complete.json").is_file(), f"{stage} did not complete under {nproc} processes"
        assert (ddp / "metrics.json").read_text() and (ddp / "eval" / "coco_results.json").is_file()
        one, many = _first_row(run.dir), _first_row(ddp)
        print(f"{stage} first step: 1 process loss {one['loss']:.5f} grad_norm {one.get('grad_norm', 0):.4f}; "
              f"{nproc} processes loss {many['loss']:.5f} grad_norm {many.get('grad_norm', 0):.4f}")
        assert many["loss"] == pytest.approx(one["loss"], rel=LOSS_RTOL[stage]), stage


# -- table --jobs: a GPU per worker -------------------------------------------------------------------------------

def test_table_workers_get_a_gpu_each_and_more_workers_than_gpus_is_an_error(monkeypatch):
    from castlib.config import load_config
    from castlib.errors import CastError
    from castlib.report import jobs

    cfg = load_config("smoke")
    monkeypatch.setattr(jobs, "visible_gpus", lambda: ["2", "5"])
    cfg.device = "cuda"
    assert jobs.worker_gpus(cfg, 2) == ["2", "5"]
    with pytest.raises(CastError, match="--jobs 3: only 2 GPU"):
        jobs.worker_gpus(cfg, 3)
    cfg.device = "cpu"
    assert jobs.worker_gpus(cfg, 3) is None
    queue = __import__("queue").Queue()
    for gpu in ("2", "5"):
        queue.put(gpu)
    seen = []
    for _ in range(2):  # what each spawned worker's initializer does (its parent: this process's own parent)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        jobs._init_worker(os.getppid(), queue)
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["2", "5"]


def test_an_uneven_batch_for_a_one_forward_caller_is_a_cast_error():
    from castlib.engine.batches import batch_stream
    from castlib.errors import CastError

    with pytest.raises(CastError, match="cannot be split evenly over 4 processes"):
        batch_stream(list(range(8)), batch_size=2, seed=0, rank=1, world=4)

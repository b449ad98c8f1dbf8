"""benchmarks/gpu_check.py (issue 30 item 5): its CPU part runs at smoke sizes and records every part; one part
failing or overrunning its budget keeps the others' results."""

from __future__ import annotations

import json
import time

import torch

from benchmarks import gpu_check

PARTS = ["data", "student_step", "teacher_step", "inference", "contrastive", "stages"]


def test_gpu_check_runs_its_cpu_part_and_records_each_part(tmp_path):
    record = gpu_check.run(tmp_path, tiny=True)
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == record
    assert list(record["parts"]) == PARTS
    assert {name: part["status"] for name, part in record["parts"].items()} == dict.fromkeys(PARTS, "ok")
    assert record["device"] and record["torch"] == torch.__version__ and record["tiny"]
    if not torch.cuda.is_available():
        assert record["paper_size"].startswith("skipped: no CUDA device")
    parts = {name: part["result"] for name, part in record["parts"].items()}
    for step in ("student_step", "teacher_step"):
        assert all(parts[step][precision]["step_s"] > 0 for precision in ("bf16", "fp32"))
    fps = parts["inference"]
    assert fps["student/float32"]["paper_fps"] == 13.0 and fps["teacher/float32"]["fps"] > 0
    assert parts["contrastive"]["anchors"] == 4 * (112 // 14) * (224 // 14)  # smoke: batch 4 at a 112 x 224 crop
    stages = parts["stages"]["runs"]
    assert set(stages) == {"teacher", "pseudo_labels", "student", "refined"}
    assert all(run["ap"] is not None for name, run in stages.items() if name != "pseudo_labels")


def test_a_failing_or_overrunning_part_keeps_the_others(tmp_path, monkeypatch):
    def boom(*args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(gpu_check, "TINY_BUDGET_S", dict.fromkeys(PARTS, 0.5))
    monkeypatch.setattr(gpu_check, "training_step", lambda *args: {"step_s": 1.0})
    monkeypatch.setattr(gpu_check, "inference", boom)
    monkeypatch.setattr(gpu_check, "contrastive", lambda *args: time.sleep(5))
    monkeypatch.setattr(gpu_check, "stage_pass", lambda *args: {"seconds": 0.0})
    record = gpu_check.run(tmp_path, tiny=True)
    status = {name: part["status"] for name, part in record["parts"].items()}
    assert status == {"data": "ok", "student_step": "ok", "teacher_step": "ok", "inference": "error",
                      "contrastive": "timeout", "stages": "ok"}
    assert "RuntimeError: out of memory" in record["parts"]["inference"]["error"]
    assert record["parts"]["contrastive"]["seconds"] < 2

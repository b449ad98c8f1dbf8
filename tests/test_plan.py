"""What a plan costs (issue 30 item 4): FLOPs against closed forms, GPU hours and disk per table for the paper
profile without weights or data, and step times measured without writing a run."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from _workspace import prepared_config, workspace_overrides
from torch import nn

from castlib.__main__ import main
from castlib.config import load_config
from castlib.engine.runs import runs_dir
from castlib.eval.efficiency import count_flops, parameter_counts, shape_only
from castlib.models import build_model
from castlib.report import costs as C


class TwoConvs(nn.Module):
    """conv1 (3 -> 8, 3x3) gives the features, conv2 (8 -> 4, 1x1) the mask logits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 4, 1, bias=False)

    def encode(self, images):
        return self.conv1(images)

    def forward(self, images):
        features = self.conv1(images)
        return SimpleNamespace(class_logits=None, mask_logits=self.conv2(features), features=features)


def test_flops_of_two_convolutions_match_the_closed_form_and_frozen_layers_cost_no_backward():
    height, width = 16, 24
    first, second = 2 * 8 * 3 * 9 * height * width, 2 * 4 * 8 * height * width  # 2 x MACs
    model = TwoConvs()
    flops = count_flops(model, (height, width), batch_size=2)  # per image
    # backward: conv2's weight and input gradients, conv1's weight gradient (the image needs none)
    assert (flops.forward, flops.backward, flops.encode) == (first + second, first + 2 * second, first)
    assert flops.training(contrastive=True) == 2 * first + 3 * second + first
    model.conv1.requires_grad_(False)  # a frozen encoder: neither its weight nor its input gradient is computed
    assert count_flops(model, (height, width)).backward == second


def test_student_encoder_flops_match_a_vit_closed_form():
    cfg = load_config("smoke")
    spec = cfg.model.backbones.dinov2_s
    model = shape_only(lambda: build_model(cfg, "student", 8, pretrained=False))
    height, width = 112, 224
    tokens, d = (height // 14) * (width // 14) + 1, spec.hidden_size  # patches and the class token
    patch_embedding = 2 * d * 3 * 14 * 14 * (tokens - 1)
    layer = 2 * tokens * (4 * d * d + 8 * d * d) + 2 * 2 * tokens * tokens * d  # qkv + out, MLP x4; QK^T and AV
    assert count_flops(model, (height, width), backward=False).encode == patch_embedding + spec.num_layers * layer
    counts = parameter_counts(model)
    assert counts["params"] == counts["trainable"] == sum(p.numel() for p in model.parameters())


def test_table_costs_count_a_shared_run_in_each_table_and_once_in_the_total():
    frame = pd.DataFrame({"complete": [False, False, True], "tables": ["Table 3, Table 4", "Table 4", "Table 3"],
                          "estimated s": [3600.0, 7200.0, 0.0], "disk GB": [1.0, 2.0, 4.0],
                          "source": ["estimated", "measured", "measured"]})
    costs = C.table_costs(frame, gpus=4).set_index("table")
    assert list(costs.index) == ["Table 3", "Table 4", "total"]
    assert list(costs["GPU h"]) == [1.0, 3.0, 3.0] and list(costs["wall h on 4"]) == [0.25, 0.75, 0.75]
    assert list(costs["disk GB"]) == [5.0, 3.0, 7.0]
    assert list(costs.source) == ["1 estimated", "1 measured + 1 estimated", "1 measured + 1 estimated"]


def test_gpu_types_come_from_one_table():
    assert C.gpu_type("NVIDIA H200").peak_tflops == C.GPU_PEAK_TFLOPS["H200"]
    assert C.gpu_type(None).name == C.DEFAULT_GPU
    assert C.gpu_type("a100", 0.5).seconds(312e12) == pytest.approx(2.0)
    with pytest.raises(C.CastError, match="known: A100"):
        C.gpu_type("TPU")


@pytest.mark.slow  # about a minute: the paper student's FLOPs are counted on fake tensors
def test_paper_plan_prints_gpu_hours_and_disk_per_table_without_weights_or_data(tmp_path, capsys):
    sets = [f"runs_dir={tmp_path / 'runs'}", f"data.splits_dir={tmp_path / 'splits'}", "seeds=[0]"]
    args = ["plan", "--profile", "paper", "--data-root", str(tmp_path / "no-cityscapes"), "--gpus", "8",
            "--tables", "4", *(a for s in sets for a in ("--set", s))]
    assert main(args) == 0
    out = capsys.readouterr().out
    table = out[out.index("cost per table"):].splitlines()
    header = table[1].split()
    rows = {line.split()[0] + (" " + line.split()[1] if line.startswith("Table") else ""): line
            for line in table[2:4]}
    assert header[:3] == ["table", "runs", "to"] and set(rows) == {"Table 4", "total"}
    values = rows["Table 4"].split()
    gpu_hours, wall_hours, disk = float(values[4]), float(values[5]), float(values[6])
    assert gpu_hours > 0 and wall_hours == pytest.approx(gpu_hours / 8, rel=1e-3) and disk > 0
    assert values[-1] == "estimated"  # nothing measured: no complete runs, no --measure-steps
    assert "on A100 at 35% of its 312 TFLOP/s" in out and "wall h: GPU h / 8" in out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "no-cityscapes").exists()


@pytest.mark.slow  # about a minute on 2 cores: builds and steps a smoke teacher and student
def test_measured_step_times_train_a_few_steps_and_write_no_run(tmp_path):
    cfg = prepared_config(tmp_path, workspace_overrides(tmp_path))
    keys = {"student_refinement/dinov2_s", "teacher_self_training", "guided_distillation/resnet50"}
    timed = C.measure_step_times(cfg, 1, keys)
    assert set(timed) == {"student_refinement/dinov2_s", "teacher_self_training", "inference/student/dinov2_s",
                          "inference/teacher"}  # Guided Distillation's step is not built by cast_training
    assert all(seconds > 0 for seconds in timed.values())
    assert not runs_dir(cfg).exists()
    assert torch.is_grad_enabled()


def test_disk_need_is_the_disk_of_the_incomplete_runs(tmp_path):
    cfg = load_config("smoke", workspace_overrides(tmp_path))
    plan = C.plan_tables(cfg, [4])
    costs = C.Costs(C.gpu_type())
    expected = sum(costs.disk(planned) for planned in plan.runs.values())
    assert C.disk_need(cfg, [4]) == expected > 0

"""Efficiency records (main-paper Fig. 2) on small modules whose parameters, FLOPs and memory are known."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
import torch
from torch import nn

from castlib.eval import compare_efficiency, efficiency_table, measure_efficiency


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 1))


class WideActivations(nn.Module):
    """One 1x1 convolution to 64 channels: activations of 64 * H * W floats per image, beside tiny weights."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images).relu().mean()


def test_parameters_and_flops_are_counted_exactly():
    record = measure_efficiency(small_net(), input_size=(32, 48), batch_size=2, warmup=0, repeats=1)
    assert record.params == (3 * 16 * 9 + 16) + (16 * 8 + 8)
    # A convolution costs 2 FLOPs (multiply + add) per weight per output pixel; biases and ReLU are not counted.
    pixels = 2 * 32 * 48
    assert record.flops == 2 * pixels * (16 * 3 * 9 + 8 * 16)


def test_a_record_names_its_setting_and_fps_is_batch_over_latency():
    record = measure_efficiency(small_net(), input_size=(32, 48), batch_size=3, warmup=1, repeats=4)
    assert record.device.startswith("cpu:") and record.dtype == "float32"
    assert record.input_size == (32, 48) and record.batch_size == 3 and record.repeats == 4
    assert record.threads == torch.get_num_threads()
    assert record.latency_ms > 0 and record.latency_iqr_ms >= 0
    assert record.fps == pytest.approx(3 / (record.latency_ms / 1000))


def test_bfloat16_runs_under_autocast_and_says_so():
    record = measure_efficiency(small_net(), input_size=(16, 16), dtype="bfloat16", warmup=0, repeats=1)
    assert record.dtype == "bfloat16"


def test_the_model_mode_is_given_back():
    model = small_net().train()
    measure_efficiency(model, input_size=(16, 16), warmup=0, repeats=1)
    assert model.training


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU peak memory is read from Linux /proc")
def test_cpu_peak_memory_sees_the_activations():
    # 64 channels x 256 x 512 float32 = 32 MiB per activation map; conv output and ReLU output coexist.
    record = measure_efficiency(WideActivations(), input_size=(256, 512), warmup=1, repeats=2)
    activation_mb = 64 * 256 * 512 * 4 / 2**20
    assert record.peak_memory_mb >= record.weights_mb + activation_mb
    assert record.peak_memory_mb < 8 * activation_mb


def test_models_are_put_side_by_side():
    table = compare_efficiency({"teacher": WideActivations(), "student": small_net()}, input_size=(32, 32),
                               warmup=0, repeats=2)
    assert isinstance(table, pd.DataFrame) and list(table.index) == ["teacher", "student"]
    assert table.loc["teacher", "params_M"] == pytest.approx((3 * 64 + 64) / 1e6)
    assert table.loc["student", "GFLOPs"] == pytest.approx(2 * 32 * 32 * (16 * 3 * 9 + 8 * 16) / 1e9)
    assert {"latency_ms", "fps", "peak_memory_mb", "device", "dtype", "input_size", "threads"} <= set(table.columns)
    assert list(table.T.columns) == ["teacher", "student"]
    assert efficiency_table([]).empty


def test_teacher_and_student_side_by_side_with_the_students_change(smoke_config):
    from castlib.eval.efficiency import teacher_vs_student

    cfg = smoke_config("eval.efficiency.warmup=0", "eval.efficiency.repeats=1")
    table = teacher_vs_student(cfg)
    assert list(table.index) == ["teacher", "student", "student vs teacher"]
    assert table.loc["teacher", "params_M"] > table.loc["student", "params_M"] > 0
    expected = 100 * (table.loc["student", "params_M"] / table.loc["teacher", "params_M"] - 1)
    assert table.loc["student vs teacher", "params_M"] == f"{expected:+.1f}%"
    assert table.loc["student", "input_size"] == tuple(cfg.eval.efficiency.input_size)


class Tied(nn.Module):
    """Two heads sharing one weight (as Grounding DINO's box heads do), and a buffer."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
        self.b.weight = self.a.weight
        self.register_buffer("scale", torch.ones(3))


def test_a_shape_only_model_keeps_tied_weights_tied():
    from castlib.eval.efficiency import parameter_counts, shape_only

    model = shape_only(Tied)
    assert model.a.weight is model.b.weight and model.a.weight.device.type == "cpu"
    assert parameter_counts(model) == {"params": 16, "trainable": 16, "buffers": 3}

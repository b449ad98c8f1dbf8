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


# ---------------------------------------------------------------------------------------------------------------
# Main-paper Fig. 2 as a table (castlib efficiency).

def fake_counts(teacher_flops=3e12, student_flops=1e12):
    from castlib.eval.efficiency import ArchitectureCount

    return {"teacher": ArchitectureCount("teacher", 559_000_000, int(teacher_flops), (1022, 2044), 1.0, "resized"),
            "student": ArchitectureCount("student", 55_000_000, int(student_flops), (1022, 2044), 1.0)}


def test_paper_size_models_have_the_papers_parameters_counted_from_their_architectures():
    """configs/paper.yaml's architectures, built without weights: the teacher (MM-Grounding-DINO Swin-L + SAM2.1
    Hiera-L) has the hub teacher's 559.5M parameters, within 2% of Fig. 2's 568M; the student (DINOv2-S + the
    Mask2Former decoder) 54.8M, within 6% of Fig. 2's 52M."""
    from castlib.eval.efficiency import paper_size_counts
    from castlib.paper import FIG2_EFFICIENCY

    counts = paper_size_counts("cityscapes", flops=False)
    teacher, student = counts["teacher"].params, counts["student"].params
    assert teacher == pytest.approx(559.5e6, rel=1e-3)
    assert teacher == pytest.approx(FIG2_EFFICIENCY["teacher"]["params_M"] * 1e6, rel=0.02)
    assert student == pytest.approx(54.8e6, rel=1e-3)
    assert student == pytest.approx(FIG2_EFFICIENCY["student"]["params_M"] * 1e6, rel=0.06)
    assert counts["teacher"].flops is None and counts["teacher"].input_size == (1022, 2044)  # paper.yaml's setting


def test_paper_size_student_flops_grow_with_the_input():
    """The student's FLOPs are counted at the input size asked for (2.4 s at 112x224): four times the pixels cost
    3-6 times the FLOPs (the encoder's attention grows faster than the pixels, the decoder's queries slower)."""
    from castlib.eval.efficiency import paper_size_counts

    small = paper_size_counts(input_size=(112, 224), models=["student"])["student"].flops
    large = paper_size_counts(input_size=(224, 448), models=["student"])["student"].flops
    assert small > 1e10 and 3 * small < large < 6 * small


@pytest.mark.slow
def test_paper_size_teacher_flops_follow_the_aspect_ratio_not_the_size():
    """The teacher resizes its input itself (Grounding DINO to a shorter side of 800, SAM2 to 1024x1024), so its
    counted FLOPs (about 5.6 TFLOPs, 12 s to count) are one number for every image of an aspect ratio."""
    from castlib.eval.efficiency import paper_size_counts

    flops = [paper_size_counts(input_size=size, models=["teacher"])["teacher"].flops for size in ((112, 224),
                                                                                                   (512, 1024))]
    assert flops[0] == flops[1] > 1e12


CHANGED_FIG2 = {"teacher": {"params_M": 600, "GFLOPs": 1000, "latency_ms": 400.0, "peak_memory_GB": 8.0, "fps": 2.5,
                           "ap": 30.0},
               "student": {"params_M": 60, "GFLOPs": 250, "latency_ms": 100.0, "peak_memory_GB": 1.0, "fps": 10.0,
                           "ap": 36.0}}


@pytest.fixture(scope="module")
def fig2(tmp_path_factory):
    """The smoke config and its Fig. 2 table (measured once: a few seconds), built with castlib.paper's Fig. 2
    replaced by :data:`CHANGED_FIG2`, so that a number typed anywhere but castlib.paper would show."""
    import castlib.paper
    from castlib.config import load_config
    from castlib.eval.efficiency import fig2_table

    root = tmp_path_factory.mktemp("fig2")
    cfg = load_config("smoke", [f"data.data_dir={root / 'data'}", "eval.efficiency.warmup=0",
                                "eval.efficiency.repeats=1"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(castlib.paper, "FIG2_EFFICIENCY", CHANGED_FIG2)
        table = fig2_table(cfg, paper_size=fake_counts(), ap={"teacher": 1.5, "student": 2.5},
                           runs={"teacher": "aaa111", "student": "bbb222"})
    return cfg, table


def test_fig2_table_puts_the_papers_numbers_beside_the_paper_size_and_measured_models(fig2):
    """The paper column is castlib.paper's constant, the paper-size columns are the counts, the measured ones the
    profile's models, each group with the student's change."""
    table = fig2[1].set_index("metric")
    assert list(table.index) == ["params (M)", "GFLOPs", "latency (ms)", "peak memory (GB)", "FPS", "maskAP"]
    assert table["paper teacher"].tolist() == [600, 1000, 400.0, 8.0, 2.5, 30.0]
    assert table["paper student"].tolist() == [60, 250, 100.0, 1.0, 10.0, 36.0]
    assert table.loc["params (M)", "paper change"] == "-90.0%" and table.loc["FPS", "paper change"] == "+300.0%"
    assert table.loc["params (M)", "paper-size teacher"] == 559.0
    assert table.loc["GFLOPs", "paper-size student"] == 1000.0 and table.loc["GFLOPs", "paper-size change"] == "-66.7%"
    assert table.loc["latency (ms)", "paper-size teacher"] == "not measured"
    measured = table.loc["params (M)", ["measured teacher", "measured student"]].tolist()
    assert 0 < measured[1] < measured[0] < 10  # the smoke stand-ins: a few million parameters
    assert table.loc["maskAP", "measured student"] == 2.5 and table.loc["maskAP", "measured change"] == "+66.7%"


def test_fig2_table_names_its_data_commit_and_machine_and_says_smoke_ap_is_0(fig2, tmp_path):
    from castlib.data.loaders import describe_data
    from castlib.eval.efficiency import write_fig2_table
    from castlib.machine import git_commit, hardware

    cfg, table = fig2
    csv, md = write_fig2_table(table, tmp_path / "efficiency")
    text = md.read_text()
    assert describe_data(cfg) in text.splitlines()[0] and "synthetic set" in text
    assert f"- commit: {git_commit()}" in text and f"- machine: {hardware()}" in text
    assert "maskAP is 0 by design" in text and "tiny stand-ins" in text and "aaa111" in text
    assert "not the paper's" in text
    read = pd.read_csv(csv, comment="#")
    assert read["metric"].tolist()[0] == "params (M)" and read.loc[0, "paper teacher"] == 600


def test_the_efficiency_command_writes_the_fig2_table(tmp_path, monkeypatch, capsys):
    import castlib.eval.efficiency as E
    from castlib.__main__ import main

    monkeypatch.setattr(E, "paper_size_counts", lambda dataset: fake_counts())
    assert main(["efficiency", "--profile", "smoke", "--set", f"data.data_dir={tmp_path / 'data'}",
                 "--set", "eval.efficiency.warmup=0", "--set", "eval.efficiency.repeats=1",
                 "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "efficiency_smoke_cityscapes.md").read_text()
    assert text.startswith("## Teacher vs student efficiency (main-paper Fig. 2) on the synthetic set")
    assert "| params (M)       |          568    |           52    | -90.8%" in text

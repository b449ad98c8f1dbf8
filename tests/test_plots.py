"""Figures state their data (synthetic set, image size, counts, or the real root; on smoke that AP is 0 by design),
and supplementary Fig. 1 shows the teacher's instances at its pseudo-label threshold, counted in each title."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from castlib.config import load_config
from castlib.data.datasets import CityscapesInstances
from castlib.data.loaders import data_record, describe_data
from castlib.engine.runs import Run
from castlib.eval.inference import Prediction
from castlib.report import plots


@pytest.fixture
def small_cfg(tmp_path):
    """The smoke profile on a 4 + 2 image synthetic set under ``tmp_path`` (generated when first read)."""
    return load_config("smoke", [f"data.data_dir={tmp_path / 'data'}", f"data.splits_dir={tmp_path / 'splits'}",
                                 "data.synthetic.cityscapes.train=4", "data.synthetic.cityscapes.val=2"])


def caption(fig) -> str:
    text = plots.figure_caption(fig)
    plt.close(fig)
    return text


def test_the_data_line_names_the_synthetic_set_and_says_smoke_ap_is_0(small_cfg):
    line = plots.data_caption(small_cfg)
    assert describe_data(small_cfg) in line and "synthetic set" in line and "128x256" in line
    assert "4 train / 2 val images" in line and "maskAP is 0 by design" in line
    mini = load_config("mini")
    assert "by design" not in plots.data_caption(mini) and describe_data(mini) in plots.data_caption(mini)
    assert "profile `mini`" in plots.data_caption(mini) and "profile `smoke`" in line
    real = load_config("smoke", ["data.root=/datasets/cityscapes"])
    assert "real cityscapes at /datasets/cityscapes" in plots.data_caption(real)
    table = pd.DataFrame({"a": [1]})
    assert plots.data_caption(table) == plots.NOT_STATED == plots.data_caption(None)
    table.attrs.update({"data": "synthetic set x (1 train / 1 val images, 8x16)", "profile": "smoke"})
    assert plots.data_caption(table).startswith("data: synthetic set x") and "by design" in plots.data_caption(table)


def test_figures_of_samples_and_pseudo_labels_name_their_data(small_cfg, cityscapes_root):
    dataset = CityscapesInstances(cityscapes_root, "train")
    samples = [dataset[i] for i in range(2)]
    line = plots.data_caption(small_cfg)
    assert line in caption(plots.show_samples(samples, dataset.classes.names, data=small_cfg))
    assert line in caption(plots.pseudo_label_figure(samples, samples, data=small_cfg))
    assert line in caption(plots.show_views(samples[0].replace(strong=samples[0].image), data=small_cfg))
    assert caption(plots.pseudo_label_figure(samples, samples)).endswith(plots.NOT_STATED)  # the omission shows


def test_training_curves_name_the_data_their_run_recorded(small_cfg, tmp_path):
    run_dir = tmp_path / "runs" / "abc123"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"id": "abc123", "stage": "knowledge_transfer", "profile": "smoke",
                                                  "data_source": data_record(small_cfg)}))
    pd.DataFrame({"iteration": [1, 2], "total": [2.0, 1.0], "sup/loss_ce": [1.0, 0.5], "pxl/loss": [1.0, 0.5],
                  "pxl/margin": [0.1, 0.2], "pxl/fnr": [0.3, 0.2]}).to_csv(run_dir / "log.csv", index=False)
    log = plots.read_log(Run("abc123", run_dir))
    assert log.attrs["data"] == describe_data(small_cfg) and log.attrs["profile"] == "smoke"
    text = caption(plots.training_curves(log, "knowledge transfer"))
    assert text.startswith("knowledge transfer") and plots.data_caption(small_cfg) in text
    assert plots.data_caption(small_cfg) in caption(plots.contrastive_diagnostics({"default": log}))
    assert caption(plots.training_curves(log, data="data: given")).endswith("data: given")


def test_plots_label_both_axes(small_cfg, tmp_path):
    """The loss curves and Proposition 3.1's panels say what their y axis measures."""
    log = pd.DataFrame({"iteration": [1, 2], "total": [2.0, 1.0], "sup/loss_ce": [1.0, 0.5], "pxl/loss": [1.0, 0.5],
                        "pxl/margin": [0.1, 0.2], "pxl/fnr": [0.3, 0.2], "pxl/background_share": [0.5, 0.4]})
    for fig in (plots.training_curves(log, "t", data=small_cfg), plots.contrastive_diagnostics({"a": log}, small_cfg),
                plots.efficiency_figure(fig2_like())):
        assert all(ax.get_xlabel() or ax.get_xticklabels() for ax in fig.axes)
        assert all(ax.get_ylabel() for ax in fig.axes), [ax.get_title() for ax in fig.axes]
        plt.close(fig)
    fig = plots.training_curves(log, "t", data=small_cfg)
    plotted = {line.get_label() for ax in fig.axes for line in ax.get_lines()}
    assert "background_share" not in plotted and "loss_ce" in plotted  # a diagnostic is not a loss term
    plt.close(fig)


def test_the_figures_are_not_pyplot_figures(small_cfg):
    """A widget's callback runs on a kernel subshell thread in JupyterLab 4.6: figures pyplot tracked came out blank
    there, so the builders make figures of their own (new_figure)."""
    log = pd.DataFrame({"iteration": [1, 2], "total": [2.0, 1.0], "pxl/margin": [0.1, 0.2], "pxl/fnr": [0.3, 0.2]})
    figures = [plots.training_curves(log, "t", data=small_cfg), plots.contrastive_diagnostics({"a": log}, small_cfg),
               plots.efficiency_figure(fig2_like())]
    assert not plt.get_fignums() and all(fig.axes for fig in figures)


def test_save_figure_shows_the_figure_inline_in_a_kernel_and_writes_it(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda image: shown.append(image))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    assert plots.save_figure(fig, tmp_path / "a.png") == tmp_path / "a.png"
    assert shown == [] and not plt.get_fignums()  # outside a kernel: written only, and closed
    monkeypatch.setattr(plots, "in_kernel", lambda: True)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    plots.save_figure(fig, tmp_path / "b.pdf")
    assert (tmp_path / "b.pdf").read_bytes()[:4] == b"%PDF" and (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    (image,) = shown
    assert image.format == "png" and image.data[:4] == b"\x89PNG" and not plt.get_fignums()


def fig2_like(profile="smoke", data="synthetic set s (4 train / 2 val images, 128x256)") -> pd.DataFrame:
    rows = []
    for metric in ("params (M)", "GFLOPs", "latency (ms)", "peak memory (GB)", "FPS", "maskAP"):
        rows.append({"metric": metric, "paper teacher": 2.0, "paper student": 1.0, "paper change": "-50.0%",
                     "paper-size teacher": 4.0, "paper-size student": 1.0, "paper-size change": "-75.0%",
                     "measured teacher": 3.0, "measured student": 1.5, "measured change": "-50.0%"})
    table = pd.DataFrame(rows)
    table.attrs.update({"profile": profile, "data": data, "measured_on": "cpu:Test CPU"})
    return table


def test_the_efficiency_figure_names_the_data_the_device_and_the_papers_change():
    fig = plots.efficiency_figure(fig2_like())
    titles = [ax.get_title() for ax in fig.axes]
    text = caption(fig)
    assert "synthetic set s (4 train / 2 val images, 128x256)" in text and "by design" in text
    assert "cpu:Test CPU" in text and "tiny stand-ins" in text
    assert titles[0] == "parameters (M)\nmeasured -50.0%, paper -50.0%, paper-size -75.0%"


def test_the_label_fraction_figure_reads_the_data_from_its_table():
    table = pd.DataFrame([{"variant": "cast_dinov2_s", "10% labels": "0.00", "10% labels mean": 0.0,
                           "paper 10% labels": 33.9}])
    table.attrs.update({"data": "real cityscapes at /data/cs", "profile": "paper"})
    text = caption(plots.label_fraction_figure(table))
    assert "data: real cityscapes at /data/cs" in text and "by design" not in text


class FakeTeacher(torch.nn.Module):
    """Pseudo-labels with known box scores: those above the threshold are kept, as the teacher's rule does."""

    scores = torch.tensor([0.45, 0.40, 0.35, 0.2])

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.thresholds = []

    def predict_pseudo_labels(self, images, threshold, max_instances):
        self.thresholds.append((threshold, max_instances))
        keep = self.scores > threshold
        n, (h, w) = int(keep.sum()), images.shape[-2:]
        masks = torch.zeros(n, h, w, dtype=torch.bool)
        for k in range(n):
            masks[k, k, :] = True
        return [{"masks": masks, "labels": torch.zeros(n, dtype=torch.long), "scores": self.scores[keep]}]


def test_the_teacher_is_shown_at_its_pseudo_label_threshold_with_counts_in_the_titles(small_cfg, monkeypatch):
    """The teacher's scores sit between 0.3 and 0.5 here, as on mini: at score 0.5 it would show nothing; at the
    pseudo-label threshold (Table 2's 0.3, train.pseudo_labels.threshold) it shows three per image."""
    import castlib.engine.lifecycle
    from castlib.data.loaders import prepare_data

    prepare_data(small_cfg)
    teacher = FakeTeacher()
    monkeypatch.setattr(castlib.engine.lifecycle, "load_model", lambda cfg, run, which: teacher)
    models = {"teacher": (None, "teacher")}
    samples, predictions = plots.validation_predictions(small_cfg, models, count=2, min_score=0.5)
    assert small_cfg.train.pseudo_labels.threshold == 0.3
    assert teacher.thresholds == [(0.3, small_cfg.train.pseudo_labels.max_instances)] * 2
    assert [len(p) for p in predictions["teacher"]] == [3, 3]
    _, other = plots.validation_predictions(small_cfg, models, count=1, teacher_threshold=0.38)
    assert len(other["teacher"][0]) == 2
    rules = {"teacher": plots.selection_rule(small_cfg, "teacher"), "student": plots.selection_rule(small_cfg,
                                                                                                    "student", 0.5)}
    assert rules == {"teacher": "box score > 0.3, the pseudo-label threshold", "student": "score >= 0.5"}
    student = [Prediction(masks=s.masks[:1], labels=s.labels[:1], scores=torch.ones(1)) for s in samples]
    fig = plots.prediction_figure(samples, {**predictions, "student": student}, rules, data=small_cfg)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1] == "teacher: 3 instances (box score > 0.3, the pseudo-label threshold)"
    assert titles[2] == "student: 1 instance (score >= 0.5)"
    assert titles[0].startswith(f"ground truth: {len(samples[0].labels)} instance")
    assert plots.data_caption(small_cfg) in caption(fig)

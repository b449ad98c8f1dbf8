"""Widgets work outside a browser: they build, and moving a control redraws."""

import ipywidgets as W

from castlib.data.datasets import CityscapesInstances
from castlib.report.widgets import choice_panel, sample_browser


def test_the_sample_browser_redraws_when_the_slider_moves(cityscapes_root, monkeypatch):
    drawn = []
    import matplotlib.pyplot as plt

    def draw(samples, names, columns, data=None):
        drawn.append(samples[0].image_id)
        return plt.figure()

    monkeypatch.setattr("castlib.report.widgets.show_samples", draw)
    dataset = CityscapesInstances(cityscapes_root, "train")
    box = sample_browser(dataset)
    slider = next(c for c in box.children if isinstance(c, W.IntSlider))
    assert slider.max == len(dataset) - 1
    slider.value = 3
    assert drawn == [dataset.image_ids[0], dataset.image_ids[3]]


def test_the_choice_panel_calls_back_with_the_chosen_values():
    calls = []
    box = choice_panel({"score": ["original", "squared"], "scope": ["batch", "memory_bank"]},
                       lambda **chosen: calls.append(chosen))
    dropdowns = [c for c in box.children if isinstance(c, W.Dropdown)]
    dropdowns[0].value = "squared"
    button = next(c for c in box.children if isinstance(c, W.Button))
    button.click()
    assert calls == [{"score": "squared", "scope": "batch"}]


def test_default_variant_choices_keep_the_config_so_the_cast_runs_are_reused(cfg):
    from castlib.engine.stages import stage_config
    from castlib.report.widgets import variant_config, variant_options

    defaults = {name: values[0] for name, values in variant_options(cfg).items()}
    same = variant_config(cfg, **defaults)
    for stage in ("teacher_finetune", "knowledge_transfer", "student_refinement"):
        assert stage_config(same, stage) == stage_config(cfg, stage)


def test_a_variant_changes_the_student_and_keeps_the_teacher(cfg):
    from castlib.engine.stages import stage_config
    from castlib.report.widgets import variant_config

    variant = variant_config(cfg, score="squared", temperature=0.2, contrastive_weight=0.5)
    assert stage_config(variant, "teacher_self_training") == stage_config(cfg, "teacher_self_training")
    student = stage_config(variant, "knowledge_transfer")["train"]["student"]
    assert student["contrastive"] == {"score": "squared", "temperature": 0.2} and student["contrastive_weight"] == 0.5
    assert variant_config(cfg, label_fraction=0.3).data.label_fraction == 0.3  # Table 8: the teacher changes too


def test_the_variant_panel_trains_the_chosen_variant_and_shows_its_row(monkeypatch):
    from types import SimpleNamespace

    from castlib.config import load_config
    from castlib.report import widgets

    cfg = load_config("smoke", ["seeds=[0, 1, 2]"])

    trained = []

    def fake_cast(variant_cfg, seed):
        trained.append((variant_cfg.train.student.contrastive, seed))
        run = SimpleNamespace(id=f"run{len(trained)}", metrics={"ap": 1.0, "ap50": 2.0})
        return {"teacher": run, "student": run, "refined": run}

    monkeypatch.setattr(widgets, "cast", fake_cast)
    box = widgets.variant_panel(cfg, view="row")
    dropdowns = {c.description: c for c in box.children if isinstance(c, W.Dropdown)}
    dropdowns["scope"].value = "memory_bank"
    dropdowns["seed"].value = 2
    next(c for c in box.children if isinstance(c, W.Button)).click()
    assert trained == [({"scope": "memory_bank"}, 2)]

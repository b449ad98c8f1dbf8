"""Widgets work outside a browser: they build, and moving a control redraws (tests/browser drives them in
JupyterLab)."""

from types import SimpleNamespace

import ipywidgets as W
import matplotlib.pyplot as plt
import pandas as pd

from castlib.data.datasets import CityscapesInstances
from castlib.errors import ConfigError
from castlib.report.widgets import READABLE, VARIANT_LABELS, choice_panel, sample_browser


def test_the_sample_browser_redraws_when_the_slider_moves(cityscapes_root, monkeypatch):
    drawn = []
    def draw(samples, names, columns, data=None, title=""):
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
    from castlib.engine.lifecycle import stage_config
    from castlib.report.widgets import variant_config, variant_options

    defaults = {name: values[0] for name, values in variant_options(cfg).items()}
    same = variant_config(cfg, **defaults)
    for stage in ("teacher_finetune", "knowledge_transfer", "student_refinement"):
        assert stage_config(same, stage) == stage_config(cfg, stage)


def test_a_variant_changes_the_student_and_keeps_the_teacher(cfg):
    from castlib.engine.lifecycle import stage_config
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
    dropdowns[VARIANT_LABELS["scope"]].value = "memory_bank"
    dropdowns[VARIANT_LABELS["seed"]].value = 2
    next(c for c in box.children if isinstance(c, W.Button)).click()
    assert trained == [({"scope": "memory_bank"}, 2)]


def _fake_cast(trained: list):
    """A stand-in for ``cast``: each new variant config gets new run ids, the same config the same ones."""
    ids: dict = {}

    def cast(variant_cfg, seed):
        key = (repr(variant_cfg.train.student), variant_cfg.data.label_fraction, seed)
        trained.append(key)
        k = ids.setdefault(key, len(ids))
        return {stage: SimpleNamespace(id=f"{stage}{k}", metrics={"ap": ap, "ap50": 2 * ap})
                for stage, ap in (("teacher", 9.0), ("student", 1.0 + k), ("refined", 1.5 + k))}

    return cast


def _click(box):
    next(c for c in box.children if isinstance(c, W.Button)).click()


def test_the_variant_row_shows_the_distilled_and_the_refined_student_and_a_repeat_replaces_its_row(cfg, monkeypatch):
    """Tables 4-7 report the distilled theta_s*, Tables 3 and 8 the refined theta_s+: the row names both."""
    from castlib.report import widgets

    trained, shown = [], []
    monkeypatch.setattr(widgets, "cast", _fake_cast(trained))
    monkeypatch.setattr(widgets, "display", lambda table: shown.append(table.copy()))
    box = widgets.variant_panel(cfg, view="row")
    score = next(c for c in box.children if c.description == VARIANT_LABELS["score"])
    _click(box)
    _click(box)  # the same choices again: the same row, not a second one
    score.value = "squared"
    _click(box)
    rows = shown[-1]
    assert isinstance(rows, pd.DataFrame) and len(shown[1]) == 1 and len(rows) == 2
    assert rows["variant"].tolist() == ["default (CAST)", "score=squared"]
    assert rows["AP theta_s* (distilled)"].tolist() == [1.0, 2.0]
    assert rows["AP theta_s+ (refined)"].tolist() == [1.5, 2.5]
    assert rows["student run"].tolist() == ["student0", "student1"]


def test_the_button_is_disabled_and_busy_while_it_runs_and_comes_back_after(monkeypatch):
    states = []
    box = choice_panel({"score": ["original"]}, lambda **chosen: states.append((button.disabled, button.description)),
                       description="train", busy="training...")
    button = next(c for c in box.children if isinstance(c, W.Button))
    status = next(c for c in box.children if isinstance(c, W.HTML))
    button.click()
    assert states == [(True, "training...")]
    assert (button.disabled, button.description) == (False, "train") and status.value.startswith("done in")

    def fail(**chosen):
        raise ConfigError(None, "train.student.contrastive.score", "no such score")

    box = choice_panel({"score": ["original"]}, fail, description="train")
    next(c for c in box.children if isinstance(c, W.Button)).click()
    button, status = (next(c for c in box.children if isinstance(c, kind)) for kind in (W.Button, W.HTML))
    assert not button.disabled and "no such score" in status.value  # one line, and the button works again


def test_labels_are_readable_at_the_default_width(cfg):
    from castlib.report.widgets import variant_panel

    box = variant_panel(cfg)
    dropdowns = [c for c in box.children if isinstance(c, W.Dropdown)]
    assert [d.description for d in dropdowns] == list(VARIANT_LABELS.values())
    assert all(d.style.description_width == READABLE["description_width"] for d in dropdowns)
    output = next(c for c in box.children if isinstance(c, W.Output))
    assert output.layout.overflow == "auto"  # a wide table scrolls instead of being cut at the right edge


def test_every_figure_of_the_curves_view_is_drawn(cfg, monkeypatch):
    """Each figure the callback shows is a PNG with its lines drawn on white. In JupyterLab 4.6 the callback runs on
    a kernel subshell thread, where the second figure came out transparent and empty: the figures are drawn with
    savefig (show_figure) and pyplot does not track them (new_figure); tests/browser checks it in the lab."""
    import io

    import numpy as np
    from PIL import Image

    from castlib.report import plots, widgets

    log = pd.DataFrame({"iteration": [0, 1, 2], "sup/loss": [3.0, 2.0, 1.0], "pxl/loss": [1.0, 0.8, 0.5],
                        "pxl/margin": [0.1, 0.2, 0.3], "pxl/fnr": [0.1, 0.05, 0.02], "loss": [4.0, 2.8, 1.5]})
    monkeypatch.setattr(widgets, "cast", _fake_cast([]))
    monkeypatch.setattr(widgets, "read_log", lambda run: log)
    images = []
    monkeypatch.setattr(plots, "display", lambda image: images.append(image.data), raising=False)
    monkeypatch.setattr("IPython.display.display", lambda image: images.append(image.data))
    _click(widgets.variant_panel(cfg, view="curves"))
    assert len(images) == 2
    for png in images:
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
        assert (pixels[..., 3] == 255).all() and (pixels[..., :3].mean(-1) < 160).mean() > 0.005
    assert not plt.get_fignums()  # pyplot tracked none of them

"""Widgets work outside a browser: they build, and moving a control redraws."""

import ipywidgets as W

from castlib.data.datasets import CityscapesInstances
from castlib.report.widgets import choice_panel, sample_browser


def test_the_sample_browser_redraws_when_the_slider_moves(cityscapes_root, monkeypatch):
    drawn = []
    import matplotlib.pyplot as plt

    def draw(samples, names, columns):
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

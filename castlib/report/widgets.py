"""ipywidgets front ends for the notebooks: change the same parameters the papermill cell sets."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display

from castlib.data.datasets import InstanceDataset
from castlib.report.plots import show_samples


def sample_browser(dataset: InstanceDataset, class_names: Sequence[str] | None = None) -> W.Widget:
    """A slider over the dataset's images showing each with its instances."""
    names = class_names or dataset.classes.names
    out = W.Output()
    slider = W.IntSlider(value=0, min=0, max=max(len(dataset) - 1, 0), description="image")

    def draw(change=None) -> None:
        with out:
            out.clear_output(wait=True)
            fig = show_samples([dataset[slider.value]], names, columns=1)
            display(fig)
            plt.close(fig)

    slider.observe(draw, names="value")
    draw()
    return W.VBox([slider, out])


def choice_panel(options: dict[str, Sequence], on_run: Callable[..., None], description: str = "run") -> W.Widget:
    """Dropdowns for named choices and a button calling ``on_run(**chosen)``."""
    dropdowns = {name: W.Dropdown(options=list(values), value=values[0], description=name)
                 for name, values in options.items()}
    button = W.Button(description=description)
    out = W.Output()

    def click(_):
        with out:
            out.clear_output(wait=True)
            on_run(**{name: d.value for name, d in dropdowns.items()})

    button.on_click(click)
    return W.VBox([*dropdowns.values(), button, out])

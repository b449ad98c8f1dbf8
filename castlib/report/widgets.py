"""ipywidgets front ends for the notebooks: change the same parameters the papermill cell sets."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ipywidgets as W
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from castlib.config import Config
from castlib.data.datasets import InstanceDataset
from castlib.engine.runs import Run
from castlib.engine.stages import cast
from castlib.report.ablations import with_label_fraction, with_student_contrastive
from castlib.report.plots import contrastive_diagnostics, read_log, show_samples, training_curves


def sample_browser(dataset: InstanceDataset, class_names: Sequence[str] | None = None,
                   data: Config | str | None = None) -> W.Widget:
    """A slider over the dataset's images showing each with its instances (``data``: the config, for the figure's
    data line)."""
    names = class_names or dataset.classes.names
    out = W.Output()
    slider = W.IntSlider(value=0, min=0, max=max(len(dataset) - 1, 0), description="image")

    def draw(change=None) -> None:
        with out:
            out.clear_output(wait=True)
            fig = show_samples([dataset[slider.value]], names, columns=1, data=data)
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


# The student's L_pxl settings a reader can vary (supplementary Tables 4, 5, 7; main Table 4), beside the
# loss weight lambda_pxl, the label fraction (Table 8) and the seed; each offers the config's value first.
CONTRASTIVE_CHOICES = {
    "temperature": [0.07, 0.05, 0.1, 0.2],
    "num_negatives": [200, 64, 32, 128],
    "score": ["original", "squared", "sqrt"],
    "embedding": ["fusion", "mask_only", "class_only", "uniform"],
    "scope": ["batch", "memory_bank"],
    "loss": ["infonce", "hinge"],
}


def variant_options(cfg: Config) -> dict[str, list]:
    """The widget's choices for a config: its own value of each setting first, then the alternatives."""
    contrastive = {**cfg.loss.contrastive, **cfg.train.student.contrastive}

    def first(value: Any, values: Iterable) -> list:
        return [value, *(v for v in values if v != value)]

    return {"contrastive_weight": first(cfg.train.student.contrastive_weight, [0.0, 0.1, 0.2, 0.5]),
            **{name: first(contrastive[name], values) for name, values in CONTRASTIVE_CHOICES.items()},
            "label_fraction": first(cfg.data.label_fraction, cfg.data.label_fractions),
            "seed": first(cfg.seed, cfg.seeds)}


def variant_config(cfg: Config, **choices: Any) -> Config:
    """``cfg`` with the chosen student settings (``seed`` aside: it is the run's, :func:`train_variant`).
    L_pxl settings go to ``train.student.contrastive`` as the Tables 4, 5, 7 builders set them, so the CAST
    teacher is shared by every variant; choices equal to the config's values leave it as it is, so the
    default choices reuse the CAST runs."""
    for name in CONTRASTIVE_CHOICES:
        if name in choices:
            cfg = with_student_contrastive(cfg, name, choices[name])
    if "label_fraction" in choices:
        cfg = with_label_fraction(cfg, choices["label_fraction"])
    weight = choices.get("contrastive_weight", cfg.train.student.contrastive_weight)
    if weight != cfg.train.student.contrastive_weight:
        cfg = copy.deepcopy(cfg)
        cfg.train.student.contrastive_weight = float(weight)
    return cfg


def train_variant(cfg: Config, **choices: Any) -> dict[str, Run]:
    """The CAST pipeline of a variant through the run registry: only runs not trained before are trained."""
    return cast(variant_config(cfg, **choices), choices.get("seed", cfg.seed))


def variant_row(runs: Mapping[str, Run], choices: Mapping[str, Any]) -> dict:
    """A table row: the choices, the student's AP and AP50 after refinement, and the run ids."""
    metrics = runs["refined"].metrics
    return {**choices, "AP": round(metrics["ap"], 2), "AP50": round(metrics["ap50"], 2),
            "teacher run": runs["teacher"].id, "student run": runs["refined"].id}


def variant_panel(cfg: Config, view: str = "row") -> W.Widget:
    """Controls for the student's settings and a run button that trains the variant through the registry
    (a repeat is instant) and redraws: ``view="row"`` appends the variant's row to a table of what was run,
    ``view="curves"`` draws its Proposition 3.1 curves (margin, FNR) beside the default's and its loss curves."""
    rows: list[dict] = []

    def on_run(**choices: Any) -> None:
        runs = train_variant(cfg, **choices)
        if view == "row":
            rows.append(variant_row(runs, choices))
            display(pd.DataFrame(rows))
            return
        default = cast(cfg, cfg.seed)["student"]
        for fig in (contrastive_diagnostics({"default": read_log(default), "chosen": read_log(runs["student"])}),
                    training_curves(read_log(runs["student"]), "chosen student")):
            display(fig)
            plt.close(fig)

    return choice_panel(variant_options(cfg), on_run, description="train and show")

"""ipywidgets front ends for the notebooks: change the same parameters the papermill cell sets."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ipywidgets as W
import pandas as pd
from IPython.display import clear_output, display

from castlib.config import Config
from castlib.data.datasets import InstanceDataset
from castlib.engine.runs import Run
from castlib.engine.stages import cast
from castlib.errors import CastError
from castlib.report.paper_tables import with_label_fraction, with_student_contrastive
from castlib.report.plots import contrastive_diagnostics, read_log, show_figure, show_samples, training_curves

# Labels shown in full at the default width (ipywidgets cuts a description at about 80 px otherwise).
READABLE = {"description_width": "initial"}


def sample_browser(dataset: InstanceDataset, class_names: Sequence[str] | None = None,
                   data: Config | str | None = None) -> W.Widget:
    """A slider over the dataset's images showing each with its instances (``data``: the config, for the figure's
    data line)."""
    names = class_names or dataset.classes.names
    out = W.Output()
    slider = W.IntSlider(value=0, min=0, max=max(len(dataset) - 1, 0), description="training image",
                         style=READABLE, continuous_update=False)

    def draw(change=None) -> None:
        with out:
            out.clear_output(wait=True)
            title = f"training image {slider.value} (of 0-{len(dataset) - 1}) with its instances"
            show_figure(show_samples([dataset[slider.value]], names, columns=1, data=data, title=title))

    slider.observe(draw, names="value")
    draw()
    return W.VBox([slider, out])


def choice_panel(options: Mapping[str, Sequence], on_run: Callable[..., Any], description: str = "run",
                 labels: Mapping[str, str] | None = None, busy: str = "running...") -> W.Widget:
    """Dropdowns for named choices (shown as ``labels[name]``, else the name) and a button calling
    ``on_run(**chosen)``. While it runs the button is disabled and reads ``busy``, and a status line says what
    runs; then the button comes back and the status line says how long it took (or the error). What ``on_run``
    displays goes to the output below (a wide table scrolls)."""
    labels = labels or {}
    dropdowns = {name: W.Dropdown(options=list(values), value=values[0], description=labels.get(name, name),
                                  style=READABLE, layout=W.Layout(width="max-content"))
                 for name, values in options.items()}
    button = W.Button(description=description, button_style="primary", icon="play",
                      layout=W.Layout(width="max-content"))
    status = W.HTML(value="")
    out = W.Output(layout=W.Layout(overflow="auto", max_width="100%"))

    def click(_) -> None:
        chosen = {name: d.value for name, d in dropdowns.items()}
        button.disabled, button.description, button.icon = True, busy, "hourglass-half"
        status.value = f"<i>{html.escape(busy)}</i> " + html.escape(
            ", ".join(f"{labels.get(k, k)} {v}" for k, v in chosen.items()))
        start = time.monotonic()
        try:
            with out:  # in a kernel the Output shows an unexpected error's traceback and swallows it
                try:
                    on_run(**chosen)
                    status.value = f"done in {time.monotonic() - start:.0f} s"
                except CastError as error:  # a one-line error (a config key, a missing file): no traceback
                    status.value = f"<b>error</b>: {html.escape(str(error))}"
                except Exception:
                    status.value = "<b>error</b>: the traceback is below"
                    raise
        finally:
            button.disabled, button.description, button.icon = False, description, "play"

    button.on_click(click)
    return W.VBox([*dropdowns.values(), button, status, out])


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
        cfg = cfg.with_changes({"train.student.contrastive_weight": float(weight)})
    return cfg


def train_variant(cfg: Config, **choices: Any) -> dict[str, Run]:
    """The CAST pipeline of a variant through the run registry: only runs not trained before are trained."""
    return cast(variant_config(cfg, **choices), choices.get("seed", cfg.seed))


# How the panel names each choice.
VARIANT_LABELS = {"contrastive_weight": "lambda_pxl (contrastive weight)", "temperature": "temperature T",
                  "num_negatives": "negatives per pixel R", "score": "debias score", "embedding": "embedding y",
                  "scope": "negative scope", "loss": "contrastive loss", "label_fraction": "labelled fraction",
                  "seed": "seed"}


def variant_name(cfg: Config, choices: Mapping[str, Any]) -> str:
    """The choices that differ from the config's own values (``default (CAST)`` when none), seed aside."""
    defaults = {name: values[0] for name, values in variant_options(cfg).items()}
    changed = [f"{name}={value}" for name, value in choices.items() if name != "seed" and value != defaults.get(name)]
    return ", ".join(changed) or "default (CAST)"


def variant_row(runs: Mapping[str, Run], choices: Mapping[str, Any], cfg: Config) -> dict:
    """A table row: the variant (its changed choices), the seed, the AP and AP50 of the distilled student
    theta_s* (what supplementary Tables 4-7 report) and of the refined theta_s+ (Tables 3 and 8), and the run ids."""
    distilled, refined = runs["student"].metrics, runs["refined"].metrics
    return {"variant": variant_name(cfg, choices), "seed": choices.get("seed"),
            "AP theta_s* (distilled)": round(distilled["ap"], 2), "AP50 theta_s*": round(distilled["ap50"], 2),
            "AP theta_s+ (refined)": round(refined["ap"], 2), "AP50 theta_s+": round(refined["ap50"], 2),
            "teacher run": runs["teacher"].id, "student run": runs["student"].id, "refined run": runs["refined"].id}


def variant_panel(cfg: Config, view: str = "row") -> W.Widget:
    """Controls for the student's settings and a run button that trains the variant through the registry
    (a repeat is instant) and redraws: ``view="row"`` adds the variant's row to a table of what was run (the same
    choices again replace their row, not add one), ``view="curves"`` draws its Proposition 3.1 curves (margin,
    FNR) beside the default's and its loss curves."""
    rows: dict[tuple, dict] = {}

    def on_run(**choices: Any) -> None:
        runs = train_variant(cfg, **choices)
        clear_output(wait=True)  # the training's progress bars make way for the result
        if view == "row":
            rows[tuple(choices.items())] = variant_row(runs, choices, cfg)
            display(pd.DataFrame(list(rows.values())))
            return
        default = cast(cfg, cfg.seed)["student"]
        show_figure(contrastive_diagnostics({"default": read_log(default), "chosen": read_log(runs["student"])}))
        show_figure(training_curves(read_log(runs["student"]), f"loss curves of the chosen student theta_s* "
                                                               f"({variant_name(cfg, choices)})"))

    return choice_panel(variant_options(cfg), on_run, description="train and show", labels=VARIANT_LABELS,
                        busy="training (runs already in the registry are reused)...")

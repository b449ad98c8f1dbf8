"""Figures the notebooks and ``make reproduce`` share (matplotlib, headless-safe).

Every figure has a title and states its data and profile in the caption above it (:func:`data_caption`): the
synthetic set with its image size and counts, or the real root (:func:`castlib.data.loaders.describe_data`), and on
smoke that maskAP is 0 by design. A figure drawn from a config is given it (``data=cfg``); one drawn from runs' logs
or from a table reads it from what they carry (``log.attrs`` of :func:`read_log`, ``table.attrs`` of the table
builders). Plots label both axes; image grids have no axes to label. :func:`save_figure` writes a figure and, in a
Jupyter kernel, also shows it inline (:func:`show_figure`).
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy.ndimage import binary_erosion
from torchvision.transforms.v2 import functional as TF

from castlib.config import Config
from castlib.data.loaders import (
    build_dataset,
    data_note,
    describe_data,
    describe_data_record,
    read_split_ids,
    val_dataset,
)
from castlib.data.sample import InstanceSample
from castlib.engine.runs import Run, RunError
from castlib.eval.inference import Prediction, instance_inference
from castlib.io import atomic_path

NOT_STATED = "data: not stated (the figure was given no config, run or table to read it from)"


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, squeeze: bool = True):
    """``(figure, axes)`` as ``plt.subplots`` gives them, but a figure pyplot does not track: a widget's callback runs
    on a kernel subshell thread in JupyterLab 4.6 (``commsOverSubshells``, ipykernel 7), where pyplot's shared state
    drew figures blank (a transparent image, or tick labels alone); a figure of its own draws there as in a cell."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def data_caption(data: Config | str | pd.DataFrame | None = None) -> str:
    """The data line of a figure: from a config (:func:`describe_data` and the profile, and on smoke that AP is 0 by
    design), a table or log whose ``attrs`` name ``data`` and ``profile`` (:func:`read_log`, the table builders), or
    a line given as it is; :data:`NOT_STATED` where there is none."""
    if isinstance(data, Config):
        return _with_profile(describe_data(data), data.profile)
    if isinstance(data, pd.DataFrame):
        return _with_profile(data.attrs["data"], data.attrs.get("profile")) if data.attrs.get("data") else NOT_STATED
    return data or NOT_STATED


def _with_profile(data: str, profile: str | None) -> str:
    return data_note(f"{data}, profile `{profile}`" if profile else data, profile)


def caption_figure(fig, data: Config | str | pd.DataFrame | None, title: str = "") -> None:
    """``title`` (if any) and the data line (:func:`data_caption`) above the figure, wrapped to its width."""
    width = max(40, int(fig.get_figwidth() * 15))  # characters of 7-point text per line
    wrap = {"width": width, "break_long_words": False, "break_on_hyphens": False}
    lines = [*textwrap.wrap(title, **wrap), *textwrap.wrap(data_caption(data), **wrap)]
    fig.suptitle("\n".join(lines), fontsize=7 if not title else 8)
    fig.tight_layout()


def figure_caption(fig) -> str:
    """The text above a figure (:func:`caption_figure`), lines joined by spaces (for tests and readers)."""
    return " ".join(fig._suptitle.get_text().split()) if fig._suptitle is not None else ""


def instance_colours(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct, bright RGB colours in ``[0, 1]`` (golden-ratio hues)."""
    hues = (np.arange(n) * 0.618033988749895 + np.random.default_rng(seed).uniform()) % 1.0
    return matplotlib.colors.hsv_to_rgb(np.stack([hues, np.full(n, 0.85), np.full(n, 0.95)], 1))


def overlay_instances(image: torch.Tensor, masks: torch.Tensor, alpha: float = 0.55) -> np.ndarray:
    """The image (``[3, H, W]``, uint8 or float) with each instance tinted in its own colour."""
    img = image.detach().float().cpu()
    img = (img / 255.0 if image.dtype == torch.uint8 else img).permute(1, 2, 0).numpy().clip(0, 1)
    out = img.copy()
    masks = masks.detach().cpu().numpy().astype(bool)
    for colour, mask in zip(instance_colours(len(masks)), masks, strict=True):
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
        edge = mask ^ binary_erosion(mask)
        out[edge] = colour * 0.6
    return out


def show_samples(samples: Sequence[InstanceSample], class_names: Sequence[str], columns: int = 2,
                 data: Config | str | None = None, title: str = "training images beside their ground-truth instances"):
    """A grid of images beside their ground-truth instances, each titled with its class counts; ``data`` (the
    config) names the data above it."""
    rows = (len(samples) + columns - 1) // columns
    fig, axes = new_figure(rows, 2 * columns, figsize=(5 * columns, 1.6 * rows * 2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, s in enumerate(samples):
        r, c = divmod(k, columns)
        img = s.image.float() / (255.0 if s.image.dtype == torch.uint8 else 1.0)
        axes[r, 2 * c].imshow(img.permute(1, 2, 0).numpy().clip(0, 1))
        axes[r, 2 * c].set_title(s.image_id, fontsize=7)
        axes[r, 2 * c + 1].imshow(overlay_instances(s.image, s.masks))
        counts = np.bincount(s.labels.numpy(), minlength=len(class_names))
        top = ", ".join(f"{class_names[i]} {counts[i]}" for i in np.argsort(-counts)[:3] if counts[i])
        axes[r, 2 * c + 1].set_title(f"{len(s.labels)} instances: {top}", fontsize=7)
    caption_figure(fig, data, title)
    return fig


def show_views(sample: InstanceSample, data: Config | str | None = None):
    """Weak view with its masks beside the strong view of the same pixels; ``data`` (the config) names the data."""
    fig, axes = new_figure(1, 3, figsize=(12, 2.6))
    axes[0].imshow(sample.image.permute(1, 2, 0).numpy().clip(0, 1))
    axes[0].set_title("weak view")
    axes[1].imshow(overlay_instances(sample.image, sample.masks))
    axes[1].set_title(f"weak view, {len(sample.labels)} instances")
    axes[2].imshow(sample.strong.permute(1, 2, 0).numpy().clip(0, 1))
    axes[2].set_title("strong view (photometric only)")
    for ax in axes:
        ax.axis("off")
    caption_figure(fig, data, "a labelled image: the weak view with its instances, and the strong view of the same "
                              "pixels (the positive pairs of L_pxl)")
    return fig


def read_log(run: Run) -> pd.DataFrame:
    """A run's ``log.csv`` (one row per logged iteration, one column per loss term and learning rate), with the
    run's data and profile (its ``run.json``) in ``attrs`` for the figures' data line."""
    path = run.dir / "log.csv"
    if not path.is_file():
        raise RunError(path, f"missing: run {run.id} ({run.stage}) has no training log")
    log = pd.read_csv(path)
    info = run.info
    if info.get("data_source"):  # a run older than run.json's data_source gets none
        log.attrs.update({"data": describe_data_record(info["data_source"]), "profile": info.get("profile"),
                          "run": run.id})
    return log


_DEEP_SUPERVISION = re.compile(r"_\d+$")  # loss_mask_3: the same term at an intermediate decoder layer
# not loss terms: :func:`contrastive_diagnostics` plots the margin and the false-negative rate
_DIAGNOSTICS = ("pxl/margin", "pxl/fnr", "pxl/background_share")


def training_curves(log: pd.DataFrame, title: str = "", data: Config | str | None = None):
    """Every loss term of a training log over iterations: one panel per term of J (L_sup, L_semi, L_pxl,
    their weighted sum), with its components; the deep-supervision copies of each term and the sampler's
    diagnostics are left out. Titled ``title`` and the data (``data``, else the run's, :func:`read_log`)."""
    groups: dict[str, list[str]] = {}
    for column in log.columns:
        if (column in ("iteration", "grad_norm", *_DIAGNOSTICS) or column.startswith("lr/")
                or _DEEP_SUPERVISION.search(column)):
            continue
        groups.setdefault(column.split("/")[0] if "/" in column else "total", []).append(column)
    fig, axes = new_figure(1, len(groups), figsize=(3.6 * len(groups), 2.8), squeeze=False)
    names = {"sup": "L_sup", "semi": "L_semi", "pxl": "L_pxl", "total": "J (weighted sum)"}
    for ax, (group, columns) in zip(axes[0], groups.items(), strict=True):
        for column in columns:
            ax.plot(log["iteration"], log[column], label=column.split("/")[-1], lw=1.2)
        ax.set_title(names.get(group, group), fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel("loss" if group != "total" else "weighted loss", fontsize=8)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=6)
    caption_figure(fig, data or log, title)
    return fig


def contrastive_diagnostics(logs: Mapping[str, pd.DataFrame], data: Config | str | None = None):
    """Proposition 3.1 (main Fig. 3): the empirical margin Delta_emp (positive minus sampled-negative
    similarity) and the false-negative rate of the sampled negatives over training, one line per sampler;
    the dashed line at 0.5 is the bound p > 0.5 the proposition assumes. The data: ``data``, else the first
    log's (:func:`read_log`)."""
    fig, (margin, fnr) = new_figure(1, 2, figsize=(9, 3))
    for name, log in logs.items():
        margin.plot(log["iteration"], log["pxl/margin"], label=name)
        fnr.plot(log["iteration"], log["pxl/fnr"], label=name)
    fnr.axhline(0.5, color="grey", ls="--", lw=1)
    margin.set_title("margin $\\Delta_{emp}$", fontsize=9)
    margin.set_ylabel("cosine similarity: mean $s^+$ minus mean $s^-$", fontsize=8)
    fnr.set_title("false-negative rate of sampled negatives", fontsize=9)
    fnr.set_ylabel("false-negative rate $1-p$", fontsize=8)
    for ax in (margin, fnr):
        ax.set_xlabel("iteration", fontsize=8)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    caption_figure(fig, data or next(iter(logs.values()), None), "Proposition 3.1: margin and false negatives")
    return fig


def pseudo_label_figure(ground_truth: Sequence[InstanceSample], pseudo: Sequence[InstanceSample],
                        data: Config | str | None = None):
    """Unlabelled images: the ground truth (never used in training) beside the teacher's pseudo-labels; ``data``
    (the config) names the data."""
    fig, axes = new_figure(len(ground_truth), 2, figsize=(8, 2.2 * len(ground_truth)), squeeze=False)
    for row, (gt, pl) in zip(axes, zip(ground_truth, pseudo, strict=True), strict=True):
        row[0].imshow(overlay_instances(gt.image, gt.masks))
        row[0].set_title(f"{gt.image_id}: ground truth, {len(gt.labels)} instances", fontsize=7)
        row[1].imshow(overlay_instances(pl.image, pl.masks))
        row[1].set_title(f"teacher pseudo-labels, {len(pl.labels)} instances", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    caption_figure(fig, data, "unlabelled images: the ground truth (never used in training) beside the adapted "
                              "teacher's pseudo-labels")
    return fig


def pseudo_label_examples(cfg: Config, labels: Run, count: int = 3) -> tuple[list, list]:
    """The first ``count`` unlabelled images with their ground truth, and with the pseudo-labels of ``labels``."""
    ids = read_split_ids(cfg, "unlabelled")[:count]
    ground_truth = build_dataset(cfg, "train", ids)
    pseudo = build_dataset(cfg, "train", ids, annotation_root=labels.pseudo_label_dir)
    return [ground_truth[i] for i in range(len(ids))], [pseudo[i] for i in range(len(ids))]


def validation_predictions(cfg: Config, models: Mapping[str, tuple[Run, str]], count: int = 3,
                           min_score: float = 0.5, teacher_threshold: float | None = None,
                           ) -> tuple[list, dict[str, list[Prediction]]]:
    """The first ``count`` validation images and each model's predictions on them (``models``: name ->
    (complete run, ``"teacher"`` or ``"student"``)), for :func:`prediction_figure`. A teacher's instances are
    read as its pseudo-labels are (:func:`teacher_instances`: box score above ``teacher_threshold``, by default
    ``train.pseudo_labels.threshold``, supplementary Table 2's 0.3); a student's are its Mask2Former instances
    scoring at least ``min_score`` (:func:`predict`). :func:`selection_rule` says which, for the titles."""
    from castlib.engine.lifecycle import load_model

    val = val_dataset(cfg)
    samples = [val[i] for i in range(min(count, len(val)))]
    threshold = cfg.train.pseudo_labels.threshold if teacher_threshold is None else teacher_threshold
    predictions = {}
    for name, (run, which) in models.items():
        model = load_model(cfg, run, which)
        predictions[name] = [
            teacher_instances(model, s, threshold, cfg.train.pseudo_labels.max_instances) if which == "teacher"
            else predict(model, s, cfg.eval.top_k, min_score) for s in samples]
    return samples, predictions


def selection_rule(cfg: Config, which: str, min_score: float = 0.5, teacher_threshold: float | None = None) -> str:
    """How :func:`validation_predictions` chose the instances it shows of a ``which`` model, for a title."""
    if which == "teacher":
        threshold = cfg.train.pseudo_labels.threshold if teacher_threshold is None else teacher_threshold
        return f"box score > {threshold:g}, the pseudo-label threshold"
    return f"score >= {min_score:g}"


def teacher_instances(model: torch.nn.Module, sample: InstanceSample, threshold: float = 0.3,
                      max_instances: int = 100) -> Prediction:
    """One image's instances as the teacher's pseudo-labels keep them (``predict_pseudo_labels``: boxes scoring
    above ``threshold``, at most ``max_instances``, masks painted without overlap), best first."""
    device = next(model.parameters()).device
    image = TF.to_dtype(sample.image, torch.float32, scale=True)[None].to(device)
    with torch.inference_mode():
        found = model.predict_pseudo_labels(image, threshold, max_instances)[0]
    return Prediction(masks=found["masks"].cpu(), labels=found["labels"].cpu(), scores=found["scores"].cpu())


def predict(model: torch.nn.Module, sample: InstanceSample, top_k: int = 100, min_score: float = 0.5,
            max_instances: int = 20) -> Prediction:
    """One image's instances (Mask2Former inference), those scoring at least ``min_score``, best first."""
    device = next(model.parameters()).device
    image = TF.to_dtype(sample.image, torch.float32, scale=True)[None].to(device)
    model.eval()
    with torch.inference_mode():
        found = instance_inference(model(image), [sample.size], top_k)[0]
    keep = (found.scores >= min_score).nonzero().flatten()[:max_instances]
    return Prediction(masks=found.masks[keep], labels=found.labels[keep], scores=found.scores[keep])


def prediction_figure(samples: Sequence[InstanceSample], predictions: Mapping[str, Sequence[Prediction]],
                      rules: Mapping[str, str] | None = None, data: Config | str | None = None):
    """Supplementary Fig. 1: per validation image, the ground truth and each model's predictions side by side
    (``predictions`` by model name, e.g. teacher then student), each panel titled with its instance count and
    the rule that chose them (``rules`` by name, :func:`selection_rule`); ``data`` (the config) names the data."""
    rules = rules or {}
    columns = ["ground truth", *predictions]
    fig, axes = new_figure(len(samples), len(columns), figsize=(3.8 * len(columns), 2.1 * len(samples)),
                             squeeze=False)
    for i, sample in enumerate(samples):
        shown = [(sample.masks, len(sample.labels))] + [(p[i].masks, len(p[i])) for p in predictions.values()]
        for ax, name, (masks, count) in zip(axes[i], columns, shown, strict=True):
            ax.imshow(overlay_instances(sample.image, masks))
            rule = f" ({rules[name]})" if name in rules else ""
            ax.set_title(f"{name}: {count} instance{'' if count == 1 else 's'}{rule}", fontsize=7)
            ax.axis("off")
    caption_figure(fig, data, "validation images: ground truth and each model's instances")
    return fig


EFFICIENCY_PANELS = {"params (M)": "parameters (M)", "latency (ms)": "latency (ms)", "FPS": "FPS",
                     "peak memory (GB)": "peak memory (GB)"}


def efficiency_figure(table: pd.DataFrame, data: Config | str | None = None):
    """Main-paper Fig. 2: the measured teacher vs student parameters, latency, FPS and memory (the ``measured``
    columns of :func:`castlib.eval.efficiency.fig2_table`), each panel titled with the student's change beside
    the paper's (and the paper-size models' where counted); the caption names the profile, the device and the
    data (``data``, else the table's)."""
    rows = table.set_index("metric") if "metric" in table.columns else table
    fig, axes = new_figure(1, len(EFFICIENCY_PANELS), figsize=(3 * len(EFFICIENCY_PANELS), 2.8))
    for ax, (metric, label) in zip(axes, EFFICIENCY_PANELS.items(), strict=True):
        row = rows.loc[metric]
        values = [row["measured teacher"], row["measured student"]]
        if all(isinstance(v, int | float) for v in values):
            ax.bar(["teacher", "student"], [float(v) for v in values], color=["#4c72b0", "#dd8452"])
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        changes = [f"measured {row['measured change']}", f"paper {row['paper change']}"]
        changes += [f"paper-size {row['paper-size change']}"] if row["paper-size change"] != "-" else []
        ax.set_title(f"{label}\n" + ", ".join(changes), fontsize=8)
        ax.set_ylabel(label, fontsize=8)
    profile = table.attrs.get("profile", "?")
    title = (f"main-paper Fig. 2: the `{profile}` teacher and student measured on {table.attrs.get('measured_on', '?')}"
             + ("" if profile == "paper" else f" (`{profile}` models are tiny stand-ins: their ratios are not "
                                                "the paper's)"))
    caption_figure(fig, data or table, title)
    return fig


def label_fraction_figure(table: pd.DataFrame, data: Config | str | None = None):
    """Supplementary Table 8 as curves: maskAP against the labelled fraction per method, reproduced (solid,
    mean over seeds, where run) and the paper's (dashed); columns ``"N% labels"`` of
    :func:`castlib.report.paper_tables.table8`. The data: ``data``, else the table's (``attrs``)."""
    columns = [c for c in table.columns if c.endswith("% labels") and not c.startswith("paper ")]
    fractions = [float(c.split("%")[0]) for c in columns]
    fig, ax = new_figure(figsize=(5, 3.2))
    for colour, row in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], table.to_dict("records"), strict=False):
        reproduced = [row[f"{c} mean"] for c in columns]
        if not all(np.isnan(reproduced)):
            ax.plot(fractions, reproduced, "o-", color=colour, label=f"{row['variant']} (reproduced)")
        paper = [row[f"paper {c}"] if isinstance(row[f"paper {c}"], float) else np.nan for c in columns]
        ax.plot(fractions, paper, "s--", color=colour, alpha=0.6, label=f"{row['variant']} (paper)")
    ax.set_xlabel("labelled fraction (%)")
    ax.set_ylabel("maskAP")
    ax.legend(fontsize=6)
    caption_figure(fig, data or table, "supplementary Table 8: maskAP by labelled fraction")
    return fig


def in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (JupyterLab, papermill), where figures are also shown inline."""
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


def figure_png(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes, drawn here on a white background (tight bounding box)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def show_figure(fig, dpi: int = 100) -> None:
    """Show the figure inline as a PNG drawn here (:func:`figure_png`), then close it: the image does not go through
    the kernel's matplotlib backend (whose ``display(fig)`` after a ``plt.close`` gave a widget callback a
    transparent image in JupyterLab)."""
    from IPython.display import Image, display

    png = figure_png(fig, dpi)
    plt.close(fig)
    display(Image(data=png, format="png"))


def save_figure(fig, path: str | Path, dpi: int = 120, show: bool | None = None) -> Path:
    """Save atomically (PNG or PDF by suffix, on white), show the figure inline when ``show`` (by default: in a
    Jupyter kernel, :func:`in_kernel`), and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip("."), bbox_inches="tight", facecolor="white")
    if in_kernel() if show is None else show:
        show_figure(fig)
    plt.close(fig)
    return path

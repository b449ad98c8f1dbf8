"""Figures the notebooks and ``make reproduce`` share (matplotlib, headless-safe)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy.ndimage import binary_erosion
from torchvision.transforms.v2 import functional as TF

from castlib.config import Config
from castlib.data.loaders import build_dataset, read_split_ids, val_dataset
from castlib.data.sample import InstanceSample
from castlib.engine.runs import Run, RunError
from castlib.eval.inference import Prediction, instance_inference
from castlib.io import atomic_path


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


def show_samples(samples: Sequence[InstanceSample], class_names: Sequence[str], columns: int = 2):
    """A grid of images beside their ground-truth instances, titled with the class counts."""
    rows = (len(samples) + columns - 1) // columns
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(5 * columns, 1.6 * rows * 2), squeeze=False)
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
    fig.tight_layout()
    return fig


def show_views(sample: InstanceSample):
    """Weak view with its masks beside the strong view of the same pixels."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 2.6))
    axes[0].imshow(sample.image.permute(1, 2, 0).numpy().clip(0, 1))
    axes[0].set_title("weak view")
    axes[1].imshow(overlay_instances(sample.image, sample.masks))
    axes[1].set_title(f"weak view, {len(sample.labels)} instances")
    axes[2].imshow(sample.strong.permute(1, 2, 0).numpy().clip(0, 1))
    axes[2].set_title("strong view (photometric only)")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def read_log(run: Run) -> pd.DataFrame:
    """A run's ``log.csv`` (one row per logged iteration, one column per loss term and learning rate)."""
    path = run.dir / "log.csv"
    if not path.is_file():
        raise RunError(path, f"missing: run {run.id} ({run.stage}) has no training log")
    return pd.read_csv(path)


_DEEP_SUPERVISION = re.compile(r"_\d+$")  # loss_mask_3: the same term at an intermediate decoder layer
_DIAGNOSTICS = ("pxl/margin", "pxl/fnr")  # not loss terms: :func:`contrastive_diagnostics` plots them


def training_curves(log: pd.DataFrame, title: str = ""):
    """Every loss term of a training log over iterations: one panel per term of J (L_sup, L_semi, L_pxl,
    their weighted sum), with its components; the deep-supervision copies of each term and the sampler's
    diagnostics are left out."""
    groups: dict[str, list[str]] = {}
    for column in log.columns:
        if (column in ("iteration", "grad_norm", *_DIAGNOSTICS) or column.startswith("lr/")
                or _DEEP_SUPERVISION.search(column)):
            continue
        groups.setdefault(column.split("/")[0] if "/" in column else "total", []).append(column)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 2.8), squeeze=False)
    names = {"sup": "L_sup", "semi": "L_semi", "pxl": "L_pxl", "total": "J (weighted sum)"}
    for ax, (group, columns) in zip(axes[0], groups.items(), strict=True):
        for column in columns:
            ax.plot(log["iteration"], log[column], label=column.split("/")[-1], lw=1.2)
        ax.set_title(names.get(group, group), fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def contrastive_diagnostics(logs: Mapping[str, pd.DataFrame]):
    """Proposition 3.1 (main Fig. 3): the empirical margin Delta_emp (positive minus sampled-negative
    similarity) and the false-negative rate of the sampled negatives over training, one line per sampler;
    the dashed line at 0.5 is the bound p > 0.5 the proposition assumes."""
    fig, (margin, fnr) = plt.subplots(1, 2, figsize=(9, 3))
    for name, log in logs.items():
        margin.plot(log["iteration"], log["pxl/margin"], label=name)
        fnr.plot(log["iteration"], log["pxl/fnr"], label=name)
    fnr.axhline(0.5, color="grey", ls="--", lw=1)
    margin.set_title("margin $\\Delta_{emp}$", fontsize=9)
    fnr.set_title("false-negative rate of sampled negatives", fontsize=9)
    for ax in (margin, fnr):
        ax.set_xlabel("iteration", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def pseudo_label_figure(ground_truth: Sequence[InstanceSample], pseudo: Sequence[InstanceSample]):
    """Unlabelled images: the ground truth (never used in training) beside the teacher's pseudo-labels."""
    fig, axes = plt.subplots(len(ground_truth), 2, figsize=(8, 2.2 * len(ground_truth)), squeeze=False)
    for row, (gt, pl) in zip(axes, zip(ground_truth, pseudo, strict=True), strict=True):
        row[0].imshow(overlay_instances(gt.image, gt.masks))
        row[0].set_title(f"{gt.image_id}: ground truth, {len(gt.labels)} instances", fontsize=7)
        row[1].imshow(overlay_instances(pl.image, pl.masks))
        row[1].set_title(f"teacher pseudo-labels, {len(pl.labels)} instances", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def pseudo_label_examples(cfg: Config, labels: Run, count: int = 3) -> tuple[list, list]:
    """The first ``count`` unlabelled images with their ground truth, and with the pseudo-labels of ``labels``."""
    ids = read_split_ids(cfg, "unlabelled")[:count]
    ground_truth = build_dataset(cfg, "train", ids)
    pseudo = build_dataset(cfg, "train", ids, annotation_root=labels.pseudo_label_dir)
    return [ground_truth[i] for i in range(len(ids))], [pseudo[i] for i in range(len(ids))]


def validation_predictions(cfg: Config, models: Mapping[str, tuple[Run, str]], count: int = 3,
                           min_score: float = 0.5) -> tuple[list, dict[str, list[Prediction]]]:
    """The first ``count`` validation images and each model's predictions on them (``models``: name ->
    (complete run, ``"teacher"`` or ``"student"``)), for :func:`prediction_figure`."""
    from castlib.engine.stages import load_model

    val = val_dataset(cfg)
    samples = [val[i] for i in range(min(count, len(val)))]
    predictions = {}
    for name, (run, which) in models.items():
        model = load_model(cfg, run, which)
        predictions[name] = [predict(model, s, cfg.eval.top_k, min_score) for s in samples]
    return samples, predictions


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


def prediction_figure(samples: Sequence[InstanceSample], predictions: Mapping[str, Sequence[Prediction]]):
    """Supplementary Fig. 1: per validation image, the ground truth and each model's predictions side by side
    (``predictions`` by model name, e.g. teacher then student)."""
    columns = ["ground truth", *predictions]
    fig, axes = plt.subplots(len(samples), len(columns), figsize=(3.8 * len(columns), 2.1 * len(samples)),
                             squeeze=False)
    for i, sample in enumerate(samples):
        shown = [(sample.masks, len(sample.labels))] + [(p[i].masks, len(p[i])) for p in predictions.values()]
        for ax, name, (masks, count) in zip(axes[i], columns, shown, strict=True):
            ax.imshow(overlay_instances(sample.image, masks))
            ax.set_title(f"{name}: {count} instances", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    return fig


EFFICIENCY_PANELS = {"params_M": "parameters (M)", "latency_ms": "latency (ms)", "fps": "FPS",
                     "peak_memory_mb": "peak memory (MB)"}


def efficiency_figure(table: pd.DataFrame):
    """Main-paper Fig. 2: teacher vs student parameters, latency, FPS and memory (rows ``teacher`` and
    ``student`` of :func:`castlib.eval.efficiency.teacher_vs_student`), the student's change on each bar."""
    fig, axes = plt.subplots(1, len(EFFICIENCY_PANELS), figsize=(3 * len(EFFICIENCY_PANELS), 2.8))
    for ax, (column, label) in zip(axes, EFFICIENCY_PANELS.items(), strict=True):
        values = [float(table.loc[m, column]) for m in ("teacher", "student")]
        ax.bar(["teacher", "student"], values, color=["#4c72b0", "#dd8452"])
        change = table.loc["student vs teacher", column] if "student vs teacher" in table.index else ""
        ax.set_title(f"{label}\nstudent {change}" if isinstance(change, str) and change else label, fontsize=9)
    fig.tight_layout()
    return fig


def label_fraction_figure(table: pd.DataFrame):
    """Supplementary Table 8 as curves: maskAP against the labelled fraction per method, reproduced (solid,
    mean over seeds, where run) and the paper's (dashed); columns ``"N% labels"`` of
    :func:`castlib.report.ablations.table8`."""
    columns = [c for c in table.columns if c.endswith("% labels") and not c.startswith("paper ")]
    fractions = [float(c.split("%")[0]) for c in columns]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for colour, row in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], table.to_dict("records"), strict=False):
        reproduced = [row[f"{c} mean"] for c in columns]
        if not all(np.isnan(reproduced)):
            ax.plot(fractions, reproduced, "o-", color=colour, label=f"{row['variant']} (reproduced)")
        paper = [row[f"paper {c}"] if isinstance(row[f"paper {c}"], float) else np.nan for c in columns]
        ax.plot(fractions, paper, "s--", color=colour, alpha=0.6, label=f"{row['variant']} (paper)")
    ax.set_xlabel("labelled fraction (%)")
    ax.set_ylabel("maskAP")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save atomically (PNG or PDF by suffix) and close the figure."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip("."), bbox_inches="tight")
    plt.close(fig)
    return path

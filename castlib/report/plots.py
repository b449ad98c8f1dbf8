"""Figures the notebooks and ``make reproduce`` share (matplotlib, headless-safe)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.ndimage import binary_erosion

from castlib.data.sample import InstanceSample
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


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save atomically (PNG or PDF by suffix) and close the figure."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip("."), bbox_inches="tight")
    plt.close(fig)
    return path

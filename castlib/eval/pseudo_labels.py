"""How good a teacher's pseudo-labels are: a ``pseudo_labels`` run's instances on D_u against D_u's own labels.

The semi-supervised split withholds D_u's annotations from training, but they stay on disk (the synthetic sets and
Cityscapes' train split keep them), so the files the student and step B train on can be scored. Each image's
pseudo-labels are matched one-to-one to its true instances of the same class (Hungarian on mask IoU, scipy); a
pair at IoU >= 0.5 is a true positive. Precision says how many pseudo-labels teach a real object, recall how many
real objects are taught rather than left as background (an unlabelled object with no pseudo-label is a negative in
the set criterion's matching). The class-agnostic precision matches regardless of class, so it splits wrong masks
from wrong classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from castlib.errors import DataError

IOU_THRESHOLD = 0.5


def mask_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[N, M]`` of bool masks ``a`` ``[N, H, W]`` and ``b`` ``[M, H, W]``."""
    pixels = int(np.prod(a.shape[1:]))  # explicit: either side may hold no mask
    a, b = a.reshape(len(a), pixels).astype(np.float32), b.reshape(len(b), pixels).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    return inter / np.maximum(union, 1)


def matched_ious(ious: np.ndarray, pseudo_labels: np.ndarray, true_labels: np.ndarray,
                 class_aware: bool = True) -> np.ndarray:
    """The IoUs of the one-to-one matching (Hungarian, maximal total IoU) of pseudo-labels to true instances, from
    their IoU matrix ``ious`` ``[N, M]`` (:func:`mask_ious`) and labels; within each class when ``class_aware``.
    Pairs of IoU 0 are not matches."""
    groups = np.union1d(pseudo_labels, true_labels) if class_aware else [None]
    found = []
    for c in groups:
        rows = np.ones(len(pseudo_labels), bool) if c is None else pseudo_labels == c
        cols = np.ones(len(true_labels), bool) if c is None else true_labels == c
        if not rows.any() or not cols.any():
            continue
        block = ious[np.ix_(rows, cols)]
        r, k = linear_sum_assignment(block, maximize=True)
        found.extend(v for v in block[r, k] if v > 0)
    return np.asarray(found, dtype=float)


def pseudo_label_quality(cfg, pseudo_root: str | Path, image_ids: list[str] | None = None) -> dict[str, float]:
    """Pseudo-labels written under ``pseudo_root`` (a ``pseudo_labels`` run's ``pseudo_label_dir``) against the
    true annotations of the same images (default: the config's unlabelled part D_u). Returns ``images``,
    ``pseudo_per_image``, ``true_per_image``, ``precision`` and ``recall`` at IoU >= 0.5 with the class,
    ``agnostic_precision`` (any class) and ``matched_iou`` (mean IoU of the class-aware matches)."""
    from castlib.data.loaders import build_dataset, read_split_ids

    ids = read_split_ids(cfg, "unlabelled") if image_ids is None else image_ids
    truth = build_dataset(cfg, "train", ids)
    n_pseudo = n_true = hits = agnostic_hits = 0
    matched = []
    for image_id in ids:
        true_path = truth.annotation_path(image_id)
        path = Path(pseudo_root) / true_path.relative_to(truth.annotation_root)  # where stages.pseudo_labels writes
        if not path.is_file():
            raise DataError(path, "no pseudo-label for this unlabelled image: the pseudo_labels run is not "
                                  "complete, or belongs to another split")
        (p_masks, p_labels), (t_masks, t_labels) = truth.decode(path), truth.decode(true_path)
        if p_masks.shape[1:] != t_masks.shape[1:]:
            raise DataError(path, f"pseudo-label is {p_masks.shape[2]}x{p_masks.shape[1]}, its image's annotation "
                                  f"{t_masks.shape[2]}x{t_masks.shape[1]}")
        n_pseudo, n_true = n_pseudo + len(p_labels), n_true + len(t_labels)
        ious = mask_ious(p_masks, t_masks)
        same_class = matched_ious(ious, p_labels, t_labels)
        matched.extend(same_class)
        hits += int((same_class >= IOU_THRESHOLD).sum())
        agnostic_hits += int((matched_ious(ious, p_labels, t_labels, class_aware=False) >= IOU_THRESHOLD).sum())
    nan = float("nan")
    return {"images": len(ids), "pseudo_per_image": n_pseudo / max(len(ids), 1),
            "true_per_image": n_true / max(len(ids), 1),
            "precision": hits / n_pseudo if n_pseudo else nan, "recall": hits / n_true if n_true else nan,
            "agnostic_precision": agnostic_hits / n_pseudo if n_pseudo else nan,
            "matched_iou": float(np.mean(matched)) if matched else nan}

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
    a, b = a.reshape(len(a), -1).astype(np.float32), b.reshape(len(b), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    return inter / np.maximum(union, 1)


def matched_ious(pseudo: tuple[np.ndarray, np.ndarray], truth: tuple[np.ndarray, np.ndarray],
                 class_aware: bool = True) -> np.ndarray:
    """The IoUs of the one-to-one matching (Hungarian, maximal total IoU) of ``pseudo`` = (masks, labels) to
    ``truth`` = (masks, labels), within each class when ``class_aware``; pairs of IoU 0 are not matches."""
    (p_masks, p_labels), (t_masks, t_labels) = pseudo, truth
    groups = np.union1d(p_labels, t_labels) if class_aware else [None]
    found = []
    for c in groups:
        p = np.ones(len(p_labels), bool) if c is None else p_labels == c
        t = np.ones(len(t_labels), bool) if c is None else t_labels == c
        if not p.any() or not t.any():
            continue
        ious = mask_ious(p_masks[p], t_masks[t])
        rows, cols = linear_sum_assignment(ious, maximize=True)
        found.extend(v for v in ious[rows, cols] if v > 0)
    return np.asarray(found, dtype=float)


def pseudo_label_quality(cfg, pseudo_root: str | Path, image_ids: list[str] | None = None) -> dict[str, float]:
    """Pseudo-labels written under ``pseudo_root`` (a ``pseudo_labels`` run's ``pseudo_label_dir``) against the
    true annotations of the same images (default: the config's unlabelled part D_u). Returns ``images``,
    ``pseudo_per_image``, ``true_per_image``, ``precision`` and ``recall`` at IoU >= 0.5 with the class,
    ``agnostic_precision`` (any class) and ``matched_iou`` (mean IoU of the class-aware matches)."""
    from castlib.data.loaders import build_dataset, read_split_ids

    ids = read_split_ids(cfg, "unlabelled") if image_ids is None else image_ids
    truth = build_dataset(cfg, "train", ids)
    for image_id in ids:  # before the reader, which would only say "annotation missing"
        path = Path(pseudo_root) / truth.annotation_path(image_id).relative_to(truth.annotation_root)
        if not path.is_file():
            raise DataError(path, "no pseudo-label for this unlabelled image: the pseudo_labels run is not "
                                  "complete, or belongs to another split")
    pseudo = build_dataset(cfg, "train", ids, annotation_root=pseudo_root)
    n_pseudo = n_true = hits = agnostic_hits = 0
    matched = []
    for image_id in ids:
        path = pseudo.annotation_path(image_id)
        p, t = pseudo.decode(path), truth.decode(truth.annotation_path(image_id))
        if p[0].shape[1:] != t[0].shape[1:]:
            raise DataError(path, f"pseudo-label is {p[0].shape[2]}x{p[0].shape[1]}, its image's annotation "
                                  f"{t[0].shape[2]}x{t[0].shape[1]}")
        n_pseudo, n_true = n_pseudo + len(p[1]), n_true + len(t[1])
        ious = matched_ious(p, t)
        matched.extend(ious)
        hits += int((ious >= IOU_THRESHOLD).sum())
        agnostic_hits += int((matched_ious(p, t, class_aware=False) >= IOU_THRESHOLD).sum())
    nan = float("nan")
    return {"images": len(ids), "pseudo_per_image": n_pseudo / max(len(ids), 1),
            "true_per_image": n_true / max(len(ids), 1),
            "precision": hits / n_pseudo if n_pseudo else nan, "recall": hits / n_true if n_true else nan,
            "agnostic_precision": agnostic_hits / n_pseudo if n_pseudo else nan,
            "matched_iou": float(np.mean(matched)) if matched else nan}

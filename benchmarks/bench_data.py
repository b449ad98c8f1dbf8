"""Data pipeline: images per second for the weak view alone and for weak + strong views.

A measurement, not a target: what the strong view (photometric transforms on the weak view,
DESIGN 5) adds to the per-image cost of reading and augmenting a labelled sample.
"""

from __future__ import annotations

import tempfile
import time

import torch

from castlib.config import load_config
from castlib.data import labelled_dataset, make_splits, prepare_data


def _rate(dataset, repeats: int) -> float:
    start = time.perf_counter()
    n = 0
    for _ in range(repeats):
        for i in range(len(dataset)):
            dataset[i]
            n += 1
    return n / (time.perf_counter() - start)


def run() -> dict:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("smoke", [f"data.data_dir={tmp}/data", f"data.splits_dir={tmp}/splits",
                                    "data.label_fraction=0.3"])
        prepare_data(cfg)
        make_splits(cfg)
        weak, both = labelled_dataset(cfg, strong=False), labelled_dataset(cfg, strong=True)
        _rate(weak, 1)  # warm-up
        weak_rate, both_rate = _rate(weak, 5), _rate(both, 5)
    ratio = weak_rate / both_rate
    return {
        "profile": "smoke",
        "data": "synthetic Cityscapes-format smoke set, 12 labelled images, crop 112x224",
        "weak_images_per_s": weak_rate,
        "weak_strong_images_per_s": both_rate,
        "weak_strong_time_over_weak_time": ratio,
    }

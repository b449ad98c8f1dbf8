"""What every model of the kit has besides ``forward``: named trainable parts, optimiser parameter groups, the
projection heads of L_pxl, and ``save_pretrained`` (a folder that :func:`castlib.models.build_model` loads back).

A model declares its parts as parameter-name prefixes (``parts``), which of them belong to the pretrained encoder
(``encoder_parts``, the low learning-rate group of supplementary Table 2), and a config key listing the parts
that train; all other parameters get ``requires_grad=False``. The projection heads always train.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import save_model
from torch import nn

from castlib.errors import ConfigError
from castlib.io import atomic_path, write_json_atomic

CHECKPOINT_FORMAT = "castlib-model"
META_FILE = "castlib_model.json"
WEIGHTS_FILE = "model.safetensors"


class SegmentationModel(nn.Module):
    """Base of the student, the Table 8 baselines and the teacher."""

    parts: ClassVar[dict[str, tuple[str, ...]]]
    encoder_parts: ClassVar[frozenset[str]]
    always_trainable: ClassVar[tuple[str, ...]] = ("projection",)

    def __init__(self, which: str, num_classes: int, settings: dict, class_names: Sequence[str]):
        super().__init__()
        self.which = which
        self.num_classes = num_classes
        self.settings = settings  # the config's ``model`` section this model was built from
        self.class_names = list(class_names)

    # -- parts and optimiser groups ---------------------------------------------------------------------------
    def part_of(self, name: str) -> str:
        """The part a parameter (by its name) belongs to."""
        for part, prefixes in self.parts.items():
            if name.startswith(prefixes):
                return part
        raise KeyError(f"parameter {name} belongs to no part of {type(self).__name__}")

    def set_trainable(self, trainable: Sequence[str], key: str) -> None:
        """Let the parts listed in ``trainable`` (config key ``key``) train and freeze the rest. A parameter shared
        by two parts (tied weights) trains when either part does."""
        unknown = sorted(set(trainable) - set(self.parts))
        if unknown:
            raise ConfigError(None, key, f"unknown part(s) {unknown}; parts: {', '.join(self.parts)}")
        chosen = set(trainable) | set(self.always_trainable)
        train = {id(p) for n, p in self.named_parameters(remove_duplicate=False) if self.part_of(n) in chosen}
        for p in self.parameters():
            p.requires_grad_(id(p) in train)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters split into ``encoder`` (pretrained encoders) and ``decoder`` (everything else,
        projection heads included), for the two learning rates of supplementary Table 2."""
        groups: dict[str, list[nn.Parameter]] = {"encoder": [], "decoder": []}
        for name, p in self.named_parameters():
            if p.requires_grad:
                groups["encoder" if self.part_of(name) in self.encoder_parts else "decoder"].append(p)
        return groups

    # -- L_pxl ------------------------------------------------------------------------------------------------
    def embed(self, features: torch.Tensor, view: str = "weak") -> torch.Tensor:
        """L2-normalised projection-head embeddings ``[B, h*w, D]`` of an encoder feature map ``[B, C, h, w]``,
        with the ``weak`` or the ``strong`` view's head (DESIGN 5)."""
        return self.projection(features, view)

    # -- saving -----------------------------------------------------------------------------------------------
    def component_configs(self) -> dict[str, dict]:
        """The ``transformers`` configs of pretrained components, recorded so a checkpoint rebuilds offline."""
        return {}

    def save_extra(self, directory: Path) -> None:
        """Files besides the weights that loading needs (the teacher's tokenizer)."""

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``castlib_model.json`` (what to build) and ``model.safetensors`` (the weights) to ``directory``;
        ``build_model(cfg, which, num_classes, pretrained=directory)`` loads it back, offline."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save_extra(directory)
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_model(self, str(tmp))
        write_json_atomic(directory / META_FILE, {
            "format": CHECKPOINT_FORMAT, "which": self.which, "num_classes": self.num_classes,
            "class_names": self.class_names, "model": self.settings, "components": self.component_configs(),
        })
        return directory


def read_meta(directory: Path) -> dict:
    """The checkpoint description of a folder written by ``save_pretrained``."""
    path = directory / META_FILE
    if not path.is_file():
        raise FileNotFoundError(path)
    meta = json.loads(path.read_text())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a castlib model checkpoint (format {meta.get('format')!r})")
    return meta

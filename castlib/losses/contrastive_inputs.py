"""What the two implementations of L_pxl receive: the options and the batch's pixels."""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import torch

from castlib.config import DEFAULTS_FILE, read_yaml
from castlib.losses.debiased_sampling import EMBEDDINGS, SCORES

LOSSES = ("infonce", "hinge")
SCOPES = ("batch", "memory_bank")


@dataclass(frozen=True)
class ContrastiveOptions:
    """The options of L_pxl, each a key of ``loss.contrastive`` in ``configs/defaults.yaml`` (defaults there)."""

    num_negatives: int
    temperature: float
    score: str
    embedding: str
    loss: str
    margin: float
    scope: str
    chunk_size: int

    def __post_init__(self):
        for name, allowed in (("score", SCORES), ("embedding", EMBEDDINGS), ("loss", LOSSES), ("scope", SCOPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"contrastive option {name!r} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("num_negatives", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"contrastive option {name!r} must be at least 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"contrastive option 'temperature' must be positive, got {self.temperature}")

    @classmethod
    def build(cls, **options) -> ContrastiveOptions:
        """The defaults from ``configs/defaults.yaml`` with ``options`` replacing some of them."""
        unknown = sorted(set(options) - set(_default_options()))
        if unknown:
            raise ValueError(f"unknown contrastive option(s) {unknown}; known: {sorted(_default_options())}")
        return cls(**{**_default_options(), **options})


@functools.cache
def _default_options() -> dict:
    section = read_yaml(DEFAULTS_FILE)["loss"]["contrastive"]
    return {f.name: section[f.name] for f in fields(ContrastiveOptions)}


@dataclass
class ContrastiveBatch:
    """The batch's pixels, flattened: anchor a is pixel ``b * N + p``.

    ``z_anchor`` ``[A, D]`` weak embeddings, ``z_positive`` ``[A, D]`` strong ones, ``y`` ``[A, E]``
    their pseudo-probability embeddings y~; ``bank`` the memory bank's ``(z [n, D], y~ [n, E])`` or
    None. The candidates are the anchors (candidate a is anchor a) followed by the bank's entries.
    """

    z_anchor: torch.Tensor
    z_positive: torch.Tensor
    y: torch.Tensor
    bank: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def num_candidates(self) -> int:
        return self.y.shape[0] + (0 if self.bank is None else self.bank[1].shape[0])

    @property
    def y_candidates(self) -> torch.Tensor:
        """``[M, E]``: the anchors' y~, then the bank's."""
        return self.y if self.bank is None else torch.cat([self.y, self.bank[1]])

"""Projection heads of the pixel-wise contrastive loss L_pxl (DESIGN 5; spec sections 6 and 7.3).

Separate MLPs for the weak and the strong view map each cell of the encoder's last feature map to a
D = 128 embedding, L2-normalised. Each head is LayerNorm -> Linear -> ReLU -> Linear (the prototype's variant
(b), spec section 6); the strong head starts as a copy of the weak one, so that both views begin in the same
embedding space, and then trains on its own.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

VIEWS = ("weak", "strong")


class ProjectionHeads(nn.Module):
    """``forward(features [B, C, h, w], view)`` -> ``[B, h*w, dim]`` unit vectors."""

    def __init__(self, in_dim: int, hidden_dim: int, dim: int):
        super().__init__()
        self.weak = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden_dim), nn.ReLU(),
                                  nn.Linear(hidden_dim, dim))
        self.strong = copy.deepcopy(self.weak)

    def forward(self, features: torch.Tensor, view: str = "weak") -> torch.Tensor:
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        head = self.weak if view == "weak" else self.strong
        return F.normalize(head(features.flatten(2).transpose(1, 2)), dim=-1)
